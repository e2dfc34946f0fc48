//! Who may do what. Every registry request passes through [`Guard::authorize`] with the ECR
//! action it amounts to, so access control has exactly one place to decide.
//!
//! Credentials: Basic with `AWS` and a login token (`ecrl get-login-password | docker login
//! -u AWS --password-stdin`), Basic with an access key id and its secret, or a Bearer token
//! from the registry's token endpoint. The daemon's owner (a token issued over the control
//! socket without a user) may do everything; users may do what the policies allow.
//! Repeated failures for one user name from one address are answered 429 for a while; a
//! token that verifies is never refused for them (it cannot be guessed, and every client
//! of a loopback registry shares one address).

pub mod decide;
pub mod secret;

use crate::app::AppState;
use axum::http::{header, HeaderMap};
use ecrl::config::Anonymous;
use ecrl::names::RepoName;
use secret::{constant_time_eq, hash_secret, parse_basic, verify};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The ECR actions registry requests map to (IAM action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    BatchGetImage,
    GetDownloadUrlForLayer,
    BatchCheckLayerAvailability,
    InitiateLayerUpload,
    UploadLayerPart,
    CompleteLayerUpload,
    PutImage,
    BatchDeleteImage,
    ListImages,
    DescribeRepositories,
    /// A pull under a pull-through cache rule that fetches from the upstream.
    BatchImportUpstreamImage,
    /// A pull-through cache's first pull of a repository creates it.
    CreateRepository,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::BatchGetImage => "ecr:BatchGetImage",
            Action::GetDownloadUrlForLayer => "ecr:GetDownloadUrlForLayer",
            Action::BatchCheckLayerAvailability => "ecr:BatchCheckLayerAvailability",
            Action::InitiateLayerUpload => "ecr:InitiateLayerUpload",
            Action::UploadLayerPart => "ecr:UploadLayerPart",
            Action::CompleteLayerUpload => "ecr:CompleteLayerUpload",
            Action::PutImage => "ecr:PutImage",
            Action::BatchDeleteImage => "ecr:BatchDeleteImage",
            Action::ListImages => "ecr:ListImages",
            Action::DescribeRepositories => "ecr:DescribeRepositories",
            Action::BatchImportUpstreamImage => "ecr:BatchImportUpstreamImage",
            Action::CreateRepository => "ecr:CreateRepository",
        }
    }

    /// Reading: what `--anonymous pull` lets anyone do.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Action::BatchGetImage
                | Action::GetDownloadUrlForLayer
                | Action::BatchCheckLayerAvailability
                | Action::ListImages
                | Action::DescribeRepositories
                // What a pull through a cache does: `--anonymous pull` allows it.
                | Action::BatchImportUpstreamImage
        )
    }

    /// The scope word a Bearer challenge names (`pull` or `push`).
    pub fn scope(self) -> &'static str {
        if self.is_read() {
            "pull"
        } else if self == Action::BatchDeleteImage {
            "delete"
        } else {
            "pull,push"
        }
    }
}

/// The caller a request was made by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials were presented.
    Anonymous,
    /// The daemon's owner (a token issued over the control socket without a user).
    Owner,
    User(Arc<str>),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Owner => f.write_str("the registry owner"),
            Principal::User(name) => write!(f, "user {name}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No or bad credentials (401); the message says which, never the secret.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but no policy allows the action (403).
    #[error("{principal} is not allowed to perform {action} on {resource}{why}")]
    Denied {
        principal: String,
        action: &'static str,
        resource: String,
        /// `: denied by statement ...` when a Deny statement decided.
        why: String,
    },
    /// Too many failed attempts for this user name from this address (429).
    #[error(
        "too many failed authentication attempts for {user} from {client}; retry in \
         {retry_after}s (other users, and valid tokens, are not held back)"
    )]
    TooManyFailures {
        client: IpAddr,
        user: String,
        retry_after: u64,
    },
}

/// The subject of tokens the token endpoint gives anonymous clients.
const ANONYMOUS_SUBJECT: &str = "*anonymous*";

/// Failed attempts within this window count towards a block.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// This many failures in the window block the user name at the address.
const MAX_FAILURES: u32 = 10;
/// For this long.
const BLOCK: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
    blocked_until: Option<Instant>,
}

/// What failures are counted by: the client's address and the user name it gave (an access
/// key id, `AWS` for a login token, empty for a bearer token), so one client with a stale
/// key does not lock out the others behind the same address.
type FailureKey = (IpAddr, String);

