//! `scriptbox serve` on PostgreSQL, over real HTTP on loopback: an API node
//! and worker nodes as separate processes sharing one database (each test
//! its own), real runs in the local sandbox. Roles, live logs and resume
//! through another node, cancel across nodes, tenant limits across
//! workers, a killed worker's runs (lost, or run again once), and a worker
//! that comes back after its lease expired.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::postgres::{fresh_database, psql};
use support::server::{Client, Server};

fn wait_until(client: &Client, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, run) = client.get(&format!("/v1/runs/{id}"));
        if status == 200 && done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} never got there: {status} {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["status"] == want
}

/// Submits `body` under the test policy `tiny` (unless it names one).
fn submit(client: &Client, mut body: Value) -> String {
    if body.get("policy").is_none() {
        body["policy"] = json!("tiny");
    }
    let (status, run) = client.post("/v1/runs", &body);
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().unwrap().to_string()
}

/// The node name a server printed when it started.
fn node_of(server: &Server) -> String {
    let log = server.log.lock().unwrap();
    log.split("node ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no node name in: {log}"))
        .to_string()
}

/// Processes descended from `pid` (its sandboxes).
fn descendants(pid: u32) -> usize {
    descendant_pids(pid).len()
}

/// Whether process `pid` is gone (or a zombie).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The pids descended from `pid`.
fn descendant_pids(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let me: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((me, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.split_off(1)
}

/// Each run's statuses in order, from the store's history.
fn history(db: &str, id: &str) -> Vec<String> {
    psql(
        db,
        &format!("SELECT status FROM run_events WHERE run_id = '{id}' ORDER BY at, attempt"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

const FINAL: [&str; 11] = [
    "succeeded",
    "failed",
    "error",
    "rejected",
    "timed-out",
    "cpu-limit",
    "memory-limit",
    "output-limit",
    "killed",
    "cancelled",
    "lost",
];

fn ended_once(db: &str, id: &str) -> Vec<String> {
    let h = history(db, id);
    let finals = h.iter().filter(|s| FINAL.contains(&s.as_str())).count();
    assert_eq!(finals, 1, "run {id} ended {finals} times: {h:?}");
    assert!(
        FINAL.contains(&h.last().unwrap().as_str()),
        "run {id} changed after it ended: {h:?}"
    );
    h
}

#[test]
fn an_api_node_and_a_worker_node_share_the_store_logs_and_cancels() {
    let db = fresh_database();
    let api = Server::start(&["--store", &db, "--role", "api"]);
    let client = api.client(&api.token("acme", "submit"));

    // No worker yet: a run stays queued, and a cancel ends it at once.
    let queued = submit(&client, json!({"script": "print('never')\n"}));
    let (status, run) = client.get(&format!("/v1/runs/{queued}"));
    assert_eq!((status, run["status"].as_str()), (200, Some("queued")));
    let (status, run) = client.post(&format!("/v1/runs/{queued}/cancel"), &json!({}));
    assert_eq!((status, run["status"].as_str()), (200, Some("cancelled")));

    let worker = Server::start(&["--store", &db, "--role", "worker", "--workers", "2"]);
    let node = node_of(&worker);
    // A worker serves no API, only health and metrics.
    let (status, body) = worker.client("sbx_x").get("/v1/runs");
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("worker"), "{body}");
    let (status, _) = Client::new(&worker.base, None).get("/v1/health");
    assert_eq!(status, 200);

    // A run submitted to the API node runs on the worker.
    let hello = submit(&client, json!({"script": "print('hello from a worker')\n"}));
    let run = wait_until(&client, &hello, |r| {
        r["status"] != "queued" && r["status"] != "running"
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["stdout"], "hello from a worker\n");
    assert_eq!(
        psql(&db, &format!("SELECT node FROM runs WHERE id = '{hello}'")),
        node
    );

    // Live output through the API node while the worker runs it, resumed
    // after a disconnect.
    let script = "import time\nfor i in range(6):\n    print(f'line {i}', flush=True)\n    time.sleep(0.3)\n";
    let live = submit(&client, json!({"script": script}));
    let first = client.events(&format!("/v1/runs/{live}/logs"), None, |e| {
        e.1 == "stdout" && e.2.contains("line 1")
    });
    let last_id = first.last().unwrap().0.clone();
    assert!(first.iter().all(|e| e.1 == "stdout"), "{first:?}");
    let rest = client.events(&format!("/v1/runs/{live}/logs"), Some(&last_id), |_| false);
    let end = rest.last().unwrap();
    assert_eq!(end.1, "end", "{rest:?}");
    let record: Value = serde_json::from_str(&end.2).unwrap();
    assert_eq!(record["status"], "succeeded");
    let text: String = first
        .iter()
        .chain(rest.iter())
        .filter(|e| e.1 == "stdout")
        .map(|e| {
            serde_json::from_str::<Value>(&e.2).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: String = (0..6).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, want);

    // A cancel on the API node stops the run on the worker.
    let long = submit(
        &client,
        json!({"script": "import time\nprint('up', flush=True)\ntime.sleep(600)\n"}),
    );
    wait_until(&client, &long, status_is("running"));
    client.events(&format!("/v1/runs/{long}/logs"), None, |e| e.1 == "stdout");
    let (status, run) = client.post(&format!("/v1/runs/{long}/cancel"), &json!({}));
    assert!(status == 200 || status == 202, "{status} {run}");
    let run = wait_until(&client, &long, status_is("cancelled"));
    assert_eq!(run["stdout"], "up\n");
    let pid = worker.child.as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while descendants(pid) > 0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled run's sandbox stayed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    for id in [&queued, &hello, &live, &long] {
        ended_once(&db, id);
    }
    assert_eq!(
        history(&db, &hello),
        ["queued", "running", "succeeded"],
        "the run's history"
    );
}

#[test]
fn two_workers_keep_a_tenants_running_limit_across_nodes() {
    let db = fresh_database();
    let api = Server::start(&["--store", &db, "--role", "api"]);
    let busy = api.client(&api.token("busy", "submit"));
    let small = api.client(&api.token("small", "submit"));
    let args = [
        "--store",
        &db,
        "--role",
        "worker",
        "--workers",
        "2",
        "--tenant-max-running",
        "1",
    ];
    let _w1 = Server::start(&args);
    let _w2 = Server::start(&args);
    let script = "import time\ntime.sleep(0.4)\nprint('ok')\n";
    let mut ids: Vec<String> = (0..8)
        .map(|_| submit(&busy, json!({"script": script})))
        .collect();
    let lone = submit(&small, json!({"script": "print('small')\n"}));
    ids.push(lone.clone());
    for id in &ids {
        let client = if *id == lone { &small } else { &busy };
        let run = wait_until(client, id, |r| {
            r["status"] != "queued" && r["status"] != "running"
        });
        assert_eq!(run["status"], "succeeded", "{run}");
        ended_once(&db, id);
    }
    // From the store's history (the database's clock): never two of busy's
    // runs running at once, though two nodes with two slots each claimed.
    let events = psql(
        &db,
        "SELECT e.status FROM run_events e JOIN runs r ON r.id = e.run_id \
         WHERE r.tenant = 'busy' AND e.status <> 'queued' \
         ORDER BY e.at, CASE e.status WHEN 'running' THEN 1 ELSE 0 END",
    );
    let (mut now, mut most) = (0i32, 0i32);
    for status in events.lines() {
        now += if status == "running" { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(most, 1, "busy ran {most} at once:\n{events}");
    // The other tenant's single run did not wait behind busy's backlog.
    let behind = psql(
        &db,
        &format!(
            "SELECT COUNT(*) FROM runs WHERE tenant = 'busy' AND started_at > \
             (SELECT started_at FROM runs WHERE id = '{lone}')"
        ),
    );
    assert!(
        behind.parse::<i64>().unwrap() > 0,
        "small's run waited for all of busy's"
    );
}

#[test]
fn a_killed_workers_runs_end_lost_or_run_again_once_on_another_worker() {
    let db = fresh_database();
    let api = Server::start(&["--store", &db, "--role", "api"]);
    let client = api.client(&api.token("acme", "submit"));
    let mut first = Server::start(&[
        "--store",
        &db,
        "--role",
        "worker",
        "--workers",
        "2",
        "--lease",
        "2s",
    ]);
    let first_node = node_of(&first);
    let lost = submit(
        &client,
        json!({"script": "import time\nprint('started', flush=True)\ntime.sleep(600)\n"}),
    );
    let again = submit(
        &client,
        json!({"script": "import time\nprint('attempt', flush=True)\ntime.sleep(5)\nprint('done')\n", "retry_on_lost": true}),
    );
    // Both print once their sandbox runs.
    client.events(&format!("/v1/runs/{lost}/logs"), None, |e| e.1 == "stdout");
    client.events(&format!("/v1/runs/{again}/logs"), None, |e| e.1 == "stdout");
    let pid = first.child.as_ref().unwrap().id();
    let sandboxes = descendant_pids(pid);
    assert!(!sandboxes.is_empty());
    first.kill9();

    let second = Server::start(&[
        "--store",
        &db,
        "--role",
        "worker",
        "--workers",
        "2",
        "--lease",
        "2s",
    ]);
    let second_node = node_of(&second);
    let run = wait_until(&client, &lost, |r| r["status"] != "running");
    assert_eq!(run["status"], "lost", "{run}");
    assert!(run["message"].as_str().unwrap().contains("lease"), "{run}");
    assert_eq!(run["attempts"], 1);
    assert_eq!(
        psql(&db, &format!("SELECT node FROM runs WHERE id = '{lost}'")),
        first_node
    );
    let run = wait_until(&client, &again, |r| {
        r["status"] != "running" && r["status"] != "queued"
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(
        psql(&db, &format!("SELECT node FROM runs WHERE id = '{again}'")),
        second_node
    );
    assert_eq!(ended_once(&db, &lost), ["queued", "running", "lost"]);
    assert_eq!(
        ended_once(&db, &again),
        ["queued", "running", "queued", "running", "succeeded"]
    );
    // The killed worker's sandboxes died with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandboxes.iter().all(|p| gone(*p)) {
        assert!(
            Instant::now() < deadline,
            "the killed worker's sandboxes stayed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_worker_that_comes_back_after_its_lease_kills_the_runs_it_lost() {
    let db = fresh_database();
    let api = Server::start(&["--store", &db, "--role", "api"]);
    let client = api.client(&api.token("acme", "submit"));
    let worker = Server::start(&[
        "--store",
        &db,
        "--role",
        "worker",
        "--workers",
        "2",
        "--lease",
        "2s",
    ]);
    let pid = worker.child.as_ref().unwrap().id();
    let id = submit(
        &client,
        json!({"script": "import time\nprint('started', flush=True)\ntime.sleep(600)\n"}),
    );
    wait_until(&client, &id, status_is("running"));
    client.events(&format!("/v1/runs/{id}/logs"), None, |e| e.1 == "stdout");
    assert!(descendants(pid) > 0);

    // The worker stops answering (as if cut off) for longer than its lease.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let run = wait_until(&client, &id, |r| r["status"] != "running");
    assert_eq!(run["status"], "lost", "{run}");
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };

    // Back, it finds the run is no longer its own and kills it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while descendants(pid) > 0 {
        assert!(
            Instant::now() < deadline,
            "the lost run still runs on its worker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its record stays as the cluster decided: it ended once, lost.
    let run = wait_until(&client, &id, |_| true);
    assert_eq!(run["status"], "lost", "{run}");
    ended_once(&db, &id);
    // And the worker goes on working.
    let next = submit(&client, json!({"script": "print('still here')\n"}));
    let run = wait_until(&client, &next, |r| {
        r["status"] != "queued" && r["status"] != "running"
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        worker.log.lock().unwrap().contains("no longer this node's")
            || worker.log.lock().unwrap().contains("stopping")
    );
}

#[test]
fn tokens_live_in_the_postgres_store_and_roles_need_it() {
    let db = fresh_database();
    let api = Server::start(&["--store", &db, "--role", "api"]);
    let token = api.token("acme", "admin");
    let (status, body) = api.client(&token).get("/v1/runs");
    assert_eq!(status, 200, "{body}");
    let out = std::process::Command::new(support::BIN)
        .args(["token", "ls", "--format", "json", "--store", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"tenant\":\"acme\""));
    // The server names the store without its password.
    assert!(!api.log.lock().unwrap().contains(":scriptbox@"));

    // A worker or API role on an SQLite store is refused, clearly.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--role", "worker", "--store"])
        .arg(dir.path().join("s.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--role worker") && err.contains("PostgreSQL"),
        "{err}"
    );
    // An unreachable database: a one-line error, no panic.
    let out = std::process::Command::new(support::BIN)
        .args([
            "token",
            "ls",
            "--store",
            "postgres://nobody:x@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store") && !err.contains(":x@"),
        "{err}"
    );
}
