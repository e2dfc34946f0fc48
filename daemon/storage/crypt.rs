//! The encrypted blob format (encryption at rest) and the segment cipher.
//!
//! A blob file of an encrypted data dir is a 4096-byte header followed by segments:
//!
//! ```text
//! header (4096 bytes, little-endian integers, the rest zero)
//!   0..8    magic "ECRLBLOB"
//!   8       format version (1)
//!   9       cipher (1 = AES-256-GCM)
//!   12..16  segment size on disk (65536)
//!   16..24  id of the master key that sealed the blob
//!   24..32  random nonce prefix (new for every blob)
//!   32..40  plaintext length
//! segment i (65536 bytes on disk; the last one shorter)
//!   AES-256-GCM(plaintext[i*65520 .. (i+1)*65520]) ‖ 16-byte tag
//!   nonce = prefix ‖ i (u32, big-endian)
//!   AAD   = version ‖ cipher ‖ segment size ‖ key id ‖ i (u64) ‖ last-segment flag
//! ```
//!
//! Why this shape:
//! - Segments are whole multiples of 4096 bytes on disk and start 4096-aligned, so O_DIRECT
//!   writes and reads keep working, and a range read decrypts only the segments it touches.
//! - The nonce prefix is fresh per blob and the index is part of the nonce and the AAD: a
//!   segment moved within a blob, or spliced in from another blob, fails authentication. The
//!   last-segment flag makes a truncated blob (whole segments cut off) fail too, and the file
//!   length must match the header's plaintext length, so nothing can be cut or appended
//!   without an error. A 0-byte blob is one empty, authenticated last segment.
//! - The header names the key, so blobs sealed under an older key stay readable after a new
//!   key becomes the current one; re-encrypting them in the background (key rotation) is a
//!   rewrite through the same reader and writer.
//! - Digests and sizes are the plaintext's: a file's plaintext length follows from its
//!   length alone ([`plain_len`]), so a HEAD needs no decryption and no read.
//!
//! With a random 64-bit prefix per blob, two blobs share a nonce prefix with probability
//! about n²/2⁶⁵ for n blobs under one key (3·10⁻⁸ for a million blobs); a key rotation starts
//! the count afresh.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Bytes of the header in front of the segments.
pub const HEADER: usize = 4096;
/// The bytes of the header that say anything (the rest is zero): what the object store keeps
/// of it, in a blob's link.
pub const HEADER_USED: usize = 40;
/// A whole segment on disk: ciphertext and tag.
pub const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
/// Plaintext bytes in a whole segment.
pub const PLAIN: usize = SEGMENT - TAG;

const MAGIC: &[u8; 8] = b"ECRLBLOB";
const VERSION: u8 = 1;
const CIPHER_AES_256_GCM: u8 = 1;
/// Bytes of a master key.
pub const KEY_LEN: usize = 32;

/// The name of a master key: 8 random bytes, written as 16 hex digits. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn random() -> io::Result<KeyId> {
        let mut id = [0u8; 8];
        random_fill(&mut id)?;
        Ok(KeyId(id))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let bytes = decode_hex(s).ok_or(())?;
        Ok(KeyId(bytes.as_slice().try_into().map_err(|_| ())?))
    }
}

/// A master key: its id and 32 secret bytes. Its `Debug` shows the id only, and the bytes
/// are wiped from memory when it is dropped.
pub struct MasterKey {
    id: KeyId,
    secret: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl MasterKey {
    /// A new random key under a new random id.
    pub fn generate() -> io::Result<MasterKey> {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        random_fill(&mut secret[..])?;
        Ok(MasterKey {
            id: KeyId::random()?,
            secret,
        })
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as 64 hex digits (what the keyring and the key file hold).
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
        for b in self.secret.iter() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }

    /// A key read back from its hex form. `None` when it is not 64 hex digits.
    pub fn from_hex(id: KeyId, hex: &str) -> Option<MasterKey> {
        let bytes = Zeroizing::new(decode_hex(hex.trim())?);
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return None;
        }
        secret.copy_from_slice(&bytes);
        Some(MasterKey { id, secret })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn random_fill(out: &mut [u8]) -> io::Result<()> {
    aws_lc_rs::rand::fill(out).map_err(|_| io::Error::other("the system random source failed"))
}

/// A master key ready to seal and open segments.
pub struct SegmentKey {
    id: KeyId,
    aead: LessSafeKey,
}

impl std::fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentKey").field("id", &self.id).finish()
    }
}

