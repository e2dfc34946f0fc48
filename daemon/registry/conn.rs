//! The registry's connections: the HTTP/1.1 accept loop, and everything that bounds what a
//! client can hold by connecting.
//!
//! It owns the deadlines of a connection (its request head, the idle wait between requests,
//! a request body that stops arriving, a response the client stops reading), the caps on
//! open connections (global and per client address), and handing memory freed by closed
//! connections back to the system. It knows nothing of routes: each request goes to the
//! handler it is given, with [`Client`] in its extensions.
//!
//! hyper's own `header_read_timeout` is not used: since hyper 1.6 it restarts as soon as a
//! response is sent, so it bounds the idle wait of a keep-alive connection to the same
//! value as the head (hyper#3828), and it cannot be told apart from the time a half-sent
//! head is given. Instead each connection's task sleeps until the deadline of the phase the
//! connection is in ([`Phase`]), which the I/O wrapper and the service update as bytes and
//! requests go by.
//!
//! When a cap is reached, the connection that has waited longest without a request in
//! progress (still sending its head, or idle between requests) is closed to make room; the
//! new one is refused only when every connection is busy. Refusing at the cap instead would
//! lock the owner out of a loopback registry, where every client has the same address.

use super::framing::Scanner;
use super::Client;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What bounds the registry's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From a connection's first byte of a request (or its accept) to the end of the head.
    pub head_timeout: Duration,
    /// How long a request body may make no progress while the handler waits for it.
    pub body_timeout: Duration,
    /// How long a connection may wait, idle, for its next request.
    pub idle_timeout: Duration,
    /// How long a response may make no progress because the client does not read it.
    pub write_timeout: Duration,
    /// Connections open at once, over all listeners.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_client: usize,
}

impl Limits {
    /// The registry's deadlines (`registry.*_timeout`) with caps of a listener's own: what a
    /// side listener (metrics, the task endpoint) serves with.
    pub fn deadlines_of(
        config: &ecrl::config::ConnectionLimits,
        max_connections: usize,
        max_per_client: usize,
    ) -> Limits {
        Limits {
            head_timeout: config.head_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            max_connections,
            max_per_client,
        }
    }
}

/// Descriptors kept out of the connection cap for the blob store, the database, the control
/// socket and the container runtime's connections.
pub const FD_RESERVE: u64 = 256;

/// The open-file limit as ecrld runs with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now (the hard limit, when raising worked).
    pub now: u64,
}

/// Raises the soft limit on open files to the hard one: the default soft limit (often 1024)
/// would cap the registry's connections long before the machine's real limit does.
pub fn raise_open_file_limit() -> std::io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let was = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(OpenFiles {
            was,
            now: limit.rlim_cur,
        })
    }
}

impl Limits {
    /// The configured limits, with the connection caps lowered to what `open_files` leaves
    /// after [`FD_RESERVE`] (and `extra_reserve`: descriptors held outside the caps, such as
    /// TLS handshakes in progress).
    pub fn within(
        config: &ecrl::config::ConnectionLimits,
        open_files: u64,
        extra_reserve: u64,
    ) -> Limits {
        let room = open_files
            .saturating_sub(FD_RESERVE + extra_reserve)
            .max(16);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        let max_connections = config.max_connections.min(room);
        Limits::deadlines_of(
            config,
            max_connections,
            config.max_connections_per_client.min(max_connections),
        )
    }
}

/// Connections the kernel may queue for the registry before ecrld accepts them (the kernel
/// caps it at net.core.somaxconn). With tokio's default of 1024, a burst of connections
/// overflowed the queue, and a client whose connection attempt is dropped tries again only
/// after a second.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a registry listener (`host:port`) with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut failure = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    }))
}

/// A connection accepted by a listener the registry serves.
pub trait Listener: axum::serve::Listener<Addr = SocketAddr> {
    /// Whether its connections are HTTPS (challenges name the scheme).
    const HTTPS: bool;
}

impl Listener for tokio::net::TcpListener {
    const HTTPS: bool = false;
}

impl Listener for crate::tls::TlsListener {
    const HTTPS: bool = true;
}

