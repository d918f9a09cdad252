//! The relay inside the sandbox: how clients there reach the host proxy's
//! Unix socket. It is not a security boundary (the host proxy decides
//! everything); a script that kills it only loses its network.
//!
//! It offers, on the sandbox's loopback:
//! - a DNS stub (UDP and TCP, `127.0.0.1:53` by default) answering
//!   allowlisted names with synthetic addresses (`127.77.0.0/16`) and
//!   everything else with NXDOMAIN, forwarding nothing ([`super::dns`]);
//! - an HTTP proxy port (`127.0.0.1:3128`) for clients honouring
//!   `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (one socket connection per
//!   client connection): a `CONNECT` is passed on asking for the handoff
//!   ([`super::handoff`]), anything else is relayed byte for byte;
//! - transparent listeners on each synthetic address, one per port the
//!   name is allowed on: an accepted connection becomes `CONNECT name:port`
//!   on the socket, sent with the client's first bytes without waiting. A
//!   refused CONNECT resets the client's connection.
//!
//! Once the proxy has checked a tunnel's first message it hands the
//! upstream socket over, and the relay copies between the client and it
//! directly: the bytes of a checked connection cross one process, not two.
//!
//! The relay binds its sockets itself. [`Relay::bind`] binds the DNS stub,
//! the proxy port and the transparent listeners of every exact name at
//! once (their addresses are allocated in policy order); names matching
//! only a wildcard get an address, and listeners, when first queried, so
//! binding ports below 1024 then needs the privilege to (in the sandbox's
//! own network namespace: `net.ipv4.ip_unprivileged_port_start = 0`, or
//! `CAP_NET_BIND_SERVICE`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use tokio::sync::{Semaphore, oneshot};

use super::EgressError;
use super::dns::{self, Lookup, MAX_MESSAGE, SyntheticNames};
use super::handoff::{self, Verdict};
use super::rule::{Allowlist, HostPattern};
use super::sniff::{self, MAX_CLIENT_HELLO, MAX_HEAD, Sniff};

/// How the relay is set up; the hidden `scriptbox egress-relay` command
/// reads it as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The host proxy's Unix socket.
    pub socket: PathBuf,
    /// The profile's allowlist (the stub answers these names).
    pub allow: Allowlist,
    /// The DNS stub's address (UDP and TCP; port 0 picks a free port).
    #[serde(default = "default_dns")]
    pub dns: SocketAddr,
    /// The HTTP proxy port's address.
    #[serde(default = "default_proxy")]
    pub proxy: SocketAddr,
    /// Where synthetic addresses come from.
    #[serde(default = "default_synthetic")]
    pub synthetic: Ipv4Net,
    /// Most names given addresses.
    #[serde(default = "default_max_names")]
    pub max_names: usize,
    /// Most connections relayed at once; more are turned away at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Seconds to wait for the host proxy (connect and CONNECT answer) and
    /// for a DNS-over-TCP client.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Ask the proxy for each tunnel's upstream socket ([`handoff`]); off
    /// where descriptors cannot cross the Unix socket (gVisor drops them).
    #[serde(default = "default_handoff")]
    pub handoff: bool,
}

fn default_handoff() -> bool {
    true
}

fn default_dns() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 53))
}

fn default_proxy() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3128))
}

fn default_synthetic() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(127, 77, 0, 0), 16).expect("a valid prefix")
}

fn default_max_names() -> usize {
    1024
}

fn default_max_concurrent() -> usize {
    100
}

fn default_timeout_secs() -> u64 {
    10
}

impl RelayConfig {
    /// The defaults: DNS on 127.0.0.1:53, proxy on 127.0.0.1:3128,
    /// synthetic addresses in 127.77.0.0/16.
    pub fn new(socket: PathBuf, allow: Allowlist) -> RelayConfig {
        RelayConfig {
            socket,
            allow,
            dns: default_dns(),
            proxy: default_proxy(),
            synthetic: default_synthetic(),
            max_names: default_max_names(),
            max_concurrent: default_max_concurrent(),
            timeout_secs: default_timeout_secs(),
            handoff: default_handoff(),
        }
    }

    /// Reads a JSON config file.
    pub fn load(path: &Path) -> Result<RelayConfig, EgressError> {
        let error = |reason: String| EgressError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        serde_json::from_str(&text)
            .map_err(|e| error(format!("{e} (expected scriptbox relay JSON)")))
    }

