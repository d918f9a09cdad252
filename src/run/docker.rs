//! The docker backend: a fresh container per run, from the environment's
//! image, through the engine's API.
//!
//! The container is set up in one place, [`container_config`]: network
//! `none`; a read-only root file system; a tmpfs `/tmp` of the profile's
//! size; scriptbox's init ([`super::init`]) as the first process, as root
//! with only `CAP_SETUID`/`CAP_SETGID`, starting the script as the
//! unprivileged uid 10001 with no capability at all;
//! `no-new-privileges`; the engine's default seccomp profile (never
//! disabled); pids, memory (memory plus swap equal: no swap) and CPU
//! limits; ulimits for open files, file size, CPU time and core dumps. The
//! script's directory is the only host directory the script can read (the
//! init's binary and its report directory are bound in too).
//!
//! Every container carries scriptbox's labels, with the pid and start time
//! of the scriptbox process that owns it. It is removed after every run,
//! also on timeout; containers whose owner died (scriptbox killed) are
//! removed by [`reap`] when the next run starts.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::cancel::{CancelReason, CancelToken};
use super::init::{DockerInit, Ended};
use super::limits::{Limits, NOFILE};
use super::outcome::{Execution, Status, signal_name};
use super::output::{OutputSink, Stream};
use super::{ExecRequest, RunError};
use crate::egress::EgressSession;
use crate::egress::session::SANDBOX_DIR;
use crate::engine::{Engine, labels};
use crate::env::EnvLocation;
use crate::policy::Isolation;

/// The uid and gid scripts run as (the base image's `sandbox` user); the
/// init drops to them.
pub const SANDBOX_UID: u32 = 10001;
/// Label naming the owner of a run container: `<pid>:<start time>`.
const OWNER: &str = "io.scriptbox.owner";
/// Where the script's directory is mounted.
const SCRIPT_DIR: &str = "/sandbox";

/// Removal of a run container: forced (it may still run), with its
/// anonymous volumes.
fn remove_options() -> bollard::query_parameters::RemoveContainerOptions {
    RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build()
}

/// This process as an owner label: pid and start time (clock ticks since
/// boot, field 22 of `/proc/<pid>/stat`), so a reused pid is not mistaken
/// for us.
fn owner_of(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

/// Removes run containers whose scriptbox process is gone.
pub fn reap(engine: &Engine) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("{}=run", labels::KIND)])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = engine.block_on(engine.docker().list_containers(Some(options))) else {
        return 0;
    };
    let mut removed = 0;
    for c in list {
        let owner = c.labels.as_ref().and_then(|l| l.get(OWNER)).cloned();
        let alive = owner.as_deref().is_some_and(|o| {
            o.split_once(':')
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .and_then(owner_of)
                .as_deref()
                == Some(o)
        });
        if alive {
            continue;
        }
        if let Some(id) = c.id {
            let rm = remove_options();
            if engine
                .block_on(engine.docker().remove_container(&id, Some(rm)))
                .is_ok()
            {
                tracing::info!("removed stray run container {id}");
                removed += 1;
            }
        }
    }
    removed
}

