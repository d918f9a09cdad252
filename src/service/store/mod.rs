//! The service's durable store: tokens, run records (the queue is the runs
//! whose status is `queued`), and each run's output, behind one type so the
//! database can change without the rest of the service noticing.
//!
//! SQLite (one machine) is the store today: WAL journal, a busy timeout,
//! and every write transaction `BEGIN IMMEDIATE`, so a read-then-write
//! never fails on a stale snapshot. Schema changes are versioned
//! migrations (`migrations/<db>/NNNN_*.sql`), applied at open and recorded
//! in the database. Queries use `$N` parameters and portable SQL so that a
//! PostgreSQL store can share them.
//!
//! The invariants the service relies on are enforced here, in single
//! statements or transactions: a run is claimed by one worker only
//! (`queued` → `running` where it is still `queued`), and ends once
//! (`running` → final where it is still `running`).

mod dispatch;
mod migrate;
pub mod postgres;

pub use dispatch::{Claim, Store, is_postgres_url};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::model::{CallbackAttempt, RunStatus};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed (the API answers 503).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database file could not be opened or migrated.
    #[error("cannot open the store at {location}: {reason}")]
    Open {
        /// The path or URL.
        location: String,
        /// What went wrong.
        reason: String,
    },
    /// Too many runs are queued on this service.
    #[error("the queue is full ({0} runs queued); try again later")]
    QueueFull(i64),
    /// The tenant has too many runs queued or running.
    #[error("tenant '{tenant}' has {queued} runs queued (the limit is {limit}); try again later")]
    TenantQuota {
        /// The tenant.
        tenant: String,
        /// Its queued runs.
        queued: i64,
        /// The limit.
        limit: i64,
    },
    /// The idempotency key was used before with another request.
    #[error("idempotency key '{0}' was already used with a different request")]
    IdempotencyConflict(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }
}

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submit, read and cancel the tenant's own runs.
    Submit,
    /// Everything: every tenant's runs, policies, stats.
    Admin,
}

impl Role {
    /// `submit` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Submit
        }
    }
}

/// Who is calling: the tenant and role of a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's tenant.
    pub tenant: String,
    /// The token's role.
    pub role: Role,
}

/// A token as listed (never the token itself: only its hash is stored).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    /// Its public id (for `token revoke`).
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its role.
    pub role: Role,
    /// When it was made (ms since the epoch).
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub id: String,
    /// Whose it is.
    pub tenant: String,
    /// The script's file name.
    pub filename: String,
    /// The script.
    pub script: Vec<u8>,
    /// sha256 of the script.
    pub script_sha256: String,
    /// Its stdin, if any.
    pub stdin: Option<Vec<u8>>,
    /// Its arguments.
    pub args: Vec<String>,
    /// The policy's name.
    pub policy: String,
    /// The policy's digest when it was submitted.
    pub policy_digest: String,
    /// The profile.
    pub profile: String,
    /// `local` or `docker`.
    pub backend: String,
    /// The caller's labels.
    pub labels: BTreeMap<String, String>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// sha256 of the request, to tell a retry from a different request
    /// under the same key.
    pub request_digest: String,
    /// Re-queue once if the run is lost (cluster).
    pub retry_on_lost: bool,
    /// Where to POST the final record.
    pub callback_url: Option<String>,
}

/// The queue's limits, checked atomically with each admission.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Runs queued on the whole service.
    pub max_queue: i64,
    /// Runs queued per tenant.
    pub tenant_max_queued: i64,
}

/// A stored run, without its script and stdin.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Submission order (cursor for listings).
    pub seq: i64,
    /// Its id.
    pub id: String,
    /// Whose it is.
    pub tenant: String,
    /// Its status.
    pub status: RunStatus,
    /// When it was submitted (ms).
    pub created_at: i64,
    /// When it started (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// The script's file name.
    pub filename: String,
    /// sha256 of the script.
    pub script_sha256: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The policy's name.
    pub policy: String,
    /// The policy's digest.
    pub policy_digest: String,
    /// The profile.
    pub profile: String,
    /// The backend.
    pub backend: String,
    /// The caller's labels.
    pub labels: BTreeMap<String, String>,
    /// The outcome fields of `scriptbox.run/1` (without stdout and
    /// stderr, which are the stored output), once it ended.
    pub outcome: Option<serde_json::Value>,
    /// The node running or that ran it.
    pub node: Option<String>,
    /// How many times it was started.
    pub attempts: i64,
    /// Where to POST the final record.
    pub callback_url: Option<String>,
    /// `pending`, `delivered` or `failed` once the run ended (with a
    /// callback); `None` before.
    pub callback_state: Option<String>,
    /// Every delivery attempt made, oldest first.
    pub callback_attempts: Vec<CallbackAttempt>,
    /// When the next delivery attempt is due (ms).
    pub callback_next_at: Option<i64>,
}

