//! Task definitions, JSON or YAML, as `ecrl task register` reads them and the daemon
//! receives them: parsing and validation never panic, and an accepted definition written
//! out as JSON or YAML reads back equal.
#![no_main]

use ecrl::taskdef::{self, TaskDefinitionInput};
use libfuzzer_sys::fuzz_target;

fn reads_back(def: &TaskDefinitionInput, text: &str, format: &str) {
    match taskdef::parse(text) {
        Ok(back) => assert_eq!(&back, def, "{format} round trip of {text}"),
        Err(e) => panic!("{format} written from a parsed definition does not parse: {e}\n{text}"),
    }
}

fuzz_target!(|text: &str| {
    let Ok(def) = taskdef::parse(text) else {
        return;
    };
    let valid = taskdef::validate(&def);
    let _ = def.ignored_fields();
    let _ = def.memory_mib();
    let _ = def.cpu_units();
    let _ = def.network_mode();
    for c in &def.container_definitions {
        let _ = c.start_dependencies();
        let _ = c.is_essential();
        let _ = c.stop_timeout_or_default();
    }
    if valid.is_ok() {
        // A valid definition can be started: its dependencies have an order that starts
        // every container once.
        let order = def
            .start_order()
            .expect("validation refuses dependency cycles");
        let started: usize = order.iter().map(Vec::len).sum();
        assert_eq!(started, def.container_definitions.len());
    }

    let json = serde_json::to_string(&def).expect("a definition serializes as JSON");
    reads_back(&def, &json, "JSON");
    let yaml = serde_yaml::to_string(&def).expect("a definition serializes as YAML");
    reads_back(&def, &yaml, "YAML");
});
