//! Capturing a run's stdout and stderr under one shared byte limit.
//!
//! Both streams are read on their own threads as they arrive. Bytes beyond
//! the limit are not kept; the first byte over it raises a flag the
//! supervisor polls, and it stops the run (`output-limit`). Reading goes on
//! until the pipes close, so the writer never blocks on a full pipe.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    out: Arc<Mutex<Captured>>,
    err: Arc<Mutex<Captured>>,
    open: Arc<AtomicUsize>,
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
        let open = Arc::new(AtomicUsize::new(2));
        let spawn = |mut reader: Box<dyn Read + Send>, into: Arc<Mutex<Captured>>| {
            let total = total.clone();
            let exceeded = exceeded.clone();
            let open = open.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let before = total.fetch_add(n as u64, Ordering::SeqCst);
                    let room = limit.saturating_sub(before) as usize;
                    let mut captured = into.lock().unwrap_or_else(|e| e.into_inner());
                    captured.bytes.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        captured.truncated = true;
                        exceeded.store(true, Ordering::SeqCst);
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        };
        let out = Arc::new(Mutex::new(Captured::default()));
        let err = Arc::new(Mutex::new(Captured::default()));
        spawn(Box::new(stdout), out.clone());
        spawn(Box::new(stderr), err.clone());
        Capture {
            exceeded,
            out,
            err,
            open,
        }
    }

    /// True once the output went over the limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }

    /// What was captured once both streams closed, or after `grace` even if
    /// a process that escaped every kill still holds one open (its reader
    /// thread is then left behind, reading into nothing that is kept).
    pub fn finish(self, grace: Duration) -> (Captured, Captured) {
        let deadline = Instant::now() + grace;
        while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let take = |c: &Arc<Mutex<Captured>>| {
            std::mem::take(&mut *c.lock().unwrap_or_else(|e| e.into_inner()))
        };
        (take(&self.out), take(&self.err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_shared_and_flags_the_overflow() {
        let capture = Capture::start(&b"hello world"[..], &b"oops"[..], 8);
        let (out, err) = capture.finish(Duration::from_secs(5));
        assert_eq!(out.bytes.len() + err.bytes.len(), 8);
        assert!(out.truncated || err.truncated);
        let capture = Capture::start(&b"ok"[..], &b""[..], 8);
        assert!(!capture.exceeded());
        let (out, _) = capture.finish(Duration::from_secs(5));
        assert_eq!(out.bytes, b"ok");
    }
}