/// A run claimed by a worker: the row and what it needs to run.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The record.
    pub row: RunRow,
    /// The script.
    pub script: Vec<u8>,
    /// Its stdin.
    pub stdin: Option<Vec<u8>>,
}

/// How a submission was recorded.
#[derive(Debug, Clone)]
pub enum Admitted {
    /// A new run.
    Created(RunRow),
    /// The same request was made before under this idempotency key.
    Existing(RunRow),
}

/// One stored chunk of a run's output.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    /// Its position in the run's output (1, 2, ...): the SSE event id.
    pub seq: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this tenant's runs (`None`: every tenant's, for admins).
    pub tenant: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs carrying every one of these labels.
    pub labels: Vec<(String, String)>,
    /// Only runs older (smaller `seq`) than this cursor.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// What follows a callback delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackNext {
    /// Try again at this time (ms).
    Retry(i64),
    /// The receiver took it.
    Delivered,
    /// No more attempts.
    Failed,
}

/// The result of asking to cancel a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelState {
    /// It was queued and is now `cancelled`; it never starts.
    WasQueued,
    /// It is running; its worker was asked to stop it.
    Running,
    /// It had already ended.
    AlreadyFinished,
    /// No such run (for this tenant).
    Missing,
}

/// The next run to start, fairly: only tenants below the running limit
/// ($1); first the tenant with the fewest runs running, then the one
/// served longest ago (so a tenant with a thousand queued runs takes turns
/// with one that has a single run, even with one worker), then the oldest
/// submission.
const CLAIM_NEXT: &str = "\
    WITH waiting AS (SELECT tenant FROM queue_counts WHERE queued > 0), \
         busy AS (SELECT tenant, COUNT(*) AS n FROM runs WHERE status = 'running' GROUP BY tenant), \
         served AS (SELECT w.tenant, \
                    (SELECT MAX(x.started_at) FROM runs x WHERE x.tenant = w.tenant) AS last \
                    FROM waiting w) \
    SELECT r.id FROM runs r \
    LEFT JOIN busy b ON b.tenant = r.tenant \
    LEFT JOIN served s ON s.tenant = r.tenant \
    WHERE r.status = 'queued' AND COALESCE(b.n, 0) < $1 \
    ORDER BY COALESCE(b.n, 0), COALESCE(s.last, 0), r.seq \
    LIMIT 1";

/// Columns of `runs` read into a [`RunRow`].
const ROW_COLUMNS: &str = "seq, id, tenant, status, created_at, started_at, finished_at, filename, \
     script_sha256, args, policy, policy_digest, profile, backend, labels, outcome, node, attempts, \
     callback_url, callback_state, callback_attempts, callback_next_at";

/// One submission waiting to be admitted.
struct AdmitJob {
    run: NewRun,
    limits: Admission,
    finished: Option<(RunStatus, serde_json::Value)>,
    reply: tokio::sync::oneshot::Sender<Result<Admitted, StoreError>>,
}

/// Most submissions admitted in one transaction.
const ADMIT_BATCH: usize = 256;

/// Admits submissions as they come, every one waiting at that moment in
/// one transaction, until the store is dropped.
async fn admit_loop(writer: SqlitePool, mut jobs: tokio::sync::mpsc::Receiver<AdmitJob>) {
    while let Some(batch) = next_admissions(&mut jobs).await {
        let outcome = admit_batch(&writer, &batch).await;
        answer_admissions(batch, outcome);
    }
}

