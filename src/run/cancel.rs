//! Per-run cancellation: a [`CancelToken`] handed to the backend of one
//! run, which its supervising loop polls, so that one process can run many
//! scripts at once and stop any one of them alone.
//!
//! The CLI maps SIGINT and SIGTERM onto its run's token
//! ([`CancelToken::cancel_on_signals`]); the service cancels a run's token
//! when asked over the API. Either way the backend stops the script and
//! cleans up (processes, cgroup, container) exactly as after a limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The token's value when nothing asked to cancel.
const NOT_CANCELLED: usize = 0;
/// The token's value when a caller asked (not a signal). Signal numbers
/// are below 65, so they never collide with it.
const REQUESTED: usize = 1 << 16;

/// Why a run was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The process running scriptbox received this signal (the CLI).
    Signal(i32),
    /// A caller asked for it (the service's cancel).
    Requested,
}

/// Asks one run to stop. Cloning shares the token: cancelling any clone
/// cancels the run. The state is one atomic word, so cancelling is
/// async-signal-safe.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicUsize>);

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the run to stop. The first reason given here wins (a signal
    /// registered by [`CancelToken::cancel_on_signals`] overwrites it).
    pub fn cancel(&self, reason: CancelReason) {
        let value = match reason {
            CancelReason::Signal(sig) => sig.clamp(1, 64) as usize,
            CancelReason::Requested => REQUESTED,
        };
        let _ = self
            .0
            .compare_exchange(NOT_CANCELLED, value, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why the run was asked to stop, if it was.
    pub fn requested(&self) -> Option<CancelReason> {
        match self.0.load(Ordering::SeqCst) {
            NOT_CANCELLED => None,
            REQUESTED => Some(CancelReason::Requested),
            sig => Some(CancelReason::Signal(sig as i32)),
        }
    }

    /// Makes SIGINT and SIGTERM to this process cancel the run (the
    /// handler only stores the signal's number in the token, through
    /// signal-hook, which is async-signal-safe). Once registered, those
    /// signals no longer end the process by default.
    pub fn cancel_on_signals(&self) -> std::io::Result<()> {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register_usize(sig, self.0.clone(), sig as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_a_token_and_the_first_reason_wins() {
        let a = CancelToken::new();
        let b = a.clone();
        let other = CancelToken::new();
        assert_eq!(a.requested(), None);
        b.cancel(CancelReason::Signal(libc::SIGTERM));
        a.cancel(CancelReason::Requested);
        assert_eq!(a.requested(), Some(CancelReason::Signal(libc::SIGTERM)));
        assert_eq!(other.requested(), None);
        other.cancel(CancelReason::Requested);
        assert_eq!(other.requested(), Some(CancelReason::Requested));
    }
}
