//! The AWS API door: AWS JSON 1.1 (`POST /` with `X-Amz-Target`) on the registry's listeners,
//! signed with SigV4 by an ecrl access key, so that `aws --endpoint-url`, boto3 and the SDKs
//! work against ecrld. Each operation calls the same function the control API calls for it
//! (`control::repos`, `control::auth`): this module only translates the wire format (epoch
//! timestamps, AWS's error shapes and pagination) and decides access with the IAM action of
//! the operation, through the same policy engine as the registry.

mod ecr;
mod ecr_config;
mod ecr_layers;
mod ecs;
pub mod session;
pub mod sigv4;

use crate::auth::{AuthError, Principal};
use crate::registry::{RequestBody, Shared};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ecrl::api::{ApiError, ErrorCode};
use ecrl::names::RepoName;
use futures_util::StreamExt;
use serde_json::{json, Value};

pub const ECR_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";
pub const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The largest request body taken (ECR's biggest, an UploadLayerPart, is a base64 part).
const MAX_BODY: usize = 16 << 20;

/// An AWS error: its `__type`, HTTP status and message.
#[derive(Debug)]
pub struct AwsError {
    pub kind: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl AwsError {
    fn client(kind: &'static str, message: impl Into<String>) -> AwsError {
        AwsError {
            kind,
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn forbidden(kind: &'static str, message: impl Into<String>) -> AwsError {
        AwsError {
            kind,
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

impl From<ApiError> for AwsError {
    fn from(e: ApiError) -> AwsError {
        let kind = match e.code {
            ErrorCode::RepositoryNotFound => "RepositoryNotFoundException",
            ErrorCode::RepositoryAlreadyExists => "RepositoryAlreadyExistsException",
            ErrorCode::RepositoryNotEmpty => "RepositoryNotEmptyException",
            ErrorCode::ImageNotFound => "ImageNotFoundException",
            ErrorCode::ImageTagAlreadyExists => "ImageTagAlreadyExistsException",
            ErrorCode::LifecyclePolicyNotFound => "LifecyclePolicyNotFoundException",
            ErrorCode::PolicyNotFound => "RepositoryPolicyNotFoundException",
            ErrorCode::InvalidParameter | ErrorCode::SourceUnreadable => {
                "InvalidParameterException"
            }
            _ => "ServerException",
        };
        let status = if kind == "ServerException" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        AwsError {
            kind,
            status,
            message: e.message,
        }
    }
}

impl From<AuthError> for AwsError {
    fn from(e: AuthError) -> AwsError {
        match e {
            AuthError::Denied { .. } => AwsError::forbidden("AccessDeniedException", e.to_string()),
            AuthError::TooManyFailures { .. } => AwsError {
                kind: "ThrottlingException",
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
            },
            AuthError::Unauthenticated(_) => {
                AwsError::forbidden("UnrecognizedClientException", e.to_string())
            }
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = json!({"__type": self.kind, "message": self.message});
        answer(self.status, body.to_string().into_bytes())
    }
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(request_id().hyphenated().encode_lower(&mut [0; 36])) {
        h.insert("x-amzn-requestid", id);
    }
    response
}

/// A request id (`x-amzn-requestid`), unique in this daemon's life: a random start, counted
/// on (a fresh random one each time cost a system call per answer).
fn request_id() -> uuid::Uuid {
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| uuid::Uuid::new_v4().as_u128());
    uuid::Uuid::from_u128(start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) as u128))
}

/// Whether a registry request is for this door: `POST /` (the registry's own paths are all
/// under `/v2/`).
pub fn is_aws(parts: &Parts) -> bool {
    parts.method == axum::http::Method::POST && parts.uri.path() == "/"
}

pub async fn handle(state: Shared, parts: &Parts, body: &mut RequestBody) -> Response {
    match call(&state, parts, body).await {
        Ok(Out::Value(value)) => answer(StatusCode::OK, value.to_string().into_bytes()),
        Ok(Out::Bytes(bytes)) => answer(StatusCode::OK, bytes),
        Err(e) => e.into_response(),
    }
}

/// An operation's answer: a JSON value, or JSON already written out.
pub(super) enum Out {
    Value(Value),
    Bytes(Vec<u8>),
}

impl From<Value> for Out {
    fn from(v: Value) -> Out {
        Out::Value(v)
    }
}

async fn call(state: &Shared, parts: &Parts, body: &mut RequestBody) -> Result<Out, AwsError> {
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (service, op) = match target.split_once('.') {
        Some((ECR_PREFIX, op)) => ("ecr", op),
        Some((ECS_PREFIX, op)) => ("ecs", op),
        _ => {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!(
                    "ecrld answers the AWS API for ECR ({ECR_PREFIX}.<Operation>) and ECS \
                     ({ECS_PREFIX}.<Operation>) on POST /; X-Amz-Target was {target:?}"
                ),
            ))
        }
    };
    // The signature covers the body, but the header is checked first: a request that is
    // unsigned, malformed or signed by no key of ours never has its body buffered.
    let auth = authorization(state, parts, service)?;
    let bytes = read_body(body).await?;
    let principal = authenticate(state, parts, &auth, &bytes)?;
    let input: Value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            AwsError::client(
                "SerializationException",
                format!("the body is not JSON: {e}"),
            )
        })?
    };
    if !input.is_object() {
        return Err(AwsError::client(
            "SerializationException",
            "the body must be a JSON object",
        ));
    }
    match service {
        "ecr" => {
            let caller = Caller {
                principal,
                client: client_ip(parts),
                parts,
            };
            ecr::call(state, &caller, op, &input).await
        }
        _ => ecs::call(state, &principal, op, &input).await,
    }
}

