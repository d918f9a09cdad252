//! `scriptbox serve` over real HTTP on loopback: every endpoint, tokens and
//! tenant isolation, live logs in order with resume and replay, cancel in
//! both states, recovery after `kill -9`, SIGTERM with a grace period, the
//! queue's fairness, retention, and bad input of every kind. Runs are real
//! (the local sandbox, and the docker backend once).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::server::{Client, Server};

/// Polls `GET /v1/runs/{id}` until `done` holds (at most a minute).
fn wait_until(client: &Client, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, run) = client.get(&format!("/v1/runs/{id}"));
        assert_eq!(status, 200, "{run}");
        if done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} never got there: {run}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["status"] == want
}

fn submit(client: &Client, body: Value) -> Value {
    let (status, run) = client.post("/v1/runs", &body);
    assert_eq!(status, 201, "{run}");
    run
}

/// Processes on the host whose real uid is in the local sandbox's range.
fn sandbox_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u32>().ok())
                })
                .is_some_and(|uid| (200_000..265_536).contains(&uid))
        })
        .count()
}

fn run_containers() -> String {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.scriptbox.kind=run"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sqlite(store: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print('\\n'.join(str(r[0]) for r in c.execute(sys.argv[2])))",
        ])
        .arg(store)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn endpoints_tokens_and_tenant_isolation() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&["--workers", "2"]);
    let acme = server.client(&server.token("acme", "submit"));
    let globex = server.client(&server.token("globex", "submit"));
    let admin = server.client(&server.token("ops", "admin"));
    let anonymous = Client::new(&server.base, None);

    // Open endpoints.
    let (status, health) = anonymous.get("/v1/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, doc) = anonymous.get("/openapi.json");
    assert_eq!(status, 200);
    for path in [
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/logs",
        "/v1/runs/{id}/cancel",
        "/v1/validate",
        "/v1/policies",
        "/v1/stats",
        "/v1/health",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }

    // Every other endpoint needs a valid token.
    for (client, what) in [
        (&anonymous, "no token"),
        (
            &Client::new(&server.base, Some("sbx_0000")),
            "unknown token",
        ),
        (
            &Client::new(&server.base, Some("not-a-token")),
            "malformed token",
        ),
    ] {
        let (status, body) = client.get("/v1/runs");
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let revoked = server.token("acme", "submit");
    let out = std::process::Command::new(support::BIN)
        .args(["token", "ls", "--format", "json", "--store"])
        .arg(server.store())
        .output()
        .unwrap();
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["token", "revoke", last["id"].as_str().unwrap(), "--store"])
        .arg(server.store())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(server.client(&revoked).get("/v1/runs").0, 401);

    // Validate.
    let (status, report) = acme.post(
        "/v1/validate",
        &json!({"script": "import six\nimport numpy\n", "policy": "tiny"}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["schema"], "scriptbox.validate/1");
    assert_eq!(report["verdict"], "forbidden");

    // A run, waited for.
    let run = submit(
        &acme,
        json!({"script": "import sys\nprint('hello', sys.argv[1:])\nprint(sys.stdin.read().strip())\n",
               "policy": "tiny", "args": ["a", "b c"], "stdin": "prices", "labels": {"bot": "sma", "env": "test"}}),
    );
    let id = run["id"].as_str().unwrap().to_string();
    let run = wait_until(&acme, &id, |r| r["status"] == "succeeded");
    assert_eq!(run["stdout"], "hello ['a', 'b c']\nprices\n");
    assert_eq!(run["tenant"], "acme");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(run["labels"]["bot"], "sma");
    assert_eq!(run["policy"]["name"], "tiny");
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    assert_eq!(run["schema"], "scriptbox.run-record/1");

    // Another tenant sees nothing of it; an admin sees everything.
    let (status, body) = globex.get(&format!("/v1/runs/{id}"));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not-found"))
    );
    assert_eq!(
        globex.post(&format!("/v1/runs/{id}/cancel"), &json!({})).0,
        404
    );
    assert_eq!(globex.get("/v1/runs").1["runs"], json!([]));
    assert_eq!(admin.get(&format!("/v1/runs/{id}")).0, 200);

    // ?wait answers with the finished record.
    let (status, waited) = acme.post(
        "/v1/runs?wait=60",
        &json!({"script": "print(6 * 7)\n", "policy": "tiny", "labels": {"bot": "answer"}}),
    );
    assert_eq!(status, 201);
    assert_eq!(
        (waited["status"].as_str(), waited["stdout"].as_str()),
        (Some("succeeded"), Some("42\n"))
    );

    // Rejections are known in the submission's answer, with the seed's
    // message and pip command.
    let (status, rejected) = acme.post(
        "/v1/runs",
        &json!({"script": "import six\n", "policy": "manual"}),
    );
    assert_eq!(status, 201);
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["pip_command"], "pip install six");
    assert!(
        rejected["message"]
            .as_str()
            .unwrap()
            .starts_with("Missing Python packages detected!")
    );
    let (_, forbidden) = acme.post(
        "/v1/runs",
        &json!({"script": "import numpy\n", "policy": "tiny"}),
    );
    assert_eq!(forbidden["status"], "rejected");
    assert!(
        forbidden["message"]
            .as_str()
            .unwrap()
            .contains("refused by policy 'tiny'")
    );

    // Listing: newest first, filters, pagination.
    let (_, page) = acme.get("/v1/runs?limit=2");
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], forbidden["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = acme.get(&format!("/v1/runs?limit=2&cursor={cursor}"));
    assert_eq!(next["runs"][0]["id"], waited["id"]);
    let (_, labelled) = acme.get("/v1/runs?label=bot%3Dsma");
    assert_eq!(labelled["runs"].as_array().unwrap().len(), 1);
    assert_eq!(labelled["runs"][0]["id"], id.as_str());
    let (_, rejected_only) = acme.get("/v1/runs?status=rejected");
    assert_eq!(rejected_only["runs"].as_array().unwrap().len(), 2);
    let (_, all) = admin.get("/v1/runs?tenant=acme&limit=500");
    assert_eq!(all["runs"].as_array().unwrap().len(), 4);
    assert_eq!(acme.get("/v1/runs?tenant=globex").0, 403);

    // Idempotency.
    let body =
        json!({"script": "print('once')\n", "policy": "tiny", "idempotency_key": "order-17"});
    let first = submit(&acme, body.clone());
    let (status, again) = acme.post("/v1/runs", &body);
    assert_eq!((status, &again["id"]), (200, &first["id"]));
    let (status, conflict) = acme.post(
        "/v1/runs",
        &json!({"script": "print('twice')\n", "policy": "tiny", "idempotency_key": "order-17"}),
    );
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("idempotency-conflict"))
    );
    // Keys are per tenant.
    assert_eq!(globex.post("/v1/runs", &body).0, 201);

    // Admin-only endpoints.
    assert_eq!(acme.get("/v1/policies").0, 403);
    let (status, policies) = admin.get("/v1/policies");
    assert_eq!(status, 200);
    assert!(
        policies["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "tiny")
    );
    assert_eq!(acme.get("/v1/stats").0, 403);
    let (status, stats) = admin.get("/v1/stats");
    assert_eq!(status, 200, "{stats}");
    assert!(stats["runs_by_status"]["succeeded"].as_i64().unwrap() >= 2);
    assert_eq!(stats["audit"]["schema"], "scriptbox.stats/1");

    // Metrics.
    let (status, text) = anonymous.get("/metrics");
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    for metric in [
        "scriptbox_runs_total{status=\"succeeded\"}",
        "scriptbox_runs_total{status=\"rejected\"}",
        "scriptbox_queue_depth",
        "scriptbox_runs_running",
        "scriptbox_run_duration_seconds_bucket",
        "scriptbox_build_duration_seconds_bucket",
        "scriptbox_http_requests_total{method=\"POST\",route=\"/v1/runs\",status=\"201\"}",
    ] {
        assert!(text.contains(metric), "{metric} missing from /metrics");
    }
}

