//! The host proxy: the egress security boundary, one per run, on a Unix
//! socket bound into the sandbox.
//!
//! It speaks the HTTP/1.1 proxy protocol: `CONNECT host:port` (tunnels:
//! HTTPS, websockets, the relay's transparent path) and absolute-form plain
//! HTTP (`GET http://host/path`). For each connection it checks the name
//! and port against the allowlist, resolves the name itself (fixed answers
//! from `egress_resolve` first), refuses the name when any answer is in a
//! refused range (DNS rebinding), dials exactly an address it checked, and
//! reads the client's first bytes: a TLS ClientHello must name the same
//! host in its SNI, a plain HTTP request in its Host header (and URL); the
//! rest is refused. Plain HTTP requests are sent upstream with
//! `Connection: close`, so each connection carries one checked request.
//! Every wait is bounded, every refusal is answered (`403` with an
//! `X-Scriptbox-Refused` header and a one-line body, or a TLS alert inside
//! a tunnel), and each connection is recorded.
//!
//! A tunnel whose client asks for it (the relay does) is handed off once
//! its first message is checked and sent: the relay gets the upstream
//! socket and copies the rest itself, and the proxy holds the connection
//! to the run's limits from the kernel's counters ([`super::handoff`]).
//!
//! The proxy runs on its own thread with a single-threaded tokio runtime.

use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::handoff::{self, Verdict};
use super::record::{ConnectionRecord, EgressReport, Reason};
use super::rule::{NameError, host_name, is_ip_literal};
use super::sniff::{
    self, MAX_CLIENT_HELLO, MAX_HEAD, RequestHead, Sniff, host_header_matches, split_authority,
};
use super::{AddressPolicy, EgressConfig, EgressError, MAX_RECORDS};

/// How long a finishing proxy lets open connections end by themselves.
const FINISH_GRACE: Duration = Duration::from_secs(2);

/// How long a refused client gets to read the answer before the close.
const REFUSAL_DRAIN: Duration = Duration::from_millis(500);

/// Buffer per direction of a relayed connection.
const PIPE_BUFFER: usize = 32 * 1024;

/// A tunnel is handed to the relay only while the run has this many
/// bytes of `egress_bytes` left: the proxy checks a handed-off
/// connection's counters every [`HANDOFF_TICK`], so it could go over by
/// what crosses in one tick; below this, the proxy relays (and counts)
/// every byte itself.
const HANDOFF_MIN_BUDGET: u64 = 16 << 20;

/// How often the proxy reads a handed-off connection's counters.
const HANDOFF_TICK: Duration = Duration::from_millis(50);

/// A TLS fatal `unrecognized_name` alert: how a refused tunnel tells a TLS
/// client its server name was not accepted.
const TLS_ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Starts host proxies.
pub struct HostProxy;

impl HostProxy {
    /// Listens on a new Unix socket at `socket` (which must not exist; it
    /// is made connectable by any uid, so put it in a directory only the
    /// sandbox can reach) and serves it on a thread of its own until
    /// [`HostProxyHandle::finish`].
    pub fn start(config: EgressConfig, socket: &Path) -> Result<HostProxyHandle, EgressError> {
        let bind_error = |source| EgressError::Bind {
            what: socket.display().to_string(),
            source,
        };
        let listener = std::os::unix::net::UnixListener::bind(socket).map_err(bind_error)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
            .map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let state = Arc::new(State {
            addresses: config.address_policy(),
            config,
            opened: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            report: Mutex::new(EgressReport::default()),
        });
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EgressError::Io(format!("starting the proxy runtime: {e}")))?;
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("scriptbox-egress".into())
            .spawn(move || runtime.block_on(serve(listener, thread_state, stopped)))
            .map_err(|e| EgressError::Io(format!("starting the proxy thread: {e}")))?;
        Ok(HostProxyHandle {
            socket: socket.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
            state,
        })
    }
}

/// A running host proxy.
pub struct HostProxyHandle {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<State>,
}

impl HostProxyHandle {
    /// The Unix socket it serves.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// What it has recorded so far (connections still open are not in it).
    pub fn report(&self) -> EgressReport {
        self.state.snapshot()
    }

