//! The secret store: values tasks get through their definitions' `secrets[].valueFrom`, kept
//! sealed in the metadata database. Sealed with the storage key when blobs are encrypted
//! (AES-256-GCM, the secret's name and version as associated data, so a sealed value cannot be
//! passed off as another's); on a data dir stored plain, with a key derived from the token
//! secret, as access keys' secrets are. A value leaves ecrld only to `ecrl secret get` (the
//! owner, on the control socket) and into a container's environment at its start; it is never
//! logged, printed by `Debug`, written into a task's plan or shown by `task inspect`.
//!
//! `valueFrom` takes what ECS takes: a Secrets Manager ARN (with ECS's
//! `:json-key:version-stage:version-id` suffix), an SSM parameter ARN, or a parameter's name.
//! The region and account of an ARN are not checked: task definitions written for an AWS
//! account run here unchanged, each secret found by its name.

use crate::metadata::{Metadata, SealedVersion};
use crate::storage::crypt::Keys;
use ecrl::api::secrets::{SecretInfo, SecretValue, MAX_SECRET_BYTES};
use ecrl::api::{ApiError, ErrorCode};
use std::sync::Arc;
use zeroize::Zeroizing;

/// How many secrets the store holds at most (each is a row and an index entry).
pub const MAX_SECRETS: usize = 10_000;

/// Sealed under the storage key ([`Keys::seal_aside`]).
const UNDER_STORAGE_KEY: u8 = 1;
/// Sealed under a key derived from the token secret.
const UNDER_TOKEN_SECRET: u8 = 2;
const PURPOSE: &[u8] = b"ecrl secret store v1";

pub struct Secrets {
    meta: Arc<Metadata>,
    keys: Option<Arc<Keys>>,
    /// `arn:aws:secretsmanager:REGION:ACCOUNT:secret:`.
    arn_prefix: String,
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SecretNotFound,
        format!("no secret named {name:?} (ecrl secret list shows them)"),
    )
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// Secrets Manager's rule for names: 1-512 of letters, digits and `/_+=.@-`. SSM parameter
/// names are a subset.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 512
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "secret name {name:?}: 1 to 512 letters, digits and the characters /_+=.@- are \
                 allowed"
            ),
        ));
    }
    Ok(())
}

/// A value a container's environment can hold: UTF-8 (the API carries text), no NUL byte,
/// at most [`MAX_SECRET_BYTES`].
fn check_value(value: &str) -> Result<(), ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidParameter, m);
    if value.len() > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "a secret's value is at most {MAX_SECRET_BYTES} bytes; this one is {}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(invalid(
            "a secret's value cannot hold a NUL byte: an environment variable cannot".into(),
        ));
    }
    Ok(())
}

impl Secrets {
    pub fn new(meta: Arc<Metadata>, keys: Option<Arc<Keys>>, region: &str) -> Self {
        let arn_prefix = format!(
            "arn:aws:secretsmanager:{region}:{}:secret:",
            meta.account_id()
        );
        Secrets {
            meta,
            keys,
            arn_prefix,
        }
    }

    fn context(name: &str, version_id: &str) -> Vec<u8> {
        format!("secret:{name}:{version_id}").into_bytes()
    }

    fn seal(&self, name: &str, version_id: &str, plain: &[u8]) -> Result<Vec<u8>, ApiError> {
        let context = Self::context(name, version_id);
        let mut out;
        match &self.keys {
            Some(keys) => {
                out = vec![UNDER_STORAGE_KEY];
                out.extend(keys.seal_aside(&context, plain).map_err(internal)?);
            }
            None => {
                out = vec![UNDER_TOKEN_SECRET];
                out.extend(
                    crate::metadata::seal_with_token_secret(
                        self.meta.token_secret(),
                        PURPOSE,
                        &context,
                        plain,
                    )
                    .map_err(internal)?,
                );
            }
        }
        Ok(out)
    }

