//! The registry: OCI Distribution Spec v1.1 / Docker Registry HTTP API V2 over TCP (plain
//! HTTP, HTTPS, or both at once).
//!
//! One handler parses every path into a [`Route`] (repository names contain slashes, so a
//! path router cannot split them), checks access through `auth::authorize` with the route's
//! ECR action, and calls the blob or manifest handlers. Names, digests and ranges are parsed
//! here, at the edge; storage and metadata receive only parsed values.

mod blobs;
pub(crate) mod cache;
pub mod conn;
mod error;
mod framing;
mod manifests;

use crate::app::AppState;
use crate::auth::{self, Action};
use axum::body::{Body, BodyDataStream};
use axum::extract::{ConnectInfo, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ecrl::config::Anonymous;
use ecrl::names::{Digest, NameError, Reference, RepoName};
pub use error::RegistryError;
use futures_util::StreamExt;
use oci_spec::distribution::ErrorCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

pub type Shared = Arc<AppState>;
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Serves the registry on a listener: a TCP one for plain HTTP, a `tls::TlsListener` for
/// HTTPS. Every listener gets the same handler and the same connection limits (`conns`,
/// shared by all listeners, so the caps count every connection).
pub async fn serve<L: conn::Listener>(
    listener: L,
    state: Shared,
    conns: Arc<conn::Conns>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handler: conn::Handler =
        Arc::new(move |request| Box::pin(dispatch(state.clone(), request)));
    conn::serve(listener, conns, handler, shutdown).await
}

/// Where a request goes.
#[derive(Debug)]
enum Route {
    Base,
    Token,
    Catalog,
    Tags(RepoName),
    /// The reference as it came: whether a malformed one is a 404 or a 400 depends on the
    /// method, and is told only to a client allowed to know (after authorization).
    Manifest(RepoName, String),
    Blob(RepoName, Digest),
    Uploads(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, Digest),
}

fn parse_route(path: &str) -> Result<Route> {
    let not_found = || {
        RegistryError::not_found(
            ErrorCode::Unsupported,
            format!("no registry endpoint at {path}"),
        )
    };
    let rest = match path.strip_prefix("/v2") {
        Some("" | "/") => return Ok(Route::Base),
        Some(rest) => rest.strip_prefix('/').ok_or_else(not_found)?,
        None => return Err(not_found()),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if rest == "token" {
        return Ok(Route::Token);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags(name.parse()?));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let name = name.parse()?;
        return Ok(Route::Manifest(name, reference.to_string()));
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        let name = name.parse()?;
        return Ok(Route::Referrers(name, digest.parse()?));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(Route::Uploads(name.parse()?));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        let name = name.parse()?;
        return Ok(Route::Upload(name, id.to_string()));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        let name = name.parse()?;
        return Ok(Route::Blob(name, digest.parse()?));
    }
    Err(not_found())
}

/// The manifest a GET, HEAD or DELETE names. A malformed digest is the client's error (400
/// `DIGEST_INVALID`); anything else that is not a valid tag names no manifest there can be:
/// 404 `MANIFEST_UNKNOWN`, as the OCI conformance suite expects.
fn existing_reference(repo: &RepoName, raw: &str) -> Result<Reference> {
    match raw.parse() {
        Ok(reference) => Ok(reference),
        Err(e @ (NameError::Digest(_) | NameError::Algorithm(_))) => Err(e.into()),
        Err(_) => Err(RegistryError::not_found(
            ErrorCode::ManifestUnknown,
            format!("manifest unknown: {raw:?} in {repo} is neither a valid tag nor a digest"),
        )),
    }
}

/// The tag or digest a manifest PUT stores under: a malformed one is 400 (`MANIFEST_INVALID`
/// for a tag, as OCI has no code for tags; `DIGEST_INVALID` for a digest).
fn new_reference(raw: &str) -> Result<Reference> {
    raw.parse().map_err(|e| match e {
        NameError::Tag(_) | NameError::Reference(_) => RegistryError::bad_request(
            ErrorCode::ManifestInvalid,
            format!(
                "invalid tag {raw:?}: up to 128 letters, digits, '_', '.' and '-', not starting \
                 with '.' or '-'"
            ),
        ),
        e => e.into(),
    })
}

/// Who a request came from, and over which listener (challenges name the right scheme).
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: std::net::SocketAddr,
    pub https: bool,
}