#[test]
fn logs_stream_in_order_resume_and_replay() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&[]);
    let client = server.client(&server.token("acme", "submit"));
    let script = "import sys, time\nfor i in range(4):\n    print(f'out {i}', flush=True)\n    print(f'err {i}', file=sys.stderr, flush=True)\n    time.sleep(0.4)\n";
    let run = submit(&client, json!({"script": script, "policy": "tiny"}));
    let id = run["id"].as_str().unwrap();
    let path = format!("/v1/runs/{id}/logs");
    // Live: events arrive as the script writes, in order, then `end`.
    let started = Instant::now();
    let mut first_at = None;
    let events = client.events(&path, None, |_| {
        first_at.get_or_insert(started.elapsed());
        false
    });
    let end = events.last().unwrap();
    assert_eq!(end.1, "end");
    let record: Value = serde_json::from_str(&end.2).unwrap();
    assert_eq!(record["status"], "succeeded");
    let text = |stream: &str| -> String {
        events
            .iter()
            .filter(|e| e.1 == stream)
            .map(|e| {
                serde_json::from_str::<Value>(&e.2).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(text("stdout"), "out 0\nout 1\nout 2\nout 3\n");
    assert_eq!(text("stderr"), "err 0\nerr 1\nerr 2\nerr 3\n");
    let ids: Vec<i64> = events[..events.len() - 1]
        .iter()
        .map(|e| e.0.parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids {ids:?}");
    assert!(
        ids.len() >= 4,
        "output came in one piece, not live: {ids:?}"
    );
    assert!(
        first_at.unwrap() + Duration::from_millis(800) < started.elapsed(),
        "the first event came only at the end"
    );
    // Resume after the second event: exactly what came after it.
    let resumed = client.events(&path, Some(&ids[1].to_string()), |_| false);
    let resumed_ids: Vec<&str> = resumed.iter().map(|e| e.0.as_str()).collect();
    let expected: Vec<String> = ids[2..].iter().map(|i| i.to_string()).collect();
    assert_eq!(
        &resumed_ids[..resumed_ids.len() - 1],
        expected
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
    );
    // Replay of the finished run: the same events.
    let replay = client.events(&path, None, |_| false);
    assert_eq!(replay.len(), events.len());
    assert_eq!(replay[..replay.len() - 1], events[..events.len() - 1]);
}

#[test]
fn cancel_a_queued_and_a_running_run() {
    // Counts sandbox processes at the end: no other test's may run then.
    let _turn = support::engine_turn();
    let server = Server::start(&["--workers", "1"]);
    let client = server.client(&server.token("acme", "submit"));
    let long = submit(
        &client,
        json!({"script": "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')\n", "policy": "tiny"}),
    );
    let long_id = long["id"].as_str().unwrap();
    wait_until(&client, long_id, status_is("running"));
    let queued = submit(
        &client,
        json!({"script": "print('never ran')\n", "policy": "tiny"}),
    );
    let queued_id = queued["id"].as_str().unwrap();
    assert_eq!(queued["status"], "queued");

    let (status, cancelled) = client.post(&format!("/v1/runs/{queued_id}/cancel"), &json!({}));
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    assert_eq!(cancelled["started_at"], Value::Null);
    assert_eq!(cancelled["attempts"], 0);

    // Wait until the running script printed, then stop it.
    client.events(&format!("/v1/runs/{long_id}/logs"), None, |e| {
        e.2.contains("started")
    });
    let asked = Instant::now();
    let (status, stopped) = client.post(&format!("/v1/runs/{long_id}/cancel"), &json!({}));
    assert_eq!(
        (status, stopped["status"].as_str()),
        (200, Some("cancelled")),
        "{stopped}"
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(stopped["stdout"], "started\n");
    let (status, again) = client.post(&format!("/v1/runs/{long_id}/cancel"), &json!({}));
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("already-finished"))
    );
    // The cancelled queued run never started, even now that a worker is free.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        client.get(&format!("/v1/runs/{queued_id}")).1["attempts"],
        0
    );
    assert_eq!(sandbox_processes(), 0);
}

#[test]
fn after_kill_9_running_runs_are_lost_and_queued_runs_run() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let mut server = Server::start(&["--workers", "2"]);
    let token = server.token("acme", "submit");
    let client = server.client(&token);
    let sleeper = "import time\nprint('started', flush=True)\ntime.sleep(120)\n";
    let local = submit(&client, json!({"script": sleeper, "policy": "tiny"}));
    let docker = submit(
        &client,
        json!({"script": sleeper, "policy": "tiny", "backend": "docker"}),
    );
    for run in [&local, &docker] {
        client.events(
            &format!("/v1/runs/{}/logs", run["id"].as_str().unwrap()),
            None,
            |e| e.2.contains("started"),
        );
    }
    let queued: Vec<Value> = (0..3)
        .map(|i| {
            submit(
                &client,
                json!({"script": format!("print({i})\n"), "policy": "tiny"}),
            )
        })
        .collect();
    assert!(queued.iter().all(|r| r["status"] == "queued"));
    assert!(!run_containers().is_empty());
    server.kill9();

    // The local sandbox died with the server (its processes are gone).
    let deadline = Instant::now() + Duration::from_secs(15);
    while sandbox_processes() > 0 {
        assert!(Instant::now() < deadline, "the sandbox outlived its server");
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = server.restart();
    let client = server.client(&token);
    for run in [&local, &docker] {
        let (_, record) = client.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()));
        assert_eq!(record["status"], "lost", "{record}");
        assert!(record["message"].as_str().unwrap().contains("not re-run"));
        assert_eq!(record["attempts"], 1);
    }
    // The container the killed server left is gone.
    assert_eq!(run_containers(), "");
    for (i, run) in queued.iter().enumerate() {
        let record = wait_until(&client, run["id"].as_str().unwrap(), |r| {
            r["status"] == "succeeded"
        });
        assert_eq!(record["stdout"], format!("{i}\n"));
    }
    assert_eq!(sqlite(&server.store(), "PRAGMA integrity_check"), "ok");
}

