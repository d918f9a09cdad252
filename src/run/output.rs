//! Live output: each chunk of a script's stdout and stderr, handed as it
//! arrives to a sink the caller supplies, so the CLI can write through to
//! the terminal while the script prints and the service can store and
//! stream it. The sink sees exactly the bytes kept under the output limit,
//! in the order each stream produced them.

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The script's standard output.
    Stdout,
    /// The script's standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Receives a run's output as it arrives. Called on the thread that
/// supervises the run, never concurrently for one run.
pub trait OutputSink {
    /// One chunk of `stream` (never empty).
    fn output(&self, stream: Stream, bytes: &[u8]);
}

/// A sink that keeps nothing (the outcome still carries the output).
pub struct Discard;

impl OutputSink for Discard {
    fn output(&self, _: Stream, _: &[u8]) {}
}
