//! Manifest and index bodies as a registry PUT (or an imported archive) brings them, with
//! each `Content-Type` the registry meets: parsing never panics or overflows the stack, and
//! what it accepts has a media type ecrl stores, consistent with the header.
#![no_main]

use ecrl::manifest::{self, kind_of, Kind};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(manifest::OCI_MANIFEST),
    Some(manifest::OCI_INDEX),
    Some(manifest::DOCKER_MANIFEST),
    Some(manifest::DOCKER_LIST),
    Some("application/json"),
];

fuzz_target!(|input: (u8, &[u8])| {
    let (pick, body) = input;
    if body.len() > manifest::MAX_MANIFEST {
        return;
    }
    let content_type = CONTENT_TYPES[pick as usize % CONTENT_TYPES.len()];
    let Ok((doc, media_type, kind)) = manifest::parse(content_type, body) else {
        return;
    };
    assert_eq!(doc.schema_version, Some(2));
    assert_eq!(kind_of(&media_type), Some(kind));
    if let Some(header) = content_type {
        assert_eq!(media_type, header);
    } else if let Some(declared) = &doc.media_type {
        assert_eq!(&media_type, declared);
    } else {
        assert_eq!(kind == Kind::Index, doc.manifests.is_some());
    }
    // Every descriptor's digest either parses to one that shows as the same text or is
    // refused with a message naming the descriptor.
    let descriptors = doc
        .config
        .iter()
        .chain(doc.layers.iter().flatten())
        .chain(doc.manifests.iter().flatten())
        .chain(doc.subject.iter());
    for d in descriptors {
        match d.parsed_digest("descriptor") {
            Ok(digest) => assert_eq!(digest.to_string(), d.digest),
            Err(e) => assert!(e.0.starts_with("descriptor: ")),
        }
    }
});
