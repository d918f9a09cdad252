//! The sandboxes' init: the `scriptbox` binary itself, started as
//! `scriptbox sandbox-init` as the first process of the sandbox's pid
//! namespace (bwrap's `--as-pid-1` locally, the container's command under
//! Docker). It starts the script's command as its one child, forwards
//! every signal it receives to it, reaps every orphan, and when the child
//! ends it reports how — exited with a code, or ended by a signal — on a
//! channel the script cannot write to, then exits the same way a shell
//! would (the code, or 128 + the signal).
//!
//! Why an init of our own: bubblewrap and the engine report a child ended
//! by signal S as exit code 128 + S, so `sys.exit(139)` and a real
//! SIGSEGV looked the same. The report tells them apart.
//!
//! Why the script cannot forge the report:
//! - locally the report is a pipe whose write end only the init holds
//!   (marked close-on-exec before it starts anything), and the init is
//!   non-dumpable: no `/proc/1/fd`, no ptrace (the seccomp filter refuses
//!   ptrace too); it runs as root with only `CAP_SETUID`/`CAP_SETGID`
//!   (and `CAP_SYS_ADMIN` until the view is mounted, before anything else
//!   runs) when scriptbox runs as root (the script then has another uid), or as
//!   the script's uid in bwrap's user namespace, where pid 1 gets no
//!   signal it does not ask for;
//! - under Docker the report is a file in a host directory bound in, mode
//!   0700 and owned by root; the init runs as root with only
//!   `CAP_SETUID`/`CAP_SETGID` (and `CAP_DAC_OVERRIDE` when scriptbox is
//!   not root, to write a directory it owns) and starts the child as uid
//!   10001 with no groups and no-new-privileges: setting a non-zero uid
//!   clears every capability, so the script can neither write the
//!   directory nor ptrace or signal the init.
//!
//! The command comes on the command line, or, locally, from a file
//! descriptor (`--command-fd`), so that `/proc/1/cmdline` (readable by
//! every process) holds no host path.
//!
//! Under bwrap the init also finishes the jail before it starts anything:
//! it mounts the environment's view ([`super::view::MountPlan`], with
//! `CAP_SYS_ADMIN` that it then drops from every set), detaches the
//! staged binds and its own binary's (which it then runs as
//! `/proc/self/exe`, for the egress relay), and installs the seccomp
//! filter (`--seccomp-fd`), which refuses `mount` and so could not come
//! first.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::thread::CapabilitySet;

use super::RunError;
use super::view::MountPlan;

/// Where the `scriptbox` binary is bound read-only inside both sandboxes.
pub const SANDBOX_BINARY: &str = "/run/scriptbox/scriptbox";
/// Where the Docker backend binds the report directory.
pub const REPORT_DIR: &str = "/run/scriptbox/report";
/// The report's file name in that directory.
const REPORT_FILE: &str = "status";
/// The command's file in [`REPORT_DIR`], where it is passed as a file.
const COMMAND_FILE: &str = "command";

/// How the init's child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exited(i32),
    /// This signal ended it.
    Signaled(i32),
}

impl Ended {
    /// The report's text: `exited N` or `signaled S`, one line.
    pub fn encode(self) -> String {
        match self {
            Ended::Exited(code) => format!("exited {code}\n"),
            Ended::Signaled(sig) => format!("signaled {sig}\n"),
        }
    }

    /// Reads a report; `None` for anything but exactly one well-formed
    /// line.
    pub fn parse(text: &str) -> Option<Ended> {
        let line = text.strip_suffix('\n')?;
        let (kind, n) = line.split_once(' ')?;
        let n: i32 = n.parse().ok()?;
        match kind {
            "exited" if (0..=255).contains(&n) => Some(Ended::Exited(n)),
            "signaled" if (1..=64).contains(&n) => Some(Ended::Signaled(n)),
            _ => None,
        }
    }

    /// What a `wait` status of a direct child says.
    pub fn from_wait(status: std::process::ExitStatus) -> Option<Ended> {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Some(Ended::Exited(code)),
            (None, Some(sig)) => Some(Ended::Signaled(sig)),
            (None, None) => None,
        }
    }

    /// The guess from an exit code alone, for when no report came (the
    /// init itself was killed): a code of 129 to 159 reads as the signal
    /// 128 below it, as bwrap and the engine report signals.
    pub fn guess(code: i64) -> Ended {
        if code > 128 && code - 128 < 32 {
            Ended::Signaled((code - 128) as i32)
        } else {
            Ended::Exited(code as i32)
        }
    }

    /// The init's own exit code for this ending, as a shell's.
    fn exit_code(self) -> i32 {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => 128 + sig,
        }
    }
}

