//! Principals, access keys, login tokens and policies over the control socket. The socket
//! is the owner's, so whoever reaches it administers access.

use super::{endpoint, service, Peer, Shared};
use crate::auth::decide::{self, Effect};
use crate::auth::secret;
use crate::metadata::MetaError;
use ecrl::api::auth::*;
use ecrl::api::{ApiError, Empty, ErrorCode};
use ecrl::names::RepoName;
use ecrl::policy::{Policy, PolicyKind};
use ecrl::timestamp;

pub fn routes(router: axum::Router<Shared>) -> axum::Router<Shared> {
    let router = endpoint::<CreateUser, _, _>(router, create_user);
    let router = endpoint::<ListUsers, _, _>(router, list_users);
    let router = endpoint::<DeleteUser, _, _>(router, delete_user);
    let router = endpoint::<RotateKey, _, _>(router, rotate_key);
    let router = endpoint::<CreateOwnerKey, _, _>(router, create_owner_key);
    let router = endpoint::<ListOwnerKeys, _, _>(router, list_owner_keys);
    let router = endpoint::<DeleteOwnerKey, _, _>(router, delete_owner_key);
    let router = endpoint::<GetAuthorizationToken, _, _>(router, get_token);
    let router = endpoint::<AttachUserPolicy, _, _>(router, attach_policy);
    let router = endpoint::<DetachUserPolicy, _, _>(router, detach_policy);
    let router = endpoint::<ListUserPolicies, _, _>(router, list_policies);
    let router = endpoint::<SimulatePolicy, _, _>(router, simulate);
    let router = service::<SetRepositoryPolicy, _, _>(router, set_repo_policy);
    let router = service::<GetRepositoryPolicy, _, _>(router, get_repo_policy);
    let router = service::<DeleteRepositoryPolicy, _, _>(router, delete_repo_policy);
    let router = service::<PutRegistryPolicy, _, _>(router, put_registry_policy);
    let router = service::<GetRegistryPolicy, _, _>(router, get_registry_policy);
    service::<DeleteRegistryPolicy, _, _>(router, delete_registry_policy)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message)
}

fn meta(e: MetaError) -> ApiError {
    e.into()
}

/// IAM's rule for names: 1-`max` of letters, digits and `+=,.@_-`.
fn iam_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// User names: 1-64 such characters.
fn check_user_name(name: &str) -> Result<(), ApiError> {
    if iam_name(name, 64) {
        Ok(())
    } else {
        Err(invalid(format!(
            "user name {name:?}: 1-64 letters, digits and +=,.@_- only"
        )))
    }
}

fn user_arn(state: &Shared, name: &str) -> String {
    format!("arn:aws:iam::{}:user/{name}", state.meta.account_id())
}

fn user_view(state: &Shared, name: &str) -> Result<User, ApiError> {
    let index = state.meta.read();
    let record = index
        .auth
        .users
        .get(name)
        .ok_or_else(|| meta(MetaError::UserNotFound(name.to_string())))?;
    Ok(User {
        user_name: name.to_string(),
        arn: user_arn(state, name),
        create_date: timestamp::from_millis(record.created_at),
        access_key_ids: record.keys.keys().cloned().collect(),
        attached_policies: record.policies.keys().cloned().collect(),
    })
}

async fn create_user(
    state: Shared,
    _peer: Peer,
    r: UserRequest,
) -> Result<CreateUserResponse, ApiError> {
    check_user_name(&r.user_name)?;
    let (key_id, secret) = secret::new_access_key();
    let created = state
        .meta
        .create_user(r.user_name.clone(), key_id.clone(), secret.0.clone())
        .await
        .map_err(meta)?;
    tracing::info!(user = %r.user_name, access_key = %key_id, "user created");
    Ok(CreateUserResponse {
        user: user_view(&state, &r.user_name)?,
        access_key: AccessKey {
            user_name: r.user_name,
            access_key_id: key_id,
            secret_access_key: secret.0,
            create_date: timestamp::from_millis(created),
        },
    })
}

