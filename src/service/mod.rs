//! `scriptbox serve`: the HTTP service the platform's backend hands scripts
//! to. It runs the same library pipeline as `scriptbox run`
//! ([`crate::pipeline`]), durably: every submission is a run record in the
//! [`store`], queued runs survive a restart, runs that were running when
//! the server died end `lost` (never re-run by themselves), and each run's
//! output is stored as it is written and streamed to clients.
//!
//! Parts: [`api`] (routes, handlers, the OpenAPI document), [`auth`]
//! (bearer tokens), [`callback`] (signed callbacks when runs end), [`queue`] (the fair scheduler and the workers),
//! [`logs`] (live output), [`policies`] (policies reloaded on change),
//! [`metrics`], [`store`], [`model`] (the JSON types), [`error`], and
//! [`cluster`] (roles, leases and notifications when several nodes share a
//! PostgreSQL store).

pub mod api;
pub mod auth;
pub mod callback;
pub mod cluster;
pub mod error;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod policies;
pub mod queue;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use crate::audit::AuditLog;
use crate::run::cancel::CancelToken;
use cluster::NodeRole;
use logs::LogBus;
use metrics::Metrics;
use policies::PolicyBook;
use store::Store;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Runs executing at once.
    pub workers: usize,
    /// Runs queued on the whole service (more is 429).
    pub max_queue: i64,
    /// Runs queued per tenant (more is 429).
    pub tenant_max_queued: i64,
    /// Runs running per tenant at once.
    pub tenant_max_running: i64,
    /// On SIGTERM, how long running runs may go on before being cancelled.
    pub grace: Duration,
    /// Delete records and output of runs that ended longer ago than this.
    pub retain: Option<Duration>,
    /// Where policies are (`NAME.toml`).
    pub policies_dir: PathBuf,
    /// scriptbox's cache directory (environments).
    pub cache_dir: PathBuf,
    /// The host interpreter venv layers are based on.
    pub python: String,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Requests handled at once; more are refused with 429 at once.
    pub max_in_flight: usize,
    /// Callbacks: where they may go, attempts, backoff, timeout.
    pub callbacks: callback::CallbackConfig,
    /// What this node does (API, worker, or both).
    pub role: NodeRole,
    /// How long a worker's claim on a run holds without a heartbeat
    /// (shared stores; renewed every third of it).
    pub lease: Duration,
}

/// Largest script accepted (as `scriptbox validate` and `run`).
pub const MAX_SCRIPT_BYTES: usize = crate::validate::source::DEFAULT_MAX_SCRIPT_BYTES as usize;
/// Largest stdin accepted.
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;

struct Inner {
    config: ServeConfig,
    store: Store,
    policies: PolicyBook,
    /// This server's name in run records (`node`).
    node: String,
    /// The runs executing here: their cancel tokens and when they were
    /// claimed.
    running: Mutex<HashMap<String, (CancelToken, Instant)>>,
    /// Runs executing here that this node no longer holds (their lease
    /// expired): stopped, and never recorded as ended by this node but as
    /// `lost`.
    fenced: Mutex<HashSet<String>>,
    /// Wakes the scheduler: a run was queued or a slot freed.
    wake: Notify,
    /// Wakes the callback deliverer: a run with a callback ended.
    callback_wake: Notify,
    /// Worker slots.
    slots: Arc<Semaphore>,
    bus: Arc<LogBus>,
    metrics: Metrics,
    /// False once shutting down: no new submissions, nothing new starts.
    accepting: AtomicBool,
    /// Where decisions, builds and run statuses are recorded.
    audit: Option<Arc<AuditLog>>,
}

/// The service's shared state (cheap to clone).
#[derive(Clone)]
pub struct Service(Arc<Inner>);

