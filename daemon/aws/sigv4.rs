//! AWS Signature Version 4, checked as AWS checks it: the request rebuilt in its canonical
//! form, the string to sign over it, the signing key derived from the access key's secret for
//! the date, region and service of the credential scope, and the signature compared in
//! constant time. The date must be within 15 minutes of the daemon's clock; any region is
//! taken (ecrl is one region, and its ARNs name it).
//!
//! Beyond what AWS demands, ecrl requires `host`, `x-amz-date` and (on the JSON API)
//! `x-amz-target` to be among the signed headers: an unsigned target would let a captured
//! request be replayed as another operation. The AWS CLI, boto3 and the SDKs sign them all.

use aws_lc_rs::{digest, hmac};
use std::collections::HashMap;
use std::sync::Mutex;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's date may be from the daemon's clock, as AWS allows.
pub const MAX_SKEW_SECONDS: i64 = 15 * 60;

/// Why a signature was refused. The messages are AWS's where AWS has one; none carries the
/// secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("{0}")]
    Malformed(String),
    #[error(
        "Signature expired: {0} is now earlier or later than 15 minutes from the daemon's time"
    )]
    Skewed(String),
    #[error(
        "The request signature we calculated does not match the signature you provided. Check \
         your AWS Secret Access Key and signing method."
    )]
    Mismatch,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase, in the order given (which must be sorted).
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

pub fn parse_authorization(value: &str) -> Result<Authorization, SigError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            SigError::Malformed(format!(
                "Authorization header requires the {ALGORITHM} algorithm"
            ))
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, v) = part.trim().split_once('=').ok_or_else(|| {
            SigError::Malformed(format!(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' \
                 parameters; got '{}'",
                part.trim()
            ))
        })?;
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| {
        SigError::Malformed(format!("Authorization header requires '{what}' parameter"))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(SigError::Malformed(format!(
            "Credential should be scoped to a valid region and service: KEY/YYYYMMDD/REGION/\
             SERVICE/aws4_request, not '{credential}'"
        )));
    };
    if terminator != "aws4_request"
        || key_id.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || region.is_empty()
        || service.is_empty()
    {
        return Err(SigError::Malformed(format!(
            "Credential should be scoped to a valid region and service: KEY/YYYYMMDD/REGION/\
             SERVICE/aws4_request, not '{credential}'"
        )));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.iter().any(|h| {
        h.is_empty()
            || h.bytes()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
    }) || !signed_headers.windows(2).all(|w| w[0] < w[1])
    {
        return Err(SigError::Malformed(format!(
            "SignedHeaders must be lowercase header names, sorted and separated by ';', not \
             '{signed}'"
        )));
    }
    let signature = from_hex(signature)
        .ok_or_else(|| SigError::Malformed("Signature must be 64 hex digits".into()))?;
    Ok(Authorization {
        key_id: key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature,
    })
}

/// A request as it arrived, for its signature to be checked.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded as the client sent it).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Header names (any case) and values, in the order received.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// Every value of a header, in order.
    fn values<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'a str> + 'h {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.values(name).next()
    }
}