    /// Stops accepting, gives open connections a moment to end, closes the
    /// rest (recorded as `run-ended`), removes the socket and returns
    /// everything recorded.
    pub fn finish(mut self) -> EgressReport {
        self.shutdown();
        self.state.snapshot()
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for HostProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What every connection of a run shares.
struct State {
    config: EgressConfig,
    addresses: AddressPolicy,
    /// Connections accepted so far (for `egress_connections`).
    opened: AtomicU64,
    /// Connections open now.
    active: AtomicUsize,
    /// Bytes relayed so far, both ways (for `egress_bytes`).
    bytes: AtomicU64,
    report: Mutex<EgressReport>,
}

impl State {
    fn snapshot(&self) -> EgressReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn push(&self, record: ConnectionRecord) {
        let Ok(mut report) = self.report.lock() else {
            return;
        };
        if record.allowed {
            report.allowed += 1;
        } else {
            report.refused += 1;
        }
        report.bytes_up += record.bytes_up;
        report.bytes_down += record.bytes_down;
        if report.connections.len() < MAX_RECORDS {
            report.connections.push(record);
        } else {
            report.omitted += 1;
        }
    }

    /// Counts `n` more bytes; false when that goes over the run's cap.
    fn charge(&self, n: usize) -> bool {
        let total = self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        total <= self.config.max_bytes
    }

    /// Bytes of `egress_bytes` not used yet.
    fn budget_left(&self) -> u64 {
        self.config
            .max_bytes
            .saturating_sub(self.bytes.load(Ordering::Relaxed))
    }
}

/// One connection's record, pushed when the connection ends however it
/// ends (also when its task is dropped at finish).
struct Tracked {
    state: Arc<State>,
    record: ConnectionRecord,
    started: Instant,
    done: bool,
}

impl Tracked {
    fn new(state: Arc<State>) -> Tracked {
        state.active.fetch_add(1, Ordering::Relaxed);
        Tracked {
            state,
            record: ConnectionRecord {
                host: String::new(),
                port: 0,
                address: None,
                allowed: false,
                reason: None,
                message: None,
                bytes_up: 0,
                bytes_down: 0,
                seconds: 0.0,
            },
            started: Instant::now(),
            done: false,
        }
    }

    fn refuse(&mut self, reason: Reason, message: impl Into<String>) {
        self.record.allowed = false;
        self.record.reason = Some(reason);
        self.record.message = Some(message.into());
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::Relaxed);
        if !self.done && self.record.reason.is_none() {
            self.record.reason = Some(Reason::RunEnded);
        }
        self.record.seconds = self.started.elapsed().as_secs_f64();
        self.state.push(std::mem::replace(
            &mut self.record,
            ConnectionRecord {
                host: String::new(),
                port: 0,
                address: None,
                allowed: false,
                reason: None,
                message: None,
                bytes_up: 0,
                bytes_down: 0,
                seconds: 0.0,
            },
        ));
    }
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = UnixListener::from_std(listener) else {
        return;
    };
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let tracked = Tracked::new(state.clone());
                tasks.spawn(handle(stream, tracked));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(FINISH_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// An answer to a refused proxy request.
struct Refusal {
    status: &'static str,
    reason: Reason,
    message: String,
}

impl Refusal {
    fn new(status: &'static str, reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
        }
    }

    fn forbidden(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal::new("403 Forbidden", reason, message)
    }

    fn response(&self, target: &str) -> Vec<u8> {
        let body = format!(
            "scriptbox egress refused {target}: {} ({})\n",
            self.message,
            self.reason.as_str()
        );
        format!(
            "HTTP/1.1 {}\r\nX-Scriptbox-Refused: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            self.reason.as_str(),
            body.len()
        )
        .into_bytes()
    }
}

/// What a proxy request asks for.
struct Request {
    host: String,
    port: u16,
    /// `None` for CONNECT; the head to send upstream for plain HTTP.
    plain_http: Option<Vec<u8>>,
}

async fn handle(mut client: UnixStream, mut tracked: Tracked) {
    let state = tracked.state.clone();
    let config = &state.config;
    let opened = state.opened.fetch_add(1, Ordering::Relaxed) + 1;
    let over_concurrency = state.active.load(Ordering::Relaxed) > config.max_concurrent;

    let mut buf = Vec::with_capacity(1024);
    let head = match read_until(
        &mut client,
        &mut buf,
        MAX_HEAD,
        config.timeouts.first_bytes,
        sniff::request_head,
    )
    .await
    {
        Ok(Sniff::Http(head)) => head,
        Ok(_) => {
            let refusal = Refusal::new(
                "400 Bad Request",
                Reason::BadRequest,
                "not an HTTP proxy request (expected CONNECT host:port or GET http://host/...)",
            );
            return refuse(&mut client, &mut tracked, "request", refusal).await;
        }
        Err(reason) => {
            let refusal = Refusal::new(
                "408 Request Timeout",
                reason,
                "no complete proxy request in time",
            );
            return refuse(&mut client, &mut tracked, "request", refusal).await;
        }
    };
    let request = match parse_request(&head) {
        Ok(r) => r,
        Err((host, port, refusal)) => {
            tracked.record.host = host;
            tracked.record.port = port;
            let target = describe(&tracked.record);
            return refuse(&mut client, &mut tracked, &target, refusal).await;
        }
    };
    tracked.record.host = request.host.clone();
    tracked.record.port = request.port;
    let target = describe(&tracked.record);
    // Only tunnels are handed off: a plain HTTP request's body follows its
    // head in the same stream, with no point at which to hand over.
    let wants_handoff = request.plain_http.is_none()
        && head
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(handoff::HEADER));
    if opened > config.max_connections {
        let refusal = Refusal::new(
            "429 Too Many Requests",
            Reason::ConnectionCap,
            format!(
                "the run's {} egress connections are used up",
                config.max_connections
            ),
        );
        return refuse(&mut client, &mut tracked, &target, refusal).await;
    }
    if over_concurrency {
        let refusal = Refusal::new(
            "429 Too Many Requests",
            Reason::ConcurrencyCap,
            format!(
                "more than {} egress connections open at once",
                config.max_concurrent
            ),
        );
        return refuse(&mut client, &mut tracked, &target, refusal).await;
    }
    if !config.allow.allows_name(&request.host) {
        let refusal = Refusal::forbidden(
            Reason::NotAllowed,
            "the name is not on the profile's egress list",
        );
        return refuse(&mut client, &mut tracked, &target, refusal).await;
    }
    if !config.allow.allows(&request.host, request.port) {
        let ports = config.allow.ports_for(&request.host);
        let refusal = Refusal::forbidden(
            Reason::PortNotAllowed,
            format!(
                "port {} is not allowed for this name (allowed: {ports:?})",
                request.port
            ),
        );
        return refuse(&mut client, &mut tracked, &target, refusal).await;
    }
    let addresses = match resolve(&state, &request.host, request.port).await {
        Ok(a) => a,
        Err(refusal) => return refuse(&mut client, &mut tracked, &target, refusal).await,
    };
    for ip in &addresses {
        if let Err(why) = state.addresses.check(*ip) {
            tracked.record.address = Some(ip.to_string());
            let refusal = Refusal::forbidden(
                Reason::RefusedAddress,
                format!("the name resolves to a refused address: {why}"),
            );
            return refuse(&mut client, &mut tracked, &target, refusal).await;
        }
    }
    let (mut upstream, address) = match dial(&addresses, request.port, config.timeouts.dial).await {
        Ok(s) => s,
        Err(message) => {
            tracked.record.address = addresses.first().map(ToString::to_string);
            let refusal = Refusal::new("502 Bad Gateway", Reason::DialFailed, message);
            return refuse(&mut client, &mut tracked, &target, refusal).await;
        }
    };
    tracked.record.address = Some(address.ip().to_string());
    let mut leftover = buf.split_off(head.len);

    match request.plain_http {
        Some(upstream_head) => {
            // The body (if any) follows as the client sends it.
            if upstream.write_all(&upstream_head).await.is_err() {
                tracked.refuse(
                    Reason::DialFailed,
                    "the upstream closed before the request was sent",
                );
                tracked.done = true;
                return;
            }
            tracked.record.bytes_up += upstream_head.len() as u64;
            state.charge(upstream_head.len());
        }
        None => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                tracked.done = true;
                tracked.refuse(Reason::RunEnded, "the client left");
                return;
            }
            let first = read_until(
                &mut client,
                &mut leftover,
                MAX_CLIENT_HELLO,
                config.timeouts.first_bytes,
                sniff::first_bytes,
            )
            .await;
            let verdict = match first {
                Ok(Sniff::Tls { sni: Some(sni) })
                    if host_name(&sni).is_ok_and(|s| s == request.host) =>
                {
                    Ok(None)
                }
                Ok(Sniff::Tls { sni }) => Err((
                    Reason::SniMismatch,
                    match sni {
                        Some(s) => format!(
                            "the TLS server name '{}' is not the CONNECT name",
                            printable(&s)
                        ),
                        None => "the TLS ClientHello carries no single server name".to_string(),
                    },
                    Some(TLS_ALERT_UNRECOGNIZED_NAME.to_vec()),
                )),
                Ok(Sniff::Http(inner)) => {
                    match check_tunnelled_http(&inner, &request.host, request.port) {
                        Ok(rewritten) => Ok(Some((inner.len, rewritten))),
                        Err(message) => {
                            let refusal = Refusal::forbidden(Reason::HostMismatch, message.clone());
                            Err((
                                Reason::HostMismatch,
                                message,
                                Some(refusal.response(&target)),
                            ))
                        }
                    }
                }
                Ok(_) => Err((
                    Reason::UnknownProtocol,
                    "the first bytes are neither a TLS ClientHello nor an HTTP request".into(),
                    None,
                )),
                Err(reason) => Err((
                    reason,
                    "the client sent no complete first message in time".into(),
                    None,
                )),
            };
            match verdict {
                Ok(None) => {}
                Ok(Some((len, rewritten))) => {
                    leftover.drain(..len);
                    let _ = upstream.write_all(&rewritten).await;
                    tracked.record.bytes_up += rewritten.len() as u64;
                    state.charge(rewritten.len());
                }
                Err((reason, message, answer)) => {
                    drop(upstream);
                    tracked.refuse(reason, message);
                    tracked.done = true;
                    if wants_handoff {
                        let _ = client.write_all(&[Verdict::Refused as u8]).await;
                    }
                    if let Some(answer) = answer {
                        let _ = client.write_all(&answer).await;
                    }
                    drain_and_close(client).await;
                    return;
                }
            }
        }
    }
    tracked.record.allowed = true;
    if !leftover.is_empty() {
        if !state.charge(leftover.len()) {
            tracked.record.reason = Some(Reason::ByteCap);
            tracked.done = true;
            return;
        }
        if upstream.write_all(&leftover).await.is_err() {
            tracked.done = true;
            return;
        }
        tracked.record.bytes_up += leftover.len() as u64;
    }
    // A connection is handed off only where the kernel counts its bytes
    // (TCP_INFO with byte counters: Linux 4.19 or newer).
    let cut = if wants_handoff
        && state.budget_left() >= HANDOFF_MIN_BUDGET
        && handoff::tcp_counters(upstream.as_fd()).is_ok()
    {
        hand_off(client, upstream, &state, &mut tracked.record).await
    } else {
        if wants_handoff && client.write_all(&[Verdict::Piped as u8]).await.is_err() {
            tracked.done = true;
            return;
        }
        pipe(client, upstream, &state, &mut tracked.record).await
    };
    tracked.record.reason = cut;
    tracked.done = true;
}

