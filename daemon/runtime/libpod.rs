//! Podman's own API (libpod), for the one thing its Docker-compatible API cannot do here:
//! pull from a registry served over plain HTTP. dockerd treats registries on loopback as
//! insecure by itself; podman does not, and its `/images/create` has no way to say so, so a
//! task's image in ecrl's plain-HTTP registry would fail with "server gave HTTP response to
//! HTTPS client". `/libpod/images/pull` takes `tlsVerify=false`, and the same credentials
//! header as the Docker API.

use super::RegistryAuth;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Pulls `reference` through the engine at `engine` (`unix://PATH` or `tcp://HOST:PORT`, as
/// in `DOCKER_HOST`) without TLS, with `auth`'s credentials. Errors are the engine's words.
pub async fn pull_plain_http(
    engine: &str,
    reference: &str,
    auth: &RegistryAuth,
) -> Result<(), String> {
    let credentials = serde_json::json!({
        "username": auth.username,
        "password": auth.password,
        "serveraddress": auth.server,
    });
    let request = Request::post(format!(
        "/v4.0.0/libpod/images/pull?{}",
        pull_query(reference)
    ))
    .header(hyper::header::HOST, "podman")
    .header(
        "X-Registry-Auth",
        base64::engine::general_purpose::URL_SAFE.encode(credentials.to_string()),
    )
    .body(Empty::<Bytes>::new())
    .map_err(|e| e.to_string())?;

    let response = send(engine, request).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the engine's answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(format!("{status}: {message}"));
    }
    // A stream of JSON objects; a failed pull still answers 200, with an "error".
    for item in serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>() {
        let item = item.map_err(|e| format!("reading the engine's answer: {e}"))?;
        if let Some(error) = item["error"].as_str().filter(|e| !e.is_empty()) {
            return Err(error.to_string());
        }
    }
    Ok(())
}

fn pull_query(reference: &str) -> String {
    serde_urlencoded::to_string([
        ("reference", reference),
        ("tlsVerify", "false"),
        ("quiet", "true"),
    ])
    .unwrap_or_default()
}

/// One request on a new connection to the engine.
async fn send(
    engine: &str,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let unreachable = |e: std::io::Error| format!("cannot reach the engine at {engine}: {e}");
    if let Some(path) = engine.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(unreachable)?;
        exchange(TokioIo::new(stream), request).await
    } else if let Some(address) = engine.strip_prefix("tcp://") {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(unreachable)?;
        exchange(TokioIo::new(stream), request).await
    } else {
        Err(format!(
            "engine address {engine} is neither unix:// nor tcp://"
        ))
    }
}

async fn exchange<T>(
    io: T,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("talking to the engine: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("engine connection ended: {e}");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("talking to the engine: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pull_query_encodes_the_reference() {
        assert_eq!(
            pull_query("localhost:5000/team/app@sha256:ab"),
            "reference=localhost%3A5000%2Fteam%2Fapp%40sha256%3Aab&tlsVerify=false&quiet=true"
        );
    }
}
