//! The local backend: the script runs under bubblewrap (`bwrap`) on the
//! host, in the venv layers of its environment.
//!
//! The whole jail is set up here, in [`jail_args`] and [`pre_exec`], and
//! finished by the init, in [`MountPlan::apply`]:
//! - new pid, net, ipc, uts and cgroup namespaces and a new mount namespace
//!   whose root is empty but for read-only binds of `/usr` (and the
//!   merged-`/usr` links), and, at neutral paths ([`super::view`]), the
//!   interpreter's prefix, the environment's layers, the run's venv and a
//!   directory holding only the script; a fresh `/proc`, a minimal `/dev`,
//!   and a size-limited tmpfs `/tmp`. No host home, no host `/etc` beyond
//!   the loader cache and time zone;
//! - a clean environment ([`Limits::environment`]);
//! - a seccomp filter ([`super::seccomp`], data in `src/data/seccomp.json`)
//!   that the init installs once it has mounted the view, before it starts
//!   anything, so it covers `setpriv` and Python: namespaces, mounts,
//!   ptrace, keyrings, bpf, io_uring, kernel modules and the like return
//!   EPERM;
//! - a uid and gid of its own for every run (never the host's root, even
//!   when scriptbox runs as root; then bwrap sets up the namespaces with
//!   root's rights and `setpriv` drops to that uid, clears groups, empties
//!   every capability set and sets no-new-privs before Python starts);
//! - memory, pids and CPU through a cgroup where the machine lets us
//!   ([`RunCgroup`]), rlimits always (core 0, open files, file size, CPU
//!   time, and processes per uid; memory when there is no cgroup);
//! - scriptbox's init ([`super::init`]) as the pid namespace's first
//!   process (`--as-pid-1`), which reports how the script ended;
//! - the whole process tree killed at the wall limit: when bwrap is killed
//!   its init dies with it, and the kernel then kills every process in the
//!   namespace, double-forked ones included.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::cancel::{CancelReason, CancelToken};
use super::capture::Capture;
use super::cgroup::{RunCgroup, join_current};
use super::gvisor;
use super::init::{Ended, InitReport};
use super::limits::{Limits, NOFILE};
use super::outcome::{Execution, Status, signal_name};
use super::output::OutputSink;
use super::seccomp::Filters;
use super::view::{EnvView, MountPlan, Tree};
use super::{ExecRequest, RunError};
use crate::egress::EgressSession;
use crate::egress::session::SANDBOX_DIR;
use crate::env::EnvLocation;
use crate::policy::Isolation;

/// The first uid handed to runs; each run gets one of 65536 from here.
const UID_BASE: u32 = 200_000;
/// Where the script's directory appears in the sandbox.
pub const SCRIPT_DIR: &str = "/sandbox";

/// Claims a uid no other run on this machine holds, with a lock file in
/// `<state>/uids/` held for the run (two runs sharing a uid would share
/// the per-uid process limit and keyring).
fn claim_uid(state: &Path, seed: u128) -> Result<(u32, fs::File), RunError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = state.join("uids");
    fs::create_dir_all(&dir).map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
    for i in 0..65_536u128 {
        let uid = UID_BASE + ((seed + i) % 65_536) as u32;
        let path = dir.join(format!("{uid}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| RunError::Io(format!("{}: {e}", path.display())))?;
        if file.try_lock().is_ok() {
            return Ok((uid, file));
        }
    }
    Err(RunError::Io("every sandbox uid is in use".into()))
}

/// Finds `bwrap` on `PATH`.
pub fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

/// `--perms 0755 --dir` for every ancestor of `path` not yet made, so the
/// sandbox's uid can reach a bind whose host parents it could not
/// (bwrap would otherwise copy the host's modes, such as `/root`'s 0700).
fn make_parents(path: &Path, made: &mut Vec<PathBuf>, args: &mut Vec<String>) {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        if dir == Path::new("/") || made.iter().any(|m| m == dir) {
            continue;
        }
        // `/tmp` itself is the run's tmpfs; below it, and everywhere else
        // outside `/usr`, `/proc` and `/dev`, parents are made here.
        if dir == Path::new("/tmp")
            || ["/usr", "/proc", "/dev"]
                .iter()
                .any(|top| dir.starts_with(top))
        {
            continue;
        }
        args.extend(["--perms".into(), "0755".into(), "--dir".into()]);
        args.push(dir.display().to_string());
        made.push(dir.to_path_buf());
    }
}

/// What the jail mounts and starts for a run's egress: the run's session
/// (the relay is a hidden command of the scriptbox binary the init's bind
/// already puts at /run/scriptbox/scriptbox).
struct EgressJail<'a> {
    session: &'a EgressSession,
}