/// Gives the relay the upstream socket ([`handoff`]) and holds the
/// connection to the run's limits from the kernel's counters until the
/// relay's Unix connection closes; then shuts the socket down for every
/// holder. Returns why it was cut short, if it was.
async fn hand_off(
    client: UnixStream,
    upstream: TcpStream,
    state: &State,
    record: &mut ConnectionRecord,
) -> Option<Reason> {
    let upstream = upstream.into_std().ok()?;
    loop {
        client.writable().await.ok()?;
        match client.try_io(Interest::WRITABLE, || {
            handoff::send_fd(client.as_fd(), upstream.as_fd())
        }) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                let _ = upstream.shutdown(Shutdown::Both);
                return None;
            }
        }
    }
    // What the proxy itself sent before handing off is already charged.
    let mut charged = record.bytes_up + record.bytes_down;
    let account = |record: &mut ConnectionRecord| -> Option<handoff::TcpCounters> {
        let counters = handoff::tcp_counters(upstream.as_fd()).ok()?;
        record.bytes_up = record.bytes_up.max(counters.sent);
        record.bytes_down = record.bytes_down.max(counters.received);
        Some(counters)
    };
    let idle = state.config.timeouts.idle;
    let mut tick = tokio::time::interval(HANDOFF_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sink = [0u8; 256];
    let mut client = client;
    let cut = loop {
        tokio::select! {
            // The relay sends nothing more; its close ends the connection.
            read = client.read(&mut sink) => match read {
                Ok(0) | Err(_) => break None,
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let Some(counters) = account(record) else { break None };
                let total = record.bytes_up + record.bytes_down;
                let over = !state.charge(usize::try_from(total - charged).unwrap_or(usize::MAX));
                charged = total;
                if over {
                    break Some(Reason::ByteCap);
                }
                if counters.idle >= idle {
                    break Some(Reason::Idle);
                }
            }
        }
    };
    if account(record).is_some() {
        let total = record.bytes_up + record.bytes_down;
        state.charge(usize::try_from(total - charged).unwrap_or(usize::MAX));
    }
    let _ = upstream.shutdown(Shutdown::Both);
    cut
}

