//! gVisor isolation (`isolation = "gvisor"` in a profile): the script's
//! system calls are answered by gVisor's user-space kernel (`runsc`), not
//! the host's.
//!
//! Under Docker the container runs with the engine runtime `runsc` (the
//! set-up registers it, with gVisor's own network stack off:
//! `--network=none`). Locally, [`run`] writes an OCI bundle from the same
//! read-only binds the bwrap jail uses (`/usr`, the merged-`/usr` links,
//! the environment's view of [`super::view`]: the interpreter prefix at
//! `/python`, the layers at `/env/N` and the run's venv, written into the
//! bundle's root at `/venv`; the script's directory at `/sandbox`, a
//! size-limited `/tmp`, a clean environment) and starts
//! `runsc --network=none run` on it, as root.
//!
//! The limits are the profile's, split between the two kernels: memory and
//! CPU through the host's cgroup, which also holds gVisor's own processes
//! (so the memory limit covers gVisor's kernel too); the profile's process
//! count as `RLIMIT_NPROC` inside gVisor, where a fork bomb gets `EAGAIN`,
//! while the host cgroup gets [`host_pids`], room for gVisor's own threads
//! (its ptrace platform gives every guest process a host stub process); open
//! files, file size, CPU time and core dumps as rlimits inside gVisor.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::cancel::CancelToken;
use super::cgroup::RunCgroup;
use super::init::{DockerInit, InitReport, REPORT_DIR, SANDBOX_BINARY};
use super::limits::{Limits, NOFILE};
use super::outcome::Execution;
use super::output::OutputSink;
use super::view::{EnvView, VENV_DIR};
use super::{ExecRequest, RunError};
use crate::egress::EgressSession;
use crate::egress::session::SANDBOX_DIR;

/// The engine runtime name the docker backend asks for.
pub const DOCKER_RUNTIME: &str = "runsc";

/// Host tasks gVisor needs before the script starts anything: its kernel's
/// threads, the gofer's and the first stub process (measured: about 44 for
/// a sleeping Python, with the ptrace platform).
const HOST_TASKS_BASE: u32 = 64;
/// Host tasks per guest process or thread: the ptrace platform's stub
/// process with its threads and the kernel thread that traces it (a fork
/// bomb stopped at 32 guest processes by `RLIMIT_NPROC` needed more than
/// 4 each: at 192 host tasks gVisor could not start a stub and died).
const HOST_TASKS_PER_GUEST: u32 = 8;

/// The host cgroup's task limit for a run whose profile allows `limits.pids`
/// processes inside gVisor: the guest limit itself is `RLIMIT_NPROC` inside
/// gVisor ([`guest_rlimits`]); this one only bounds gVisor's own threads,
/// so that the guest limit is always the one a script meets first.
pub fn host_pids(limits: &Limits) -> u32 {
    HOST_TASKS_BASE + HOST_TASKS_PER_GUEST * limits.pids
}

/// Finds `runsc` on `PATH`.
pub fn find_runsc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("runsc"))
        .find(|p| p.is_file())
}

/// The rlimits set inside gVisor, as `(name, soft, hard)`: the same numbers
/// the namespaces sandbox sets on the host.
pub fn guest_rlimits(limits: &Limits) -> Vec<(&'static str, u64, u64)> {
    let cpu = limits.cpu_seconds();
    vec![
        ("RLIMIT_NOFILE", NOFILE, NOFILE),
        ("RLIMIT_FSIZE", limits.tmp, limits.tmp),
        ("RLIMIT_CORE", 0, 0),
        // SIGXCPU at the limit, SIGKILL a second later if it is ignored.
        ("RLIMIT_CPU", cpu, cpu + 1),
        (
            "RLIMIT_NPROC",
            u64::from(limits.pids),
            u64::from(limits.pids),
        ),
    ]
}

/// The command prefix that sets the process limit inside a gVisor
/// container. The engine hands its `nproc` ulimit to runsc, which applies it
/// to its own host processes as well (they all run as one host uid), so
/// gVisor cannot start its stubs; set from inside, it binds only the guest.
pub fn docker_command_prefix(limits: &Limits) -> Vec<String> {
    vec![
        "prlimit".into(),
        format!("--nproc={}:{}", limits.pids, limits.pids),
        "--".into(),
    ]
}

