//! `scriptbox run` end to end: the README's example on both backends, each
//! status the command itself decides (rejected, failed, error), arguments
//! and stdin, numpy under a pids limit, and a machine without bubblewrap.

use std::fs;
use std::path::Path;
use std::process::Command;

mod support;
use support::{engine_turn, json, python, repo, scriptbox};

fn run(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = scriptbox(cache, &["run", "--python", &python()]);
    cmd.args(args);
    cmd
}

fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn the_pandas_example_runs_on_both_backends() {
    let _turn = engine_turn();
    let cache = tempfile::tempdir().unwrap();
    for backend in ["local", "docker"] {
        let out = run(
            cache.path(),
            &[
                "examples/sma_pandas.py",
                "--policy",
                "strict",
                "--stdin",
                "examples/data/prices.csv",
                "--backend",
                backend,
                "--format",
                "json",
            ],
        )
        .output()
        .unwrap();
        let r = json(&out);
        assert_eq!(r["status"], "succeeded", "{backend}: {r}");
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(r["schema"], "scriptbox.run/1");
        assert_eq!(r["exit_code"], 0);
        assert!(
            r["stdout"]
                .as_str()
                .unwrap()
                .contains("strategy return +12.56%, buy and hold +25.21%"),
            "{r}"
        );
        assert_eq!(
            r["env"]["kind"],
            if backend == "local" { "venv" } else { "image" }
        );
        assert!(r["durations"]["run"].as_f64().unwrap() > 0.0);
        // pandas alone takes tens of MiB; both backends measure the peak.
        let peak = r["peak_memory_bytes"].as_u64().unwrap_or(0);
        assert!(peak > 20 << 20, "{backend}: peak {peak}");
    }
    // The text format: the script's output, then one status line.
    let out = run(
        cache.path(),
        &[
            "examples/sma_pandas.py",
            "--policy",
            "strict",
            "--stdin",
            "examples/data/prices.csv",
        ],
    )
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("BUY"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scriptbox: succeeded in"), "{err}");
    assert!(err.contains("cached"), "the environment was reused: {err}");
}

#[test]
fn rejected_failed_and_error_are_told_apart() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Refused by the policy: nothing runs.
    let s = script(dir.path(), "bot.py", "import flask\n");
    let out = run(
        cache.path(),
        &[&s, "--policy", "strict", "--format", "json"],
    )
    .output()
    .unwrap();
    let r = json(&out);
    assert_eq!(r["status"], "rejected");
    assert_eq!(out.status.code(), Some(3));
    assert!(r["message"].as_str().unwrap().contains("flask"), "{r}");
    assert_eq!(r["env"], serde_json::Value::Null);
    // Not Python: rejected with the place.
    let s = script(dir.path(), "broken.py", "def f(:\n");
    let r = json(
        &run(
            cache.path(),
            &[&s, "--policy", "strict", "--format", "json"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(r["status"], "rejected");
    assert!(r["message"].as_str().unwrap().contains("line 1"), "{r}");
    // A non-zero exit is `failed`, with the code; arguments arrive.
    let s = script(
        dir.path(),
        "exit.py",
        "import sys\nprint(sys.argv[1:])\nsys.exit(3)\n",
    );
    let out = run(
        cache.path(),
        &[
            &s, "--policy", "strict", "--format", "json", "--", "a", "b c",
        ],
    )
    .output()
    .unwrap();
    let r = json(&out);
    assert_eq!(
        (r["status"].as_str(), r["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["stdout"], "['a', 'b c']\n");
    // An unknown profile is scriptbox's error, naming the profiles there are.
    let out = run(
        cache.path(),
        &[&s, "--policy", "strict", "--profile", "huge"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no profile 'huge' (it has: default)")
    );
}

#[test]
fn numpy_works_under_the_pids_limit() {
    // strict's profile allows 32 processes and threads; numpy's thread
    // pools follow the profile's cpus instead of the host's cores.
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "np.py",
        "import os, numpy\nprint(numpy.linalg.inv(numpy.eye(200)).trace(), os.environ['OPENBLAS_NUM_THREADS'])\n",
    );
    let r = json(
        &run(
            cache.path(),
            &[&s, "--policy", "strict", "--format", "json"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["stdout"], "200.0 1\n");
    assert!(
        r["enforcement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "rlimit")
    );
}

#[test]
fn without_bubblewrap_the_local_backend_refuses_unless_told() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "hello.py", "print('hello')\n");
    // A PATH with no bwrap on it.
    let bin = tempfile::tempdir().unwrap();
    let out = run(
        cache.path(),
        &[&s, "--policy", "strict", "--format", "json"],
    )
    .env("PATH", bin.path())
    .output()
    .unwrap();
    let r = json(&out);
    assert_eq!(r["status"], "error");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("apt-get install bubblewrap"),
        "{r}"
    );
    let out = run(
        cache.path(),
        &[
            &s,
            "--policy",
            "strict",
            "--format",
            "json",
            "--unsandboxed",
        ],
    )
    .env("PATH", bin.path())
    .output()
    .unwrap();
    let r = json(&out);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["stdout"], "hello\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: --unsandboxed"));
}

#[test]
fn sigterm_to_scriptbox_stops_the_script_and_cleans_up() {
    let _turn = engine_turn();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "wait.py",
        "import time\nprint('started', flush=True)\ntime.sleep(600)\n",
    );
    for backend in ["local", "docker"] {
        let child = run(
            cache.path(),
            &[
                &s,
                "--policy",
                "tests/policies/hostile.toml",
                "--backend",
                backend,
                "--format",
                "json",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        // SAFETY: sends a signal to our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let out = child.wait_with_output().unwrap();
        let r = json(&out);
        assert_eq!(r["status"], "killed", "{backend}: {r}");
        assert_eq!(r["signal"], "SIGTERM", "{backend}: {r}");
        assert!(r["durations"]["run"].as_f64().unwrap() < 5.0, "{r}");
        assert_eq!(out.status.code(), Some(8));
    }
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.scriptbox.kind=run"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "containers left behind");
}

#[test]
fn a_killed_scriptbox_leaves_nothing_running() {
    let _turn = engine_turn();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "linger.py",
        "import time\nprint('started', flush=True)\ntime.sleep(600)\n",
    );
    let hello = script(dir.path(), "hello.py", "print('hello')\n");
    let containers = || {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=io.scriptbox.kind=run"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for backend in ["local", "docker"] {
        let mut child = run(
            cache.path(),
            &[
                &s,
                "--policy",
                "tests/policies/hostile.toml",
                "--backend",
                backend,
            ],
        )
        .spawn()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        child.kill().unwrap(); // SIGKILL: no clean-up code runs
        child.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        // The local sandbox dies with its parent (bwrap --die-with-parent).
        let lingering = Command::new("pgrep")
            .args(["-f", "/sandbox/linger.py"])
            .output()
            .unwrap();
        if backend == "local" {
            assert!(lingering.stdout.is_empty(), "local sandbox survived");
        } else {
            assert!(!containers().is_empty(), "the container outlived scriptbox");
            // The next docker run removes it before starting its own.
            let out = run(
                cache.path(),
                &[
                    &hello,
                    "--policy",
                    "tests/policies/hostile.toml",
                    "--backend",
                    "docker",
                ],
            )
            .output()
            .unwrap();
            assert!(out.status.success());
            assert_eq!(containers(), "", "the stray container was reaped");
        }
    }
}

#[test]
fn without_cgroups_rlimits_still_hold_and_the_outcome_says_so() {
    let cache = tempfile::tempdir().unwrap();
    let hostile = repo().join("tests/hostile");
    for (name, want) in [
        ("memory_bomb.py", "memory-limit"),
        ("cpu_spin.py", "cpu-limit"),
        ("fork_bomb.py", "timed-out"),
    ] {
        let out = run(
            cache.path(),
            &[
                hostile.join(name).to_str().unwrap(),
                "--policy",
                "tests/policies/hostile.toml",
                "--format",
                "json",
            ],
        )
        .env("SCRIPTBOX_CGROUPS", "off")
        .output()
        .unwrap();
        let r = json(&out);
        assert_eq!(r["status"], want, "{name}: {r}");
        assert_eq!(r["enforcement"], serde_json::json!(["rlimit"]), "{name}");
    }
}

#[test]
fn text_output_is_written_through_while_the_script_runs() {
    use std::io::BufRead;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "ticker.py",
        "import time\nprint('first tick')\ntime.sleep(3)\nprint('second tick')\n",
    );
    let mut child = run(cache.path(), &[&s, "--policy", "tests/policies/tiny.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first tick");
    // The script is still asleep: the line came through as it was printed.
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(lines.next().unwrap().unwrap(), "second tick");
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_allowlist_profile_runs_sandboxed_with_an_egress_report_and_never_unsandboxed() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The proxy variables point at the relay, lookups go to its stub, and
    // a name off the list gets no answer.
    let s = script(
        dir.path(),
        "bot.py",
        "import os, socket\n\
         print(os.environ['HTTPS_PROXY'])\n\
         print(open('/etc/resolv.conf').read().split('nameserver ')[1].split()[0])\n\
         try:\n    socket.getaddrinfo('example.invalid', 443)\n    print('resolved')\n\
         except socket.gaierror:\n    print('no answer')\n",
    );
    for backend in ["local", "docker"] {
        let out = run(
            cache.path(),
            &[
                &s,
                "--profile",
                "trading",
                "--backend",
                backend,
                "--format",
                "json",
            ],
        )
        .output()
        .unwrap();
        let r = json(&out);
        assert_eq!(r["status"], "succeeded", "{backend}: {r}");
        assert_eq!(
            r["stdout"], "http://127.0.0.1:3128\n127.0.0.1\nno answer\n",
            "{backend}: {r}"
        );
        assert_eq!(r["egress"]["allowed"], 0, "{backend}: {r}");
        assert_eq!(r["egress"]["connections"], serde_json::json!([]), "{r}");
    }
    let out = run(
        cache.path(),
        &[
            &s,
            "--profile",
            "trading",
            "--unsandboxed",
            "--format",
            "json",
        ],
    )
    .output()
    .unwrap();
    let r = json(&out);
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(out.status.code(), Some(2));
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("--unsandboxed cannot enforce"),
        "{message}"
    );
    assert_eq!(
        r["env"],
        serde_json::Value::Null,
        "nothing was built or run"
    );
}

#[test]
fn the_examples_and_the_scientific_stack_run_under_the_local_seccomp_filter() {
    // The default policy's environment has numpy, pandas, scikit-learn and
    // matplotlib. The script shows the filter was on (unshare refused) and
    // then works the stack: BLAS threads, a forest, a figure, a subprocess
    // (posix_spawn's clone3 gets ENOSYS and glibc falls back to clone).
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "stack.py",
        "import ctypes, errno, subprocess, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         r = libc.unshare(0x10000000)\n\
         print('unshare', 'allowed' if r == 0 else errno.errorcode[ctypes.get_errno()])\n\
         import numpy as np, pandas as pd\n\
         import matplotlib\n\
         matplotlib.use('Agg')\n\
         import matplotlib.pyplot as plt\n\
         from sklearn.ensemble import RandomForestClassifier\n\
         x = np.random.default_rng(0).normal(size=(400, 4))\n\
         y = (x[:, 0] + x[:, 1] > 0).astype(int)\n\
         print('inv', np.linalg.inv(np.eye(300) * 2).trace())\n\
         print('frame', pd.DataFrame(x).rolling(5).mean().dropna().shape)\n\
         model = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=2).fit(x, y)\n\
         print('forest', model.score(x, y) > 0.9)\n\
         plt.plot(x[:, 0]); plt.savefig('/tmp/plot.png')\n\
         print('figure', open('/tmp/plot.png', 'rb').read(4) == b'\\x89PNG')\n\
         out = subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True, text=True)\n\
         print('subprocess', out.stdout.strip())\n",
    );
    let r = json(
        &run(
            cache.path(),
            &[
                &s,
                "--policy",
                "default",
                "--backend",
                "local",
                "--format",
                "json",
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        r["stdout"],
        "unshare EPERM\ninv 150.0\nframe (396, 4)\nforest True\nfigure True\nsubprocess 7\n",
        "{r}"
    );
    // The examples, as a user would run them.
    let examples: [(&str, &[&str]); 3] = [
        ("examples/ml_strategy.py", &[]),
        (
            "examples/sma_pandas.py",
            &["--stdin", "examples/data/prices.csv"],
        ),
        (
            "examples/sma_crossover.py",
            &["--stdin", "examples/data/prices.csv", "--", "/dev/stdin"],
        ),
    ];
    for (example, extra) in examples {
        let mut args = vec![example, "--policy", "default", "--backend", "local"];
        args.extend(["--format", "json"]);
        args.extend(extra);
        let r = json(&run(cache.path(), &args).output().unwrap());
        assert_eq!(r["status"], "succeeded", "{example}: {r}");
    }
}

/// A policy like tests/policies/hostile.toml (and its lock) whose default
/// profile runs under gVisor.
fn gvisor_policy(dir: &Path) -> String {
    let text = fs::read_to_string(repo().join("tests/policies/hostile.toml")).unwrap();
    let text = text.replace(
        "network = \"none\"\n",
        "network = \"none\"\nisolation = \"gvisor\"\n",
    );
    let path = dir.join("gvisor.toml");
    fs::write(&path, text).unwrap();
    // The same pins (the lock reads as stale, a warning: only a profile
    // changed).
    fs::copy(
        repo().join("tests/policies/hostile.lock"),
        dir.join("gvisor.lock"),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn gvisor_runs_and_limits_scripts_on_both_backends() {
    let _turn = engine_turn();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = gvisor_policy(dir.path());
    let hello = script(
        dir.path(),
        "hello.py",
        "import os\nprint('hello', os.uname().release)\n",
    );
    let hog = script(
        dir.path(),
        "hog.py",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
    );
    let sleeper = script(dir.path(), "sleeper.py", "import time\ntime.sleep(60)\n");
    for backend in ["local", "docker"] {
        let outcome = |path: &str| {
            json(
                &run(
                    cache.path(),
                    &[
                        path,
                        "--policy",
                        &policy,
                        "--backend",
                        backend,
                        "--format",
                        "json",
                    ],
                )
                .output()
                .unwrap(),
            )
        };
        let r = outcome(&hello);
        assert_eq!(r["status"], "succeeded", "{backend}: {r}");
        assert_eq!(r["schema"], "scriptbox.run/1");
        // gVisor's kernel answers uname, not the host's.
        let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let stdout = r["stdout"].as_str().unwrap();
        assert!(stdout.starts_with("hello "), "{backend}: {r}");
        assert!(!stdout.contains(host.trim()), "{backend}: {r}");
        assert_eq!(r["enforcement"][0], "gvisor", "{backend}: {r}");
        let r = outcome(&hog);
        assert_eq!(r["status"], "memory-limit", "{backend}: {r}");
        let r = outcome(&sleeper);
        assert_eq!(r["status"], "timed-out", "{backend}: {r}");
    }
}

#[test]
fn gvisor_without_runsc_fails_with_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = gvisor_policy(dir.path());
    let hello = script(dir.path(), "hello.py", "print('hello')\n");
    // A PATH with bwrap and python but no runsc.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for tool in ["bwrap", "setpriv"] {
        if let Some(found) = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
    }
    let out = run(
        cache.path(),
        &[&hello, "--policy", &policy, "--format", "json"],
    )
    .env("PATH", &bin)
    .output()
    .unwrap();
    let r = json(&out);
    assert_eq!(r["status"], "error", "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("runsc"), "{message}");
    assert!(message.contains("apt-get install runsc"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}
