//! Upload sessions of the object-store backend, kept in the bucket so that any ecrld serving
//! it can continue one: load balancers do not stick, and a chunked upload may start on one
//! instance and finish on another. Must not call the registry or metadata.
//!
//! A session is `uploads/<uuid>/state` ([`State`]: the multipart upload's id and its parts'
//! ETags, the content length so far, the SHA-256 midstate, the sealer's key id and nonce
//! prefix) and `uploads/<uuid>/tail.<length>`: the bytes received but not yet sent as a part
//! (S3 parts are at least 5 MiB but the last), sealed aside when the store is encrypted. Each
//! request that adds to a session loads both, streams its body into parts of [`PART_PLAIN`]
//! bytes sent while the body still arrives (at most [`IN_FLIGHT`] at once), then writes the
//! new tail and the new state; the tail is named by the length it ends at, so a crash
//! between the two writes leaves the old state with its own old tail. Each byte is hashed
//! once, as it arrives, and sealed once, into the part that carries it.
//!
//! A segment's nonce must never seal two different plaintexts. A request that sends parts
//! therefore first marks the state `busy`; a request that finds a session busy (its last
//! request died midway, or runs elsewhere right now) ends it rather than seal those segments
//! again. Small uploads (up to a part) are one PUT of the data object at the commit.
//!
//! Memory: a request that adds to a session reserves what it may hold (its unsent part, and
//! the parts in flight) in the store's `upload_memory` before it reads its body, and waits a
//! while for room when there is none. Between requests a session holds nothing in memory.

use super::crypt::{self, Sealer, PLAIN};
use super::midstate::{hex, unhex, Midstate, Saved};
use super::s3::S3Store;
use super::{StoreError, UploadId};
use bytes::Bytes;
use ecrl::names::Digest;
use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Segments in a part: 81 sealed segments are just over 5 MiB, S3's smallest part.
const PART_SEGMENTS: usize = 81;
/// Plaintext bytes in a part (plain stores cut parts at the same length, also over 5 MiB).
pub const PART_PLAIN: usize = PART_SEGMENTS * PLAIN;
/// Parts of one request on their way to the store at once.
const IN_FLIGHT: usize = 2;
/// S3 numbers parts 1 to 10000.
const MAX_PARTS: usize = 10_000;
/// What a request that adds to a session may hold: its unsent part (and the chunk that
/// overfills it), and the parts in flight.
const RESERVE: usize = (IN_FLIGHT + 1) * (PART_SEGMENTS * crypt::SEGMENT) + (1 << 20);
/// Tails kept in memory between requests (each at most a part): see [`Uploads`].
const TAILS_KEPT: usize = 4;
/// How long a request waits for upload memory before it is refused.
const MEMORY_WAIT: Duration = Duration::from_secs(30);
/// A long request rewrites its (busy) state this often, so that other instances do not
/// expire a session that is being written.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// An upload session as the bucket keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The state format's version (1).
    pub v: u32,
    /// Whose session it is, as the caller said at its start (the registry: a repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When it was opened (seconds since the Unix epoch).
    pub opened: u64,
    /// The data object it becomes (a v4 UUID).
    pub data: String,
    /// Content bytes received.
    pub size: u64,
    pub hash: Saved,
    /// The multipart upload, once a part was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// The ETags of the parts sent, in order.
    #[serde(default)]
    pub parts: Vec<String>,
    /// Content bytes received but not sent as a part (in the tail object).
    pub tail: u64,
    /// The sealer of an encrypted store: key id and nonce prefix, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A request was sending parts when this was written.
    #[serde(default)]
    pub busy: bool,
}

