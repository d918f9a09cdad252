//! What isolation this machine offers scriptbox (`scriptbox doctor`).
//!
//! Each [`Check`] looks at one thing a backend or an isolation level needs
//! — bubblewrap, user namespaces, cgroups, seccomp, gVisor's `runsc`, the
//! Docker engine, its runtimes and the base image, KVM — by trying it where
//! that is cheap and harmless (bwrap runs `/bin/true` with the local
//! backend's namespace flags; a run's cgroup is created and removed), and
//! says how to fix what is missing in one line (the fixes are data, in
//! `src/data/doctor_fixes.tsv`). The [`Report`] sums the checks up as the
//! backends that work. Nothing is pulled or built, and the engine is given
//! a few seconds at most.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::policy::Policy;
use crate::run::cgroup;
use crate::run::limits::Limits;
use crate::run::local::find_bwrap;
use crate::run::seccomp;

/// Identifier of the JSON schema of `scriptbox doctor --format json`.
pub const SCHEMA: &str = "scriptbox.doctor/1";

/// Every check's name, in the order they run and are reported.
pub const CHECK_NAMES: [&str; 9] = [
    "bwrap",
    "user-namespaces",
    "cgroups",
    "seccomp",
    "runsc",
    "docker-engine",
    "docker-runsc",
    "docker-base-image",
    "kvm",
];

const FIXES: &str = include_str!("data/doctor_fixes.tsv");

/// How long a probe process (bwrap, runsc) may take before it counts as
/// failed: they start nothing that lasts.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one-line fix for `key` (`check.cause`) from the data file.
fn fix(key: &str) -> String {
    FIXES
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once('\t')?;
            (k == key).then(|| v.trim().to_string())
        })
        // Every key used is checked by a test; a missing one still says
        // which entry to add rather than nothing.
        .unwrap_or_else(|| format!("(no fix recorded for {key})"))
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Present and working.
    Ok,
    /// Absent or refused: what needs it cannot work.
    Missing,
    /// Works, but weaker than it could (for example limits by rlimits
    /// instead of a cgroup).
    Degraded,
}

impl CheckStatus {
    /// The status as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Missing => "missing",
            CheckStatus::Degraded => "degraded",
        }
    }
}

/// One thing looked at, with what was found and how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// One of [`CHECK_NAMES`].
    pub name: String,
    /// What was found.
    pub status: CheckStatus,
    /// One line: what was found and where.
    pub detail: String,
    /// One line to run or do when the status is not `ok`.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: String) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Ok,
            detail,
            fix: None,
        }
    }

    fn not_ok(name: &str, status: CheckStatus, detail: String, fix_key: &str) -> Check {
        Check {
            name: name.into(),
            status,
            detail,
            fix: Some(fix(fix_key)),
        }
    }

    fn missing(name: &str, detail: String, fix_key: &str) -> Check {
        Check::not_ok(name, CheckStatus::Missing, detail, fix_key)
    }

    fn is_ok(&self) -> bool {
        self.status == CheckStatus::Ok
    }
}

/// Which backends can run scripts on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backends {
    /// The local backend: bwrap works.
    pub local: bool,
    /// The Docker backend: the engine answers and has the base image.
    pub docker: bool,
    /// gVisor: `runsc` is on PATH (under Docker, `docker-runsc` must be
    /// ok as well).
    pub gvisor: bool,
}

/// Every check, in [`CHECK_NAMES`] order, and the backends they add up to.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The checks.
    pub checks: Vec<Check>,
    /// The backends that work.
    pub backends: Backends,
}

impl Report {
    /// The check of that name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// What the checks depend on.
pub struct Options<'a> {
    /// The policy whose base image the Docker backend layers on, or why
    /// it could not be loaded.
    pub policy: Result<&'a Policy, String>,
    /// How long the Docker engine may take to answer each request.
    pub engine_timeout: Duration,
}

