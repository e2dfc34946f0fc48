//! The policy decision for a user: identity policies, the repository's policy and the
//! registry policy, evaluated as IAM does (an explicit Deny wins; otherwise an Allow is
//! needed). Parsed policies are cached by their text, so a request pays for a lookup, not a
//! parse.

use crate::app::AppState;
use ecrl::names::RepoName;
use ecrl::policy::{self, DecisionEffect, Policy, PolicyKind, PolicySource};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What the policies decided, and which statement decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// `(policy, statement index, sid)` of the deciding statement.
    pub statement: Option<(String, usize, Option<String>)>,
    pub explanation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// For a 403 message: the Deny statement, when one decided.
    pub fn denial_reason(&self) -> String {
        match (&self.effect, &self.statement) {
            (Effect::ExplicitDeny, Some(_)) => format!(" ({})", self.explanation),
            _ => String::new(),
        }
    }
}

/// Parsed policies by (kind, text).
#[derive(Default)]
pub struct PolicyCache {
    parsed: Mutex<HashMap<(u8, String), Arc<Policy>>>,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyCache")
    }
}

/// Policies the cache holds at most; past that it starts over.
const CACHE_LIMIT: usize = 4_096;

fn kind_key(kind: PolicyKind) -> u8 {
    match kind {
        PolicyKind::Identity => 0,
        PolicyKind::Repository => 1,
        PolicyKind::Registry => 2,
    }
}

impl PolicyCache {
    /// The parsed policy; `None` for a document that no longer parses (stored ones were
    /// validated, so only a newer, stricter parser could refuse one: it then allows nothing).
    fn get(&self, text: &str, kind: PolicyKind) -> Option<Arc<Policy>> {
        let key = (kind_key(kind), text.to_string());
        if let Some(p) = self.parsed.lock().ok()?.get(&key) {
            return Some(p.clone());
        }
        let policy = match Policy::parse(text, kind) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!("a stored policy does not parse and is ignored: {e}");
                return None;
            }
        };
        let mut parsed = self.parsed.lock().ok()?;
        if parsed.len() >= CACHE_LIMIT {
            parsed.clear();
        }
        parsed.insert(key, policy.clone());
        Some(policy)
    }
}

/// Decides whether `user` may perform `action` on `resource` (an ARN; `repo` when it is a
/// repository).
pub fn decide(
    state: &AppState,
    user: &str,
    action: &str,
    resource: &str,
    repo: Option<&RepoName>,
) -> Decision {
    let cache = &state.auth.policies;
    let (identity, repository, registry) = {
        let index = state.meta.read();
        let identity: Vec<(String, Arc<Policy>)> = index
            .auth
            .users
            .get(user)
            .map(|u| {
                u.policies
                    .iter()
                    .filter_map(|(name, text)| {
                        Some((name.clone(), cache.get(text, PolicyKind::Identity)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let repository = repo.and_then(|r| {
            let text = index.repos.get(r)?.policy.as_deref()?;
            Some((r.clone(), cache.get(text, PolicyKind::Repository)?))
        });
        let registry = index
            .auth
            .registry_policy
            .as_deref()
            .and_then(|text| cache.get(text, PolicyKind::Registry));
        (identity, repository, registry)
    };
    let identity_refs: Vec<(&str, &Policy)> = identity
        .iter()
        .map(|(name, p)| (name.as_str(), p.as_ref()))
        .collect();
    let mut resource_refs: Vec<(PolicySource, &Policy)> = Vec::new();
    if let Some((r, p)) = &repository {
        resource_refs.push((PolicySource::Repository(r.clone()), p.as_ref()));
    }
    if let Some(p) = &registry {
        resource_refs.push((PolicySource::Registry, p.as_ref()));
    }
    let principal = policy::Principal::user(state.meta.account_id(), user);
    let context = BTreeMap::new();
    let decision = policy::evaluate(
        &policy::Request {
            principal: &principal,
            action,
            resource,
            context: &context,
        },
        &identity_refs,
        &resource_refs,
    );
    Decision {
        effect: match decision.effect {
            DecisionEffect::Allow => Effect::Allow,
            DecisionEffect::ExplicitDeny => Effect::ExplicitDeny,
            DecisionEffect::ImplicitDeny => Effect::ImplicitDeny,
        },
        statement: decision
            .statement
            .as_ref()
            .map(|s| (s.source.to_string(), s.index, s.sid.clone())),
        explanation: decision.to_string(),
    }
}

/// Checks a policy document: every problem, each with where it is.
pub fn validate(text: &str, kind: PolicyKind) -> Result<(), Vec<String>> {
    let errors = policy::validate(text, kind);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.iter().map(|e| e.to_string()).collect())
    }
}