impl State {
    /// The state's JSON, checked against itself: a state that does not parse, or whose
    /// numbers disagree, is no session.
    pub fn parse(bytes: &[u8]) -> Option<State> {
        let state: State = serde_json::from_slice(bytes).ok()?;
        let parts_len = state.parts.len() as u64 * PART_PLAIN as u64;
        let ok = state.v == 1
            && uuid::Uuid::parse_str(&state.data).is_ok()
            && Midstate::from_saved(&state.hash).is_some_and(|m| m.len() == state.size)
            && parts_len + state.tail == state.size
            && state.tail <= PART_PLAIN as u64
            && state.key.is_some() == state.prefix.is_some()
            && (state.parts.is_empty() || state.multipart.is_some());
        ok.then_some(state)
    }
}

/// This instance's side of the sessions: which it knows, one request at a time each, and
/// the upload memory in use.
pub struct Uploads {
    local: Mutex<HashMap<UploadId, Local>>,
    /// The last tails this instance saved, by session and the length they end at (the
    /// newest last): the next request to a session mostly comes here again, and then need
    /// not read back what it just wrote. A tail object never changes once a state names it
    /// (lengths only grow), so one found here for the length the session's state says is
    /// that tail. At most [`TAILS_KEPT`].
    tails: Mutex<std::collections::VecDeque<(UploadId, u64, Vec<u8>)>>,
    held: AtomicUsize,
    limit: usize,
    /// How long a request waits for memory ([`MEMORY_WAIT`]; shorter in tests).
    wait: Duration,
}

struct Local {
    lock: Arc<tokio::sync::Mutex<()>>,
    opened: Instant,
    touched: Instant,
}

/// Upload memory reserved by one request, given back when it ends.
struct Reservation<'a> {
    held: &'a AtomicUsize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(RESERVE, Ordering::AcqRel);
    }
}

impl Uploads {
    pub fn new(limit: usize) -> Uploads {
        Uploads {
            local: Mutex::default(),
            tails: Mutex::default(),
            held: AtomicUsize::new(0),
            limit,
            wait: MEMORY_WAIT,
        }
    }

    /// The session's lock on this instance (known from now on).
    fn lock_for(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<()>> {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let entry = local.entry(*id).or_insert_with(|| Local {
            lock: Arc::default(),
            opened: now,
            touched: now,
        });
        entry.touched = now;
        entry.lock.clone()
    }

    /// The session's lock, when this instance knows the session.
    fn existing_lock(&self, id: &UploadId) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.get(id).map(|l| l.lock.clone())
    }

    fn touch(&self, id: &UploadId) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = local.get_mut(id) {
            entry.touched = Instant::now();
        }
    }

    fn forget(&self, id: &UploadId) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.remove(id);
        drop(local);
        self.take_tail(id, None);
    }

    /// Keeps the tail a request just saved (the oldest kept goes when there are too many).
    fn keep_tail(&self, id: &UploadId, size: u64, tail: Vec<u8>) {
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        tails.retain(|(kept, _, _)| kept != id);
        if tails.len() >= TAILS_KEPT {
            tails.pop_front();
        }
        tails.push_back((*id, size, tail));
    }

    /// The session's kept tail when it ends at `size` (any with `None`), taken out.
    fn take_tail(&self, id: &UploadId, size: Option<u64>) -> Option<Vec<u8>> {
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        let at = tails.iter().position(|(kept, _, _)| kept == id)?;
        let (_, kept_size, tail) = tails.remove(at)?;
        (size.is_none_or(|s| s == kept_size)).then_some(tail)
    }

    pub fn exists(&self, id: &UploadId) -> bool {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.contains_key(id)
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Reserves what a request may hold, waiting up to [`MEMORY_WAIT`] for room. A lone
    /// request always gets it (a limit below one request's need still lets uploads run one
    /// at a time).
    async fn reserve(&self) -> Result<Reservation<'_>, StoreError> {
        let started = Instant::now();
        loop {
            let held = self.held.load(Ordering::Acquire);
            let fits = held == 0 || held.saturating_add(RESERVE) <= self.limit;
            if fits
                && self
                    .held
                    .compare_exchange(held, held + RESERVE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Ok(Reservation { held: &self.held });
            }
            if !fits && started.elapsed() > self.wait {
                return Err(StoreError::Busy { held });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn damaged(why: &str) -> StoreError {
    StoreError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("an upload session in the object store is damaged: {why}"),
    ))
}

/// How a session's commit ended.
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
    /// This upload's content is the one stored (the store did not hold it before).
    pub new: bool,
}