/// The bwrap arguments for one run, up to and including `--`, and with an
/// egress allowlist, the relay's words that then become the command.
fn jail_args(
    req: &ExecRequest,
    view: &EnvView,
    script: &Tree,
    uid: u32,
    as_root: bool,
    egress: Option<&EgressJail>,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    // Merged-/usr links, or the directories themselves.
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let path = Path::new(top);
        if let Ok(target) = fs::read_link(path) {
            push(&["--symlink", &target.to_string_lossy(), top]);
        } else if path.is_dir() {
            push(&["--ro-bind", top, top]);
        }
    }
    // Made readable first: bwrap would make the parent of a bind 0700.
    push(&["--perms", "0755", "--dir", "/etc"]);
    for file in ["/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"] {
        push(&["--ro-bind-try", file, file]);
    }
    let tmp = req.limits.tmp.to_string();
    push(&["--proc", "/proc"]);
    if as_root {
        push(&["--dev", "/dev"]);
    } else {
        // bwrap's `--dev` maps uid 0 in a first user namespace for its
        // devpts and then puts the sandbox in a second one, whose init
        // could not mount the view; so /dev is made here, the same but
        // for devpts (no pseudo-terminals).
        push(&["--size", &tmp, "--perms", "0755", "--tmpfs", "/dev"]);
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let dev = format!("/dev/{dev}");
            push(&["--dev-bind-try", &dev, &dev]);
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            push(&["--symlink", target, &format!("/dev/{link}")]);
        }
        push(&["--perms", "1777", "--dir", "/dev/shm"]);
    }
    push(&["--size", &tmp, "--perms", "1777", "--tmpfs", "/tmp"]);
    // Staged for the init, which mounts them at their neutral paths.
    a.extend(MountPlan::staged_binds(view, std::slice::from_ref(script)));
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["--chdir", "/tmp", "--clearenv"]);
    for (k, v) in req
        .limits
        .environment()
        .into_iter()
        .chain(view.environment.clone())
    {
        push(&["--setenv", &k, &v]);
    }
    // The network's one way out: the relay beside the script, the host
    // proxy's socket in the session directory, and name lookups sent to
    // the relay's stub. Port 53 needs CAP_NET_BIND_SERVICE, which only the
    // relay uses (it drops it, and the script never gets it).
    // CAP_SYS_ADMIN is the init's, to mount the view; it drops it before
    // it starts anything.
    let mut caps = vec!["CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN"];
    if let Some(egress) = egress {
        let mut made = vec![PathBuf::from("/etc")];
        make_parents(&Path::new(SANDBOX_DIR).join("x"), &mut made, &mut a);
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let dir = egress.session.host_dir().display().to_string();
        push(&["--ro-bind", &dir, SANDBOX_DIR]);
        for (file, target) in egress.session.etc_files() {
            push(&["--ro-bind", &file.display().to_string(), target]);
        }
        for (k, v) in egress.session.environment() {
            push(&["--setenv", &k, &v]);
        }
        caps.push("CAP_NET_BIND_SERVICE");
    }
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let id = uid.to_string();
    if as_root {
        push(&["--cap-add", &caps.join(","), "--"]);
        if let Some(egress) = egress {
            a.extend(egress.session.relay_prefix(Some(uid)));
        }
        a.extend(super::drop_to_words(uid));
    } else {
        push(&["--unshare-user", "--uid", &id, "--gid", &id]);
        if let Some(egress) = egress {
            push(&["--cap-add", "CAP_SYS_ADMIN,CAP_NET_BIND_SERVICE", "--"]);
            a.extend(egress.session.relay_prefix(None));
        } else {
            push(&["--cap-add", "CAP_SYS_ADMIN", "--"]);
        }
    }
    a
}

