//! Follows the HTTP/1.1 message framing of the bytes a registry connection reads, to find the
//! requests that carry both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1: a server
//! may refuse them, and must close the connection after).
//!
//! hyper reads such a request by its `Transfer-Encoding` and drops `Content-Length` before
//! the handler sees the headers, so the registry cannot tell them apart from a plain chunked
//! request; a proxy in front that framed the same bytes by `Content-Length` would be out of
//! step with ecrld (request smuggling). This scanner sees every byte hyper reads, in order,
//! and counts request heads as hyper does: it skips request bodies by their length or their
//! chunks, so the n-th head it reports is the n-th request hyper dispatches. When it meets
//! framing it does not follow (a bad length, an upgrade), it stops: hyper refuses such bytes
//! itself, and a scanner that might be out of step must not refuse anything.
//!
//! It owns no I/O and no HTTP types: `conn` feeds it bytes and asks which head was bad.

/// Longest header line kept in full: enough for any `Content-Length` or `Transfer-Encoding`
/// value a client sends; longer lines are only looked at for their name.
const LINE_KEEP: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a request head; `lines` counts its lines so far (the request line first).
    Head {
        lines: u32,
    },
    /// Skipping a body of known length.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    ChunkEnd,
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// Framing not followed any more.
    Lost,
}

/// The scanner. Feed it every byte read from a connection, in order.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    line_long: bool,
    /// Of the head being read: its Content-Length, whether it has Transfer-Encoding.
    length: Option<u64>,
    chunked: bool,
    bad_length: bool,
    /// Heads read completely so far.
    heads: u64,
    /// The index (from 0) of the first head with both Content-Length and Transfer-Encoding.
    first_ambiguous: Option<u64>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Head { lines: 0 },
            line: Vec::new(),
            line_long: false,
            length: None,
            chunked: false,
            bad_length: false,
            heads: 0,
            first_ambiguous: None,
        }
    }
}

impl Scanner {
    /// The index (0 for the connection's first request) of the first request that carried
    /// both `Content-Length` and `Transfer-Encoding`, once its head has been read.
    pub fn first_ambiguous(&self) -> Option<u64> {
        self.first_ambiguous
    }