/// The container for one run.
fn container_config(
    image: &str,
    req: &ExecRequest,
    script_dir: &str,
    owner: &str,
    has_stdin: bool,
    init: &DockerInit,
    egress: Option<&EgressSession>,
) -> ContainerCreateBody {
    let limits: &Limits = &req.limits;
    let mut egress_binds = Vec::new();
    let mut env: Vec<String> = limits
        .environment()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let gvisor = limits.isolation == Isolation::Gvisor;
    // gVisor's network stack lets only a privileged process bind the
    // relay's DNS port: there the init's child stays root, the relay binds
    // and drops itself, and setpriv drops the script.
    let root_relay = gvisor && egress.is_some();
    let mut cmd = if root_relay {
        DockerInit::words_for(None)
    } else {
        DockerInit::words(SANDBOX_UID, SANDBOX_UID)
    };
    let mut caps = DockerInit::caps();
    // The network's one way out (the container's network stays `none`):
    // the relay beside the script (the init's binary, bound already), the
    // host proxy's socket in the session directory, and name lookups sent
    // to the relay's stub. Under runc the engine lets containers bind
    // ports below 1024, so the relay needs no capability for its DNS port.
    if let Some(session) = egress {
        egress_binds.push(format!("{}:{SANDBOX_DIR}:ro", session.host_dir().display()));
        for (file, target) in session.etc_files() {
            egress_binds.push(format!("{}:{target}:ro", file.display()));
        }
        env.extend(
            session
                .environment()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        if root_relay {
            cmd.extend(session.relay_prefix(Some(SANDBOX_UID)));
            cmd.extend(super::drop_to_words(SANDBOX_UID));
            caps.extend(["NET_BIND_SERVICE".to_string(), "SETPCAP".to_string()]);
        } else {
            cmd.extend(session.relay_prefix(None));
        }
    }
    cmd.extend([
        "python3".to_string(),
        "-I".into(),
        "-u".into(),
        "-B".into(),
        format!("{SCRIPT_DIR}/{}", req.script_name),
    ]);
    cmd.extend(req.args.iter().cloned());
    let mut binds = vec![format!("{script_dir}:{SCRIPT_DIR}:ro")];
    binds.extend(init.binds());
    binds.extend(egress_binds);
    if gvisor {
        cmd.splice(0..0, super::gvisor::docker_command_prefix(limits));
    }
    let ulimit = |name: &str, value: u64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value as i64),
        hard: Some(value as i64),
    };
    let cpu = limits.cpu_seconds();
    let host = HostConfig {
        network_mode: Some("none".into()),
        // scriptbox's init is pid 1 (the engine's would hide how the script
        // ended), so the script gets every signal (the kernel shields pid 1
        // from CPU-limit signals) and zombies are reaped.
        init: Some(false),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={},mode=1777", limits.tmp),
        )])),
        binds: Some(binds),
        // /dev/shm is another writable tmpfs: no larger than /tmp.
        shm_size: Some(limits.tmp as i64),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(caps),
        security_opt: Some(vec!["no-new-privileges".into()]),
        // Under gVisor the profile's count is set inside (see
        // `gvisor::docker_command_prefix`); the cgroup leaves room for
        // gVisor's own threads.
        pids_limit: Some(i64::from(if gvisor {
            super::gvisor::host_pids(limits)
        } else {
            limits.pids
        })),
        runtime: gvisor.then(|| super::gvisor::DOCKER_RUNTIME.to_string()),
        memory: Some(limits.memory as i64),
        memory_swap: Some(limits.memory as i64),
        nano_cpus: Some((limits.cpus * 1e9) as i64),
        ulimits: Some(vec![
            ulimit("nofile", NOFILE),
            ulimit("fsize", limits.tmp),
            ulimit("core", 0),
            ResourcesUlimits {
                name: Some("cpu".into()),
                soft: Some(cpu as i64),
                hard: Some(cpu as i64 + 1),
            },
        ]),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(cmd),
        // The init's; the script's is SANDBOX_UID.
        user: Some("0:0".into()),
        hostname: Some("sandbox".into()),
        working_dir: Some("/tmp".into()),
        env: Some(env),
        network_disabled: Some(true),
        attach_stdin: Some(has_stdin),
        open_stdin: Some(has_stdin),
        stdin_once: Some(has_stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(HashMap::from([
            (labels::KIND.to_string(), "run".to_string()),
            (OWNER.to_string(), owner.to_string()),
        ])),
        host_config: Some(host),
        ..Default::default()
    }
}

/// Removes the container however the run ends.
struct Remove<'a> {
    engine: &'a Engine,
    id: String,
}

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let rm = remove_options();
        let _ = self
            .engine
            .block_on(self.engine.docker().remove_container(&self.id, Some(rm)));
    }
}

