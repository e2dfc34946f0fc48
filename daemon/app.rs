//! The daemon's life: take the data dir, bind the control socket and the registry port,
//! serve until a signal or a shutdown request, then drain and clean up.

use crate::runtime::{docker::DockerRuntime, Runtime};
use crate::storage::keys::OsKeyring;
use crate::storage::{StoreOptions, UploadId};
use crate::tasks::{store::MetaTaskStore, Ctx, TaskManager};
use crate::{control, lock::DataDirLock, metadata::Metadata, registry, storage::BlobStore};
use anyhow::Context;
use ecrl::config::DaemonConfig;
use ecrl::names::{Digest, RepoName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests may run after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every server shares.
pub struct AppState {
    pub config: DaemonConfig,
    pub registry_addr: SocketAddr,
    pub started: Instant,
    pub started_at: time::OffsetDateTime,
    pub store: BlobStore,
    pub meta: Arc<Metadata>,
    /// The container runtime tasks run on (and images load into).
    pub runtime: Arc<dyn Runtime>,
    pub tasks: TaskManager,
    /// Serialises, per digest, "content is written and linked" against "content nobody
    /// links is removed", so a delete never removes a blob a concurrent push just stored.
    blob_locks: Box<[tokio::sync::Mutex<()>; 256]>,
    /// The repository each open upload session belongs to: a session is only usable there.
    upload_owners: std::sync::Mutex<HashMap<UploadId, RepoName>>,
    pub shutdown: CancellationToken,
}

impl AppState {
    /// `host:port` as clients should name the registry (`localhost` for loopback, where
    /// docker allows plain HTTP).
    pub fn registry_host(&self) -> String {
        let ip = self.registry_addr.ip();
        if ip.is_loopback() || ip.is_unspecified() {
            format!("localhost:{}", self.registry_addr.port())
        } else {
            self.registry_addr.to_string()
        }
    }

    pub fn repository_arn(&self, name: &RepoName) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{name}",
            self.config.region,
            self.meta.account_id()
        )
    }

    /// Held while a digest's content is stored and linked, or checked and removed.
    pub async fn lock_blob(&self, digest: &Digest) -> tokio::sync::MutexGuard<'_, ()> {
        self.blob_locks[digest.bytes()[0] as usize].lock().await
    }

    pub fn own_upload(&self, id: UploadId, repo: RepoName) {
        if let Ok(mut owners) = self.upload_owners.lock() {
            owners.insert(id, repo);
        }
    }

    /// True when the upload session was opened in `repo`.
    pub fn owns_upload(&self, id: &UploadId, repo: &RepoName) -> bool {
        self.upload_owners
            .lock()
            .is_ok_and(|owners| owners.get(id) == Some(repo))
    }

    pub fn disown_upload(&self, id: &UploadId) {
        if let Ok(mut owners) = self.upload_owners.lock() {
            owners.remove(id);
        }
    }

    /// Removes a blob's content once no repository links it or holds it as a manifest.
    pub async fn collect_if_unused(&self, digest: &Digest) {
        let _guard = self.lock_blob(digest).await;
        if !self.meta.read().blob_in_use(digest) {
            if let Err(e) = self.store.delete(digest).await {
                tracing::warn!(%digest, "cannot remove unused blob: {e}");
            }
        }
    }
}