/// Runs every check.
pub fn diagnose(options: &Options) -> Report {
    let as_root = is_root();
    let mut checks = vec![
        check_bwrap(as_root),
        check_user_namespaces(as_root),
        check_cgroups(),
        check_seccomp(),
        check_runsc(),
    ];
    checks.extend(check_docker(options));
    checks.push(check_kvm());
    let ok = |name: &str| checks.iter().any(|c| c.name == name && c.is_ok());
    let backends = Backends {
        local: ok("bwrap") && ok("seccomp"),
        docker: ok("docker-engine") && ok("docker-base-image"),
        gvisor: ok("runsc"),
    };
    Report {
        schema: SCHEMA,
        checks,
        backends,
    }
}

/// The report as a table for people: one row per check, its fix under it.
pub fn to_text(report: &Report) -> String {
    let width = CHECK_NAMES.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut out = format!("{:width$}  {:8}  DETAIL\n", "CHECK", "STATUS");
    for c in &report.checks {
        out.push_str(&format!(
            "{:width$}  {:8}  {}\n",
            c.name,
            c.status.as_str(),
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:width$}  {:8}  fix: {fix}\n", "", ""));
        }
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    out.push_str(&format!(
        "\nbackends: local {}, docker {}, gvisor {}\n",
        yes(report.backends.local),
        yes(report.backends.docker),
        yes(report.backends.gvisor)
    ));
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid has no memory effects and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The first file named `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Runs `cmd` with no input, up to [`PROBE_TIMEOUT`]: whether it exited
/// 0, and its stdout and stderr (first line each).
fn probe(mut cmd: Command) -> Result<(bool, String, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let first = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    Ok((out.status.success(), first(&out.stdout), first(&out.stderr)))
}

/// Which sysctl keeps unprivileged users out of user namespaces, if one
/// does: the key of its fix.
fn userns_blocker() -> Option<&'static str> {
    if read_trimmed("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        Some("userns-clone")
    } else if read_trimmed("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        Some("max-userns")
    } else if read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
        == Some("1")
    {
        Some("apparmor")
    } else {
        None
    }
}

fn check_bwrap(as_root: bool) -> Check {
    const NAME: &str = "bwrap";
    let Some(bwrap) = find_bwrap() else {
        return Check::missing(NAME, "bwrap is not on PATH".into(), "bwrap.absent");
    };
    // The local backend's namespace flags (src/run/local.rs), on a
    // read-only view of the host; as root it drops to a uid of its own
    // with setpriv, as an unprivileged user it needs a user namespace.
    let mut cmd = Command::new(&bwrap);
    cmd.args([
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]);
    let setpriv = Path::new("/usr/bin/setpriv");
    if as_root {
        if !setpriv.is_file() {
            return Check::missing(
                NAME,
                format!(
                    "{} is present, but running as root needs {}",
                    bwrap.display(),
                    setpriv.display()
                ),
                "bwrap.setpriv",
            );
        }
        cmd.args(["--cap-add", "CAP_SETUID,CAP_SETGID", "--"]);
        cmd.args([
            "/usr/bin/setpriv",
            "--reuid",
            "200000",
            "--regid",
            "200000",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            "/bin/true",
        ]);
    } else {
        cmd.args([
            "--unshare-user",
            "--uid",
            "200000",
            "--gid",
            "200000",
            "--",
            "/bin/true",
        ]);
    }
    match probe(cmd) {
        Ok((true, _, _)) => Check::ok(
            NAME,
            format!(
                "{} runs /bin/true in new pid, net, ipc and uts namespaces{}",
                bwrap.display(),
                if as_root {
                    " (as root, dropping to a uid of its own)"
                } else {
                    " and a user namespace"
                }
            ),
        ),
        Ok((false, _, stderr)) => {
            let fix_key = match userns_blocker() {
                Some(cause) if !as_root => format!("bwrap.{cause}"),
                _ => "bwrap.refused".into(),
            };
            Check::missing(
                NAME,
                format!(
                    "{} cannot set up the sandbox's namespaces: {stderr}",
                    bwrap.display()
                ),
                &fix_key,
            )
        }
        Err(e) => Check::missing(
            NAME,
            format!("{} cannot be run: {e}", bwrap.display()),
            "bwrap.refused",
        ),
    }
}

fn check_user_namespaces(as_root: bool) -> Check {
    const NAME: &str = "user-namespaces";
    let max = read_trimmed("/proc/sys/user/max_user_namespaces");
    let clone = read_trimmed("/proc/sys/kernel/unprivileged_userns_clone");
    let mut settings = vec![format!(
        "user.max_user_namespaces={}",
        max.as_deref().unwrap_or("absent")
    )];
    if let Some(clone) = &clone {
        settings.push(format!("kernel.unprivileged_userns_clone={clone}"));
    }
    let settings = settings.join(", ");
    let blocker = userns_blocker();
    if as_root {
        let state = if blocker.is_some() {
            "closed to unprivileged users"
        } else {
            "open to unprivileged users"
        };
        return Check::ok(
            NAME,
            format!(
                "running as root, the local backend needs no unprivileged user namespaces ({state}: {settings})"
            ),
        );
    }
    match blocker {
        None => Check::ok(
            NAME,
            format!("unprivileged user namespaces are allowed ({settings})"),
        ),
        Some("apparmor") => Check::not_ok(
            NAME,
            CheckStatus::Degraded,
            format!(
                "AppArmor restricts unprivileged user namespaces to profiled programs ({settings})"
            ),
            "user-namespaces.apparmor",
        ),
        Some(cause) => Check::missing(
            NAME,
            format!("unprivileged user namespaces are disabled ({settings})"),
            &format!("user-namespaces.{cause}"),
        ),
    }
}

fn check_cgroups() -> Check {
    const NAME: &str = "cgroups";
    let Some(version) = cgroup::host_version() else {
        return Check::not_ok(
            NAME,
            CheckStatus::Degraded,
            "no cgroup file system at /sys/fs/cgroup: limits are rlimits only".into(),
            "cgroups.none",
        );
    };
    let offered = cgroup::host_controllers();
    let absent: Vec<&str> = cgroup::CONTROLLERS
        .into_iter()
        .filter(|c| !offered.contains(c))
        .collect();
    let mut found = format!(
        "{version}, controllers {}",
        if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        }
    );
    if !absent.is_empty() {
        found.push_str(&format!(" ({} absent)", absent.join(", ")));
    }
    if cgroup::disabled() {
        return Check::not_ok(
            NAME,
            CheckStatus::Degraded,
            format!("{found}; SCRIPTBOX_CGROUPS=off keeps runs out of them: limits are rlimits"),
            "cgroups.off",
        );
    }
    // A real run's cgroup, created and removed again: what the local
    // backend will get.
    let limits = Limits {
        memory: 64 << 20,
        cpus: 1.0,
        pids: 16,
        wall_time: Duration::from_secs(1),
        output: 1 << 20,
        tmp: 1 << 20,
        isolation: crate::policy::Isolation::Namespaces,
    };
    let id = format!("doctor-{}", std::process::id());
    let fix_key = if version == "cgroup-v2" {
        "cgroups.v2"
    } else {
        "cgroups.v1"
    };
    match cgroup::RunCgroup::try_create(&id, &limits) {
        Ok(_) if absent.is_empty() => {
            Check::ok(NAME, format!("{found}; a run's cgroup can be created"))
        }
        Ok(_) => Check::not_ok(NAME, CheckStatus::Degraded, found, fix_key),
        Err(e) => Check::not_ok(
            NAME,
            CheckStatus::Degraded,
            format!("{found}; a run's cgroup cannot be created ({e}): limits fall back to rlimits"),
            fix_key,
        ),
    }
}

/// The kernel's seccomp, then what the local backend needs of it: its
/// filter compiles for this architecture (a local run refuses to start
/// without the filter, which the sandbox's init installs).
fn check_seccomp() -> Check {
    const NAME: &str = "seccomp";
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Check::missing(
            NAME,
            "the kernel has no seccomp (no Seccomp: line in /proc/self/status)".into(),
            "seccomp.absent",
        );
    }
    let kernel = match read_trimmed("/proc/sys/kernel/seccomp/actions_avail") {
        Some(actions) if actions.split_whitespace().any(|a| a == "errno") => {
            format!("kernel supports seccomp filters (actions: {actions})")
        }
        Some(actions) => {
            return Check::missing(
                NAME,
                format!(
                    "kernel supports seccomp filters, but not the errno action (actions: {actions})"
                ),
                "seccomp.no-errno",
            );
        }
        // Kernels before 4.14 do not list their actions.
        None => "kernel supports seccomp filters (it does not list its actions)".into(),
    };
    if let Err(e) = seccomp::compile(std::env::consts::ARCH) {
        return Check::missing(NAME, format!("{kernel}; {e}"), "seccomp.arch");
    }
    Check::ok(
        NAME,
        format!("{kernel}; the local sandbox's init installs scriptbox's filter"),
    )
}

fn check_runsc() -> Check {
    const NAME: &str = "runsc";
    let Some(runsc) = find_on_path("runsc") else {
        return Check::missing(NAME, "runsc is not on PATH".into(), "runsc.absent");
    };
    let mut cmd = Command::new(&runsc);
    cmd.arg("--version");
    match probe(cmd) {
        Ok((true, version, _)) => Check::ok(NAME, format!("{} ({version})", runsc.display())),
        Ok((false, _, stderr)) => Check::missing(
            NAME,
            format!("{} --version failed: {stderr}", runsc.display()),
            "runsc.absent",
        ),
        Err(e) => Check::missing(
            NAME,
            format!("{} cannot be run: {e}", runsc.display()),
            "runsc.absent",
        ),
    }
}

/// `docker-engine`, `docker-runsc` and `docker-base-image`.
fn check_docker(options: &Options) -> [Check; 3] {
    let wait = options.engine_timeout;
    let engine = Engine::connect_within(wait).and_then(|engine| {
        let engine = engine.with_timeout(wait);
        let endpoint = engine.endpoint().to_string();
        let answer = engine.block_on(async {
            tokio::time::timeout(wait, async {
                engine.docker().ping().await?;
                let version = engine.docker().version().await?;
                let info = engine.docker().info().await?;
                Ok::<_, bollard::errors::Error>((version, info))
            })
            .await
        });
        let unreachable =
            |reason: String| crate::engine::EngineError::Unreachable { endpoint, reason };
        match answer {
            Ok(Ok((version, info))) => Ok((engine, version, info)),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!(
                "no answer within {} s",
                wait.as_secs_f64()
            ))),
        }
    });
    let (engine, version, info) = match engine {
        Ok(answer) => answer,
        Err(e) => {
            // The error's own advice is the fix line here.
            let detail = match e {
                crate::engine::EngineError::Unreachable { endpoint, reason } => {
                    format!("the Docker engine does not answer at {endpoint}: {reason}")
                }
                other => other.to_string(),
            };
            return [
                Check::missing("docker-engine", detail, "docker-engine.absent"),
                Check::missing(
                    "docker-runsc",
                    "no Docker engine to ask".into(),
                    "docker-runsc.no-engine",
                ),
                Check::missing(
                    "docker-base-image",
                    "no Docker engine to ask".into(),
                    "docker-base-image.no-engine",
                ),
            ];
        }
    };
    let engine_check = Check::ok(
        "docker-engine",
        format!(
            "Docker {} (API {}) at {}",
            version.version.as_deref().unwrap_or("?"),
            version.api_version.as_deref().unwrap_or("?"),
            engine.endpoint()
        ),
    );
    let mut runtimes: Vec<String> = info
        .runtimes
        .map(|r| r.into_keys().collect())
        .unwrap_or_default();
    runtimes.sort();
    let runsc_check = if runtimes.iter().any(|r| r == "runsc") {
        Check::ok(
            "docker-runsc",
            format!("the engine's runtimes: {}", runtimes.join(", ")),
        )
    } else {
        Check::missing(
            "docker-runsc",
            format!(
                "the engine has no runsc runtime (it has {})",
                runtimes.join(", ")
            ),
            "docker-runsc.absent",
        )
    };
    [
        engine_check,
        runsc_check,
        check_base_image(&engine, options),
    ]
}

fn check_base_image(engine: &Engine, options: &Options) -> Check {
    const NAME: &str = "docker-base-image";
    let policy = match &options.policy {
        Ok(p) => *p,
        Err(why) => {
            return Check::missing(NAME, why.clone(), "docker-base-image.no-policy");
        }
    };
    // The connection's requests are bounded by the engine timeout
    // (see check_docker), so neither call can hang.
    let found = crate::images::default_base(engine, policy)
        .map_err(|e| e.to_string())
        .and_then(|image| {
            let info = engine.image(&image).map_err(|e| e.to_string())?;
            Ok((image, info))
        });
    match found {
        Ok((image, Some(info))) => {
            let short = info.id.trim_start_matches("sha256:");
            Check::ok(
                NAME,
                format!(
                    "{image} ({}) is in the engine",
                    &short[..short.len().min(12)]
                ),
            )
        }
        Ok((image, None)) => Check::missing(
            NAME,
            format!("{image} (the policy's base image) is not in the engine"),
            "docker-base-image.absent",
        ),
        Err(e) => Check::missing(NAME, e, "docker-base-image.absent"),
    }
}

fn check_kvm() -> Check {
    const NAME: &str = "kvm";
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return Check::missing(NAME, "no /dev/kvm".into(), "kvm.absent");
    }
    // SAFETY: access reads a NUL-terminated path and has no other effect.
    let usable = unsafe { libc::access(c"/dev/kvm".as_ptr(), libc::R_OK | libc::W_OK) == 0 };
    if usable {
        Check::ok(NAME, "/dev/kvm is present and usable".into())
    } else {
        Check::missing(
            NAME,
            "/dev/kvm is present but this user cannot open it".into(),
            "kvm.denied",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fix_key_used_is_in_the_data_file() {
        let keys: Vec<&str> = FIXES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_once('\t').expect("key<TAB>fix").0)
            .collect();
        let source = include_str!("doctor.rs");
        // Every literal "check.cause" key, and every cause spliced in.
        let mut used: Vec<String> = Vec::new();
        for name in CHECK_NAMES {
            let prefix = format!("\"{name}.");
            for (i, _) in source.match_indices(&prefix) {
                let rest = &source[i + 1..];
                let end = rest.find('"').expect("closing quote");
                // Keys spliced from a cause are listed below.
                if !rest[..end].contains('{') {
                    used.push(rest[..end].to_string());
                }
            }
        }
        for cause in ["userns-clone", "max-userns", "apparmor"] {
            used.push(format!("bwrap.{cause}"));
            used.push(format!("user-namespaces.{cause}"));
        }
        assert!(used.len() > 20, "{used:?}");
        for key in &used {
            assert!(keys.contains(&key.as_str()), "no fix for {key}");
            assert!(!fix(key).starts_with("(no fix"), "{key}");
        }
    }

    #[test]
    fn statuses_serialise_lowercase() {
        for (s, text) in [
            (CheckStatus::Ok, "\"ok\""),
            (CheckStatus::Missing, "\"missing\""),
            (CheckStatus::Degraded, "\"degraded\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
            assert_eq!(format!("\"{}\"", s.as_str()), text);
        }
    }
}