/// The submissions waiting now (at least one, at most [`ADMIT_BATCH`]);
/// None once the store is dropped. Both stores' group commit takes its
/// batches here.
async fn next_admissions(
    jobs: &mut tokio::sync::mpsc::Receiver<AdmitJob>,
) -> Option<Vec<AdmitJob>> {
    let mut batch = vec![jobs.recv().await?];
    while batch.len() < ADMIT_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Answers each job of `batch`: its own result, or the transaction's
/// failure for every one.
fn answer_admissions(
    batch: Vec<AdmitJob>,
    outcome: Result<Vec<Result<Admitted, StoreError>>, sqlx::Error>,
) {
    match outcome {
        Ok(results) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }
}

/// Hands a submission to a store's admission loop and waits for its
/// answer.
async fn submit_admission(
    admissions: &tokio::sync::mpsc::Sender<AdmitJob>,
    run: &NewRun,
    limits: Admission,
    finished: Option<(RunStatus, &serde_json::Value)>,
) -> Result<Admitted, StoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = AdmitJob {
        run: run.clone(),
        limits,
        finished: finished.map(|(s, o)| (s, o.clone())),
        reply,
    };
    admissions
        .send(job)
        .await
        .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
    answer
        .await
        .map_err(|_| StoreError::Unavailable("the store is closing".into()))?
}