/// `host:port` as recorded, for messages.
fn describe(record: &ConnectionRecord) -> String {
    format!("{}:{}", record.host, record.port)
}

/// Text from the script, safe to put in a header or one line.
fn printable(text: &str) -> String {
    text.chars()
        .take(255)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Reads into `buf` until `judge` says something other than incomplete,
/// `limit` bytes are read, the client closes, or `timeout` passes.
async fn read_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limit: usize,
    timeout: Duration,
    judge: fn(&[u8]) -> Sniff,
) -> Result<Sniff, Reason> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match judge(buf) {
            Sniff::Incomplete if buf.len() >= limit => return Ok(Sniff::Unknown),
            Sniff::Incomplete => {}
            other => return Ok(other),
        }
        let mut chunk = [0u8; 4096];
        let room = (limit - buf.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Err(Reason::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ok(if buf.is_empty() {
                    Sniff::Unknown
                } else {
                    match judge(buf) {
                        Sniff::Incomplete => Sniff::Unknown,
                        other => other,
                    }
                });
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

type Refused = (String, u16, Refusal);

/// The target of a proxy request, checked as a name; for plain HTTP also
/// the head to send upstream.
fn parse_request(head: &RequestHead) -> Result<Request, Refused> {
    let raw = printable(&head.target);
    if head.method == "CONNECT" {
        let Some((host, Some(port))) = split_authority(&head.target) else {
            return Err((
                raw,
                0,
                Refusal::new(
                    "400 Bad Request",
                    Reason::BadRequest,
                    "CONNECT needs host:port",
                ),
            ));
        };
        let host = checked_name(host, port)?;
        return Ok(Request {
            host,
            port,
            plain_http: None,
        });
    }
    let Some(rest) = strip_prefix_ignore_case(&head.target, "http://") else {
        return Err((
            raw,
            0,
            Refusal::new(
                "400 Bad Request",
                Reason::BadRequest,
                "this is a proxy: send CONNECT host:port, or an absolute http:// URL",
            ),
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err((
            raw,
            0,
            Refusal::new(
                "400 Bad Request",
                Reason::BadRequest,
                "user names in URLs are not allowed",
            ),
        ));
    }
    let Some((host, port)) = split_authority(authority) else {
        return Err((
            raw,
            0,
            Refusal::new("400 Bad Request", Reason::BadRequest, "bad host in URL"),
        ));
    };
    let port = port.unwrap_or(80);
    let name = checked_name(host, port)?;
    let host_ok = head
        .host
        .as_deref()
        .is_some_and(|h| host_header_matches(h, &name, port));
    if !host_ok {
        return Err((
            name,
            port,
            Refusal::forbidden(
                Reason::HostMismatch,
                "the Host header does not name the URL's host",
            ),
        ));
    }
    let path = if path.is_empty() || !path.starts_with('/') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Request {
        host: name,
        port,
        plain_http: Some(rewrite_head(head, &path)),
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A requested host as a checked name; IP literals are refused.
fn checked_name(host: &str, port: u16) -> Result<String, Refused> {
    let raw = printable(host);
    if port == 0 {
        return Err((
            raw,
            port,
            Refusal::new("400 Bad Request", Reason::BadRequest, "port 0"),
        ));
    }
    if is_ip_literal(host) || host.contains(':') {
        return Err((
            raw,
            port,
            Refusal::forbidden(
                Reason::IpLiteral,
                "IP addresses cannot be reached; use an allowed host name",
            ),
        ));
    }
    match host_name(host) {
        Ok(name) => Ok(name),
        Err(NameError::IpAddress) => Err((
            raw,
            port,
            Refusal::forbidden(
                Reason::IpLiteral,
                "IP addresses cannot be reached; use an allowed host name",
            ),
        )),
        Err(e) => Err((
            raw,
            port,
            Refusal::new(
                "400 Bad Request",
                Reason::BadRequest,
                format!("not a host name: {e}"),
            ),
        )),
    }
}

/// The first request inside a tunnel must name the tunnel's host; it goes
/// upstream rewritten with `Connection: close`.
fn check_tunnelled_http(head: &RequestHead, host: &str, port: u16) -> Result<Vec<u8>, String> {
    let header_ok = head
        .host
        .as_deref()
        .is_some_and(|h| host_header_matches(h, host, port));
    if !header_ok {
        return Err(match (&head.host, head.host_count) {
            (Some(h), _) => format!("the Host header '{}' is not the CONNECT name", printable(h)),
            (None, 0) => "the HTTP request has no Host header".to_string(),
            (None, _) => "the HTTP request has several Host headers".to_string(),
        });
    }
    let target = &head.target;
    if let Some(rest) = strip_prefix_ignore_case(target, "http://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if !host_header_matches(&rest[..end], host, port) {
            return Err("the request URL's host is not the CONNECT name".into());
        }
    } else if !target.starts_with('/') && target != "*" {
        return Err("the request target is neither a path nor a URL of the CONNECT name".into());
    }
    Ok(rewrite_head(head, target))
}

/// A request head for the origin: `target` in the request line, proxy and
/// hop-by-hop connection headers dropped, `Connection: close` added.
fn rewrite_head(head: &RequestHead, target: &str) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.{}\r\n", head.method, target, head.version).into_bytes();
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization"
        ) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// The addresses of an allowed name: the fixed answer, or the system
/// resolver's (all of them, each to be checked).
async fn resolve(state: &State, host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
    let config = &state.config;
    if let Some(ip) = config.resolve.get(host) {
        return Ok(vec![*ip]);
    }
    if !config.system_resolver {
        return Err(Refusal::new(
            "502 Bad Gateway",
            Reason::NoAddress,
            "the name has no fixed address and system resolution is off",
        ));
    }
    let lookup = tokio::net::lookup_host((host.to_string(), port));
    match tokio::time::timeout(config.timeouts.resolve, lookup).await {
        Ok(Ok(found)) => {
            let mut ips: Vec<IpAddr> = found.map(|a| a.ip().to_canonical()).collect();
            ips.dedup();
            // IPv4 first: the sandbox's clients were given IPv4 too.
            ips.sort_by_key(|ip| ip.is_ipv6());
            if ips.is_empty() {
                Err(Refusal::new(
                    "502 Bad Gateway",
                    Reason::NoAddress,
                    "the name has no address",
                ))
            } else {
                Ok(ips)
            }
        }
        Ok(Err(e)) => Err(Refusal::new(
            "502 Bad Gateway",
            Reason::NoAddress,
            format!("the name does not resolve: {e}"),
        )),
        Err(_) => Err(Refusal::new(
            "504 Gateway Timeout",
            Reason::NoAddress,
            "resolving the name timed out",
        )),
    }
}

/// Dials the checked addresses in order; the first that answers wins.
async fn dial(
    addresses: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = String::from("no address");
    for ip in addresses {
        let address = SocketAddr::new(*ip, port);
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, address));
            }
            Ok(Err(e)) => last = format!("connecting to {address}: {e}"),
            Err(_) => last = format!("connecting to {address} timed out"),
        }
    }
    Err(last)
}

