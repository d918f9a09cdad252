//! [`Store`]: the one type the service holds, over SQLite (one machine) or
//! PostgreSQL (several nodes). Each call goes to the database's own
//! implementation; calls that only mean something with several nodes
//! (leases, notifications) do nothing on SQLite, where one server owns
//! every run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::CallbackNext;
use super::postgres::{Notifications, PgStore};
use super::{
    Admission, Admitted, Caller, CancelState, ClaimedRun, NewRun, OutputChunk, Role, RunFilter,
    RunRow, SqliteStore, StoreError, TokenInfo,
};
use crate::service::model::{CallbackAttempt, RunStatus};

/// The durable store: tokens, run records (the queue is the runs whose
/// status is `queued`) and each run's output.
#[derive(Clone)]
pub enum Store {
    /// An SQLite file: one server.
    Sqlite(SqliteStore),
    /// A PostgreSQL database: any number of API and worker nodes.
    Postgres(PgStore),
}

/// Which claim of a run a worker holds: its node and the attempt (a run
/// queued again after it was lost is claimed anew). Only the holder of the
/// current claim may store output or record the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The node that claimed it.
    pub node: String,
    /// Which start this is (1, or 2 after a re-queue).
    pub attempt: i64,
}

impl Claim {
    /// The claim a claimed row carries.
    pub fn of(row: &RunRow) -> Claim {
        Claim {
            node: row.node.clone().unwrap_or_default(),
            attempt: row.attempts,
        }
    }
}

/// True when `location` names a PostgreSQL database rather than a file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

impl Store {
    /// Opens the store at `location`: a `postgres://` (or `postgresql://`)
    /// URL, or the path of an SQLite file (created if needed).
    pub async fn open(location: &str) -> Result<Store, StoreError> {
        if is_postgres_url(location) {
            Ok(Store::Postgres(PgStore::open(location).await?))
        } else {
            Ok(Store::Sqlite(SqliteStore::open(Path::new(location)).await?))
        }
    }