/// Handles one request.
pub type Handler = Arc<
    dyn Fn(axum::extract::Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync,
>;

/// Milliseconds since the tracker's start, plus one (0 means "not set").
type Tick = u64;

/// Where a connection is in its life, as the deadlines see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request's head to be complete: since its accept, or since the first
    /// byte of the next request.
    Head,
    /// Between requests, nothing of the next one read yet.
    Idle,
    /// A request is in progress (its body and response have deadlines of their own).
    Busy,
}

/// One connection, as its task, its I/O and the tracker share it.
#[derive(Debug)]
struct ConnState {
    addr: IpAddr,
    busy: AtomicBool,
    /// When it last stopped being busy (or was accepted): the start of its idle deadline.
    since: AtomicU64,
    /// Counts its waiting periods, so that a queue entry of an earlier one is known stale.
    period: AtomicU64,
    /// When the head it waits for started (0: nothing of it read yet, so idle).
    head_at: AtomicU64,
    /// Since when its writes are blocked (0: they are not).
    write_stalled_at: AtomicU64,
    /// Still counted against the caps.
    counted: AtomicBool,
    /// Closed to make room for another connection.
    shed: AtomicBool,
    waker: AtomicWaker,
    /// Requests dispatched so far on it.
    requests: AtomicU64,
    /// The index of the first request whose head had both Content-Length and
    /// Transfer-Encoding (`u64::MAX`: none).
    ambiguous: AtomicU64,
}

impl ConnState {
    fn phase(&self) -> Phase {
        if self.busy.load(Relaxed) {
            Phase::Busy
        } else if self.head_at.load(Relaxed) != 0 {
            Phase::Head
        } else {
            Phase::Idle
        }
    }

