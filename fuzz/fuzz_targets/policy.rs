//! Identity, repository and registry policies, JSON or YAML, as `ecrl auth` and the control
//! API take them: parsing and validation agree, never panic, stay fast on hostile text, and
//! an accepted policy can be evaluated for any request.
#![no_main]

use ecrl::names::RepoName;
use ecrl::policy::{
    self, evaluate, DecisionEffect, Policy, PolicyKind, PolicySource, Principal, Request,
};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const ACCOUNT: &str = "123456789012";

fn check_decision(
    request: &Request<'_>,
    identity: &[(&str, &Policy)],
    resource: &[(PolicySource, &Policy)],
) {
    let decision = evaluate(request, identity, resource);
    match decision.effect {
        DecisionEffect::Allow | DecisionEffect::ExplicitDeny => {
            assert!(decision.statement.is_some(), "{decision:?}")
        }
        DecisionEffect::ImplicitDeny => {}
    }
    // With no policy at all, nothing is allowed.
    let none = evaluate(request, &[], &[]);
    assert_eq!(none.effect, DecisionEffect::ImplicitDeny);
    let _ = decision.to_string();
}

fuzz_target!(|text: &str| {
    let repo: RepoName = "team/app".parse().expect("a valid name");
    let resource = policy::repository_arn("us-east-1", ACCOUNT, &repo);
    let mut context = BTreeMap::new();
    context.insert("aws:SourceIp".to_string(), vec!["192.0.2.7".to_string()]);
    context.insert(
        "aws:CurrentTime".to_string(),
        vec!["2025-01-02T03:04:05Z".to_string()],
    );
    context.insert("ecr:ResourceTag/team".to_string(), vec!["web".to_string()]);
    let principals = [
        Principal::user(ACCOUNT, "alice"),
        Principal::user("210987654321", "bob"),
        Principal::Anonymous,
    ];

    for kind in [
        PolicyKind::Identity,
        PolicyKind::Repository,
        PolicyKind::Registry,
    ] {
        let parsed = Policy::parse(text, kind);
        let errors = policy::validate(text, kind);
        assert_eq!(parsed.is_ok(), errors.is_empty(), "{kind}: {errors:?}");
        if let Err(e) = &parsed {
            assert!(!e.0.is_empty());
            let _ = e.to_string();
        }
        let Ok(p) = parsed else { continue };
        assert_eq!(p.text(), text);
        assert_eq!(p.kind(), kind);
        let _ = p.warnings();
        for principal in &principals {
            for action in ["ecr:BatchGetImage", "ecr:PutImage", "ecr:ListImages"] {
                let request = Request {
                    principal,
                    action,
                    resource: &resource,
                    context: &context,
                };
                match kind {
                    PolicyKind::Identity => check_decision(&request, &[("fuzz", &p)], &[]),
                    PolicyKind::Repository => check_decision(
                        &request,
                        &[],
                        &[(PolicySource::Repository(repo.clone()), &p)],
                    ),
                    PolicyKind::Registry => {
                        check_decision(&request, &[], &[(PolicySource::Registry, &p)])
                    }
                }
            }
        }
    }
    let _ = Principal::parse(text, Some(ACCOUNT));
});