/// Checks a request's SigV4 signature. `auth` is its parsed `Authorization` header,
/// `required` the headers that must be signed besides `host` and `x-amz-date`, `now` the
/// daemon's clock (seconds since the epoch), `secret` the access key's secret.
pub fn verify(
    request: &Request<'_>,
    auth: &Authorization,
    required: &[&str],
    now: i64,
    secret: &str,
    keys: &KeyCache,
) -> Result<(), SigError> {
    let amz_date = request.header("x-amz-date").ok_or_else(|| {
        SigError::Malformed("Authorization requires the X-Amz-Date header".into())
    })?;
    let when = parse_amz_date(amz_date).ok_or_else(|| {
        SigError::Malformed(format!(
            "X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z', not '{amz_date}'"
        ))
    })?;
    if (when - now).abs() > MAX_SKEW_SECONDS {
        return Err(SigError::Skewed(amz_date.to_string()));
    }
    if amz_date[..8] != auth.date {
        return Err(SigError::Malformed(format!(
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date: {} vs {amz_date}",
            auth.date
        )));
    }
    for must in ["host", "x-amz-date"].iter().chain(required) {
        if !auth.signed_headers.iter().any(|h| h == must) {
            return Err(SigError::Malformed(format!(
                "'{must}' must be a signed header"
            )));
        }
    }
    let expected = signature(request, auth, secret, keys)?;
    if crate::auth::secret::constant_time_eq(&expected, &auth.signature) {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

/// The signature the request should carry under `secret`.
fn signature(
    request: &Request<'_>,
    auth: &Authorization,
    secret: &str,
    keys: &KeyCache,
) -> Result<[u8; 32], SigError> {
    let body_hash = hex(digest::digest(&digest::SHA256, request.body).as_ref());
    let payload = match request.header("x-amz-content-sha256") {
        // A client may say what it hashed; it must be what arrived.
        Some(said) if !said.eq_ignore_ascii_case(&body_hash) => {
            return Err(SigError::Malformed(
                "The provided 'x-amz-content-sha256' header does not match what was computed"
                    .into(),
            ))
        }
        _ => body_hash,
    };
    let mut canonical = String::with_capacity(512);
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical_uri(request.path, &mut canonical);
    canonical.push('\n');
    canonical_query(request.query, &mut canonical);
    canonical.push('\n');
    for name in &auth.signed_headers {
        let mut values = request.values(name).peekable();
        if values.peek().is_none() {
            return Err(SigError::Malformed(format!(
                "the signed header '{name}' is not in the request"
            )));
        }
        canonical.push_str(name);
        canonical.push(':');
        for (i, v) in values.enumerate() {
            if i > 0 {
                canonical.push(',');
            }
            push_trimmed(v, &mut canonical);
        }
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&auth.signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(&payload);

    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        request.header("x-amz-date").unwrap_or_default(),
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let key = keys.signing_key(
        &auth.key_id,
        secret,
        &auth.date,
        &auth.region,
        &auth.service,
    );
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Signing keys already derived (four HMACs each), by access key, date, region and service.
/// Bounded (emptied when it fills); a key id whose secret changed derives again.
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<Scope, Derived>>,
}

/// `KEY/DATE/REGION/SERVICE`.
type Scope = String;
/// The SHA-256 of the secret a key was derived from, and the key.
type Derived = ([u8; 32], [u8; 32]);

const KEY_CACHE_LIMIT: usize = 4096;

impl KeyCache {
    fn signing_key(
        &self,
        key_id: &str,
        secret: &str,
        date: &str,
        region: &str,
        service: &str,
    ) -> [u8; 32] {
        // Remembered with the secret's hash: a key id whose secret changed derives again.
        let fingerprint: [u8; 32] = {
            let d = digest::digest(&digest::SHA256, secret.as_bytes());
            let mut f = [0u8; 32];
            f.copy_from_slice(d.as_ref());
            f
        };
        let id = format!("{key_id}/{date}/{region}/{service}");
        if let Some((f, key)) = self.keys.lock().ok().and_then(|k| k.get(&id).copied()) {
            if f == fingerprint {
                return key;
            }
        }
        let key = derive_key(secret, date, region, service);
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= KEY_CACHE_LIMIT {
                keys.clear();
            }
            keys.insert(id, (fingerprint, key));
        }
        key
    }
}

/// AWS's key derivation: HMAC chains over the date, region, service and `aws4_request`.
pub fn derive_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&key);
    out
}

/// The path, normalised (empty segments and `.` dropped, `..` applied) and each byte outside
/// RFC 3986's unreserved set percent-encoded (so a path sent encoded is encoded again, as
/// every AWS service but S3 signs it).
fn canonical_uri(path: &str, out: &mut String) {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    out.push('/');
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode(s.as_bytes(), out);
    }
    if path.len() > 1 && path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
}

