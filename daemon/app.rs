//! The daemon's life: take the data dir, bind the control socket and the registry's ports
//! (plain HTTP, HTTPS or both), serve until a signal or a shutdown request, then drain and
//! clean up.

use crate::runtime::{docker::DockerRuntime, Runtime};
use crate::storage::keys::OsKeyring;
use crate::storage::StoreOptions;
use crate::tasks::{store::MetaTaskStore, Ctx, TaskManager};
use crate::{control, lock::DataDirLock, metadata::Metadata, registry, storage::BlobStore, tls};
use anyhow::Context;
use ecrl::config::DaemonConfig;
use ecrl::names::{Digest, RepoName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often an instance that shares its metadata looks again at what others changed for
/// the background jobs it runs (a replication another instance queued, a job it claimed).
pub const SHARED_POLL: Duration = Duration::from_secs(30);

/// Waits until this instance holds `job` (instances sharing one database take turns: one runs
/// it, the others wait to take over if it stops); `None` once shutdown begins.
pub async fn claim(
    state: &Arc<AppState>,
    job: crate::metadata::ExclusiveJob,
) -> Option<crate::metadata::Exclusive> {
    loop {
        match state.meta.exclusive(job).await {
            Ok(Some(claimed)) => return Some(claimed),
            Ok(None) => {}
            Err(e) => tracing::warn!(?job, "cannot claim a background job: {e}"),
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(SHARED_POLL) => {}
        }
    }
}

/// How long in-flight requests may run after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every server shares.
pub struct AppState {
    pub config: DaemonConfig,
    /// The plain-HTTP registry's address as bound; `None` when plain HTTP is off.
    pub registry_addr: Option<SocketAddr>,
    /// The HTTPS registry, when it is on.
    pub tls: Option<TlsState>,
    /// The Prometheus metrics listener's address as bound, when it is on.
    pub metrics_addr: Option<SocketAddr>,
    pub started: Instant,
    pub started_at: time::OffsetDateTime,
    pub store: BlobStore,
    pub meta: Arc<Metadata>,
    /// The container runtime tasks run on (and images load into).
    pub runtime: Arc<dyn Runtime>,
    pub tasks: TaskManager,
    /// The secret store tasks' `secrets` read from.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Registry authentication state (failure counts).
    pub auth: crate::auth::Guard,
    /// SigV4 signing keys the AWS API derived.
    pub aws_keys: crate::aws::sigv4::KeyCache,
    /// The policy of each repository's last StartLifecyclePolicyPreview (AWS API).
    aws_previews: std::sync::Mutex<HashMap<RepoName, String>>,
    /// [`AppState::registry_host`], once worked out.
    host: std::sync::OnceLock<String>,
    /// Serialises, per digest, "content is written and linked" against "content nobody
    /// links is removed", so a delete never removes a blob a concurrent push just stored.
    blob_locks: Box<[tokio::sync::Mutex<()>; 256]>,
    /// The registry's open upload sessions: where each is usable, and who holds how many.
    pub uploads: crate::uploads::Sessions,
    /// Remote registries: logins, sync jobs, replication.
    pub mirror: crate::mirror::Mirror,
    /// Blobs a deleted image freed, by repository, with their sizes and when: their content
    /// stays for `deleted_blob_grace`, so a push that found them there still completes.
    released: std::sync::Mutex<HashMap<(RepoName, Digest), (u64, Instant)>>,
    /// A move onto other backends (`ecrl storage migrate`) is running: one at a time.
    pub migrating: std::sync::atomic::AtomicBool,
    pub shutdown: CancellationToken,
}

/// The HTTPS listener as it runs.
pub struct TlsState {
    /// Its address as bound (port 0 resolved).
    pub addr: SocketAddr,
    /// ecrld's CA certificate, which clients trust, when the certificate is ecrld's own.
    pub ca_cert: Option<std::path::PathBuf>,
    /// The user's certificate file, when it is theirs.
    pub cert_file: Option<std::path::PathBuf>,
    /// The names the generated certificate is valid for.
    pub names: Vec<String>,
}

/// `host:port` as clients should name a registry address: `localhost` for loopback (where
/// docker allows plain HTTP, and every generated certificate is valid).
pub fn client_host(addr: SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// `arn:aws:ecs:REGION:ACCOUNT:RESOURCE`.
fn ecs_arn(region: &str, account: &str, resource: &str) -> String {
    format!("arn:aws:ecs:{region}:{account}:{resource}")
}

/// Pieces of text written one after the other (no string made to hold them).
struct Joined<'a>([&'a str; 6]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|piece| f.write_str(piece))
    }
}