impl S3Store {
    fn state_key(&self, id: &UploadId) -> object_store::path::Path {
        self.key(&format!("uploads/{id}/state"))
    }

    fn tail_key(&self, id: &UploadId, size: u64) -> object_store::path::Path {
        self.key(&format!("uploads/{id}/tail.{size}"))
    }

    /// What bytes sealed aside for a session's tail are bound to.
    fn tail_context(id: &UploadId, size: u64) -> Vec<u8> {
        format!("upload-tail:{id}:{size}").into_bytes()
    }

    async fn put_state(&self, id: &UploadId, state: &State) -> Result<(), StoreError> {
        let text = serde_json::to_vec(state).map_err(io::Error::other)?;
        self.client
            .put(&self.state_key(id), PutPayload::from(text))
            .await
            .map_err(|e| StoreError::Unavailable(self.unavailable(e)))?;
        Ok(())
    }

    async fn load_state(&self, id: &UploadId) -> Result<State, StoreError> {
        let got = self
            .client
            .get(&self.state_key(id))
            .await
            .map_err(|e| self.store_error(e))?;
        let bytes = got.bytes().await.map_err(|e| self.store_error(e))?;
        State::parse(&bytes).ok_or_else(|| {
            tracing::warn!(upload = %id, "an upload session's state in the object store is damaged: ignoring it");
            StoreError::UploadNotFound
        })
    }

    /// The session's unsent bytes, in plaintext, with room for a part more.
    async fn load_tail(&self, id: &UploadId, state: &State) -> Result<Vec<u8>, StoreError> {
        if let Some(tail) = self.uploads.take_tail(id, Some(state.size)) {
            if tail.len() as u64 == state.tail {
                return Ok(tail);
            }
        }
        let mut tail = Vec::with_capacity(PART_PLAIN + (1 << 16));
        if state.tail == 0 {
            return Ok(tail);
        }
        let bytes = self
            .client
            .get(&self.tail_key(id, state.size))
            .await
            .map_err(|e| self.store_error(e))?
            .bytes()
            .await
            .map_err(|e| self.store_error(e))?;
        match &self.keys {
            Some(keys) => tail.extend_from_slice(
                &keys
                    .open_aside(&Self::tail_context(id, state.size), &bytes)
                    .map_err(StoreError::Io)?,
            ),
            None => tail.extend_from_slice(&bytes),
        }
        if tail.len() as u64 != state.tail {
            return Err(damaged("its tail is not the length its state says"));
        }
        Ok(tail)
    }