/// The query's parameters decoded, encoded again AWS's way, sorted by name then value.
fn canonical_query(query: &str, out: &mut String) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            encode(&percent_decode(k), &mut ek);
            encode(&percent_decode(v), &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_value(b[i + 1]), hex_value(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A header value trimmed, with runs of spaces inside it made one.
fn push_trimmed(value: &str, out: &mut String) {
    let mut space = false;
    for c in value.trim().chars() {
        if c == ' ' || c == '\t' {
            space = true;
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_amz_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(text, &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite: its example key, date, region and service.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const NOW: i64 = 1_440_938_160; // 2015-08-30T12:36:00Z

    fn suite_auth(signed: &str, signature: &str) -> String {
        format!(
            "{ALGORITHM} Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed}, Signature={signature}"
        )
    }

    fn check(method: &str, path: &str, query: &str, headers: &[(&str, &str)], sig: &str) {
        let auth = parse_authorization(&suite_auth("host;x-amz-date", sig)).unwrap();
        let request = Request {
            method,
            path,
            query,
            headers,
            body: b"",
        };
        let keys = KeyCache::default();
        assert_eq!(
            verify(&request, &auth, &[], NOW, SECRET, &keys),
            Ok(()),
            "{method} {path}?{query}"
        );
        // Twice: the second time from the cached signing key.
        assert_eq!(verify(&request, &auth, &[], NOW, SECRET, &keys), Ok(()));
        // Any other secret, or one changed byte of the request, fails.
        assert_eq!(
            verify(
                &request,
                &auth,
                &[],
                NOW,
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEX",
                &keys
            ),
            Err(SigError::Mismatch)
        );
        let other = Request {
            method: if method == "GET" { "POST" } else { "GET" },
            ..request
        };
        assert_eq!(
            verify(&other, &auth, &[], NOW, SECRET, &keys),
            Err(SigError::Mismatch)
        );
    }

    const HOST_DATE: &[(&str, &str)] = &[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];

    #[test]
    fn the_aws_test_suite_vectors_verify() {
        check(
            "GET",
            "/",
            "",
            HOST_DATE,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        check(
            "POST",
            "/",
            "",
            HOST_DATE,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        );
        // get-vanilla-query-order-key-case: parameters are sorted before signing.
        check(
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            HOST_DATE,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        );
        // post-vanilla-query.
        check(
            "POST",
            "/",
            "Param1=value1",
            HOST_DATE,
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        );
        // get-utf8: the path's bytes are encoded.
        check(
            "GET",
            "/ሴ",
            "",
            HOST_DATE,
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        );
        // get-space: as is the space in a path.
        check(
            "GET",
            "/example space/",
            "",
            HOST_DATE,
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        );
        // post-header-key-case: header names in any case.
        let upper: &[(&str, &str)] = &[("HOST", "example.amazonaws.com"), ("x-AMZ-date", DATE)];
        check(
            "POST",
            "/",
            "",
            upper,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        );
    }

    /// A CreateRepository call as botocore 1.44 (the AWS CLI's core) signed it, headers and
    /// body as it sent them.
    #[test]
    fn a_request_botocore_signed_verifies() {
        let body = br#"{"repositoryName": "team/app", "imageTagMutability": "IMMUTABLE"}"#;
        let headers = [
            (
                "X-Amz-Target",
                "AmazonEC2ContainerRegistry_V20150921.CreateRepository",
            ),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("User-Agent", "aws-cli/1.x"),
            ("X-Amz-Date", "20261207T011513Z"),
            ("Host", "127.0.0.1:5000"),
        ];
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIAECRLTESTKEY00001/20261207/us-east-1/ecr/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
             Signature=f8f360d39c70aafd98f170be622c6badcbbbd1b5d9b73e5c20aa23762f3e1244",
        )
        .unwrap();
        assert_eq!(
            (
                auth.key_id.as_str(),
                auth.region.as_str(),
                auth.service.as_str()
            ),
            ("AKIAECRLTESTKEY00001", "us-east-1", "ecr")
        );
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let secret = "ecrlTestSecret/0123456789abcdefghijklmnopqrst";
        let keys = KeyCache::default();
        let now = 1_796_606_113;
        assert_eq!(
            verify(&request, &auth, &["x-amz-target"], now, secret, &keys),
            Ok(())
        );
        assert_eq!(
            verify(&request, &auth, &["x-amz-target"], now, SECRET, &keys),
            Err(SigError::Mismatch)
        );
    }

    #[test]
    fn dates_outside_15_minutes_and_other_days_are_refused() {
        let sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let auth = parse_authorization(&suite_auth("host;x-amz-date", sig)).unwrap();
        let request = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: HOST_DATE,
            body: b"",
        };
        let keys = KeyCache::default();
        for now in [NOW - MAX_SKEW_SECONDS, NOW + MAX_SKEW_SECONDS] {
            assert_eq!(verify(&request, &auth, &[], now, SECRET, &keys), Ok(()));
        }
        for now in [NOW - MAX_SKEW_SECONDS - 1, NOW + MAX_SKEW_SECONDS + 1] {
            assert!(matches!(
                verify(&request, &auth, &[], now, SECRET, &keys),
                Err(SigError::Skewed(_))
            ));
        }
        let mut other_day = auth.clone();
        other_day.date = "20150831".into();
        assert!(matches!(
            verify(&request, &other_day, &[], NOW, SECRET, &keys),
            Err(SigError::Malformed(m)) if m.contains("does not match")
        ));
        let no_date: &[(&str, &str)] = &[("Host", "example.amazonaws.com")];
        let request = Request {
            headers: no_date,
            ..request
        };
        assert!(matches!(
            verify(&request, &auth, &[], NOW, SECRET, &keys),
            Err(SigError::Malformed(m)) if m.contains("X-Amz-Date")
        ));
    }

    #[test]
    fn required_headers_must_be_signed_and_present() {
        let sig = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
        let auth = parse_authorization(&suite_auth("host;x-amz-date", sig)).unwrap();
        let headers: &[(&str, &str)] = &[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", DATE),
            (
                "X-Amz-Target",
                "AmazonEC2ContainerRegistry_V20150921.DeleteRepository",
            ),
        ];
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body: b"",
        };
        let keys = KeyCache::default();
        // Valid as far as AWS goes, but the target is not covered by the signature.
        assert!(matches!(
            verify(&request, &auth, &["x-amz-target"], NOW, SECRET, &keys),
            Err(SigError::Malformed(m)) if m.contains("x-amz-target")
        ));
        // A header named as signed but absent.
        let auth = parse_authorization(&suite_auth("host;x-amz-date;x-amz-meta", sig)).unwrap();
        assert!(matches!(
            verify(&request, &auth, &[], NOW, SECRET, &keys),
            Err(SigError::Malformed(m)) if m.contains("x-amz-meta")
        ));
    }

    /// A request signed here the way botocore signs a JSON 1.1 call verifies; its body, its
    /// target or a claimed payload hash changed does not.
    #[test]
    fn a_signed_json_request_covers_body_and_target() {
        let body = br#"{"repositoryName":"team/app"}"#;
        let target = "AmazonEC2ContainerRegistry_V20150921.CreateRepository";
        let signed = "content-type;host;x-amz-date;x-amz-target";
        let headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Host", "localhost:5000"),
            ("X-Amz-Date", DATE),
            ("X-Amz-Target", target),
        ];
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let keys = KeyCache::default();
        let mut auth = parse_authorization(&suite_auth(signed, &"0".repeat(64))).unwrap();
        auth.region = "eu-west-1".into();
        auth.service = "ecr".into();
        auth.signature = signature(&request, &auth, SECRET, &keys).unwrap();
        let required = ["x-amz-target"];
        assert_eq!(
            verify(&request, &auth, &required, NOW, SECRET, &keys),
            Ok(())
        );
        let tampered = Request {
            body: br#"{"repositoryName":"team/other"}"#,
            ..request
        };
        assert_eq!(
            verify(&tampered, &auth, &required, NOW, SECRET, &keys),
            Err(SigError::Mismatch)
        );
        let retargeted = [
            headers[0],
            headers[1],
            headers[2],
            (
                "X-Amz-Target",
                "AmazonEC2ContainerRegistry_V20150921.DeleteRepository",
            ),
        ];
        let retargeted = Request {
            headers: &retargeted,
            ..request
        };
        assert_eq!(
            verify(&retargeted, &auth, &required, NOW, SECRET, &keys),
            Err(SigError::Mismatch)
        );
        let mut claimed = headers.to_vec();
        claimed.push(("x-amz-content-sha256", "UNSIGNED-PAYLOAD"));
        let claimed = Request {
            headers: &claimed,
            ..request
        };
        assert!(matches!(
            verify(&claimed, &auth, &required, NOW, SECRET, &keys),
            Err(SigError::Malformed(m)) if m.contains("x-amz-content-sha256")
        ));
    }

    #[test]
    fn malformed_authorization_headers_say_what_is_wrong() {
        for (value, says) in [
            ("AWS4-HMAC-SHA1 Credential=a/b", "algorithm"),
            ("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host", "Signature"),
            ("AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/service/aws4_request, SignedHeaders=host, Signature=00", "Credential"),
            ("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date;host, Signature=00", "sorted"),
            ("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=Host, Signature=00", "lowercase"),
            ("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature=zz", "hex"),
            ("AWS4-HMAC-SHA256 junk", "parameters"),
        ] {
            match parse_authorization(value) {
                Err(SigError::Malformed(m)) => assert!(m.contains(says), "{value}: {m}"),
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    /// `cargo test --release --bin ecrld aws::sigv4 -- --ignored --nocapture`: what one
    /// verification of a JSON 1.1 request costs (target: at most 20 µs).
    #[test]
    #[ignore]
    fn bench_verification() {
        let body = br#"{"repositoryNames":["team/app"],"maxResults":100}"#;
        let headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Host", "127.0.0.1:5000"),
            (
                "User-Agent",
                "aws-cli/1.36.0 Python/3.13 Linux botocore/1.35.0",
            ),
            ("X-Amz-Date", DATE),
            (
                "X-Amz-Target",
                "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
            ),
        ];
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let keys = KeyCache::default();
        let signed = "content-type;host;x-amz-date;x-amz-target";
        let mut auth = parse_authorization(&suite_auth(signed, &"0".repeat(64))).unwrap();
        auth.signature = signature(&request, &auth, SECRET, &keys).unwrap();
        let value = format!(
            "{ALGORITHM} Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed}, Signature={}",
            hex(&auth.signature)
        );
        let n = 200_000;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let auth = parse_authorization(std::hint::black_box(&value)).unwrap();
            verify(&request, &auth, &["x-amz-target"], NOW, SECRET, &keys).unwrap();
        }
        let each = started.elapsed() / n;
        println!("SigV4: one verification (parse + canonical request + HMAC) {each:?}");
        let started = std::time::Instant::now();
        for _ in 0..n / 10 {
            std::hint::black_box(derive_key(SECRET, "20150830", "us-east-1", "ecr"));
        }
        println!(
            "signing key derivation (cached after the first) {:?}",
            started.elapsed() / (n / 10)
        );
    }
}