/// Answers a refused request and records it.
async fn refuse(client: &mut UnixStream, tracked: &mut Tracked, target: &str, refusal: Refusal) {
    tracked.refuse(refusal.reason, refusal.message.clone());
    tracked.done = true;
    let _ = tokio::time::timeout(
        REFUSAL_DRAIN,
        client.write_all(&refusal.response(&printable(target))),
    )
    .await;
    let _ = client.shutdown().await;
    let deadline = tokio::time::Instant::now() + REFUSAL_DRAIN;
    let mut sink = [0u8; 4096];
    // Read what the client still sends, briefly, so that closing with
    // unread data does not reset the connection before it reads the answer.
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

async fn drain_and_close(mut client: UnixStream) {
    let _ = client.shutdown().await;
    let deadline = tokio::time::Instant::now() + REFUSAL_DRAIN;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

/// Relays both ways until both sides are done; returns why it was cut
/// short, if it was.
async fn pipe(
    client: UnixStream,
    upstream: TcpStream,
    state: &State,
    record: &mut ConnectionRecord,
) -> Option<Reason> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    copy_both(
        &mut client_read,
        &mut client_write,
        &mut upstream_read,
        &mut upstream_write,
        state,
        record,
    )
    .await
}

async fn copy_both<CR, CW, UR, UW>(
    client_read: &mut CR,
    client_write: &mut CW,
    upstream_read: &mut UR,
    upstream_write: &mut UW,
    state: &State,
    record: &mut ConnectionRecord,
) -> Option<Reason>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut up = vec![0u8; PIPE_BUFFER];
    let mut down = vec![0u8; PIPE_BUFFER];
    let (mut up_open, mut down_open) = (true, true);
    let idle = state.config.timeouts.idle;
    while up_open || down_open {
        tokio::select! {
            read = client_read.read(&mut up), if up_open => match read {
                Ok(0) | Err(_) => {
                    up_open = false;
                    let _ = upstream_write.shutdown().await;
                }
                Ok(n) => {
                    if !state.charge(n) {
                        return Some(Reason::ByteCap);
                    }
                    if upstream_write.write_all(&up[..n]).await.is_err() {
                        return None;
                    }
                    record.bytes_up += n as u64;
                }
            },
            read = upstream_read.read(&mut down), if down_open => match read {
                Ok(0) | Err(_) => {
                    down_open = false;
                    let _ = client_write.shutdown().await;
                }
                Ok(n) => {
                    if !state.charge(n) {
                        return Some(Reason::ByteCap);
                    }
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return None;
                    }
                    record.bytes_down += n as u64;
                }
            },
            _ = tokio::time::sleep(idle) => return Some(Reason::Idle),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> RequestHead {
        match sniff::request_head(text.as_bytes()) {
            Sniff::Http(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_targets() {
        let r = parse_request(&head("CONNECT API.exchange.test:443 HTTP/1.1\r\n\r\n"))
            .ok()
            .unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.plain_http.is_none()),
            ("api.exchange.test", 443, true)
        );
        for ip in [
            "127.0.0.1:443",
            "[::1]:443",
            "2130706433:443",
            "127.1:443",
            "0x7f.1:80",
            "[::ffff:127.0.0.1]:443",
        ] {
            let Err((_, _, refusal)) =
                parse_request(&head(&format!("CONNECT {ip} HTTP/1.1\r\n\r\n")))
            else {
                panic!("{ip} accepted")
            };
            assert_eq!(refusal.reason, Reason::IpLiteral, "{ip}");
        }
        let Err((_, _, refusal)) =
            parse_request(&head("CONNECT api.exchange.test HTTP/1.1\r\n\r\n"))
        else {
            panic!()
        };
        assert_eq!(refusal.reason, Reason::BadRequest);
    }

    #[test]
    fn absolute_form_requests_are_rewritten() {
        let r = parse_request(&head(
            "GET http://api.exchange.test:8080/q?x=1 HTTP/1.1\r\nHost: api.exchange.test:8080\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        ))
        .ok()
        .unwrap();
        assert_eq!(r.port, 8080);
        assert_eq!(
            String::from_utf8(r.plain_http.unwrap()).unwrap(),
            "GET /q?x=1 HTTP/1.1\r\nHost: api.exchange.test:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let Err((_, _, refusal)) = parse_request(&head(
            "GET http://api.exchange.test/ HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
        )) else {
            panic!()
        };
        assert_eq!(refusal.reason, Reason::HostMismatch);
        let Err((_, _, refusal)) = parse_request(&head("GET /x HTTP/1.1\r\nHost: a.b\r\n\r\n"))
        else {
            panic!()
        };
        assert_eq!(refusal.reason, Reason::BadRequest);
    }

    #[test]
    fn tunnelled_http_must_name_the_host() {
        assert!(
            check_tunnelled_http(
                &head("GET / HTTP/1.1\r\nHost: api.exchange.test\r\n\r\n"),
                "api.exchange.test",
                80
            )
            .is_ok()
        );
        assert!(
            check_tunnelled_http(
                &head("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
                "api.exchange.test",
                80
            )
            .is_err()
        );
        assert!(
            check_tunnelled_http(
                &head("GET http://evil.test/ HTTP/1.1\r\nHost: api.exchange.test\r\n\r\n"),
                "api.exchange.test",
                80
            )
            .is_err()
        );
        assert!(
            check_tunnelled_http(&head("GET / HTTP/1.1\r\n\r\n"), "api.exchange.test", 80).is_err()
        );
    }
}