/// Runs `req` in a container until it ends, a limit stops it or `cancel`
/// is cancelled, handing its output to `sink` as it arrives.
pub fn run(
    req: &ExecRequest,
    cancel: &CancelToken,
    sink: &dyn OutputSink,
) -> Result<Execution, RunError> {
    let EnvLocation::Image { id: image, .. } = &req.env.location else {
        return Err(RunError::Environment(
            "the docker backend needs an image environment".into(),
        ));
    };
    let engine = Engine::connect()?;
    reap(&engine);
    let owner = owner_of(std::process::id()).unwrap_or_default();

    let script_dir = super::script_dir(req)?;
    let stdin = req.stdin.read()?;
    let init = DockerInit::new(super::sandbox_binary()?)?;

    let gvisor = req.limits.isolation == Isolation::Gvisor;
    let session = req
        .egress
        .clone()
        .map(|config| EgressSession::start(config, !gvisor))
        .transpose()?;
    let body = container_config(
        image,
        req,
        &script_dir.path().display().to_string(),
        &owner,
        stdin.is_some(),
        &init,
        session.as_ref(),
    );
    let name = format!("scriptbox-run-{}", uuid::Uuid::new_v4());
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let docker = engine.docker();
    let created = engine
        .block_on(docker.create_container(Some(options), body))
        .map_err(|e| {
            let action = if req.limits.isolation == Isolation::Gvisor {
                "creating the container with the runsc runtime (gVisor; scripts/docker-up registers it with the engine)"
            } else {
                "creating the container"
            };
            RunError::Engine(engine_error(action, e))
        })?;
    let _remove = Remove {
        engine: &engine,
        id: created.id.clone(),
    };
    let id = created.id.as_str();
    let limit = req.limits.output;
    let cpu_limit = req.limits.cpu_seconds();
    let gvisor = req.limits.isolation == Isolation::Gvisor;
    let cores = req.limits.cpus;
    let wall = req.limits.wall_time;

    let result: Result<Execution, RunError> = engine.block_on(async {
        let attach = AttachContainerOptionsBuilder::default()
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let mut attached = docker
            .attach_container(id, Some(attach))
            .await
            .map_err(|e| RunError::Engine(engine_error("attaching to the container", e)))?;
        let started = Instant::now();
        docker
            .start_container(id, None)
            .await
            .map_err(|e| RunError::Engine(engine_error("starting the container", e)))?;
        // Asked after the start: "not-running" then means "has exited",
        // however soon that happened.
        let wait = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waiter = docker.wait_container(id, Some(wait));
        if let Some(bytes) = stdin {
            let mut input = attached.input;
            tokio::spawn(async move {
                let _ = input.write_all(&bytes).await;
                let _ = input.shutdown().await;
            });
        }
        let mut exec = Execution {
            enforcement: match req.limits.isolation {
                Isolation::Gvisor => vec!["gvisor".into(), "engine".into()],
                Isolation::Namespaces => vec!["engine".into()],
            },
            ..Execution::default()
        };
        let mut kept: u64 = 0;
        let mut stopped: Option<Status> = None;
        let deadline = tokio::time::Instant::now() + wall;
        let mut output_open = true;
        let mut exit_code: Option<i64> = None;
        let mut cancelled: Option<CancelReason> = None;
        let mut cpu_seen: f64 = 0.0;
        // After a kill, the container gets this long to go before the run is
        // given up on (the guard then removes it by force).
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            if stopped.is_some() && grace.is_none() {
                grace = Some(tokio::time::Instant::now() + Duration::from_secs(10));
            }
            let give_up = grace.unwrap_or_else(|| tokio::time::Instant::now() + wall * 4);
            tokio::select! {
                chunk = attached.output.next(), if output_open => match chunk {
                    Some(Ok(log)) => {
                        if keep(&mut exec, &mut kept, limit, log, sink) && stopped.is_none() {
                            stopped = Some(Status::OutputLimit);
                            kill(docker, id);
                        }
                    }
                    _ => output_open = false,
                },
                done = waiter.next(), if exit_code.is_none() => {
                    exit_code = Some(match done {
                        Some(Ok(r)) => r.status_code,
                        // The engine reports a non-zero exit as an error
                        // carrying the code.
                        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                        _ => -1,
                    });
                }
                _ = tokio::time::sleep_until(give_up), if grace.is_some() => {
                    tracing::warn!("container {id} did not stop after a kill; removing it");
                    break;
                }
                _ = tokio::time::sleep_until(deadline), if stopped.is_none() => {
                    stopped = Some(Status::TimedOut);
                    kill(docker, id);
                }
                _ = tokio::time::sleep(Duration::from_millis(50)), if stopped.is_none() => {
                    // The cgroup goes with the container: sample its peak
                    // while it runs.
                    if let Some(peak) = peak_memory(id) {
                        exec.peak_memory = Some(exec.peak_memory.unwrap_or(0).max(peak));
                    }
                    if let Some(used) = cpu_used(id) {
                        cpu_seen = cpu_seen.max(used);
                    }
                    // Under gVisor, the CPU rlimit inside does not always
                    // fire; the container's cgroup stops it at the hard limit.
                    if gvisor && stopped.is_none() && cpu_seen >= cpu_limit as f64 + 1.0 {
                        stopped = Some(Status::CpuLimit);
                        kill(docker, id);
                    }
                    if let Some(reason) = cancel.requested() {
                        cancelled = Some(reason);
                        stopped = Some(match reason {
                            CancelReason::Signal(_) => Status::Killed,
                            CancelReason::Requested => Status::Cancelled,
                        });
                        kill(docker, id);
                    }
                }
            }
            if exit_code.is_some() && !output_open {
                break;
            }
            if exit_code.is_some() {
                // The output stream ends with the container; do not wait on
                // it for long.
                match tokio::time::timeout(Duration::from_secs(2), attached.output.next()).await {
                    Ok(Some(Ok(log))) => {
                        if keep(&mut exec, &mut kept, limit, log, sink) && stopped.is_none() {
                            stopped = Some(Status::OutputLimit);
                        }
                    }
                    _ => output_open = false,
                }
            }
        }
        exec.seconds = started.elapsed().as_secs_f64();
        let state = docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state);
        let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false)
            && exit_code != Some(0);
        let code = state
            .as_ref()
            .and_then(|s| s.exit_code)
            .or(exit_code)
            .unwrap_or(-1);
        if let Some(peak) = peak_memory(id) {
            exec.peak_memory = Some(exec.peak_memory.unwrap_or(0).max(peak));
        }
        // Under gVisor the host's memory kill can land on one of gVisor's
        // own processes while the init still reports the script's exit:
        // a failed run whose cgroup reached the limit ran out of memory.
        let oom = oom
            || (gvisor
                && exit_code != Some(0)
                && exec.peak_memory.is_some_and(|p| p >= req.limits.memory));
        // The init's report says exactly how the script ended; without
        // one (the init was killed), a code above 128 reads as a signal.
        let report = init.report();
        let exact = report.is_some();
        match report.unwrap_or_else(|| Ended::guess(code)) {
            Ended::Exited(code) => exec.exit_code = Some(code),
            Ended::Signaled(sig) => exec.signal = Some(signal_name(sig)),
        }
        if let Some(reason) = cancelled {
            exec.cancelled(reason);
        }
        // SIGXCPU is the CPU limit only with the run's CPU time near it (a
        // script can send it to itself). Without a report, exit code 152
        // reads as SIGXCPU: with too little CPU time, it was a plain exit.
        // Without a sample (a quick exit), the quota bounds the CPU time:
        // wall seconds times cores.
        let cpu_bound = if cpu_seen > 0.0 {
            cpu_seen
        } else {
            exec.seconds * cores
        };
        let cpu_plausible = cpu_bound >= cpu_limit as f64 * 0.9;
        if exec.signal.as_deref() == Some("SIGXCPU") && !cpu_plausible && !exact {
            exec.signal = None;
            exec.exit_code = Some(128 + libc::SIGXCPU);
        }
        exec.status = stopped.or(if oom {
            Some(Status::MemoryLimit)
        } else if (exec.signal.as_deref() == Some("SIGXCPU") && cpu_plausible)
            || (exec.signal.as_deref() == Some("SIGKILL")
                && cpu_seen >= cpu_limit as f64 * 0.9)
        {
            // A script ignoring SIGXCPU gets SIGKILL at the hard limit.
            Some(Status::CpuLimit)
        } else {
            None
        });
        Ok(exec)
    });
    let mut result = result;
    if let Ok(exec) = result.as_mut() {
        super::finish_egress(session, exec, sink);
    }
    drop(script_dir);
    drop(init);
    result
}