    fn open(&self, name: &str, version: &SealedVersion) -> Result<Zeroizing<String>, String> {
        let context = Self::context(name, &version.version_id);
        let damaged = || format!("the stored secret {name:?} does not open: it is damaged");
        let plain = match version.sealed.split_first() {
            Some((&UNDER_STORAGE_KEY, sealed)) => {
                let keys = self.keys.as_ref().ok_or_else(|| {
                    format!(
                        "the secret {name:?} is sealed under a storage key and this data dir \
                         has none"
                    )
                })?;
                keys.open_aside(&context, sealed).map_err(|_| damaged())?
            }
            Some((&UNDER_TOKEN_SECRET, sealed)) => crate::metadata::open_with_token_secret(
                self.meta.token_secret(),
                PURPOSE,
                &context,
                sealed,
            )
            .ok_or_else(damaged)?,
            _ => return Err(damaged()),
        };
        let plain = Zeroizing::new(plain);
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| damaged())
    }

    fn arn(&self, name: &str) -> String {
        format!("{}{name}", self.arn_prefix)
    }

    fn info(&self, name: &str, record: &crate::metadata::SecretRecord) -> SecretInfo {
        SecretInfo {
            name: name.to_string(),
            arn: self.arn(name),
            version_id: record.current.version_id.clone(),
            created_date: ecrl::timestamp::from_millis(record.created_at),
            last_changed_date: ecrl::timestamp::from_millis(record.updated_at),
        }
    }

    /// Stores `value` as the current version of `name`.
    pub async fn put(&self, name: &str, value: &str) -> Result<(SecretInfo, bool), ApiError> {
        check_name(name)?;
        check_value(value)?;
        let version_id = uuid::Uuid::new_v4().to_string();
        let sealed = self.seal(name, &version_id, value.as_bytes())?;
        let stored = self
            .meta
            .put_secret(
                name.to_string(),
                SealedVersion { sealed, version_id },
                MAX_SECRETS,
            )
            .await
            .map_err(internal)?;
        let (record, created) = stored.map_err(|()| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("the secret store holds {MAX_SECRETS} secrets, as many as it may"),
            )
        })?;
        Ok((self.info(name, &record), created))
    }

    pub fn get(&self, name: &str) -> Result<SecretValue, ApiError> {
        check_name(name)?;
        let record = self
            .meta
            .read()
            .secrets
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        let value = self.open(name, &record.current).map_err(internal)?;
        Ok(SecretValue {
            name: name.to_string(),
            arn: self.arn(name),
            version_id: record.current.version_id.clone(),
            secret_string: value.to_string(),
            created_date: ecrl::timestamp::from_millis(record.updated_at),
        })
    }

    pub fn list(&self) -> Vec<SecretInfo> {
        let index = self.meta.read();
        index
            .secrets
            .iter()
            .map(|(name, record)| self.info(name, record))
            .collect()
    }

    pub async fn delete(&self, name: &str) -> Result<SecretInfo, ApiError> {
        check_name(name)?;
        let info = {
            let index = self.meta.read();
            let record = index.secrets.get(name).ok_or_else(|| not_found(name))?;
            self.info(name, record)
        };
        if !self
            .meta
            .delete_secret(name.to_string())
            .await
            .map_err(internal)?
        {
            return Err(not_found(name));
        }
        Ok(info)
    }

    /// The value a container's `secrets[].valueFrom` names, or ECS's
    /// ResourceInitializationError saying why there is none.
    pub fn resolve(&self, value_from: &str) -> Result<Zeroizing<String>, String> {
        let reference = parse_value_from(value_from).map_err(|why| {
            format!("{INIT_ERROR}: invalid secret reference {value_from:?}: {why}")
        })?;
        let index = self.meta.read();
        let found = reference
            .candidates()
            .into_iter()
            .find_map(|name| index.secrets.get(&name).map(|r| (name, r.clone())));
        drop(index);
        let Some((name, record)) = found else {
            return Err(reference.missing(value_from));
        };
        let version = match reference.version(&record) {
            Ok(version) => version,
            Err(why) => return Err(format!("{INIT_ERROR}: {}: {why}", reference.from())),
        };
        let value = self
            .open(&name, version)
            .map_err(|why| format!("{INIT_ERROR}: {why}"))?;
        match &reference {
            Reference::Manager {
                json_key: Some(key),
                ..
            } => json_key(&value, key).map_err(|why| {
                format!(
                    "{INIT_ERROR}: unable to pull secrets or registry auth: execution resource \
                     retrieval failed: unable to retrieve secret from asm: {why}"
                )
            }),
            _ => Ok(value),
        }
    }
}

