//! The registry: OCI Distribution v1.1 / Docker Registry HTTP API V2 over TCP.
//!
//! It parses names, digests and ranges at the edge and calls storage and metadata; it never
//! builds file paths itself.

use crate::app::AppState;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const API_VERSION_HEADER: HeaderName = HeaderName::from_static("docker-distribution-api-version");

pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v2/", get(base))
        .with_state(state)
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                r.headers_mut()
                    .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
                r
            },
        ));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn base() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(serde_json::json!({})))
}