    /// The environment variables that point proxy-aware clients at the
    /// relay (both spellings; `NO_PROXY` empty so nothing bypasses it).
    pub fn proxy_env(&self) -> Vec<(String, String)> {
        let url = format!("http://{}", self.proxy);
        let mut vars = Vec::new();
        for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
            vars.push((name.to_string(), url.clone()));
            vars.push((name.to_ascii_lowercase(), url.clone()));
        }
        vars.push(("NO_PROXY".into(), String::new()));
        vars.push(("no_proxy".into(), String::new()));
        vars
    }

    /// The `/etc/resolv.conf` that sends the sandbox's lookups to the stub.
    pub fn resolv_conf(&self) -> String {
        format!(
            "# scriptbox: names are answered by the run's egress relay\nnameserver {}\noptions ndots:1 attempts:1 timeout:2\n",
            self.dns.ip()
        )
    }
}

/// A relay whose sockets are bound, ready to run.
pub struct Relay {
    config: RelayConfig,
    udp: std::net::UdpSocket,
    dns_tcp: std::net::TcpListener,
    proxy: std::net::TcpListener,
    names: SyntheticNames,
    transparent: Vec<(SocketAddr, String, std::net::TcpListener)>,
}

impl Relay {
    /// Binds the DNS stub (UDP and TCP on one port), the proxy port, and
    /// the transparent listeners of the exact names.
    pub fn bind(config: RelayConfig) -> Result<Relay, EgressError> {
        let bind_error = |what: String| move |source| EgressError::Bind { what, source };
        let (udp, dns_tcp) = bind_dns(config.dns)?;
        let proxy = std::net::TcpListener::bind(config.proxy)
            .map_err(bind_error(format!("proxy port {}", config.proxy)))?;
        let mut names = SyntheticNames::new(config.synthetic, config.max_names);
        let mut transparent = Vec::new();
        for rule in &config.allow.rules {
            let HostPattern::Exact(name) = &rule.pattern else {
                continue;
            };
            let Some((ip, new)) = names.address_for(name) else {
                break;
            };
            if !new {
                continue;
            }
            for port in config.allow.ports_for(name) {
                let address = SocketAddr::from((ip, port));
                let listener = std::net::TcpListener::bind(address)
                    .map_err(bind_error(format!("{address} (for {name})")))?;
                transparent.push((address, name.clone(), listener));
            }
        }
        Ok(Relay {
            config,
            udp,
            dns_tcp,
            proxy,
            names,
            transparent,
        })
    }

    /// Where the DNS stub listens.
    pub fn dns_addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or(self.config.dns)
    }

    /// Where the proxy port listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.local_addr().unwrap_or(self.config.proxy)
    }

    /// Runs until the process ends (the hidden command sets a parent-death
    /// signal, so it ends with the sandbox).
    pub fn run(self) -> Result<(), EgressError> {
        let (_keep, stop) = oneshot::channel::<()>();
        self.run_until(stop)
    }

    /// Runs on a thread of its own until the handle says stop.
    pub fn spawn(self) -> Result<RelayHandle, EgressError> {
        let (dns, proxy) = (self.dns_addr(), self.proxy_addr());
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("scriptbox-relay".into())
            .spawn(move || {
                if let Err(e) = self.run_until(stopped) {
                    tracing::warn!("relay: {e}");
                }
            })
            .map_err(|e| EgressError::Io(format!("starting the relay thread: {e}")))?;
        Ok(RelayHandle {
            dns,
            proxy,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn run_until(self, stopped: oneshot::Receiver<()>) -> Result<(), EgressError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EgressError::Io(format!("starting the relay runtime: {e}")))?;
        runtime.block_on(self.serve(stopped))
    }

    async fn serve(self, stopped: oneshot::Receiver<()>) -> Result<(), EgressError> {
        let io = |e: std::io::Error| EgressError::Io(e.to_string());
        let shared = Arc::new(Shared {
            timeout: Duration::from_secs(self.config.timeout_secs.max(1)),
            slots: Arc::new(Semaphore::new(self.config.max_concurrent.max(1))),
            listening: Mutex::new(self.transparent.iter().map(|(a, _, _)| *a).collect()),
            names: Mutex::new(self.names),
            config: self.config,
        });
        for (_, name, listener) in self.transparent {
            listener.set_nonblocking(true).map_err(io)?;
            let listener = TcpListener::from_std(listener).map_err(io)?;
            tokio::spawn(accept_transparent(listener, name, shared.clone()));
        }
        self.udp.set_nonblocking(true).map_err(io)?;
        self.dns_tcp.set_nonblocking(true).map_err(io)?;
        self.proxy.set_nonblocking(true).map_err(io)?;
        let udp = UdpSocket::from_std(self.udp).map_err(io)?;
        let dns_tcp = TcpListener::from_std(self.dns_tcp).map_err(io)?;
        let proxy = TcpListener::from_std(self.proxy).map_err(io)?;
        tokio::spawn(serve_dns_tcp(dns_tcp, shared.clone()));
        tokio::spawn(accept_proxy(proxy, shared.clone()));
        tokio::select! {
            _ = serve_dns_udp(udp, shared.clone()) => {}
            _ = stopped => {}
        }
        Ok(())
    }
}

