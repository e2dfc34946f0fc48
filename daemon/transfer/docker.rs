//! The local Docker engine as a source and destination of images (`docker save` / `docker
//! load` over the Engine API), through bollard. `DOCKER_HOST` is honoured; the API version
//! is negotiated (Debian's dockerd speaks 1.41).

use super::TransferError;
use bollard::Docker;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

pub async fn connect() -> Result<Docker, TransferError> {
    let where_ =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |e: bollard::errors::Error| {
        TransferError::Docker(format!(
            "cannot reach the Docker engine at {where_}: {e}; is dockerd running (or DOCKER_HOST set)?"
        ))
    };
    let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// The image as `docker save` writes it.
pub async fn export(
    name: &str,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, TransferError> {
    let docker = connect().await?;
    docker.inspect_image(name).await.map_err(|e| {
        TransferError::NotFound(format!("the Docker engine has no image {name}: {e}"))
    })?;
    let name = name.to_string();
    Ok(docker
        .export_image(&name)
        .map(|r| r.map_err(std::io::Error::other)))
}

/// Loads a docker-archive into the engine (`docker load`).
pub async fn load(
    archive: impl Stream<Item = Bytes> + Send + 'static,
) -> Result<(), TransferError> {
    let docker = connect().await?;
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut progress = std::pin::pin!(docker.import_image_stream(options, archive, None));
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| TransferError::Docker(format!("docker load failed: {e}")))?;
        if let Some(error) = info.error {
            return Err(TransferError::Docker(format!(
                "docker load failed: {error}"
            )));
        }
    }
    Ok(())
}