#[test]
fn sigterm_lets_running_runs_finish_within_the_grace_then_cancels_them() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let mut server = Server::start(&["--workers", "2", "--grace", "3s"]);
    let token = server.token("acme", "submit");
    let client = server.client(&token);
    let quick = submit(
        &client,
        json!({"script": "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')\n", "policy": "tiny"}),
    );
    let slow = submit(
        &client,
        json!({"script": "import time\nprint('a', flush=True)\ntime.sleep(120)\n", "policy": "tiny"}),
    );
    for run in [&quick, &slow] {
        client.events(
            &format!("/v1/runs/{}/logs", run["id"].as_str().unwrap()),
            None,
            |e| e.2.contains("a"),
        );
    }
    let queued = submit(
        &client,
        json!({"script": "print('later')\n", "policy": "tiny"}),
    );
    let asked = Instant::now();
    assert!(
        server.stop_with(libc::SIGTERM, Duration::from_secs(30)),
        "the server did not stop"
    );
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "it did not wait for the grace period"
    );
    let store = server.store();
    let status = |run: &Value| {
        sqlite(
            &store,
            &format!(
                "SELECT status FROM runs WHERE id = '{}'",
                run["id"].as_str().unwrap()
            ),
        )
    };
    assert_eq!(status(&quick), "succeeded");
    assert_eq!(status(&slow), "cancelled");
    assert_eq!(status(&queued), "queued");
    assert_eq!(sandbox_processes(), 0);
    // The queued run runs after a restart.
    let server = server.restart();
    let client = server.client(&token);
    let record = wait_until(
        &client,
        queued["id"].as_str().unwrap(),
        status_is("succeeded"),
    );
    assert_eq!(record["stdout"], "later\n");
}

