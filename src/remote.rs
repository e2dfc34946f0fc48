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
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
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