/// Why the init could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// No command to start.
    #[error("no command to start")]
    NoCommand,
    /// Exactly one of a report descriptor and a report file is needed.
    #[error("give exactly one of --status-fd and --status-file")]
    NoReport,
    /// A system call failed.
    #[error("{0}")]
    Io(String),
}

/// Where the init writes its report.
#[derive(Debug, Clone)]
pub enum ReportTo {
    /// This inherited descriptor (a pipe's write end).
    Fd(i32),
    /// This file, created new.
    File(PathBuf),
}

/// What `scriptbox sandbox-init` was asked to do.
#[derive(Debug, Clone)]
pub struct InitConfig {
    /// Where the report goes.
    pub report: ReportTo,
    /// A descriptor to read the command from (NUL-separated words),
    /// instead of `command`.
    pub command_fd: Option<i32>,
    /// A file to read the command from, then remove (NUL-separated
    /// words), instead of `command`.
    pub command_file: Option<PathBuf>,
    /// The uid and gid the child takes (no groups, no-new-privileges).
    pub user: Option<(u32, u32)>,
    /// A descriptor to read the mount plan from (JSON), carried out first.
    pub plan_fd: Option<i32>,
    /// Descriptors holding seccomp programs, installed after the plan.
    pub seccomp_fds: Vec<i32>,
    /// The command.
    pub command: Vec<OsString>,
}

fn os_err(what: &str) -> InitError {
    InitError::Io(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Runs the init: never returns on success but with the exit code to
/// leave with (the child's, or 128 + its signal).
pub fn run_init(config: InitConfig) -> Result<i32, InitError> {
    // First, before anything the command could see: no ptrace, no
    // /proc/1/fd or /proc/1/mem for same-uid processes.
    // SAFETY: prctl with integer arguments changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(os_err("prctl(PR_SET_DUMPABLE)"));
    }
    let binary_detached = match config.plan_fd {
        Some(fd) => {
            let plan = read_plan(fd)?;
            plan.apply().map_err(InitError::Io)?;
            drop_capability(CapabilitySet::SYS_ADMIN)?;
            plan.detach.iter().any(|p| p == Path::new(SANDBOX_BINARY))
        }
        None => false,
    };
    for &fd in &config.seccomp_fds {
        let program = read_inherited(fd, "a seccomp program")?;
        super::seccomp::install(&program).map_err(|e| InitError::Io(e.to_string()))?;
    }
    let mut report: Box<dyn Write> = match &config.report {
        ReportTo::Fd(fd) => {
            // SAFETY: fcntl on an inherited descriptor; close-on-exec keeps
            // it from every process the init starts.
            if unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
                return Err(os_err("the report descriptor"));
            }
            // SAFETY: the descriptor was handed to this process for it
            // alone; nothing else here owns it.
            Box::new(File::from(unsafe { OwnedFd::from_raw_fd(*fd) }))
        }
        ReportTo::File(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            Box::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|e| InitError::Io(format!("{}: {e}", path.display())))?,
            )
        }
    };
    let command = match config.command_fd {
        Some(fd) => split_words(&read_inherited(fd, "the command")?),
        None => match &config.command_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| InitError::Io(format!("{}: {e}", path.display())))?;
                let _ = std::fs::remove_file(path);
                split_words(&bytes)
            }
            None => config.command,
        },
    };
    let (program, args) = command.split_first().ok_or(InitError::NoCommand)?;

    // Every signal waits in the queue for the loop below; the child
    // unblocks them all before it executes the command.
    // SAFETY: the sigset is initialised by sigfillset before use.
    let all = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(os_err("blocking signals"));
        }
        set
    };
    let mut cmd = if binary_detached && program == SANDBOX_BINARY {
        // Its mount is gone (its host path showed in mountinfo); the
        // init's own executable is the same binary.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.args(args);
    if let Some((uid, gid)) = config.user {
        // The standard library drops the groups when it changes the uid
        // from root.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: sigemptyset, pthread_sigmask and prctl are async-signal-safe
    // and touch only this (forked) process.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child.id() as libc::pid_t,
        Err(e) => {
            eprintln!("scriptbox: cannot start {}: {e}", program.to_string_lossy());
            let ended = Ended::Exited(127);
            let _ = report.write_all(ended.encode().as_bytes());
            return Ok(ended.exit_code());
        }
    };
    let ended = supervise(child, &all)?;
    report
        .write_all(ended.encode().as_bytes())
        .and_then(|()| report.flush())
        .map_err(|e| InitError::Io(format!("writing the report: {e}")))?;
    Ok(ended.exit_code())
}