#[test]
fn one_tenants_backlog_does_not_delay_another_tenants_run() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&["--workers", "1"]);
    let busy = server.client(&server.token("busy", "submit"));
    let small = server.client(&server.token("small", "submit"));
    let script = json!({"script": "import time\ntime.sleep(0.3)\n", "policy": "tiny"});
    // Warm the environment so every run takes about the same time.
    busy.post("/v1/runs?wait=60", &script);
    let backlog: Vec<Value> = (0..12).map(|_| submit(&busy, script.clone())).collect();
    let single = submit(&small, script.clone());
    let single = wait_until(
        &small,
        single["id"].as_str().unwrap(),
        status_is("succeeded"),
    );
    let started_before = backlog
        .iter()
        .map(|r| {
            wait_until(&busy, r["id"].as_str().unwrap(), |r| {
                r["started_at"].is_string()
            })
        })
        .filter(|r| r["started_at"].as_str().unwrap() < single["started_at"].as_str().unwrap())
        .count();
    // The single run waited for the run in progress and at most one more,
    // not for the twelve queued before it.
    assert!(
        started_before <= 2,
        "{started_before} of the backlog went first"
    );
    for r in &backlog {
        wait_until(&busy, r["id"].as_str().unwrap(), status_is("succeeded"));
    }
}

