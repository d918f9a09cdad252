//! The egress allowlist on loopback: the host proxy (in this process) and
//! the relay (the hidden `scriptbox egress-relay` command, as the sandboxes
//! will start it) between real Python clients and a fake exchange
//! (HTTPS with a CA made here, plain HTTP, a raw TCP echo service and a
//! TLS websocket) whose names the policy maps to 127.0.0.1 with
//! `egress_resolve`. Nothing leaves the machine: the proxy's system
//! resolver is off, and every name used is under `.test` or refused before
//! any lookup.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use scriptbox::egress::{EgressConfig, EgressReport, HostProxy, HostProxyHandle, Reason};

mod support;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

fn support_file(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

fn uv() -> String {
    if let Ok(uv) = std::env::var("SCRIPTBOX_UV") {
        return uv;
    }
    let out = Command::new("python3")
        .args(["-c", "import uv; print(uv.find_uv_bin())"])
        .output()
        .expect("python3 runs");
    if out.status.success() {
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    } else {
        "uv".into()
    }
}

/// What every test shares: a venv with the client libraries, a test CA
/// and a server certificate, and the fake exchange.
struct World {
    _dir: tempfile::TempDir,
    python: PathBuf,
    ca: PathBuf,
    ports: Value,
    _exchange: Child,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        raise_fd_limit();
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let status = Command::new(uv())
            .args(["venv", "-q", "-p", "python3"])
            .arg(&venv)
            .status()
            .expect("uv runs");
        assert!(status.success(), "uv venv failed");
        let python = venv.join("bin/python");
        let status = Command::new(uv())
            .args(["pip", "install", "-q", "--python"])
            .arg(&python)
            .args(["requests", "websockets", "aiohttp", "curl_cffi"])
            .status()
            .expect("uv runs");
        assert!(status.success(), "installing the test clients failed");
        let (ca, cert, key) = make_certificates(dir.path());
        let mut exchange = Command::new(&python)
            .arg(support_file("fake_exchange.py"))
            .args([&cert, &key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the fake exchange starts");
        let mut line = String::new();
        BufReader::new(exchange.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Value = serde_json::from_str(&line).expect("the fake exchange's ports");
        // Its stdin stays open as long as this process lives.
        std::mem::forget(exchange.stdin.take());
        World {
            _dir: dir,
            python,
            ca,
            ports,
            _exchange: exchange,
        }
    })
}

/// The fake exchange is one process: tests that load it with a thousand
/// connections run alone, the others together.
fn exchange_turn(alone: bool) -> Box<dyn std::any::Any> {
    static TURN: std::sync::RwLock<()> = std::sync::RwLock::new(());
    if alone {
        Box::new(TURN.write().unwrap_or_else(|e| e.into_inner()))
    } else {
        Box::new(TURN.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// 1,000 connections at once need more descriptors than the default.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A CA, and a certificate it signed for the fake exchange's names.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:api.exchange.test,DNS:ws.exchange.test,DNS:eu.markets.exchange.test,DNS:other.exchange.test,DNS:rebind.exchange.test\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=scriptbox egress test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=api.exchange.test",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

fn port(name: &str) -> u16 {
    world().ports[name].as_u64().unwrap() as u16
}

/// The test policy: the fake exchange's names, mapped to 127.0.0.1.
fn policy_text(extra: &str) -> String {
    let (https, http, wss, echo) = (port("https"), port("http"), port("wss"), port("echo"));
    format!(
        r#"[python]
version = "3.11"

[profiles.default]
memory = "256M"
cpus = 1
pids = 64
wall_time = "60s"
output = "1M"
tmp = "16M"
network = "none"

[profiles.exchange]
network = "allowlist"
egress = [
    "api.exchange.test:{https}",
    "api.exchange.test:{http}",
    "ws.exchange.test:{wss}",
    "echo.exchange.test:{echo}",
    "rebind.exchange.test:{https}",
    "*.markets.exchange.test:{https}",
]
egress_private = ["127.0.0.1/32"]
egress_resolve = {{ "api.exchange.test" = "127.0.0.1", "ws.exchange.test" = "127.0.0.1", "echo.exchange.test" = "127.0.0.1", "eu.markets.exchange.test" = "127.0.0.1", "rebind.exchange.test" = "127.0.0.2" }}
{extra}
"#
    )
}

/// One run's egress: the host proxy and a relay in front of it.
struct Harness {
    dir: tempfile::TempDir,
    proxy: Option<HostProxyHandle>,
    relay: Child,
    dns: SocketAddr,
    relay_proxy: SocketAddr,
    synthetic_prefix: String,
}

impl Harness {
    fn new(extra: &str) -> Harness {
        Harness::with(extra, |_| {}, None)
    }

    /// `tune` adjusts the proxy's config; `trace` runs the relay under
    /// strace, writing the trace there.
    fn with(extra: &str, tune: impl FnOnce(&mut EgressConfig), trace: Option<&Path>) -> Harness {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("egress.toml");
        let (policy, _) =
            scriptbox::policy::load_text(&policy_path, &policy_text(extra)).expect("policy loads");
        let profile = &policy.profiles["exchange"];
        let mut config = EgressConfig::from_profile(profile).expect("an allowlist profile");
        config.system_resolver = false;
        tune(&mut config);
        let socket = dir.path().join("egress.sock");
        let proxy = HostProxy::start(config.clone(), &socket).expect("the proxy starts");

        // A synthetic range per harness, so parallel tests never share one.
        let octet = 100 + NEXT.fetch_add(1, Ordering::Relaxed);
        let relay_config = serde_json::json!({
            "socket": socket,
            "allow": config.allow,
            "dns": "127.0.0.1:0",
            "proxy": "127.0.0.1:0",
            "synthetic": format!("127.{octet}.0.0/16"),
        });
        let config_path = dir.path().join("relay.json");
        std::fs::write(&config_path, relay_config.to_string()).unwrap();
        let mut command = match trace {
            Some(log) => {
                let mut c = Command::new("strace");
                c.args([
                    "-f",
                    "-qq",
                    "-e",
                    "trace=connect,sendto,sendmsg,sendmmsg",
                    "-o",
                ])
                .arg(log)
                .arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut relay = command
            .arg("egress-relay")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the relay starts");
        let mut line = String::new();
        BufReader::new(relay.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("relay ready line {line:?}: {e}"));
        assert_eq!(ready["schema"], "scriptbox.egress-relay/1");
        Harness {
            dir,
            proxy: Some(proxy),
            relay,
            dns: ready["dns"].as_str().unwrap().parse().unwrap(),
            relay_proxy: ready["proxy"].as_str().unwrap().parse().unwrap(),
            synthetic_prefix: format!("127.{octet}."),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("egress.sock")
    }

    /// Runs a client through the relay's proxy port.
    fn via_proxy(&self, client: &str, url: &str, extra: Option<&str>) -> Value {
        let proxy = format!("http://{}", self.relay_proxy);
        let mut env = vec![("EGRESS_PROXY".to_string(), self.relay_proxy.to_string())];
        for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
            env.push((name.into(), proxy.clone()));
            env.push((name.to_ascii_lowercase(), proxy.clone()));
        }
        env.push(("NO_PROXY".into(), String::new()));
        env.push(("no_proxy".into(), String::new()));
        python_client(client, url, extra, &env)
    }

    /// Runs a client that resolves through the stub and ignores proxies.
    fn transparent(&self, client: &str, url: &str, extra: Option<&str>) -> Value {
        python_client(
            client,
            url,
            extra,
            &[("EGRESS_STUB".into(), self.dns.to_string())],
        )
    }

    fn finish(mut self) -> EgressReport {
        let _ = self.relay.kill();
        let _ = self.relay.wait();
        self.proxy.take().unwrap().finish()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}

fn python_client(client: &str, url: &str, extra: Option<&str>, env: &[(String, String)]) -> Value {
    let world = world();
    let mut command = Command::new(&world.python);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("EGRESS_CA", &world.ca)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(support_file("egress_clients.py"))
        .args([client, url]);
    if let Some(extra) = extra {
        command.arg(extra);
    }
    let out = command.output().expect("the client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{client} {url}: {e}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_ok(result: &Value, expect: &str, what: &str) {
    assert_eq!(result["ok"], true, "{what}: {result}");
    let body = result["body"].as_str().unwrap_or_default();
    assert!(body.contains(expect), "{what}: {result}");
}

fn assert_refused(result: &Value, what: &str) -> String {
    let text = result.to_string();
    let refused = result["ok"] == false || !text.contains("AAPL");
    assert!(refused, "{what} should have been refused: {text}");
    text
}

/// The record of `host:port`, the one with `reason` when given.
fn record<'a>(
    report: &'a EgressReport,
    host: &str,
    port: u16,
) -> Vec<&'a scriptbox::egress::ConnectionRecord> {
    report
        .connections
        .iter()
        .filter(|c| c.host == host && c.port == port)
        .collect()
}

#[test]
fn proxy_aware_clients_reach_the_fake_exchange() {
    let _turn = exchange_turn(false);
    let h = Harness::new("");
    let https = format!("https://api.exchange.test:{}/v8/quote", port("https"));
    let http = format!("http://api.exchange.test:{}/v8/quote", port("http"));
    for client in ["requests", "urllib", "curl_cffi", "aiohttp"] {
        let r = h.via_proxy(client, &https, None);
        assert_ok(&r, "\"AAPL\"", client);
        assert_ok(&r, &format!("api.exchange.test:{}", port("https")), client);
    }
    for client in ["requests", "urllib", "aiohttp"] {
        assert_ok(&h.via_proxy(client, &http, None), "\"AAPL\"", client);
    }
    let wss = format!("wss://ws.exchange.test:{}/stream", port("wss"));
    assert_ok(
        &h.via_proxy("websockets", &wss, None),
        "echo:BTCUSDT",
        "websockets",
    );
    let tunnel = h.via_proxy("tunnel_tls", &https, None);
    assert_ok(&tunnel, "\"AAPL\"", "raw CONNECT with TLS");

    let report = h.finish();
    let https_records = record(&report, "api.exchange.test", port("https"));
    assert!(https_records.len() >= 5, "{report:#?}");
    for r in &https_records {
        assert!(r.allowed, "{r:?}");
        assert_eq!(r.address.as_deref(), Some("127.0.0.1"));
        assert!(r.bytes_up > 100 && r.bytes_down > 100, "{r:?}");
    }
    let plain = record(&report, "api.exchange.test", port("http"));
    assert!(
        plain.len() >= 3 && plain.iter().all(|r| r.allowed),
        "{report:#?}"
    );
    let ws = record(&report, "ws.exchange.test", port("wss"));
    assert!(
        ws.len() == 1 && ws[0].allowed && ws[0].bytes_down > 0,
        "{report:#?}"
    );
    assert_eq!(report.refused, 0, "{report:#?}");
}

#[test]
fn transparent_path_reaches_the_fake_exchange_through_the_stub() {
    let _turn = exchange_turn(false);
    let h = Harness::new("");
    let https = format!("https://api.exchange.test:{}/v8/quote", port("https"));
    let http = format!("http://api.exchange.test:{}/v8/quote", port("http"));
    for client in ["requests", "urllib", "aiohttp"] {
        assert_ok(&h.transparent(client, &https, None), "\"AAPL\"", client);
        assert_ok(&h.transparent(client, &http, None), "\"AAPL\"", client);
    }
    let wss = format!("wss://ws.exchange.test:{}/stream", port("wss"));
    assert_ok(
        &h.transparent("websockets", &wss, None),
        "echo:BTCUSDT",
        "websockets",
    );
    assert_ok(
        &h.transparent("raw_tls", &https, None),
        "\"AAPL\"",
        "raw socket with TLS",
    );
    assert_ok(
        &h.transparent("raw_http", &http, None),
        "\"AAPL\"",
        "raw socket with HTTP",
    );
    // A name only a wildcard allows gets its address when first queried.
    let wild = format!("https://eu.markets.exchange.test:{}/v2/bars", port("https"));
    assert_ok(
        &h.transparent("requests", &wild, None),
        "eu.markets.exchange.test",
        "wildcard",
    );

    let report = h.finish();
    assert_eq!(report.refused, 0, "{report:#?}");
    assert!(record(&report, "api.exchange.test", port("https")).len() >= 4);
    assert!(record(&report, "api.exchange.test", port("http")).len() >= 4);
    assert_eq!(
        record(&report, "eu.markets.exchange.test", port("https")).len(),
        1
    );
    assert!(
        report.connections.iter().all(|c| c.bytes_down > 0),
        "{report:#?}"
    );
}

#[test]
fn the_stub_answers_only_allowed_names() {
    let _turn = exchange_turn(false);
    let h = Harness::new("");
    let a = h.transparent("dns", "api.exchange.test", Some("A"));
    assert_eq!(a["status"], 0, "{a}");
    let address = a["body"][0].as_str().unwrap().to_string();
    assert!(address.starts_with(&h.synthetic_prefix), "{a}");
    // Stable for the run, case-insensitive.
    let again = h.transparent("dns", "API.Exchange.Test", Some("A"));
    assert_eq!(again["body"][0].as_str(), Some(address.as_str()));
    let aaaa = h.transparent("dns", "api.exchange.test", Some("AAAA"));
    assert_eq!(
        (
            aaaa["status"].as_u64(),
            aaaa["body"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{aaaa}"
    );
    let wild = h.transparent("dns", "eu.markets.exchange.test", Some("A"));
    assert_eq!(wild["status"], 0, "{wild}");
    for refused in [
        "evil.example.com",
        "markets.exchange.test",
        "exchange.test",
        "c2VjcmV0LWRhdGE.exfil.example.com",
        "2130706433",
        "localhost",
    ] {
        let r = h.transparent("dns", refused, Some("A"));
        assert_eq!(r["status"], 3, "{refused}: NXDOMAIN expected, got {r}");
    }
    // A client resolving a name that is not allowed fails before connecting.
    let r = h.transparent("requests", "https://evil.example.com/", None);
    assert!(
        r["error"].as_str().unwrap_or_default().contains("rcode 3"),
        "{r}"
    );
    let report = h.finish();
    assert!(report.connections.is_empty(), "{report:#?}");
}

#[test]
fn refusals_are_clear_and_recorded() {
    let _turn = exchange_turn(false);
    let h = Harness::new("");
    let (https, http, echo) = (port("https"), port("http"), port("echo"));
    let refused = |r: &Value, header: &str, what: &str| {
        let text = assert_refused(r, what);
        assert!(text.contains(header), "{what}: expected {header}: {text}");
    };
    // Names and addresses.
    refused(
        &h.via_proxy("requests", "https://evil.example.com/", None),
        "403",
        "name not on the list",
    );
    refused(
        &h.via_proxy("requests", &format!("https://127.0.0.1:{https}/"), None),
        "403",
        "IPv4 literal",
    );
    refused(
        &h.via_proxy(
            "requests",
            &format!("https://rebind.exchange.test:{https}/"),
            None,
        ),
        "403",
        "rebinding",
    );
    refused(
        &h.via_proxy(
            "requests",
            &format!("https://api.exchange.test:{echo}/"),
            None,
        ),
        "403",
        "port not listed",
    );
    refused(
        &h.via_proxy("urllib", &format!("http://evil.example.com:{http}/"), None),
        "403",
        "plain HTTP to another name",
    );
    // What the client sends must name the allowed host.
    let sni = h.via_proxy(
        "tunnel_tls",
        &format!("https://api.exchange.test:{https}/"),
        Some("other.exchange.test"),
    );
    refused(&sni, "UNRECOGNIZED_NAME", "SNI mismatch through the proxy");
    let sni = h.transparent(
        "raw_tls",
        &format!("https://api.exchange.test:{https}/"),
        Some("other.exchange.test"),
    );
    refused(
        &sni,
        "UNRECOGNIZED_NAME",
        "SNI mismatch on the transparent path",
    );
    let host = h.transparent(
        "raw_http",
        &format!("http://api.exchange.test:{http}/"),
        Some("evil.example.com"),
    );
    refused(&host, "X-Scriptbox-Refused: host-mismatch", "Host mismatch");
    let raw = h.transparent(
        "raw_echo",
        &format!("http://echo.exchange.test:{echo}/"),
        None,
    );
    assert_eq!(raw["body"], "", "raw TCP gets nothing back: {raw}");

    // IP literals in every spelling, straight at the relay's proxy port.
    for target in [
        format!("127.0.0.1:{https}"),
        format!("[::1]:{https}"),
        format!("[::ffff:127.0.0.1]:{https}"),
        format!("2130706433:{https}"),
        format!("127.1:{https}"),
        format!("0x7f.1:{https}"),
    ] {
        let answer = raw_request(
            h.relay_proxy,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(
            answer.contains("X-Scriptbox-Refused: ip-literal"),
            "{target}: {answer}"
        );
    }

    let report = h.finish();
    let reason_of = |host: &str, port: u16| -> Vec<Reason> {
        record(&report, host, port)
            .iter()
            .filter_map(|r| r.reason)
            .collect()
    };
    assert_eq!(reason_of("evil.example.com", 443), vec![Reason::NotAllowed]);
    assert_eq!(
        reason_of("evil.example.com", http),
        vec![Reason::NotAllowed]
    );
    assert_eq!(
        reason_of("rebind.exchange.test", https),
        vec![Reason::RefusedAddress]
    );
    let rebind = &record(&report, "rebind.exchange.test", https)[0];
    assert_eq!(rebind.address.as_deref(), Some("127.0.0.2"));
    assert!(
        rebind
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("loopback"),
        "{rebind:?}"
    );
    assert_eq!(
        reason_of("api.exchange.test", echo),
        vec![Reason::PortNotAllowed]
    );
    assert_eq!(
        reason_of("echo.exchange.test", echo),
        vec![Reason::UnknownProtocol]
    );
    let api: BTreeSet<_> = reason_of("api.exchange.test", https).into_iter().collect();
    assert_eq!(api, BTreeSet::from([Reason::SniMismatch]), "{report:#?}");
    assert_eq!(
        reason_of("api.exchange.test", http),
        vec![Reason::HostMismatch]
    );
    let literals = report
        .connections
        .iter()
        .filter(|c| c.reason == Some(Reason::IpLiteral))
        .count();
    assert_eq!(literals, 7, "{report:#?}");
    assert_eq!(report.allowed, 0, "{report:#?}");
    // Every refused target and reason makes one line for the run's
    // report, repeats counted on it.
    let lines = report.refusal_lines();
    let mut kinds: Vec<(String, u16, Option<Reason>)> = report
        .connections
        .iter()
        .map(|c| (c.host.clone(), c.port, c.reason))
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(lines.len(), kinds.len(), "{lines:#?}");
    for c in &report.connections {
        let reason = format!("({})", c.reason.unwrap().as_str());
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("{}:{}", c.host, c.port)) && l.contains(&reason)),
            "{c:?} has no line in {lines:#?}"
        );
    }
}

/// Writes a request on a TCP connection and reads the answer to the end.
fn raw_request(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Writes bytes on the proxy's Unix socket and reads the answer to the end.
fn socket_request(socket: &Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn forged_requests_on_the_socket_are_refused() {
    let _turn = exchange_turn(false);
    let h = Harness::with(
        "",
        |c| c.timeouts.first_bytes = Duration::from_secs(2),
        None,
    );
    let socket = h.socket();
    let https = port("https");
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n".to_vec(),
            "403",
            "ip-literal",
        ),
        (
            b"CONNECT metadata.google.internal:80 HTTP/1.1\r\n\r\n".to_vec(),
            "403",
            "not-allowed",
        ),
        (
            format!("CONNECT api.exchange.test:{https}\r\n\r\n").into_bytes(),
            "400",
            "bad-request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: api.exchange.test\r\n\r\n".to_vec(),
            "400",
            "bad-request",
        ),
        (
            format!(
                "GET https://api.exchange.test:{https}/ HTTP/1.1\r\nHost: api.exchange.test\r\n\r\n"
            )
            .into_bytes(),
            "400",
            "bad-request",
        ),
        (
            format!(
                "GET http://api.exchange.test:{}/ HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
                port("http")
            )
            .into_bytes(),
            "403",
            "host-mismatch",
        ),
        (
            format!(
                "GET http://user@api.exchange.test:{}/ HTTP/1.1\r\nHost: api.exchange.test\r\n\r\n",
                port("http")
            )
            .into_bytes(),
            "400",
            "bad-request",
        ),
        (b"\x16\x03\x01\x00\x05hello".to_vec(), "400", "bad-request"),
        (vec![b'A'; 20000], "400", "bad-request"),
        (
            b"CONNECT api.exchange.test:99999 HTTP/1.1\r\n\r\n".to_vec(),
            "400",
            "bad-request",
        ),
        (
            b"CONNECT a..b:443 HTTP/1.1\r\n\r\n".to_vec(),
            "400",
            "bad-request",
        ),
    ];
    for (request, status, reason) in &cases {
        let answer = socket_request(&socket, request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{shown}: {answer}"
        );
        assert!(
            answer.contains(&format!("X-Scriptbox-Refused: {reason}\r\n")),
            "{shown}: {answer}"
        );
        assert_eq!(
            answer.lines().last().map(|l| l.contains(reason)),
            Some(true),
            "{answer}"
        );
    }
    // A client that says nothing, or stops in the middle, is answered.
    let silent = socket_request(&socket, b"");
    assert!(silent.contains("X-Scriptbox-Refused: timeout"), "{silent}");
    let half = socket_request(&socket, b"CONNECT api.exchange.test:443 HTTP/1.1\r\n");
    assert!(half.contains("X-Scriptbox-Refused: timeout"), "{half}");
    // A tunnel whose client never speaks is closed, not kept.
    let quiet = socket_request(
        &socket,
        format!("CONNECT api.exchange.test:{https} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert!(quiet.starts_with("HTTP/1.1 200"), "{quiet}");
    // And the proxy still serves.
    let ok = socket_request(
        &socket,
        format!(
            "GET http://api.exchange.test:{}/ok HTTP/1.1\r\nHost: api.exchange.test:{}\r\n\r\n",
            port("http"),
            port("http")
        )
        .as_bytes(),
    );
    assert!(ok.starts_with("HTTP/1.") && ok.contains("\"AAPL\""), "{ok}");
    let report = h.finish();
    assert_eq!(report.connections.len(), cases.len() + 4, "{report:#?}");
    assert_eq!(report.allowed, 1);
    let quiet = report
        .connections
        .iter()
        .find(|c| c.port == https && c.reason == Some(Reason::Timeout))
        .expect("the quiet tunnel is recorded");
    assert!(!quiet.allowed);
}

#[test]
fn a_thousand_connections_at_once_are_capped_and_nothing_hangs() {
    let _turn = exchange_turn(true);
    let h = Harness::new("egress_connections = 300");
    let socket = h.socket();
    let http = port("http");
    let request = format!(
        "CONNECT api.exchange.test:{http} HTTP/1.1\r\n\r\nGET /many HTTP/1.1\r\nHost: api.exchange.test\r\n\r\n"
    );
    // All open before any is read: a thousand at once.
    let streams: Vec<UnixStream> = (0..1000)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).expect("the proxy accepts");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut served = 0;
    let mut capped = 0;
    for mut s in streams {
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("an answer, not a hang");
        let answer = String::from_utf8_lossy(&answer);
        if answer.starts_with("HTTP/1.1 200") && answer.contains("\"AAPL\"") {
            served += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            capped += 1;
        }
    }
    assert_eq!(served + capped, 1000);
    assert!(served > 0 && served <= 300, "served {served}");
    // Still healthy: a new connection is answered at once, with the cap.
    let after = socket_request(
        &socket,
        format!("CONNECT api.exchange.test:{http} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert!(
        after.contains("X-Scriptbox-Refused: connection-cap"),
        "{after}"
    );

    // Through the relay too: every client is answered or reset.
    let clients: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(h.relay_proxy).expect("the relay accepts");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let _ = s
                .write_all(format!("CONNECT api.exchange.test:{http} HTTP/1.1\r\n\r\n").as_bytes());
            s
        })
        .collect();
    for mut s in clients {
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) => {
                let answer = String::from_utf8_lossy(&answer);
                assert!(
                    answer.starts_with("HTTP/1.1 429") || answer.starts_with("HTTP/1.1 503"),
                    "{answer}"
                );
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    let report = h.finish();
    assert_eq!(report.allowed, served as u64, "{:?}", report.omitted);
    assert!(report.connections.iter().all(|c| c.allowed
        || matches!(
            c.reason,
            Some(Reason::ConnectionCap | Reason::ConcurrencyCap)
        )));
}

#[test]
fn the_byte_cap_cuts_a_connection() {
    let _turn = exchange_turn(false);
    let h = Harness::new("egress_bytes = \"256K\"");
    let small = format!("http://api.exchange.test:{}/v8/quote", port("http"));
    assert_ok(
        &h.via_proxy("requests", &small, None),
        "\"AAPL\"",
        "under the cap",
    );
    let big = format!("http://api.exchange.test:{}/big/1000000", port("http"));
    let cut = download_cut_at_the_cap(h, &big);
    assert!(cut.allowed && cut.bytes_down <= 256 * 1024, "{cut:?}");
}

/// Downloads `url` through the harness's proxy port, which must fail, and
/// returns the record the proxy cut at the byte cap.
fn download_cut_at_the_cap(h: Harness, url: &str) -> scriptbox::egress::ConnectionRecord {
    let r = h.via_proxy("requests", url, None);
    assert_eq!(r["ok"], false, "{url} is over the cap: {r}");
    let report = h.finish();
    report
        .connections
        .into_iter()
        .find(|c| c.reason == Some(Reason::ByteCap))
        .unwrap_or_else(|| panic!("{url} is not cut at the cap"))
}

/// The handoff protocol spoken by hand: the proxy checks the ClientHello,
/// hands the upstream socket over, counts its bytes from the kernel, and
/// cuts it for every holder when the Unix connection closes.
#[test]
fn a_handed_off_tunnel_is_counted_and_cut_by_the_proxy() {
    let _turn = exchange_turn(false);
    let h = Harness::new("");
    let out = Command::new(&world().python)
        .arg(support_file("handoff_client.py"))
        .arg(h.socket())
        .args(["api.exchange.test", &port("https").to_string()])
        .arg(&world().ca)
        .output()
        .expect("the client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        result["status"], "HTTP/1.1 200 Connection established",
        "{result}"
    );
    assert_eq!(
        result["verdict"], "01",
        "the handed-off verdict byte: {result}"
    );
    assert_eq!(result["fds"], 1, "{result}");
    assert_eq!(
        result["quote"], true,
        "TLS and a GET over the handed socket: {result}"
    );
    assert_eq!(
        result["cut"], true,
        "closing the Unix side cuts the socket: {result}"
    );
    let report = h.finish();
    let records = record(&report, "api.exchange.test", port("https"));
    let [handed] = records.as_slice() else {
        panic!("one record: {report:?}");
    };
    assert!(handed.allowed && handed.reason.is_none(), "{handed:?}");
    // The ClientHello and the GET went up; the certificate chain and the
    // quote came down, counted by the kernel on the proxy's copy.
    assert!(
        handed.bytes_up > 300 && handed.bytes_down > 1000,
        "{handed:?}"
    );
}

/// A handed-off download is cut at `egress_bytes` from the kernel's
/// counts (within what crosses in one 50 ms check).
#[test]
fn a_handed_off_download_is_cut_at_the_byte_cap() {
    let _turn = exchange_turn(false);
    let h = Harness::new("egress_bytes = \"20M\"");
    let big = format!("https://api.exchange.test:{}/big/200000000", port("https"));
    let cut = download_cut_at_the_cap(h, &big);
    assert!(cut.allowed && cut.bytes_down >= 20 << 20, "{cut:?}");
    assert!(
        cut.bytes_down < 200_000_000,
        "cut well before the end: {cut:?}"
    );
}

#[test]
fn the_stub_never_sends_a_packet_off_loopback() {
    let _turn = exchange_turn(false);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.strace");
    let h = Harness::with("", |_| {}, Some(&log));
    for name in [
        "api.exchange.test",
        "evil.example.com",
        "c2VjcmV0LWRhdGEtb25l.exfil.example.com",
        "c2VjcmV0LWRhdGEtdHdv.exfil.example.com",
        "eu.markets.exchange.test",
        "localhost",
    ] {
        for kind in ["A", "AAAA"] {
            h.transparent("dns", name, Some(kind));
        }
    }
    let r = h.transparent("requests", "https://exfil-by-lookup.example.com/", None);
    assert_eq!(r["ok"], false);
    let https = format!("https://api.exchange.test:{}/v8/quote", port("https"));
    assert_ok(
        &h.transparent("requests", &https, None),
        "\"AAPL\"",
        "allowed",
    );
    drop(h);
    let trace = std::fs::read_to_string(&log).expect("strace wrote its log");
    let mut replies = 0;
    for line in trace.lines() {
        if !(line.contains("sendto(")
            || line.contains("sendmsg(")
            || line.contains("connect(")
            || line.contains("sendmmsg("))
        {
            continue;
        }
        if line.contains("sin_addr=inet_addr(\"127.") || line.contains("sa_family=AF_UNIX") {
            replies += usize::from(line.contains("sendto("));
            continue;
        }
        // A send on a connected socket names no address: fine, the only
        // connected sockets are the ones checked above.
        assert!(
            !line.contains("inet_addr(") && !line.contains("inet_pton("),
            "off loopback: {line}"
        );
    }
    // The trace saw the stub's answers, so it would have seen a forward.
    assert!(replies >= 12, "only {replies} DNS replies traced:\n{trace}");
}

// ---------------------------------------------------------------------------
// Through the sandboxes: `scriptbox run` on both backends, the relay started
// inside the sandbox beside the script, the host proxy in the scriptbox
// process, and the fake exchange on the host's loopback.

/// The sandboxed runs' policy (the test policy plus the client libraries,
/// locked) and a cache shared by every sandboxed run of this process.
struct SandboxWorld {
    dir: tempfile::TempDir,
    policy: PathBuf,
}

fn sandbox_world() -> &'static SandboxWorld {
    static WORLD: OnceLock<SandboxWorld> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("exchange.toml");
        let text = policy_text("").replacen(
            "[python]\nversion = \"3.11\"\n",
            "preinstalled = []\n\n[python]\nversion = \"3.11\"\nplatform = \"x86_64-manylinux_2_28\"\n\n\
             [install]\nauto_install = true\nwheels_only = true\n\n\
             [[allow]]\nname = \"requests\"\n\n[[allow]]\nname = \"aiohttp\"\n\n\
             [[allow]]\nname = \"websockets\"\n\n[[allow]]\nname = \"curl_cffi\"\n",
            1,
        );
        // The same allowlist under gVisor: the profile's section again,
        // with the isolation set.
        let start = text.find("[profiles.exchange]").expect("the exchange profile");
        let section = &text[start..];
        let end = section[1..].find("\n[").map_or(section.len(), |i| i + 1);
        let gvisor = section[..end].replacen(
            "[profiles.exchange]\n",
            "[profiles.exchange-gvisor]\nisolation = \"gvisor\"\n",
            1,
        );
        let text = format!("{text}\n{gvisor}");
        std::fs::write(&policy, text).unwrap();
        let out = Command::new(BIN)
            .args(["policy", "lock", "--policy"])
            .arg(&policy)
            .env("SCRIPTBOX_UV", uv())
            .env("SCRIPTBOX_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "locking the sandbox policy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SandboxWorld { dir, policy }
    })
}

/// `scriptbox run --profile PROFILE` of `script` on `backend`; the
/// outcome (`scriptbox.run/1`).
fn sandboxed_as(profile: &str, backend: &str, script: &Path, args: &[&str]) -> Value {
    let world = sandbox_world();
    let out = Command::new(BIN)
        .args(["run", "--profile", profile, "--format", "json"])
        .args(["--backend", backend, "--python", "python3", "--policy"])
        .arg(&world.policy)
        .arg(script)
        .arg("--")
        .args(args)
        .env("SCRIPTBOX_UV", uv())
        .env("SCRIPTBOX_CACHE_DIR", world.dir.path().join("cache"))
        .output()
        .expect("scriptbox runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{backend} {}: not JSON ({e}): {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The clients script, made to run as an uploaded script: the test CA
/// written to /tmp, and with `direct` the proxy variables dropped, so the
/// client goes the transparent way (the stub's answer, the listener on it).
fn sandboxed_clients_script(dir: &Path) -> PathBuf {
    let ca = std::fs::read_to_string(&world().ca).unwrap();
    let clients = std::fs::read_to_string(support_file("egress_clients.py")).unwrap();
    let prelude = format!(
        "import os, sys\n\
         with open('/tmp/egress-ca.pem', 'w') as f:\n    f.write('''{ca}''')\n\
         os.environ['EGRESS_CA'] = '/tmp/egress-ca.pem'\n\
         os.environ['EGRESS_PROXY'] = '127.0.0.1:3128'\n\
         if sys.argv.pop(1) == 'direct':\n\
         \x20   for k in [k for k in os.environ if k.lower().endswith('_proxy')]:\n\
         \x20       del os.environ[k]\n"
    );
    let path = dir.join("clients.py");
    std::fs::write(&path, format!("{prelude}{clients}")).unwrap();
    path
}

#[test]
fn every_client_reaches_the_fake_exchange_from_both_sandboxes() {
    every_client_reaches_the_fake_exchange("exchange");
}

/// Under gVisor the relay reaches the proxy's socket through runsc's
/// `--host-uds=open`, and every byte goes through the proxy (descriptors
/// do not cross into gVisor, so nothing is handed off).
#[test]
fn every_client_reaches_the_fake_exchange_under_gvisor_on_both_backends() {
    every_client_reaches_the_fake_exchange("exchange-gvisor");
}

/// A connection per request, many more than the relay's 100 slots: each
/// must end and free its slot. (Under gVisor the end of a host Unix socket
/// can come with no readiness event; before the relay also read the
/// socket directly, a run like this one failed after about 100.)
#[test]
fn connections_one_after_another_all_end_in_every_sandbox() {
    let _turn = exchange_turn(false);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sequential.py");
    std::fs::write(
        &script,
        r#"import http.client, os, ssl, sys
open("/tmp/ca.pem", "w").write(sys.argv[1])
ctx = ssl.create_default_context(cafile="/tmp/ca.pem")
host, port = os.environ["HTTPS_PROXY"].split("//")[1].split(":")
ok = 0
for i in range(250):
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    c.set_tunnel("api.exchange.test", int(sys.argv[2]))
    c.request("GET", "/v8/quote")
    r = c.getresponse()
    ok += r.status == 200 and b"AAPL" in r.read()
    c.close()
print("ok", ok)
"#,
    )
    .unwrap();
    let ca = std::fs::read_to_string(&world().ca).unwrap();
    let https = port("https").to_string();
    for (profile, backend) in [
        ("exchange", "local"),
        ("exchange-gvisor", "local"),
        ("exchange-gvisor", "docker"),
    ] {
        let outcome = sandboxed_as(profile, backend, &script, &[&ca, &https]);
        let what = format!("{profile} on {backend}");
        assert_eq!(outcome["status"], "succeeded", "{what}: {outcome}");
        assert_eq!(outcome["stdout"], "ok 250\n", "{what}: {outcome}");
        assert_eq!(outcome["egress"]["allowed"], 250, "{what}");
    }
}

fn every_client_reaches_the_fake_exchange(profile: &str) {
    let _turn = exchange_turn(false);
    let dir = tempfile::tempdir().unwrap();
    let script = sandboxed_clients_script(dir.path());
    let https = format!("https://api.exchange.test:{}/v8/quote", port("https"));
    let http = format!("http://api.exchange.test:{}/v8/quote", port("http"));
    let wss = format!("wss://ws.exchange.test:{}/stream", port("wss"));
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("proxy", "requests", &https, "\"AAPL\""),
        ("proxy", "urllib", &https, "\"AAPL\""),
        ("proxy", "curl_cffi", &https, "\"AAPL\""),
        ("proxy", "aiohttp", &https, "\"AAPL\""),
        ("proxy", "requests", &http, "\"AAPL\""),
        ("proxy", "websockets", &wss, "echo:BTCUSDT"),
        ("direct", "requests", &https, "\"AAPL\""),
        ("direct", "urllib", &http, "\"AAPL\""),
        ("direct", "aiohttp", &https, "\"AAPL\""),
        ("direct", "websockets", &wss, "echo:BTCUSDT"),
        ("direct", "raw_tls", &https, "\"AAPL\""),
        ("direct", "raw_http", &http, "\"AAPL\""),
    ];
    for backend in ["local", "docker"] {
        for (mode, client, url, expect) in &cases {
            let what = format!("{profile} {backend} {mode} {client} {url}");
            let outcome = sandboxed_as(profile, backend, &script, &[mode, client, url]);
            assert_eq!(outcome["status"], "succeeded", "{what}: {outcome}");
            let result: Value = serde_json::from_str(outcome["stdout"].as_str().unwrap().trim())
                .unwrap_or_else(|e| panic!("{what}: {e}: {outcome}"));
            assert_ok(&result, expect, &what);
            let egress = &outcome["egress"];
            let connections = egress["connections"].as_array().unwrap();
            assert!(
                !connections.is_empty()
                    && connections.iter().all(|c| c["allowed"] == true
                        && c["bytes_up"].as_u64() > Some(0)
                        && c["bytes_down"].as_u64() > Some(0)),
                "{what}: {egress}"
            );
            assert_eq!(egress["refused"], 0, "{what}: {egress}");
        }
    }
}

/// The `# key: value` lines of a hostile egress script.
fn header_lines(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("# {key}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn hostile_egress_cases_are_contained_on_both_backends_and_under_gvisor() {
    let _turn = exchange_turn(true);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/egress");
    let scripts = support::python_scripts(&dir);
    assert!(
        scripts.len() >= 11,
        "{} hostile egress scripts",
        scripts.len()
    );
    let ports = world().ports.to_string();
    let mut failures = Vec::new();
    let runs = [
        ("exchange", "local"),
        ("exchange", "docker"),
        ("exchange-gvisor", "local"),
        ("exchange-gvisor", "docker"),
    ];
    for (profile, backend) in runs {
        for script in &scripts {
            let name = script.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(script).unwrap();
            let outcome = sandboxed_as(profile, backend, script, &[&ports]);
            let what = format!("{name} on {backend} ({profile})");
            let stdout = outcome["stdout"].as_str().unwrap_or_default();
            let stderr = outcome["stderr"].as_str().unwrap_or_default();
            for status in header_lines(&text, "expect") {
                if outcome["status"] != status.as_str() {
                    failures.push(format!(
                        "{what}: status {} not {status}: {outcome}",
                        outcome["status"]
                    ));
                }
            }
            for line in header_lines(&text, "stdout") {
                if !stdout.lines().any(|l| l == line) {
                    failures.push(format!("{what}: no line '{line}' in: {stdout}{stderr}"));
                }
            }
            if stdout.contains("ESCAPED") {
                failures.push(format!("{what} escaped: {stdout}"));
            }
            let connections = outcome["egress"]["connections"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for reason in header_lines(&text, "refused") {
                let recorded = connections
                    .iter()
                    .any(|c| c["allowed"] == false && c["reason"] == reason.as_str());
                if !recorded {
                    failures.push(format!(
                        "{what}: no refused connection for {reason}: {}",
                        outcome["egress"]
                    ));
                }
                if !stderr.contains(&format!("({reason})")) {
                    failures.push(format!(
                        "{what}: no refusal line for {reason} on stderr: {stderr}"
                    ));
                }
            }
            if header_lines(&text, "connections") == ["0"] && !connections.is_empty() {
                failures.push(format!(
                    "{what}: the proxy saw connections: {}",
                    outcome["egress"]
                ));
            }
            if outcome["egress"].is_null() {
                failures.push(format!("{what}: no egress report: {outcome}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
