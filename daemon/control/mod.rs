//! The control API over the Unix socket: the CLI's only door into the daemon.
//!
//! It owns the socket file (created 0600 in a 0700 directory, removed at shutdown), refuses
//! peers of another uid (root excepted), and routes the endpoints defined in `ecrl::api`.
//! Handlers call into the daemon's services; they never touch files themselves.

pub(crate) mod auth;
pub(crate) mod clusters;
mod events;
pub(crate) mod lifecycle;
pub(crate) mod mirror;
pub(crate) mod repos;
mod secrets;
pub(crate) mod services;
mod system;
pub(crate) mod taskdefs;
pub(crate) mod tasks;
mod transfer;

use crate::app::AppState;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use ecrl::api::{ApiError, Endpoint, ErrorCode, Method, API_VERSION, API_VERSION_HEADER};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Who is on the other end of a control connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    #[allow(dead_code)] // read by the access-control issue's audit log
    pub pid: Option<i32>,
}

/// The listener that admits only the daemon's own uid and root.
pub struct PeerListener {
    inner: UnixListener,
    owner: u32,
}

impl axum::serve::Listener for PeerListener {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let stream = match self.inner.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == self.owner || cred.uid() == 0 => {
                    return (
                        stream,
                        Peer {
                            uid: cred.uid(),
                            pid: cred.pid(),
                        },
                    )
                }
                Ok(cred) => tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "refused a control connection from another user"
                ),
                Err(e) => tracing::warn!("refused a control connection: no peer credentials: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            uid: self.owner,
            pid: None,
        })
    }
}

impl Connected<axum::serve::IncomingStream<'_, PeerListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, PeerListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Creates the socket's directory (0700) and binds the socket (0600). A socket file left by a
/// dead daemon is replaced; one that answers belongs to a live daemon and is an error.
pub async fn bind(socket: &Path) -> anyhow::Result<(PeerListener, SocketFile)> {
    use anyhow::Context;
    if let Some(dir) = socket.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating socket directory {}", dir.display()))?;
        }
    }
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            anyhow::bail!(
                "another ecrld is listening on socket {}; stop it with 'ecrl daemon stop' or choose another --socket",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    // The umask keeps the socket private from the moment it exists; chmod makes sure.
    // SAFETY: umask only swaps the process's file-mode mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(socket);
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("binding socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let inode = std::fs::symlink_metadata(socket)?.ino();
    // SAFETY: getuid has no preconditions.
    let owner = unsafe { libc::getuid() };
    Ok((
        PeerListener {
            inner: listener,
            owner,
        },
        SocketFile {
            path: socket.to_path_buf(),
            inode,
        },
    ))
}

/// The socket file this daemon bound, removed at shutdown only if it is still ours (a
/// daemon started meanwhile on the same path has replaced it with another inode).
pub struct SocketFile {
    path: std::path::PathBuf,
    inode: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.ino() == self.inode => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("cannot remove socket {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

pub async fn serve(
    listener: PeerListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let app = router(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

fn router(state: Arc<AppState>) -> Router {
    let app = Router::new();
    let app = system::routes(app);
    let app = repos::routes(app);
    let app = lifecycle::routes(app);
    let app = auth::routes(app);
    let app = transfer::routes(app);
    let app = mirror::routes(app);
    let app = taskdefs::routes(app);
    let app = tasks::routes(app);
    let app = clusters::routes(app);
    let app = events::routes(app);
    let app = services::routes(app);
    let app = secrets::routes(app);
    app.fallback(unknown_operation)
        .layer(axum::middleware::map_response(add_version_header))
        .with_state(state)
}

async fn add_version_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        API_VERSION_HEADER,
        HeaderValue::from_str(&API_VERSION.to_string()).unwrap_or(HeaderValue::from_static("0")),
    );
    response
}

async fn unknown_operation(uri: Uri, method: axum::http::Method) -> ControlError {
    ControlError(ApiError::new(
        ErrorCode::UnknownOperation,
        format!(
            "ecrld {} has no operation {method} {}: is ecrl newer than the daemon?",
            ecrl::VERSION,
            uri.path()
        ),
    ))
}

/// An [`ApiError`] as an HTTP response.
pub struct ControlError(pub ApiError);

impl From<ApiError> for ControlError {
    fn from(e: ApiError) -> Self {
        ControlError(e)
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

pub type Shared = Arc<AppState>;

/// A streamed answer: one JSON object a line, as the values arrive on `rx`.
pub fn ndjson<T: serde::Serialize + Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> Response {
    let lines = futures_util::stream::unfold(rx, |mut rx| async {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(line)), rx))
    });
    let mut response = Response::new(axum::body::Body::from_stream(lines));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Routes one endpoint: decodes `E::Request` from the query (GET) or the JSON body, calls
/// `handler`, encodes `E::Response`. Method and path come from the endpoint's definition.
pub fn endpoint<E, F, Fut>(router: Router<Shared>, handler: F) -> Router<Shared>
where
    E: Endpoint,
    F: Fn(Shared, Peer, E::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<E::Response, ApiError>> + Send + 'static,
{
    let handle = move |State(state): State<Shared>,
                       ConnectInfo(peer): ConnectInfo<Peer>,
                       uri: Uri,
                       body: Bytes| async move {
        let request = decode::<E>(&uri, &body)?;
        handler(state, peer, request)
            .await
            .map(Json)
            .map_err(ControlError)
    };
    let method: MethodRouter<Shared> = match E::METHOD {
        Method::Get => get(handle),
        Method::Post => post(handle),
        Method::Delete => delete(handle),
    };
    router.route(E::PATH, method)
}

/// Routes an endpoint whose operation is a service function both doors call (this API and
/// the AWS API's, `crate::aws`): who the peer is does not enter into it.
pub fn service<E, F, Fut>(router: Router<Shared>, op: F) -> Router<Shared>
where
    E: Endpoint,
    F: Fn(Shared, E::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<E::Response, ApiError>> + Send + 'static,
{
    endpoint::<E, _, _>(router, move |state, _: Peer, request| op(state, request))
}

/// AWS's limit on a resource's tags (ECR's and ECS's alike).
pub const MAX_RESOURCE_TAGS: usize = 50;

/// One resource tag as AWS checks it: keys 1-128 characters, not `aws:`-prefixed (AWS's
/// own), values at most 256.
pub fn check_resource_tag(key: &str, value: &str) -> Result<(), ApiError> {
    let invalid = |why: String| Err(ApiError::new(ErrorCode::InvalidParameter, why));
    if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
        return invalid(format!(
            "tag {key:?}: keys are 1-128 characters, values at most 256"
        ));
    }
    if key.starts_with("aws:") {
        return invalid(format!("tag {key:?}: keys starting with aws: are reserved"));
    }
    Ok(())
}

fn decode<E: Endpoint>(uri: &Uri, body: &[u8]) -> Result<E::Request, ControlError> {
    ecrl::api::decode_request::<E>(uri.query(), body).map_err(ControlError)
}