/// A 401 gets the challenges that tell clients how to authenticate: the Docker token flow
/// (`Bearer realm=...`) first, Basic second.
fn challenge(
    state: &AppState,
    parts: &axum::http::request::Parts,
    error: RegistryError,
    scope: Option<(Action, Option<&RepoName>)>,
) -> RegistryError {
    if error.status != StatusCode::UNAUTHORIZED {
        return error;
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| state.registry_host());
    let https = parts
        .extensions
        .get::<ConnectInfo<Client>>()
        .is_some_and(|c| c.0.https);
    let scheme = if https { "https" } else { "http" };
    let mut bearer = format!("Bearer realm=\"{scheme}://{host}/v2/token\",service=\"ecrl\"");
    match scope {
        Some((action, Some(repo))) => {
            bearer.push_str(&format!(",scope=\"repository:{repo}:{}\"", action.scope()))
        }
        Some((_, None)) => bearer.push_str(",scope=\"registry:catalog:*\""),
        None => {}
    }
    error
        .append_header(header::WWW_AUTHENTICATE, bearer)
        .append_header(header::WWW_AUTHENTICATE, "Basic realm=\"ecrl\"")
}

/// `GET /v2/token`: the Docker token flow. Credentials (Basic with `AWS` and a login token,
/// or an access key) buy a bearer token; bad ones get 401; none get an anonymous token.
fn token(
    state: &AppState,
    parts: &axum::http::request::Parts,
    client: Option<std::net::IpAddr>,
) -> Result<Response> {
    let principal = state
        .auth
        .authenticate(state, &parts.headers, client)
        .map_err(|e| challenge(state, parts, e.into(), None))?;
    // Without credentials the answer is an anonymous token, which grants what anonymous
    // access allows (possibly nothing): clients then fail at once on the request it does not
    // cover, instead of retrying a refused token request.
    let (token, expires) = state.auth.bearer_for(state, &principal, &parts.headers);
    let now = time::OffsetDateTime::now_utc();
    let issued_at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let lifetime = expires.saturating_sub(now.unix_timestamp().max(0) as u64);
    let body = serde_json::json!({
        "token": token.0,
        "access_token": token.0,
        "expires_in": lifetime,
        "issued_at": issued_at,
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

/// How long the body of a refused request is still read (and thrown away) before the
/// refusal is sent: see [`answer_after_body`].
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// The same for a request refused by authorization: shorter, as anyone can send one (a
/// client whose credentials lapsed mid-push is usually on a fast link).
const DRAIN_LIMIT_UNAUTHORIZED: std::time::Duration = std::time::Duration::from_secs(5);

/// A request's body, remembering whether it was read from, and how much came.
pub struct RequestBody {
    inner: BodyDataStream,
    touched: bool,
    received: u64,
}

impl RequestBody {
    pub fn new(body: Body) -> RequestBody {
        RequestBody {
            inner: body.into_data_stream(),
            touched: false,
            received: 0,
        }
    }
}

impl futures_util::Stream for RequestBody {
    type Item = std::result::Result<bytes::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.touched = true;
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &next {
            self.received += chunk.len() as u64;
        }
        next
    }
}

/// A request's answer, sent only once its body has arrived: when the request was refused
/// before its body was read to the end (a malformed name, an unknown endpoint, a full disk
/// midway through an upload, a bad `Content-Range`, an oversized manifest, no permission),
/// the rest is read and thrown away, for up to [`DRAIN_LIMIT`] ([`DRAIN_LIMIT_UNAUTHORIZED`]
/// for a 401 or 403). A client still sending would otherwise see its connection reset (a
/// broken pipe) instead of the registry's error. A client waiting for `100 Continue` that
/// was never read from has sent no body, and is answered at once (reading would ask it to
/// send).
async fn answer_after_body(
    answer: Result<Response>,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response> {
    let waiting = !body.touched
        && parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let (Err(e), false) = (&answer, waiting) {
        drain(e.status, body).await;
    }
    answer
}

/// Reads and throws away what is left of a refused request's body (see
/// [`answer_after_body`]), for as long as the answer's status allows.
async fn drain(status: StatusCode, body: &mut RequestBody) {
    let limit = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DRAIN_LIMIT_UNAUTHORIZED,
        _ => DRAIN_LIMIT,
    };
    let rest = async { while let Some(Ok(_)) = body.next().await {} };
    let _ = tokio::time::timeout(limit, rest).await;
}

async fn dispatch(state: Shared, request: Request) -> Response {
    let metrics = &crate::metrics::METRICS;
    if !metrics.enabled() {
        return answer(state, request).await.0;
    }
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let (response, aws, received) = answer(state, request).await;
    let route = crate::metrics::RouteKind::of(uri.path(), aws);
    let sent = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|_| method != Method::HEAD);
    metrics.request(
        route,
        &method,
        response.status(),
        started.elapsed(),
        received,
        sent,
    );
    response
}

/// The AWS API's answer (also on the task metadata endpoint, for tasks' SDKs).
pub async fn aws_answer(
    state: Shared,
    parts: &axum::http::request::Parts,
    body: &mut RequestBody,
) -> Response {
    let response = crate::aws::handle(state, parts, body).await;
    // Refused before its body was read (unsigned, an unknown key, too big): the client
    // gets the answer rather than a reset connection, as on the registry's paths.
    if !response.status().is_success() {
        drain(response.status(), body).await;
    }
    response
}

/// The answer to a request, whether it went to the AWS API, and the body bytes it sent.
async fn answer(state: Shared, request: Request) -> (Response, bool, u64) {
    let (parts, body) = request.into_parts();
    let mut body = RequestBody::new(body);
    if crate::console::is_console(parts.uri.path()) {
        let client = parts.extensions.get::<ConnectInfo<Client>>().map(|c| c.0);
        let response = crate::console::handle(
            state,
            &parts,
            &mut body,
            client.map(|c| c.addr.ip()),
            client.is_some_and(|c| c.https),
        )
        .await;
        return (response, false, body.received);
    }
    if crate::aws::is_aws(&parts) {
        let response = aws_answer(state, &parts, &mut body).await;
        return (response, true, body.received);
    }
    let answer = route(state, &parts, &mut body).await;
    let mut response = match answer_after_body(answer, &parts, &mut body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    (response, false, body.received)
}

async fn route(state: Shared, parts: &Parts, body: &mut RequestBody) -> Result<Response> {
    let route = parse_route(parts.uri.path())?;
    let method = parts.method.clone();
    let client = parts
        .extensions
        .get::<ConnectInfo<Client>>()
        .map(|c| c.0.addr.ip());
    let allow = |action: Action, repo: Option<&RepoName>| {
        state
            .auth
            .authorize(&state, &parts.headers, client, action, repo)
            .map_err(|e| challenge(&state, parts, RegistryError::from(e), Some((action, repo))))
    };
    match (&method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => {
            // `docker login` asks here: credentials are checked whenever the registry wants
            // them for anything.
            if state.config.anonymous == Anonymous::None {
                let principal = state
                    .auth
                    .authenticate(&state, &parts.headers, client)
                    .map_err(|e| challenge(&state, parts, e.into(), None))?;
                if principal == auth::Principal::Anonymous {
                    let e = auth::AuthError::Unauthenticated("authentication required".into());
                    return Err(challenge(&state, parts, e.into(), None));
                }
            }
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{}",
            )
                .into_response())
        }
        (&Method::GET, Route::Token) => token(&state, parts, client),
        (&Method::GET, Route::Catalog) => {
            allow(Action::DescribeRepositories, None)?;
            manifests::catalog(&state, &parts.uri)
        }
        (&Method::GET, Route::Tags(repo)) => {
            allow(Action::ListImages, Some(&repo))?;
            manifests::tags(&state, &repo, &parts.uri)
        }
        (&Method::GET | &Method::HEAD, Route::Manifest(repo, reference)) => {
            let repo = cache::alias(&state, repo);
            allow(Action::BatchGetImage, Some(&repo))?;
            let reference = existing_reference(&repo, &reference)?;
            cache::manifest(&state, &repo, &reference, &allow).await?;
            let head = method == Method::HEAD;
            match manifests::get(&state, &repo, &reference, head) {
                // Another instance may have committed it a moment ago (its notice on the
                // way): a miss asks the shared database before it is answered.
                Err(e) if e.status == StatusCode::NOT_FOUND && state.meta.shared() => {
                    state.meta.refresh().await;
                    manifests::get(&state, &repo, &reference, head)
                }
                found => found,
            }
        }
        (&Method::PUT, Route::Manifest(repo, reference)) => {
            allow(Action::PutImage, Some(&repo))?;
            cache::refuse_push(&state, &repo)?;
            let reference = new_reference(&reference)?;
            manifests::put(&state, repo, reference, parts, body).await
        }
        (&Method::DELETE, Route::Manifest(repo, reference)) => {
            allow(Action::BatchDeleteImage, Some(&repo))?;
            let reference = existing_reference(&repo, &reference)?;
            manifests::delete(&state, &repo, reference).await
        }
        (&Method::GET, Route::Referrers(repo, digest)) => {
            allow(Action::BatchGetImage, Some(&repo))?;
            manifests::referrers(&state, &repo, &digest, &parts.uri)
        }
        (&Method::HEAD, Route::Blob(repo, digest)) => {
            let repo = cache::alias(&state, repo);
            allow(Action::BatchCheckLayerAvailability, Some(&repo))?;
            if let Some(r) =
                cache::blob(&state, &repo, &digest, &parts.headers, true, &allow).await?
            {
                return Ok(r);
            }
            blob_get(&state, &repo, &digest, &parts.headers, true).await
        }
        (&Method::GET, Route::Blob(repo, digest)) => {
            let repo = cache::alias(&state, repo);
            allow(Action::GetDownloadUrlForLayer, Some(&repo))?;
            if let Some(r) =
                cache::blob(&state, &repo, &digest, &parts.headers, false, &allow).await?
            {
                return Ok(r);
            }
            blob_get(&state, &repo, &digest, &parts.headers, false).await
        }
        (&Method::DELETE, Route::Blob(repo, digest)) => {
            allow(Action::BatchDeleteImage, Some(&repo))?;
            blobs::delete(&state, &repo, digest).await
        }
        (&Method::GET, Route::Upload(repo, id)) => {
            let principal = allow(Action::UploadLayerPart, Some(&repo))?;
            blobs::status(
                &state,
                &repo,
                &id,
                crate::uploads::Holder::new(&principal, client),
            )
            .await
        }
        (&Method::POST, Route::Uploads(repo)) => {
            let principal = allow(Action::InitiateLayerUpload, Some(&repo))?;
            cache::refuse_push(&state, &repo)?;
            let mount = blobs::mount_request(&parts.uri);
            if let Some((_, Some(from))) = &mount {
                allow(Action::GetDownloadUrlForLayer, Some(from))?;
            }
            // A blob is mounted only from a repository the caller may read it in: otherwise
            // a mount would copy, and its answer reveal, content the caller cannot see.
            let may_read = |source: &RepoName| {
                state.auth.permits(
                    &state,
                    &principal,
                    Action::GetDownloadUrlForLayer,
                    Some(source),
                )
            };
            let caller = blobs::Caller {
                may_read: &may_read,
                holder: crate::uploads::Holder::new(&principal, client),
            };
            blobs::start(&state, repo, mount, caller, parts, body).await
        }
        (&Method::PATCH, Route::Upload(repo, id)) => {
            let principal = allow(Action::UploadLayerPart, Some(&repo))?;
            blobs::patch(
                &state,
                &repo,
                &id,
                crate::uploads::Holder::new(&principal, client),
                parts,
                body,
            )
            .await
        }
        (&Method::PUT, Route::Upload(repo, id)) => {
            let principal = allow(Action::CompleteLayerUpload, Some(&repo))?;
            blobs::finish(
                &state,
                &repo,
                &id,
                crate::uploads::Holder::new(&principal, client),
                parts,
                body,
            )
            .await
        }
        (&Method::DELETE, Route::Upload(repo, id)) => {
            let principal = allow(Action::UploadLayerPart, Some(&repo))?;
            blobs::cancel(
                &state,
                &repo,
                &id,
                crate::uploads::Holder::new(&principal, client),
            )
            .await
        }
        (method, _) => Err(RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{method} is not supported on {}", parts.uri.path()),
        )),
    }
}

