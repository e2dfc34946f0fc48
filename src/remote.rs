//! Other registries, as ecrl's mirroring reads them: image references the way docker reads
//! them, and the authentication challenges registries answer with.
//!
//! (The foundation of `ecrl login`, `ecrl mirror sync` and replication: the client that
//! talks to remotes builds on these.)

use crate::names::{Digest, NameError, RepoName, Tag};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Docker Hub as users write it, and where its registry API answers.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// An image on some registry: `[HOST[:PORT]/]REPO[:TAG][@DIGEST]`, normalized as docker
/// normalizes it (`busybox` is `docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// The registry as written (`docker.io` for Docker Hub, `host:port`, `[::1]:5000`).
    pub registry: String,
    pub repository: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteRefError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid registry host {0:?}: expected HOST, HOST:PORT or [IPv6]:PORT")]
    Host(String),
    #[error(
        "invalid repository name {0:?} in an image reference: lowercase letters, digits and \
         separators (. _ __ -), components joined by /"
    )]
    Repository(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

impl RemoteRef {
    /// The host the registry API answers on (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What a manifest request names: the digest when there is one, else the tag
    /// (`latest` when none was given).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.to_string(),
            (None, None) => "latest".to_string(),
        }
    }
}

/// Whether the first component of a reference names a registry, as docker decides: it has
/// a `.` or a `:` (a domain or a port), is `localhost`, or has an uppercase letter (which no
/// repository name may have).
pub fn is_registry_host(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.chars().any(|c| c.is_ascii_uppercase())
}

fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        // [IPv6] or [IPv6]:PORT
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return false;
        }
    }
    if host.starts_with('[') {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A registry as users name it to `ecrl login` and in replication rules: `host[:port]`,
/// also written as a URL (`https://host:port/`), as docker accepts. Docker Hub's names all
/// become `docker.io`.
pub fn parse_registry(text: &str) -> Result<String, RemoteRefError> {
    let host = text.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let host = host.strip_suffix("/v1/").unwrap_or(host);
    let host = host.strip_suffix("/v2/").unwrap_or(host);
    let host = host.trim_end_matches('/');
    if host.is_empty() {
        return Err(RemoteRefError::Empty);
    }
    if !valid_host(host) {
        return Err(RemoteRefError::Host(text.to_string()));
    }
    let host = host.to_ascii_lowercase();
    Ok(match host.as_str() {
        "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB.to_string(),
        _ => host,
    })
}

/// The host the registry API of `registry` (as [`parse_registry`] gives it) answers on.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl FromStr for RemoteRef {
    type Err = RemoteRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(RemoteRefError::Empty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>()?)),
            None => (text, None),
        };
        // A ':' after the last '/' separates the tag (one before it is a port).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].find(':') {
            Some(i) => (
                &rest[..slash + i],
                Some(rest[slash + i + 1..].parse::<Tag>()?),
            ),
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_host(first) => {
                if !valid_host(first) {
                    return Err(RemoteRefError::Host(first.to_string()));
                }
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let repository = path
            .parse::<RepoName>()
            .map_err(|_| RemoteRefError::Repository(path.clone()))?;
        Ok(RemoteRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1): its scheme, lowercase
/// (`basic`, `bearer`), and its parameters, names lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// The challenges in a `WWW-Authenticate` value (one header may carry several, comma
/// separated: `Basic realm="x", Bearer realm="y",service="z"`). What cannot be read is left
/// out; an empty list means none could be.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut lexer = Lexer {
        rest: header.as_bytes(),
    };
    loop {
        lexer.skip_separators();
        let Some(token) = lexer.token() else {
            break;
        };
        lexer.skip_spaces();
        if lexer.peek() == Some(b'=') {
            // A parameter of the challenge being read.
            lexer.advance(1);
            lexer.skip_spaces();
            let value = if lexer.peek() == Some(b'"') {
                lexer.quoted()
            } else {
                lexer.token()
            };
            match (out.last_mut(), value) {
                (Some(challenge), Some(value)) => {
                    challenge.params.insert(token.to_ascii_lowercase(), value);
                }
                // A parameter before any scheme, or without a value: skip to the next comma.
                _ => lexer.skip_to_comma(),
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            // token68 form (`Negotiate abc==`): not used by registries; skip it. A token
            // followed by `=` is the challenge's first parameter instead.
            let save = lexer.rest;
            lexer.skip_spaces();
            if lexer.token().is_some() {
                lexer.skip_spaces();
                if lexer.peek() == Some(b'=') {
                    lexer.rest = save;
                } else {
                    lexer.skip_to_comma();
                }
            } else {
                lexer.rest = save;
            }
        }
    }
    out
}

