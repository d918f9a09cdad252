//! The library's pipeline, called as the service will call it: several runs
//! in one process, each with its own cancel token, and output reaching the
//! caller's sink while the script still runs. Real sandbox, real uv, and
//! (for the docker cases) the real engine.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scriptbox::env::build::BuildProgress;
use scriptbox::pipeline::{Backend, RunObserver, RunRequest};
use scriptbox::run::Stdin;
use scriptbox::run::cancel::{CancelReason, CancelToken};
use scriptbox::run::outcome::Status;
use scriptbox::run::output::{OutputSink, Stream};

mod support;
use support::{python, repo};

/// Records each chunk of output with the moment it arrived.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Instant, Stream, Vec<u8>)>>);

impl Recorder {
    fn stdout(&self) -> String {
        let chunks = self.0.lock().unwrap();
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|(_, s, _)| *s == Stream::Stdout)
            .flat_map(|(_, _, b)| b.clone())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    /// When the stdout seen so far first contained `text`.
    fn first_seen(&self, text: &str) -> Option<Instant> {
        let chunks = self.0.lock().unwrap();
        let mut seen = Vec::new();
        for (at, stream, bytes) in chunks.iter() {
            if *stream == Stream::Stdout {
                seen.extend_from_slice(bytes);
                if String::from_utf8_lossy(&seen).contains(text) {
                    return Some(*at);
                }
            }
        }
        None
    }
}

impl OutputSink for Recorder {
    fn output(&self, stream: Stream, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), stream, bytes.to_vec()));
    }
}
impl BuildProgress for Recorder {}
impl RunObserver for Recorder {}

fn request(script: &str, backend: Backend, cache: &Path) -> RunRequest {
    let (policy, _) = scriptbox::policy::load(&repo().join("tests/policies/tiny.toml")).unwrap();
    RunRequest {
        script: script.as_bytes().to_vec(),
        script_path: "job.py".into(),
        policy: Arc::new(policy),
        profile: "default".into(),
        backend,
        unsandboxed: false,
        args: Vec::new(),
        stdin: Stdin::Empty,
        cache_dir: cache.to_path_buf(),
        python: python(),
        base_image: None,
        audit: None,
    }
}

/// Waits until `recorder` has seen `text`, for at most a minute.
fn wait_for(recorder: &Recorder, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorder.first_seen(text).is_none() {
        assert!(Instant::now() < deadline, "never printed {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn two_runs_cancel_one(backend: Backend) {
    let cache = tempfile::tempdir().unwrap();
    let doomed = request(
        "import time\nprint('doomed started', flush=True)\ntime.sleep(25)\nprint('never')\n",
        backend,
        cache.path(),
    );
    let survivor = request(
        "import time\nprint('survivor started', flush=True)\ntime.sleep(3)\nprint('done')\n",
        backend,
        cache.path(),
    );
    let (doomed_seen, survivor_seen) = (Recorder::default(), Recorder::default());
    let (doomed_token, survivor_token) = (CancelToken::new(), CancelToken::new());
    std::thread::scope(|s| {
        let a = s.spawn(|| scriptbox::pipeline::run(&doomed, &doomed_token, &doomed_seen));
        let b = s.spawn(|| scriptbox::pipeline::run(&survivor, &survivor_token, &survivor_seen));
        // Both scripts are running at once; cancel only one of them.
        wait_for(&doomed_seen, "doomed started");
        wait_for(&survivor_seen, "survivor started");
        let cancelled_at = Instant::now();
        doomed_token.cancel(CancelReason::Requested);
        let doomed = a.join().unwrap();
        let survivor = b.join().unwrap();
        assert_eq!(doomed.status, Status::Cancelled, "{doomed:?}");
        assert!(!doomed.stdout.contains("never"));
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(20),
            "the cancelled run went on"
        );
        assert_eq!(survivor.status, Status::Succeeded, "{survivor:?}");
        assert_eq!(survivor.stdout, "survivor started\ndone\n");
        assert_eq!(survivor_seen.stdout(), survivor.stdout);
        assert_eq!(survivor_token.requested(), None);
    });
}

#[test]
fn two_local_runs_in_one_process_are_cancelled_independently() {
    two_runs_cancel_one(Backend::Local);
}

#[test]
fn two_docker_runs_in_one_process_are_cancelled_independently() {
    two_runs_cancel_one(Backend::Docker);
}

fn output_arrives_while_the_script_runs(backend: Backend) {
    let cache = tempfile::tempdir().unwrap();
    let req = request(
        "import time\nprint('first')\ntime.sleep(1)\nprint('second')\n",
        backend,
        cache.path(),
    );
    let seen = Recorder::default();
    let outcome = scriptbox::pipeline::run(&req, &CancelToken::new(), &seen);
    let ended = Instant::now();
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");
    let first = seen
        .first_seen("first")
        .expect("the sink got the first line");
    let second = seen
        .first_seen("second")
        .expect("the sink got the second line");
    // The script sleeps a second between its lines: the first reached the
    // sink while it slept, not when it ended.
    assert!(
        second.duration_since(first) >= Duration::from_millis(500),
        "both lines arrived together"
    );
    assert!(ended.duration_since(first) >= Duration::from_millis(500));
    assert_eq!(seen.stdout(), "first\nsecond\n");
    assert_eq!(outcome.stdout, "first\nsecond\n");
}

#[test]
fn local_output_reaches_the_sink_as_it_is_printed() {
    output_arrives_while_the_script_runs(Backend::Local);
}

#[test]
fn docker_output_reaches_the_sink_as_it_is_printed() {
    output_arrives_while_the_script_runs(Backend::Docker);
}

#[test]
fn stdin_bytes_reach_the_script_on_both_backends() {
    let cache = tempfile::tempdir().unwrap();
    for backend in [Backend::Local, Backend::Docker] {
        let mut req = request(
            "import sys\nprint(sys.stdin.read().upper(), end='')\n",
            backend,
            cache.path(),
        );
        req.stdin = Stdin::Bytes(b"close,1.5\n".to_vec());
        let outcome =
            scriptbox::pipeline::run(&req, &CancelToken::new(), &scriptbox::pipeline::Unobserved);
        assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");
        assert_eq!(outcome.stdout, "CLOSE,1.5\n");
    }
}

#[test]
fn an_allowlist_profile_is_refused_unsandboxed_before_anything_runs_and_passes_under_gvisor() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("tests/policies/tiny.toml")).unwrap()
        + "\n[profiles.egress]\nnetwork = \"allowlist\"\negress = [\"api.exchange.test\"]\n\n\
           [profiles.egress-gvisor]\nnetwork = \"allowlist\"\negress = [\"api.exchange.test\"]\nisolation = \"gvisor\"\n";
    let path = dir.path().join("egress.toml");
    let (policy, _) = scriptbox::policy::load_text(&path, &text).expect("the policy loads");
    let mut req = request("print('hi')\n", Backend::Local, cache.path());
    req.policy = Arc::new(policy);
    // gVisor carries egress too (tests/egress.rs runs it on both backends).
    req.profile = "egress-gvisor".into();
    assert!(
        scriptbox::pipeline::check(&req).is_ok(),
        "an allowlist under gVisor passes the checks"
    );
    req.profile = "egress".into();
    req.unsandboxed = true;
    let Err(refused) = scriptbox::pipeline::check(&req) else {
        panic!("not refused")
    };
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("--unsandboxed cannot enforce"),
        "{refused:?}"
    );
    req.unsandboxed = false;
    assert!(
        scriptbox::pipeline::check(&req).is_ok(),
        "sandboxed, it may run"
    );
}
