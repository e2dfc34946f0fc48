//! Clients that try to exhaust the registry: connections that never finish their request
//! head, bodies and responses that stall, floods of connections, and requests framed two
//! ways. Each test runs the real `ecrld` with short deadlines (and, for the flood, under a
//! low open-file limit) so it takes seconds.

mod common;

use common::registry::registry_address;
use common::Env;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Starts ecrld with `config` as its config file, under an open-file limit of `nofile`
/// (soft and hard) when given; returns it and its registry address.
fn daemon(env: &Env, config: &str, nofile: Option<u64>) -> (common::Daemon, String) {
    let path = env.write_config(config);
    let mut command = env.ecrld_command(&["--config", path.to_str().unwrap()]);
    if let Some(n) = nofile {
        common::limit_open_files(&mut command, n);
    }
    let daemon = env.spawn_daemon_from(command);
    let address = registry_address(env);
    (daemon, address)
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the registry closes the connection; returns what came and how long it took.
fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the registry did not close the connection after {:?}: {e}",
                started.elapsed()
            ),
        }
    }
    (all, started.elapsed())
}

/// True while the registry keeps the connection open (nothing to read, no EOF).
fn still_open(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let open =
        matches!(stream.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

/// Raises this test process's own soft open-file limit to its hard one (a flood needs
/// thousands of sockets).
fn raise_own_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn half_sent_heads_are_closed_at_the_head_deadline_and_idle_ones_at_the_idle_deadline() {
    let env = Env::new();
    let (_daemon, address) = daemon(
        &env,
        "registry:\n  head_timeout: 1s\n  idle_timeout: 3s\n",
        None,
    );
    let mut silent = connect(&address);
    let mut partial: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&address);
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // A connection that completed a request and then waits: the idle deadline, not the
    // head deadline, applies to it.
    let mut idle = connect(&address);
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let idle_since = Instant::now();

    let (_, took) = read_to_close(&mut silent);
    assert!(
        took < Duration::from_secs(3),
        "silent connection closed after {took:?}"
    );
    for s in &mut partial {
        let (got, took) = read_to_close(s);
        assert!(
            took < Duration::from_secs(3),
            "half-sent head closed after {took:?}"
        );
        assert!(
            got.is_empty(),
            "no response to a head never finished: {got:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(idle_since.elapsed()));
    assert!(
        still_open(&mut idle),
        "an idle connection was closed at the head deadline"
    );
    let (_, _) = read_to_close(&mut idle);
    let took = idle_since.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "idle connection closed after {took:?}, configured 3s"
    );
}

#[test]
fn a_stalled_upload_body_is_cut_after_the_body_timeout() {
    let env = Env::new();
    let (_daemon, address) = daemon(&env, "registry:\n  body_timeout: 1s\n", None);
    let client = reqwest::blocking::Client::new();
    let started = client
        .post(format!("http://{address}/v2/abuse/stall/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_string();

    let mut stream = connect(&address);
    write!(
        stream,
        "PATCH {location} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 100000\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[7u8; 1000]).unwrap();
    let (response, took) = read_to_close(&mut stream);
    assert!(
        took < Duration::from_secs(5),
        "stalled body held its connection for {took:?}, configured 1s"
    );
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.is_empty() || !text.starts_with("HTTP/1.1 2"),
        "a stalled body must not succeed: {text}"
    );
}

#[test]
fn a_response_the_client_does_not_read_is_cut_after_the_write_timeout() {
    let env = Env::new();
    let (_daemon, address) = daemon(&env, "registry:\n  write_timeout: 1s\n", None);
    let blob: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let digest = common::registry::sha256_digest(&blob);
    let client = reqwest::blocking::Client::new();
    let pushed = client
        .post(format!(
            "http://{address}/v2/abuse/big/blobs/uploads/?digest={digest}"
        ))
        .body(blob.clone())
        .send()
        .unwrap();
    assert_eq!(pushed.status(), 201);

    let mut stream = connect(&address);
    write!(
        stream,
        "GET /v2/abuse/big/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    // Not reading: the registry's writes block, then its deadline passes.
    std::thread::sleep(Duration::from_secs(4));
    let (got, _) = read_to_close(&mut stream);
    assert!(
        got.len() < blob.len(),
        "the whole blob arrived ({} bytes) though the client stopped reading",
        got.len()
    );
}

#[test]
fn a_flood_of_half_open_connections_at_the_cap_leaves_the_owner_served() {
    let have = raise_own_nofile();
    assert!(
        have >= 4_000,
        "this test needs 4000 open files, the hard limit is {have}"
    );
    let env = Env::new();
    // Under 512 descriptors ecrld keeps 256 for itself: 256 connections at most.
    let (daemon, address) = daemon(&env, "registry:\n  head_timeout: 30s\n", Some(512));
    let log = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("ecrld-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap_or_default();
    assert!(log.contains("max_connections=256"), "{log}");

    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..3_000 {
        let mut s = TcpStream::connect(&address).expect("the flood connects");
        let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: a");
        flood.push(s);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let asked = Instant::now();
        let response = client
            .get(format!("http://{address}/v2/"))
            .send()
            .expect("the owner's request is answered during the flood");
        assert_eq!(response.status(), 200);
        slowest = slowest.max(asked.elapsed());
        // More of the flood between the owner's requests.
        for _ in 0..20 {
            if let Ok(s) = TcpStream::connect(&address) {
                flood.push(s);
            }
        }
    }
    let fds = open_fds(daemon.pid());
    assert!(
        fds < 512,
        "ecrld holds {fds} descriptors under a limit of 512"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "the owner's slowest request took {slowest:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the flood test took {:?}",
        started.elapsed()
    );
    drop(flood);
}

fn raw_response(address: &str, request: &[u8]) -> String {
    let mut stream = connect(address);
    stream.write_all(request).unwrap();
    let (got, _) = read_to_close(&mut stream);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_request_with_both_content_length_and_chunked_is_refused_and_closed() {
    let env = Env::new();
    let (_daemon, address) = daemon(&env, "", None);
    for head in [
        "POST /v2/abuse/te/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v2/abuse/te/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: 5\r\n\r\n0\r\n\r\n",
        // Behind a first, well-framed request on the same connection.
        "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nPOST /v2/abuse/te/blobs/uploads/ HTTP/1.1\r\n\
         Host: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        // read_to_close also proves the connection is closed after the refusal.
        let response = raw_response(&address, head.as_bytes());
        let last = response
            .rfind("HTTP/1.1 ")
            .map(|i| &response[i..])
            .unwrap_or_default();
        assert!(last.starts_with("HTTP/1.1 400"), "{response}");
        assert!(last.contains("\"UNSUPPORTED\""), "{response}");
        assert!(
            last.contains("Content-Length and Transfer-Encoding"),
            "{response}"
        );
    }
    // Chunked alone is fine.
    let response = raw_response(
        &address,
        b"POST /v2/abuse/te/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
}

#[test]
fn a_half_sent_head_does_not_hold_up_shutdown() {
    let env = Env::new();
    let (mut daemon, address) = daemon(&env, "registry:\n  head_timeout: 60s\n", None);
    let mut partial = connect(&address);
    partial
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = connect(&address);
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).unwrap() > 0);
    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        asked.elapsed()
    );
    let (_, _) = read_to_close(&mut partial);
}
