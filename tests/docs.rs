//! The committed completion scripts and man pages match what the code generates.
//! Run with ECRL_REGENERATE_DOCS=1 to rewrite them.

mod common;

use std::path::Path;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn completions_and_man_pages_are_fresh() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = common::Env::new();
    let generated = env.path().join("docs");
    env.ecrl_ok(&["generate-docs", generated.to_str().unwrap()]);
    for sub in ["completions", "man"] {
        let fresh = files(&generated.join(sub));
        assert!(!fresh.is_empty());
        if std::env::var_os("ECRL_REGENERATE_DOCS").is_some() {
            let target = repo.join(sub);
            let _ = std::fs::remove_dir_all(&target);
            std::fs::create_dir_all(&target).unwrap();
            for (name, bytes) in &fresh {
                std::fs::write(target.join(name), bytes).unwrap();
            }
            continue;
        }
        let committed = files(&repo.join(sub));
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&committed),
            names(&fresh),
            "{sub}/ is stale: run ECRL_REGENERATE_DOCS=1 cargo test --test docs"
        );
        for ((name, a), (_, b)) in committed.iter().zip(&fresh) {
            assert!(
                a == b,
                "{sub}/{name} is stale: run ECRL_REGENERATE_DOCS=1 cargo test --test docs"
            );
        }
    }
    let man = std::fs::read_to_string(generated.join("man/ecrl-daemon-start.1")).unwrap();
    assert!(man.contains("registry"));
    assert!(generated.join("man/ecrld.8").exists());
    assert!(generated.join("completions/ecrl.bash").exists());
}

#[test]
fn completions_command_prints_each_shell() {
    let env = common::Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.ecrl_ok(&["completions", shell]);
        assert!(out.contains("daemon"), "{shell}");
    }
    assert_eq!(env.ecrl(&["completions", "tcsh"]).status.code(), Some(2));
}
