//! A real `scriptbox serve` on loopback for the service's tests: started
//! with a store of its own, its address read from its first line, stopped
//! (SIGTERM, then SIGKILL) when dropped; and a small HTTP client.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BIN, python, repo};

/// One cache directory for every server of a test crate: environments are
/// built once.
pub fn shared_cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A running server.
pub struct Server {
    /// Its child process (None once stopped).
    pub child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data directory (store, audit log).
    pub dir: PathBuf,
    /// What it wrote on stderr, as it goes.
    pub log: Arc<Mutex<String>>,
    /// The arguments it was started with (for a restart).
    pub args: Vec<String>,
    /// The command it was started under (`ip netns exec NS`), if any.
    pub wrapper: Vec<String>,
    /// Its store: `--store` when given in the arguments, else service.db
    /// in its data directory.
    pub store_location: String,
}

impl Server {
    /// Starts `scriptbox serve` with a fresh data directory, the test
    /// policies, and `args` added.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap().keep();
        Server::start_in(&dir, args.iter().map(|s| s.to_string()).collect())
    }

    /// Starts a server on the data directory `dir` (a restart keeps it).
    pub fn start_in(dir: &Path, args: Vec<String>) -> Server {
        Server::start_under(Vec::new(), dir, args)
    }

    /// Starts a server under `wrapper` (say `ip netns exec NS`, which
    /// execs: the child is still the server), on the data directory `dir`.
    /// `--listen` in `args` replaces the default loopback address.
    pub fn start_under(wrapper: Vec<String>, dir: &Path, args: Vec<String>) -> Server {
        let store_location = args
            .iter()
            .position(|a| a == "--store")
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| dir.join("service.db").display().to_string());
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve");
        if !args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(["--policies", "tests/policies"])
            .arg("--python")
            .arg(python())
            .args(["--store", &store_location])
            .args(args.iter().enumerate().filter_map(|(i, a)| {
                let is_store = a == "--store" || (i > 0 && args[i - 1] == "--store");
                (!is_store).then_some(a)
            }))
            .current_dir(repo())
            .env("SCRIPTBOX_CACHE_DIR", shared_cache())
            .env("SCRIPTBOX_DATA_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("scriptbox serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before the address is told, so the starting line
                // is in the log once `start` returns.
                {
                    let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
                if !sent && let Some(rest) = line.split("serving on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {}", log.lock().unwrap()));
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            dir: dir.to_path_buf(),
            log,
            args,
            wrapper,
            store_location,
        }
    }

    /// The store's path.
    pub fn store(&self) -> PathBuf {
        self.dir.join("service.db")
    }

    /// A new token for `tenant` with `role`, made with `scriptbox token`.
    pub fn token(&self, tenant: &str, role: &str) -> String {
        let out = Command::new(BIN)
            .args([
                "token", "create", "--tenant", tenant, "--role", role, "--store",
            ])
            .arg(&self.store_location)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A client with `token`.
    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.base, Some(token))
    }

    /// Sends `signal` and waits for the process to end (at most `limit`);
    /// true when it ended by itself in time.
    pub fn stop_with(&mut self, signal: i32, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the server outright (`kill -9`).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same data directory and arguments.
    pub fn restart(&self) -> Server {
        Server::start_under(self.wrapper.clone(), &self.dir, self.args.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(20));
    }
}

/// A small blocking HTTP client that never treats a status as an error.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of `base`, sending `token` if given.
    pub fn new(base: &str, token: Option<&str>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Client {
            agent,
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// GET `path`: status and body (JSON, or a string for other bodies).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .auth(self.agent.get(&format!("{}{path}", self.base)))
            .call()
            .unwrap();
        read(resp)
    }

    /// POST `body` as JSON to `path`.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .auth(self.agent.post(&format!("{}{path}", self.base)))
            .send_json(body)
            .unwrap();
        read(resp)
    }

    /// POST raw bytes with a content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let resp = self
            .auth(self.agent.post(&format!("{}{path}", self.base)))
            .header("Content-Type", content_type)
            .send(body)
            .unwrap();
        read(resp)
    }

    /// The SSE stream of `path` (after `last_event_id`), read until `end`
    /// or until `stop` says so: each event as (id, event, data).
    pub fn events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
        mut stop: impl FnMut(&(String, String, String)) -> bool,
    ) -> Vec<(String, String, String)> {
        let mut req = self.auth(self.agent.get(&format!("{}{path}", self.base)));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.call().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let reader = BufReader::new(resp.into_body().into_reader());
        let mut events = Vec::new();
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        for line in reader.lines() {
            let line = line.unwrap();
            if line.is_empty() {
                if !event.is_empty() {
                    let e = (
                        id.clone(),
                        std::mem::take(&mut event),
                        std::mem::take(&mut data),
                    );
                    let done = e.1 == "end" || stop(&e);
                    events.push(e);
                    if done {
                        break;
                    }
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_string();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        events
    }
}

fn read(resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let mut text = String::new();
    let _ = resp.into_body().into_reader().read_to_string(&mut text);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}
