//! Being asked to stop: Ctrl-C (SIGINT), SIGTERM (what `timeout`, `kill` and CI runners
//! cancelling a job send) and SIGHUP (the terminal went away) all end a long-running command
//! the same clean way: the work is cancelled (a task stopped, a partial file removed) and ecrl
//! exits with the shell's code for that signal, 128 + its number (130, 143, 129).

use std::sync::atomic::{AtomicU8, Ordering};
use tokio::signal::unix::{signal, SignalKind};

/// The signal that ended the wait, once one has.
static RECEIVED: AtomicU8 = AtomicU8::new(0);

/// Resolves when one of the three signals arrives.
pub async fn interrupted() {
    let number = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(mut term), Ok(mut hup)) => tokio::select! {
            _ = tokio::signal::ctrl_c() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            libc::SIGINT
        }
    };
    RECEIVED.store(number as u8, Ordering::Relaxed);
}

/// The exit code for the signal [`interrupted`] saw (130 when it saw none).
pub fn exit_code() -> u8 {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => 128 + libc::SIGINT as u8,
        n => 128 + n,
    }
}

/// What the user would call the signal [`interrupted`] saw.
pub fn name() -> &'static str {
    match i32::from(RECEIVED.load(Ordering::Relaxed)) {
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "Ctrl-C",
    }
}