/// A relay running on its own thread.
pub struct RelayHandle {
    dns: SocketAddr,
    proxy: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayHandle {
    /// Where the DNS stub listens.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    /// Where the proxy port listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    /// Stops it and waits for its thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Binds UDP and TCP on one address; with port 0, tries free ports until
/// both halves get the same one.
fn bind_dns(
    address: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), EgressError> {
    let mut last = None;
    for _ in 0..if address.port() == 0 { 20 } else { 1 } {
        let udp = std::net::UdpSocket::bind(address).map_err(|source| EgressError::Bind {
            what: format!("DNS stub {address}/udp"),
            source,
        })?;
        let bound = udp
            .local_addr()
            .map_err(|e| EgressError::Io(e.to_string()))?;
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => last = Some(source),
        }
    }
    Err(EgressError::Bind {
        what: format!("DNS stub {address}/tcp"),
        source: last.unwrap_or_else(|| std::io::Error::other("no port")),
    })
}

struct Shared {
    config: RelayConfig,
    timeout: Duration,
    slots: Arc<Semaphore>,
    names: Mutex<SyntheticNames>,
    listening: Mutex<HashSet<SocketAddr>>,
}

impl Shared {
    /// The stub's answer for a name; a newly allowed name gets its
    /// transparent listeners before the answer goes out.
    fn lookup(self: &Arc<Self>, name: &str) -> Lookup {
        if !self.config.allow.allows_name(name) {
            return Lookup::NotAllowed;
        }
        let Some((ip, _)) = self.names.lock().ok().and_then(|mut n| n.address_for(name)) else {
            return Lookup::Exhausted;
        };
        for port in self.config.allow.ports_for(name) {
            let address = SocketAddr::from((ip, port));
            let Ok(mut listening) = self.listening.lock() else {
                break;
            };
            if listening.contains(&address) {
                continue;
            }
            let bound = std::net::TcpListener::bind(address).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            });
            match bound {
                Ok(listener) => {
                    listening.insert(address);
                    tokio::spawn(accept_transparent(listener, name.to_string(), self.clone()));
                }
                Err(e) => tracing::warn!("relay: cannot listen on {address} for {name}: {e}"),
            }
        }
        Lookup::Address(ip)
    }

    async fn connect_socket(&self) -> Option<UnixStream> {
        tokio::time::timeout(self.timeout, UnixStream::connect(&self.config.socket))
            .await
            .ok()?
            .ok()
    }
}

async fn serve_dns_udp(udp: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        // Only the sandbox's own loopback is answered.
        if !is_loopback(peer.ip()) {
            continue;
        }
        if let Some(reply) = dns::answer(&buf[..n], &mut |name| shared.lookup(name)) {
            let _ = udp.send_to(&reply, peer).await;
        }
    }
}

async fn serve_dns_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if !is_loopback(peer.ip()) {
            continue;
        }
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = dns_tcp_connection(stream, &shared).await;
        });
    }
}

/// DNS over TCP: length-prefixed queries until the client stops or idles.
async fn dns_tcp_connection(mut stream: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut len = [0u8; 2];
        tokio::time::timeout(shared.timeout, stream.read_exact(&mut len)).await??;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_MESSAGE {
            return Ok(());
        }
        tokio::time::timeout(shared.timeout, stream.read_exact(&mut buf[..len])).await??;
        let Some(reply) = dns::answer(&buf[..len], &mut |name| shared.lookup(name)) else {
            return Ok(());
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_all(&reply_len.to_be_bytes()).await?;
        stream.write_all(&reply).await?;
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

async fn accept_proxy(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let body = "scriptbox egress relay: too many connections open at once\n";
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nX-Scriptbox-Refused: concurrency-cap\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.write_all(answer.as_bytes()),
                )
                .await;
            });
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = client.set_nodelay(true);
            proxy_connection(client, &shared).await;
        });
    }
}