    /// When the connection is to be closed if nothing changes, and why.
    fn deadline(&self, limits: &Limits) -> Option<(Tick, &'static str)> {
        let phase = match self.phase() {
            Phase::Busy => None,
            Phase::Head => Some((
                self.head_at.load(Relaxed) + millis(limits.head_timeout),
                "request head not complete",
            )),
            Phase::Idle => Some((
                self.since.load(Relaxed) + millis(limits.idle_timeout),
                "idle",
            )),
        };
        let write = match self.write_stalled_at.load(Relaxed) {
            0 => None,
            at => Some((
                at + millis(limits.write_timeout),
                "response not read by the client",
            )),
        };
        match (phase, write) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Whether it may be shed: not busy, and still in the waiting period `period` names.
    fn sheddable(&self, period: u64) -> bool {
        !self.busy.load(Relaxed)
            && self.period.load(Relaxed) == period
            && self.counted.load(Relaxed)
            && !self.shed.load(Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// A connection waiting for a request, in the order they started waiting.
#[derive(Debug)]
struct Waiting {
    period: u64,
    conn: Arc<ConnState>,
}

#[derive(Debug, Default)]
struct Queue {
    open: usize,
    waiting: VecDeque<Waiting>,
}

impl Queue {
    /// The connection that has waited longest and may be shed.
    fn oldest_sheddable(&mut self) -> Option<Arc<ConnState>> {
        while let Some(w) = self.waiting.pop_front() {
            if w.conn.sheddable(w.period) {
                return Some(w.conn);
            }
        }
        None
    }

    fn push(&mut self, conn: &Arc<ConnState>) {
        self.waiting.push_back(Waiting {
            period: conn.period.load(Relaxed),
            conn: conn.clone(),
        });
        // Entries go stale as connections become busy or close: drop them once they
        // outnumber the connections, so the queue stays proportional to what is open.
        if self.waiting.len() > 2 * self.open + 16 {
            self.waiting.retain(|w| w.conn.sheddable(w.period));
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    all: Queue,
    clients: HashMap<IpAddr, Queue>,
}

impl Table {
    fn release(&mut self, conn: &ConnState) {
        if !conn.counted.swap(false, Relaxed) {
            return;
        }
        self.all.open = self.all.open.saturating_sub(1);
        if let Some(client) = self.clients.get_mut(&conn.addr) {
            client.open = client.open.saturating_sub(1);
            if client.open == 0 {
                self.clients.remove(&conn.addr);
            }
        }
    }
}

/// What happened to a connection knocking at the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admitted,
    /// Admitted after closing a waiting connection.
    AdmittedShedding,
    /// Every connection is busy: refused.
    Refused,
}

/// Every open registry connection, over all listeners: the caps, and the choice of which
/// connection to close when one is reached.
#[derive(Debug)]
pub struct Conns {
    limits: Limits,
    start: Instant,
    table: Mutex<Table>,
    /// Connections whose task still runs (and so whose descriptor is still open), shed ones
    /// included until they are gone.
    live: AtomicUsize,
    /// Told when a connection's task ends while the accept loop may be waiting for one.
    gone: tokio::sync::Notify,
    /// Connections open at most since memory was last handed back.
    peak: AtomicUsize,
    shed: AtomicU64,
    refused: AtomicU64,
}

impl Conns {
    pub fn new(limits: Limits) -> Arc<Conns> {
        Arc::new(Conns {
            limits,
            start: Instant::now(),
            table: Mutex::new(Table::default()),
            live: AtomicUsize::new(0),
            gone: tokio::sync::Notify::new(),
            peak: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock().map(|t| t.all.open).unwrap_or(0)
    }

    fn now(&self) -> Tick {
        millis(self.start.elapsed()) + 1
    }

    fn instant(&self, tick: Tick) -> Instant {
        self.start + Duration::from_millis(tick.saturating_sub(1))
    }

    /// Counts a new connection from `addr`, closing the one that waited longest for a
    /// request when a cap is reached; `None` when every connection is busy.
    fn admit(&self, addr: IpAddr) -> (Option<Arc<ConnState>>, Admission) {
        let now = self.now();
        let Ok(mut table) = self.table.lock() else {
            return (None, Admission::Refused);
        };
        let table = &mut *table;
        let client_open = table.clients.get(&addr).map_or(0, |c| c.open);
        let mut admission = Admission::Admitted;
        if client_open >= self.limits.max_per_client
            || table.all.open >= self.limits.max_connections
        {
            let victim = if client_open >= self.limits.max_per_client {
                table
                    .clients
                    .get_mut(&addr)
                    .and_then(Queue::oldest_sheddable)
            } else {
                table.all.oldest_sheddable()
            };
            let Some(victim) = victim else {
                self.refused.fetch_add(1, Relaxed);
                return (None, Admission::Refused);
            };
            table.release(&victim);
            victim.shed.store(true, Relaxed);
            victim.waker.wake();
            self.shed.fetch_add(1, Relaxed);
            admission = Admission::AdmittedShedding;
        }
        let conn = Arc::new(ConnState {
            addr,
            busy: AtomicBool::new(false),
            since: AtomicU64::new(now),
            period: AtomicU64::new(0),
            head_at: AtomicU64::new(now),
            write_stalled_at: AtomicU64::new(0),
            counted: AtomicBool::new(true),
            shed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            requests: AtomicU64::new(0),
            ambiguous: AtomicU64::new(u64::MAX),
        });
        self.live.fetch_add(1, Relaxed);
        table.all.open += 1;
        table.all.push(&conn);
        let client = table.clients.entry(addr).or_default();
        client.open += 1;
        client.push(&conn);
        self.peak.fetch_max(table.all.open, Relaxed);
        (Some(conn), admission)
    }

    /// A connection finished a response: it waits for its next request from now on.
    fn idle(&self, conn: &Arc<ConnState>) {
        let now = self.now();
        conn.head_at.store(0, Relaxed);
        conn.since.store(now, Relaxed);
        conn.period.fetch_add(1, Relaxed);
        conn.busy.store(false, Relaxed);
        if let Ok(mut table) = self.table.lock() {
            if conn.counted.load(Relaxed) {
                table.all.push(conn);
                if let Some(client) = table.clients.get_mut(&conn.addr) {
                    client.push(conn);
                }
            }
        }
    }

    fn close(&self, conn: &ConnState) {
        if let Ok(mut table) = self.table.lock() {
            table.release(conn);
        }
        if self.live.fetch_sub(1, Relaxed) >= self.most_live() {
            self.gone.notify_waiters();
        }
    }

    /// Descriptors of connections that may be open at once: the cap, and a few shed
    /// connections whose tasks have not closed them yet (out of [`FD_RESERVE`]).
    fn most_live(&self) -> usize {
        const SHED_NOT_YET_CLOSED: usize = 64;
        self.limits.max_connections + SHED_NOT_YET_CLOSED
    }

    /// Waits until a connection may be accepted without more descriptors open than
    /// [`Self::most_live`]: when connections are shed faster than their tasks close them,
    /// accepting on would run out of descriptors (and the store and database with it).
    async fn room(&self) {
        loop {
            let gone = self.gone.notified();
            if self.live.load(Relaxed) < self.most_live() {
                return;
            }
            gone.await;
        }
    }

    /// Hands memory back to the system once many connections have closed: glibc keeps
    /// freed connection buffers in its heaps (in holes `free` cannot return), so after a
    /// flood of connections the daemon would keep hundreds of MiB it no longer uses.
    pub async fn trim_after_floods(self: Arc<Self>, shutdown: CancellationToken) {
        /// Connections that must have closed since the peak before memory is trimmed: below
        /// this, what a trim returns is not worth its time.
        const CLOSED_BEFORE_TRIM: usize = 512;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let open = self.open();
            let peak = self.peak.load(Relaxed);
            if peak.saturating_sub(open) < CLOSED_BEFORE_TRIM {
                continue;
            }
            self.peak.store(open, Relaxed);
            let started = Instant::now();
            let _ = tokio::task::spawn_blocking(trim_heap).await;
            tracing::debug!(
                closed = peak - open,
                open,
                ms = started.elapsed().as_millis() as u64,
                "returned freed connection memory to the system"
            );
        }
    }
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Serves the registry on a listener until `shutdown`, then lets requests in progress end
/// (idle connections close at once).
/// Serves a side listener (metrics, the task endpoint): the registry's deadlines, caps of its
/// own, one `handler` for every request.
pub async fn serve_side(
    listener: tokio::net::TcpListener,
    config: &ecrl::config::ConnectionLimits,
    max_connections: usize,
    max_per_client: usize,
    handler: Handler,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let conns = Conns::new(Limits::deadlines_of(
        config,
        max_connections,
        max_per_client,
    ));
    serve(listener, conns, handler, shutdown).await
}

pub async fn serve<L: Listener>(
    mut listener: L,
    conns: Arc<Conns>,
    handler: Handler,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let (io, peer) = tokio::select! {
            accepted = async {
                conns.room().await;
                listener.accept().await
            } => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (conn, admission) = conns.admit(peer.ip());
        if admission != Admission::Admitted
            && last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            last_warning = Some(Instant::now());
            tracing::warn!(
                open = conns.open(),
                max_connections = conns.limits.max_connections,
                max_per_client = conns.limits.max_per_client,
                shed = conns.shed.load(Relaxed),
                refused = conns.refused.load(Relaxed),
                "registry connection cap reached: closing connections that wait without a \
                 request (and refusing new ones when all are busy)"
            );
        }
        let Some(conn) = conn else {
            drop(io);
            continue;
        };
        let client = Client {
            addr: peer,
            https: L::HTTPS,
        };
        tasks.spawn(connection(
            io,
            client,
            conn,
            conns.clone(),
            handler.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Releases a connection's place under the caps however its task ends.
struct Counted {
    conns: Arc<Conns>,
    conn: Arc<ConnState>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.conns.close(&self.conn);
    }
}

async fn connection<I>(
    io: I,
    client: Client,
    conn: Arc<ConnState>,
    conns: Arc<Conns>,
    handler: Handler,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _counted = Counted {
        conns: conns.clone(),
        conn: conn.clone(),
    };
    let io = hyper_util::rt::TokioIo::new(Watched {
        inner: io,
        conns: conns.clone(),
        conn: conn.clone(),
        scanner: Some(Box::default()),
    });
    let service = {
        let conn = conn.clone();
        let conns = conns.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let index = conn.requests.fetch_add(1, Relaxed);
            conn.busy.store(true, Relaxed);
            let ambiguous = conn.ambiguous.load(Relaxed) == index;
            let done = ResponseDone {
                conns: conns.clone(),
                conn: conn.clone(),
            };
            let body_timeout = conns.limits.body_timeout;
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(client));
            let request = axum::extract::Request::from_parts(
                parts,
                axum::body::Body::new(TimedBody::new(body, body_timeout)),
            );
            let answer = (!ambiguous).then(|| handler(request));
            async move {
                let response = match answer {
                    Some(answer) => answer.await,
                    None => ambiguous_request(),
                };
                Ok::<_, std::convert::Infallible>(response.map(|body| DoneBody { body, done }))
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // See the module's header: the deadlines are this module's own.
    http.header_read_timeout(None).keep_alive(true);
    let mut serving = std::pin::pin!(http.serve_connection(io, service));
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    let mut draining = false;
    let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Tick> = None;
    let outcome = std::future::poll_fn(|cx| {
        conn.waker.register(cx.waker());
        if conn.shed.load(Relaxed) {
            return Poll::Ready(Err("closed to make room for a new connection"));
        }
        if !draining && cancelled.as_mut().poll(cx).is_ready() {
            draining = true;
            serving.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = serving.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(peer = %client.addr, "registry connection ended: {e}");
            }
            return Poll::Ready(Ok(()));
        }
        // hyper waits for a half-received head to finish; at shutdown it need not, once the
        // last response is out (hyper flushed it in the poll above, or its write is blocked).
        let flushed = conn.write_stalled_at.load(Relaxed) == 0;
        if draining && conn.phase() != Phase::Busy && flushed {
            return Poll::Ready(Ok(()));
        }
        loop {
            let Some((deadline, why)) = conn.deadline(&conns.limits) else {
                armed = None;
                return Poll::Pending;
            };
            if deadline <= conns.now() {
                return Poll::Ready(Err(why));
            }
            if armed != Some(deadline) {
                armed = Some(deadline);
                sleep.as_mut().reset(conns.instant(deadline).into());
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;
    if let Err(why) = outcome {
        tracing::debug!(peer = %client.addr, phase = ?conn.phase(), "registry connection closed: {why}");
    }
}

/// The 400 for a request with both `Content-Length` and `Transfer-Encoding`; the connection
/// closes after it (hyper does not keep such a connection alive).
fn ambiguous_request() -> Response {
    let mut response = super::RegistryError::bad_request(
        oci_spec::distribution::ErrorCode::Unsupported,
        "the request has both Content-Length and Transfer-Encoding, which frame its body in \
         two ways (RFC 9112 section 6.1): send one of them",
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response.headers_mut().insert(
        super::API_VERSION_HEADER,
        axum::http::HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// Marks the connection idle when its response has been sent (its body dropped).
struct ResponseDone {
    conns: Arc<Conns>,
    conn: Arc<ConnState>,
}

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.conns.idle(&self.conn);
    }
}

/// A response body that tells the connection when it is done.
struct DoneBody {
    body: axum::body::Body,
    #[allow(dead_code)] // held for its Drop
    done: ResponseDone,
}

impl http_body::Body for DoneBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The request body stopped arriving for longer than `registry.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {}s; closing the connection", .0.as_secs())]
pub struct BodyStalled(Duration);

/// A request body that fails once it has made no progress for a while, counted only while
/// the handler waits for it (not while it stores what it already has).
struct TimedBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            sleep: None,
            failed: false,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.sleep = None;
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.failed = true;
            return Poll::Ready(Some(Err(Box::new(BodyStalled(timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's I/O, watched: the first byte of a request starts its head deadline,
/// blocked writes start the write deadline, and the bytes read go through the framing
/// scanner.
struct Watched<I> {
    inner: I,
    conns: Arc<Conns>,
    conn: Arc<ConnState>,
    /// Dropped once it has nothing more to tell.
    scanner: Option<Box<Scanner>>,
}

impl<I> Watched<I> {
    /// Notes whether a write (or flush) is blocked by a client not reading.
    fn wrote<T>(&self, result: &Poll<T>) {
        let stalled = self.conn.write_stalled_at.load(Relaxed);
        match (result.is_pending(), stalled) {
            (true, 0) => self.conn.write_stalled_at.store(self.conns.now(), Relaxed),
            (false, at) if at != 0 => self.conn.write_stalled_at.store(0, Relaxed),
            _ => {}
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let conn = &this.conn;
            if !conn.busy.load(Relaxed) && conn.head_at.load(Relaxed) == 0 {
                conn.head_at.store(this.conns.now(), Relaxed);
            }
            if let Some(scanner) = &mut this.scanner {
                scanner.feed(read);
                if let Some(index) = scanner.first_ambiguous() {
                    conn.ambiguous.store(index, Relaxed);
                }
                if scanner.done() {
                    this.scanner = None;
                }
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_stay_below_the_open_file_limit() {
        let mut config = ecrl::config::ConnectionLimits {
            max_connections: 50_000,
            max_connections_per_client: 30_000,
            ..Default::default()
        };
        let l = Limits::within(&config, 20_000, 0);
        assert_eq!(l.max_connections, 20_000 - FD_RESERVE as usize);
        assert_eq!(l.max_per_client, l.max_connections);
        let l = Limits::within(&config, 1_024, 256);
        assert_eq!(l.max_connections, 512);
        config.max_connections = 100;
        assert_eq!(Limits::within(&config, 20_000, 0).max_connections, 100);
    }

    fn limits(max_connections: usize, max_per_client: usize) -> Limits {
        Limits {
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_connections,
            max_per_client,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room() {
        let conns = Conns::new(limits(3, 3));
        let (a, _) = conns.admit(ip(1));
        let (b, _) = conns.admit(ip(1));
        let (c, _) = conns.admit(ip(2));
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        // a is busy with a request: b has waited longest of the others.
        a.busy.store(true, Relaxed);
        let (d, admission) = conns.admit(ip(3));
        assert_eq!(admission, Admission::AdmittedShedding);
        assert!(b.shed.load(Relaxed) && !a.shed.load(Relaxed) && !c.shed.load(Relaxed));
        assert_eq!(conns.open(), 3);
        // a's request ends: it now waits since later than c, so c goes first.
        conns.idle(&a);
        let (_e, _) = conns.admit(ip(3));
        assert!(c.shed.load(Relaxed) && !a.shed.load(Relaxed));
        // Closing a shed connection's task later releases nothing twice.
        conns.close(&b);
        conns.close(&c);
        assert_eq!(conns.open(), 3);
        drop(d);
    }

    #[test]
    fn when_every_connection_is_busy_the_new_one_is_refused() {
        let conns = Conns::new(limits(2, 2));
        for _ in 0..2 {
            let (conn, _) = conns.admit(ip(1));
            conn.unwrap().busy.store(true, Relaxed);
        }
        let (conn, admission) = conns.admit(ip(2));
        assert!(conn.is_none());
        assert_eq!(admission, Admission::Refused);
        assert_eq!(conns.open(), 2);
    }

    #[test]
    fn the_per_client_cap_sheds_only_that_clients_connections() {
        let conns = Conns::new(limits(10, 2));
        let (other, _) = conns.admit(ip(9));
        let (first, _) = conns.admit(ip(1));
        let (_second, _) = conns.admit(ip(1));
        let (_third, admission) = conns.admit(ip(1));
        assert_eq!(admission, Admission::AdmittedShedding);
        assert!(first.unwrap().shed.load(Relaxed));
        assert!(!other.unwrap().shed.load(Relaxed));
        assert_eq!(conns.open(), 3);
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let conns = Conns::new(limits(10, 10));
        let (conn, _) = conns.admit(ip(1));
        let conn = conn.unwrap();
        let l = &conns.limits;
        let accepted = conn.head_at.load(Relaxed);
        assert_eq!(conn.phase(), Phase::Head);
        assert_eq!(conn.deadline(l).unwrap().0, accepted + 10_000);
        conn.busy.store(true, Relaxed);
        assert_eq!(conn.deadline(l), None);
        conn.write_stalled_at.store(5, Relaxed);
        assert_eq!(conn.deadline(l).unwrap().0, 60_005);
        conn.write_stalled_at.store(0, Relaxed);
        conns.idle(&conn);
        assert_eq!(conn.phase(), Phase::Idle);
        assert_eq!(
            conn.deadline(l).unwrap().0,
            conn.since.load(Relaxed) + 60_000
        );
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let conns = Conns::new(limits(100, 100));
        let (conn, _) = conns.admit(ip(1));
        let conn = conn.unwrap();
        for _ in 0..10_000 {
            conn.busy.store(true, Relaxed);
            conns.idle(&conn);
        }
        let table = conns.table.lock().unwrap();
        assert!(table.all.waiting.len() <= 2 * table.all.open + 17);
    }
}