/// A query parameter's value, percent-decoded.
pub fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The `Range` header value of an upload holding `size` bytes (`0-0` when empty, as
/// Docker's registry answers).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// An empty response with headers.
pub fn empty(status: StatusCode, headers: &[(HeaderName, String)]) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let h = response.headers_mut();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// Pages a sorted list the way `n` and `last` ask, with a `Link` to the next page.
pub fn paginate(
    items: impl Iterator<Item = String>,
    uri: &axum::http::Uri,
    link_path: &str,
) -> Result<(Vec<String>, Option<String>)> {
    let n = match query_param(uri, "n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::bad_request(
                ErrorCode::Unsupported,
                format!("n={n} is not a number of results"),
            )
        })?),
        None => None,
    };
    let last = query_param(uri, "last");
    let mut items = items.filter(|item| last.as_ref().is_none_or(|l| item.as_str() > l.as_str()));
    let page: Vec<String> = match n {
        Some(n) => items.by_ref().take(n).collect(),
        None => items.by_ref().collect(),
    };
    let link = match (n, page.last()) {
        (Some(n), Some(last)) if items.next().is_some() => Some(format!(
            "<{link_path}?n={n}&last={}>; rel=\"next\"",
            urlencode(last)
        )),
        _ => None,
    };
    Ok((page, link))
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)])
        .map(|v| v[2..].to_string())
        .unwrap_or_default()
}

