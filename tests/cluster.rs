//! The cluster: an API node and two worker nodes, separate processes each
//! in a network namespace of its own made here (`ip netns`, a veth pair
//! each, addresses of a private /30 only on those veths: nothing leaves
//! the machine), sharing a PostgreSQL server this test starts for itself
//! (so it can restart it). 500 runs are submitted; during them one worker
//! is killed (`kill -9`) and started again, the other is cut off from the
//! database for longer than its lease and then let back, and the database
//! restarts. Every run must end exactly once, with the status its script
//! earns, or `lost` only if it was running on a worker that died or was cut
//! off (and, asked to, run again once). The counts are printed.
//!
//! Needs root (namespaces) and PostgreSQL's server binaries
//! (scripts/postgres-up installs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::postgres::{bin_dir, psql};
use support::server::{Client, Server};

/// Runs a command that must succeed.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to the host: the host end has
/// `host_ip`, the namespace end `ns_ip` (a /30). Deleted when dropped
/// (which deletes the pair too), even when the test fails.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Netns {
    fn new(tag: &str, subnet: u8) -> Netns {
        let id = std::process::id() % 100_000;
        let name = format!("sbx-test-{id}-{tag}");
        let host_if = format!("sbx{id}{tag}h");
        let ns_if = format!("sbx{id}{tag}n");
        // 10.213.<subnet>.0/30: one private /30 per namespace, on these
        // veths only.
        let host_ip = format!("10.213.{subnet}.1");
        let ns_ip = format!("10.213.{subnet}.2");
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        sh("ip", &["netns", "add", &name]);
        sh(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        );
        sh("ip", &["link", "set", &ns_if, "netns", &name]);
        sh(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        );
        sh("ip", &["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            sh("ip", &all);
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME`, to start a node under.
    fn wrapper(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Cuts the namespace off (`false`) or lets it back (`true`).
    fn link(&self, up: bool) {
        sh(
            "ip",
            &["link", "set", &self.host_if, if up { "up" } else { "down" }],
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A PostgreSQL server of this test's own (initdb in a temporary
/// directory, run as the `postgres` user), listening on loopback and on the
/// namespaces' host addresses. Stopped and removed when dropped.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    /// Listens on `listen`; lets `clients` in (besides loopback).
    fn start(listen: &[&str], clients: &[&str]) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("sbx-cluster-pg")
            .tempdir()
            .unwrap()
            .keep();
        sh("chown", &["postgres:postgres", dir.to_str().unwrap()]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres { dir, port };
        pg.as_postgres(&[
            bin_dir().join("initdb").to_str().unwrap(),
            "-D",
            pg.data().to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let conf = format!(
            "listen_addresses = '{}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = on\nmax_connections = 200\n",
            listen.join(","),
            pg.dir.display()
        );
        let path = pg.data().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        let hba = pg.data().join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        for client in clients {
            rules.push_str(&format!("host all all {client}/32 trust\n"));
        }
        std::fs::write(&hba, rules).unwrap();
        pg.ctl(&["start", "-w"]);
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, args: &[&str]) {
        let mut all = vec!["-u", "postgres", "--"];
        all.extend_from_slice(args);
        sh("runuser", &all);
    }

    fn ctl(&self, args: &[&str]) {
        let ctl = bin_dir().join("pg_ctl");
        let data = self.data();
        let log = self.dir.join("log");
        let mut all = vec![
            ctl.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        self.as_postgres(&all);
    }

    fn url(&self, host: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "immediate"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a submitted run is, and so how it may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Prints hello: `succeeded`.
    Hello,
    /// Exits 3: `failed`.
    Fails,
    /// Sleeps a few seconds (to be caught running by a kill or a
    /// partition): `succeeded`.
    Slow,
    /// Slow, with `retry_on_lost`.
    SlowRetried,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 25 {
            0 | 12 => Kind::Slow,
            6 | 18 => Kind::SlowRetried,
            3 | 9 | 15 | 21 => Kind::Fails,
            _ => Kind::Hello,
        }
    }

    fn body(self, i: usize) -> Value {
        let mut body = self.script(i);
        body["policy"] = json!("tiny");
        body
    }

    fn script(self, i: usize) -> Value {
        match self {
            Kind::Hello => json!({"script": format!("print('hello {i}')\n")}),
            Kind::Fails => json!({"script": "import sys\nsys.exit(3)\n"}),
            Kind::Slow => json!({"script": "import time\ntime.sleep(4)\nprint('slow')\n"}),
            Kind::SlowRetried => json!({
                "script": "import time\ntime.sleep(4)\nprint('slow')\n",
                "retry_on_lost": true
            }),
        }
    }

    fn earns(self) -> &'static str {
        match self {
            Kind::Fails => "failed",
            _ => "succeeded",
        }
    }
}

/// Waits until `cond` holds, polling (at most `limit`).
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node_of(server: &Server) -> String {
    let log = server.log.lock().unwrap();
    log.split("node ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no node name in: {log}"))
        .to_string()
}

fn count(url: &str, sql: &str) -> i64 {
    psql(url, sql).parse().unwrap()
}

const RUNS: usize = 500;
/// Longer than the database's restart below (a restart shorter than the
/// lease loses nothing), shorter than the partition.
const LEASE: &str = "15s";

#[test]
fn five_hundred_runs_end_once_through_a_kill_a_partition_and_a_database_restart() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the cluster test makes network namespaces: run it as root"
    );
    let subnet = (std::process::id() % 80) as u8 * 3;
    let api_ns = Netns::new("a", subnet);
    let w1_ns = Netns::new("1", subnet + 1);
    let w2_ns = Netns::new("2", subnet + 2);
    let pg = Postgres::start(
        &["127.0.0.1", &api_ns.host_ip, &w1_ns.host_ip, &w2_ns.host_ip],
        &[&api_ns.ns_ip, &w1_ns.ns_ip, &w2_ns.ns_ip],
    );
    let local = pg.url("127.0.0.1");

    let node = |ns: &Netns, role: &str, extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut args: Vec<String> = [
            "--store",
            &pg.url(&ns.host_ip),
            "--role",
            role,
            "--listen",
            &format!("{}:8750", ns.ns_ip),
            "--lease",
            LEASE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::start_under(ns.wrapper(), &dir, args)
    };
    let api = node(&api_ns, "api", &[]);
    let mut w1 = node(&w1_ns, "worker", &["--workers", "2"]);
    let w2 = node(&w2_ns, "worker", &["--workers", "2"]);
    let w1_first = node_of(&w1);
    let w2_node = node_of(&w2);

    let token = {
        let out = Command::new(support::BIN)
            .args([
                "token", "create", "--tenant", "acme", "--role", "admin", "--store", &local,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // Submit the 500 from 8 clients, through the API node's namespace.
    let ids: Arc<Mutex<BTreeMap<String, Kind>>> = Arc::default();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let ids = ids.clone();
            let (base, token) = (api.base.clone(), token.clone());
            scope.spawn(move || {
                let client = Client::new(&base, Some(&token));
                for i in (t..RUNS).step_by(8) {
                    let kind = Kind::of(i);
                    let (status, run) = client.post("/v1/runs", &kind.body(i));
                    assert_eq!(status, 201, "{run}");
                    ids.lock()
                        .unwrap()
                        .insert(run["id"].as_str().unwrap().to_string(), kind);
                }
            });
        }
    });
    let ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), RUNS);
    let finished = || {
        count(
            &local,
            "SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL",
        )
    };
    let running_on = |node: &str| {
        count(
            &local,
            &format!("SELECT COUNT(*) FROM runs WHERE status = 'running' AND node = '{node}'"),
        )
    };

    // 1. kill -9 of a worker while it runs something; it comes back as a
    //    new node.
    wait_for("worker 1 to run", Duration::from_secs(120), || {
        running_on(&w1_first) > 0
    });
    w1.kill9();
    eprintln!(
        "cluster: killed worker 1 ({w1_first}) with {} runs ended",
        finished()
    );
    let w1 = w1.restart();

    // 2. worker 2 cut off from the database for longer than its lease.
    wait_for("worker 2 to run", Duration::from_secs(120), || {
        running_on(&w2_node) > 0
    });
    let cut_off = running_on(&w2_node);
    w2_ns.link(false);
    eprintln!("cluster: cut off worker 2 ({w2_node}) with {cut_off} runs running");
    wait_for(
        "worker 2's runs to be given up",
        Duration::from_secs(60),
        || running_on(&w2_node) == 0,
    );
    std::thread::sleep(Duration::from_secs(3));
    w2_ns.link(true);
    eprintln!("cluster: worker 2 back");

    // 3. the database restarts; the API answers 503 meanwhile.
    let client = Client::new(&api.base, Some(&token));
    pg.ctl(&["stop", "-m", "fast", "-w"]);
    let (status, body) = client.get("/v1/health");
    assert_eq!(status, 503, "{body}");
    let (status, body) = client.post("/v1/runs", &Kind::Hello.body(0));
    assert_eq!(status, 503, "{body}");
    pg.ctl(&["start", "-w"]);
    eprintln!("cluster: database restarted with {} runs ended", finished());

    wait_for("every run to end", Duration::from_secs(600), || {
        finished() == RUNS as i64
    });

    // Every run ended exactly once, with the status its script earns, or
    // lost only where a worker died or was cut off while running it.
    let rows = psql(
        &local,
        "SELECT r.id, r.status, r.attempts, COALESCE(r.node, ''), \
         (SELECT COUNT(*) FROM run_events e WHERE e.run_id = r.id AND e.status NOT IN ('queued', 'running')), \
         (SELECT string_agg(DISTINCT e.node, ',') FROM run_events e WHERE e.run_id = r.id AND e.status = 'running'), \
         COALESCE(r.outcome, '') \
         FROM runs r",
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut retried, mut checked) = (0, 0);
    for line in rows.lines() {
        let f: Vec<&str> = line.splitn(7, '|').collect();
        let (id, status, attempts, node, ends, ran_on) = (f[0], f[1], f[2], f[3], f[4], f[5]);
        let kind = ids[id];
        assert_eq!(ends, "1", "run {id} ({kind:?}) ended {ends} times");
        let attempts: i64 = attempts.parse().unwrap();
        let struck = |n: &str| n == w1_first || n == w2_node;
        match status {
            "lost" => {
                assert!(
                    struck(node),
                    "run {id} lost on {node}, a worker nothing happened to"
                );
                assert!(
                    kind != Kind::SlowRetried || attempts == 2,
                    "run {id} asked to run again, and was lost on its first attempt"
                );
            }
            s => assert_eq!(s, kind.earns(), "run {id} ({kind:?})"),
        }
        if attempts == 2 {
            assert_eq!(kind, Kind::SlowRetried, "run {id} ran twice unasked");
            assert!(
                ran_on.split(',').any(struck),
                "run {id} re-run though its worker was fine"
            );
            retried += 1;
        }
        *counts.entry(status.to_string()).or_default() += 1;
        checked += 1;
    }
    assert_eq!(checked, RUNS);
    let lost = counts.get("lost").copied().unwrap_or(0);
    assert!(
        lost + retried > 0,
        "the kill and the partition caught no run: nothing was tested"
    );
    eprintln!(
        "cluster: {RUNS} runs, each ended once: {} (re-run once after a lost worker: {retried})",
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The nodes are still up and the cluster still runs things.
    let id = {
        let (status, run) = client.post("/v1/runs", &Kind::Hello.body(1));
        assert_eq!(status, 201, "{run}");
        run["id"].as_str().unwrap().to_string()
    };
    wait_for("a run after it all", Duration::from_secs(60), || {
        client.get(&format!("/v1/runs/{id}")).1["status"] == "succeeded"
    });
    drop((api, w1, w2));
    let _ = Path::new("");
}