/// A client of the proxy port. A `CONNECT` becomes a [`tunnel`] that asks
/// for the upstream socket; anything else (plain HTTP in absolute form, or
/// what the proxy will refuse) is relayed byte for byte.
async fn proxy_connection(mut client: TcpStream, shared: &Shared) {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + shared.timeout;
    let head = loop {
        match sniff::request_head(&buf) {
            Sniff::Incomplete if buf.len() < MAX_HEAD => {}
            Sniff::Http(head) => break Some(head),
            _ => break None,
        }
        let mut chunk = [0u8; 4096];
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, client.read(&mut chunk[..room])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break None,
        }
    };
    if let Some(head) = head.filter(|h| h.method == "CONNECT" && shared.config.handoff)
        && let Some(request) = buf[..head.len].strip_suffix(b"\r\n\r\n")
    {
        let mut request = request.to_vec();
        request.extend_from_slice(format!("\r\n{}: fd\r\n\r\n", handoff::HEADER).as_bytes());
        let early = buf[head.len..].to_vec();
        return tunnel(client, request, early, true, shared).await;
    }
    let Some(mut socket) = shared.connect_socket().await else {
        let _ = client.set_zero_linger();
        return;
    };
    if socket.write_all(&buf).await.is_err() {
        let _ = client.set_zero_linger();
        return;
    }
    pipe_through_proxy(&mut client, &mut socket).await;
}

async fn accept_transparent(listener: TcpListener, name: String, shared: Arc<Shared>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            let _ = client.set_zero_linger();
            continue;
        };
        let shared = shared.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = client.set_nodelay(true);
            transparent_connection(client, &name, port, &shared).await;
        });
    }
}

/// One transparent connection: a [`tunnel`] to `name:port`, whose
/// refusal resets the client's connection so it fails at once.
async fn transparent_connection(client: TcpStream, name: &str, port: u16, shared: &Shared) {
    let ask = if shared.config.handoff {
        format!("{}: fd\r\n", handoff::HEADER)
    } else {
        String::new()
    };
    let request = format!("CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n{ask}\r\n");
    tunnel(client, request.into_bytes(), Vec::new(), false, shared).await;
}

/// A tunnel through the host proxy that asks for the upstream socket
/// ([`handoff`]). Sends `request` and the client's bytes read so far
/// (`early`) at once, without waiting for the answer, then the client's
/// first message as it comes, and nothing more until the proxy's verdict.
/// The proxy's answer head goes to the client when `answer_client` (the
/// proxy port); on the transparent path any answer but `200` resets the
/// client. Then, by the verdict: copy between the client and the handed
/// socket, keep relaying through the proxy, or give the client the
/// refusal's bytes.
async fn tunnel(
    mut client: TcpStream,
    request: Vec<u8>,
    early: Vec<u8>,
    answer_client: bool,
    shared: &Shared,
) {
    let reset = |client: TcpStream| {
        let _ = client.set_zero_linger();
    };
    let Some(mut socket) = shared.connect_socket().await else {
        return reset(client);
    };
    let mut out = request;
    out.extend_from_slice(&early);
    if socket.write_all(&out).await.is_err() {
        return reset(client);
    }
    let first_complete = |seen: &[u8]| {
        seen.len() >= MAX_CLIENT_HELLO || sniff::first_bytes(seen) != Sniff::Incomplete
    };
    let mut seen = early;
    let mut first_sent = first_complete(&seen);
    let mut answer: Vec<u8> = Vec::new();
    let mut head_len: Option<usize> = None;
    let mut chunk = vec![0u8; 16 * 1024];
    let mut from_proxy = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut chunk), if !first_sent => match read {
                Ok(0) | Err(_) => {
                    first_sent = true;
                    let _ = socket.shutdown().await;
                }
                Ok(n) => {
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        return reset(client);
                    }
                    seen.extend_from_slice(&chunk[..n]);
                    first_sent = first_complete(&seen);
                }
            },
            // The probe: see socket_to_client.
            ready = async {
                tokio::select! {
                    ready = socket.readable() => ready.map(|()| true),
                    _ = tokio::time::sleep(SOCKET_PROBE) => Ok(false),
                }
            } => {
                let Ok(signalled) = ready else {
                    return reset(client);
                };
                let received = if signalled {
                    socket.try_io(Interest::READABLE, || {
                        handoff::recv_with_fd(socket.as_fd(), &mut from_proxy)
                    })
                } else {
                    handoff::recv_with_fd(socket.as_fd(), &mut from_proxy)
                };
                let (n, fd) = match received {
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => (0, None),
                };
                if n == 0 {
                    // The proxy closed before its verdict.
                    if head_len.is_none() && !answer_client {
                        return reset(client);
                    }
                    let _ = client.shutdown().await;
                    return;
                }
                answer.extend_from_slice(&from_proxy[..n]);
                let len = match head_len {
                    Some(len) => len,
                    None => {
                        let mut headers = [httparse::EMPTY_HEADER; 32];
                        let mut response = httparse::Response::new(&mut headers);
                        let (code, len) = match response.parse(&answer) {
                            Ok(httparse::Status::Complete(len)) => (response.code, len),
                            Ok(httparse::Status::Partial) if answer.len() < MAX_HEAD && fd.is_none() => continue,
                            _ => return reset(client),
                        };
                        if answer_client && client.write_all(&answer[..len]).await.is_err() {
                            return;
                        }
                        if code != Some(200) {
                            if !answer_client {
                                return reset(client);
                            }
                            // The refusal's body, then the proxy closes.
                            let _ = client.write_all(&answer[len..]).await;
                            let (mut from, _) = socket.split();
                            let _ = socket_to_client(&mut from, &mut client).await;
                            return;
                        }
                        if !shared.config.handoff {
                            // No verdict comes: the proxy relays the rest.
                            if client.write_all(&answer[len..]).await.is_err() {
                                return;
                            }
                            pipe_through_proxy(&mut client, &mut socket).await;
                            return;
                        }
                        head_len = Some(len);
                        len
                    }
                };
                let Some(&verdict) = answer.get(len) else {
                    if fd.is_some() {
                        return reset(client);
                    }
                    continue;
                };
                let after = answer[len + 1..].to_vec();
                match Verdict::from_byte(verdict) {
                    Some(Verdict::HandedOff) => {
                        // The descriptor comes with the verdict byte, the
                        // last one read.
                        let (Some(fd), true) = (fd, after.is_empty()) else {
                            return reset(client);
                        };
                        return handed_off(client, fd, socket).await;
                    }
                    Some(Verdict::Piped) => {
                        if client.write_all(&after).await.is_err() {
                            return;
                        }
                        pipe_through_proxy(&mut client, &mut socket).await;
                        return;
                    }
                    Some(Verdict::Refused) => {
                        let _ = client.write_all(&after).await;
                        let (mut from, _) = socket.split();
                        let _ = socket_to_client(&mut from, &mut client).await;
                        return;
                    }
                    None => return reset(client),
                }
            }
        }
    }
}

