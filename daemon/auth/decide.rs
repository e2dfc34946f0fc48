//! The policy decision for a user: identity policies, the repository's policy and the
//! registry policy, evaluated as IAM does (an explicit Deny wins; otherwise an Allow is
//! needed).

use crate::app::AppState;
use ecrl::names::RepoName;

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
    #[allow(dead_code)] // made once policies are evaluated
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

/// Decides whether `user` may perform `action` on `resource` (an ARN; `repo` when it is a
/// repository).
pub fn decide(
    state: &AppState,
    user: &str,
    action: &str,
    resource: &str,
    repo: Option<&RepoName>,
) -> Decision {
    let _ = (state, user, repo);
    Decision {
        effect: Effect::ImplicitDeny,
        statement: None,
        explanation: format!("implicit DENY: no statement allows {action} on {resource}"),
    }
}

/// Checks a policy document: every problem, each with where it is.
pub fn validate(text: &str, resource_policy: bool) -> Result<(), Vec<String>> {
    let _ = resource_policy;
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| vec![format!("not JSON: {e}")])
}
