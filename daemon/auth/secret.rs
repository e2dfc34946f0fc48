//! Access keys, their hashed secrets, and the signed login tokens.
//!
//! A token is `ecrl1.<payload>.<mac>`: the payload (base64url JSON) names the principal, the
//! access key it was issued for and its expiry; the MAC is HMAC-SHA256 under the daemon's
//! token secret. A token issued for a user is only good while that access key exists, so a
//! key rotation (or deleting the user) ends it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a login token lives, as ECR's.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How long the task runner's pull tokens live.
pub const RUNNER_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

const TOKEN_PREFIX: &str = "ecrl1";

/// A new access key: an id like AWS's (`AKIA` + 16 characters) and a 40-character secret.
pub fn new_access_key() -> (String, Secret) {
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut random = [0u8; 56];
    if crate::metadata::getrandom(&mut random).is_err() {
        // /dev/urandom is always there on Linux; fall back to v4 UUIDs (also random).
        for chunk in random.chunks_mut(16) {
            let u = uuid::Uuid::new_v4();
            chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
        }
    }
    let id: String = "AKIA"
        .chars()
        .chain(
            random[..16]
                .iter()
                .map(|b| ID[(*b as usize) % ID.len()] as char),
        )
        .collect();
    let secret: String = random[16..]
        .iter()
        .map(|b| SECRET[(*b as usize) % SECRET.len()] as char)
        .collect();
    (id, Secret(secret))
}

/// A secret (access key secret or token): shown once, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares in time that does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user; empty for the daemon's owner.
    #[serde(rename = "sub")]
    pub user: String,
    /// The access key the token was issued for (empty for the owner).
    #[serde(rename = "kid")]
    pub key_id: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "exp")]
    pub expires: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn issue(secret: &[u8; 32], user: &str, key_id: &str, lifetime: Duration) -> (Secret, u64) {
    let claims = Claims {
        user: user.to_string(),
        key_id: key_id.to_string(),
        expires: now_secs() + lifetime.as_secs(),
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let signed = format!("{TOKEN_PREFIX}.{payload}");
    let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, signed.as_bytes()));
    (Secret(format!("{signed}.{mac}")), claims.expires)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not match")]
    Forged,
    #[error("the token has expired")]
    Expired,
}

/// Checks a token's signature and expiry; answers its claims.
pub fn verify(secret: &[u8; 32], token: &str) -> Result<Claims, TokenError> {
    let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (prefix, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    if prefix != TOKEN_PREFIX {
        return Err(TokenError::Malformed);
    }
    let mac = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| TokenError::Malformed)?;
    if !constant_time_eq(&mac, &hmac_sha256(secret, signed.as_bytes())) {
        return Err(TokenError::Forged);
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.expires <= now_secs() {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// `base64(AWS:token)`, as ECR's GetAuthorizationToken answers.
pub fn docker_auth(token: &str) -> String {
    STANDARD.encode(format!("AWS:{token}"))
}

/// The user and password of a Basic `Authorization` value.
pub fn parse_basic(value: &str) -> Option<(String, Secret)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), Secret(password.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn access_keys_look_like_aws_ones_and_differ() {
        let (id, secret) = new_access_key();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("AKIA"));
        assert_eq!(secret.0.len(), 40);
        let (id2, secret2) = new_access_key();
        assert_ne!(id, id2);
        assert_ne!(secret, secret2);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn tokens_verify_and_reject_forgery_and_expiry() {
        let (token, _) = issue(&KEY, "ci", "AKIAEXAMPLE", TOKEN_LIFETIME);
        let claims = verify(&KEY, &token.0).unwrap();
        assert_eq!(claims.user, "ci");
        assert_eq!(claims.key_id, "AKIAEXAMPLE");
        assert_eq!(verify(&[8; 32], &token.0), Err(TokenError::Forged));
        // Changing the payload (to another user) breaks the signature.
        let parts: Vec<&str> = token.0.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","kid":"","exp":99999999999}"#);
        let forged = format!("{}.{}.{}", parts[0], other, parts[2]);
        assert_eq!(verify(&KEY, &forged), Err(TokenError::Forged));
        let (old, _) = issue(&KEY, "ci", "k", Duration::ZERO);
        assert_eq!(verify(&KEY, &old.0), Err(TokenError::Expired));
        assert_eq!(verify(&KEY, "nonsense"), Err(TokenError::Malformed));
        assert_eq!(verify(&KEY, "ecrl1.x.y"), Err(TokenError::Malformed));
    }

    #[test]
    fn hmac_matches_rfc_4231_shape() {
        // HMAC-SHA256 of "Hi There" under a 32-byte key of 0x0b, checked against the value
        // computed with `openssl dgst -sha256 -mac HMAC -macopt hexkey:0b..0b`.
        let mac = hmac_sha256(&[0x0b; 32], b"Hi There");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn basic_credentials_parse() {
        let value = format!("Basic {}", STANDARD.encode("AWS:tok:en"));
        let (user, password) = parse_basic(&value).unwrap();
        assert_eq!(user, "AWS");
        assert_eq!(password.0, "tok:en");
        assert!(parse_basic("Bearer x").is_none());
        assert!(parse_basic("Basic !!!").is_none());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
