//! The limits of one run, taken from a policy profile, and everything
//! derived from them. Every limit is explicit here, so both backends
//! enforce the same numbers.

use std::time::Duration;

use serde::Serialize;

use crate::policy::{Isolation, Profile};

/// Open files per process.
pub const NOFILE: u64 = 256;

/// The limits of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Memory in bytes; swap is never allowed on top.
    pub memory: u64,
    /// CPU cores (fractions allowed).
    pub cpus: f64,
    /// Processes and threads.
    pub pids: u32,
    /// Wall-clock time.
    #[serde(serialize_with = "secs")]
    pub wall_time: Duration,
    /// Bytes of stdout plus stderr kept; more stops the run.
    pub output: u64,
    /// Size of the writable `/tmp`, and the largest file a script may write.
    pub tmp: u64,
    /// What isolates the run from the host's kernel.
    pub isolation: Isolation,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl From<&Profile> for Limits {
    fn from(p: &Profile) -> Limits {
        Limits {
            memory: p.memory,
            cpus: p.cpus,
            pids: p.pids,
            wall_time: p.wall_time,
            output: p.output,
            tmp: p.tmp,
            isolation: p.isolation,
        }
    }
}

impl Limits {
    /// CPU seconds a run may use: 40% of what its cores could do in the
    /// wall time (at least one second), so that a script spinning on every
    /// core it has is stopped for CPU (`cpu-limit`) well before the wall
    /// clock runs out (`timed-out`), even on a busy machine and even when it
    /// ignores SIGXCPU and only the hard limit (one second more) stops it;
    /// a sleeping script never is.
    pub fn cpu_seconds(&self) -> u64 {
        let full = self.wall_time.as_secs_f64() * self.cpus.max(0.01);
        (full * 0.4).floor().max(1.0) as u64
    }

    /// Thread counts for numeric libraries: the profile's cores, rounded
    /// up, so that numpy does not start a thread per host core and fail to
    /// create them under the pids limit.
    pub fn threads(&self) -> u32 {
        (self.cpus.ceil() as u32).max(1)
    }

    /// The environment every run gets: nothing from the host.
    pub fn environment(&self) -> Vec<(String, String)> {
        let threads = self.threads().to_string();
        vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/tmp".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("OMP_NUM_THREADS".into(), threads.clone()),
            ("OPENBLAS_NUM_THREADS".into(), threads.clone()),
            ("MKL_NUM_THREADS".into(), threads.clone()),
            ("NUMEXPR_MAX_THREADS".into(), threads),
            ("MPLBACKEND".into(), "Agg".into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_comes_before_the_wall_clock() {
        let limits = Limits {
            memory: 1 << 28,
            cpus: 0.5,
            pids: 32,
            wall_time: Duration::from_secs(30),
            output: 1 << 20,
            tmp: 1 << 24,
            isolation: Isolation::Namespaces,
        };
        assert_eq!(limits.cpu_seconds(), 6);
        assert_eq!(limits.threads(), 1);
        assert!(
            limits
                .environment()
                .contains(&("OMP_NUM_THREADS".into(), "1".into()))
        );
    }
}
