//! The PostgreSQL store: the same records as the SQLite store, shared by
//! any number of API and worker nodes.
//!
//! What changes with several nodes: a claim takes the next run with
//! `FOR UPDATE SKIP LOCKED` (claimers never wait on each other's rows) and
//! locks its tenant's counts row, so the per-tenant running limit holds
//! across the cluster; each claim is a lease (node, attempt, expiry on the
//! database's clock) that the worker renews by heartbeat, and that any node
//! may expire (the run ends `lost`, or is queued again once when its
//! submitter asked); a run ends, and output is stored, only under the claim
//! that holds it. Triggers keep the per-tenant counts and a history of
//! status changes, and send notifications (`LISTEN/NOTIFY`) that wake
//! workers, log streams and cancels on every node.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::{
    ADMIT_BATCH, Admission, AdmitJob, Admitted, CallbackNext, Caller, CancelState, Claim,
    ClaimedRun, NewRun, OutputChunk, Role, RunFilter, RunRow, StoreError, TokenInfo,
    answer_admissions, next_admissions, now_ms, submit_admission,
};
use crate::service::model::{CallbackAttempt, RunStatus};

/// Columns of `runs` read into a [`RunRow`].
const ROW_COLUMNS: &str = super::ROW_COLUMNS;

/// Key of the advisory lock admissions take: the queue's limits are then
/// exact across API nodes.
const ADMIT_LOCK: i64 = 0x5c81_7b0c_0001;

/// How long a node waits for a connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The notification channels (see the migration's triggers).
const CHANNELS: [&str; 3] = ["scriptbox_queue", "scriptbox_run", "scriptbox_cancel"];

/// The next queued run for a worker, fairly as on one machine: only tenants
/// below the running limit ($1, counted over every node), first the tenant
/// with the fewest running, then the one served longest ago, then the
/// oldest submission; rows other claimers hold are skipped, not waited on.
const CLAIM_NEXT: &str = "\
    SELECT r.id, r.tenant FROM runs r JOIN queue_counts c ON c.tenant = r.tenant \
    WHERE r.status = 'queued' AND c.running < $1 \
    ORDER BY c.running, c.last_started NULLS FIRST, r.seq \
    LIMIT 1 FOR UPDATE OF r SKIP LOCKED";