/// Waits for signals until `child` ends: forwards each to it, and reaps
/// every child that ended on SIGCHLD.
fn supervise(child: libc::pid_t, all: &libc::sigset_t) -> Result<Ended, InitError> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` is an initialised set; `info` is writable.
        let sig = unsafe { libc::sigwaitinfo(all, &mut info) };
        if sig < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err("sigwaitinfo"));
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill takes no pointers; a gone child is harmless.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                if libc::WIFEXITED(status) {
                    return Ok(Ended::Exited(libc::WEXITSTATUS(status)));
                }
                if libc::WIFSIGNALED(status) {
                    return Ok(Ended::Signaled(libc::WTERMSIG(status)));
                }
            }
        }
    }
}

/// NUL-separated words (a trailing NUL ends the last one).
fn split_words(bytes: &[u8]) -> Vec<OsString> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|w| OsString::from_vec(w.to_vec()))
        .collect()
}

/// Reads a file handed to the init as an inherited descriptor (the
/// command, the mount plan, a seccomp program) from its start, and
/// closes it.
fn read_inherited(fd: i32, what: &str) -> Result<Vec<u8>, InitError> {
    // SAFETY: the descriptor was handed to this process for this alone;
    // reading it closes it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| InitError::Io(format!("reading {what}: {e}")))?;
    Ok(bytes)
}

/// Reads the mount plan (JSON) from an inherited descriptor.
fn read_plan(fd: i32) -> Result<MountPlan, InitError> {
    serde_json::from_slice(&read_inherited(fd, "the mount plan")?)
        .map_err(|e| InitError::Io(format!("the mount plan: {e}")))
}

/// Drops `cap` from every capability set of this process: ambient,
/// effective, permitted and inheritable, and the bounding set where the
/// init may change it (without `CAP_SETPCAP` it stays there, harmless:
/// no-new-privileges, set before anything is started, keeps an exec from
/// regaining it).
fn drop_capability(cap: CapabilitySet) -> Result<(), InitError> {
    use rustix::thread::{
        capabilities, configure_capability_in_ambient_set, remove_capability_from_bounding_set,
        set_capabilities, set_no_new_privs,
    };
    let err = |what: &str, e: rustix::io::Errno| InitError::Io(format!("{what}: {e}"));
    set_no_new_privs(true).map_err(|e| err("no-new-privileges", e))?;
    let _ = configure_capability_in_ambient_set(cap, false);
    let _ = remove_capability_from_bounding_set(cap);
    let mut sets = capabilities(None).map_err(|e| err("reading capabilities", e))?;
    sets.effective.remove(cap);
    sets.permitted.remove(cap);
    sets.inheritable.remove(cap);
    set_capabilities(None, sets).map_err(|e| err("dropping a capability", e))
}

/// The local backend's side of the init: the report pipe and the file
/// holding the command. The child must inherit [`LocalInit::child_fds`];
/// after it started, [`LocalInit::started`] drops this side's write end so
/// that only the init holds one.
pub struct LocalInit {
    read: File,
    write: Option<OwnedFd>,
    command: File,
    plan: Option<File>,
    seccomp_fds: Vec<i32>,
}

impl LocalInit {
    /// Writes `words` (the command after the init: no NUL in any) and
    /// `plan` to unlinked files and makes the report pipe, all
    /// close-on-exec here; `seccomp_fds` (inherited by the child, see
    /// [`super::seccomp::Filters`]) go to the init to install.
    pub fn new(
        words: &[OsString],
        plan: Option<&MountPlan>,
        seccomp_fds: &[i32],
    ) -> Result<LocalInit, RunError> {
        use std::os::unix::ffi::OsStrExt;
        let io = |what: &str, e: std::io::Error| RunError::Io(format!("{what}: {e}"));
        let mut command = tempfile::tempfile().map_err(|e| io("the init's command file", e))?;
        let mut bytes = Vec::new();
        for w in words {
            bytes.extend_from_slice(w.as_bytes());
            bytes.push(0);
        }
        command
            .write_all(&bytes)
            .and_then(|()| command.rewind())
            .map_err(|e| io("writing the init's command", e))?;
        let plan = match plan {
            Some(plan) => {
                let mut file = tempfile::tempfile().map_err(|e| io("the init's mount plan", e))?;
                file.write_all(&serde_json::to_vec(plan).expect("a plan serialises"))
                    .and_then(|()| file.rewind())
                    .map_err(|e| io("writing the init's mount plan", e))?;
                Some(file)
            }
            None => None,
        };
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io(
                "the init's report pipe",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: both descriptors are new and owned by nothing else.
        let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(LocalInit {
            read,
            write: Some(write),
            command,
            plan,
            seccomp_fds: seccomp_fds.to_vec(),
        })
    }

    /// The descriptors the sandbox's init inherits (the report's write
    /// end, the command and plan files; not the seccomp programs, which
    /// their owner passes on).
    pub fn child_fds(&self) -> Vec<i32> {
        let mut fds = vec![self.command.as_raw_fd()];
        fds.extend(self.plan.as_ref().map(AsRawFd::as_raw_fd));
        fds.extend(self.write.as_ref().map(AsRawFd::as_raw_fd));
        fds
    }

    /// The words that start the init in the sandbox.
    pub fn words(&self) -> Vec<String> {
        let write = self.write.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let mut words = vec![
            SANDBOX_BINARY.into(),
            "sandbox-init".into(),
            "--status-fd".into(),
            write.to_string(),
            "--command-fd".into(),
            self.command.as_raw_fd().to_string(),
        ];
        if let Some(plan) = &self.plan {
            words.extend(["--plan-fd".into(), plan.as_raw_fd().to_string()]);
        }
        for fd in &self.seccomp_fds {
            words.extend(["--seccomp-fd".into(), fd.to_string()]);
        }
        words
    }

    /// Called once the sandbox has started: the init holds the only
    /// write end from now on.
    pub fn started(&mut self) {
        self.write = None;
    }

    /// The init's report, once the sandbox has ended; `None` when the init
    /// wrote none (it was killed, or it was never reached).
    pub fn report(&self) -> Option<Ended> {
        let mut text = String::new();
        (&self.read).take(64).read_to_string(&mut text).ok()?;
        Ended::parse(&text)
    }
}

/// How a backend reads the init's report once the sandbox has ended,
/// whichever channel the init used (a pipe locally, a file in a root-only
/// directory under Docker and gVisor).
pub trait InitReport {
    /// Called once the sandbox has started.
    fn started(&mut self) {}
    /// The init's report; `None` when it wrote none (it was killed, or
    /// never reached).
    fn report(&self) -> Option<Ended>;
}

impl InitReport for LocalInit {
    fn started(&mut self) {
        LocalInit::started(self);
    }

    fn report(&self) -> Option<Ended> {
        LocalInit::report(self)
    }
}

impl InitReport for DockerInit {
    fn report(&self) -> Option<Ended> {
        DockerInit::report(self)
    }
}

/// Puts the init in front of a local sandbox's command: `jail` is bwrap's
/// options, `--`, and what runs in the sandbox before `command` (such as
/// `setpriv`); both go to the init through its command file. bwrap gets
/// the binary bound read-only at [`SANDBOX_BINARY`] and `--as-pid-1`, so
/// the init (not bwrap) is the pid namespace's first process and
/// `/proc/1/cmdline` shows only the init's own words.
///
/// bwrap's options end at the first `--`: no value among them is `--`
/// (they are paths, numbers, capability names and the run's environment).
/// `plan` and `seccomp_fds` go to the init ([`LocalInit::new`]).
pub fn local_jail(
    jail: Vec<String>,
    command: Vec<OsString>,
    binary: &Path,
    plan: Option<&MountPlan>,
    seccomp_fds: &[i32],
) -> Result<(Vec<String>, LocalInit), RunError> {
    let split = jail
        .iter()
        .position(|a| a == "--")
        .ok_or_else(|| RunError::Io("the sandbox's arguments have no '--'".into()))?;
    let mut inner: Vec<OsString> = jail[split + 1..].iter().map(Into::into).collect();
    inner.extend(command);
    let init = LocalInit::new(&inner, plan, seccomp_fds)?;
    let mut args = jail;
    args.truncate(split);
    args.extend([
        "--ro-bind".into(),
        binary.display().to_string(),
        SANDBOX_BINARY.into(),
        "--as-pid-1".into(),
        "--".into(),
    ]);
    args.extend(init.words());
    Ok((args, init))
}

/// The Docker backend's side of the init: a private host directory bound
/// into the container at [`REPORT_DIR`], where the init writes its report.
pub struct DockerInit {
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl DockerInit {
    /// Makes the directory: mode 0700, owned by whoever runs scriptbox
    /// (root in the container when that is root; see [`DockerInit::caps`]).
    /// `binary` is the `scriptbox` binary to bind in.
    pub fn new(binary: PathBuf) -> Result<DockerInit, RunError> {
        let dir = crate::dirs::temp_dir_with_mode("scriptbox-init-", 0o700)
            .map_err(|e| RunError::Io(format!("the init's report directory: {e}")))?;
        Ok(DockerInit { dir, binary })
    }

    /// The `scriptbox` binary to bind in at [`SANDBOX_BINARY`].
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The host directory to bind in, writable, at [`REPORT_DIR`].
    pub fn report_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The container's binds for the init: the binary and the directory.
    pub fn binds(&self) -> Vec<String> {
        vec![
            format!("{}:{SANDBOX_BINARY}:ro", self.binary.display()),
            format!("{}:{REPORT_DIR}:rw", self.dir.path().display()),
        ]
    }

    /// The capabilities the init needs (the container drops all others):
    /// to change the child's uid and gid, and, when scriptbox is not root,
    /// to write the report directory, which it then owns.
    pub fn caps() -> Vec<String> {
        let mut caps = vec!["SETUID".to_string(), "SETGID".to_string()];
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            caps.push("DAC_OVERRIDE".into());
        }
        caps
    }

    /// The words that start the init, with the child as `uid`:`gid`;
    /// the command follows.
    pub fn words(uid: u32, gid: u32) -> Vec<String> {
        DockerInit::words_for(Some((uid, gid)))
    }

    /// The words that start the init; its child stays root when `user` is
    /// `None` (then the command must drop privileges itself). The command
    /// follows.
    pub fn words_for(user: Option<(u32, u32)>) -> Vec<String> {
        let mut words = vec![
            SANDBOX_BINARY.into(),
            "sandbox-init".into(),
            "--status-file".into(),
            format!("{REPORT_DIR}/{REPORT_FILE}"),
        ];
        if let Some((uid, gid)) = user {
            words.extend([
                "--uid".into(),
                uid.to_string(),
                "--gid".into(),
                gid.to_string(),
            ]);
        }
        words.push("--".into());
        words
    }

    /// Writes `command` (no NUL in any word) to the report directory and
    /// returns the words that start the init on it ([`DockerInit::words_for`]
    /// `user`): the command then appears in no process's arguments
    /// (`/proc/1/cmdline` shows no host path).
    pub fn words_with_command_file(
        &self,
        user: Option<(u32, u32)>,
        command: &[String],
    ) -> Result<Vec<String>, RunError> {
        let mut bytes = Vec::new();
        for word in command {
            bytes.extend_from_slice(word.as_bytes());
            bytes.push(0);
        }
        std::fs::write(self.dir.path().join(COMMAND_FILE), bytes)
            .map_err(|e| RunError::Io(format!("writing the init's command: {e}")))?;
        let mut words = DockerInit::words_for(user);
        words.pop(); // "--": the command comes from the file
        words.extend([
            "--command-file".into(),
            format!("{REPORT_DIR}/{COMMAND_FILE}"),
        ]);
        Ok(words)
    }

    /// The init's report, once the container has ended.
    pub fn report(&self) -> Option<Ended> {
        let mut text = String::new();
        File::open(self.dir.path().join(REPORT_FILE))
            .ok()?
            .take(64)
            .read_to_string(&mut text)
            .ok()?;
        Ended::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_nothing_else_parses() {
        for e in [Ended::Exited(0), Ended::Exited(139), Ended::Signaled(11)] {
            assert_eq!(Ended::parse(&e.encode()), Some(e));
        }
        for bad in [
            "",
            "exited 1",
            "exited 300\n",
            "signaled 0\n",
            "exited 1\nexited 2\n",
        ] {
            assert_eq!(Ended::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Ended::guess(139), Ended::Signaled(11));
        assert_eq!(Ended::guess(1), Ended::Exited(1));
    }

    #[test]
    fn words_split_on_nul() {
        assert_eq!(split_words(b"a\0b c\0"), vec!["a", "b c"]);
        assert!(split_words(b"").is_empty());
    }
}