    fn sealer_of(&self, state: &State) -> Result<Option<Arc<Sealer>>, StoreError> {
        let Some(keys) = &self.keys else {
            return match state.key {
                None => Ok(None),
                Some(_) => Err(damaged("it is sealed but the store is not encrypted")),
            };
        };
        let (Some(key), Some(prefix)) = (&state.key, &state.prefix) else {
            return Err(damaged("the store is encrypted but it names no key"));
        };
        let key = key.parse().map_err(|()| damaged("its key id is not one"))?;
        let prefix: [u8; 8] = unhex(prefix)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| damaged("its nonce prefix is not 8 bytes"))?;
        Ok(Some(Arc::new(keys.resume_sealer(key, prefix)?)))
    }

    /// Opens a session; `label` says whose it is (another instance checks it before it
    /// continues the session for someone).
    pub async fn upload_start(&self, label: Option<&str>) -> Result<UploadId, StoreError> {
        let id = UploadId(uuid::Uuid::new_v4());
        let (key, prefix) = match &self.keys {
            Some(keys) => {
                let sealer = keys.sealer()?;
                (
                    Some(sealer.key_id().to_string()),
                    Some(hex(&sealer.prefix())),
                )
            }
            None => (None, None),
        };
        let state = State {
            v: 1,
            label: label.map(str::to_string),
            opened: unix_now(),
            data: uuid::Uuid::new_v4().to_string(),
            size: 0,
            hash: Midstate::new().to_saved(),
            multipart: None,
            parts: Vec::new(),
            tail: 0,
            key,
            prefix,
            busy: false,
        };
        self.put_state(&id, &state).await?;
        self.uploads.lock_for(&id);
        Ok(id)
    }

    /// Whose session `id` is (its label), when the bucket holds it; this instance then knows
    /// it. `None` for a session that has no label.
    pub async fn upload_label(&self, id: &UploadId) -> Result<Option<String>, StoreError> {
        let state = self.load_state(id).await?;
        if state.busy {
            return Err(StoreError::UploadNotFound);
        }
        self.uploads.lock_for(id);
        Ok(state.label)
    }

    pub fn upload_exists(&self, id: &UploadId) -> bool {
        self.uploads.exists(id)
    }

    pub fn upload_memory_held(&self) -> usize {
        self.uploads.held()
    }

    /// Loads a session for a request, ending this instance's knowledge of it when the bucket
    /// no longer has it (finished or cancelled elsewhere, expired, or left busy by a request
    /// that died).
    async fn take_up(&self, id: &UploadId) -> Result<State, StoreError> {
        match self.load_state(id).await {
            Ok(state) if state.busy => {
                self.uploads.forget(id);
                Err(StoreError::UploadNotFound)
            }
            Ok(state) => Ok(state),
            Err(StoreError::UploadNotFound) => {
                self.uploads.forget(id);
                Err(StoreError::UploadNotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one part: seals it (when the store is encrypted) on a blocking thread, then
    /// uploads it. `first` is its first segment's index.
    fn send_part(
        &self,
        state: &State,
        sealer: Option<Arc<Sealer>>,
        idx: usize,
        plain: Vec<u8>,
        last: bool,
    ) -> impl std::future::Future<Output = Result<PartId, StoreError>> + Send + 'static {
        let client = self.client.clone();
        let data = self.data_key(&state.data);
        let multipart = state.multipart.clone().unwrap_or_default();
        let unavailable = self.unavailable("");
        async move {
            let body = seal(sealer, idx * PART_SEGMENTS, plain, last).await?;
            client
                .put_part(&data, &multipart, idx, PutPayload::from(body))
                .await
                .map_err(|e| {
                    StoreError::Unavailable(super::s3::Unavailable {
                        message: e.to_string(),
                        ..unavailable
                    })
                })
        }
    }

    /// Appends a request body to a session (with `offset`, where it must start). Returns its
    /// new length. A body that fails midway ends the session.
    pub async fn upload_write<S, E>(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        body: S,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let lock = self.uploads.lock_for(id);
        let _one = lock.lock().await;
        let result = self.write_locked(id, offset, body).await;
        self.uploads.touch(id);
        result
    }

    async fn write_locked<S, E>(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        body: S,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut state = self.take_up(id).await?;
        if let Some(offset) = offset {
            if offset != state.size {
                return Err(StoreError::RangeMismatch {
                    offset,
                    size: state.size,
                });
            }
        }
        let _memory = self.uploads.reserve().await?;
        let old_size = state.size;
        let mut pending = self.load_tail(id, &state).await?;
        let mut hasher =
            Midstate::from_saved(&state.hash).ok_or_else(|| damaged("its hash state"))?;
        let sealer = self.sealer_of(&state)?;
        let mut inflight = FuturesOrdered::new();
        let mut busy_at: Option<Instant> = None;
        let mut failed: Option<StoreError> = None;
        let mut body = std::pin::pin!(body);
        'body: while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    failed = Some(StoreError::Body(e.to_string()));
                    break;
                }
            };
            hasher.update(&chunk);
            state.size += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            // A part goes only once more bytes follow it: the blob's last segment is sealed
            // as the last, at the commit.
            while pending.len() > PART_PLAIN {
                let idx = state.parts.len() + inflight.len();
                if idx + 1 >= MAX_PARTS {
                    failed = Some(StoreError::Io(io::Error::other(format!(
                        "the blob is larger than the object store takes ({MAX_PARTS} parts of \
                         {PART_PLAIN} bytes)"
                    ))));
                    break 'body;
                }
                let heartbeat = busy_at.is_some_and(|at| at.elapsed() > HEARTBEAT);
                if busy_at.is_none() || heartbeat {
                    if state.multipart.is_none() {
                        match self
                            .client
                            .create_multipart(&self.data_key(&state.data))
                            .await
                        {
                            Ok(mp) => state.multipart = Some(mp),
                            Err(e) => {
                                failed = Some(StoreError::Unavailable(self.unavailable(e)));
                                break 'body;
                            }
                        }
                    }
                    let mut busy = state.clone();
                    busy.busy = true;
                    if let Err(e) = self.put_state(id, &busy).await {
                        failed = Some(e);
                        break 'body;
                    }
                    busy_at = Some(Instant::now());
                }
                let rest = pending.split_off(PART_PLAIN);
                let part = std::mem::replace(&mut pending, rest);
                pending.reserve(PART_PLAIN + (1 << 16) - pending.len().min(PART_PLAIN));
                inflight.push_back(self.send_part(&state, sealer.clone(), idx, part, false));
                if inflight.len() >= IN_FLIGHT {
                    match inflight.next().await {
                        Some(Ok(part)) => state.parts.push(part.content_id),
                        Some(Err(e)) => {
                            failed = Some(e);
                            break 'body;
                        }
                        None => {}
                    }
                }
            }
        }
        while let Some(sent) = inflight.next().await {
            match sent {
                Ok(part) => state.parts.push(part.content_id),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let result = match failed {
            Some(e) => Err(e),
            None => self.save(id, &mut state, &pending, &hasher).await,
        };
        match result {
            Ok(()) => {
                if old_size != state.size && old_size > 0 {
                    // The old tail is nobody's now: it goes while the client sends on.
                    let client = self.client.clone();
                    let old = self.tail_key(id, old_size);
                    tokio::spawn(async move {
                        let _ = client.delete(&old).await;
                    });
                }
                self.uploads.keep_tail(id, state.size, pending);
                Ok(state.size)
            }
            Err(e) => {
                // A broken body ends the session, as does any failure once parts were sent
                // (the state is busy: those segments must not be sealed again). A failure
                // before that leaves the session as it was, for the client to retry.
                if busy_at.is_some() || matches!(e, StoreError::Body(_)) {
                    self.end(id, Some(&state)).await;
                }
                Err(e)
            }
        }
    }

    /// Writes a session's new tail, then its new state.
    async fn save(
        &self,
        id: &UploadId,
        state: &mut State,
        pending: &[u8],
        hasher: &Midstate,
    ) -> Result<(), StoreError> {
        if !pending.is_empty() {
            let body = match &self.keys {
                Some(keys) => keys.seal_aside(&Self::tail_context(id, state.size), pending)?,
                None => pending.to_vec(),
            };
            self.client
                .put(&self.tail_key(id, state.size), PutPayload::from(body))
                .await
                .map_err(|e| StoreError::Unavailable(self.unavailable(e)))?;
        }
        state.tail = pending.len() as u64;
        state.hash = hasher.to_saved();
        state.busy = false;
        self.put_state(id, state).await
    }

    /// Removes what a session left in the bucket (its multipart upload, state and tails) and
    /// forgets it here. Best effort: what stays is expired later.
    async fn end(&self, id: &UploadId, state: Option<&State>) {
        self.uploads.forget(id);
        if let Some(mp) = state.and_then(|s| s.multipart.as_ref()) {
            let data = self.data_key(&state.map(|s| s.data.clone()).unwrap_or_default());
            let _ = self.client.abort_multipart(&data, mp).await;
        }
        let prefix = self.key(&format!("uploads/{id}"));
        let names: Vec<_> = self
            .client
            .list(Some(&prefix))
            .filter_map(|m| async move { m.ok().map(|m| m.location) })
            .collect()
            .await;
        for name in names {
            let _ = self.client.delete(&name).await;
        }
    }

    pub async fn upload_size(&self, id: &UploadId) -> Result<u64, StoreError> {
        let state = self.take_up(id).await?;
        self.uploads.lock_for(id);
        Ok(state.size)
    }

    /// Completes a session: its content must hash to `expected` (with `None`, it is stored
    /// under the digest it has). The session ends whatever happens.
    pub async fn upload_commit(
        &self,
        id: &UploadId,
        expected: Option<&Digest>,
    ) -> Result<Committed, StoreError> {
        let lock = self.uploads.lock_for(id);
        let _one = lock.lock().await;
        let mut state = self.take_up(id).await?;
        let result = self.commit_locked(id, &mut state, expected).await;
        self.end(id, Some(&state)).await;
        result
    }

    async fn commit_locked(
        &self,
        id: &UploadId,
        state: &mut State,
        expected: Option<&Digest>,
    ) -> Result<Committed, StoreError> {
        let _memory = self.uploads.reserve().await?;
        let pending = self.load_tail(id, state).await?;
        let hasher = Midstate::from_saved(&state.hash).ok_or_else(|| damaged("its hash state"))?;
        let digest = Digest::from_bytes(hasher.finalize());
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: *expected,
                    actual: digest,
                });
            }
        }
        let size = state.size;
        if self.link_exists(&digest).await? {
            // Stored already: this upload's parts go with the session.
            return Ok(Committed {
                digest,
                size,
                new: false,
            });
        }
        let sealer = self.sealer_of(state)?;
        let header = sealer.as_ref().map(|s| s.header(size));
        let data = self.data_key(&state.data);
        match &state.multipart {
            None => {
                let body = seal(sealer, 0, pending, true).await?;
                self.client
                    .put(&data, PutPayload::from(body))
                    .await
                    .map_err(|e| StoreError::Unavailable(self.unavailable(e)))?;
            }
            Some(mp) => {
                let mut busy = state.clone();
                busy.busy = true;
                self.put_state(id, &busy).await?;
                let idx = state.parts.len();
                let last = self.send_part(state, sealer, idx, pending, true).await?;
                let mut parts: Vec<PartId> = state
                    .parts
                    .iter()
                    .map(|p| PartId {
                        content_id: p.clone(),
                    })
                    .collect();
                parts.push(last);
                self.client
                    .complete_multipart(&data, mp, parts)
                    .await
                    .map_err(|e| StoreError::Unavailable(self.unavailable(e)))?;
                // Complete: nothing to abort any more.
                state.multipart = None;
            }
        }
        let new = self
            .link_data(&digest, size, state.data.clone(), header.as_deref())
            .await?;
        Ok(Committed { digest, size, new })
    }

    pub async fn upload_cancel(&self, id: &UploadId) -> Result<(), StoreError> {
        let lock = self.uploads.lock_for(id);
        let _one = lock.lock().await;
        let state = match self.load_state(id).await {
            Ok(state) => Some(state),
            Err(StoreError::UploadNotFound) => {
                self.uploads.forget(id);
                return Err(StoreError::UploadNotFound);
            }
            Err(e) => return Err(e),
        };
        self.end(id, state.as_ref()).await;
        Ok(())
    }

    /// Ends the sessions of every instance that no request used for `idle` (their state was
    /// last written then) or that were opened more than `max_age` ago, unless a request of
    /// this instance is at one now. Returns the ids ended.
    pub async fn expire_uploads(&self, idle: Duration, max_age: Duration) -> Vec<UploadId> {
        let prefix = self.key("uploads");
        // Per session: when its state was last written (if it has one), and when anything of
        // it was.
        let mut seen: HashMap<UploadId, (Option<SystemTime>, SystemTime)> = HashMap::new();
        let mut listing = self.client.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let Ok(meta) = meta else {
                // The store does not answer: nothing is expired now, but nothing is lost.
                return Vec::new();
            };
            let parts: Vec<_> = meta.location.parts().collect();
            let n = parts.len();
            if n < 2 {
                continue;
            }
            let Ok(id) = parts[n - 2].as_ref().parse::<UploadId>() else {
                continue;
            };
            let written: SystemTime = meta.last_modified.into();
            let entry = seen.entry(id).or_insert((None, written));
            entry.1 = entry.1.max(written);
            if parts[n - 1].as_ref() == "state" {
                entry.0 = Some(written);
            }
        }
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let mut ended = Vec::new();
        for (id, (state_written, last)) in seen {
            // A session a request of this instance is at now is left to it.
            let lock = self.uploads.existing_lock(&id);
            let _one = match &lock {
                Some(lock) => match lock.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(_) => continue,
                },
                None => None,
            };
            let state = match state_written {
                Some(written) => {
                    let state = self.load_state(&id).await.ok();
                    let too_old = state
                        .as_ref()
                        .is_some_and(|s| unix_now().saturating_sub(s.opened) > max_age.as_secs());
                    if age(written) <= idle && !too_old {
                        continue;
                    }
                    state
                }
                // Tails without a state: a session ended while its last request still wrote.
                None if age(last) > idle => None,
                None => continue,
            };
            self.end(&id, state.as_ref()).await;
            ended.push(id);
        }
        // Sessions known here whose state is gone from the bucket are no one's.
        let stale: Vec<UploadId> = {
            let local = self.uploads.local.lock().unwrap_or_else(|p| p.into_inner());
            local
                .iter()
                .filter(|(_, l)| l.touched.elapsed() > idle || l.opened.elapsed() > max_age)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in stale {
            if !ended.contains(&id) {
                self.uploads.forget(&id);
            }
        }
        ended
    }
}

