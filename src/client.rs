//! The control-socket client: one generic call for every [`Endpoint`].

use crate::api::transfer::StreamEndpoint;
use crate::api::{ApiError, Endpoint, Method, API_VERSION, API_VERSION_HEADER};
use http_body_util::combinators::BoxBody;
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

    /// Sends a request and returns the response head with its body unread.
    async fn send<E: Endpoint>(
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
        let body = Full::new(body).map_err(|never| match never {}).boxed();
        self.request(E::METHOD.as_str(), uri, "application/json", body)
            .await
    }

    /// Opens a stream: the request in the query string, `body` as the request body. A
    /// response that is not a success is returned as the daemon's error.
    pub async fn stream<E: StreamEndpoint>(
        &self,
        request: &E::Request,
        body: BoxBody<Bytes, io::Error>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let query = serde_urlencoded::to_string(request)
            .map_err(|e| ClientError::Protocol(format!("encoding request: {e}")))?;
        let uri = format!("{}?{query}", E::PATH);
        let response = self
            .request("POST", uri, "application/octet-stream", body)
            .await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.connect_error(e.to_string()))?
            .to_bytes();
        Err(decode_error(status, &body))
    }

    async fn request(
        &self,
        method: &str,
        uri: String,
        content_type: &str,
        body: BoxBody<Bytes, io::Error>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, "ecrld")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
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

/// A request body with nothing in it, for streams whose request is all in the query.
pub fn empty_body() -> BoxBody<Bytes, io::Error> {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Newline-delimited JSON values read from a response body.
pub struct JsonLines {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
    done: bool,
}

impl JsonLines {
    pub fn new(body: hyper::body::Incoming) -> Self {
        JsonLines {
            body,
            buffer: Vec::new(),
            done: false,
        }
    }

    /// The next value, or `None` at the end of the stream.
    pub async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Option<Result<T, ClientError>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| {
                    ClientError::Protocol(format!(
                        "bad event line {:?}: {e}",
                        String::from_utf8_lossy(&line)
                    ))
                }));
            }
            if self.done {
                if self.buffer.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                let line = std::mem::take(&mut self.buffer);
                return Some(
                    serde_json::from_slice(&line)
                        .map_err(|e| ClientError::Protocol(format!("bad last event line: {e}"))),
                );
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ClientError::Protocol(format!(
                        "the daemon's stream broke off: {e}"
                    ))));
                }
                None => self.done = true,
            }
        }
    }
}