/// A blob GET or HEAD; a miss on an instance that shares its metadata asks the database
/// again first (another instance may have linked the blob a moment ago).
async fn blob_get(
    state: &Shared,
    repo: &RepoName,
    digest: &Digest,
    headers: &axum::http::HeaderMap,
    head: bool,
) -> Result<Response> {
    match blobs::get(state, repo, digest, headers, head).await {
        Err(e) if e.status == StatusCode::NOT_FOUND && state.meta.shared() => {
            state.meta.refresh().await;
            blobs::get(state, repo, digest, headers, head).await
        }
        found => found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_names_with_slashes() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(parse_route("/v2/").unwrap(), Route::Base));
        assert!(matches!(parse_route("/v2").unwrap(), Route::Base));
        assert!(matches!(
            parse_route("/v2/_catalog").unwrap(),
            Route::Catalog
        ));
        match parse_route("/v2/a/b/c/tags/list").unwrap() {
            Route::Tags(n) => assert_eq!(n.as_str(), "a/b/c"),
            r => panic!("{r:?}"),
        }
        match parse_route(&format!("/v2/team/app/blobs/{d}")).unwrap() {
            Route::Blob(n, _) => assert_eq!(n.as_str(), "team/app"),
            r => panic!("{r:?}"),
        }
        match parse_route("/v2/team/blobs/app/blobs/uploads/").unwrap() {
            Route::Uploads(n) => assert_eq!(n.as_str(), "team/blobs/app"),
            r => panic!("{r:?}"),
        }
        match parse_route("/v2/x/blobs/uploads/abc").unwrap() {
            Route::Upload(n, id) => assert_eq!((n.as_str(), id.as_str()), ("x", "abc")),
            r => panic!("{r:?}"),
        }
        match parse_route("/v2/x/manifests/latest").unwrap() {
            Route::Manifest(_, r) => assert_eq!(r, "latest"),
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            parse_route(&format!("/v2/x/referrers/{d}")).unwrap(),
            Route::Referrers(..)
        ));
    }

    #[test]
    fn bad_names_and_digests_are_client_errors() {
        for path in [
            "/v2/a/../b/tags/list",
            "/v2/A/tags/list",
            "/v2/a%2Fb/tags/list",
            "/v2/a/blobs/sha256:abc",
            "/v2/a/blobs/md5:abc",
        ] {
            let e = parse_route(path).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{path}");
        }
        assert_eq!(
            parse_route("/v3/x").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