/// A part's (or a small blob's) bytes as stored: sealed from segment `first` on when there
/// is a sealer (the blob's last segment sealed as the last when `last`), else as they are.
async fn seal(
    sealer: Option<Arc<Sealer>>,
    first: usize,
    plain: Vec<u8>,
    last: bool,
) -> Result<Bytes, StoreError> {
    let Some(sealer) = sealer else {
        return Ok(Bytes::from(plain));
    };
    tokio::task::spawn_blocking(move || {
        let segments = if plain.is_empty() {
            1
        } else {
            plain.len().div_ceil(PLAIN)
        };
        let mut out = vec![0u8; plain.len() + segments * (crypt::SEGMENT - PLAIN)];
        let n = sealer.seal(first as u64, &plain, last, &mut out)?;
        out.truncate(n);
        Ok::<_, io::Error>(Bytes::from(out))
    })
    .await
    .map_err(io::Error::other)?
    .map_err(StoreError::Io)
}

/// The data object's length for `size` content bytes (an encrypted blob's file less its
/// header).
#[cfg(test)]
fn data_len(size: u64, sealed: bool) -> u64 {
    if sealed {
        crypt::sealed_len(size) - crypt::HEADER as u64
    } else {
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut hash = Midstate::new();
        hash.update(&vec![1u8; PART_PLAIN + 10]);
        State {
            v: 1,
            label: Some("team/web".into()),
            opened: 1_700_000_000,
            data: uuid::Uuid::new_v4().to_string(),
            size: PART_PLAIN as u64 + 10,
            hash: hash.to_saved(),
            multipart: Some("mp-1".into()),
            parts: vec!["\"etag-1\"".into()],
            tail: 10,
            key: Some("0011223344556677".into()),
            prefix: Some("8899aabbccddeeff".into()),
            busy: false,
        }
    }

    #[test]
    fn states_read_back_and_are_checked() {
        let good = state();
        let text = serde_json::to_vec(&good).unwrap();
        assert_eq!(State::parse(&text), Some(good.clone()));
        let bad = |f: &dyn Fn(&mut State)| {
            let mut s = good.clone();
            f(&mut s);
            State::parse(&serde_json::to_vec(&s).unwrap())
        };
        assert!(bad(&|s| s.size += 1).is_none(), "size and hash disagree");
        assert!(bad(&|s| s.tail += 1).is_none(), "tail and parts disagree");
        assert!(bad(&|s| s.data = "../x".into()).is_none());
        assert!(
            bad(&|s| s.multipart = None).is_none(),
            "parts need an upload"
        );
        assert!(
            bad(&|s| s.prefix = None).is_none(),
            "key and prefix together"
        );
        assert!(bad(&|s| s.v = 2).is_none());
        assert!(State::parse(b"{\"v\":1}").is_none());
        let text = String::from_utf8(text).unwrap();
        assert!(State::parse(text.replace("{\"v\"", "{\"x\":1,\"v\"").as_bytes()).is_none());
    }

    #[test]
    fn parts_are_over_the_smallest_s3_part_and_whole_segments() {
        const { assert!(PART_SEGMENTS * crypt::SEGMENT >= 5 << 20) };
        const { assert!(PART_PLAIN >= 5 << 20, "plain parts too") };
        const { assert!(PART_PLAIN.is_multiple_of(PLAIN)) };
        // A part of whole segments sealed on its own is exactly its place in the blob.
        assert_eq!(
            data_len(2 * PART_PLAIN as u64 + 1, true),
            2 * (PART_SEGMENTS * crypt::SEGMENT) as u64 + 1 + 16
        );
    }

    #[tokio::test]
    async fn requests_reserve_upload_memory_and_wait_for_it() {
        let mut uploads = Uploads::new(2 * RESERVE + 10);
        uploads.wait = Duration::from_millis(100);
        let first = uploads.reserve().await.unwrap();
        let second = uploads.reserve().await.unwrap();
        assert_eq!(uploads.held(), 2 * RESERVE);
        match uploads.reserve().await {
            Err(StoreError::Busy { held }) => assert_eq!(held, 2 * RESERVE),
            _ => panic!("a third request fits in the memory of two"),
        }
        // One ends while another waits: the waiting one gets its room.
        let waiting = async { uploads.reserve().await.map(|_| ()) };
        let ending = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(first);
        };
        let (got, ()) = tokio::join!(waiting, ending);
        assert!(got.is_ok());
        drop(second);
        assert_eq!(uploads.held(), 0);
        // A limit below one request's need still lets one run at a time.
        let mut small = Uploads::new(1024);
        small.wait = Duration::from_millis(50);
        let one = small.reserve().await.unwrap();
        assert!(small.reserve().await.is_err());
        drop(one);
        assert!(small.reserve().await.is_ok());
    }

    #[tokio::test]
    async fn parts_sealed_apart_are_the_blob_sealed_whole() {
        let keys = crypt::Keys::new(&crypt::MasterKey::generate().unwrap(), &[]).unwrap();
        let sealer = Arc::new(keys.sealer().unwrap());
        let plain: Vec<u8> = (0..2 * PART_PLAIN + 1000)
            .map(|i| (i % 249) as u8)
            .collect();
        let mut whole = vec![0u8; data_len(plain.len() as u64, true) as usize];
        sealer.seal(0, &plain, true, &mut whole).unwrap();
        let mut joined = Vec::new();
        for (i, piece) in plain.chunks(PART_PLAIN).enumerate() {
            let last = (i + 1) * PART_PLAIN >= plain.len();
            let part = seal(
                Some(sealer.clone()),
                i * PART_SEGMENTS,
                piece.to_vec(),
                last,
            )
            .await
            .unwrap();
            joined.extend_from_slice(&part);
        }
        assert_eq!(joined, whole);
        let empty = seal(Some(sealer), 0, Vec::new(), true).await.unwrap();
        assert_eq!(empty.len(), 16);
    }
}