async fn read_body(body: &mut RequestBody) -> Result<Vec<u8>, AwsError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            AwsError::client("SerializationException", format!("reading the body: {e}"))
        })?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(AwsError {
                kind: "RequestEntityTooLargeException",
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("a request body is at most {} MiB", MAX_BODY >> 20),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The request's `Authorization` header, parsed, for `service`, naming a key that exists.
fn authorization(
    state: &Shared,
    parts: &Parts,
    service: &str,
) -> Result<sigv4::Authorization, AwsError> {
    let Some(value) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(AwsError::forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token: sign requests with an ecrl access key (ecrl auth \
             user create, or ecrl auth key create for the owner)",
        ));
    };
    let auth = sigv4::parse_authorization(value)
        .map_err(|e| AwsError::forbidden("IncompleteSignatureException", e.to_string()))?;
    if auth.service != service {
        return Err(AwsError::forbidden(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to correct service: '{service}', not '{}'",
                auth.service
            ),
        ));
    }
    if auth.key_id.starts_with(session::KEY_PREFIX) {
        // Temporary credentials (a task role's): the session token must come with them.
        let token = parts
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        temporary_signer(state, &auth.key_id, token)?;
    } else if state.meta.read().auth.signing_key(&auth.key_id) == Err(false) {
        return Err(unknown_key());
    }
    Ok(auth)
}

/// The user and secret of temporary credentials ([`session`]): only while they last and the
/// user exists.
fn temporary_signer(
    state: &Shared,
    key_id: &str,
    token: &str,
) -> Result<(String, String), AwsError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match session::open(state.meta.token_secret(), key_id, token, now) {
        Ok((user, secret)) if state.meta.read().auth.users.contains_key(&user) => {
            Ok((user, secret))
        }
        Ok(_) | Err(session::Refused::Invalid) => Err(unknown_key()),
        Err(session::Refused::Expired) => Err(AwsError::forbidden(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        )),
    }
}

fn unknown_key() -> AwsError {
    AwsError::forbidden(
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
}

/// Who asks, from where, and through which request.
pub(super) struct Caller<'a> {
    pub principal: Principal,
    pub client: Option<std::net::IpAddr>,
    parts: &'a Parts,
}

impl Caller<'_> {
    /// `http[s]://host[:port]`, as the request named the endpoint (worked out only for the
    /// operation that answers a URL).
    pub fn url(&self) -> String {
        base_url(self.parts)
    }
}

fn client_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::registry::Client>>()
        .map(|c| c.0.addr.ip())
}

/// The endpoint URL the client used: its scheme from the listener, its host from the
/// request (the one the signature covers).
fn base_url(parts: &Parts) -> String {
    let https = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::registry::Client>>()
        .is_some_and(|c| c.0.https);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", if https { "https" } else { "http" })
}

/// The caller, from the request's SigV4 signature.
fn authenticate(
    state: &Shared,
    parts: &Parts,
    auth: &sigv4::Authorization,
    body: &[u8],
) -> Result<Principal, AwsError> {
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let request = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &headers,
        body,
    };
    state.auth.attempt(client_ip(parts), &auth.key_id, || {
        verify_signature(state, &request, auth)
    })?
}

/// Checks the signature with the access key's kept secret: the caller it proves.
fn verify_signature(
    state: &Shared,
    request: &sigv4::Request<'_>,
    auth: &sigv4::Authorization,
) -> Result<Principal, AwsError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if auth.key_id.starts_with(session::KEY_PREFIX) {
        let token = request.header("x-amz-security-token").unwrap_or_default();
        let (user, secret) = temporary_signer(state, &auth.key_id, token)?;
        check(
            request,
            auth,
            &["x-amz-target", "x-amz-security-token"],
            now,
            &secret,
            state,
        )?;
        return Ok(Principal::User(user.into()));
    }
    let index = state.meta.read();
    let (owner, secret) = match index.auth.signing_key(&auth.key_id) {
        Ok(found) => found,
        Err(true) => {
            return Err(AwsError::forbidden(
                "UnrecognizedClientException",
                format!(
                    "access key {} was made before ecrl kept secrets for SigV4 signatures: \
                     rotate it (ecrl auth key rotate USER) to use it with the AWS API",
                    auth.key_id
                ),
            ))
        }
        Err(false) => return Err(unknown_key()),
    };
    check(request, auth, &["x-amz-target"], now, secret, state)?;
    Ok(match owner {
        None => Principal::Owner,
        Some(user) => Principal::User(user.into()),
    })
}