/// One read-only bind or tmpfs of the local bundle, in mount order.
#[derive(Debug, Clone)]
pub enum Mount {
    /// An empty read-only tmpfs over a path (the interpreter's own
    /// site-packages).
    Hidden(PathBuf),
    /// The script's directory at `/sandbox`.
    Script(PathBuf),
    /// The `scriptbox` binary, read-only at the init's path.
    InitBinary(PathBuf),
    /// The init's report directory, writable, at its path (only the init,
    /// as root, can write it: it is 0700).
    InitReport(PathBuf),
    /// A host file or directory at another path, read-only (the egress
    /// session's directory and its `/etc` files).
    At {
        /// The host path.
        source: PathBuf,
        /// Where it appears.
        destination: PathBuf,
    },
}

/// The OCI runtime spec (`config.json`) for one local run: `rootfs` is the
/// bundle's empty root directory, prepared by [`prepare_rootfs`].
/// `args` is the first process's command, `env` goes beside the
/// profile's variables.
///
/// With an [`Mount::InitBinary`] among `mounts`, the first process is
/// scriptbox's init, as root with only `caps` (it drops the script to
/// `uid`, or the command does); without one, the script is the first
/// process, as `uid`, with none.
pub fn spec(
    req: &ExecRequest,
    args: Vec<String>,
    env: &[(String, String)],
    mounts: &[Mount],
    uid: u32,
    caps: &[&str],
) -> Value {
    let limits = &req.limits;
    let with_init = mounts.iter().any(|m| matches!(m, Mount::InitBinary(_)));
    let env: Vec<String> = limits
        .environment()
        .into_iter()
        .chain(env.iter().cloned())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let rlimits: Vec<Value> = guest_rlimits(limits)
        .into_iter()
        .map(|(kind, soft, hard)| json!({"type": kind, "soft": soft, "hard": hard}))
        .collect();
    let ro_bind = |source: &Path, destination: &Path| {
        json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": ["rbind", "ro", "nosuid", "nodev"],
        })
    };
    let tmp = limits.tmp.to_string();
    let mut all = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={tmp}")]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", format!("size={tmp}")]}),
        ro_bind(Path::new("/usr"), Path::new("/usr")),
    ];
    for top in MERGED_TOPS {
        let path = Path::new(top);
        if fs::read_link(path).is_err() && path.is_dir() {
            all.push(ro_bind(path, path));
        }
    }
    for file in ETC_FILES {
        if Path::new(file).exists() {
            all.push(ro_bind(Path::new(file), Path::new(file)));
        }
    }
    for mount in mounts {
        all.push(match mount {
            Mount::Hidden(path) => json!({
                "destination": path, "type": "tmpfs", "source": "tmpfs",
                "options": ["ro", "nosuid", "nodev", "mode=755", "size=4k"],
            }),
            Mount::Script(dir) => ro_bind(dir, Path::new(super::local::SCRIPT_DIR)),
            Mount::InitBinary(binary) => ro_bind(binary, Path::new(SANDBOX_BINARY)),
            Mount::InitReport(dir) => json!({
                "destination": REPORT_DIR,
                "type": "bind",
                "source": dir,
                "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
            }),
            Mount::At {
                source,
                destination,
            } => ro_bind(source, destination),
        });
    }
    let (user, caps) = if with_init {
        (0, json!(caps))
    } else {
        (uid, json!([]))
    };
    json!({
        "ociVersion": "1.0.0",
        "process": {
            "terminal": false,
            "user": {"uid": user, "gid": user},
            "args": args,
            "env": env,
            "cwd": "/tmp",
            "capabilities": {"bounding": caps, "effective": caps, "inheritable": [],
                             "permitted": caps, "ambient": []},
            "rlimits": rlimits,
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "sandbox",
        "mounts": all,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"},
            ],
        },
    })
}

/// The script's command: the interpreter on the script, then its
/// arguments.
pub fn script_command(req: &ExecRequest, python: &Path) -> Vec<String> {
    let mut command = vec![
        python.display().to_string(),
        "-I".into(),
        "-u".into(),
        "-B".into(),
        format!("{}/{}", super::local::SCRIPT_DIR, req.script_name),
    ];
    command.extend(req.args.iter().cloned());
    command
}

/// The top-level directories that are links into `/usr` on merged-`/usr`
/// systems (then links in the bundle's root too), or directories to bind.
const MERGED_TOPS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// The host `/etc` files a run sees (the loader cache, the time zone).
const ETC_FILES: [&str; 3] = ["/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"];

