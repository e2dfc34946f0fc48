//! What mirroring reads from users and from other registries: replication rules (JSON or
//! YAML from `ecrl mirror replication set`), sync sources and destinations, registry names,
//! and the token answers remote registries send. Nothing panics; rules that are accepted
//! serialize and read back to the same rules, and every destination they give is a valid
//! repository name.
#![no_main]

use ecrl::mirror::{Location, ReplicationConfiguration};
use ecrl::names::{OwnHosts, RepoName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let own = OwnHosts::new(Some("127.0.0.1:5000".parse().unwrap()), None, &[]);
    if let Ok(config) = ReplicationConfiguration::parse(text, &own) {
        let json = serde_json::to_string(&config).expect("rules serialize");
        let back = ReplicationConfiguration::parse(&json, &own).expect("accepted rules read back");
        assert_eq!(back, config);
        for name in ["team/app", "a", "x/y/z"] {
            let repo: RepoName = name.parse().unwrap();
            for (registry, dest) in config.destinations_for(&repo) {
                assert!(!own.contains(&registry));
                assert!(dest.as_str().parse::<RepoName>().is_ok());
            }
        }
    }
    if let Ok(location) = Location::parse(text, &own) {
        assert!(location.repository().as_str().parse::<RepoName>().is_ok());
    }
    if let Ok(host) = ecrl::remote::parse_registry(text) {
        assert_eq!(ecrl::remote::parse_registry(&host).as_deref(), Ok(host.as_str()));
    }
    let _ = ecrl::remote::parse_token_answer(text.as_bytes());
});