    /// Opens the SQLite store at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(path).await?))
    }

    /// True when several nodes share the store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Claims the store for this server when it is one machine's (an
    /// SQLite file: see [`SqliteStore::claim_for_serving`]); a shared store
    /// needs no claim.
    pub fn claim_for_serving(&self) -> Result<Option<std::fs::File>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_for_serving().map(Some),
            Store::Postgres(_) => Ok(None),
        }
    }

    /// Where the store is (a path, or a URL without its password).
    pub fn location(&self) -> &str {
        each!(self, s => s.location())
    }

    /// `Ok` when the database is sound (SQLite's integrity check) or
    /// answers (PostgreSQL).
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        each!(self, s => s.integrity_check().await)
    }

    /// Records a token for `tenant` with `role`, given the sha256 of the
    /// token; returns its public id.
    pub async fn create_token(
        &self,
        tenant: &str,
        role: Role,
        hash: &str,
    ) -> Result<String, StoreError> {
        each!(self, s => s.create_token(tenant, role, hash).await)
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        each!(self, s => s.list_tokens().await)
    }

    /// Revokes the token with public id `id`; false when there is none.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.revoke_token(id).await)
    }

    /// The caller holding the token whose sha256 is `hash`, unless unknown
    /// or revoked.
    pub async fn authenticate(&self, hash: &str) -> Result<Option<Caller>, StoreError> {
        each!(self, s => s.authenticate(hash).await)
    }

    /// Records a submission (queued, or already ended with `finished`),
    /// checking the queue's limits and the idempotency key in the same
    /// transaction; concurrent submissions are committed together.
    pub async fn admit(
        &self,
        run: &NewRun,
        limits: Admission,
        finished: Option<(RunStatus, &serde_json::Value)>,
    ) -> Result<Admitted, StoreError> {
        each!(self, s => s.admit(run, limits, finished).await)
    }

    /// The run `id`, if it exists (and, given a tenant, is that tenant's).
    pub async fn get_run(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<Option<RunRow>, StoreError> {
        each!(self, s => s.get_run(id, tenant).await)
    }

    /// Runs matching `filter`, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        each!(self, s => s.list_runs(filter).await)
    }

    /// Claims the next run for `node`, fairly between tenants and within
    /// `tenant_max_running`; it becomes `running`, leased to `node` for
    /// `lease`.
    pub async fn claim_next(
        &self,
        node: &str,
        tenant_max_running: i64,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        each!(self, s => s.claim_next(node, tenant_max_running, lease).await)
    }

    /// Ends a run held by `claim` with `status` and its outcome; false when
    /// the claim no longer holds it (it ended already, or was declared lost:
    /// a run ends once).
    pub async fn finish(
        &self,
        id: &str,
        claim: &Claim,
        status: RunStatus,
        outcome: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.finish(id, status, outcome).await,
            Store::Postgres(s) => s.finish(id, claim, status, outcome).await,
        }
    }

    /// Gives up a run held by `claim` that its worker stopped because it
    /// could no longer vouch for it (its lease ran out while it could not
    /// reach the database): `lost` with `message`, or queued again once
    /// when the submitter set `retry_on_lost`, as a lease expiry would.
    /// The status it now has; `None` when the claim no longer held it.
    pub async fn give_up(
        &self,
        id: &str,
        claim: &Claim,
        message: &str,
    ) -> Result<Option<RunStatus>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let outcome = serde_json::json!({ "message": message });
                let done = s.finish(id, RunStatus::Lost, &outcome).await?;
                Ok(done.then_some(RunStatus::Lost))
            }
            Store::Postgres(s) => s.give_up(id, claim, message).await,
        }
    }

    /// Asks to cancel run `id` (of `tenant`, unless `None`): a queued run is
    /// `cancelled` at once; a running one is flagged for its worker.
    pub async fn cancel(&self, id: &str, tenant: Option<&str>) -> Result<CancelState, StoreError> {
        each!(self, s => s.cancel(id, tenant).await)
    }

    /// Ends as `lost` every run left `running` by a server that stopped
    /// (SQLite: they were this machine's). A shared store has no such
    /// runs at start: other nodes' runs end by lease expiry.
    pub async fn mark_lost(&self, message: &str) -> Result<Vec<RunRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.mark_lost(message).await,
            Store::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// Renews the lease of every run `node` holds, for `lease` from now on
    /// the database's clock; returns them, each with whether a cancel was
    /// asked. A run of this node missing from the answer is no longer
    /// this node's. SQLite: no leases (empty).
    pub async fn renew_leases(
        &self,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.renew_leases(node, lease).await,
        }
    }

    /// Ends runs whose lease expired: `lost` (with `message`), or queued
    /// again when the submitter set `retry_on_lost` and this was the first
    /// attempt. Returns them as they are now. SQLite: none.
    pub async fn expire_leases(&self, message: &str) -> Result<Vec<RunRow>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.expire_leases(message).await,
        }
    }

    /// Appends chunks to a run's stored output, numbered after what is
    /// there, while `claim` holds the run; false when it no longer does
    /// (nothing was stored).
    pub async fn append_output(
        &self,
        run_id: &str,
        claim: &Claim,
        chunks: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.append_output(run_id, chunks).await.map(|_| true),
            Store::Postgres(s) => s.append_output(run_id, claim, chunks).await,
        }
    }

    /// A run's stored output chunks numbered above `after`, in order.
    pub async fn output(&self, run_id: &str, after: i64) -> Result<Vec<OutputChunk>, StoreError> {
        each!(self, s => s.output(run_id, after).await)
    }

    /// How many runs are queued.
    pub async fn queued(&self) -> Result<i64, StoreError> {
        each!(self, s => s.queued().await)
    }

    /// How many runs have each status.
    pub async fn count_by_status(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        each!(self, s => s.count_by_status().await)
    }

    /// Deletes runs that ended before `before` (ms), with their labels and
    /// output; returns how many.
    pub async fn delete_finished_before(&self, before: i64) -> Result<u64, StoreError> {
        each!(self, s => s.delete_finished_before(before).await)
    }

    /// Notifications from the other nodes (PostgreSQL); `None` on SQLite,
    /// where this process is the only one.
    pub async fn notifications(&self) -> Option<Result<Notifications, StoreError>> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(s) => Some(s.notifications().await),
        }
    }

    /// The tenant's callback signing secret, if it has one.
    pub async fn tenant_secret(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.tenant_secret(tenant).await)
    }

    /// The tenant's secret: the one it has, or `fresh` when it has none or
    /// `replace` is set. Returns the secret in force.
    pub async fn ensure_tenant_secret(
        &self,
        tenant: &str,
        fresh: &str,
        replace: bool,
    ) -> Result<String, StoreError> {
        each!(self, s => s.ensure_tenant_secret(tenant, fresh, replace).await)
    }

    /// Takes up to `limit` callbacks due at `now`, leased until
    /// `lease_until`; returns their runs' ids.
    pub async fn take_due_callbacks(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.take_due_callbacks(now, lease_until, limit).await)
    }

    /// When the next pending callback is due (ms), if any is.
    pub async fn next_callback_due(&self) -> Result<Option<i64>, StoreError> {
        each!(self, s => s.next_callback_due().await)
    }

    /// Records a delivery attempt of run `id`'s callback and what follows.
    pub async fn record_callback_attempt(
        &self,
        id: &str,
        attempt: &CallbackAttempt,
        next: CallbackNext,
    ) -> Result<(), StoreError> {
        each!(self, s => s.record_callback_attempt(id, attempt, next).await)
    }

    /// Closes the connections.
    pub async fn close(&self) {
        each!(self, s => s.close().await)
    }
}