/// True when `s` holds a NUL, which PostgreSQL text cannot: no stored value
/// has one, so a lookup by it finds nothing.
fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// For the notification listener's own connection (boxed: the options
    /// are large and the store is cloned often).
    options: Box<PgConnectOptions>,
    admissions: tokio::sync::mpsc::Sender<AdmitJob>,
    location: String,
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let location = redact(url);
        let open_error = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| open_error(format!("not a PostgreSQL URL: {e}")))?;
        // A node cut off in the middle of a transaction would hold its row
        // locks (a tenant's counts, a claimed run) until the partition
        // heals: the server ends such sessions instead.
        let options = options
            .application_name("scriptbox")
            .options([("idle_in_transaction_session_timeout", "5s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(e.to_string()))?;
        super::migrate::postgres(&pool)
            .await
            .map_err(|e| open_error(format!("migrating the schema: {e}")))?;
        let (admissions, jobs) = tokio::sync::mpsc::channel(4 * ADMIT_BATCH);
        tokio::spawn(admit_loop(pool.clone(), jobs));
        Ok(PgStore {
            pool,
            options: Box::new(options),
            admissions,
            location,
        })
    }

    /// Where the store is (the URL without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The database answers.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- tokens -------------------------------------------------------

    /// See [`super::Store::create_token`].
    pub async fn create_token(
        &self,
        tenant: &str,
        role: Role,
        hash: &str,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        sqlx::query(
            "INSERT INTO tokens (id, tenant, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// See [`super::Store::list_tokens`].
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant, role, created_at, revoked_at FROM tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TokenInfo {
                id: r.get("id"),
                tenant: r.get("tenant"),
                role: Role::parse(r.get::<&str, _>("role")),
                created_at: r.get("created_at"),
                revoked_at: r.get("revoked_at"),
            })
            .collect())
    }

    /// See [`super::Store::revoke_token`].
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        if has_nul(id) {
            return Ok(false);
        }
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// See [`super::Store::authenticate`].
    pub async fn authenticate(&self, hash: &str) -> Result<Option<Caller>, StoreError> {
        let row =
            sqlx::query("SELECT tenant, role FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| Caller {
            tenant: r.get("tenant"),
            role: Role::parse(r.get::<&str, _>("role")),
        }))
    }

    // ---- runs ---------------------------------------------------------

    /// See [`super::Store::admit`]: group-committed as on SQLite, under
    /// an advisory lock so the limits are exact across API nodes.
    pub async fn admit(
        &self,
        run: &NewRun,
        limits: Admission,
        finished: Option<(RunStatus, &serde_json::Value)>,
    ) -> Result<Admitted, StoreError> {
        submit_admission(&self.admissions, run, limits, finished).await
    }

    /// See [`super::Store::get_run`].
    pub async fn get_run(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<Option<RunRow>, StoreError> {
        if has_nul(id) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM runs WHERE id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR tenant = $2)"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(run_row))
    }

    /// See [`super::Store::list_runs`].
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        if filter.labels.iter().any(|(k, v)| has_nul(k) || has_nul(v)) {
            return Ok(Vec::new());
        }
        let mut sql = format!(
            "SELECT {ROW_COLUMNS} FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR tenant = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR seq < $3)"
        );
        for i in 0..filter.labels.len() {
            let (k, v) = (4 + 2 * i, 5 + 2 * i);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.id AND l.key = ${k} AND l.value = ${v})"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY seq DESC LIMIT ${}",
            4 + 2 * filter.labels.len()
        ));
        let mut query = sqlx::query(&sql)
            .bind(&filter.tenant)
            .bind(filter.status.map(RunStatus::as_str))
            .bind(filter.before);
        for (k, v) in &filter.labels {
            query = query.bind(k).bind(v);
        }
        let rows = query.bind(filter.limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(run_row).collect())
    }

    /// See [`super::Store::claim_next`].
    pub async fn claim_next(
        &self,
        node: &str,
        tenant_max_running: i64,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        // A tenant found below its limit may reach it through another
        // node's claim before its counts row is locked here: then look
        // again (the next look sees that claim).
        for _ in 0..8 {
            let mut tx = self.pool.begin().await?;
            let next = sqlx::query(CLAIM_NEXT)
                .bind(tenant_max_running)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(next) = next else {
                tx.commit().await?;
                return Ok(None);
            };
            let id: String = next.get("id");
            let tenant: String = next.get("tenant");
            let running: i64 =
                sqlx::query_scalar("SELECT running FROM queue_counts WHERE tenant = $1 FOR UPDATE")
                    .bind(&tenant)
                    .fetch_one(&mut *tx)
                    .await?;
            if running >= tenant_max_running {
                tx.rollback().await?;
                continue;
            }
            let row = sqlx::query(&format!(
                "UPDATE runs SET status = 'running', started_at = $1, node = $2, \
                 lease_until = sbx_now_ms() + $3, attempts = attempts + 1, cancel_requested = FALSE \
                 WHERE id = $4 AND status = 'queued' RETURNING {ROW_COLUMNS}, script, stdin"
            ))
            .bind(now_ms())
            .bind(node)
            .bind(lease.as_millis() as i64)
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(ClaimedRun {
                row: run_row(&row),
                script: row.get("script"),
                stdin: row.get("stdin"),
            }));
        }
        Ok(None)
    }

    /// See [`super::Store::finish`].
    pub async fn finish(
        &self,
        id: &str,
        claim: &Claim,
        status: RunStatus,
        outcome: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = $1, outcome = $2, finished_at = $3, lease_until = NULL \
             WHERE id = $4 AND status = 'running' AND node = $5 AND attempts = $6",
        )
        .bind(status.as_str())
        .bind(outcome.to_string())
        .bind(now_ms())
        .bind(id)
        .bind(&claim.node)
        .bind(claim.attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// See [`super::Store::give_up`].
    pub async fn give_up(
        &self,
        id: &str,
        claim: &Claim,
        message: &str,
    ) -> Result<Option<RunStatus>, StoreError> {
        let outcome = serde_json::json!({ "message": message }).to_string();
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE runs SET \
                 status = CASE WHEN retry_on_lost AND attempts < 2 THEN 'queued' ELSE 'lost' END, \
                 finished_at = CASE WHEN retry_on_lost AND attempts < 2 THEN NULL ELSE $1 END, \
                 outcome = CASE WHEN retry_on_lost AND attempts < 2 THEN NULL ELSE $2 END, \
                 started_at = CASE WHEN retry_on_lost AND attempts < 2 THEN NULL ELSE started_at END, \
                 node = CASE WHEN retry_on_lost AND attempts < 2 THEN NULL ELSE node END, \
                 lease_until = NULL, cancel_requested = FALSE \
             WHERE id = $3 AND status = 'running' AND node = $4 AND attempts = $5 \
             RETURNING status",
        )
        .bind(now_ms())
        .bind(outcome)
        .bind(id)
        .bind(&claim.node)
        .bind(claim.attempt)
        .fetch_optional(&self.pool)
        .await?;
        Ok(status.as_deref().map(RunStatus::parse))
    }

    /// See [`super::Store::cancel`]. A running run is flagged; the trigger
    /// tells the node running it.
    pub async fn cancel(&self, id: &str, tenant: Option<&str>) -> Result<CancelState, StoreError> {
        if has_nul(id) {
            return Ok(CancelState::Missing);
        }
        let mut tx = self.pool.begin().await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM runs WHERE id = $1 AND (CAST($2 AS TEXT) IS NULL OR tenant = $2) \
             FOR UPDATE",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let state = match status.as_deref().map(RunStatus::parse) {
            None => CancelState::Missing,
            Some(RunStatus::Queued) => {
                let outcome = serde_json::json!({ "message": "cancelled before it started" });
                sqlx::query(
                    "UPDATE runs SET status = 'cancelled', finished_at = $1, outcome = $2 \
                     WHERE id = $3 AND status = 'queued'",
                )
                .bind(now_ms())
                .bind(outcome.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                CancelState::WasQueued
            }
            Some(RunStatus::Running) => {
                sqlx::query("UPDATE runs SET cancel_requested = TRUE WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                CancelState::Running
            }
            Some(_) => CancelState::AlreadyFinished,
        };
        tx.commit().await?;
        Ok(state)
    }

    /// See [`super::Store::renew_leases`].
    pub async fn renew_leases(
        &self,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let rows = sqlx::query(
            "UPDATE runs SET lease_until = sbx_now_ms() + $2 \
             WHERE node = $1 AND status = 'running' RETURNING id, cancel_requested",
        )
        .bind(node)
        .bind(lease.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("id"), r.get("cancel_requested")))
            .collect())
    }

    /// See [`super::Store::expire_leases`].
    pub async fn expire_leases(&self, message: &str) -> Result<Vec<RunRow>, StoreError> {
        let outcome = serde_json::json!({ "message": message }).to_string();
        let rows = sqlx::query(&format!(
            "WITH expired AS (SELECT id FROM runs WHERE status = 'running' \
                 AND lease_until < sbx_now_ms() ORDER BY id FOR UPDATE SKIP LOCKED), \
             decided AS (SELECT r.id, (r.retry_on_lost AND r.attempts < 2) AS again \
                 FROM runs r JOIN expired e ON e.id = r.id) \
             UPDATE runs SET \
                 status = CASE WHEN d.again THEN 'queued' ELSE 'lost' END, \
                 finished_at = CASE WHEN d.again THEN NULL ELSE $1 END, \
                 outcome = CASE WHEN d.again THEN NULL ELSE $2 END, \
                 started_at = CASE WHEN d.again THEN NULL ELSE runs.started_at END, \
                 node = CASE WHEN d.again THEN NULL ELSE runs.node END, \
                 lease_until = NULL, cancel_requested = FALSE \
             FROM decided d WHERE runs.id = d.id \
             RETURNING {}",
            ROW_COLUMNS
                .split(", ")
                .map(|c| format!("runs.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(now_ms())
        .bind(outcome)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    /// See [`super::Store::append_output`]: stored only while `claim`
    /// holds the run (a worker that lost it stores nothing more).
    pub async fn append_output(
        &self,
        run_id: &str,
        claim: &Claim,
        chunks: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        let streams: Vec<&str> = chunks.iter().map(|(s, _)| s.as_str()).collect();
        let data: Vec<&[u8]> = chunks.iter().map(|(_, d)| d.as_slice()).collect();
        let done = sqlx::query(
            "INSERT INTO run_output (run_id, seq, stream, data) \
             SELECT $1, (SELECT COALESCE(MAX(seq), 0) FROM run_output WHERE run_id = $1) + t.ord, \
                    t.s, t.d \
             FROM UNNEST($2::text[], $3::bytea[]) WITH ORDINALITY AS t(s, d, ord) \
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status = 'running' \
                           AND node = $4 AND attempts = $5)",
        )
        .bind(run_id)
        .bind(&streams)
        .bind(&data)
        .bind(&claim.node)
        .bind(claim.attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0 || chunks.is_empty())
    }

    /// See [`super::Store::output`].
    pub async fn output(&self, run_id: &str, after: i64) -> Result<Vec<OutputChunk>, StoreError> {
        if has_nul(run_id) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT seq, stream, data FROM run_output WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(run_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutputChunk {
                seq: r.get("seq"),
                stream: r.get("stream"),
                data: r.get("data"),
            })
            .collect())
    }

    /// See [`super::Store::queued`].
    pub async fn queued(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(SUM(queued), 0)::BIGINT FROM queue_counts")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// See [`super::Store::count_by_status`].
    pub async fn count_by_status(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n")))
            .collect())
    }

    /// See [`super::Store::delete_finished_before`].
    pub async fn delete_finished_before(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let old = "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1";
        for table in ["run_output", "run_labels", "run_events"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE run_id IN ({old})"))
                .bind(before)
                .execute(&mut *tx)
                .await?;
        }
        let done =
            sqlx::query("DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// A listener on the store's notification channels.
    pub async fn notifications(&self) -> Result<Notifications, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*self.options).clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all(CHANNELS).await?;
        Ok(Notifications(listener))
    }

    // ---- callbacks ----------------------------------------------------

    /// The tenant's callback signing secret, if it has one.
    pub async fn tenant_secret(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT secret FROM tenant_secrets WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The tenant's secret: the one it has, or `fresh`, recorded now, when
    /// it has none or `replace` is set. Returns the secret in force.
    pub async fn ensure_tenant_secret(
        &self,
        tenant: &str,
        fresh: &str,
        replace: bool,
    ) -> Result<String, StoreError> {
        // One statement, so two nodes making a tenant's first secret at
        // once agree on one: the loser's insert becomes a no-op update
        // that returns the winner's secret.
        let secret: String = sqlx::query_scalar(
            "INSERT INTO tenant_secrets (tenant, secret, created_at) VALUES ($1, $2, sbx_now_ms()) \
             ON CONFLICT (tenant) DO UPDATE SET \
                 secret = CASE WHEN $3 THEN EXCLUDED.secret ELSE tenant_secrets.secret END, \
                 created_at = CASE WHEN $3 THEN EXCLUDED.created_at ELSE tenant_secrets.created_at END \
             RETURNING secret",
        )
        .bind(tenant)
        .bind(fresh)
        .bind(replace)
        .fetch_one(&self.pool)
        .await?;
        Ok(secret)
    }

    /// Takes up to `limit` callbacks due at `now` for delivery, leasing
    /// each until `lease_until`; rows another node is taking are skipped.
    /// Returns their runs' ids, oldest due first.
    pub async fn take_due_callbacks(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE runs SET callback_next_at = $2 WHERE seq IN ( \
                 SELECT seq FROM runs WHERE callback_state = 'pending' AND callback_next_at <= $1 \
                 ORDER BY callback_next_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the next pending callback is due (ms), if any is.
    pub async fn next_callback_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(callback_next_at) FROM runs WHERE callback_state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records a delivery attempt of run `id`'s callback and what follows.
    pub async fn record_callback_attempt(
        &self,
        id: &str,
        attempt: &CallbackAttempt,
        next: CallbackNext,
    ) -> Result<(), StoreError> {
        let (state, next_at) = match next {
            CallbackNext::Retry(at) => ("pending", Some(at)),
            CallbackNext::Delivered => ("delivered", None),
            CallbackNext::Failed => ("failed", None),
        };
        let attempt = serde_json::to_string(&[attempt]).unwrap_or_else(|_| "[]".into());
        // Appended in the database, so the row is read and written under
        // one lock (a row deleted by retention meanwhile is left alone).
        sqlx::query(
            "UPDATE runs SET callback_attempts = \
                 (callback_attempts::jsonb || $1::jsonb)::text, \
                 callback_state = $2, callback_next_at = $3 WHERE id = $4",
        )
        .bind(attempt)
        .bind(state)
        .bind(next_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What another node told this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A run was queued, or a running slot freed: claim.
    Queue,
    /// Run `id` has new output or a new status.
    Run(String),
    /// Run `id` is to be cancelled.
    Cancel(String),
    /// The connection was lost and made again: notices may have been
    /// missed.
    Missed,
}

/// The store's notifications (`LISTEN`), reconnecting by itself.
pub struct Notifications(PgListener);

impl Notifications {
    /// The next notice; an error when the database cannot be reached (the
    /// caller waits and asks again).
    pub async fn next(&mut self) -> Result<Notice, StoreError> {
        match self.0.try_recv().await? {
            None => Ok(Notice::Missed),
            Some(n) => Ok(match n.channel() {
                "scriptbox_run" => Notice::Run(n.payload().to_string()),
                "scriptbox_cancel" => Notice::Cancel(n.payload().to_string()),
                _ => Notice::Queue,
            }),
        }
    }
}

/// Admits submissions as they come, every one waiting at that moment in
/// one transaction.
async fn admit_loop(pool: PgPool, mut jobs: tokio::sync::mpsc::Receiver<AdmitJob>) {
    while let Some(batch) = next_admissions(&mut jobs).await {
        let outcome = admit_batch(&pool, &batch).await;
        answer_admissions(batch, outcome);
    }
}

/// Admits `batch` in one transaction holding the admission lock, so the
/// queue's limits and idempotency keys are checked exactly across nodes.
async fn admit_batch(
    pool: &PgPool,
    batch: &[AdmitJob],
) -> Result<Vec<Result<Admitted, StoreError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ADMIT_LOCK)
        .execute(&mut *tx)
        .await?;
    let mut total: Option<i64> = None;
    let mut per_tenant: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let run = &job.run;
        let nul = run.labels.iter().any(|(k, v)| has_nul(k) || has_nul(v))
            || run.idempotency_key.as_deref().is_some_and(has_nul);
        if nul {
            results.push(Err(StoreError::Unavailable(
                "labels and idempotency keys cannot hold NUL characters".into(),
            )));
            continue;
        }
        if let Some(key) = &run.idempotency_key {
            let existing = sqlx::query(&format!(
                "SELECT {ROW_COLUMNS}, request_digest FROM runs WHERE tenant = $1 AND idempotency_key = $2"
            ))
            .bind(&run.tenant)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                let digest: String = row.get("request_digest");
                results.push(if digest == run.request_digest {
                    Ok(Admitted::Existing(run_row(&row)))
                } else {
                    Err(StoreError::IdempotencyConflict(key.clone()))
                });
                continue;
            }
        }
        if job.finished.is_none() {
            let queued = match total {
                Some(n) => n,
                None => {
                    sqlx::query_scalar("SELECT COALESCE(SUM(queued), 0)::BIGINT FROM queue_counts")
                        .fetch_one(&mut *tx)
                        .await?
                }
            };
            total = Some(queued);
            if queued >= job.limits.max_queue {
                results.push(Err(StoreError::QueueFull(queued)));
                continue;
            }
            let mine = match per_tenant.get(run.tenant.as_str()) {
                Some(n) => *n,
                None => sqlx::query_scalar(
                    "SELECT COALESCE(MAX(queued), 0)::BIGINT FROM queue_counts WHERE tenant = $1",
                )
                .bind(&run.tenant)
                .fetch_one(&mut *tx)
                .await?,
            };
            per_tenant.insert(&run.tenant, mine);
            if mine >= job.limits.tenant_max_queued {
                results.push(Err(StoreError::TenantQuota {
                    tenant: run.tenant.clone(),
                    queued: mine,
                    limit: job.limits.tenant_max_queued,
                }));
                continue;
            }
        }
        let now = now_ms();
        let (status, outcome, finished_at) = match &job.finished {
            Some((status, outcome)) => (*status, Some(outcome.clone()), Some(now)),
            None => (RunStatus::Queued, None, None),
        };
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (id, tenant, status, created_at, finished_at, filename, script, \
             script_sha256, stdin, args, policy, policy_digest, profile, backend, labels, \
             idempotency_key, request_digest, outcome, retry_on_lost, callback_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
             ON CONFLICT DO NOTHING RETURNING seq",
        )
        .bind(&run.id)
        .bind(&run.tenant)
        .bind(status.as_str())
        .bind(now)
        .bind(finished_at)
        .bind(&run.filename)
        .bind(&run.script)
        .bind(&run.script_sha256)
        .bind(&run.stdin)
        .bind(serde_json::to_string(&run.args).unwrap_or_default())
        .bind(&run.policy)
        .bind(&run.policy_digest)
        .bind(&run.profile)
        .bind(&run.backend)
        .bind(serde_json::to_string(&run.labels).unwrap_or_default())
        .bind(&run.idempotency_key)
        .bind(&run.request_digest)
        .bind(outcome.as_ref().map(ToString::to_string))
        .bind(run.retry_on_lost)
        .bind(&run.callback_url)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            results.push(Err(StoreError::Unavailable(format!(
                "run id {} exists already",
                run.id
            ))));
            continue;
        };
        for (key, value) in &run.labels {
            sqlx::query("INSERT INTO run_labels (run_id, key, value) VALUES ($1, $2, $3)")
                .bind(&run.id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        if job.finished.is_none() {
            total = total.map(|n| n + 1);
            *per_tenant.entry(&run.tenant).or_insert(0) += 1;
        }
        results.push(Ok(Admitted::Created(RunRow {
            seq,
            id: run.id.clone(),
            tenant: run.tenant.clone(),
            status,
            created_at: now,
            started_at: None,
            finished_at,
            filename: run.filename.clone(),
            script_sha256: run.script_sha256.clone(),
            args: run.args.clone(),
            policy: run.policy.clone(),
            policy_digest: run.policy_digest.clone(),
            profile: run.profile.clone(),
            backend: run.backend.clone(),
            labels: run.labels.clone(),
            outcome,
            node: None,
            attempts: 0,
            callback_url: run.callback_url.clone(),
            callback_state: None,
            callback_attempts: Vec::new(),
            callback_next_at: None,
        })));
    }
    tx.commit().await?;
    Ok(results)
}

fn run_row(r: &sqlx::postgres::PgRow) -> RunRow {
    let json_or = |col: &str| -> Option<serde_json::Value> {
        r.get::<Option<String>, _>(col)
            .and_then(|t| serde_json::from_str(&t).ok())
    };
    RunRow {
        seq: r.get("seq"),
        id: r.get("id"),
        tenant: r.get("tenant"),
        status: RunStatus::parse(r.get::<&str, _>("status")),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        filename: r.get("filename"),
        script_sha256: r.get("script_sha256"),
        args: json_or("args")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        policy: r.get("policy"),
        policy_digest: r.get("policy_digest"),
        profile: r.get("profile"),
        backend: r.get("backend"),
        labels: json_or("labels")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        outcome: json_or("outcome"),
        node: r.get("node"),
        attempts: r.get("attempts"),
        callback_url: r.get("callback_url"),
        callback_state: r.get("callback_state"),
        callback_attempts: r
            .get::<Option<String>, _>("callback_attempts")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        callback_next_at: r.get("callback_next_at"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact("postgres://sbx:secret@db:5432/scriptbox"),
            "postgres://sbx:***@db:5432/scriptbox"
        );
        assert_eq!(redact("postgres://db/scriptbox"), "postgres://db/scriptbox");
    }
}