#[test]
fn retention_deletes_old_records_and_their_output() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&["--retain", "2s"]);
    let client = server.client(&server.token("acme", "submit"));
    let (status, run) = client.post(
        "/v1/runs?wait=60",
        &json!({"script": "print('old news')\n", "policy": "tiny"}),
    );
    assert_eq!((status, run["status"].as_str()), (201, Some("succeeded")));
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        sqlite(
            &server.store(),
            &format!("SELECT COUNT(*) FROM run_output WHERE run_id = '{id}'")
        ),
        "1"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&format!("/v1/runs/{id}")).0 != 404 {
        assert!(Instant::now() < deadline, "the record was kept");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        sqlite(
            &server.store(),
            &format!("SELECT COUNT(*) FROM run_output WHERE run_id = '{id}'")
        ),
        "0"
    );
}

/// Sends raw bytes as one HTTP request and returns the status line's code
/// and the body.
fn raw_request(base: &str, request: &[u8], body_writer: Option<(usize, u8)>) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    if let Some((len, byte)) = body_writer {
        // Write the body from another thread, ignoring a server that stops
        // reading once it has seen enough.
        let mut writer = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let block = vec![byte; 1 << 20];
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len());
                if writer.write_all(&block[..n]).is_err() {
                    break;
                }
                left -= n;
            }
        });
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[test]
fn bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&[]);
    let token = server.token("acme", "submit");
    let client = server.client(&token);
    let post = |body: &[u8]| client.post_raw("/v1/runs", "application/json", body);
    for (what, body, code) in [
        ("malformed JSON", &b"{\"script\": "[..], "invalid-json"),
        (
            "wrong type",
            br#"{"script": 5}"#.as_slice(),
            "invalid-field",
        ),
        (
            "unknown field",
            br#"{"script": "print(1)", "shell": "rm -rf /"}"#.as_slice(),
            "invalid-field",
        ),
        (
            "invalid UTF-8",
            b"{\"script\": \"\xff\xfe\"}".as_slice(),
            "invalid-json",
        ),
        (
            "missing script",
            br#"{"policy": "tiny"}"#.as_slice(),
            "invalid-field",
        ),
        ("an array", b"[]".as_slice(), "invalid-field"),
    ] {
        let (status, body) = post(body);
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = client.post_raw("/v1/runs", "text/plain", b"print(1)");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported-media-type"))
    );
    for (body, code) in [
        (
            json!({"script": "print(1)", "policy": "nope"}),
            "unknown-policy",
        ),
        (
            json!({"script": "print(1)", "policy": "../policies/default"}),
            "unknown-policy",
        ),
        (
            json!({"script": "print(1)", "policy": "tiny", "profile": "huge"}),
            "unknown-profile",
        ),
        (
            json!({"script": "print(1)", "policy": "tiny", "args": ["a\u{0}b"]}),
            "invalid-field",
        ),
        (
            json!({"script": "print(1)", "labels": {"": "x"}}),
            "invalid-field",
        ),
    ] {
        let (status, answer) = client.post("/v1/runs", &body);
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    assert_eq!(
        client
            .post("/v1/runs?wait=61", &json!({"script": "print(1)"}))
            .0,
        400
    );
    assert_eq!(client.get("/v1/runs?status=sleeping").0, 400);
    assert_eq!(client.get("/v1/runs?limit=0").0, 400);
    assert_eq!(client.get("/v1/runs?cursor=abc").0, 400);
    assert_eq!(client.get("/v1/runs?colour=red").0, 400);
    // A script over the size limit.
    let (status, body) = client.post(
        "/v1/runs",
        &json!({"script": "#".repeat(17 << 20), "policy": "tiny"}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("script-too-large"))
    );
    // A 100 MB body.
    let len = 100 << 20;
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw_request(&server.base, head.as_bytes(), Some((len, b' ')));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body-too-large"), "{body}");
    // Nothing half-written: no run was recorded by any of it.
    assert_eq!(sqlite(&server.store(), "SELECT COUNT(*) FROM runs"), "0");

    // 10,000 requests at once: each answered (or refused with 429 while
    // overloaded), none with a 5xx, and the server still serves.
    let answers = flood(&server.base, &token, 10_000);
    let mut by_status = std::collections::BTreeMap::new();
    for code in &answers {
        *by_status.entry(*code).or_insert(0) += 1;
    }
    println!("10,000 concurrent requests: {by_status:?}");
    assert!(
        answers.iter().all(|c| *c == 404 || *c == 429),
        "{by_status:?}"
    );
    assert!(by_status.get(&404).copied().unwrap_or(0) > 0);
    let (status, health) = Client::new(&server.base, None).get("/v1/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
}

/// `count` concurrent `GET /v1/runs/<unknown>` requests, each on its own
/// connection; their status codes (0 for no answer).
fn flood(base: &str, token: &str, count: usize) -> Vec<u16> {
    // Room for the connections in this process.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and raising this process's own limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    let addr = base.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(count));
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let addr = addr.clone();
                let token = token.to_string();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let request = format!(
                        "GET /v1/runs/missing-{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                    );
                    barrier.wait().await;
                    let attempt = async {
                        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
                        s.write_all(request.as_bytes()).await.ok()?;
                        let mut out = Vec::new();
                        s.read_to_end(&mut out).await.ok()?;
                        let text = String::from_utf8_lossy(&out).into_owned();
                        let code: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
                        // Every answer is our JSON error.
                        text.contains("{\"error\":{\"code\":").then_some(code)
                    };
                    tokio::time::timeout(Duration::from_secs(120), attempt)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                })
            })
            .collect();
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap_or(0));
        }
        codes
    })
}