/// How ECS begins the reason of a task that could not get its secrets.
pub const INIT_ERROR: &str = "ResourceInitializationError";

/// What a `valueFrom` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A Secrets Manager secret, maybe one key of its JSON, maybe a given version.
    Manager {
        name: String,
        json_key: Option<String>,
        version_stage: Option<String>,
        version_id: Option<String>,
    },
    /// An SSM parameter, by its name.
    Parameter { name: String },
}

/// Parses `valueFrom` as ECS reads it.
pub fn parse_value_from(value_from: &str) -> Result<Reference, String> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    if let Some(rest) = value_from.strip_prefix("arn:") {
        // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [_partition, service, _region, _account, resource] = parts[..] else {
            return Err("an ARN is arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE".into());
        };
        match service {
            "secretsmanager" => {
                let Some(spec) = resource.strip_prefix("secret:") else {
                    return Err("a Secrets Manager ARN ends in secret:NAME".into());
                };
                let mut fields = spec.split(':');
                let name = fields.next().unwrap_or_default().to_string();
                let json_key = fields.next().and_then(nonempty);
                let version_stage = fields.next().and_then(nonempty);
                let version_id = fields.next().and_then(nonempty);
                if fields.next().is_some() {
                    return Err("after secret:NAME come at most json-key:version-stage:\
                                version-id"
                        .into());
                }
                check_name(&name).map_err(|e| e.message)?;
                Ok(Reference::Manager {
                    name,
                    json_key,
                    version_stage,
                    version_id,
                })
            }
            "ssm" => {
                let Some(name) = resource.strip_prefix("parameter") else {
                    return Err("an SSM ARN ends in parameter/NAME".into());
                };
                check_name(name.trim_start_matches('/')).map_err(|e| e.message)?;
                Ok(Reference::Parameter {
                    name: name.to_string(),
                })
            }
            other => Err(format!(
                "secrets come from secretsmanager or ssm, not {other:?}"
            )),
        }
    } else {
        check_name(value_from).map_err(|e| e.message)?;
        Ok(Reference::Parameter {
            name: value_from.to_string(),
        })
    }
}

/// Whether `suffix` looks like the 6 random characters Secrets Manager appends to an ARN.
fn is_arn_suffix(suffix: &str) -> bool {
    suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric())
}

impl Reference {
    /// The stored names this may mean, most likely first: an ARN copied from AWS ends in
    /// `-` and six random characters; a parameter `/a/b`'s ARN ends in `parameter/a/b`, a
    /// parameter `b`'s in `parameter/b`.
    pub fn candidates(&self) -> Vec<String> {
        match self {
            Reference::Manager { name, .. } => {
                let mut names = vec![name.clone()];
                if let Some((base, suffix)) = name.rsplit_once('-') {
                    if !base.is_empty() && is_arn_suffix(suffix) {
                        names.push(base.to_string());
                    }
                }
                names
            }
            Reference::Parameter { name } => {
                let bare = name.trim_start_matches('/');
                let mut names = vec![name.clone()];
                for other in [bare.to_string(), format!("/{bare}")] {
                    if !names.contains(&other) {
                        names.push(other);
                    }
                }
                names
            }
        }
    }

    fn from(&self) -> &'static str {
        match self {
            Reference::Manager { .. } => {
                "unable to pull secrets or registry auth: execution resource retrieval failed: \
                 unable to retrieve secret from asm"
            }
            Reference::Parameter { .. } => {
                "unable to pull secrets or registry auth: execution resource retrieval failed: \
                 unable to retrieve secrets from ssm"
            }
        }
    }

    /// ECS's reason for a secret that is not there.
    fn missing(&self, value_from: &str) -> String {
        match self {
            Reference::Manager { .. } => format!(
                "{INIT_ERROR}: {}: failed to fetch secret {value_from} from secrets manager: \
                 ResourceNotFoundException: Secrets Manager can't find the specified secret.",
                self.from()
            ),
            Reference::Parameter { name } => format!(
                "{INIT_ERROR}: {}: invalid ssm parameters: {name}",
                self.from()
            ),
        }
    }

    /// The version asked for: the current one unless a stage or id says otherwise.
    fn version<'a>(
        &self,
        record: &'a crate::metadata::SecretRecord,
    ) -> Result<&'a SealedVersion, String> {
        let Reference::Manager {
            version_stage,
            version_id,
            ..
        } = self
        else {
            return Ok(&record.current);
        };
        let by_stage = match version_stage.as_deref() {
            None | Some("AWSCURRENT") => Some(&record.current),
            Some("AWSPREVIOUS") => record.previous.as_ref(),
            Some(other) => {
                return Err(format!(
                    "version stage {other:?}: ecrl keeps AWSCURRENT and AWSPREVIOUS"
                ))
            }
        };
        match version_id {
            None => by_stage.ok_or_else(|| "the secret has no AWSPREVIOUS version".into()),
            Some(id) => std::iter::once(&record.current)
                .chain(record.previous.as_ref())
                .find(|v| &v.version_id == id)
                .filter(|v| version_stage.is_none() || by_stage == Some(*v))
                .ok_or_else(|| format!("the secret has no version {id}")),
        }
    }
}

