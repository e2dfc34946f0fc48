//! How far a long store job (a garbage collection, `ecrl fsck`) has got, for the client that
//! follows it: the job counts, the stream sends what changed a few times a second.

use ecrl::api::system::StoreProgress;
use std::sync::Mutex;

#[derive(Default)]
pub struct Progress {
    /// The state, and whether it moved since it was last taken.
    state: Mutex<(StoreProgress, bool)>,
}

impl Progress {
    /// A new step, of `total` items (0 when not known).
    pub fn step(&self, step: &str, total: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = StoreProgress {
                step: step.to_string(),
                done: 0,
                total,
                bytes: 0,
            };
            s.1 = true;
        }
    }

    /// `items` more of the step done, `bytes` with them.
    pub fn add(&self, items: u64, bytes: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.0.done += items;
            s.0.bytes += bytes;
            s.1 = true;
        }
    }

    /// The state, when it moved since the last call.
    pub fn take_changed(&self) -> Option<StoreProgress> {
        let mut s = self.state.lock().ok()?;
        std::mem::replace(&mut s.1, false).then(|| s.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_moved_is_taken() {
        let p = Progress::default();
        assert_eq!(p.take_changed(), None);
        p.step("checking blobs", 3);
        p.add(1, 10);
        p.add(1, 5);
        let got = p.take_changed().unwrap();
        assert_eq!(
            (got.step.as_str(), got.done, got.total, got.bytes),
            ("checking blobs", 2, 3, 15)
        );
        assert_eq!(p.take_changed(), None);
        p.add(1, 0);
        assert_eq!(p.take_changed().unwrap().done, 3);
    }
}