#[test]
fn the_api_matches_its_openapi_document_under_schemathesis() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&["--workers", "2"]);
    let token = server.token("ops", "admin");
    // A few runs of every kind for the stateful phase to find.
    let client = server.client(&token);
    for script in ["print(1)\n", "import numpy\n", "raise SystemExit(3)\n"] {
        client.post(
            "/v1/runs?wait=60",
            &json!({"script": script, "policy": "tiny"}),
        );
    }
    let venv = tempfile::tempdir().unwrap();
    let uv = std::env::var("SCRIPTBOX_UV").unwrap_or_else(|_| "uv".into());
    let ok = |mut cmd: std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut create = std::process::Command::new(&uv);
    create.args(["venv", "-q"]).arg(venv.path());
    ok(create);
    let mut install = std::process::Command::new(&uv);
    install
        .args(["pip", "install", "-q", "--python"])
        .arg(venv.path().join("bin/python"))
        .arg("schemathesis>=4,<5");
    ok(install);
    // Every check but `positive_data_acceptance`: the API rightly refuses
    // some schema-valid input (an unknown policy name, a script over the
    // size limit in bytes), which no schema can express.
    let out = std::process::Command::new(venv.path().join("bin/st"))
        .args(["run", &format!("{}/openapi.json", server.base)])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "40", "--seed", "1", "--no-color"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server is still healthy after it.
    assert_eq!(Client::new(&server.base, None).get("/v1/health").0, 200);
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&[]);
    let out = std::process::Command::new(support::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            "tests/policies",
            "--store",
        ])
        .arg(server.store())
        .current_dir(support::repo())
        .env("SCRIPTBOX_DATA_DIR", &server.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another `scriptbox serve` is using this store"),
        "{stderr}"
    );
    // The first one is unaffected.
    assert_eq!(Client::new(&server.base, None).get("/v1/health").0, 200);
}