async fn list_users(state: Shared, _peer: Peer, _r: Empty) -> Result<ListUsersResponse, ApiError> {
    let names: Vec<String> = state.meta.read().auth.users.keys().cloned().collect();
    let users = names
        .iter()
        .map(|n| user_view(&state, n))
        .collect::<Result<_, _>>()?;
    Ok(ListUsersResponse { users })
}

async fn delete_user(state: Shared, _peer: Peer, r: UserRequest) -> Result<Empty, ApiError> {
    state
        .meta
        .delete_user(r.user_name.clone())
        .await
        .map_err(meta)?;
    tracing::info!(user = %r.user_name, "user deleted");
    Ok(Empty {})
}

async fn rotate_key(
    state: Shared,
    _peer: Peer,
    r: UserRequest,
) -> Result<RotateKeyResponse, ApiError> {
    let (key_id, secret) = secret::new_access_key();
    let created = state
        .meta
        .rotate_key(r.user_name.clone(), key_id.clone(), secret.0.clone())
        .await
        .map_err(meta)?;
    tracing::info!(user = %r.user_name, access_key = %key_id, "access key rotated");
    Ok(RotateKeyResponse {
        access_key: AccessKey {
            user_name: r.user_name,
            access_key_id: key_id,
            secret_access_key: secret.0,
            create_date: timestamp::from_millis(created),
        },
    })
}

async fn create_owner_key(
    state: Shared,
    _peer: Peer,
    _: Empty,
) -> Result<RotateKeyResponse, ApiError> {
    let (key_id, secret) = secret::new_access_key();
    let created = state
        .meta
        .create_owner_key(key_id.clone(), secret.0.clone())
        .await
        .map_err(meta)?;
    tracing::info!(access_key = %key_id, "owner access key created");
    Ok(RotateKeyResponse {
        access_key: AccessKey {
            user_name: String::new(),
            access_key_id: key_id,
            secret_access_key: secret.0,
            create_date: timestamp::from_millis(created),
        },
    })
}

async fn list_owner_keys(
    state: Shared,
    _peer: Peer,
    _: Empty,
) -> Result<ListOwnerKeysResponse, ApiError> {
    let index = state.meta.read();
    Ok(ListOwnerKeysResponse {
        access_key_metadata: index
            .auth
            .owner_keys
            .iter()
            .map(|(id, (_, created))| OwnerKey {
                access_key_id: id.clone(),
                create_date: timestamp::from_millis(*created),
            })
            .collect(),
    })
}

async fn delete_owner_key(
    state: Shared,
    _peer: Peer,
    r: OwnerKeyRequest,
) -> Result<Empty, ApiError> {
    state
        .meta
        .delete_owner_key(r.access_key_id.clone())
        .await
        .map_err(meta)?;
    tracing::info!(access_key = %r.access_key_id, "owner access key deleted");
    Ok(Empty {})
}

async fn get_token(state: Shared, _peer: Peer, r: TokenRequest) -> Result<TokenResponse, ApiError> {
    token_for(&state, r.user_name.as_deref())
}

/// ECR's GetAuthorizationToken for a user (`None`: the owner), for both doors.
pub(crate) fn token_for(state: &Shared, user: Option<&str>) -> Result<TokenResponse, ApiError> {
    let lifetime = secret::TOKEN_LIFETIME;
    let (token, expires) = match user {
        None => secret::issue(state.meta.token_secret(), "", "", lifetime),
        Some(user) => {
            let key_id = {
                let index = state.meta.read();
                let record = index
                    .auth
                    .users
                    .get(user)
                    .ok_or_else(|| meta(MetaError::UserNotFound(user.to_string())))?;
                record.keys.keys().next().cloned().ok_or_else(|| {
                    invalid(format!("user {user} has no access key; rotate one first"))
                })?
            };
            secret::issue(state.meta.token_secret(), user, &key_id, lifetime)
        }
    };
    let expires_at = timestamp::from_millis(expires as i64 * 1000);
    Ok(TokenResponse {
        authorization_data: vec![AuthorizationData {
            authorization_token: secret::docker_auth(&token.0),
            expires_at,
            proxy_endpoint: format!("http://{}", state.registry_host()),
        }],
    })
}

