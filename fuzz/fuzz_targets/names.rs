//! Repository names, tags, digests, references and image references, as the registry's URLs
//! and the CLI's arguments carry them: whatever parses displays back to the very same text
//! and parses again to an equal value. Also other registries' image references and
//! authentication challenges, as mirroring reads them.
#![no_main]

use ecrl::names::{Digest, HostPrefix, ImageRef, OwnHosts, Reference, RepoName, Tag};
use ecrl::remote::{parse_challenges, RemoteRef};
use ecrl::taskdef::TaskDefRef;
use libfuzzer_sys::fuzz_target;
use std::fmt::Display;
use std::str::FromStr;

/// A parsed value shows exactly the text it came from and parses back to itself, also
/// through its JSON form when it has one.
fn round_trip<T>(text: &str) -> Option<T>
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
{
    let value = text.parse::<T>().ok()?;
    assert_eq!(value.to_string(), text);
    assert!(value.to_string().parse::<T>().ok().as_ref() == Some(&value));
    Some(value)
}

fn json_round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).expect("a name serializes");
    let back: T = serde_json::from_str(&json).expect("a serialized name deserializes");
    assert_eq!(&back, value);
}

fuzz_target!(|text: &str| {
    if let Some(repo) = round_trip::<RepoName>(text) {
        assert!(repo.as_str().len() <= ecrl::names::MAX_REPO_NAME);
        // Never a path that leaves its directory.
        assert!(!repo
            .as_str()
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".."));
        json_round_trip(&repo);
    }
    if let Some(tag) = round_trip::<Tag>(text) {
        json_round_trip(&tag);
    }
    if let Some(digest) = round_trip::<Digest>(text) {
        let hex = digest.hex();
        assert!(
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        json_round_trip(&digest);
    }
    if let Some(reference) = round_trip::<Reference>(text) {
        match &reference {
            Reference::Tag(t) => assert_eq!(t.as_str(), text),
            Reference::Digest(d) => assert_eq!(d.to_string(), text),
        }
    }
    if let Some(image) = round_trip::<ImageRef>(text) {
        assert!(text.starts_with(image.repository.as_str()));
    }

    // The CLI strips this registry's own host first.
    let hosts = OwnHosts::new(
        Some("127.0.0.1:5000".parse().expect("an address")),
        Some("0.0.0.0:5443".parse().expect("an address")),
        &["registry.lan".into(), "::1".into()],
    );
    match hosts.split(text) {
        HostPrefix::Own(rest) => {
            assert!(text.ends_with(rest));
            let _ = rest.parse::<ImageRef>();
        }
        HostPrefix::Other { host, rest } => {
            assert_eq!(format!("{host}/{rest}"), text);
        }
        HostPrefix::None => {}
    }

    // Other registries' references normalize once: the normal form reads back the same.
    if let Ok(remote) = text.parse::<RemoteRef>() {
        let shown = remote.to_string();
        assert_eq!(shown.parse::<RemoteRef>().as_ref(), Ok(&remote), "{shown}");
        assert!(!remote.api_host().is_empty());
    }
    // A remote's WWW-Authenticate header: anything at all, never a panic.
    for challenge in parse_challenges(text) {
        assert!(!challenge.scheme.is_empty());
        assert!(challenge.params.keys().all(|k| !k.is_empty()));
    }

    if let Ok(r) = TaskDefRef::parse(text) {
        // `fam:01` shows as `fam:1`, an ARN as given: either way it reads back the same.
        assert_eq!(TaskDefRef::parse(&r.to_string()), Ok(r.clone()));
        if let Some((family, revision)) = r.revision() {
            assert!(revision >= 1);
            assert_eq!(family, r.family());
        }
    }
});