impl AppState {
    /// `host:port` as clients should name the registry: the plain-HTTP one when it is on,
    /// else the HTTPS one.
    pub fn registry_host(&self) -> String {
        self.host().to_string()
    }

    /// [`AppState::registry_host`], borrowed.
    pub fn host(&self) -> &str {
        // The addresses are bound before the state is made: the answer never changes.
        self.host.get_or_init(|| {
            self.registry_addrs()
                .next()
                .map(client_host)
                .unwrap_or_default()
        })
    }

    /// Remembers the policy a lifecycle preview was started with (ECR's
    /// StartLifecyclePolicyPreview), for GetLifecyclePolicyPreview.
    pub fn remember_preview(&self, repo: &RepoName, policy: String) {
        /// Previews are few; a flood of them is forgotten rather than kept.
        const MAX_PREVIEWS: usize = 1024;
        if let Ok(mut previews) = self.aws_previews.lock() {
            if previews.len() >= MAX_PREVIEWS && !previews.contains_key(repo) {
                previews.clear();
            }
            previews.insert(repo.clone(), policy);
        }
    }

    /// The policy of the repository's last started preview.
    pub fn started_preview(&self, repo: &RepoName) -> Option<String> {
        self.aws_previews.lock().ok()?.get(repo).cloned()
    }