/// Admits `batch` in one transaction: each job's own refusal (quota,
/// idempotency conflict) is its answer; a failure of the transaction is
/// every job's.
async fn admit_batch(
    writer: &SqlitePool,
    batch: &[AdmitJob],
) -> Result<Vec<Result<Admitted, StoreError>>, sqlx::Error> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut total: Option<i64> = None;
    let mut per_tenant: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let run = &job.run;
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
                    sqlx::query_scalar("SELECT COALESCE(SUM(queued), 0) FROM queue_counts")
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
                None => {
                    sqlx::query_scalar(
                        "SELECT COALESCE(MAX(queued), 0) FROM queue_counts WHERE tenant = $1",
                    )
                    .bind(&run.tenant)
                    .fetch_one(&mut *tx)
                    .await?
                }
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
        let done = sqlx::query(
            "INSERT INTO runs (id, tenant, status, created_at, finished_at, filename, script, \
             script_sha256, stdin, args, policy, policy_digest, profile, backend, labels, \
             idempotency_key, request_digest, outcome, retry_on_lost, callback_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
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
        .execute(&mut *tx)
        .await;
        let done = match done {
            Ok(d) => d,
            // This submission's own fault (say a duplicate id); the others
            // in the transaction go on.
            Err(sqlx::Error::Database(e)) => {
                results.push(Err(StoreError::Unavailable(e.to_string())));
                continue;
            }
            Err(e) => return Err(e),
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
            seq: done.last_insert_rowid(),
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

/// The SQLite store: one machine, one server.
///
/// Writes go through a pool of one connection: SQLite has one writer at a
/// time, and waiting for our own writer in line is immediate and fair,
/// where contending connections would back off in SQLite's busy handler
/// (sleeping milliseconds at a time). Reads use their own pool, which WAL
/// lets run beside the writer.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    admissions: tokio::sync::mpsc::Sender<AdmitJob>,
    location: String,
}

impl SqliteStore {
    /// Opens (creating if needed) the SQLite store at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let location = path.display().to_string();
        let open_error = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Durable against a killed process (WAL); an fsync per commit
            // only guards against power loss, at a large cost per chunk.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(e.to_string()))?;
        migrate::sqlite(&writer)
            .await
            .map_err(|e| open_error(format!("migrating the schema: {e}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        let (admissions, jobs) = tokio::sync::mpsc::channel(4 * ADMIT_BATCH);
        tokio::spawn(admit_loop(writer.clone(), jobs));
        Ok(SqliteStore {
            pool,
            writer,
            admissions,
            location,
        })
    }

    /// Claims the store for one server: an SQLite store is one machine's,
    /// and a second server on it would take the first's running runs for
    /// lost. The claim is an exclusive lock on `<store>.serve.lock`, held
    /// until the returned file is dropped (or the process dies).
    pub fn claim_for_serving(&self) -> Result<std::fs::File, StoreError> {
        let path = format!("{}.serve.lock", self.location);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Open {
                location: path.clone(),
                reason: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(_) => Err(StoreError::Open {
                location: self.location.clone(),
                reason: "another `scriptbox serve` is using this store (one server per SQLite store; use PostgreSQL for several)".into(),
            }),
        }
    }

    /// Where the store is (a path or URL), for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// `PRAGMA integrity_check`: `Ok` when the database is sound.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "integrity check failed: {result}"
            )))
        }
    }

    // ---- tokens -------------------------------------------------------

    /// Records a token for `tenant` with `role`, given the sha256 of the
    /// token; returns its public id.
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
        .execute(&self.writer)
        .await?;
        Ok(id)
    }

    /// Every token, oldest first.
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

    /// Revokes the token with public id `id`; false when there is none (or
    /// it was revoked already).
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The caller holding the token whose sha256 is `hash`, unless unknown
    /// or revoked.
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

    /// Records a submission: a new `queued` run, or, with `finished`, a
    /// run that already ended (rejected at submission) with its outcome.
    /// The queue's limits and the idempotency key are checked in the same
    /// write transaction. Concurrent submissions are committed together
    /// (group commit): one transaction admits every submission waiting,
    /// so the queue takes thousands a second on one SQLite file.
    pub async fn admit(
        &self,
        run: &NewRun,
        limits: Admission,
        finished: Option<(RunStatus, &serde_json::Value)>,
    ) -> Result<Admitted, StoreError> {
        submit_admission(&self.admissions, run, limits, finished).await
    }

    /// The run `id`, if it exists (and, given a tenant, is that tenant's).
    pub async fn get_run(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM runs WHERE id = $1 AND ($2 IS NULL OR tenant = $2)"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(run_row))
    }

    /// Runs matching `filter`, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        let mut sql = format!(
            "SELECT {ROW_COLUMNS} FROM runs WHERE ($1 IS NULL OR tenant = $1) \
             AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR seq < $3)"
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

    /// Claims the next run for `node`, fairly ([`CLAIM_NEXT`]). The run
    /// becomes `running`, started now, leased to `node` until `lease`.
    pub async fn claim_next(
        &self,
        node: &str,
        tenant_max_running: i64,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let next: Option<String> = sqlx::query_scalar(CLAIM_NEXT)
            .bind(tenant_max_running)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = next else {
            return Ok(None);
        };
        let now = now_ms();
        sqlx::query(
            "UPDATE runs SET status = 'running', started_at = $1, node = $2, lease_until = $3, \
             attempts = attempts + 1 WHERE id = $4 AND status = 'queued'",
        )
        .bind(now)
        .bind(node)
        .bind(now + lease.as_millis() as i64)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS}, script, stdin FROM runs WHERE id = $1"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ClaimedRun {
            row: run_row(&row),
            script: row.get("script"),
            stdin: row.get("stdin"),
        }))
    }

    /// Ends a running run with `status` and its outcome; false when it was
    /// not running (it ended already: a run ends once).
    pub async fn finish(
        &self,
        id: &str,
        status: RunStatus,
        outcome: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = $1, outcome = $2, finished_at = $3, lease_until = NULL \
             WHERE id = $4 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(outcome.to_string())
        .bind(now_ms())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks to cancel run `id` (of `tenant`, unless `None`): a queued run is
    /// `cancelled` at once; a running one is flagged for its worker.
    pub async fn cancel(&self, id: &str, tenant: Option<&str>) -> Result<CancelState, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM runs WHERE id = $1 AND ($2 IS NULL OR tenant = $2)",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let state = match status.as_deref().map(RunStatus::parse) {
            None => CancelState::Missing,
            Some(RunStatus::Queued) => {
                let outcome = serde_json::json!({
                    "message": "cancelled before it started",
                });
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
                sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = $1")
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

    /// Ends as `lost` every run left `running` by a server that stopped
    /// without finishing them (this machine's store: they were ours), but
    /// queues again, once, those whose submitter set `retry_on_lost`.
    /// Returns the lost ones as they are now.
    pub async fn mark_lost(&self, message: &str) -> Result<Vec<RunRow>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // Those whose submitter asked for it are queued once more instead.
        sqlx::query(
            "UPDATE runs SET status = 'queued', started_at = NULL, node = NULL, lease_until = NULL \
             WHERE status = 'running' AND retry_on_lost = 1 AND attempts < 2",
        )
        .execute(&mut *tx)
        .await?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE status = 'running' ORDER BY seq")
                .fetch_all(&mut *tx)
                .await?;
        let outcome = serde_json::json!({ "message": message });
        sqlx::query(
            "UPDATE runs SET status = 'lost', finished_at = $1, outcome = $2, lease_until = NULL \
             WHERE status = 'running'",
        )
        .bind(now_ms())
        .bind(outcome.to_string())
        .execute(&mut *tx)
        .await?;
        let mut rows = Vec::new();
        for id in &ids {
            let row = sqlx::query(&format!("SELECT {ROW_COLUMNS} FROM runs WHERE id = $1"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            rows.push(run_row(&row));
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Appends chunks to a run's stored output, numbered after what is
    /// there; returns the last chunk's number.
    pub async fn append_output(
        &self,
        run_id: &str,
        chunks: &[(String, Vec<u8>)],
    ) -> Result<i64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut seq: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM run_output WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        for (stream, data) in chunks {
            seq += 1;
            sqlx::query(
                "INSERT INTO run_output (run_id, seq, stream, data) VALUES ($1, $2, $3, $4)",
            )
            .bind(run_id)
            .bind(seq)
            .bind(stream)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(seq)
    }

    /// A run's stored output chunks numbered above `after`, in order.
    pub async fn output(&self, run_id: &str, after: i64) -> Result<Vec<OutputChunk>, StoreError> {
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

    /// How many runs are queued, from the counts the triggers keep.
    pub async fn queued(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(SUM(queued), 0) FROM queue_counts")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// How many runs have each status.
    pub async fn count_by_status(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n")))
            .collect())
    }

    /// Deletes runs that ended before `before` (ms), with their labels and
    /// output; returns how many.
    pub async fn delete_finished_before(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let old = "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1";
        sqlx::query(&format!("DELETE FROM run_output WHERE run_id IN ({old})"))
            .bind(before)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DELETE FROM run_labels WHERE run_id IN ({old})"))
            .bind(before)
            .execute(&mut *tx)
            .await?;
        let done =
            sqlx::query("DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT secret FROM tenant_secrets WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
        let secret = match existing {
            Some(s) if !replace => s,
            _ => {
                sqlx::query(
                    "INSERT INTO tenant_secrets (tenant, secret, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant) DO UPDATE SET secret = $2, created_at = $3",
                )
                .bind(tenant)
                .bind(fresh)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                fresh.to_string()
            }
        };
        tx.commit().await?;
        Ok(secret)
    }

    /// Takes up to `limit` callbacks due at `now` for delivery: each is
    /// leased until `lease_until` (if the server dies delivering it, it is
    /// due again then). Returns their runs' ids, oldest due first.
    pub async fn take_due_callbacks(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE callback_state = 'pending' AND callback_next_at <= $1 \
             ORDER BY callback_next_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            sqlx::query("UPDATE runs SET callback_next_at = $1 WHERE id = $2")
                .bind(lease_until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// When the next pending callback is due (ms), if any is.
    pub async fn next_callback_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(callback_next_at) FROM runs WHERE callback_state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records a delivery attempt of run `id`'s callback and what follows:
    /// `next_at` for a retry, or the final state (`delivered`, `failed`).
    pub async fn record_callback_attempt(
        &self,
        id: &str,
        attempt: &CallbackAttempt,
        next: CallbackNext,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let text: Option<String> =
            sqlx::query_scalar("SELECT callback_attempts FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(text) = text else {
            // Deleted (retention) while being delivered.
            return Ok(());
        };
        let mut attempts: Vec<CallbackAttempt> = serde_json::from_str(&text).unwrap_or_default();
        attempts.push(attempt.clone());
        let (state, next_at) = match next {
            CallbackNext::Retry(at) => ("pending", Some(at)),
            CallbackNext::Delivered => ("delivered", None),
            CallbackNext::Failed => ("failed", None),
        };
        sqlx::query(
            "UPDATE runs SET callback_attempts = $1, callback_state = $2, callback_next_at = $3 \
             WHERE id = $4",
        )
        .bind(serde_json::to_string(&attempts).unwrap_or_else(|_| "[]".into()))
        .bind(state)
        .bind(next_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes the pools (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

fn run_row(r: &sqlx::sqlite::SqliteRow) -> RunRow {
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
        callback_attempts: json_or("callback_attempts")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        callback_next_at: r.get("callback_next_at"),
    }
}