    /// True once the scanner has nothing more to tell (it lost the framing, or found an
    /// ambiguous request, after which the connection is closed).
    pub fn done(&self) -> bool {
        self.state == State::Lost || self.first_ambiguous.is_some()
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.done() {
            match self.state {
                State::Body(left) | State::ChunkData(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    let left = left - n;
                    self.state = match (&self.state, left) {
                        (State::Body(_), 0) => State::Head { lines: 0 },
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        (_, left) => State::ChunkData(left),
                    };
                }
                _ => {
                    // Line-based states: take bytes up to the end of the line.
                    let end = bytes.iter().position(|&b| b == b'\n');
                    let (part, rest) = match end {
                        Some(i) => (&bytes[..i], &bytes[i + 1..]),
                        None => (bytes, &[][..]),
                    };
                    let room = LINE_KEEP.saturating_sub(self.line.len());
                    self.line.extend_from_slice(&part[..part.len().min(room)]);
                    self.line_long |= part.len() > room;
                    bytes = rest;
                    if end.is_some() {
                        let mut line = std::mem::take(&mut self.line);
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        self.line(&line);
                        line.clear();
                        self.line = line;
                        self.line_long = false;
                    }
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        match self.state {
            State::Head { lines } => self.head_line(lines, line),
            State::ChunkSize => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                self.state = match size {
                    _ if self.line_long => State::Lost,
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Lost,
                };
            }
            State::ChunkEnd => {
                self.state = if line.is_empty() {
                    State::ChunkSize
                } else {
                    State::Lost
                };
            }
            State::Trailers => {
                if line.is_empty() {
                    self.state = State::Head { lines: 0 };
                }
            }
            State::Body(_) | State::ChunkData(_) | State::Lost => {}
        }
    }

    fn head_line(&mut self, lines: u32, line: &[u8]) {
        if line.is_empty() {
            if lines == 0 {
                // Blank lines before a request line are ignored (RFC 9112 §2.2).
                return;
            }
            self.end_of_head();
            return;
        }
        self.state = State::Head { lines: lines + 1 };
        if lines == 0 {
            return; // the request line
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (parsed, self.length) {
                (Some(n), None) if !self.line_long => self.length = Some(n),
                (Some(n), Some(m)) if n == m && !self.line_long => {}
                _ => self.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.chunked = true;
        }
    }

    fn end_of_head(&mut self) {
        let index = self.heads;
        self.heads += 1;
        let (length, chunked, bad_length) = (self.length, self.chunked, self.bad_length);
        self.length = None;
        self.chunked = false;
        self.bad_length = false;
        if chunked && (length.is_some() || bad_length) {
            self.first_ambiguous = Some(index);
            return;
        }
        self.state = match (chunked, length) {
            // Any Transfer-Encoding but chunked last is refused by hyper and ends the
            // connection, so "chunked" is the only body framing left to follow.
            (true, _) => State::ChunkSize,
            _ if bad_length => State::Lost,
            (false, Some(n)) if n > 0 => State::Body(n),
            (false, _) => State::Head { lines: 0 },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(input: &[u8], piece: usize) -> Scanner {
        let mut scanner = Scanner::default();
        for chunk in input.chunks(piece) {
            scanner.feed(chunk);
        }
        scanner
    }

    fn every_split(input: &[u8]) -> Vec<Scanner> {
        [1, 2, 3, 7, 64, input.len().max(1)]
            .into_iter()
            .map(|n| scan_in_pieces(input, n))
            .collect()
    }

    #[test]
    fn both_length_and_chunked_is_found_in_either_order() {
        for head in [
            "PATCH /v2/a/blobs/uploads/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PATCH /v2/a/blobs/uploads/x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            "PUT /x HTTP/1.1\r\nTRANSFER-ENCODING: gzip, chunked\r\nCONTENT-LENGTH:0\r\n\r\n",
        ] {
            for scanner in every_split(head.as_bytes()) {
                assert_eq!(scanner.first_ambiguous(), Some(0), "{head:?}");
            }
        }
    }

    #[test]
    fn bodies_are_skipped_so_the_right_request_is_named() {
        // A body that looks like headers, a chunked body, then the ambiguous third request.
        let body = "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        let input = format!(
            "PUT /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
            PATCH /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1a\r\nContent-Length: 9\r\n\r\nxxxxx\r\n0\r\nTrailer: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: x\r\n\r\n\
            PATCH /d HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            body.len()
        );
        for scanner in every_split(input.as_bytes()) {
            assert_eq!(scanner.first_ambiguous(), Some(3));
        }
    }

    #[test]
    fn plain_requests_are_never_ambiguous() {
        let input = b"\r\nGET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n\
            POST /v2/a/blobs/uploads/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
            PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\nabcd\r\n0\r\n\r\n\
            PUT /v2/a/blobs/uploads/u?digest=x HTTP/1.1\r\nContent-Length: 4\r\n\r\nwxyz";
        for scanner in every_split(input) {
            assert_eq!(scanner.first_ambiguous(), None);
            assert!(!scanner.done());
            assert_eq!(scanner.heads, 4);
        }
    }

    #[test]
    fn framing_it_cannot_follow_stops_it() {
        let mut scanner = Scanner::default();
        scanner.feed(b"PUT /a HTTP/1.1\r\nContent-Length: x\r\n\r\nPUT /b HTTP/1.1\r\n");
        assert!(scanner.done());
        assert_eq!(scanner.first_ambiguous(), None);
        let mut scanner = Scanner::default();
        scanner.feed(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(scanner.done());
        assert_eq!(scanner.first_ambiguous(), None);
    }
}