    /// Every address the registry listens on, plain HTTP first.
    pub fn registry_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.registry_addr
            .into_iter()
            .chain(self.tls.as_ref().map(|t| t.addr))
    }

    /// Every `host:port` under which clients name this registry.
    pub fn own_hosts(&self) -> ecrl::names::OwnHosts {
        let tls = self.tls.as_ref();
        ecrl::names::OwnHosts::new(
            self.registry_addr,
            tls.map(|t| t.addr),
            tls.map(|t| t.names.as_slice()).unwrap_or_default(),
        )
    }

    /// The registry as a policy resource (`arn:aws:ecr:REGION:ACCOUNT:registry`).
    pub fn registry_arn(&self) -> String {
        format!(
            "arn:aws:ecr:{}:{}:registry",
            self.config.region,
            self.meta.account_id()
        )
    }

    pub fn repository_arn(&self, name: &RepoName) -> String {
        self.repository_arn_of(name).to_string()
    }

    /// A repository's ARN, written where it goes (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`).
    pub fn repository_arn_of<'a>(&'a self, name: &'a RepoName) -> impl std::fmt::Display + 'a {
        self.arn_in_repositories(name.as_str())
    }

    /// What every repository's ARN begins with (`arn:aws:ecr:REGION:ACCOUNT:repository/`).
    pub fn repository_arn_prefix(&self) -> impl std::fmt::Display + '_ {
        self.arn_in_repositories("")
    }

    fn arn_in_repositories<'a>(&'a self, name: &'a str) -> Joined<'a> {
        Joined([
            "arn:aws:ecr:",
            &self.config.region,
            ":",
            self.meta.account_id(),
            ":repository/",
            name,
        ])
    }

    /// An ECS resource's ARN (`arn:aws:ecs:REGION:ACCOUNT:RESOURCE`, e.g. `cluster/NAME`);
    /// with `""`, what every one begins with.
    pub fn ecs_arn(&self, resource: &str) -> String {
        ecs_arn(&self.config.region, self.meta.account_id(), resource)
    }

    /// A repository's URI, as docker names it (`HOST:PORT/NAME`), written where it goes.
    pub fn repository_uri_of<'a>(&'a self, name: &'a RepoName) -> impl std::fmt::Display + 'a {
        Joined([self.host(), "/", name.as_str(), "", "", ""])
    }

    /// What every repository's URI begins with (`HOST:PORT/`).
    pub fn repository_uri_prefix(&self) -> impl std::fmt::Display + '_ {
        Joined([self.host(), "/", "", "", "", ""])
    }

    /// Held while a digest's content is stored and linked, or checked and removed.
    pub async fn lock_blob(&self, digest: &Digest) -> tokio::sync::MutexGuard<'_, ()> {
        self.blob_locks[digest.bytes()[0] as usize].lock().await
    }

    /// Takes note of blobs a deleted image (or a failed push) freed in `repo`, and removes
    /// their content after the grace period unless something links them again by then.
    ///
    /// The grace is for a push in progress: a client that asked (HEAD) whether the repository
    /// has a layer, heard yes, and sends the manifest after the image that held the layer was
    /// deleted. Its manifest finds the layer freed, and [`Self::relink_released`] takes it
    /// back.
    pub fn release(self: &Arc<Self>, repo: &RepoName, freed: Vec<(Digest, u64)>) {
        if freed.is_empty() {
            return;
        }
        let at = Instant::now();
        if let Ok(mut released) = self.released.lock() {
            for (digest, size) in &freed {
                released.insert((repo.clone(), *digest), (*size, at));
            }
        }
        let state = self.clone();
        let repo = repo.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(state.config.deleted_blob_grace) => {}
                // A daemon that stops removes unused content at its next start.
                _ = state.shutdown.cancelled() => return,
            }
            for (digest, _) in freed {
                let _guard = state.lock_blob(&digest).await;
                let key = (repo.clone(), digest);
                let ours =
                    state
                        .released
                        .lock()
                        .is_ok_and(|mut released| match released.get(&key) {
                            Some((_, when)) if *when == at => released.remove(&key).is_some(),
                            _ => false,
                        });
                if ours {
                    state.remove_if_unused(&digest).await;
                    if let Err(e) = state.meta.forget_released(Some(vec![digest])).await {
                        tracing::warn!(%digest, "cannot forget a freed blob: {e}");
                    }
                }
            }
        });
    }

    /// Links a blob a deleted image freed in `repo` back into it, while its content is still
    /// there. True when it did.
    pub async fn relink_released(&self, repo: &RepoName, digest: &Digest) -> bool {
        let _guard = self.lock_blob(digest).await;
        let key = (repo.clone(), *digest);
        let Some((size, _)) = self
            .released
            .lock()
            .ok()
            .and_then(|released| released.get(&key).copied())
        else {
            return false;
        };
        if !matches!(self.store.stat(digest).await, Ok(Some(_))) {
            return false;
        }
        if self.meta.link_blob(repo, *digest, size).await.is_err() {
            return false;
        }
        if let Ok(mut released) = self.released.lock() {
            released.remove(&key);
        }
        tracing::info!(%repo, %digest, "a push took back a blob a deleted image had freed");
        true
    }

    /// Gives up the wait for a blob a deleted image freed in `repo` (its content may go
    /// now). True when it was waiting.
    pub async fn take_released(&self, repo: &RepoName, digest: &Digest) -> bool {
        let _guard = self.lock_blob(digest).await;
        self.released
            .lock()
            .is_ok_and(|mut released| released.remove(&(repo.clone(), *digest)).is_some())
    }

    /// Removes a blob's content once no repository links it or holds it as a manifest.
    pub async fn collect_if_unused(&self, digest: &Digest) {
        let _guard = self.lock_blob(digest).await;
        self.remove_if_unused(digest).await;
    }

    /// Waits for `tick`'s next tick (see [`every`]); false once the daemon stops.
    pub async fn next_tick(&self, tick: &mut tokio::time::Interval) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tick.tick() => true,
        }
    }

    /// Whether a delete freed the blob in some repository and its grace is still running.
    pub fn release_pending(&self, digest: &Digest) -> bool {
        self.released
            .lock()
            .is_ok_and(|released| released.keys().any(|(_, d)| d == digest))
    }

    /// Removes a blob's content when nothing holds it, no delete's grace is running for it,
    /// and its file was last written at least `age` ago, all checked under its lock (what
    /// garbage collection does). True when it removed it.
    pub async fn remove_if_unused_since(&self, digest: &Digest, age: Duration) -> bool {
        let _guard = self.lock_blob(digest).await;
        if self.meta.read().blob_in_use(digest)
            || self.release_pending(digest)
            || self.meta.read().layers.values().any(|(d, _)| d == digest)
        {
            return false;
        }
        let old = match self.store.modified(digest).await {
            Ok(Some(written)) => std::time::SystemTime::now()
                .duration_since(written)
                .is_ok_and(|a| a >= age),
            _ => false,
        };
        if !old {
            return false;
        }
        match self.store.delete(digest).await {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!(%digest, "cannot remove unused blob: {e}");
                false
            }
        }
    }

    /// [`Self::collect_if_unused`] for a caller that holds the digest's lock.
    async fn remove_if_unused(&self, digest: &Digest) {
        if !self.meta.read().blob_in_use(digest) {
            if let Err(e) = self.store.delete(digest).await {
                tracing::warn!(%digest, "cannot remove unused blob: {e}");
            }
        }
    }
}

