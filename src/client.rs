//! The control-socket client: one generic call for every [`Endpoint`].

use crate::api::{ApiError, Endpoint, Method, API_VERSION, API_VERSION_HEADER};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::io;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("ecrld is not running (socket: {}); start it with 'ecrl daemon start'", socket.display())]
    Unreachable { socket: PathBuf },
    /// The socket exists but could not be used (permissions, a closed connection).
    #[error("cannot talk to ecrld at {}: {reason}", socket.display())]
    Connect { socket: PathBuf, reason: String },
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "ecrld at {} speaks control API v{daemon}, this ecrl speaks v{client}: \
         restart the daemon with this version ('ecrl daemon stop && ecrl daemon start')",
        socket.display()
    )]
    VersionMismatch {
        socket: PathBuf,
        daemon: String,
        client: u32,
    },
    #[error("unexpected response from ecrld: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when the daemon could not be reached at all (exit code 3 in the CLI).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Connect { .. }
        )
    }
}

/// A client of one daemon's control socket. Cheap to clone; each call opens a connection
/// (a Unix socket connect costs microseconds and keeps the client free of pooled state).
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Calls one endpoint and decodes its answer.
    pub async fn call<E: Endpoint>(
        &self,
        request: &E::Request,
    ) -> Result<E::Response, ClientError> {
        let response = self.send::<E>(request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.connect_error(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| {
                ClientError::Protocol(format!("{} {}: {e}", E::METHOD.as_str(), E::PATH))
            })
        } else {
            Err(decode_error(status.as_u16(), &body))
        }
    }

    /// Sends a request and returns the response head with its body unread, for streams.
    pub async fn send<E: Endpoint>(
        &self,
        request: &E::Request,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let (uri, body) = match E::METHOD {
            Method::Get => {
                let query = serde_urlencoded::to_string(request)
                    .map_err(|e| ClientError::Protocol(format!("encoding request: {e}")))?;
                let uri = if query.is_empty() {
                    E::PATH.to_string()
                } else {
                    format!("{}?{query}", E::PATH)
                };
                (uri, Bytes::new())
            }
            Method::Post | Method::Delete => {
                let body = serde_json::to_vec(request)
                    .map_err(|e| ClientError::Protocol(format!("encoding request: {e}")))?;
                (E::PATH.to_string(), Bytes::from(body))
            }
        };
        let request = hyper::Request::builder()
            .method(E::METHOD.as_str())
            .uri(uri)
            .header(hyper::header::HOST, "ecrld")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;

        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.io_error(e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.connect_error(e.to_string()))?;
        tokio::spawn(async move {
            // The connection ends with the response; its error, if any, surfaces there.
            let _ = connection.await;
        });
        let response = sender.send_request(request).await.map_err(|e| {
            self.connect_error(format!(
                "{e} (the daemon closed the connection; is the socket owned by another user?)"
            ))
        })?;
        self.check_version(&response)?;
        Ok(response)
    }

    fn check_version<B>(&self, response: &hyper::Response<B>) -> Result<(), ClientError> {
        let version = response
            .headers()
            .get(API_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if version == API_VERSION.to_string() {
            Ok(())
        } else {
            Err(ClientError::VersionMismatch {
                socket: self.socket.clone(),
                daemon: if version.is_empty() {
                    "unknown".into()
                } else {
                    version.into()
                },
                client: API_VERSION,
            })
        }
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::Unreachable {
                    socket: self.socket.clone(),
                }
            }
            _ => self.connect_error(e.to_string()),
        }
    }

    fn connect_error(&self, reason: String) -> ClientError {
        ClientError::Connect {
            socket: self.socket.clone(),
            reason,
        }
    }
}

/// Decodes an error body; a body that is not an [`ApiError`] is still reported with its status.
pub fn decode_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(err) => ClientError::Api(err),
        Err(_) => ClientError::Protocol(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(body).trim()
        )),
    }
}