/// The longest user name a failure is counted under (longer ones are cut: they are not
/// anyone's, and the count must not hold unbounded memory).
const MAX_COUNTED_NAME: usize = 128;

/// Authentication state shared by every registry request: the failure counts.
#[derive(Debug, Default)]
pub struct Guard {
    failures: Mutex<HashMap<FailureKey, Failures>>,
    /// Parsed policies, by their text.
    pub policies: decide::PolicyCache,
    /// Credentials already checked, by the `Authorization` value: who they are, until the
    /// access epoch changes (a key rotated, a user deleted) or the token expires.
    sessions: RwLock<HashMap<String, Session>>,
    /// Policy decisions already made (by the hash of user, action and repository), until
    /// the access epoch changes.
    decisions: RwLock<HashMap<u64, Remembered>>,
}

/// A decision, what it was about, and the access epoch it was made in.
#[derive(Debug, Clone)]
struct Remembered {
    user: Arc<str>,
    action: &'static str,
    repo: Option<RepoName>,
    epoch: u64,
    /// `Err`: the reason to add to a denial.
    outcome: Result<(), Arc<str>>,
}

#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    epoch: u64,
    /// Seconds since the epoch; `u64::MAX` for access keys.
    expires: u64,
}

/// Entries a cache holds at most; past that it starts over.
const CACHE_LIMIT: usize = 10_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a request proved who it is.
enum Presented {
    None,
    Basic(String, secret::Secret),
    Bearer(String),
}

fn presented(headers: &HeaderMap) -> Presented {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Presented::None;
    };
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return Presented::Bearer(token.trim().to_string());
    }
    match parse_basic(value) {
        Some((user, password)) => Presented::Basic(user, password),
        // Something, but nothing we read: as bad as a wrong password.
        None => Presented::Bearer(String::new()),
    }
}

impl Guard {
    /// Who the request is from: `Anonymous` without credentials, an error for bad ones.
    /// Credentials checked once are remembered (by their header value) until the access
    /// epoch changes or the token expires.
    pub fn authenticate(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(value) = value else {
            return Ok(Principal::Anonymous);
        };
        let epoch = state.meta.read().auth.epoch;
        let remembered = self
            .sessions
            .read()
            .ok()
            .and_then(|s| s.get(value).cloned());
        if let Some(session) = remembered {
            if session.epoch == epoch && session.expires > unix_now() {
                // Credentials that were valid are not a guess: no throttle holds them back.
                return Ok(session.principal);
            }
        }
        // Parsed only past the cache: most requests present credentials already checked.
        let presented = presented(headers);
        let key = client.map(|ip| (ip, counted_name(&presented)));
        let result = self.check_credentials(state, &presented);
        // A signed token that verifies cannot have been guessed, so it passes even where
        // guesses are being held back; everything else waits out a block, right or wrong.
        let is_token = matches!(&presented, Presented::Bearer(_))
            || matches!(&presented, Presented::Basic(user, _) if user == "AWS");
        if let Some(key) = &key {
            if !(is_token && result.is_ok()) {
                self.check_blocked(key)?;
            }
            match &result {
                Err(AuthError::Unauthenticated(_)) => self.record_failure(key),
                Ok(_) => self.clear(key),
                Err(_) => {}
            }
        }
        let (principal, expires) = result?;
        if let Ok(mut sessions) = self.sessions.write() {
            if sessions.len() >= CACHE_LIMIT {
                sessions.clear();
            }
            sessions.insert(
                value.to_string(),
                Session {
                    principal: principal.clone(),
                    epoch,
                    expires,
                },
            );
        }
        Ok(principal)
    }

    /// Checks the presented credentials: the principal, and until when they hold.
    fn check_credentials(
        &self,
        state: &AppState,
        presented: &Presented,
    ) -> Result<(Principal, u64), AuthError> {
        match presented {
            Presented::None => Ok((Principal::Anonymous, u64::MAX)),
            Presented::Bearer(token) => self.token_principal(state, token),
            Presented::Basic(user, password) if user == "AWS" => {
                self.token_principal(state, &password.0)
            }
            Presented::Basic(key_id, secret) => {
                let index = state.meta.read();
                if let Some((hash, _)) = index.auth.owner_keys.get(key_id) {
                    return if constant_time_eq(hash, &hash_secret(&secret.0)) {
                        Ok((Principal::Owner, u64::MAX))
                    } else {
                        Err(AuthError::Unauthenticated(
                            "invalid access key id or secret".into(),
                        ))
                    };
                }
                match index.auth.key(key_id) {
                    Some((user, hash)) if constant_time_eq(hash, &hash_secret(&secret.0)) => {
                        Ok((Principal::User(user.into()), u64::MAX))
                    }
                    _ => Err(AuthError::Unauthenticated(
                        "invalid access key id or secret".into(),
                    )),
                }
            }
        }
    }