fn check(
    request: &sigv4::Request<'_>,
    auth: &sigv4::Authorization,
    required: &[&str],
    now: i64,
    secret: &str,
    state: &Shared,
) -> Result<(), AwsError> {
    sigv4::verify(request, auth, required, now, secret, &state.aws_keys).map_err(|e| match e {
        sigv4::SigError::Malformed(_) => {
            AwsError::forbidden("IncompleteSignatureException", e.to_string())
        }
        _ => AwsError::forbidden("InvalidSignatureException", e.to_string()),
    })
}

pub(super) fn unsupported(service: &str, op: &str) -> AwsError {
    AwsError::client(
        "UnsupportedCommandException",
        format!("ecrl does not answer {service}'s {op} yet"),
    )
}

pub(super) fn string<'a>(input: &'a Value, field: &str) -> Result<&'a str, AwsError> {
    input[field].as_str().ok_or_else(|| {
        AwsError::client(
            "InvalidParameterException",
            format!("{field} is required (a string)"),
        )
    })
}

pub(super) fn repo_name(text: &str) -> Result<RepoName, AwsError> {
    text.parse()
        .map_err(|e| AwsError::client("InvalidParameterException", format!("{e}")))
}

/// Decodes an ECR request shape (the control API's types use ECR's names).
pub(super) fn decode<T: serde::de::DeserializeOwned>(input: &Value) -> Result<T, AwsError> {
    serde_json::from_value(input.clone())
        .map_err(|e| AwsError::client("InvalidParameterException", e.to_string()))
}

/// RFC 3339 timestamps (the control API's) as the epoch seconds AWS JSON carries.
pub(super) fn epoch_times(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.ends_with("At") || key.ends_with("Time") {
                    if let Some(seconds) = v.as_str().and_then(ecrl::timestamp::epoch_seconds) {
                        *v = json!(seconds);
                        continue;
                    }
                }
                epoch_times(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(epoch_times),
        _ => {}
    }
}

/// One page of `items` under `field`, as `maxResults` and `nextToken` ask (the token: the
/// index the next page starts at), with the next token when more follow.
pub(super) fn paged(input: &Value, field: &str, items: Value) -> Result<Value, AwsError> {
    let items = match items {
        Value::Array(items) => items,
        other => vec![other],
    };
    let (max, after) = page(input, 1000)?;
    let start: usize = if after.is_empty() {
        0
    } else {
        after
            .parse()
            .map_err(|_| AwsError::client("InvalidParameterException", "invalid nextToken"))?
    };
    let end = (start + max).min(items.len());
    let mut out = json!({});
    out[field] = Value::Array(items.get(start..end).unwrap_or_default().to_vec());
    if end < items.len() {
        out["nextToken"] = json!(next_token(&end.to_string()));
    }
    Ok(out)
}

/// `maxResults` (1..=`limit`, ECR's default 100 when absent) and where the page starts after
/// (`nextToken`: the last name of the page before, opaque to clients).
pub(super) fn page(input: &Value, limit: usize) -> Result<(usize, String), AwsError> {
    let max = match &input["maxResults"] {
        Value::Null => 100,
        v => v
            .as_u64()
            .filter(|n| (1..=limit as u64).contains(n))
            .ok_or_else(|| {
                AwsError::client(
                    "InvalidParameterException",
                    format!("maxResults must be between 1 and {limit}"),
                )
            })? as usize,
    };
    let after = match input["nextToken"].as_str() {
        None => String::new(),
        Some(token) => {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AwsError::client("InvalidParameterException", "invalid nextToken"))?
        }
    };
    Ok((max, after))
}

pub(super) fn to_aws(value: impl serde::Serialize) -> Result<Value, AwsError> {
    let mut value = serde_json::to_value(value)
        .map_err(|e| AwsError::client("ServerException", e.to_string()))?;
    epoch_times(&mut value);
    Ok(value)
}

pub(super) fn next_token(last: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_timestamps_become_epoch_seconds() {
        let mut v = json!({"repository": {"createdAt": "2026-12-07T01:15:13.5Z", "name": "x"},
                           "authorizationData": [{"expiresAt": "2026-12-07T13:15:13Z"}]});
        epoch_times(&mut v);
        assert_eq!(v["repository"]["createdAt"], json!(1_796_606_113.5));
        assert_eq!(
            v["authorizationData"][0]["expiresAt"],
            json!(1_796_649_313.0)
        );
        assert_eq!(v["repository"]["name"], "x");
    }

    #[test]
    fn pages_start_after_the_token_and_refuse_bad_sizes() {
        assert_eq!(page(&json!({}), 1000).unwrap(), (100, String::new()));
        let token = next_token("team/app");
        assert_eq!(
            page(&json!({"maxResults": 5, "nextToken": token}), 1000).unwrap(),
            (5, "team/app".to_string())
        );
        for bad in [
            json!({"maxResults": 0}),
            json!({"maxResults": 1001}),
            json!({"nextToken": "%%"}),
        ] {
            assert!(page(&bad, 1000).is_err(), "{bad}");
        }
    }
}
