//! A control group per local run: hard memory, pids and CPU limits, peak
//! memory, out-of-memory kills, and a way to kill every process of the run.
//!
//! cgroup v1 (a hierarchy per controller) and v2 (one unified hierarchy) are
//! both handled. Where no cgroup can be created (no permission, controllers
//! not delegated) the run falls back to rlimits, and the outcome says which
//! enforcement applied.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::limits::Limits;

const ROOT: &str = "/sys/fs/cgroup";
/// CFS period for the CPU quota, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// The controllers a run's limits need.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// True when `SCRIPTBOX_CGROUPS=off` keeps runs out of cgroups (for
/// machines, and tests, where cgroups must not be used).
pub fn disabled() -> bool {
    std::env::var_os("SCRIPTBOX_CGROUPS").is_some_and(|v| v == "off")
}

fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").is_file()
}

/// The hierarchy runs would use: `cgroup-v2` (unified), `cgroup-v1`, or
/// `None` when no cgroup file system is mounted.
pub fn host_version() -> Option<&'static str> {
    let root = Path::new(ROOT);
    if is_v2(root) {
        Some("cgroup-v2")
    } else if CONTROLLERS.iter().any(|c| root.join(c).is_dir()) {
        Some("cgroup-v1")
    } else {
        None
    }
}

/// Which of [`CONTROLLERS`] the hierarchy offers (v2: listed in the root's
/// `cgroup.controllers`; v1: a mounted hierarchy of that name).
pub fn host_controllers() -> Vec<&'static str> {
    let root = Path::new(ROOT);
    if is_v2(root) {
        let listed = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let listed: Vec<&str> = listed.split_whitespace().collect();
        CONTROLLERS
            .into_iter()
            .filter(|c| listed.contains(c))
            .collect()
    } else {
        CONTROLLERS
            .into_iter()
            .filter(|c| root.join(c).is_dir())
            .collect()
    }
}

/// The cgroup(s) of one run; removed when dropped.
pub struct RunCgroup {
    /// One directory per v1 controller, or the single v2 directory.
    dirs: Vec<PathBuf>,
    v2: bool,
    /// `cgroup.procs` of each directory, opened before the fork so the
    /// child can join with one `write` (nothing allocated after fork).
    procs: Vec<OwnedFd>,
}

/// CPU time per period, in microseconds, for the profile's cores (at
/// least the kernel's minimum of 1 ms).
fn quota_us(limits: &Limits) -> u64 {
    (limits.cpus * CPU_PERIOD_US as f64).round().max(1000.0) as u64
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    fs::write(path, value)
}

impl RunCgroup {
    /// Creates the cgroup for run `id` with `limits`, or `None` when this
    /// machine does not let us.
    pub fn create(id: &str, limits: &Limits) -> Option<RunCgroup> {
        if disabled() {
            return None;
        }
        match Self::try_create(id, limits) {
            Ok(cg) => Some(cg),
            Err(e) => {
                tracing::info!("no cgroup for the run ({e}); limits fall back to rlimits");
                None
            }
        }
    }

    /// Creates the cgroup for run `id` whatever `SCRIPTBOX_CGROUPS` says,
    /// with the reason when this machine does not let us (`scriptbox
    /// doctor` shows it).
    pub fn try_create(id: &str, limits: &Limits) -> std::io::Result<RunCgroup> {
        let root = Path::new(ROOT);
        if is_v2(root) {
            Self::create_v2(root, id, limits)
        } else {
            Self::create_v1(root, id, limits)
        }
    }