/// Ticks every `period`, the first a whole period from now; late ticks are not made up.
pub fn every(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
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
            upload_memory: config.upload_memory,
            read_cache: config
                .read_cache
                .unwrap_or_else(crate::storage::default_read_cache),
        };
        match &config.storage {
            // The keyring is asked over D-Bus with blocking calls.
            ecrl::config::StorageConfig::Filesystem => {
                tokio::task::block_in_place(|| BlobStore::open(&config.data_dir, &options))
                    .with_context(|| {
                        format!("opening the blob store in {}", config.data_dir.display())
                    })?
            }
            ecrl::config::StorageConfig::S3(s3) => {
                BlobStore::open_s3(&config.data_dir, s3, &options)
                    .await
                    .context("opening the blob store")?
            }
        }
    };
    let meta = {
        let store = store.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            Metadata::open_with(&config.metadata, &config.data_dir, move |digest| {
                handle.block_on(store.read_all(digest))
            })
        })
        .context("opening the metadata database")?
        .with_account_id(config.account_id.clone())
    };

    // With the metadata shared (PostgreSQL), other instances are pushing now: a blob one just
    // committed is not linked yet, and must not be taken for a leftover. Garbage collection
    // (under its lock, with the grace) removes what nothing holds instead.
    if !meta.shared() {
        // Blob files no repository holds (a daemon killed between a blob's commit and its link)
        // go before anything is served, so nothing can be linking them meanwhile.
        // So do those deleted images freed and a stop came before their grace ended.
        let in_use = meta.read().digests_in_use();
        let released = meta.released().await.unwrap_or_else(|e| {
            tracing::warn!("cannot read which blobs deletes freed: {e}");
            Default::default()
        });
        match tokio::task::block_in_place(|| store.remove_unlisted(&in_use, &released)) {
            Ok(sweep) => {
                if sweep.left > 0 {
                    tracing::warn!(
                        unheld = sweep.left,
                        blobs = sweep.blobs,
                        "most blobs in the store are held by no repository: metadata.db may not be \
                         the one these blobs belong to; leaving them"
                    );
                }
                if sweep.removed > 0 {
                    tracing::info!(
                        blobs = sweep.removed,
                        bytes = sweep.bytes,
                        "removed blobs no repository holds (freed by deleted images, or left by an \
                         interrupted push)"
                    );
                }
                if !released.is_empty() {
                    if let Err(e) = meta.forget_released(None).await {
                        tracing::warn!("cannot forget the freed blobs just removed: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("cannot sweep blobs no repository holds: {e}"),
        }
    }

    let open_files = registry::conn::raise_open_file_limit().unwrap_or_else(|e| {
        tracing::warn!("cannot read or raise the open-file limit: {e}");
        let unknown = 1024;
        registry::conn::OpenFiles {
            was: unknown,
            now: unknown,
        }
    });
    // TLS handshakes in progress hold descriptors before their connections count.
    let handshakes = if config.tls.is_some() {
        tls::MAX_HANDSHAKES as u64
    } else {
        0
    };
    let limits = registry::conn::Limits::within(&config.connections, open_files.now, handshakes);
    tracing::info!(
        open_files = open_files.now,
        raised_from = open_files.was,
        reserved = registry::conn::FD_RESERVE + handshakes,
        max_connections = limits.max_connections,
        max_per_client = limits.max_per_client,
        "registry connection limits"
    );
    let conns = registry::conn::Conns::new(limits);

    // Certificates before any port: a bad certificate or key stops start-up with nothing bound.
    let tls_identity = match &config.tls {
        Some(tls) => Some(tokio::task::block_in_place(|| tls::identity(tls))?),
        None => None,
    };
    let registry_listener = match &config.registry_addr {
        Some(addr) => Some(
            registry::conn::bind(addr)
                .await
                .with_context(|| format!("binding the registry to {addr}"))?,
        ),
        None => None,
    };
    let tls_listener = match (&config.tls, &tls_identity) {
        (Some(tls), Some(identity)) => {
            let tcp = registry::conn::bind(&tls.addr)
                .await
                .with_context(|| format!("binding the HTTPS registry to {}", tls.addr))?;
            let addr = tcp.local_addr()?;
            let server = tokio::task::block_in_place(|| identity.server_tls(addr))?;
            Some((tcp, server))
        }
        _ => None,
    };
    let metrics_listener = match &config.metrics_addr {
        Some(addr) => Some(
            registry::conn::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener to {addr}"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let task_endpoint = match config.task_endpoint {
        Some(addr) => match crate::task_endpoint::bind(&addr.to_string(), &config.data_dir).await {
            Ok(listener) => Some(listener),
            Err(why) => {
                tracing::warn!(
                    "the task metadata endpoint is off (tasks get no ECS_CONTAINER_METADATA_URI and no task role credentials): {why}"
                );
                None
            }
        },
        None => None,
    };
    let task_endpoint_addr = match &task_endpoint {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    // Removed when dropped, on every way out of this function.
    let (control_listener, _socket_file) = control::bind(&config.socket).await?;
    let registry_addr = match &registry_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let tls_state = match &tls_listener {
        Some((tcp, server)) => Some(TlsState {
            addr: tcp.local_addr()?,
            ca_cert: server.ca_cert.clone(),
            cert_file: server.cert_file.clone(),
            names: server.names.clone(),
        }),
        None => None,
    };

    let meta = Arc::new(meta);
    let runtime: Arc<dyn Runtime> = Arc::new(DockerRuntime::new());
    let registry_auth = {
        let meta = meta.clone();
        // The engine pulls from the first listener (plain HTTP when it is on).
        let plain_http = registry_addr.is_some();
        let server = registry_addr
            .or(tls_state.as_ref().map(|t| t.addr))
            .map(client_host)
            .unwrap_or_default();
        move || {
            let (token, _) = crate::auth::secret::issue(
                meta.token_secret(),
                "",
                "",
                crate::auth::secret::RUNNER_TOKEN_LIFETIME,
            );
            Some(crate::runtime::RegistryAuth {
                username: "AWS".into(),
                password: token.0,
                server: server.clone(),
                plain_http,
            })
        }
    };
    let secrets = Arc::new(crate::secrets::Secrets::new(
        meta.clone(),
        store.keys(),
        &config.region,
    ));
    let tasks = TaskManager::new(Ctx {
        secrets: secrets.clone(),
        endpoint: task_endpoint_addr.map(|addr| {
            Arc::new(crate::tasks::endpoint::Endpoint::new(
                addr,
                meta.token_secret(),
                &config.region,
            ))
        }),
        runtime: runtime.clone(),
        store: Arc::new(MetaTaskStore(meta.clone())),
        tasks_dir: config.data_dir.join("tasks"),
        arn_prefix: ecs_arn(&config.region, meta.account_id(), ""),
        registry_auth: Arc::new(registry_auth),
        shared: meta.backend() == "postgres",
    });

    let shutdown = CancellationToken::new();
    let state = Arc::new(AppState {
        registry_addr,
        metrics_addr,
        tls: tls_state,
        started: Instant::now(),
        started_at: time::OffsetDateTime::now_utc(),
        store,
        meta,
        runtime,
        tasks,
        secrets,
        auth: crate::auth::Guard::default(),
        aws_keys: Default::default(),
        aws_previews: Default::default(),
        host: Default::default(),
        blob_locks: Box::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        uploads: crate::uploads::Sessions::new(crate::uploads::Limits {
            per_holder: config.max_uploads_per_client,
            total: config.max_uploads,
        }),
        released: std::sync::Mutex::new(HashMap::new()),
        migrating: std::sync::atomic::AtomicBool::new(false),
        mirror: crate::mirror::Mirror::new(
            config.mirror.clone(),
            &ecrl::paths::default_config_dir(),
            Arc::new(OsKeyring),
        ),
        shutdown: shutdown.clone(),
        config,
    });
    if state.config.anonymous == ecrl::config::Anonymous::All {
        tracing::warn!(
            "registry authentication is off (--anonymous all): anyone who reaches the registry may push, pull and delete"
        );
    }
    // Before anything writes: events name the region, and are queued for the webhooks.
    crate::events::start(&state);
    tokio::spawn(housekeeping(state.clone()));
    tokio::spawn(crate::lifecycle::schedule(
        state.clone(),
        state.config.lifecycle_interval,
    ));
    tokio::spawn(crate::gc::schedule(state.clone(), state.config.gc_interval));
    crate::mirror::start(&state);
    crate::services::start(&state);
    tokio::spawn(conns.clone().trim_after_floods(shutdown.clone()));
    // Tasks a previous daemon left running are supervised again (once the engine answers).
    {
        let state = state.clone();
        tokio::spawn(async move { state.tasks.recover().await });
    }

    tokio::spawn(watch_signals(signals, shutdown.clone()));
    let mut servers = vec![(
        "control",
        tokio::spawn(control::serve(
            control_listener,
            state.clone(),
            shutdown.clone(),
        )),
    )];
    if let Some(listener) = registry_listener {
        servers.push((
            "registry",
            tokio::spawn(registry::serve(
                listener,
                state.clone(),
                conns.clone(),
                shutdown.clone(),
            )),
        ));
    }
    if let Some((tcp, server)) = tls_listener {
        let listener = tls::TlsListener::new(tcp, server.config, shutdown.clone())?;
        servers.push((
            "HTTPS registry",
            tokio::spawn(registry::serve(
                listener,
                state.clone(),
                conns.clone(),
                shutdown.clone(),
            )),
        ));
    }
    if let Some(listener) = task_endpoint {
        servers.push((
            "task endpoint",
            tokio::spawn(crate::task_endpoint::serve(
                listener,
                state.clone(),
                shutdown.clone(),
            )),
        ));
    }
    if let Some(listener) = metrics_listener {
        servers.push((
            "metrics",
            tokio::spawn(crate::metrics::serve(
                listener,
                state.clone(),
                shutdown.clone(),
            )),
        ));
    }
    let off = || "off".to_string();
    tracing::info!(
        version = ecrl::VERSION,
        pid = std::process::id(),
        socket = %state.config.socket.display(),
        registry = %registry_addr.map_or_else(off, |a| a.to_string()),
        https = %state.tls.as_ref().map_or_else(off, |t| t.addr.to_string()),
        metrics = %state.metrics_addr.map_or_else(off, |a| a.to_string()),
        task_endpoint = %task_endpoint_addr.map_or_else(off, |a| a.to_string()),
        data_dir = %state.config.data_dir.display(),
        "ecrld is ready"
    );
    if let Some(tls) = &state.tls {
        match (&tls.ca_cert, &tls.cert_file) {
            (Some(ca), _) => tracing::info!(
                ca = %ca.display(),
                names = %tls.names.join(","),
                "HTTPS with a certificate from ecrld's CA ('ecrl tls ca' shows how to trust it)"
            ),
            (None, Some(cert)) => {
                tracing::info!(cert = %cert.display(), "HTTPS with the given certificate")
            }
            (None, None) => {}
        }
    }

    // Any server failing is fatal: stop the others too.
    let mut failure = None;
    {
        let first_exit = futures_util::future::select_all(
            servers
                .iter_mut()
                .map(|(name, task)| Box::pin(async move { (*name, task.await) })),
        );
        tokio::select! {
            _ = shutdown.cancelled() => {}
            ((name, r), _, _) = first_exit => {
                failure = server_failure(name, r);
                shutdown.cancel();
            }
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        for (_, task) in servers.iter_mut() {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "requests still running after {}s; closing them",
            DRAIN_TIMEOUT.as_secs()
        );
        for (_, task) in &servers {
            task.abort();
        }
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

/// Periodic chores: record pull times, give back I/O buffers long unused, expire abandoned
/// uploads, prune old stopped tasks.
async fn housekeeping(state: Arc<AppState>) {
    let mut pulls = tokio::time::interval(Duration::from_secs(5));
    // Often enough that a session outlives its idle timeout by at most half of it.
    let every = (state.config.upload_idle_timeout / 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut uploads = tokio::time::interval(every);
    let mut tasks = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = pulls.tick() => {
                if let Err(e) = state.meta.flush_pulls().await {
                    tracing::warn!("cannot record pull times: {e}");
                }
                crate::storage::trim_buffers();
            }
            _ = tasks.tick() => {
                let n = state.tasks.prune(STOPPED_TASK_RETENTION).await;
                if n > 0 {
                    tracing::info!(count = n, "pruned stopped tasks");
                }
            }
            _ = uploads.tick() => {
                let expired = state
                    .store
                    .expire_uploads(state.config.upload_idle_timeout, state.config.upload_expiry)
                    .await;
                if !expired.is_empty() {
                    tracing::info!(count = expired.len(), "removed abandoned uploads");
                }
                // Sessions the store ended (expired, or failed midway) are no one's any more.
                state.uploads.retain(|id| state.store.upload_exists(id));
            }
        }
    }
}
