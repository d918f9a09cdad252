//! What a node does when several share a PostgreSQL store: its role, the
//! heartbeat that renews its runs' leases (and kills runs it no longer
//! holds), the expiry of other nodes' leases, and the notifications that
//! wake its scheduler, its log streams and its cancels.
//!
//! A worker's claim on a run is a lease on the database's clock. The worker
//! renews its leases every third of the lease. When it cannot reach the
//! database for a whole lease, it stops its runs itself and records them
//! `lost` if it can: by then any node may have expired the lease, and a run
//! must not go on after its record says it ended (nor beside its re-run).
//! When it reaches the database again, the renewal's answer says which runs
//! are still its own; it kills the others. Any node expires leases: the run
//! ends `lost`, or is queued once more when its submitter set
//! `retry_on_lost`.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::Service;
use super::error::ApiError;
use super::model::Health;
use super::store::postgres::Notice;

/// What a node of `scriptbox serve` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// The HTTP API only: takes submissions, serves records and logs,
    /// never runs a script.
    Api,
    /// Runs scripts only; its HTTP port serves `/v1/health` and
    /// `/metrics`.
    Worker,
    /// Both (one machine).
    All,
}

impl NodeRole {
    /// Whether this node serves the API.
    pub fn serves_api(self) -> bool {
        matches!(self, NodeRole::Api | NodeRole::All)
    }

    /// Whether this node runs scripts.
    pub fn runs_scripts(self) -> bool {
        matches!(self, NodeRole::Worker | NodeRole::All)
    }

    /// `api`, `worker` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Api => "api",
            NodeRole::Worker => "worker",
            NodeRole::All => "all",
        }
    }
}

impl FromStr for NodeRole {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeRole, String> {
        match s {
            "api" => Ok(NodeRole::Api),
            "worker" => Ok(NodeRole::Worker),
            "all" => Ok(NodeRole::All),
            _ => Err(format!("'{s}': expected api, worker or all")),
        }
    }
}

/// What a run's record says when its lease expired.
pub const LEASE_LOST_MESSAGE: &str = "its worker stopped renewing the run's lease (the worker died or lost the database); it was not re-run (scripts may have side effects)";

/// What a run's record says when its worker stopped it for want of the
/// database.
pub const FENCED_MESSAGE: &str = "its worker could not reach the database for longer than the lease and stopped it; it was not re-run (scripts may have side effects)";

/// Renews this node's leases every third of the lease until `stop`; cancels
/// runs asked to stop; kills runs this node no longer holds; stops every
/// run when the database has not answered for a whole lease.
pub async fn heartbeat(service: Service, mut stop: watch::Receiver<bool>) {
    let lease = service.config().lease;
    let every = lease / 3;
    let mut last_renewal = Instant::now();
    loop {
        if *stop.borrow() {
            // Stopping: runs finish within the grace period; their leases
            // are renewed until the last one is recorded.
            tokio::time::sleep(every.min(Duration::from_millis(500))).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(every) => {},
                _ = stop.changed() => {},
            }
        }
        let asked = Instant::now();
        // A renewal that hangs (a partition) counts as failed.
        let renewed =
            tokio::time::timeout(every, service.store().renew_leases(service.node(), lease)).await;
        match renewed {
            Ok(Ok(held)) => {
                last_renewal = asked;
                let held_ids: HashSet<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
                for (id, cancel) in &held {
                    if *cancel {
                        service.cancel_local(id);
                    }
                }
                for id in service.running_ids() {
                    // Claimed just now, after the renewal read the runs: its
                    // claim is newer than this answer.
                    if !held_ids.contains(id.as_str()) && service.claimed_before(&id, asked) {
                        tracing::warn!(
                            "run {id} is no longer this node's (its lease expired): stopping it"
                        );
                        service.fence(&id);
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!("renewing leases: {e}"),
            Err(_) => tracing::warn!("renewing leases: no answer within {every:?}"),
        }
        if last_renewal.elapsed() >= lease {
            let ids = service.running_ids();
            if !ids.is_empty() {
                tracing::error!(
                    "no lease renewed for {lease:?}: stopping {} run(s), which other nodes now count as lost",
                    ids.len()
                );
            }
            for id in ids {
                service.fence(&id);
            }
        }
        if *stop.borrow() && service.running_count() == 0 {
            return;
        }
    }
}

/// Expires leases (every node does: whichever sees an expired lease first
/// ends the run) until `stop`.
pub async fn expire(service: Service, mut stop: watch::Receiver<bool>) {
    let every =
        (service.config().lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match tokio::time::timeout(every * 4, service.store().expire_leases(LEASE_LOST_MESSAGE))
            .await
        {
            Ok(Ok(rows)) => {
                for row in rows {
                    if row.status == super::model::RunStatus::Queued {
                        tracing::warn!(
                            "run {} lost its worker's lease: queued again (retry_on_lost)",
                            row.id
                        );
                    } else {
                        tracing::warn!("run {} lost its worker's lease: lost", row.id);
                        service.metrics().runs.with_label_values(&["lost"]).inc();
                        super::queue::audit_status(
                            &service,
                            &row,
                            "lost",
                            Some(LEASE_LOST_MESSAGE),
                        );
                    }
                    service.bus().changed(&row.id);
                }
            }
            Ok(Err(e)) => tracing::debug!("expiring leases: {e}"),
            Err(_) => tracing::debug!("expiring leases: no answer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.changed() => return,
        }
    }
}

/// Follows the store's notifications until `stop`: new queued runs wake the
/// scheduler, output and status changes wake log streams and waiters, and
/// cancels reach the runs executing here. Reconnects with backoff; what it
/// misses meanwhile the one-second polls catch.
pub async fn listen(service: Service, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::select! {
            o = service.store().notifications() => o,
            _ = stop.changed() => return,
        };
        let mut notifications = match opened {
            None => return,
            Some(Ok(n)) => {
                backoff = Duration::from_millis(100);
                // Anything may have happened while not listening.
                service.wake();
                n
            }
            Some(Err(e)) => {
                tracing::warn!("listening for notifications: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let notice = tokio::select! {
                n = notifications.next() => n,
                _ = stop.changed() => return,
            };
            match notice {
                Ok(Notice::Queue) | Ok(Notice::Missed) => service.wake(),
                Ok(Notice::Run(id)) => service.bus().changed(&id),
                Ok(Notice::Cancel(id)) => {
                    service.cancel_local(&id);
                }
                Err(e) => {
                    tracing::warn!("notifications: {e}; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A worker's HTTP routes: `/v1/health` and `/metrics`; the API lives on
/// the API nodes.
pub fn worker_router(service: Service) -> axum::Router {
    axum::Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found("this node is a worker: the API is served by the API nodes")
        })
        .with_state(service)
}

async fn health(State(service): State<Service>) -> Result<Json<Health>, ApiError> {
    let queued = service.store().queued().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        queued,
        running: service.running_count() as i64,
    }))
}

async fn metrics(State(service): State<Service>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        service.metrics().render(),
    )
}