/// Checks a policy document of a kind; answers its warnings: what is valid but probably not
/// meant, above all resources that can never match this registry's ARNs (a policy copied
/// from AWS names its own account and region, and would silently grant nothing here).
fn check_policy(state: &Shared, text: &str, kind: PolicyKind) -> Result<Vec<String>, ApiError> {
    decide::validate(text, kind).map_err(|errors| {
        invalid(format!(
            "the policy is invalid ({} error{}):\n{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n")
        ))
    })?;
    let policy = Policy::parse(text, kind).map_err(|e| invalid(e.to_string()))?;
    Ok(policy
        .foreign_resources(&state.config.region, state.meta.account_id())
        .into_iter()
        .chain(policy.warnings())
        .map(|w| w.to_string())
        .collect())
}

async fn attach_policy(
    state: Shared,
    _peer: Peer,
    r: AttachUserPolicyRequest,
) -> Result<UserPolicy, ApiError> {
    check_user_name(&r.user_name)?;
    if !iam_name(&r.policy_name, 128) {
        return Err(invalid(format!(
            "policy name {:?}: 1-128 letters, digits and +=,.@_- only",
            r.policy_name
        )));
    }
    let warnings = check_policy(&state, &r.policy_document, PolicyKind::Identity)?;
    state
        .meta
        .put_user_policy(
            r.user_name.clone(),
            r.policy_name.clone(),
            r.policy_document.clone(),
        )
        .await
        .map_err(meta)?;
    Ok(UserPolicy {
        user_name: r.user_name,
        policy_name: r.policy_name,
        policy_document: r.policy_document,
        warnings,
    })
}

async fn detach_policy(state: Shared, _peer: Peer, r: UserPolicyRef) -> Result<Empty, ApiError> {
    state
        .meta
        .delete_user_policy(r.user_name, r.policy_name)
        .await
        .map_err(meta)?;
    Ok(Empty {})
}

async fn list_policies(
    state: Shared,
    _peer: Peer,
    r: UserRequest,
) -> Result<ListUserPoliciesResponse, ApiError> {
    let index = state.meta.read();
    let record = index
        .auth
        .users
        .get(&r.user_name)
        .ok_or_else(|| meta(MetaError::UserNotFound(r.user_name.clone())))?;
    Ok(ListUserPoliciesResponse {
        policies: record
            .policies
            .iter()
            .map(|(name, doc)| UserPolicy {
                user_name: r.user_name.clone(),
                policy_name: name.clone(),
                policy_document: doc.clone(),
                warnings: Vec::new(),
            })
            .collect(),
    })
}

async fn simulate(
    state: Shared,
    _peer: Peer,
    r: SimulateRequest,
) -> Result<SimulateResponse, ApiError> {
    if !state.meta.read().auth.users.contains_key(&r.user_name) {
        return Err(meta(MetaError::UserNotFound(r.user_name)));
    }
    // A decision about an action that does not exist would be a confident "deny" about
    // nothing: policy validation refuses such names, and so does this.
    ecrl::policy::known_action(&r.action).map_err(invalid)?;
    let (resource, repo) = if r.resource.starts_with("arn:") {
        let repo = r
            .resource
            .rsplit_once(":repository/")
            .and_then(|(_, name)| name.parse::<RepoName>().ok());
        (r.resource.clone(), repo)
    } else {
        let repo: RepoName = r
            .resource
            .parse()
            .map_err(|e| invalid(format!("resource {:?}: {e}", r.resource)))?;
        (state.repository_arn(&repo), Some(repo))
    };
    let decision = decide::decide(&state, &r.user_name, &r.action, &resource, repo.as_ref());
    Ok(SimulateResponse {
        eval_action_name: r.action,
        eval_resource_name: resource,
        eval_decision: match decision.effect {
            Effect::Allow => "allowed",
            Effect::ExplicitDeny => "explicitDeny",
            Effect::ImplicitDeny => "implicitDeny",
        }
        .into(),
        matched_statement: decision.statement.clone().map(
            |(source_policy, statement_index, sid)| MatchedStatement {
                source_policy,
                statement_index,
                sid,
            },
        ),
        explanation: decision.explanation,
    })
}

