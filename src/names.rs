//! Repository names, tags, digests and references, parsed where they enter.
//!
//! The grammar is the OCI Distribution Spec's. A value of these types is valid by
//! construction, so nothing downstream re-checks it, and none of them ever becomes a file
//! path except a [`Digest`]'s hex, which is exactly 64 lowercase hex characters.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid repository name {0:?}: use lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/', at most 255 characters")]
    Repository(String),
    #[error(
        "invalid tag {0:?}: up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    Tag(String),
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lowercase hex characters")]
    Digest(String),
    #[error("unsupported digest algorithm {0:?}: ecrl stores sha256 content")]
    Algorithm(String),
    #[error("invalid reference {0:?}: expected a tag or a digest")]
    Reference(String),
}

/// A repository name such as `team/app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

/// The longest repository name ecrl accepts (ECR's limit; the spec asks for at least 255
/// characters including the registry host).
pub const MAX_REPO_NAME: usize = 255;

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn valid(s: &str) -> bool {
        if s.is_empty() || s.len() > MAX_REPO_NAME {
            return false;
        }
        s.split('/').all(valid_component)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if RepoName::valid(s) {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError::Repository(s.to_string()))
        }
    }
}

impl TryFrom<String> for RepoName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if RepoName::valid(&s) {
            Ok(RepoName(s))
        } else {
            Err(NameError::Repository(s))
        }
    }
}