struct Lexer<'a> {
    rest: &'a [u8],
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn advance(&mut self, n: usize) {
        self.rest = &self.rest[n.min(self.rest.len())..];
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.advance(1);
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.advance(1);
        }
    }

    fn skip_to_comma(&mut self) {
        while let Some(b) = self.peek() {
            if b == b',' {
                break;
            }
            if b == b'"' {
                self.quoted();
            } else {
                self.advance(1);
            }
        }
    }

    /// An RFC 9110 token (tchar+).
    fn token(&mut self) -> Option<String> {
        let n = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(b))
            .count();
        if n == 0 {
            return None;
        }
        let token = String::from_utf8_lossy(&self.rest[..n]).into_owned();
        self.advance(n);
        Some(token)
    }

    /// A quoted-string, its escapes undone; an unterminated one takes the rest.
    fn quoted(&mut self) -> Option<String> {
        self.advance(1);
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.advance(1);
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.advance(1);
                    }
                }
                _ => out.push(b),
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

/// What a repository's token is asked for: `repository:NAME:pull` or `...:pull,push`.
pub fn repository_scope(repository: &RepoName, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// The URL a Bearer challenge's token is fetched from (the Docker token flow): its `realm`
/// with `service` and each scope as query parameters. `None` when the challenge has no
/// realm, or one that is not an http(s) URL.
pub fn token_url(challenge: &Challenge, scopes: &[String]) -> Option<String> {
    let realm = challenge.param("realm")?;
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        return None;
    }
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    let mut add = |name: &str, value: &str| {
        url.push(sep);
        url.push_str(name);
        url.push('=');
        url.push_str(&query_escape(value));
        sep = '&';
    };
    if let Some(service) = challenge.param("service") {
        add("service", service);
    }
    for scope in scopes {
        add("scope", scope);
    }
    Some(url)
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A token endpoint's answer. Registries write `token` or `access_token` (or both, equal);
/// a token without `expires_in` lives 60 s, as the Docker token specification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    pub token: String,
    pub expires_in: std::time::Duration,
    /// An OAuth refresh token, when the endpoint gave one.
    pub refresh_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawToken {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The shortest life ecrl gives a token, whatever the endpoint says (some answer 0).
const MIN_TOKEN_LIFE: u64 = 60;

pub fn parse_token_answer(body: &[u8]) -> Result<TokenAnswer, String> {
    let raw: RawToken = serde_json::from_slice(body)
        .map_err(|e| format!("the token endpoint answered something other than a token: {e}"))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or("the token endpoint answered without a token")?;
    Ok(TokenAnswer {
        token,
        expires_in: std::time::Duration::from_secs(
            raw.expires_in.unwrap_or(MIN_TOKEN_LIFE).max(MIN_TOKEN_LIFE),
        ),
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RemoteRef {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn references_are_read_as_docker_reads_them() {
        let r = parse("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository.as_str(), "library/busybox");
        assert_eq!(r.reference(), "latest");
        assert_eq!(r.to_string(), "docker.io/library/busybox");

        let r = parse("docker.io/busybox:1.36");
        assert_eq!(r.repository.as_str(), "library/busybox");
        assert_eq!(r.reference(), "1.36");
        let r = parse("index.docker.io/team/app");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "team/app")
        );
        // A first component that is no host is part of the Docker Hub name.
        let r = parse("team/app:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "team/app")
        );

        for (text, registry, repo, reference) in [
            ("localhost/app", "localhost", "app", "latest"),
            (
                "localhost:5000/team/app:1",
                "localhost:5000",
                "team/app",
                "1",
            ),
            (
                "registry.example/a/b/c",
                "registry.example",
                "a/b/c",
                "latest",
            ),
            ("ghcr.io/org/tool:2.0", "ghcr.io", "org/tool", "2.0"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest"),
            ("[::1]:5000/app:x", "[::1]:5000", "app", "x"),
            ("Registry/app", "Registry", "app", "latest"),
        ] {
            let r = parse(text);
            assert_eq!(r.registry, registry, "{text}");
            assert_eq!(r.api_host(), registry, "{text}");
            assert_eq!(r.repository.as_str(), repo, "{text}");
            assert_eq!(r.reference(), reference, "{text}");
        }

        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = parse(&format!("quay.io/org/app:1@{digest}"));
        assert_eq!(r.tag.as_ref().map(|t| t.as_str()), Some("1"));
        assert_eq!(r.reference(), digest);
        assert_eq!(r.to_string(), format!("quay.io/org/app:1@{digest}"));
        assert_eq!(parse(&r.to_string()), r);
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        assert_eq!("".parse::<RemoteRef>(), Err(RemoteRefError::Empty));
        for host in [
            "bad_host.com",
            "a..b",
            "host:0",
            "host:99999",
            "[::1",
            "[zz]:5000",
            "-a.b",
        ] {
            match format!("{host}/app").parse::<RemoteRef>() {
                Err(RemoteRefError::Host(h)) => assert_eq!(h, host),
                other => panic!("{host}: {other:?}"),
            }
        }
        assert!(matches!(
            "registry.example/Team/App".parse::<RemoteRef>(),
            Err(RemoteRefError::Repository(_))
        ));
        assert!(matches!(
            "registry.example/app:bad tag".parse::<RemoteRef>(),
            Err(RemoteRefError::Name(_))
        ));
        assert!(matches!(
            "registry.example/app@sha256:nothex".parse::<RemoteRef>(),
            Err(RemoteRefError::Name(_))
        ));
    }

    #[test]
    fn the_token_flow_asks_the_realm_for_its_scopes() {
        let c = &parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example:5000""#,
        )[0];
        let repo: RepoName = "team/app".parse().unwrap();
        let scopes = [
            repository_scope(&repo, true),
            "registry:catalog:*".to_string(),
        ];
        assert_eq!(
            token_url(c, &scopes).unwrap(),
            "https://auth.example/token?service=registry.example%3A5000\
             &scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=registry%3Acatalog%3A%2A"
        );
        let c = &parse_challenges(r#"Bearer realm="http://a/t?x=1""#)[0];
        assert_eq!(
            token_url(c, &[repository_scope(&repo, false)]).unwrap(),
            "http://a/t?x=1&scope=repository%3Ateam%2Fapp%3Apull"
        );
        for bad in [
            r#"Bearer service="s""#,
            r#"Bearer realm="file:///etc/passwd""#,
        ] {
            assert_eq!(token_url(&parse_challenges(bad)[0], &[]), None, "{bad}");
        }

        let t = parse_token_answer(br#"{"token":"abc","expires_in":300,"issued_at":"x"}"#).unwrap();
        assert_eq!((t.token.as_str(), t.expires_in.as_secs()), ("abc", 300));
        let t = parse_token_answer(br#"{"access_token":"xyz","refresh_token":"r"}"#).unwrap();
        assert_eq!((t.token.as_str(), t.expires_in.as_secs()), ("xyz", 60));
        assert_eq!(t.refresh_token.as_deref(), Some("r"));
        assert_eq!(
            parse_token_answer(br#"{"token":"a","expires_in":0}"#)
                .unwrap()
                .expires_in
                .as_secs(),
            60
        );
        assert!(parse_token_answer(br#"{"token":""}"#).is_err());
        assert!(parse_token_answer(b"<html>rate limited</html>").is_err());
    }

    #[test]
    fn challenges_are_read_with_their_parameters() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );

        // Several challenges, spacing, case, token values and escapes.
        let c = parse_challenges(
            r#"Basic realm="Registry Realm", BEARER Realm = "https://a/t" , service=reg.example,error="invalid_token",note="a \"quoted\" word""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://a/t"));
        assert_eq!(c[1].param("service"), Some("reg.example"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        assert_eq!(c[1].param("note"), Some(r#"a "quoted" word"#));

        // Hostile or broken input: never a panic, only what can be read.
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(",,, ,").is_empty());
        let c = parse_challenges(r#"realm="x", Bearer realm="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), Some("unterminated"));
        let c = parse_challenges("Negotiate abc==, Basic realm=r");
        assert_eq!(
            c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
            ["negotiate", "basic"]
        );
        assert_eq!(c[1].param("realm"), Some("r"));
        for junk in [
            "\"",
            "=",
            "Bearer =",
            "Bearer realm=",
            "\u{1F600} realm=\"x\"",
            "Basic \\",
        ] {
            let _ = parse_challenges(junk);
        }
    }
}