/// How often a copy from the proxy's socket also reads it directly, in
/// case a readiness event was lost ([`socket_to_client`]).
const SOCKET_PROBE: Duration = Duration::from_millis(250);

/// Copies both ways between the client and the proxy's socket until both
/// are done (each side's end passed on as a half-close), reading the
/// socket as [`socket_to_client`] does.
async fn pipe_through_proxy(client: &mut TcpStream, socket: &mut UnixStream) {
    let (mut client_read, mut client_write) = client.split();
    let (mut socket_read, mut socket_write) = socket.split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut socket_write).await;
        let _ = socket_write.shutdown().await;
    };
    let down = socket_to_client(&mut socket_read, &mut client_write);
    let _ = tokio::join!(up, down);
}

/// Copies the proxy's socket to the client until the socket ends, then
/// ends the client's side. Besides waiting for readiness, it reads the
/// socket directly every [`SOCKET_PROBE`]: under gVisor the end of a host
/// Unix socket can arrive with no readiness event (seen with runsc
/// 20221219 on about half the connections of a run that opened one per
/// request), and a connection that never ends holds a relay slot for good.
async fn socket_to_client<W: tokio::io::AsyncWrite + Unpin>(
    socket: &mut tokio::net::unix::ReadHalf<'_>,
    client: &mut W,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = socket.read(&mut buf) => read?,
            _ = tokio::time::sleep(SOCKET_PROBE) => {
                let fd = AsRef::<UnixStream>::as_ref(socket).as_fd();
                match rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
                    Ok((n, _)) => n,
                    Err(rustix::io::Errno::AGAIN) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if n == 0 {
            break;
        }
        client.write_all(&buf[..n]).await?;
    }
    client.shutdown().await
}

/// Copies between the client and the socket the proxy handed over, until
/// both are done or the proxy closes its Unix connection (it cut the
/// connection, or the run is ending). Closing the Unix connection tells
/// the proxy the connection is over.
async fn handed_off(mut client: TcpStream, fd: std::os::fd::OwnedFd, mut socket: UnixStream) {
    let upstream = std::net::TcpStream::from(fd);
    let Ok(mut upstream) = upstream
        .set_nonblocking(true)
        .and_then(|()| TcpStream::from_std(upstream))
    else {
        let _ = client.set_zero_linger();
        return;
    };
    let mut sink = [0u8; 64];
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = socket.read(&mut sink) => {}
    }
    if let Ok(upstream) = upstream.into_std() {
        let _ = upstream.shutdown(std::net::Shutdown::Both);
    }
}
