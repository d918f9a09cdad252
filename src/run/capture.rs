//! Capturing a run's stdout and stderr under one shared byte limit.
//!
//! Both streams are read on their own threads as they arrive. Bytes beyond
//! the limit are not kept; the first byte over it raises a flag the
//! supervisor polls, and it stops the run (`output-limit`). Reading goes on
//! until the pipes close, so the writer never blocks on a full pipe.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// One captured stream.
#[derive(Debug, Default)]
pub struct Captured {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// True when some bytes were dropped at the limit.
    pub truncated: bool,
}

/// stdout and stderr being read.
pub struct Capture {
    exceeded: Arc<AtomicBool>,
    out: JoinHandle<Captured>,
    err: JoinHandle<Captured>,
}

impl Capture {
    /// Starts reading `stdout` and `stderr`, keeping at most `limit` bytes
    /// of the two together.
    pub fn start<R1, R2>(stdout: R1, stderr: R2, limit: u64) -> Capture
    where
        R1: Read + Send + 'static,
        R2: Read + Send + 'static,
    {
        let total = Arc::new(AtomicU64::new(0));
        let exceeded = Arc::new(AtomicBool::new(false));
        let spawn = |mut reader: Box<dyn Read + Send>| {
            let total = total.clone();
            let exceeded = exceeded.clone();
            std::thread::spawn(move || {
                let mut captured = Captured::default();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let before = total.fetch_add(n as u64, Ordering::SeqCst);
                    let room = limit.saturating_sub(before) as usize;
                    captured.bytes.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        captured.truncated = true;
                        exceeded.store(true, Ordering::SeqCst);
                    }
                }
                captured
            })
        };
        let out = spawn(Box::new(stdout));
        let err = spawn(Box::new(stderr));
        Capture { exceeded, out, err }
    }

    /// True once the output went over the limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }

    /// Waits for both streams to close.
    pub fn finish(self) -> (Captured, Captured) {
        (
            self.out.join().unwrap_or_default(),
            self.err.join().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_shared_and_flags_the_overflow() {
        let capture = Capture::start(&b"hello world"[..], &b"oops"[..], 8);
        let (out, err) = capture.finish();
        assert_eq!(out.bytes.len() + err.bytes.len(), 8);
        assert!(out.truncated || err.truncated);
        let capture = Capture::start(&b"ok"[..], &b""[..], 8);
        assert!(!capture.exceeded());
        let (out, _) = capture.finish();
        assert_eq!(out.bytes, b"ok");
    }
}