    fn create_v1(root: &Path, id: &str, limits: &Limits) -> std::io::Result<RunCgroup> {
        let mut controllers = CONTROLLERS.to_vec();
        if root.join("cpuacct").is_dir() && !root.join("cpu").join("cpuacct.usage").exists() {
            controllers.push("cpuacct");
        }
        for controller in &controllers {
            sweep(&own_v1(root, controller).join("scriptbox"));
        }
        let mut cg = RunCgroup {
            dirs: Vec::new(),
            v2: false,
            procs: Vec::new(),
        };
        for controller in controllers {
            let dir = own_v1(root, controller).join("scriptbox").join(id);
            fs::create_dir_all(&dir)?;
            cg.dirs.push(dir.clone());
            match controller {
                "memory" => {
                    write(
                        &dir.join("memory.limit_in_bytes"),
                        &limits.memory.to_string(),
                    )?;
                    // Memory plus swap equal to memory: no swap (only where
                    // the kernel accounts swap).
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &limits.memory.to_string())?;
                    }
                    let _ = write(&dir.join("memory.swappiness"), "0");
                }
                "pids" => write(&dir.join("pids.max"), &limits.pids.to_string())?,
                "cpuacct" => {}
                _ => {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota_us(limits).to_string())?;
                }
            }
        }
        cg.open_procs()?;
        Ok(cg)
    }

    fn create_v2(root: &Path, id: &str, limits: &Limits) -> std::io::Result<RunCgroup> {
        // Our own cgroup's parent must delegate the controllers; we create
        // `scriptbox/<id>` beside ourselves.
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .trim_start_matches('/');
        let own = root.join(rel);
        let parent = if rel.is_empty() {
            root
        } else {
            own.parent().unwrap_or(root)
        };
        let base = parent.join("scriptbox");
        fs::create_dir_all(&base)?;
        sweep(&base);
        write(&base.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
        let dir = base.join(id);
        fs::create_dir_all(&dir)?;
        let mut cg = RunCgroup {
            dirs: vec![dir.clone()],
            v2: true,
            procs: Vec::new(),
        };
        write(&dir.join("memory.max"), &limits.memory.to_string())?;
        write(&dir.join("memory.swap.max"), "0")?;
        write(&dir.join("pids.max"), &limits.pids.to_string())?;
        write(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", quota_us(limits)),
        )?;
        cg.open_procs()?;
        Ok(cg)
    }

    fn open_procs(&mut self) -> std::io::Result<()> {
        for dir in &self.dirs {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            self.procs.push(file.into());
        }
        Ok(())
    }

    /// Raw descriptors of the `cgroup.procs` files, for [`join_current`].
    pub fn procs_fds(&self) -> Vec<i32> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        if self.v2 { "cgroup-v2" } else { "cgroup-v1" }
    }

    /// True when the kernel killed a process of the run for memory.
    pub fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            self.dirs[0].join("memory.events")
        } else {
            self.dirs[0].join("memory.oom_control")
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        let kills = text.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
        });
        match kills {
            Some(n) => n > 0,
            // Older v1 kernels: having hit the limit is the best sign.
            None => !self.v2 && self.read_u64("memory.failcnt").unwrap_or(0) > 0,
        }
    }

    /// CPU time the run's processes used, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        if self.v2 {
            let stat = fs::read_to_string(self.dirs[0].join("cpu.stat")).ok()?;
            let usec: f64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            return Some(usec / 1e6);
        }
        self.dirs.iter().find_map(|d| {
            let ns: f64 = fs::read_to_string(d.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(ns / 1e9)
        })
    }

    /// The highest memory use of the run, in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        if self.v2 {
            self.read_u64("memory.peak")
        } else {
            self.read_u64("memory.max_usage_in_bytes")
        }
    }

    fn read_u64(&self, name: &str) -> Option<u64> {
        fs::read_to_string(self.dirs[0].join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends SIGKILL to every process in the run's cgroup, until none is
    /// left (processes forked meanwhile are caught by the next pass).
    pub fn kill_all(&self) {
        for _ in 0..100 {
            let procs = self
                .dirs
                .iter()
                .flat_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
                .flat_map(|t| {
                    t.lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            if procs.is_empty() {
                return;
            }
            for pid in procs {
                // SAFETY: kill has no memory effects; a pid that has exited
                // meanwhile only makes it fail.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.kill_all();
        self.procs.clear();
        for dir in &self.dirs {
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// The v1 hierarchy directory of `controller` that scriptbox itself is in
/// (so runs nest under any limit set on scriptbox's own service).
fn own_v1(root: &Path, controller: &str) -> PathBuf {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let names = parts.next()?;
            let path = parts.next()?;
            names
                .split(',')
                .any(|n| n == controller)
                .then(|| path.trim_start_matches('/').to_string())
        })
        .unwrap_or_default();
    let mount = root.join(controller);
    let nested = mount.join(&rel);
    if nested.is_dir() { nested } else { mount }
}

/// Removes cgroups left by runs whose scriptbox died (a cgroup with no
/// process left can be removed; one still in use refuses). Only those older
/// than a minute: a new run's cgroup is empty until its process joins.
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60));
        if old && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Moves the calling process into the cgroups whose `cgroup.procs` are
/// open as `fds`. Called in the child between fork and exec, so it only
/// calls `write`, which is async-signal-safe.
pub fn join_current(fds: &[i32]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: writes one byte from a static buffer to a descriptor the
        // parent opened; "0" means "the writing process".
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