/// One key of a JSON secret: a string as it is, anything else as its JSON.
fn json_key(value: &str, key: &str) -> Result<Zeroizing<String>, String> {
    let parsed: serde_json::Value = serde_json::from_str(value)
        .map_err(|_| format!("the secret is not JSON, so it has no key {key:?}"))?;
    let found = parsed.as_object().and_then(|o| o.get(key)).ok_or_else(|| {
        format!("retrieved secret from Secrets Manager did not contain json key {key}")
    })?;
    Ok(Zeroizing::new(match found {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(name: &str, key: Option<&str>, stage: Option<&str>, id: Option<&str>) -> Reference {
        Reference::Manager {
            name: name.into(),
            json_key: key.map(Into::into),
            version_stage: stage.map(Into::into),
            version_id: id.map(Into::into),
        }
    }

    #[test]
    fn value_from_reads_every_form_ecs_takes() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbC123";
        assert_eq!(
            parse_value_from(arn).unwrap(),
            manager("prod/db-AbC123", None, None, None)
        );
        assert_eq!(
            parse_value_from(&format!("{arn}:password::")).unwrap(),
            manager("prod/db-AbC123", Some("password"), None, None)
        );
        assert_eq!(
            parse_value_from(&format!("{arn}::AWSPREVIOUS:")).unwrap(),
            manager("prod/db-AbC123", None, Some("AWSPREVIOUS"), None)
        );
        assert_eq!(
            parse_value_from(&format!("{arn}:user::v-1")).unwrap(),
            manager("prod/db-AbC123", Some("user"), None, Some("v-1"))
        );
        assert_eq!(
            parse_value_from("arn:aws-cn:ssm:cn-north-1:1:parameter/prod/db").unwrap(),
            Reference::Parameter {
                name: "/prod/db".into()
            }
        );
        assert_eq!(
            parse_value_from("db_password").unwrap(),
            Reference::Parameter {
                name: "db_password".into()
            }
        );
        for bad in [
            "arn:aws:s3:::bucket/key",
            "arn:aws:secretsmanager:r:1:secret:",
            "arn:aws:secretsmanager:r:1:parameter/x",
            "arn:aws:secretsmanager:r:1:secret:n:k:s:i:extra",
            "arn:aws:ssm:r:1:secret:x",
            "arn:aws:ssm",
            "",
            "white space",
        ] {
            assert!(parse_value_from(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn names_are_found_as_aws_spells_them() {
        assert_eq!(
            manager("prod/db-AbC123", None, None, None).candidates(),
            vec!["prod/db-AbC123", "prod/db"]
        );
        assert_eq!(
            manager("my-db", None, None, None).candidates(),
            vec!["my-db"]
        );
        assert_eq!(
            Reference::Parameter {
                name: "/prod/db".into()
            }
            .candidates(),
            vec!["/prod/db", "prod/db"]
        );
        assert_eq!(
            Reference::Parameter { name: "db".into() }.candidates(),
            vec!["db", "/db"]
        );
    }

    #[test]
    fn versions_are_picked_by_stage_and_id() {
        let v = |n: &str| SealedVersion {
            sealed: vec![],
            version_id: n.into(),
        };
        let record = crate::metadata::SecretRecord {
            current: v("new"),
            previous: Some(v("old")),
            created_at: 0,
            updated_at: 0,
        };
        let pick = |stage, id| {
            manager("s", None, stage, id)
                .version(&record)
                .map(|v| v.version_id.clone())
        };
        assert_eq!(pick(None, None).unwrap(), "new");
        assert_eq!(pick(Some("AWSCURRENT"), None).unwrap(), "new");
        assert_eq!(pick(Some("AWSPREVIOUS"), None).unwrap(), "old");
        assert_eq!(pick(None, Some("old")).unwrap(), "old");
        assert!(pick(Some("AWSCURRENT"), Some("old")).is_err());
        assert!(pick(None, Some("nope")).is_err());
        assert!(pick(Some("AWSPENDING"), None).is_err());
    }

    #[test]
    fn json_keys_answer_strings_as_they_are() {
        let secret = r#"{"user":"app","port":5432,"nested":{"a":1}}"#;
        assert_eq!(*json_key(secret, "user").unwrap(), "app");
        assert_eq!(*json_key(secret, "port").unwrap(), "5432");
        assert_eq!(*json_key(secret, "nested").unwrap(), r#"{"a":1}"#);
        assert!(json_key(secret, "missing")
            .unwrap_err()
            .contains("did not contain json key missing"));
        assert!(json_key("plain text", "user").is_err());
    }

    #[tokio::test]
    async fn values_are_sealed_both_ways_and_found_by_reference() {
        let dir = tempfile::tempdir().unwrap();
        let meta =
            Arc::new(Metadata::open(dir.path(), |_| Ok(bytes::Bytes::from_static(b"{}"))).unwrap());
        let master = crate::storage::crypt::MasterKey::generate().unwrap();
        let keys = Arc::new(Keys::new(&master, &[]).unwrap());
        for store in [
            Secrets::new(meta.clone(), Some(keys), "us-east-1"),
            Secrets::new(meta.clone(), None, "us-east-1"),
        ] {
            let (info, created) = store
                .put("prod/db", r#"{"password":"hunter2"}"#)
                .await
                .unwrap();
            assert!(created);
            let sealed = meta.read().secrets["prod/db"].current.sealed.clone();
            assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
            assert_eq!(store.get("prod/db").unwrap().version_id, info.version_id);
            let arn = format!("{}prod/db-AbC123:password::", store.arn_prefix);
            assert_eq!(*store.resolve(&arn).unwrap(), "hunter2");
            assert_eq!(
                *store.resolve("arn:aws:ssm:r:1:parameter/prod/db").unwrap(),
                r#"{"password":"hunter2"}"#
            );
            store.put("prod/db", "second").await.unwrap();
            let previous = format!("{}prod/db::AWSPREVIOUS:", store.arn_prefix);
            assert_eq!(
                *store.resolve(&previous).unwrap(),
                r#"{"password":"hunter2"}"#
            );
            let missing = store
                .resolve("arn:aws:secretsmanager:r:1:secret:nope")
                .unwrap_err();
            assert!(
                missing.starts_with("ResourceInitializationError: "),
                "{missing}"
            );
            assert!(missing.contains("ResourceNotFoundException"), "{missing}");
            assert!(store
                .resolve("/not/there")
                .unwrap_err()
                .ends_with("invalid ssm parameters: /not/there"));
            store.delete("prod/db").await.unwrap();
            assert_eq!(
                store.get("prod/db").unwrap_err().code,
                ErrorCode::SecretNotFound
            );
        }
    }

    #[tokio::test]
    async fn a_value_sealed_for_one_name_does_not_open_as_another() {
        let dir = tempfile::tempdir().unwrap();
        let meta =
            Arc::new(Metadata::open(dir.path(), |_| Ok(bytes::Bytes::from_static(b"{}"))).unwrap());
        let store = Secrets::new(meta.clone(), None, "us-east-1");
        store.put("a", "value of a").await.unwrap();
        let record = meta.read().secrets["a"].clone();
        assert!(store.open("b", &record.current).is_err());
        assert!(store.open("a", &record.current).is_ok());
        assert!(check_value("nul\0byte").is_err());
        assert!(check_value(&"x".repeat(MAX_SECRET_BYTES + 1)).is_err());
        assert!(check_name("bad name").is_err());
        assert!(check_name(&"n".repeat(513)).is_err());
    }
}