/// Makes the bundle's read-only root: the merged-`/usr` links, and an empty
/// mount point (directory or file, as on the host) for every mount, since
/// gVisor cannot create them in a read-only root.
pub fn prepare_rootfs(root: &Path, mounts: &[Mount]) -> Result<(), RunError> {
    let io = |what: &Path, e: std::io::Error| RunError::Io(format!("{}: {e}", what.display()));
    fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let inside = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let mut points: Vec<PathBuf> = ["/proc", "/dev", "/tmp", "/usr", super::local::SCRIPT_DIR]
        .iter()
        .map(PathBuf::from)
        .collect();
    for top in MERGED_TOPS {
        let path = Path::new(top);
        if let Ok(target) = fs::read_link(path) {
            std::os::unix::fs::symlink(&target, inside(path)).map_err(|e| io(path, e))?;
        } else if path.is_dir() {
            points.push(path.to_path_buf());
        }
    }
    for file in ETC_FILES {
        let path = Path::new(file);
        if !path.exists() {
            continue;
        }
        if path.is_dir() {
            points.push(path.to_path_buf());
        } else {
            let at = inside(path);
            if let Some(parent) = at.parent() {
                fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            fs::write(&at, b"").map_err(|e| io(&at, e))?;
        }
    }
    for mount in mounts {
        match mount {
            Mount::Hidden(p) => points.push(p.clone()),
            Mount::Script(_) => {}
            Mount::InitReport(_) => points.push(PathBuf::from(REPORT_DIR)),
            Mount::At {
                source,
                destination,
            } if source.is_dir() => points.push(destination.clone()),
            Mount::At { destination, .. } => {
                let at = inside(destination);
                if let Some(parent) = at.parent() {
                    fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                fs::write(&at, b"").map_err(|e| io(&at, e))?;
            }
            Mount::InitBinary(_) => {
                let at = inside(Path::new(SANDBOX_BINARY));
                if let Some(parent) = at.parent() {
                    fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                fs::write(&at, b"").map_err(|e| io(&at, e))?;
            }
        }
    }
    for point in points {
        // Below /usr, the bind of /usr itself holds the mount point.
        if point.starts_with("/usr") && point != Path::new("/usr") {
            continue;
        }
        let at = inside(&point);
        fs::create_dir_all(&at).map_err(|e| io(&at, e))?;
    }
    // Every directory 0755, so that the run's uid can walk to its binds
    // (a host parent such as /root is 0700).
    set_modes(root)
}

fn set_modes(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
    for entry in fs::read_dir(dir)
        .map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?
        .flatten()
    {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            set_modes(&entry.path())?;
        }
    }
    Ok(())
}

/// Runs `req` under `runsc` on the host (the local backend with
/// `isolation = "gvisor"`). Needs root: runsc sets up its namespaces,
/// chroot and cgroup with root's rights.
#[allow(clippy::too_many_arguments)]
pub fn run(
    req: &ExecRequest,
    view: &EnvView,
    mounts: &[Mount],
    uid: u32,
    egress: Option<&EgressSession>,
    cancel: &CancelToken,
    sink: &dyn OutputSink,
    supervise: impl FnOnce(
        Command,
        Option<&RunCgroup>,
        Vec<String>,
        &mut dyn InitReport,
        &CancelToken,
        &dyn OutputSink,
    ) -> Result<Execution, RunError>,
) -> Result<Execution, RunError> {
    let runsc = find_runsc().ok_or(RunError::NoRunsc)?;
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RunError::GvisorNeedsRoot);
    }
    let bundle = tempfile::Builder::new()
        .prefix("scriptbox-gvisor-")
        .tempdir()
        .map_err(|e| RunError::Io(format!("creating the gVisor bundle: {e}")))?;
    // scriptbox's init is the first process, as under Docker: it reports
    // how the script ended through a file only it can write.
    let mut init = DockerInit::new(super::sandbox_binary()?)?;
    let mut mounts = mounts.to_vec();
    mounts.push(Mount::InitBinary(init.binary().to_path_buf()));
    mounts.push(Mount::InitReport(init.report_dir().to_path_buf()));
    let mut caps = vec!["CAP_SETUID", "CAP_SETGID"];
    let mut env = view.environment.clone();
    let python = view.python();
    let python = python.as_path();
    // The command reaches the init in a file, so that no process's
    // arguments name the host paths of the interpreter.
    let args = match egress {
        None => init.words_with_command_file(Some((uid, uid)), &script_command(req, python))?,
        // The relay beside the script, as on the other backends; gVisor's
        // network stack lets only a privileged process bind its DNS port,
        // so the init's child stays root, the relay drops itself, and
        // setpriv drops the script.
        Some(session) => {
            mounts.push(Mount::At {
                source: session.host_dir().to_path_buf(),
                destination: PathBuf::from(SANDBOX_DIR),
            });
            for (file, target) in session.etc_files() {
                mounts.push(Mount::At {
                    source: file,
                    destination: PathBuf::from(target),
                });
            }
            env.extend(session.environment());
            caps.extend(["CAP_NET_BIND_SERVICE", "CAP_SETPCAP"]);
            let mut command = session.relay_prefix(Some(uid));
            command.extend(super::drop_to_words(uid));
            command.extend(script_command(req, python));
            init.words_with_command_file(None, &command)?
        }
    };
    let rootfs = bundle.path().join("rootfs");
    prepare_rootfs(&rootfs, &mounts)?;
    // The run's venv, in the read-only root itself: no mount to show.
    let venv = rootfs.join(VENV_DIR.trim_start_matches('/'));
    fs::create_dir_all(&venv)
        .and_then(|()| view.venv.write_into(&venv))
        .map_err(|e| RunError::Io(format!("writing the run's venv: {e}")))?;
    let config = spec(req, args, &env, &mounts, uid, &caps);
    fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec_pretty(&config).expect("a JSON value serialises"),
    )
    .map_err(|e| RunError::Io(format!("writing the gVisor bundle: {e}")))?;
    let state = req.state_dir.join("runsc");
    fs::create_dir_all(&state).map_err(|e| RunError::Io(format!("{}: {e}", state.display())))?;
    let id = format!("scriptbox-{}", uuid::Uuid::new_v4().simple());
    // The host cgroup bounds memory and CPU for gVisor and the script
    // together; its task limit leaves gVisor room for its own threads.
    let host_limits = Limits {
        pids: host_pids(&req.limits),
        ..req.limits.clone()
    };
    let cgroup = RunCgroup::create(&id, &host_limits);
    let mut cmd = Command::new(&runsc);
    // `--ignore-cgroups`: else runsc moves its sandbox into a cgroup of its
    // own, out of the run's (found: a memory bomb grew past 900 MB).
    cmd.arg("--root")
        .arg(&state)
        .args(["--network=none", "--ignore-cgroups"])
        // The relay inside reaches the host proxy's Unix socket.
        .args(egress.map(|_| "--host-uds=open"))
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let enforcement = vec![
        "gvisor".to_string(),
        cgroup
            .as_ref()
            .map_or("rlimit", |c| c.version())
            .to_string(),
        "rlimit".to_string(),
    ];
    let exec = supervise(cmd, cgroup.as_ref(), enforcement, &mut init, cancel, sink);
    // Stopped at a limit, `runsc run` dies first; its sandbox and gofer
    // go with the cgroup, and the container's state goes here.
    let _ = Command::new(&runsc)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    drop(bundle);
    exec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Isolation;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            memory: 128 << 20,
            cpus: 0.5,
            pids: 32,
            wall_time: Duration::from_secs(6),
            output: 1 << 16,
            tmp: 8 << 20,
            isolation: Isolation::Gvisor,
        }
    }

    #[test]
    fn the_guest_limit_binds_before_the_host_one() {
        let l = limits();
        let nproc = guest_rlimits(&l)
            .into_iter()
            .find(|(k, _, _)| *k == "RLIMIT_NPROC")
            .unwrap();
        assert_eq!(nproc.1, 32);
        // Every guest process costs gVisor host tasks of its own.
        assert!(host_pids(&l) > HOST_TASKS_BASE + 2 * l.pids);
        assert_eq!(
            docker_command_prefix(&l),
            vec!["prlimit", "--nproc=32:32", "--"]
        );
    }

    #[test]
    fn the_root_holds_a_mount_point_for_every_mount() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let mounts = vec![
            Mount::At {
                source: dir.path().to_path_buf(),
                destination: PathBuf::from("/env/0"),
            },
            Mount::Hidden(PathBuf::from("/usr/lib/python3/site-packages")),
            Mount::Script(dir.path().to_path_buf()),
        ];
        prepare_rootfs(&root, &mounts).unwrap();
        for point in ["proc", "dev", "tmp", "usr", "sandbox", "env/0"] {
            assert!(root.join(point).is_dir(), "{point}");
        }
        // Below /usr, the host's /usr provides the mount point.
        assert!(!root.join("usr/lib").exists());
        if let Ok(target) = fs::read_link("/bin") {
            assert_eq!(fs::read_link(root.join("bin")).unwrap(), target);
        }
    }
}
