//! PostgreSQL connections of the metadata module: connecting (TLS with rustls), naming this
//! instance in the change log, and hearing other instances' commits.
//!
//! Several ecrld on one database keep each their in-memory index; the change log (see
//! `schema::migrate_pg`) says which repositories and which kinds of state another instance
//! changed, and a listener connection hears each commit (`LISTEN`), so the writer reloads just
//! those before its next batch.

use super::MetaError;
use postgres::fallible_iterator::FallibleIterator;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `host:port/database` of a connection URL (what status and errors show: never the
/// password or other parameters).
pub fn location(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(config) => server(&config),
        Err(_) => "(an invalid URL)".into(),
    }
}

fn server(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}:{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("postgres")
    )
}

/// A connection error that names the server but never the URL (it may hold a password).
fn unreachable(config: &postgres::Config, e: &postgres::Error) -> MetaError {
    let why = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            // The source says why (refused, timed out, TLS); the error's own text is generic.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    MetaError::Unavailable(format!(
        "cannot connect to PostgreSQL at {}: {why}",
        server(config)
    ))
}

/// Connects to PostgreSQL at `url`, over TLS when the URL's `sslmode` asks for it (`prefer`,
/// the default, uses TLS when the server offers it), trusting the system's roots and `ca`.
pub fn connect(
    url: &str,
    ca: Option<&Path>,
    instance: &str,
) -> Result<postgres::Client, MetaError> {
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
        MetaError::Db(format!("the PostgreSQL URL is not valid: {e}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("ecrld");
    let cas: Vec<std::path::PathBuf> = ca.map(Path::to_path_buf).into_iter().collect();
    let roots = crate::tls::client_roots(&cas).map_err(MetaError::Db)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| MetaError::Db(format!("TLS to PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let mut client = config.connect(tls).map_err(|e| unreachable(&config, &e))?;
    // Every change this connection writes is logged as this instance's, so the instance does
    // not reload what it wrote itself.
    client
        .batch_execute(&format!("SET ecrl.instance = '{instance}'"))
        .map_err(|e| MetaError::Db(super::db::pg_error(e).to_string()))?;
    Ok(client)
}

/// Listens for other instances' commits on its own connection and calls `heard` for each
/// (several commits heard at once call it once). Runs until `heard` returns false; a lost
/// connection is made again (and `heard` called, as commits may have been missed).
pub fn listen(
    url: String,
    ca: Option<std::path::PathBuf>,
    instance: String,
    heard: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metadata-listen".into())
        .spawn(move || loop {
            let mut client = match connect(&url, ca.as_deref(), &instance) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("cannot listen for other instances' changes: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if let Err(e) = client.batch_execute(&format!("LISTEN {}", super::schema::CHANGES_CHANNEL)) {
                tracing::warn!("cannot listen for other instances' changes: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            if !heard() {
                return;
            }
            loop {
                let mut notifications = client.notifications();
                let first = notifications.timeout_iter(Duration::from_secs(30)).next();
                match first {
                    Ok(Some(_)) => {
                        // Drain what else arrived: one reload covers them all.
                        while let Ok(Some(_)) = notifications.iter().next() {}
                        drop(notifications);
                        if !heard() {
                            return;
                        }
                    }
                    // Quiet for a while: check the connection is alive.
                    Ok(None) => {
                        drop(notifications);
                        if client.is_valid(Duration::from_secs(5)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "lost the PostgreSQL connection that hears other instances' changes: {e}"
                        );
                        break;
                    }
                }
            }
        })
        .map(|_| ())
}

/// A job only one instance runs at a time (garbage collection, lifecycle policies,
/// replication, sync jobs), held as a PostgreSQL session advisory lock on a connection of
/// its own: released when dropped, or by the server when this instance dies.
pub struct Exclusive {
    key: i64,
    release: Option<std::sync::mpsc::Sender<()>>,
    released: Option<std::sync::mpsc::Receiver<()>>,
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(released) = self.released.take() {
            RELEASING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.key, released);
        }
    }
}

/// Claims this instance let go of and is still releasing, by key: told when the lock is free.
/// A claim of the same key here waits for that first (the release runs on its own thread,
/// after the guard went), or it would find its own instance's last claim still holding it.
static RELEASING: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<i64, std::sync::mpsc::Receiver<()>>>,
> = std::sync::LazyLock::new(Default::default);

/// How long a claim waits for this instance's release of the same key.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the advisory lock `key` if no other session holds it: `None` when one does.
pub fn try_exclusive(
    url: String,
    ca: Option<std::path::PathBuf>,
    instance: String,
    key: i64,
) -> Result<Option<Exclusive>, MetaError> {
    let releasing = RELEASING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
    if let Some(released) = releasing {
        let _ = released.recv_timeout(RELEASE_WAIT);
    }
    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (released_tx, released_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("metadata-exclusive".into())
        .spawn(move || {
            let taken = connect(&url, ca.as_deref(), &instance).and_then(|mut client| {
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .map_err(|e| MetaError::Unavailable(super::db::pg_error(e).to_string()))?;
                Ok((client, row.get::<_, bool>(0)))
            });
            match taken {
                Ok((mut client, true)) => {
                    let _ = answer_tx.send(Ok(true));
                    // Held until the guard goes (its sender drops). Unlocked at once then,
                    // not whenever the server notices the session ended.
                    let _ = release_rx.recv();
                    let _ = client.query_one("SELECT pg_advisory_unlock($1)", &[&key]);
                    drop(client);
                    let _ = released_tx.send(());
                }
                Ok((_, false)) => {
                    let _ = answer_tx.send(Ok(false));
                }
                Err(e) => {
                    let _ = answer_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| MetaError::Db(e.to_string()))?;
    match answer_rx.recv() {
        Ok(Ok(true)) => Ok(Some(Exclusive {
            key,
            release: Some(release_tx),
            released: Some(released_rx),
        })),
        Ok(Ok(false)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(MetaError::Db("the advisory lock's thread stopped".into())),
    }
}