fn repo_name(text: &str) -> Result<RepoName, ApiError> {
    text.parse()
        .map_err(|e| invalid(format!("repository name {text:?}: {e}")))
}

pub(crate) async fn set_repo_policy(
    state: Shared,
    r: SetRepositoryPolicyRequest,
) -> Result<RepositoryPolicy, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    let warnings = check_policy(&state, &r.policy_text, PolicyKind::Repository)?;
    state
        .meta
        .set_repository_policy(repo.clone(), Some(r.policy_text.clone()))
        .await
        .map_err(meta)?;
    Ok(RepositoryPolicy {
        registry_id: state.meta.account_id().to_string(),
        repository_name: repo.to_string(),
        policy_text: r.policy_text,
        warnings,
    })
}

fn no_repo_policy(repo: &RepoName) -> ApiError {
    ApiError::new(
        ErrorCode::PolicyNotFound,
        format!("repository {repo} has no repository policy"),
    )
}

pub(crate) async fn get_repo_policy(
    state: Shared,
    r: RepositoryPolicyRef,
) -> Result<RepositoryPolicy, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    let index = state.meta.read();
    let record = index
        .repos
        .get(&repo)
        .ok_or_else(|| meta(MetaError::RepoNotFound(repo.clone())))?;
    let text = record.policy.clone().ok_or_else(|| no_repo_policy(&repo))?;
    Ok(RepositoryPolicy {
        registry_id: state.meta.account_id().to_string(),
        repository_name: repo.to_string(),
        policy_text: text,
        warnings: Vec::new(),
    })
}

pub(crate) async fn delete_repo_policy(
    state: Shared,
    r: RepositoryPolicyRef,
) -> Result<RepositoryPolicy, ApiError> {
    let repo = repo_name(&r.repository_name)?;
    if state
        .meta
        .read()
        .repos
        .get(&repo)
        .is_some_and(|r| r.policy.is_none())
    {
        return Err(no_repo_policy(&repo));
    }
    let old = state
        .meta
        .set_repository_policy(repo.clone(), None)
        .await
        .map_err(meta)?
        .ok_or_else(|| no_repo_policy(&repo))?;
    Ok(RepositoryPolicy {
        registry_id: state.meta.account_id().to_string(),
        repository_name: repo.to_string(),
        policy_text: old,
        warnings: Vec::new(),
    })
}

fn no_registry_policy() -> ApiError {
    ApiError::new(
        ErrorCode::PolicyNotFound,
        "the registry has no registry policy",
    )
}

pub(crate) async fn put_registry_policy(
    state: Shared,
    r: RegistryPolicyText,
) -> Result<RegistryPolicy, ApiError> {
    let warnings = check_policy(&state, &r.policy_text, PolicyKind::Registry)?;
    state
        .meta
        .set_registry_policy(Some(r.policy_text.clone()))
        .await
        .map_err(meta)?;
    Ok(RegistryPolicy {
        registry_id: state.meta.account_id().to_string(),
        policy_text: r.policy_text,
        warnings,
    })
}

pub(crate) async fn get_registry_policy(
    state: Shared,
    _r: Empty,
) -> Result<RegistryPolicy, ApiError> {
    let text = state
        .meta
        .read()
        .auth
        .registry_policy
        .clone()
        .ok_or_else(no_registry_policy)?;
    Ok(RegistryPolicy {
        registry_id: state.meta.account_id().to_string(),
        policy_text: text,
        warnings: Vec::new(),
    })
}

pub(crate) async fn delete_registry_policy(
    state: Shared,
    _r: Empty,
) -> Result<RegistryPolicy, ApiError> {
    let old = state
        .meta
        .set_registry_policy(None)
        .await
        .map_err(meta)?
        .ok_or_else(no_registry_policy)?;
    Ok(RegistryPolicy {
        registry_id: state.meta.account_id().to_string(),
        policy_text: old,
        warnings: Vec::new(),
    })
}
