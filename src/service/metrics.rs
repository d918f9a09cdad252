//! Prometheus metrics at `/metrics`: runs by final status, queue depth,
//! runs running, run and build durations, HTTP requests, callback attempts.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    /// Runs that ended, by status.
    pub runs: IntCounterVec,
    /// Runs queued (set when scraped).
    pub queued: IntGauge,
    /// Runs running on this server.
    pub running: IntGauge,
    /// Seconds each run executed (the script itself).
    pub run_seconds: HistogramVec,
    /// Seconds spent building or finding each run's environment.
    pub build_seconds: HistogramVec,
    /// HTTP requests, by method, route and status.
    pub requests: IntCounterVec,
    /// HTTP request latency, by route.
    pub request_seconds: HistogramVec,
    /// Callback delivery attempts, by result (`delivered`, `retry`, `failed`).
    pub callbacks: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let runs = IntCounterVec::new(
            Opts::new("scriptbox_runs_total", "Runs that ended, by final status"),
            &["status"],
        )
        .expect("valid metric");
        let queued = IntGauge::new("scriptbox_queue_depth", "Runs waiting for a worker")
            .expect("valid metric");
        let running = IntGauge::new("scriptbox_runs_running", "Runs running on this server")
            .expect("valid metric");
        let run_buckets = vec![
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        ];
        let run_seconds = HistogramVec::new(
            HistogramOpts::new("scriptbox_run_duration_seconds", "Seconds each script ran")
                .buckets(run_buckets.clone()),
            &["backend"],
        )
        .expect("valid metric");
        let build_seconds = HistogramVec::new(
            HistogramOpts::new(
                "scriptbox_build_duration_seconds",
                "Seconds spent building or finding each run's environment",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
            ]),
            &["backend"],
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new("scriptbox_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "scriptbox_http_request_duration_seconds",
                "Seconds to answer each HTTP request (to the first byte)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0, 60.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "scriptbox_callback_attempts_total",
                "Callback delivery attempts, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        for m in [
            Box::new(callbacks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(runs.clone()),
            Box::new(queued.clone()),
            Box::new(running.clone()),
            Box::new(run_seconds.clone()),
            Box::new(build_seconds.clone()),
            Box::new(requests.clone()),
            Box::new(request_seconds.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Metrics {
            registry,
            runs,
            queued,
            running,
            run_seconds,
            build_seconds,
            requests,
            request_seconds,
            callbacks,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