/// Limits applied to bwrap in the child before exec, and inherited by
/// everything it starts. Only async-signal-safe calls.
fn pre_exec(
    limits: &Limits,
    cgroup_fds: &[i32],
    with_cgroup: bool,
    seccomp_fds: &[i32],
) -> impl Fn() -> std::io::Result<()> + 'static {
    let fds = cgroup_fds.to_vec();
    let seccomp_fds = seccomp_fds.to_vec();
    let cpu = limits.cpu_seconds();
    let fsize = limits.tmp;
    let nproc = u64::from(limits.pids);
    let memory = limits.memory;
    move || {
        join_current(&fds)?;
        Filters::pre_exec(&seccomp_fds)?;
        let set = |resource, soft: u64, hard: u64| {
            let rl = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit reads the struct and changes this process.
            if unsafe { libc::setrlimit(resource, &rl) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        set(libc::RLIMIT_CORE, 0, 0)?;
        set(libc::RLIMIT_NOFILE, NOFILE, NOFILE)?;
        set(libc::RLIMIT_FSIZE, fsize, fsize)?;
        // SIGXCPU at the limit, SIGKILL a second later if it is ignored.
        set(libc::RLIMIT_CPU, cpu, cpu + 1)?;
        // Counted per uid, and every run has a uid of its own.
        set(libc::RLIMIT_NPROC, nproc, nproc)?;
        if !with_cgroup {
            set(libc::RLIMIT_DATA, memory, memory)?;
        }
        // SAFETY: prctl with these arguments only sets this process's
        // parent-death signal.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        Ok(())
    }
}

/// Runs `req` under bwrap until it ends, a limit stops it or `cancel` is
/// cancelled, handing its output to `sink` as it arrives.
pub fn run(
    req: &ExecRequest,
    cancel: &CancelToken,
    sink: &dyn OutputSink,
) -> Result<Execution, RunError> {
    let EnvLocation::Venv {
        path: venv,
        site_packages,
        ..
    } = &req.env.location
    else {
        return Err(RunError::Environment(
            "the local backend needs a venv environment".into(),
        ));
    };
    if req.limits.isolation == Isolation::Gvisor {
        return run_gvisor(req, venv, site_packages, cancel, sink);
    }
    let bwrap = find_bwrap().ok_or(RunError::NoBwrap)?;
    // Always on: the init installs it once it has mounted the view.
    let filters = Filters::new()?;
    // SAFETY: geteuid only reads this process's credentials.
    let as_root = unsafe { libc::geteuid() } == 0;
    let run_id = uuid::Uuid::new_v4();
    let (uid, _uid_lock) = claim_uid(&req.state_dir, run_id.as_u128())?;

    // The script alone, read-only, in a directory of its own.
    let script_dir = super::script_dir(req)?;

    let view = EnvView::new(venv, site_packages)?;
    let script = Tree {
        host: script_dir.path().to_path_buf(),
        inside: PathBuf::from(SCRIPT_DIR),
    };
    let cgroup = RunCgroup::create(&run_id.to_string(), &req.limits);
    let session = req
        .egress
        .clone()
        .map(|config| EgressSession::start(config, true))
        .transpose()?;
    let egress = session.as_ref().map(|session| EgressJail { session });
    let jail = jail_args(req, &view, &script, uid, as_root, egress.as_ref());
    let mut command: Vec<std::ffi::OsString> = vec![view.python().into()];
    command.extend(["-I", "-u", "-B"].map(Into::into));
    command.push(format!("{SCRIPT_DIR}/{}", req.script_name).into());
    command.extend(req.args.iter().map(Into::into));
    let plan = MountPlan::for_view(
        &view,
        std::slice::from_ref(&script),
        &[PathBuf::from(super::init::SANDBOX_BINARY)],
    );
    let (jail, mut init) = super::init::local_jail(
        jail,
        command,
        &super::sandbox_binary()?,
        Some(&plan),
        &filters.fds(),
    )?;
    let mut cmd = Command::new(&bwrap);
    cmd.args(jail).env_clear();
    let mut inherited = filters.fds();
    inherited.extend(init.child_fds());
    let enforcement = vec![
        cgroup
            .as_ref()
            .map_or("rlimit", |c| c.version())
            .to_string(),
        "rlimit".to_string(),
    ];
    let mut exec = supervise(
        cmd,
        req,
        cgroup.as_ref(),
        enforcement,
        Some(&inherited),
        Some(&mut init as &mut dyn InitReport),
        cancel,
        sink,
    );
    if let Ok(exec) = exec.as_mut() {
        super::finish_egress(session, exec, sink);
    }
    drop(filters);
    drop(script_dir);
    exec
}

/// The local run under gVisor ([`gvisor::run`]): the same binds, its own
/// uid, supervised like a bwrap run but with the rlimits set inside gVisor
/// (on runsc itself they would bind gVisor's own processes).
fn run_gvisor(
    req: &ExecRequest,
    venv: &Path,
    site_packages: &[PathBuf],
    cancel: &CancelToken,
    sink: &dyn OutputSink,
) -> Result<Execution, RunError> {
    let (uid, _uid_lock) = claim_uid(&req.state_dir, uuid::Uuid::new_v4().as_u128())?;
    let script_dir = super::script_dir(req)?;
    let view = EnvView::new(venv, site_packages)?;
    let mut mounts: Vec<gvisor::Mount> = view
        .trees
        .iter()
        .map(|tree| gvisor::Mount::At {
            source: tree.host.clone(),
            destination: tree.inside.clone(),
        })
        .collect();
    mounts.extend(view.hidden.iter().cloned().map(gvisor::Mount::Hidden));
    mounts.push(gvisor::Mount::Script(script_dir.path().to_path_buf()));
    // Descriptors do not cross a host Unix socket into gVisor: no handoff.
    let session = req
        .egress
        .clone()
        .map(|config| EgressSession::start(config, false))
        .transpose()?;
    let exec = gvisor::run(
        req,
        &view,
        &mounts,
        uid,
        session.as_ref(),
        cancel,
        sink,
        |cmd, cgroup, enforcement, init, cancel, sink| {
            supervise(
                cmd,
                req,
                cgroup,
                enforcement,
                None,
                Some(init),
                cancel,
                sink,
            )
        },
    );
    let mut exec = exec;
    if let Ok(exec) = exec.as_mut() {
        super::finish_egress(session, exec, sink);
    }
    drop(script_dir);
    exec
}

/// Starts `cmd` under the limits (joining `cgroup` when there is one),
/// captures its output, stops it at the wall or output limit, and works out
/// how it ended: from `init`'s report in the sandbox, from the wait status
/// without one (the script is then `cmd` itself). `inherited_fds` (seccomp
/// filters, the init's) stay open in the child.
#[allow(clippy::too_many_arguments)]
fn supervise(
    mut cmd: Command,
    req: &ExecRequest,
    cgroup: Option<&RunCgroup>,
    mut enforcement: Vec<String>,
    // `None`: neither seccomp fds nor host rlimits (gVisor sets them inside).
    inherited_fds: Option<&[i32]>,
    mut init: Option<&mut dyn InitReport>,
    cancel: &CancelToken,
    sink: &dyn OutputSink,
) -> Result<Execution, RunError> {
    enforcement.dedup();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match req.stdin.as_file()? {
        Some(file) => {
            cmd.stdin(file);
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    let fds = cgroup.map(|c| c.procs_fds()).unwrap_or_default();
    match inherited_fds {
        // SAFETY: the closure only calls write, fcntl, setrlimit and prctl.
        Some(inherited_fds) => unsafe {
            cmd.pre_exec(pre_exec(&req.limits, &fds, cgroup.is_some(), inherited_fds));
        },
        // SAFETY: the closure only calls write and prctl.
        None => unsafe {
            cmd.pre_exec(move || {
                join_current(&fds)?;
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        },
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| RunError::Io(format!("starting {:?}: {e}", cmd.get_program())))?;
    if let Some(init) = init.as_mut() {
        init.started();
    }
    let capture = Capture::start(
        child.stdout.take().expect("stdout is piped"),
        child.stderr.take().expect("stderr is piped"),
        req.limits.output,
    );
    let deadline = started + req.limits.wall_time;
    // Under gVisor, the CPU rlimit inside does not always fire; the run's
    // cgroup (gVisor's own CPU time included) stops it at the hard limit.
    let watch_cpu = inherited_fds.is_none();
    let cpu_hard = (req.limits.cpu_seconds() + 1) as f64;
    let mut stopped: Option<Status> = None;
    let mut cancelled: Option<CancelReason> = None;
    let status = loop {
        capture.deliver(sink);
        if let Some(status) = child.try_wait().map_err(|e| RunError::Io(e.to_string()))? {
            break status;
        }
        if stopped.is_none() {
            if capture.exceeded() {
                stopped = Some(Status::OutputLimit);
            } else if Instant::now() >= deadline {
                stopped = Some(Status::TimedOut);
            } else if watch_cpu
                && cgroup
                    .and_then(RunCgroup::cpu_seconds)
                    .is_some_and(|used| used >= cpu_hard)
            {
                stopped = Some(Status::CpuLimit);
            } else if let Some(reason) = cancel.requested() {
                cancelled = Some(reason);
                stopped = Some(match reason {
                    CancelReason::Signal(_) => Status::Killed,
                    CancelReason::Requested => Status::Cancelled,
                });
            }
            if stopped.is_some() {
                let _ = child.kill();
                if let Some(cg) = cgroup {
                    cg.kill_all();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let seconds = started.elapsed().as_secs_f64();
    // Anything left behind (only possible without a pid namespace) dies now.
    if let Some(cg) = cgroup {
        cg.kill_all();
    }
    let (out, err) = capture.finish(std::time::Duration::from_secs(5), sink);
    // Output over the limit as the script exited is still over the limit.
    if stopped.is_none() && (out.truncated || err.truncated) {
        stopped = Some(Status::OutputLimit);
    }
    let mut exec = Execution {
        stdout: out.bytes,
        stderr: err.bytes,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        seconds,
        peak_memory: cgroup.and_then(RunCgroup::peak_memory),
        enforcement,
        ..Execution::default()
    };
    // The init's report says exactly how the script ended; without one
    // (the init was killed) bwrap's code is all there is, and a code
    // above 128 reads as a signal.
    let (ended, exact) = match init.as_ref() {
        Some(init) => match init.report() {
            Some(ended) => (Some(ended), true),
            None => (status.code().map(|c| Ended::guess(c.into())), false),
        },
        None => (Ended::from_wait(status), true),
    };
    match ended {
        Some(Ended::Exited(code)) => exec.exit_code = Some(code),
        Some(Ended::Signaled(sig)) => exec.signal = Some(signal_name(sig)),
        None => exec.signal = status.signal().map(signal_name),
    }
    if let Some(reason) = cancelled {
        exec.cancelled(reason);
    }
    // An out-of-memory kill decides the status only when the script did
    // not succeed anyway (a child of it may have been the one killed).
    let oom = exec.exit_code != Some(0) && cgroup.is_some_and(RunCgroup::oom_killed);
    // A script that ignores SIGXCPU gets SIGKILL at the hard limit: its CPU
    // time tells.
    let used = cgroup.and_then(RunCgroup::cpu_seconds);
    let cpu_spent = used.is_some_and(|used| used >= req.limits.cpu_seconds() as f64 * 0.9);
    // SIGXCPU is the CPU limit only with the run's CPU time near it (a
    // script can send it to itself). Without a report, exit code 152 reads
    // as SIGXCPU: with too little CPU time, it was a plain exit.
    // Without a cgroup, the host's cores bound the CPU time instead.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let possible = used.unwrap_or(exec.seconds * cores);
    let cpu_plausible = possible >= req.limits.cpu_seconds() as f64 * 0.9;
    if exec.signal.as_deref() == Some("SIGXCPU") && !cpu_plausible && !exact {
        exec.signal = None;
        exec.exit_code = Some(128 + libc::SIGXCPU);
    }
    exec.status = stopped.or_else(|| {
        if oom {
            Some(Status::MemoryLimit)
        } else if (exec.signal.as_deref() == Some("SIGXCPU") && cpu_plausible)
            || (exec.signal.as_deref() == Some("SIGKILL") && cpu_spent)
        {
            Some(Status::CpuLimit)
        } else if cgroup.is_none() && ends_with_memory_error(&exec.stderr) {
            Some(Status::MemoryLimit)
        } else {
            None
        }
    });
    Ok(exec)
}

/// Under rlimits only, running out of memory shows as Python's
/// `MemoryError` ending the traceback.
fn ends_with_memory_error(stderr: &[u8]) -> bool {
    String::from_utf8_lossy(stderr)
        .trim_end()
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("MemoryError"))
}

/// Runs `req` without bubblewrap: the same limits (cgroup and rlimits), a
/// clean environment and a private working directory, but no namespaces:
/// the script sees the host as this user does. Only for machines where
/// bwrap cannot run, and only when asked for explicitly.
pub fn run_unsandboxed(
    req: &ExecRequest,
    cancel: &CancelToken,
    sink: &dyn OutputSink,
) -> Result<Execution, RunError> {
    if req.egress.is_some() {
        return Err(RunError::EgressUnsandboxed);
    }
    let EnvLocation::Venv { python, .. } = &req.env.location else {
        return Err(RunError::Environment(
            "the local backend needs a venv environment".into(),
        ));
    };
    let work = tempfile::Builder::new()
        .prefix("scriptbox-unsandboxed-")
        .tempdir()
        .map_err(|e| RunError::Io(e.to_string()))?;
    let script = work.path().join(&req.script_name);
    fs::write(&script, &req.script).map_err(|e| RunError::Io(e.to_string()))?;
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-u", "-B"])
        .arg(&script)
        .args(&req.args)
        .current_dir(work.path())
        .env_clear()
        .envs(req.limits.environment())
        .env("HOME", work.path())
        .env("TMPDIR", work.path());
    let cgroup = RunCgroup::create(&uuid::Uuid::new_v4().to_string(), &req.limits);
    let mut enforcement = vec![
        cgroup
            .as_ref()
            .map_or("rlimit", |c| c.version())
            .to_string(),
        "rlimit".to_string(),
        "unsandboxed".to_string(),
    ];
    enforcement.dedup();
    supervise(
        cmd,
        req,
        cgroup.as_ref(),
        enforcement,
        Some(&[]),
        None,
        cancel,
        sink,
    )
}