/// Keeps one chunk of output under the shared limit, handing what is kept
/// to `sink`; true when some of it went over.
fn keep(
    exec: &mut Execution,
    kept: &mut u64,
    limit: u64,
    log: bollard::container::LogOutput,
    sink: &dyn OutputSink,
) -> bool {
    use bollard::container::LogOutput;
    let (bytes, stream) = match log {
        LogOutput::StdErr { message } => (message, Stream::Stderr),
        LogOutput::StdOut { message } | LogOutput::Console { message } => (message, Stream::Stdout),
        LogOutput::StdIn { .. } => return false,
    };
    let room = limit.saturating_sub(*kept) as usize;
    let take = bytes.len().min(room);
    let (buf, truncated) = match stream {
        Stream::Stderr => (&mut exec.stderr, &mut exec.stderr_truncated),
        Stream::Stdout => (&mut exec.stdout, &mut exec.stdout_truncated),
    };
    buf.extend_from_slice(&bytes[..take]);
    if take > 0 {
        sink.output(stream, &bytes[..take]);
    }
    *kept += take as u64;
    if bytes.len() > room {
        *truncated = true;
        return true;
    }
    false
}

/// Kills the container without waiting: the engine finishes a kill only
/// once the container's output is drained, so the caller must go on
/// reading it.
fn kill(docker: &bollard::Docker, id: &str) {
    let docker = docker.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = docker.kill_container(&id, Some(options)).await;
    });
}

/// CPU seconds the container used so far, from its cgroup (best effort).
fn cpu_used(id: &str) -> Option<f64> {
    for path in [
        format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"),
        format!("/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage"),
    ] {
        if let Some(ns) = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            return Some(ns / 1e9);
        }
    }
    let stat = fs::read_to_string(format!(
        "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"
    ))
    .ok()?;
    let usec: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some(usec / 1e6)
}

/// The container's peak memory from its cgroup, where the engine uses
/// cgroupfs on this host (best effort).
fn peak_memory(id: &str) -> Option<u64> {
    [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak"),
    ]
    .iter()
    .find_map(|p| fs::read_to_string(p).ok()?.trim().parse().ok())
}

fn engine_error(action: &str, e: bollard::errors::Error) -> crate::engine::EngineError {
    crate::engine::EngineError::Api {
        action: action.into(),
        reason: match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        },
    }
}