impl SegmentKey {
    pub fn new(master: &MasterKey) -> io::Result<SegmentKey> {
        let key = UnboundKey::new(&AES_256_GCM, &master.secret[..])
            .map_err(|_| io::Error::other("AES-256-GCM refused the key"))?;
        Ok(SegmentKey {
            id: master.id,
            aead: LessSafeKey::new(key),
        })
    }
}

/// The keys a store seals with (the current one) and opens with (any it knows).
#[derive(Debug)]
pub struct Keys {
    current: Arc<SegmentKey>,
    by_id: HashMap<KeyId, Arc<SegmentKey>>,
}

impl Keys {
    /// `current` seals new blobs; `older` ones only open blobs sealed before a rotation.
    pub fn new(current: &MasterKey, older: &[MasterKey]) -> io::Result<Keys> {
        let current = Arc::new(SegmentKey::new(current)?);
        let mut by_id = HashMap::new();
        by_id.insert(current.id, current.clone());
        for key in older {
            by_id.insert(key.id, Arc::new(SegmentKey::new(key)?));
        }
        Ok(Keys { current, by_id })
    }

    /// A sealer for one new blob, with a fresh nonce prefix.
    pub fn sealer(&self) -> io::Result<Sealer> {
        let mut prefix = [0u8; 8];
        random_fill(&mut prefix)?;
        Ok(Sealer {
            key: self.current.clone(),
            prefix,
        })
    }

    /// The sealer of a blob whose upload another request (or another ecrld) began: same key,
    /// same nonce prefix. The key must be one this store has.
    pub fn resume_sealer(&self, key: KeyId, prefix: [u8; 8]) -> io::Result<Sealer> {
        let key = self.by_id.get(&key).ok_or_else(|| {
            invalid(format!(
                "upload sealed under key {key}, which this daemon does not have"
            ))
        })?;
        Ok(Sealer {
            key: key.clone(),
            prefix,
        })
    }