/// What a receiver saw: each request's head (lowercased) and body.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback HTTP receiver answering each request with the next status
/// of `statuses` (200 once they run out); its port and what it saw.
fn receiver(statuses: Vec<u16>) -> (u16, Seen) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut reader = std::io::BufReader::new(stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            record.lock().unwrap().push((head, body));
            let status = statuses.next().unwrap_or(200);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (port, seen)
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_default()
}

#[test]
fn callbacks_are_signed_retried_and_recorded_and_private_addresses_refused() {
    // Tests here count sandbox processes: they take turns.
    let _turn = support::engine_turn();
    let server = Server::start(&[
        "--callback-allow",
        "127.0.0.1/32",
        "--callback-backoff",
        "100ms",
    ]);
    let token = server.token("acme", "submit");
    let client = server.client(&token);
    let (port, seen) = receiver(vec![500]);
    let url = format!("http://127.0.0.1:{port}/hook");

    // No secret yet: refused, saying how to make one.
    let (status, body) = client.post(
        "/v1/runs",
        &json!({"script": "print(1)\n", "policy": "tiny", "callback_url": url}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "no-callback-secret");
    let out = std::process::Command::new(support::BIN)
        .args(["token", "secret", "--tenant", "acme", "--store"])
        .arg(server.store())
        .output()
        .unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");

    // Private, loopback outside the allowed CIDR, and metadata addresses.
    for refused in [
        "http://10.0.0.1/hook",
        "http://127.0.0.2/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/hook",
        "http://hooks.example.com/hook",
    ] {
        let (status, body) = client.post(
            "/v1/runs",
            &json!({"script": "print(1)\n", "policy": "tiny", "callback_url": refused}),
        );
        assert_eq!(status, 400, "{refused}: {body}");
        assert_eq!(body["error"]["code"], "callback-refused", "{refused}");
    }

    // Delivered after the receiver's 500, both attempts recorded.
    let run = submit(
        &client,
        json!({"script": "print('filled')\n", "policy": "tiny", "callback_url": url}),
    );
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["callback"]["state"], "waiting");
    let run = wait_until(&client, &id, |r| r["callback"]["state"] == "delivered");
    assert_eq!(run["status"], "succeeded");
    let attempts = run["callback"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(attempts[1]["address"], format!("127.0.0.1:{port}"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (n, (head, body)) in seen.iter().enumerate() {
        let record: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (record["id"].as_str(), record["stdout"].as_str()),
            (Some(id.as_str()), Some("filled\n"))
        );
        assert_eq!(header(head, "x-scriptbox-attempt"), (n + 1).to_string());
        let timestamp: u64 = header(head, "x-scriptbox-timestamp").parse().unwrap();
        assert_eq!(
            header(head, "x-scriptbox-signature"),
            scriptbox::service::callback::sign::signature(&secret, timestamp, body)
        );
        assert!(head.starts_with("post /hook http/1.1"), "{head}");
    }

    // The document describes the new fields.
    let (_, doc) = client.get("/openapi.json");
    for schema in ["CallbackInfo", "CallbackAttempt", "CallbackState"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert!(doc["components"]["schemas"]["SubmitRun"]["properties"]["callback_url"].is_object());
}