impl From<RepoName> for String {
    fn from(n: RepoName) -> String {
        n.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag such as `1.2` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
    fn valid(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::try_from(s.to_string())
    }
}

impl TryFrom<String> for Tag {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if Tag::valid(&s) {
            Ok(Tag(s))
        } else {
            Err(NameError::Tag(s))
        }
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sha256 content digest, `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest([u8; 32]);

impl Digest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }
}

impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(NameError::Digest(s.to_string()));
        };
        // The spec's grammar: algorithm-component [+._-] ..., encoded [a-zA-Z0-9=_-]+.
        let algo_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c));
        let enc_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"=_-".contains(&c));
        if !algo_ok || !enc_ok {
            return Err(NameError::Digest(s.to_string()));
        }
        if algorithm != "sha256" {
            return Err(NameError::Algorithm(algorithm.to_string()));
        }
        if encoded.len() != 64 {
            return Err(NameError::Digest(s.to_string()));
        }
        let mut out = [0u8; 32];
        let hex = encoded.as_bytes();
        for (i, byte) in out.iter_mut().enumerate() {
            let nibble = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            match (nibble(hex[2 * i]), nibble(hex[2 * i + 1])) {
                (Some(h), Some(l)) => *byte = h << 4 | l,
                _ => return Err(NameError::Digest(s.to_string())),
            }
        }
        Ok(Digest(out))
    }
}

impl TryFrom<String> for Digest {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What follows the repository in a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse()
                .map(Reference::Tag)
                .map_err(|_| NameError::Reference(s.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// `REPO`, `REPO:TAG` or `REPO@DIGEST`, as users type them on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: RepoName,
    pub reference: Option<Reference>,
}

impl FromStr for ImageRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((repo, digest)) = s.split_once('@') {
            return Ok(ImageRef {
                repository: repo.parse()?,
                reference: Some(Reference::Digest(digest.parse()?)),
            });
        }
        // A ':' after the last '/' separates the tag.
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        match s[slash..].find(':') {
            Some(i) => Ok(ImageRef {
                repository: s[..slash + i].parse()?,
                reference: Some(Reference::Tag(s[slash + i + 1..].parse()?)),
            }),
            None => Ok(ImageRef {
                repository: s.parse()?,
                reference: None,
            }),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            None => self.repository.fmt(f),
            Some(Reference::Tag(t)) => write!(f, "{}:{t}", self.repository),
            Some(Reference::Digest(d)) => write!(f, "{}@{d}", self.repository),
        }
    }
}

/// The `host:port` names under which clients reach this registry: `localhost`, `127.0.0.1`,
/// `[::1]` and the listening address on each port it serves (plain HTTP and HTTPS), and the
/// names its certificate is issued for on the HTTPS port. A reference that starts with one
/// of them names one of ecrl's own repositories (ecrl prints such `repositoryUri`s).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnHosts {
    /// Each with its trailing `/`.
    prefixes: Vec<String>,
}

/// What [`OwnHosts::split`] found before a reference's first `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPrefix<'a> {
    /// No registry host: the whole text is a repository reference.
    None,
    /// This registry's own host; what follows it.
    Own(&'a str),
    /// Another registry's host, with what follows it.
    Other { host: &'a str, rest: &'a str },
}

impl OwnHosts {
    /// `plain` and `tls` are the listening addresses as bound; `tls_names` the extra names
    /// the HTTPS certificate covers.
    pub fn new(
        plain: Option<std::net::SocketAddr>,
        tls: Option<std::net::SocketAddr>,
        tls_names: &[String],
    ) -> Self {
        let mut prefixes = Vec::new();
        for addr in plain.into_iter().chain(tls) {
            let port = addr.port();
            prefixes.extend([
                format!("localhost:{port}/"),
                format!("127.0.0.1:{port}/"),
                format!("[::1]:{port}/"),
                format!("{addr}/"),
            ]);
        }
        if let Some(addr) = tls {
            for name in tls_names {
                let host = if name.contains(':') && !name.starts_with('[') {
                    format!("[{name}]")
                } else {
                    name.clone()
                };
                prefixes.push(format!("{host}:{}/", addr.port()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        prefixes.retain(|p| seen.insert(p.clone()));
        OwnHosts { prefixes }
    }

    /// Whether `text` starts with a registry host, as docker reads one where a repository
    /// name cannot: a first component with a port, an IPv6 literal, or `localhost`. (A dot
    /// alone does not make a host here: `my.team/app` is a valid ecrl repository.)
    pub fn host_of(text: &str) -> Option<(&str, &str)> {
        let (first, rest) = text.split_once('/')?;
        (first.contains(':') || first.starts_with('[') || first == "localhost")
            .then_some((first, rest))
    }

    /// Splits a leading registry host off `text`.
    pub fn split<'a>(&self, text: &'a str) -> HostPrefix<'a> {
        if let Some(rest) = self
            .prefixes
            .iter()
            .find_map(|p| text.strip_prefix(p.as_str()))
        {
            return HostPrefix::Own(rest);
        }
        match Self::host_of(text) {
            Some((host, rest)) => HostPrefix::Other { host, rest },
            None => HostPrefix::None,
        }
    }

    /// Whether `host` (`host:port`) is one of this registry's own names.
    pub fn contains(&self, host: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| p.strip_suffix('/') == Some(host))
    }

    /// How to name the registry in messages: `localhost:PORT` (plain HTTP's port first).
    pub fn example(&self) -> Option<&str> {
        self.prefixes
            .iter()
            .find(|p| p.starts_with("localhost:"))
            .map(|p| p.trim_end_matches('/'))
    }
}

/// Whether `tag` matches `pattern`, whose `*` stand for any run of characters (none too);
/// the whole tag must match.
pub fn wildcard_match(pattern: &str, tag: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == tag;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !tag.starts_with(first) || tag.len() < first.len() + last.len() || !tag.ends_with(last) {
        return false;
    }
    let mut rest = &tag[first.len()..tag.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec() {
        for ok in [
            "a",
            "team/app",
            "a.b/c_d/e__f/g-h/i--j",
            "library/busybox",
            "0/1",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "A",
            "Team/app",
            "a/../b",
            "..",
            "a//b",
            "/a",
            "a/",
            "a___b",
            "a._b",
            "-a",
            "a-",
            "a%2Fb",
            "a b",
            long.as_str(),
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
    }

    #[test]
    fn tags_follow_the_spec() {
        for ok in ["latest", "1.0", "_x", "A-b.C_d"] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_round_trip_and_reject_bad_input() {
        let s = format!("sha256:{}", "ab".repeat(32));
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex(), "ab".repeat(32));
        assert!(matches!(
            format!("sha512:{}", "a".repeat(128)).parse::<Digest>(),
            Err(NameError::Algorithm(_))
        ));
        for bad in [
            "sha256:abc".to_string(),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "g".repeat(64)),
            format!("sha256{}", "a".repeat(64)),
            "sha256:".to_string(),
            format!(":{}", "a".repeat(64)),
            format!("sha256:{}/x", "a".repeat(64)),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn image_refs_parse_like_docker() {
        let r: ImageRef = "team/app:1.0".parse().unwrap();
        assert_eq!(r.repository.as_str(), "team/app");
        assert_eq!(r.reference, Some(Reference::Tag("1.0".parse().unwrap())));
        let d = format!("team/app@sha256:{}", "0".repeat(64));
        let r: ImageRef = d.parse().unwrap();
        assert!(matches!(r.reference, Some(Reference::Digest(_))));
        assert_eq!(r.to_string(), d);
        let r: ImageRef = "app".parse().unwrap();
        assert_eq!(r.reference, None);
        assert!("App:1".parse::<ImageRef>().is_err());
    }

    #[test]
    fn own_hosts_are_stripped_and_other_hosts_named() {
        let plain: std::net::SocketAddr = "127.0.0.1:5611".parse().unwrap();
        let tls: std::net::SocketAddr = "0.0.0.0:5612".parse().unwrap();
        let hosts = OwnHosts::new(Some(plain), Some(tls), &["registry.lan".into()]);
        for own in [
            "localhost:5611/team/app:1",
            "127.0.0.1:5611/team/app:1",
            "[::1]:5611/team/app:1",
            "localhost:5612/team/app:1",
            "0.0.0.0:5612/team/app:1",
            "registry.lan:5612/team/app:1",
        ] {
            assert_eq!(hosts.split(own), HostPrefix::Own("team/app:1"), "{own}");
        }
        assert_eq!(
            hosts.split("otherhost:5000/team/app"),
            HostPrefix::Other {
                host: "otherhost:5000",
                rest: "team/app"
            }
        );
        assert!(matches!(
            hosts.split("localhost:5000/team/app"),
            HostPrefix::Other { .. }
        ));
        assert!(matches!(
            hosts.split("registry.lan:5611/a"),
            HostPrefix::Other { .. }
        ));
        for plain in ["team/app:1", "my.team/app", "app"] {
            assert_eq!(hosts.split(plain), HostPrefix::None, "{plain}");
        }
        assert_eq!(hosts.example(), Some("localhost:5611"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn round_trips<T: FromStr + fmt::Display + PartialEq + fmt::Debug>(
            text: &str,
        ) -> Result<(), TestCaseError> {
            if let Ok(v) = text.parse::<T>() {
                prop_assert_eq!(v.to_string(), text);
                prop_assert_eq!(v.to_string().parse::<T>().ok(), Some(v));
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn whatever_parses_shows_back_as_itself(text in prop_oneof![
                "[a-z0-9._/-]{0,40}",
                "[a-z0-9._/-]{1,20}(:[A-Za-z0-9._-]{1,10}|@sha256:[0-9a-f]{64})?",
                "sha256:[0-9a-fA-F]{62,66}",
                any::<String>(),
            ]) {
                round_trips::<RepoName>(&text)?;
                round_trips::<Tag>(&text)?;
                round_trips::<Digest>(&text)?;
                round_trips::<Reference>(&text)?;
                round_trips::<ImageRef>(&text)?;
            }

            #[test]
            fn every_digest_round_trips(bytes in any::<[u8; 32]>()) {
                let d = Digest::from_bytes(bytes);
                prop_assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
                let r: Reference = d.to_string().parse().unwrap();
                prop_assert_eq!(r, Reference::Digest(d));
            }

            #[test]
            fn valid_repository_names_never_make_paths_that_escape(name in "[a-z0-9._/-]{1,60}") {
                if let Ok(n) = name.parse::<RepoName>() {
                    prop_assert!(!n.as_str().split('/').any(|c| c.is_empty() || c == "." || c == ".."));
                }
            }
        }
    }
}