    /// Seals bytes that are not a blob's segments (an upload's unsent end, kept in the object
    /// store between requests) under the current key with a random 96-bit nonce: they never
    /// share a nonce with a blob's segments (prefix ‖ index) but by a chance of about 2⁻⁶⁴.
    /// `context` is authenticated with them (what they are and whose), so they cannot be
    /// passed off as another upload's. Out: key id ‖ nonce ‖ ciphertext ‖ tag.
    pub fn seal_aside(&self, context: &[u8], plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce)?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + TAG);
        out.extend_from_slice(&self.current.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .current
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aside_aad(context)),
                &mut out[8 + NONCE_LEN..],
            )
            .map_err(|_| io::Error::other("AES-256-GCM sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what [`Keys::seal_aside`] sealed with the same `context`.
    pub fn open_aside(&self, context: &[u8], sealed: &[u8]) -> io::Result<Vec<u8>> {
        if sealed.len() < 8 + NONCE_LEN + TAG {
            return Err(invalid("sealed upload data is too short: it is damaged"));
        }
        let (id, rest) = sealed.split_at(8);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(id);
        let key = self.by_id.get(&KeyId(key_id)).ok_or_else(|| {
            invalid(format!(
                "upload data sealed under key {}, which this daemon does not have",
                KeyId(key_id)
            ))
        })?;
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut buf = body.to_vec();
        let n = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aside_aad(context)),
                &mut buf,
            )
            .map_err(|_| {
                invalid("sealed upload data failed authentication: it is damaged or was changed")
            })?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// The opener for a blob, from its header.
    pub fn opener(&self, header: &[u8]) -> io::Result<Opener> {
        let header = Header::parse(header)?;
        let key = self.by_id.get(&header.key_id).ok_or_else(|| {
            invalid(format!(
                "blob sealed under key {}, which this daemon does not have",
                header.key_id
            ))
        })?;
        Ok(Opener {
            key: key.clone(),
            prefix: header.prefix,
            plain_len: header.plain_len,
        })
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// How many segments hold `plain` bytes (an empty blob still has its one, empty, segment).
pub fn segments(plain: u64) -> u64 {
    plain.div_ceil(PLAIN as u64).max(1)
}

/// The file length of a blob of `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    HEADER as u64 + plain + TAG as u64 * segments(plain)
}

/// The plaintext length of a blob file `sealed` bytes long; `None` for a length no blob has.
pub fn plain_len(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub((HEADER + TAG) as u64)? + TAG as u64;
    let plain = body - TAG as u64 * body.div_ceil(SEGMENT as u64);
    (sealed_len(plain) == sealed).then_some(plain)
}

/// Where segment `index` starts in the file.
pub fn segment_offset(index: u64) -> u64 {
    HEADER as u64 + index * SEGMENT as u64
}

struct Header {
    key_id: KeyId,
    prefix: [u8; 8],
    plain_len: u64,
}

impl Header {
    fn parse(bytes: &[u8]) -> io::Result<Header> {
        if bytes.len() < 40 || &bytes[..8] != MAGIC {
            return Err(invalid("not an encrypted blob (bad header)"));
        }
        if bytes[8] != VERSION || bytes[9] != CIPHER_AES_256_GCM {
            return Err(invalid(format!(
                "encrypted blob of format {} cipher {}, which this version cannot read",
                bytes[8], bytes[9]
            )));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        if u32_at(12) as usize != SEGMENT {
            return Err(invalid(format!(
                "encrypted blob with {}-byte segments, which this version cannot read",
                u32_at(12)
            )));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bytes[16..24]);
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&bytes[24..32]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[32..40]);
        Ok(Header {
            key_id: KeyId(key_id),
            prefix,
            plain_len: u64::from_le_bytes(len),
        })
    }
}

/// The associated data of bytes sealed aside: a label no segment's AAD (23 bytes, starting
/// with the format version) can equal, then the caller's context.
fn aside_aad(context: &[u8]) -> Vec<u8> {
    let mut aad = b"ecrl-aside-v1\0".to_vec();
    aad.extend_from_slice(context);
    aad
}

fn nonce(prefix: &[u8; 8], index: u64) -> io::Result<Nonce> {
    let index = u32::try_from(index).map_err(|_| invalid("blob too large to encrypt"))?;
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(prefix);
    n[8..].copy_from_slice(&index.to_be_bytes());
    Ok(Nonce::assume_unique_for_key(n))
}

fn aad(key: &KeyId, index: u64, last: bool) -> [u8; 23] {
    let mut a = [0u8; 23];
    a[0] = VERSION;
    a[1] = CIPHER_AES_256_GCM;
    a[2..6].copy_from_slice(&(SEGMENT as u32).to_be_bytes());
    a[6..14].copy_from_slice(&key.0);
    a[14..22].copy_from_slice(&index.to_be_bytes());
    a[22] = u8::from(last);
    a
}

/// Seals the segments of one blob.
#[derive(Debug)]
pub struct Sealer {
    key: Arc<SegmentKey>,
    prefix: [u8; 8],
}

impl Sealer {
    /// The key that seals this blob.
    pub fn key_id(&self) -> KeyId {
        self.key.id
    }

    /// This blob's nonce prefix (not secret: it is in the blob's header).
    pub fn prefix(&self) -> [u8; 8] {
        self.prefix
    }

    /// The blob's header, once its plaintext length is known.
    pub fn header(&self, plain_len: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8] = VERSION;
        h[9] = CIPHER_AES_256_GCM;
        h[12..16].copy_from_slice(&(SEGMENT as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.key.id.0);
        h[24..32].copy_from_slice(&self.prefix);
        h[32..40].copy_from_slice(&plain_len.to_le_bytes());
        h
    }

    /// Seals `plain` as the segments from `first` on into `out`; returns the bytes written.
    /// Every segment but a `last` one must be whole; `out` must have room for
    /// `plain.len()` plus 16 bytes a segment. An empty `plain` with `last` seals the one
    /// empty segment of an empty blob.
    pub fn seal(&self, first: u64, plain: &[u8], last: bool, out: &mut [u8]) -> io::Result<usize> {
        let count = if plain.is_empty() && last {
            1
        } else {
            plain.len().div_ceil(PLAIN)
        };
        if !last && !plain.len().is_multiple_of(PLAIN) {
            return Err(io::Error::other("a segment before the last is not whole"));
        }
        let mut written = 0;
        for i in 0..count {
            let piece = &plain[i * PLAIN..((i + 1) * PLAIN).min(plain.len())];
            let index = first + i as u64;
            let is_last = last && i + 1 == count;
            let (ct, rest) = out
                .get_mut(written..written + piece.len() + TAG)
                .ok_or_else(|| io::Error::other("sealing buffer too small"))?
                .split_at_mut(piece.len());
            self.key
                .aead
                .seal_out_of_place_scatter(
                    nonce(&self.prefix, index)?,
                    Aad::from(aad(&self.key.id, index, is_last)),
                    piece,
                    ct,
                    &[],
                    rest,
                )
                .map_err(|_| io::Error::other("AES-256-GCM sealing failed"))?;
            written += piece.len() + TAG;
        }
        Ok(written)
    }

    /// Seals, within `buf`, `count` whole segments (none of them the blob's last) from
    /// segment `first` on, each of whose plaintext fills the first [`PLAIN`] bytes of its
    /// [`SEGMENT`] of `buf`, leaving room for its tag; returns the sealed length. Nothing
    /// moves: the writer lays plaintext out this way as it arrives.
    pub fn seal_segments(&self, first: u64, buf: &mut [u8], count: usize) -> io::Result<usize> {
        if buf.len() < count * SEGMENT {
            return Err(io::Error::other("sealing buffer too small"));
        }
        for (i, segment) in buf[..count * SEGMENT].chunks_exact_mut(SEGMENT).enumerate() {
            let index = first + i as u64;
            let (segment, tag) = segment.split_at_mut(PLAIN);
            let sealed = self
                .key
                .aead
                .seal_in_place_separate_tag(
                    nonce(&self.prefix, index)?,
                    Aad::from(aad(&self.key.id, index, false)),
                    segment,
                )
                .map_err(|_| io::Error::other("AES-256-GCM sealing failed"))?;
            tag.copy_from_slice(sealed.as_ref());
        }
        Ok(count * SEGMENT)
    }
}

/// Opens the segments of one blob.
#[derive(Debug, Clone)]
pub struct Opener {
    key: Arc<SegmentKey>,
    prefix: [u8; 8],
    plain_len: u64,
}

impl Opener {
    /// The blob's plaintext length, as its header says.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// The file length the header implies; anything else means the file was cut or grown.
    pub fn check_file_len(&self, len: u64) -> io::Result<()> {
        if len == sealed_len(self.plain_len) {
            Ok(())
        } else {
            Err(invalid(format!(
                "encrypted blob is {len} bytes long but its header says {} of content: \
                 the file is damaged",
                self.plain_len
            )))
        }
    }

    /// The on-disk length of segment `index` (the last one is shorter).
    pub fn segment_len(&self, index: u64) -> u64 {
        let last = segments(self.plain_len) - 1;
        if index < last {
            SEGMENT as u64
        } else {
            self.plain_len - last * PLAIN as u64 + TAG as u64
        }
    }

    /// Opens the whole segments in `sealed`, from segment `first` on, into `out`; returns
    /// the plaintext bytes written. A segment that fails authentication is an error, and
    /// `out` then holds nothing to use.
    pub fn open(&self, first: u64, sealed: &[u8], out: &mut [u8]) -> io::Result<usize> {
        let last = segments(self.plain_len) - 1;
        let mut at = 0;
        let mut written = 0;
        let mut index = first;
        while at < sealed.len() {
            let len = self.segment_len(index) as usize;
            let segment = sealed
                .get(at..at + len)
                .filter(|_| index <= last)
                .ok_or_else(|| invalid("encrypted blob ends inside a segment"))?;
            let (ct, tag) = segment.split_at(len - TAG);
            let plain = out
                .get_mut(written..written + ct.len())
                .ok_or_else(|| io::Error::other("opening buffer too small"))?;
            self.key
                .aead
                .open_separate_gather(
                    nonce(&self.prefix, index)?,
                    Aad::from(aad(&self.key.id, index, index == last)),
                    ct,
                    tag,
                    plain,
                )
                .map_err(|_| failed(index))?;
            at += len;
            written += ct.len();
            index += 1;
        }
        Ok(written)
    }

    /// [`Opener::open`] within one buffer: `buf` holds whole segments from segment `first`
    /// on, and their plaintext is written over them from its start (each segment's lands
    /// before its own ciphertext, so nothing unread is overwritten). Returns the plaintext
    /// bytes; a read from the disk then needs no second buffer.
    pub fn open_in_place(&self, first: u64, buf: &mut [u8]) -> io::Result<usize> {
        let last = segments(self.plain_len) - 1;
        let mut at = 0;
        let mut written = 0;
        let mut index = first;
        while at < buf.len() {
            let len = self.segment_len(index) as usize;
            if index > last || at + len > buf.len() {
                return Err(invalid("encrypted blob ends inside a segment"));
            }
            let plain = self
                .key
                .aead
                .open_within(
                    nonce(&self.prefix, index)?,
                    Aad::from(aad(&self.key.id, index, index == last)),
                    &mut buf[written..at + len],
                    (at - written)..,
                )
                .map_err(|_| failed(index))?;
            written += plain.len();
            at += len;
            index += 1;
        }
        Ok(written)
    }
}

fn failed(index: u64) -> io::Error {
    invalid(format!(
        "encrypted blob segment {index} failed authentication: the file is damaged or was \
         changed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_map_both_ways() {
        for plain in [
            0,
            1,
            PLAIN as u64 - 1,
            PLAIN as u64,
            PLAIN as u64 + 1,
            2 * PLAIN as u64,
            10 * PLAIN as u64 + 17,
            1 << 30,
        ] {
            let sealed = sealed_len(plain);
            assert_eq!(plain_len(sealed), Some(plain), "plain {plain}");
        }
        assert_eq!(sealed_len(0), (HEADER + TAG) as u64);
        assert_eq!(sealed_len(PLAIN as u64), (HEADER + SEGMENT) as u64);
        // Lengths no blob has: too short, or a last segment with no room for content.
        for bad in [0, 100, HEADER as u64, HEADER as u64 + 15] {
            assert_eq!(plain_len(bad), None, "{bad}");
        }
        assert_eq!(plain_len((HEADER + SEGMENT + 16) as u64), None);
        assert_eq!(
            plain_len((HEADER + SEGMENT + 17) as u64),
            Some(PLAIN as u64 + 1)
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = MasterKey::generate().unwrap();
        let hex = key.to_hex();
        let debug = format!("{key:?}");
        assert!(!debug.contains(hex.as_str()), "{debug}");
        assert!(debug.contains(&key.id().to_string()), "{debug}");
        let keys = Keys::new(&key, &[]).unwrap();
        let debug = format!("{keys:?} {:?}", keys.sealer().unwrap());
        assert!(!debug.contains(hex.as_str()), "{debug}");
        let again = MasterKey::from_hex(key.id(), &hex).unwrap();
        assert_eq!(again.to_hex(), hex);
        assert!(MasterKey::from_hex(key.id(), "abc").is_none());
        assert_eq!(key.id().to_string().parse::<KeyId>(), Ok(key.id()));
    }

    #[test]
    fn segments_open_only_in_place_and_under_their_key() {
        let key = MasterKey::generate().unwrap();
        let keys = Keys::new(&key, &[]).unwrap();
        let plain: Vec<u8> = (0..3 * PLAIN + 5).map(|i| (i % 251) as u8).collect();
        let sealer = keys.sealer().unwrap();
        let mut sealed = vec![0u8; sealed_len(plain.len() as u64) as usize - HEADER];
        let n = sealer.seal(0, &plain, true, &mut sealed).unwrap();
        assert_eq!(n, sealed.len());
        let header = sealer.header(plain.len() as u64);
        let opener = keys.opener(&header).unwrap();
        let mut out = vec![0u8; plain.len()];
        assert_eq!(opener.open(0, &sealed, &mut out).unwrap(), plain.len());
        assert_eq!(out, plain);
        // From the middle: segment 2 on.
        let mut out = vec![0u8; PLAIN + 5];
        opener.open(2, &sealed[2 * SEGMENT..], &mut out).unwrap();
        assert_eq!(out, plain[2 * PLAIN..]);

        // Swapped segments fail.
        let mut swapped = sealed.clone();
        swapped[..SEGMENT].copy_from_slice(&sealed[SEGMENT..2 * SEGMENT]);
        swapped[SEGMENT..2 * SEGMENT].copy_from_slice(&sealed[..SEGMENT]);
        let mut out = vec![0u8; plain.len()];
        assert!(opener.open(0, &swapped, &mut out).is_err());
        // A segment of another blob (same key, same place) fails.
        let other = keys.sealer().unwrap();
        let mut foreign = vec![0u8; sealed.len()];
        other.seal(0, &plain, true, &mut foreign).unwrap();
        let mut spliced = sealed.clone();
        spliced[SEGMENT..2 * SEGMENT].copy_from_slice(&foreign[SEGMENT..2 * SEGMENT]);
        assert!(opener.open(0, &spliced, &mut out).is_err());
        // Cut after whole segments, with a header that claims the shorter length: the new
        // last segment was not sealed as the last.
        let cut = keys.opener(&sealer.header(3 * PLAIN as u64)).unwrap();
        let mut out = vec![0u8; 3 * PLAIN];
        assert!(cut.open(0, &sealed[..3 * SEGMENT], &mut out).is_err());
        // Another key cannot open it.
        let stranger = Keys::new(&MasterKey::generate().unwrap(), &[]).unwrap();
        assert!(stranger.opener(&header).is_err());
        // An older key still opens what it sealed.
        let rotated = Keys::new(&MasterKey::generate().unwrap(), &[key]).unwrap();
        let mut out = vec![0u8; plain.len()];
        rotated
            .opener(&header)
            .unwrap()
            .open(0, &sealed, &mut out)
            .unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn open_in_place_matches_open_and_checks_the_same() {
        let keys = Keys::new(&MasterKey::generate().unwrap(), &[]).unwrap();
        let plain: Vec<u8> = (0..4 * PLAIN + 77).map(|i| (i % 253) as u8).collect();
        let sealer = keys.sealer().unwrap();
        let mut sealed = vec![0u8; sealed_len(plain.len() as u64) as usize - HEADER];
        sealer.seal(0, &plain, true, &mut sealed).unwrap();
        let opener = keys.opener(&sealer.header(plain.len() as u64)).unwrap();
        let mut buf = sealed.clone();
        assert_eq!(opener.open_in_place(0, &mut buf).unwrap(), plain.len());
        assert_eq!(&buf[..plain.len()], &plain[..]);
        // From segment 1 on, and segments 1 and 2 alone.
        let mut buf = sealed[SEGMENT..].to_vec();
        assert_eq!(
            opener.open_in_place(1, &mut buf).unwrap(),
            plain.len() - PLAIN
        );
        assert_eq!(&buf[..plain.len() - PLAIN], &plain[PLAIN..]);
        let mut buf = sealed[SEGMENT..3 * SEGMENT].to_vec();
        assert_eq!(opener.open_in_place(1, &mut buf).unwrap(), 2 * PLAIN);
        assert_eq!(&buf[..2 * PLAIN], &plain[PLAIN..3 * PLAIN]);
        // A flipped bit in a later segment, and a cut inside a segment, fail.
        let mut buf = sealed.clone();
        buf[3 * SEGMENT + 10] ^= 1;
        assert!(opener.open_in_place(0, &mut buf).is_err());
        let mut buf = sealed[..2 * SEGMENT + 100].to_vec();
        assert!(opener.open_in_place(0, &mut buf).is_err());
    }

    #[test]
    fn sealing_segments_in_place_matches_seal() {
        let keys = Keys::new(&MasterKey::generate().unwrap(), &[]).unwrap();
        let sealer = keys.sealer().unwrap();
        let plain: Vec<u8> = (0..5 * PLAIN).map(|i| (i % 241) as u8).collect();
        let mut expected = vec![0u8; 5 * SEGMENT];
        sealer.seal(7, &plain, false, &mut expected).unwrap();
        // Each segment's plaintext at the start of its segment, room for the tag after it.
        let mut buf = vec![0xeeu8; 5 * SEGMENT + 3];
        for (i, piece) in plain.chunks(PLAIN).enumerate() {
            buf[i * SEGMENT..i * SEGMENT + PLAIN].copy_from_slice(piece);
        }
        assert_eq!(sealer.seal_segments(7, &mut buf, 5).unwrap(), 5 * SEGMENT);
        assert_eq!(&buf[..5 * SEGMENT], &expected[..]);
        assert_eq!(&buf[5 * SEGMENT..], &[0xee; 3]);
        // No room for the tags: refused.
        let mut buf = vec![0u8; 2 * SEGMENT - 1];
        assert!(sealer.seal_segments(0, &mut buf, 2).is_err());
    }

    #[test]
    fn bytes_sealed_aside_open_only_in_their_context_and_resume_sealers_match() {
        let key = MasterKey::generate().unwrap();
        let keys = Keys::new(&key, &[]).unwrap();
        let sealed = keys.seal_aside(b"upload-1:100", b"not yet a part").unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"part"), "ciphertext only");
        assert_eq!(
            keys.open_aside(b"upload-1:100", &sealed).unwrap(),
            b"not yet a part"
        );
        assert!(keys.open_aside(b"upload-2:100", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(keys.open_aside(b"upload-1:100", &flipped).is_err());
        assert!(keys.open_aside(b"upload-1:100", &sealed[..20]).is_err());
        let empty = keys.seal_aside(b"c", b"").unwrap();
        assert_eq!(keys.open_aside(b"c", &empty).unwrap(), b"");

        // A sealer taken up again seals exactly as the first one.
        let sealer = keys.sealer().unwrap();
        let again = keys
            .resume_sealer(sealer.key_id(), sealer.prefix())
            .unwrap();
        let plain = vec![7u8; PLAIN + 3];
        let (mut a, mut b) = (vec![0u8; 2 * SEGMENT], vec![0u8; 2 * SEGMENT]);
        sealer.seal(0, &plain, true, &mut a).unwrap();
        again.seal(0, &plain, true, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            sealer.header(5)[..HEADER_USED],
            again.header(5)[..HEADER_USED]
        );
        assert!(sealer.header(5)[HEADER_USED..].iter().all(|b| *b == 0));
        let stranger = Keys::new(&MasterKey::generate().unwrap(), &[]).unwrap();
        assert!(stranger
            .resume_sealer(sealer.key_id(), sealer.prefix())
            .is_err());
    }

    #[test]
    fn empty_blob_is_one_authenticated_segment() {
        let keys = Keys::new(&MasterKey::generate().unwrap(), &[]).unwrap();
        let sealer = keys.sealer().unwrap();
        let mut sealed = [0u8; TAG];
        assert_eq!(sealer.seal(0, &[], true, &mut sealed).unwrap(), TAG);
        let opener = keys.opener(&sealer.header(0)).unwrap();
        assert_eq!(opener.open(0, &sealed, &mut []).unwrap(), 0);
        sealed[3] ^= 1;
        assert!(opener.open(0, &sealed, &mut []).is_err());
    }
}
