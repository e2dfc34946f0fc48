//! Short-lived credentials of a user (what a task role's containers get): an access key id
//! `ASIA…`, a secret and a session token, as STS hands out. Nothing is stored: the session
//! token carries the user, the expiry and the key id under an HMAC of a key derived from the
//! token secret, and the secret is derived from the token. A request signed with them is the
//! user's, under the user's policies, until the expiry (or until the user is deleted).

use aws_lc_rs::hmac;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// How long minted credentials last. SDKs fetch new ones before they expire.
pub const LIFETIME_SECONDS: i64 = 3600;

/// What identifies temporary credentials' key ids (AWS's own prefix for them).
pub const KEY_PREFIX: &str = "ASIA";

/// Credentials for one user, until `expires` (unix seconds).
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

fn key(token_secret: &[u8; 32]) -> hmac::Key {
    let derived = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, token_secret),
        b"ecrl session credentials v1",
    );
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

fn secret_of(key: &hmac::Key, payload: &str) -> String {
    let tag = hmac::sign(key, format!("secret\n{payload}").as_bytes());
    let mut secret = STANDARD.encode(tag.as_ref());
    secret.truncate(40);
    secret
}

/// New credentials of `user`, valid from `now` (unix seconds) for [`LIFETIME_SECONDS`].
pub fn mint(token_secret: &[u8; 32], user: &str, now: i64) -> std::io::Result<Credentials> {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut random = [0u8; 16];
    crate::metadata::getrandom(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut access_key_id = KEY_PREFIX.to_string();
    access_key_id.extend(random.iter().map(|b| BASE32[usize::from(b % 32)] as char));
    let expires = now + LIFETIME_SECONDS;
    let payload = format!("{user}\n{expires}\n{access_key_id}");
    let key = key(token_secret);
    let tag = hmac::sign(&key, format!("token\n{payload}").as_bytes());
    let session_token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    );
    Ok(Credentials {
        secret_access_key: secret_of(&key, &payload),
        access_key_id,
        session_token,
        expires,
    })
}

/// Why temporary credentials were not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a token ecrld made, or made for another key id.
    Invalid,
    Expired,
}

/// The user and the secret of `key_id`'s credentials, if `token` is theirs and not expired.
pub fn open(
    token_secret: &[u8; 32],
    key_id: &str,
    token: &str,
    now: i64,
) -> Result<(String, String), Refused> {
    let (payload, tag) = token.split_once('.').ok_or(Refused::Invalid)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| String::from_utf8(p).ok())
        .ok_or(Refused::Invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Invalid)?;
    let key = key(token_secret);
    hmac::verify(&key, format!("token\n{payload}").as_bytes(), &tag)
        .map_err(|_| Refused::Invalid)?;
    let mut fields = payload.split('\n');
    let (Some(user), Some(expires), Some(id), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Refused::Invalid);
    };
    if id != key_id {
        return Err(Refused::Invalid);
    }
    let expires: i64 = expires.parse().map_err(|_| Refused::Invalid)?;
    if now >= expires {
        return Err(Refused::Expired);
    }
    Ok((user.to_string(), secret_of(&key, &payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_open_for_their_key_until_they_expire() {
        let secret = [3u8; 32];
        let c = mint(&secret, "ci", 1_000).unwrap();
        assert!(c.access_key_id.starts_with("ASIA"));
        assert_eq!(c.access_key_id.len(), 20);
        assert_eq!(c.secret_access_key.len(), 40);
        assert_eq!(
            open(&secret, &c.access_key_id, &c.session_token, 1_001).unwrap(),
            ("ci".to_string(), c.secret_access_key.clone())
        );
        assert_eq!(
            open(
                &secret,
                &c.access_key_id,
                &c.session_token,
                1_000 + LIFETIME_SECONDS
            ),
            Err(Refused::Expired)
        );
        // Another key id, another token secret, a changed token: refused.
        let other = mint(&secret, "ci", 1_000).unwrap();
        assert_eq!(
            open(&secret, &other.access_key_id, &c.session_token, 1_001),
            Err(Refused::Invalid)
        );
        assert_eq!(
            open(&[4u8; 32], &c.access_key_id, &c.session_token, 1_001),
            Err(Refused::Invalid)
        );
        let (payload, tag) = c.session_token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(format!("admin\n99999999999\n{}", c.access_key_id));
        assert_eq!(
            open(&secret, &c.access_key_id, &format!("{forged}.{tag}"), 1_001),
            Err(Refused::Invalid)
        );
        assert_eq!(
            open(&secret, &c.access_key_id, payload, 1_001),
            Err(Refused::Invalid)
        );
        assert!(!format!("{c:?}").contains(&c.secret_access_key));
    }
}