pub fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: DaemonConfig) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once the socket answers must mean a clean stop,
    // never the default action.
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
    );
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let _lock = DataDirLock::acquire(&config.data_dir, &config.socket)?;
    let store = {
        let options = StoreOptions {
            encryption: config.encryption,
            key_dir: ecrl::paths::default_config_dir().join("keys"),
            keyring: &OsKeyring,
        };
        // The keyring is asked over D-Bus with blocking calls.
        tokio::task::block_in_place(|| BlobStore::open(&config.data_dir, &options))
            .with_context(|| format!("opening the blob store in {}", config.data_dir.display()))?
    };
    let meta = {
        let store = store.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            Metadata::open(&config.data_dir, |digest| {
                handle.block_on(store.read_all(digest))
            })
        })
        .context("opening the metadata database")?
    };

    let registry_listener = TcpListener::bind(&config.registry_addr)
        .await
        .with_context(|| format!("binding the registry to {}", config.registry_addr))?;
    // Removed when dropped, on every way out of this function.
    let (control_listener, _socket_file) = control::bind(&config.socket).await?;
    let registry_addr = registry_listener.local_addr()?;

    let meta = Arc::new(meta);
    let runtime: Arc<dyn Runtime> = Arc::new(DockerRuntime::new());
    let tasks = TaskManager::new(Ctx {
        runtime: runtime.clone(),
        store: Arc::new(MetaTaskStore(meta.clone())),
        tasks_dir: config.data_dir.join("tasks"),
        arn_prefix: format!("arn:aws:ecs:{}:{}:", config.region, meta.account_id()),
    });

    let shutdown = CancellationToken::new();
    let state = Arc::new(AppState {
        registry_addr,
        started: Instant::now(),
        started_at: time::OffsetDateTime::now_utc(),
        store,
        meta,
        runtime,
        tasks,
        blob_locks: Box::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        upload_owners: std::sync::Mutex::new(HashMap::new()),
        shutdown: shutdown.clone(),
        config,
    });
    tokio::spawn(housekeeping(state.clone()));
    // Tasks a previous daemon left running are supervised again (once the engine answers).
    {
        let state = state.clone();
        tokio::spawn(async move { state.tasks.recover().await });
    }

    tokio::spawn(watch_signals(signals, shutdown.clone()));
    let mut control_task = tokio::spawn(control::serve(
        control_listener,
        state.clone(),
        shutdown.clone(),
    ));
    let mut registry_task = tokio::spawn(registry::serve(
        registry_listener,
        state.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        version = ecrl::VERSION,
        pid = std::process::id(),
        socket = %state.config.socket.display(),
        registry = %registry_addr,
        data_dir = %state.config.data_dir.display(),
        "ecrld is ready"
    );

    // Either server failing is fatal: stop the other one too.
    let mut failure = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut control_task => { failure = server_failure("control", r); shutdown.cancel(); }
        r = &mut registry_task => { failure = server_failure("registry", r); shutdown.cancel(); }
    }
    tracing::info!("shutting down: draining in-flight requests");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        if !control_task.is_finished() {
            let _ = (&mut control_task).await;
        }
        if !registry_task.is_finished() {
            let _ = (&mut registry_task).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "requests still running after {}s; closing them",
            DRAIN_TIMEOUT.as_secs()
        );
        control_task.abort();
        registry_task.abort();
    }
    if let Err(e) = state.meta.flush_pulls().await {
        tracing::warn!("cannot record pull times: {e}");
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("ecrld stopped");
            Ok(())
        }
    }
}

fn server_failure(
    name: &str,
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(anyhow::Error::new(e).context(format!("the {name} server failed"))),
        Err(e) => Some(anyhow::anyhow!("the {name} server stopped: {e}")),
    }
}

async fn watch_signals(
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

/// How long a stopped task's record and logs are kept.
const STOPPED_TASK_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Periodic chores: record pull times, expire abandoned uploads, prune old stopped tasks.
async fn housekeeping(state: Arc<AppState>) {
    let mut pulls = tokio::time::interval(Duration::from_secs(5));
    let mut uploads = tokio::time::interval(Duration::from_secs(60));
    let mut tasks = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = pulls.tick() => {
                if let Err(e) = state.meta.flush_pulls().await {
                    tracing::warn!("cannot record pull times: {e}");
                }
            }
            _ = tasks.tick() => {
                let n = state.tasks.prune(STOPPED_TASK_RETENTION).await;
                if n > 0 {
                    tracing::info!(count = n, "pruned stopped tasks");
                }
            }
            _ = uploads.tick() => {
                let n = state.store.expire_uploads(state.config.upload_expiry).await;
                if n > 0 {
                    tracing::info!(count = n, "removed abandoned uploads");
                }
                let owned: Vec<UploadId> = match state.upload_owners.lock() {
                    Ok(owners) => owners.keys().copied().collect(),
                    Err(_) => Vec::new(),
                };
                for id in owned {
                    if state.store.upload_size(&id).await.is_err() {
                        state.disown_upload(&id);
                    }
                }
            }
        }
    }
}
