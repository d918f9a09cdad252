//! A run's live output: the pipeline's sink sends each chunk to a writer
//! task that stores it in batches (every 20 ms or 64 KiB), never splitting
//! a UTF-8 character between two stored chunks, and tells the [`LogBus`];
//! Server-Sent Events streams read what is stored after their last event
//! and wait on the bus (or a one-second poll) for more. One path serves
//! live runs, resumed streams and replays of finished runs alike.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::store::{Claim, Store};
use crate::env::build::BuildProgress;
use crate::pipeline::RunObserver;
use crate::run::output::{OutputSink, Stream};

/// Flush stored output at least this often while a run prints.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Or once this much is pending.
const FLUSH_BYTES: usize = 64 * 1024;

/// Tells streams that a run has new output or has ended.
pub struct LogBus(broadcast::Sender<String>);

impl LogBus {
    /// A bus with room for a burst of notifications (a slow listener that
    /// misses some just reads the store again).
    pub fn new() -> LogBus {
        LogBus(broadcast::channel(4096).0)
    }

    /// Run `id` has more output, or ended.
    pub fn changed(&self, id: &str) {
        let _ = self.0.send(id.to_string());
    }

    /// A listener for every run's changes.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.0.subscribe()
    }
}

/// Waits until `changes` reports a change of run `id` (or reports that it
/// missed some, which may include one of `id`'s). Changes of other runs are
/// skipped here, so a waiter reads the store only for its own run.
pub async fn changed(changes: &mut broadcast::Receiver<String>, id: &str) {
    loop {
        match changes.recv().await {
            Ok(changed) if changed == id => return,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for LogBus {
    fn default() -> LogBus {
        LogBus::new()
    }
}

/// The pipeline's observer for a service run: output goes to the run's
/// writer task; build progress is not kept.
pub struct ChannelObserver(pub mpsc::UnboundedSender<(Stream, Vec<u8>)>);

impl OutputSink for ChannelObserver {
    fn output(&self, stream: Stream, bytes: &[u8]) {
        let _ = self.0.send((stream, bytes.to_vec()));
    }
}
impl BuildProgress for ChannelObserver {}
impl RunObserver for ChannelObserver {}

/// How many bytes at the end of `bytes` are an incomplete UTF-8 character
/// (0 to 3), to be held back until the rest arrives.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back
        }
        let needed = match b {
            0b1100_0000..=0b1101_1111 => 2,
            0b1110_0000..=0b1110_1111 => 3,
            0b1111_0000..=0b1111_0111 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Output waiting to be stored: per stream, in arrival order, merged.
#[derive(Default)]
struct Pending {
    chunks: Vec<(Stream, Vec<u8>)>,
    bytes: usize,
    /// The incomplete character held back per stream.
    carry: [Vec<u8>; 2],
}

impl Pending {
    fn push(&mut self, stream: Stream, data: Vec<u8>) {
        let slot = stream as usize;
        let mut data = {
            let mut joined = std::mem::take(&mut self.carry[slot]);
            joined.extend_from_slice(&data);
            joined
        };
        let tail = incomplete_tail(&data);
        self.carry[slot] = data.split_off(data.len() - tail);
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        match self.chunks.last_mut() {
            Some((s, last)) if *s == stream => last.extend_from_slice(&data),
            _ => self.chunks.push((stream, data)),
        }
    }

    /// Everything held back goes out as it is (the stream ended).
    fn release_carry(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.carry[stream as usize]);
            if !rest.is_empty() {
                self.bytes += rest.len();
                self.chunks.push((stream, rest));
            }
        }
    }

    fn take(&mut self) -> Vec<(String, Vec<u8>)> {
        self.bytes = 0;
        std::mem::take(&mut self.chunks)
            .into_iter()
            .map(|(s, d)| (s.as_str().to_string(), d))
            .collect()
    }
}

/// Stores what arrives on `chunks` for run `id` under `claim` until the
/// sender is dropped (the run ended), telling `bus` after each batch.
/// Returns when everything is stored. Once the claim no longer holds the
/// run (it was declared lost), the rest is dropped.
pub async fn write_output(
    store: Store,
    bus: std::sync::Arc<LogBus>,
    id: String,
    claim: Claim,
    mut chunks: mpsc::UnboundedReceiver<(Stream, Vec<u8>)>,
) {
    let mut held = true;
    let mut pending = Pending::default();
    let mut open = true;
    while open {
        match chunks.recv().await {
            Some((stream, data)) => pending.push(stream, data),
            None => open = false,
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while open && pending.bytes < FLUSH_BYTES {
            tokio::select! {
                next = chunks.recv() => match next {
                    Some((stream, data)) => pending.push(stream, data),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !open {
            pending.release_carry();
        }
        let batch = pending.take();
        if batch.is_empty() || !held {
            continue;
        }
        // A store that is restarting gets a minute; output is never worth
        // failing the run over.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut backoff = Duration::from_millis(100);
        loop {
            match store.append_output(&id, &claim, &batch).await {
                Ok(stored) => {
                    held = stored;
                    break;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("storing output of run {id}: {e}; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!("output of run {id} lost: {e}");
                    break;
                }
            }
        }
        bus.changed(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_are_never_split_between_chunks() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_tail(&euro[..1]), 1);
        assert_eq!(incomplete_tail(&euro[..2]), 2);
        assert_eq!(incomplete_tail(euro), 0);
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(b"\xff"), 0);
        let mut p = Pending::default();
        p.push(Stream::Stdout, [b"price ", &euro[..2]].concat());
        p.push(Stream::Stderr, b"warn\n".to_vec());
        p.push(Stream::Stdout, [&euro[2..], b"5\n"].concat());
        let batch = p.take();
        assert_eq!(
            batch,
            vec![
                ("stdout".to_string(), b"price ".to_vec()),
                ("stderr".to_string(), b"warn\n".to_vec()),
                ("stdout".to_string(), "€5\n".as_bytes().to_vec()),
            ]
        );
        p.push(Stream::Stdout, euro[..1].to_vec());
        assert!(p.take().is_empty());
        p.release_carry();
        assert_eq!(p.take(), vec![("stdout".to_string(), euro[..1].to_vec())]);
    }
}