    fn token_principal(
        &self,
        state: &AppState,
        token: &str,
    ) -> Result<(Principal, u64), AuthError> {
        let claims = verify(state.meta.token_secret(), token)
            .map_err(|e| AuthError::Unauthenticated(format!("invalid token: {e}")))?;
        if claims.user.is_empty() {
            return Ok((Principal::Owner, claims.expires));
        }
        if claims.user == ANONYMOUS_SUBJECT {
            return Ok((Principal::Anonymous, claims.expires));
        }
        // A user's token lives only as long as the access key it was issued for.
        let index = state.meta.read();
        match index.auth.key(&claims.key_id) {
            Some((user, _)) if user == claims.user => {
                Ok((Principal::User(claims.user.into()), claims.expires))
            }
            _ => Err(AuthError::Unauthenticated(
                "invalid token: its access key was rotated or its user deleted".into(),
            )),
        }
    }

    /// A bearer token for the token endpoint's answer: for a user, bound to the access key
    /// the request proved (directly or through its token); answers it with its expiry.
    pub fn bearer_for(
        &self,
        state: &AppState,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> (secret::Secret, u64) {
        let key = state.meta.token_secret();
        match principal {
            Principal::Owner => secret::issue(key, "", "", secret::TOKEN_LIFETIME),
            Principal::Anonymous => {
                secret::issue(key, ANONYMOUS_SUBJECT, "", secret::TOKEN_LIFETIME)
            }
            Principal::User(user) => {
                let key_id = match presented(headers) {
                    Presented::Basic(id, _) if id != "AWS" => id,
                    Presented::Basic(_, token) => {
                        verify(key, &token.0).map(|c| c.key_id).unwrap_or_default()
                    }
                    Presented::Bearer(token) => {
                        verify(key, &token).map(|c| c.key_id).unwrap_or_default()
                    }
                    Presented::None => String::new(),
                };
                secret::issue(key, user, &key_id, secret::TOKEN_LIFETIME)
            }
        }
    }

    /// Decides whether the request may perform `action` on `repo` (`None`: the registry).
    pub fn authorize(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        action: Action,
        repo: Option<&RepoName>,
    ) -> Result<Principal, AuthError> {
        if state.config.anonymous == Anonymous::All {
            return Ok(Principal::Anonymous);
        }
        let principal = self.authenticate(state, headers, client)?;
        if anyone_may(state, action) {
            // Credentials never lower what a caller may do: a signed-in user gets at least
            // what an anonymous one gets.
            return Ok(principal);
        }
        let user = match &principal {
            Principal::Owner => return Ok(principal),
            Principal::Anonymous => {
                return Err(AuthError::Unauthenticated("authentication required".into()))
            }
            Principal::User(user) => user,
        };
        match self.user_may(state, user, action.name(), repo) {
            Ok(()) => Ok(principal),
            Err(why) => Err(AuthError::Denied {
                principal: principal.to_string(),
                action: action.name(),
                resource: match repo {
                    Some(r) => format!("repository {r}"),
                    None => "the registry".into(),
                },
                why,
            }),
        }
    }

    /// Whether a principal already authenticated (by [`Self::authorize`] for another action)
    /// may also perform `action` on `repo`: for the checks a request makes beyond its own
    /// route, such as the repositories a blob mount may take a blob from.
    pub fn permits(
        &self,
        state: &AppState,
        principal: &Principal,
        action: Action,
        repo: Option<&RepoName>,
    ) -> bool {
        match principal {
            _ if anyone_may(state, action) => true,
            Principal::Owner => true,
            Principal::Anonymous => false,
            Principal::User(user) => self.user_may(state, user, action.name(), repo).is_ok(),
        }
    }

    /// For the AWS API's signatures: refuses (the outer `Err`) an access key id that failed
    /// too often from `client` lately, as the registry refuses a user name; else runs `check`
    /// and counts its failure, or clears the count on success.
    pub fn attempt<T, E>(
        &self,
        client: Option<IpAddr>,
        key_id: &str,
        check: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, AuthError> {
        let key = client.map(|ip| (ip, key_id.chars().take(MAX_COUNTED_NAME).collect()));
        if let Some(key) = &key {
            self.check_blocked(key)?;
        }
        let result = check();
        if let Some(key) = &key {
            match &result {
                Ok(_) => self.clear(key),
                Err(_) => self.record_failure(key),
            }
        }
        Ok(result)
    }

    /// Whether a signed principal of the AWS API may perform the IAM action `action` (any
    /// ECR or ECS action, by name) on `repo` (`None`: the registry): `Err` holds the denial,
    /// worded as the registry's.
    pub fn may(
        &self,
        state: &AppState,
        principal: &Principal,
        action: &'static str,
        repo: Option<&RepoName>,
    ) -> Result<(), AuthError> {
        let Some(user) = decided_by_policies(state, principal)? else {
            return Ok(());
        };
        self.user_may(state, user, action, repo)
            .map_err(|why| AuthError::Denied {
                principal: principal.to_string(),
                action,
                resource: match repo {
                    Some(r) => format!("repository {r}"),
                    None => "the registry".into(),
                },
                why,
            })
    }

    /// Whether a signed principal of the AWS API may perform `action` on the resource
    /// `arn` (an ECS task definition, task or cluster ARN, or `*` for the list operations,
    /// which IAM decides against every resource): `Err` holds the denial. Only identity
    /// policies can name such resources (repository and registry policies are ECR's).
    pub fn may_arn(
        &self,
        state: &AppState,
        principal: &Principal,
        action: &'static str,
        arn: &str,
    ) -> Result<(), AuthError> {
        let Some(user) = decided_by_policies(state, principal)? else {
            return Ok(());
        };
        let decision = decide::decide(state, user, action, arn, None);
        if decision.allowed() {
            return Ok(());
        }
        Err(AuthError::Denied {
            principal: principal.to_string(),
            action,
            resource: arn.to_string(),
            why: decision.denial_reason(),
        })
    }

    /// The policies' decision for a user (remembered until the access epoch changes): `Err`
    /// holds the reason to add to a denial.
    fn user_may(
        &self,
        state: &AppState,
        user: &Arc<str>,
        action: &'static str,
        repo: Option<&RepoName>,
    ) -> Result<(), String> {
        let epoch = state.meta.read().auth.epoch;
        let key = decision_key(user, action, repo);
        let remembered = self
            .decisions
            .read()
            .ok()
            .and_then(|d| remembered(&d, key, epoch, user, action, repo));
        let outcome = match remembered {
            Some(outcome) => outcome,
            None => self.decide(state, epoch, key, user, action, repo),
        };
        outcome.map_err(|why| why.to_string())
    }

    /// [`Guard::may`] for each of `repos` (a listing's page), with the access epoch read and
    /// the remembered decisions locked once for all of them.
    pub fn may_each(
        &self,
        state: &AppState,
        principal: &Principal,
        action: &'static str,
        repos: &[RepoName],
    ) -> Vec<bool> {
        let user = match decided_by_policies(state, principal) {
            Ok(None) => return vec![true; repos.len()],
            Err(_) => return vec![false; repos.len()],
            Ok(Some(user)) => user,
        };
        let epoch = state.meta.read().auth.epoch;
        let keys: Vec<u64> = repos
            .iter()
            .map(|r| decision_key(user, action, Some(r)))
            .collect();
        let known: Vec<Option<Result<(), Arc<str>>>> = match self.decisions.read() {
            Ok(d) => repos
                .iter()
                .zip(&keys)
                .map(|(r, key)| remembered(&d, *key, epoch, user, action, Some(r)))
                .collect(),
            Err(_) => vec![None; repos.len()],
        };
        repos
            .iter()
            .zip(keys)
            .zip(known)
            .map(|((repo, key), known)| {
                known
                    .unwrap_or_else(|| self.decide(state, epoch, key, user, action, Some(repo)))
                    .is_ok()
            })
            .collect()
    }

    /// Asks the policies, and remembers the answer for the epoch.
    fn decide(
        &self,
        state: &AppState,
        epoch: u64,
        key: u64,
        user: &Arc<str>,
        action: &'static str,
        repo: Option<&RepoName>,
    ) -> Result<(), Arc<str>> {
        let resource = match repo {
            Some(r) => state.repository_arn(r),
            None => state.registry_arn(),
        };
        let decision = decide::decide(state, user, action, &resource, repo);
        let outcome: Result<(), Arc<str>> = if decision.allowed() {
            Ok(())
        } else {
            Err(decision.denial_reason().into())
        };
        if let Ok(mut decisions) = self.decisions.write() {
            if decisions.len() >= CACHE_LIMIT {
                decisions.clear();
            }
            decisions.insert(
                key,
                Remembered {
                    user: user.clone(),
                    action,
                    repo: repo.cloned(),
                    epoch,
                    outcome: outcome.clone(),
                },
            );
        }
        outcome
    }

    fn check_blocked(&self, key: &FailureKey) -> Result<(), AuthError> {
        let Ok(failures) = self.failures.lock() else {
            return Ok(());
        };
        if let Some(until) = failures.get(key).and_then(|f| f.blocked_until) {
            let now = Instant::now();
            if until > now {
                crate::metrics::METRICS.throttled.inc();
                return Err(AuthError::TooManyFailures {
                    client: key.0,
                    user: if key.1.is_empty() {
                        "bearer tokens".into()
                    } else {
                        format!("user name {:?}", key.1)
                    },
                    retry_after: (until - now).as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    fn record_failure(&self, key: &FailureKey) {
        crate::metrics::METRICS.auth_failures.inc();
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let now = Instant::now();
        let f = failures.entry(key.clone()).or_default();
        if f.since.is_none_or(|s| now - s > FAILURE_WINDOW) {
            f.count = 0;
            f.since = Some(now);
        }
        f.count += 1;
        if f.count >= MAX_FAILURES {
            tracing::warn!(client = %key.0, user = %key.1, failures = f.count, "blocking a user name at a client address after repeated authentication failures");
            f.blocked_until = Some(now + BLOCK);
            f.count = 0;
            f.since = None;
        }
        // Forget stale entries so the map cannot grow without bound; names are the client's
        // to choose, so past the limit even recent counts go (blocks stay).
        if failures.len() > 10_000 {
            failures.retain(|_, f| {
                f.blocked_until.is_some_and(|u| u > now)
                    || f.since.is_some_and(|s| now - s <= FAILURE_WINDOW)
            });
        }
        if failures.len() > 10_000 {
            failures.retain(|_, f| f.blocked_until.is_some_and(|u| u > now));
        }
    }

    fn clear(&self, key: &FailureKey) {
        if let Ok(mut failures) = self.failures.lock() {
            if failures.get(key).is_some_and(|f| f.count > 0) {
                failures.remove(key);
            }
        }
    }
}

/// True when the registry lets anyone, with or without credentials, perform `action`
/// (`--anonymous all`, or a read with `--anonymous pull`).
fn anyone_may(state: &AppState, action: Action) -> bool {
    match state.config.anonymous {
        Anonymous::All => true,
        Anonymous::Pull => action.is_read(),
        Anonymous::None => false,
    }
}

/// The user name failures of these credentials count under.
fn counted_name(presented: &Presented) -> String {
    match presented {
        Presented::Basic(user, _) => user.chars().take(MAX_COUNTED_NAME).collect(),
        Presented::Bearer(_) | Presented::None => String::new(),
    }
}
/// Where a decision is remembered: the hash of who, what and on which repository.
fn decision_key(user: &str, action: &str, repo: Option<&RepoName>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (user, action, repo.map(RepoName::as_str)).hash(&mut h);
    h.finish()
}

/// The decision remembered under `key` for exactly this question in this epoch.
fn remembered(
    decisions: &HashMap<u64, Remembered>,
    key: u64,
    epoch: u64,
    user: &str,
    action: &str,
    repo: Option<&RepoName>,
) -> Option<Result<(), Arc<str>>> {
    decisions
        .get(&key)
        .filter(|r| {
            r.epoch == epoch && r.action == action && *r.user == *user && r.repo.as_ref() == repo
        })
        .map(|r| r.outcome.clone())
}

/// The user whose policies decide what `principal` may do through the AWS API; `None` when
/// it may do everything (the owner, or any caller of a registry open to all).
fn decided_by_policies<'p>(
    state: &AppState,
    principal: &'p Principal,
) -> Result<Option<&'p Arc<str>>, AuthError> {
    match principal {
        Principal::Owner => Ok(None),
        _ if state.config.anonymous == Anonymous::All => Ok(None),
        Principal::Anonymous => Err(AuthError::Unauthenticated("authentication required".into())),
        Principal::User(user) => Ok(Some(user)),
    }
}