impl Service {
    /// A service over `store`.
    pub fn new(config: ServeConfig, store: Store) -> Service {
        let node = format!(
            "{}-{}",
            hostname(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Service(Arc::new(Inner {
            policies: PolicyBook::new(config.policies_dir.clone()),
            slots: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
            store,
            node,
            running: Mutex::new(HashMap::new()),
            fenced: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            callback_wake: Notify::new(),
            bus: Arc::new(LogBus::new()),
            metrics: Metrics::new(),
            accepting: AtomicBool::new(true),
            audit: AuditLog::from_env("service").map(Arc::new),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &ServeConfig {
        &self.0.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The policies.
    pub fn policies(&self) -> &PolicyBook {
        &self.0.policies
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The log bus.
    pub fn bus(&self) -> &Arc<LogBus> {
        &self.0.bus
    }

    /// The audit log, if there is a place for it.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.0.audit.as_ref()
    }

    /// This server's node name.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// Whether new submissions are taken.
    pub fn accepting(&self) -> bool {
        self.0.accepting.load(Ordering::SeqCst)
    }

    /// Runs executing on this server now.
    pub fn running_count(&self) -> usize {
        self.0
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Wakes the scheduler.
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Wakes the callback deliverer (a run ended, a delivery finished).
    pub fn wake_callbacks(&self) {
        self.0.callback_wake.notify_one();
    }

    /// Resolves when [`Service::wake_callbacks`] is called.
    pub async fn callbacks_woken(&self) {
        self.0.callback_wake.notified().await
    }

    /// The ids of the runs executing here.
    pub fn running_ids(&self) -> Vec<String> {
        let running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        running.keys().cloned().collect()
    }

    /// Whether run `id` executes here and was claimed before `when`.
    pub fn claimed_before(&self, id: &str, when: Instant) -> bool {
        let running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(id).is_some_and(|(_, since)| *since < when)
    }

    /// Stops run `id`, which this node no longer holds: its end is
    /// recorded as `lost` (if the claim still holds by then), never as what
    /// the stopped run returns.
    pub fn fence(&self, id: &str) {
        self.0
            .fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
        self.cancel_local(id);
    }

    /// Whether run `id` was stopped by [`Service::fence`]; forgets it.
    pub fn take_fenced(&self, id: &str) -> bool {
        self.0
            .fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Cancels the run `id` if it executes here; false otherwise.
    pub fn cancel_local(&self, id: &str) -> bool {
        let running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(id) {
            Some((token, _)) => {
                token.cancel(crate::run::cancel::CancelReason::Requested);
                true
            }
            None => false,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "scriptbox".into())
}

/// Why the service stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
}

/// Runs the service until SIGTERM or SIGINT: recovers what a previous
/// server left (running runs end `lost`, their containers are removed),
/// serves the API, runs queued runs, and on the signal stops accepting,
/// lets running runs finish within the grace period, then cancels the
/// rest. Queued runs stay queued for the next start.
pub async fn serve(config: ServeConfig, store: Store) -> Result<(), ServeError> {
    let _claim = store.claim_for_serving()?;
    raise_open_file_limit();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    let role = config.role;
    let shared = store.is_shared();
    let service = Service::new(config, store);
    if role.runs_scripts() {
        queue::recover(&service).await?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = role
        .runs_scripts()
        .then(|| tokio::spawn(queue::schedule(service.clone(), stop_rx.clone())));
    let drainer = role
        .runs_scripts()
        .then(|| tokio::spawn(queue::drain(service.clone(), stop_rx.clone())));
    let heartbeat = (shared && role.runs_scripts())
        .then(|| tokio::spawn(cluster::heartbeat(service.clone(), stop_rx.clone())));
    let expiry = shared.then(|| tokio::spawn(cluster::expire(service.clone(), stop_rx.clone())));
    let listen = shared.then(|| tokio::spawn(cluster::listen(service.clone(), stop_rx.clone())));
    let retention = role
        .serves_api()
        .then(|| tokio::spawn(queue::retain(service.clone(), stop_rx.clone())));
    // Callbacks go on while running runs drain, so those that end within
    // the grace period are delivered before the server stops. Every node
    // delivers: taking a due callback is atomic in the store.
    let (callbacks_stop, callbacks_stop_rx) = tokio::sync::watch::channel(false);
    let deliverer = tokio::spawn(callback::deliver(service.clone(), callbacks_stop_rx));
    let app = if role.serves_api() {
        api::router(service.clone())
    } else {
        cluster::worker_router(service.clone())
    };
    tracing::info!(
        "scriptbox serve: listening on {} (store {}, role {}, {} workers)",
        service.config().listen,
        service.store().location(),
        role.as_str(),
        service.config().workers
    );
    eprintln!(
        "scriptbox: serving on http://{} (store {}, role {}, node {})",
        listener.local_addr().map_or(service.config().listen, |a| a),
        service.store().location(),
        role.as_str(),
        service.node()
    );
    let shutdown = {
        let service = service.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new runs; waiting for running ones");
            service.0.accepting.store(false, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        }
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown);
    if let Err(e) = server.await {
        tracing::error!("server: {e}");
    }
    for task in [scheduler, drainer, heartbeat].into_iter().flatten() {
        let _ = task.await;
    }
    let _ = callbacks_stop.send(true);
    let _ = deliverer.await;
    for task in [retention, expiry, listen].into_iter().flatten() {
        task.abort();
    }
    service.store().close().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Raises the open-file limit to its hard maximum: each connection and
/// each run holds descriptors, and the default soft limit (1024) would
/// refuse connections long before the machine is busy.
fn raise_open_file_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own and
    // change only this process's limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}
