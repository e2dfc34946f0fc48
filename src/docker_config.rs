//! Credentials users already have for docker (`~/.docker/config.json`), as mirroring reads
//! them: `auths` entries, `credHelpers` per registry and the `credsStore` for all others,
//! and what a `docker-credential-NAME get` helper answers.
//!
//! Only the reading is here; running a helper is the caller's (it is a process).

use crate::remote::{DOCKER_HUB, DOCKER_HUB_API};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The key docker keeps Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The parts of docker's config file that say where credentials are.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    pub creds_store: Option<String>,
    #[serde(default)]
    pub cred_helpers: BTreeMap<String, String>,
}

/// One `auths` entry: `auth` is base64 of `user:password`; some tools write the two apart,
/// and `docker login` with a token writes `identitytoken`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
}

/// Where the credentials for one registry are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// In the file itself.
    Basic { username: String, password: String },
    /// An OAuth refresh token (`docker login` against some registries): exchanged at the
    /// token endpoint.
    IdentityToken(String),
    /// Ask `docker-credential-NAME get`, giving it this server name on stdin.
    Helper { name: String, server: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("docker config: {0}")]
    Json(#[from] serde_json::Error),
    #[error("docker config: the auth entry for {registry} is not base64 of user:password")]
    Auth { registry: String },
}

impl DockerConfig {
    pub fn parse(text: &str) -> Result<DockerConfig, DockerConfigError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The credentials docker would use for `registry` (as written in a reference, e.g.
    /// `docker.io`, `ghcr.io`, `localhost:5000`), if any: a helper for this registry first,
    /// then an entry of the file, then the store for all registries.
    pub fn lookup(&self, registry: &str) -> Result<Option<Found>, DockerConfigError> {
        let keys = keys_for(registry);
        if let Some(name) = keys.iter().find_map(|k| self.cred_helpers.get(k.as_str())) {
            return Ok(Some(Found::Helper {
                name: name.clone(),
                server: keys[0].clone(),
            }));
        }
        let entry = self.auths.iter().find_map(|(key, entry)| {
            let key = normalize_key(key);
            keys.contains(&key).then_some(entry)
        });
        if let Some(entry) = entry {
            if let Some(found) = entry.credentials(registry)? {
                return Ok(Some(found));
            }
        }
        Ok(self
            .creds_store
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|name| Found::Helper {
                name: name.clone(),
                server: keys[0].clone(),
            }))
    }
}

impl AuthEntry {
    fn credentials(&self, registry: &str) -> Result<Option<Found>, DockerConfigError> {
        if let Some(token) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Found::IdentityToken(token.clone())));
        }
        if let Some(auth) = self.auth.as_ref().filter(|a| !a.is_empty()) {
            let bad = || DockerConfigError::Auth {
                registry: registry.to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Found::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        match (&self.username, &self.password) {
            (Some(username), Some(password)) if !username.is_empty() => Ok(Some(Found::Basic {
                username: username.clone(),
                password: password.clone(),
            })),
            _ => Ok(None),
        }
    }
}

/// The keys docker may have filed `registry` under, the one it writes first.
fn keys_for(registry: &str) -> Vec<String> {
    if [DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"].contains(&registry) {
        vec![
            DOCKER_HUB_KEY.to_string(),
            DOCKER_HUB.to_string(),
            "index.docker.io".to_string(),
            DOCKER_HUB_API.to_string(),
        ]
    } else {
        vec![registry.to_string()]
    }
}

/// A key of `auths` as a registry name: `https://host/v1/` and `http://host` are `host`;
/// Docker Hub's own key stays as it is.
fn normalize_key(key: &str) -> String {
    if key == DOCKER_HUB_KEY {
        return key.to_string();
    }
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_string()
}

