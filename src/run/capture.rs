//! Capturing a run's stdout and stderr under one shared byte limit.
//!
//! Both streams are read on their own threads as they arrive. Bytes beyond
//! the limit are not kept; the first byte over it raises a flag the
//! supervisor polls, and it stops the run (`output-limit`). Reading goes on
//! until the pipes close, so the writer never blocks on a full pipe.
//!
//! What is kept also goes, chunk by chunk, through a channel to the
//! supervising thread, which hands it to the caller's [`OutputSink`]
//! ([`Capture::deliver`]): the sink is called on one thread only, and a
//! reader left behind by an escaped process only feeds a closed channel.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::output::{OutputSink, Stream};

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
    chunks: Receiver<(Stream, Vec<u8>)>,
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
        let (sender, chunks) = channel();
        let spawn = |mut reader: Box<dyn Read + Send>,
                     into: Arc<Mutex<Captured>>,
                     stream: Stream,
                     sender: Sender<(Stream, Vec<u8>)>| {
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
                    let kept = &buf[..n.min(room)];
                    let mut captured = into.lock().unwrap_or_else(|e| e.into_inner());
                    captured.bytes.extend_from_slice(kept);
                    if !kept.is_empty() {
                        let _ = sender.send((stream, kept.to_vec()));
                    }
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
        spawn(
            Box::new(stdout),
            out.clone(),
            Stream::Stdout,
            sender.clone(),
        );
        spawn(Box::new(stderr), err.clone(), Stream::Stderr, sender);
        Capture {
            exceeded,
            out,
            err,
            open,
            chunks,
        }
    }

    /// Hands every chunk read so far to `sink`, in arrival order.
    pub fn deliver(&self, sink: &dyn OutputSink) {
        while let Ok((stream, bytes)) = self.chunks.try_recv() {
            sink.output(stream, &bytes);
        }
    }

    /// True once the output went over the limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }

    /// What was captured once both streams closed, or after `grace` even if
    /// a process that escaped every kill still holds one open (its reader
    /// thread is then left behind, reading into nothing that is kept).
    /// Everything captured has reached `sink` when this returns.
    pub fn finish(self, grace: Duration, sink: &dyn OutputSink) -> (Captured, Captured) {
        let deadline = Instant::now() + grace;
        while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            self.deliver(sink);
            std::thread::sleep(Duration::from_millis(2));
        }
        self.deliver(sink);
        let take = |c: &Arc<Mutex<Captured>>| {
            std::mem::take(&mut *c.lock().unwrap_or_else(|e| e.into_inner()))
        };
        (take(&self.out), take(&self.err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;

    /// Collects what a sink is handed.
    #[derive(Default)]
    struct Collect(RefCell<Vec<(Stream, Vec<u8>)>>);

    impl OutputSink for Collect {
        fn output(&self, stream: Stream, bytes: &[u8]) {
            self.0.borrow_mut().push((stream, bytes.to_vec()));
        }
    }

    #[test]
    fn the_limit_is_shared_and_flags_the_overflow() {
        let sink = Collect::default();
        let capture = Capture::start(&b"hello world"[..], &b"oops"[..], 8);
        let (out, err) = capture.finish(Duration::from_secs(5), &sink);
        assert_eq!(out.bytes.len() + err.bytes.len(), 8);
        assert!(out.truncated || err.truncated);
        // The sink got exactly what was kept, per stream.
        let got = sink.0.take();
        let of = |s: Stream| -> Vec<u8> {
            got.iter()
                .filter(|(x, _)| *x == s)
                .flat_map(|(_, b)| b.clone())
                .collect()
        };
        assert_eq!(of(Stream::Stdout), out.bytes);
        assert_eq!(of(Stream::Stderr), err.bytes);
        let capture = Capture::start(&b"ok"[..], &b""[..], 8);
        assert!(!capture.exceeded());
        let (out, _) = capture.finish(Duration::from_secs(5), &sink);
        assert_eq!(out.bytes, b"ok");
        assert_eq!(sink.0.take(), vec![(Stream::Stdout, b"ok".to_vec())]);
    }
}