/// What `docker-credential-NAME get` prints.
#[derive(Debug, Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// A credential helper's answer as credentials: a username of `<token>` marks an identity
/// token.
pub fn parse_helper_answer(text: &str) -> Result<Found, DockerConfigError> {
    let answer: HelperAnswer = serde_json::from_str(text)?;
    if answer.username == "<token>" {
        Ok(Found::IdentityToken(answer.secret))
    } else {
        Ok(Found::Basic {
            username: answer.username,
            password: answer.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn entries_helpers_and_the_store_are_found_in_docker_s_order() {
        let config = DockerConfig::parse(&format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.example:5000": {{"auth": "{}"}},
                "https://old.example/v1/": {{"username": "u", "password": "p"}},
                "token.example": {{"identitytoken": "refresh"}},
                "helped.example": {{"auth": "{}"}},
                "empty.example": {{}}
              }},
              "credsStore": "desktop",
              "credHelpers": {{"helped.example": "ecr-login"}},
              "HttpHeaders": {{"User-Agent": "x"}}
            }}"#,
            b64("hub:hubpass"),
            b64("me:pa:ss"),
            b64("shadowed:x"),
        ))
        .unwrap();
        let basic = |u: &str, p: &str| {
            Some(Found::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        for hub in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
            assert_eq!(
                config.lookup(hub).unwrap(),
                basic("hub", "hubpass"),
                "{hub}"
            );
        }
        // The password may hold colons; only the first one separates.
        assert_eq!(
            config.lookup("registry.example:5000").unwrap(),
            basic("me", "pa:ss")
        );
        assert_eq!(config.lookup("old.example").unwrap(), basic("u", "p"));
        assert_eq!(
            config.lookup("token.example").unwrap(),
            Some(Found::IdentityToken("refresh".into()))
        );
        // A helper for the registry wins over its entry; the store answers for the rest.
        assert_eq!(
            config.lookup("helped.example").unwrap(),
            Some(Found::Helper {
                name: "ecr-login".into(),
                server: "helped.example".into()
            })
        );
        for other in ["empty.example", "ghcr.io"] {
            assert_eq!(
                config.lookup(other).unwrap(),
                Some(Found::Helper {
                    name: "desktop".into(),
                    server: other.into()
                }),
                "{other}"
            );
        }
        // The same port or nothing: registry.example alone is another registry.
        let no_store = DockerConfig::parse(r#"{"auths": {"registry.example:5000": {}}}"#).unwrap();
        assert_eq!(no_store.lookup("registry.example").unwrap(), None);
    }

    #[test]
    fn damaged_files_and_answers_are_errors_that_say_what() {
        assert!(DockerConfig::parse("{").is_err());
        assert_eq!(DockerConfig::parse("{}").unwrap(), DockerConfig::default());
        let config =
            DockerConfig::parse(r#"{"auths": {"bad.example": {"auth": "not base64!"}}}"#).unwrap();
        let err = config.lookup("bad.example").unwrap_err().to_string();
        assert!(err.contains("bad.example"), "{err}");
        let config = DockerConfig::parse(&format!(
            r#"{{"auths": {{"nocolon.example": {{"auth": "{}"}}}}}}"#,
            b64("justuser")
        ))
        .unwrap();
        assert!(config.lookup("nocolon.example").is_err());
        // Secrets never appear in the error.
        let config = DockerConfig::parse(&format!(
            r#"{{"auths": {{"x.example": {{"auth": "{}"}}}}}}"#,
            b64("\u{ff}") + "@@"
        ))
        .unwrap();
        assert!(!config
            .lookup("x.example")
            .unwrap_err()
            .to_string()
            .contains('\u{ff}'));
    }

    #[test]
    fn helper_answers_are_credentials_or_identity_tokens() {
        assert_eq!(
            parse_helper_answer(r#"{"ServerURL":"r","Username":"AWS","Secret":"s3cret"}"#).unwrap(),
            Found::Basic {
                username: "AWS".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            parse_helper_answer(r#"{"Username":"<token>","Secret":"refresh"}"#).unwrap(),
            Found::IdentityToken("refresh".into())
        );
        assert!(parse_helper_answer("credentials not found in native keychain").is_err());
    }
}
