//! The queue's workers: a scheduler claims runs from the store as worker
//! slots free up — fairly between tenants (the store picks the tenant with
//! the fewest runs running, then the oldest submission) and within each
//! tenant's limit — and each claimed run executes on a blocking thread
//! through the library pipeline, its output stored as it arrives, its end
//! recorded once.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Service;
use super::logs::{ChannelObserver, write_output};
use super::model::RunStatus;
use super::store::{Claim, ClaimedRun, StoreError, now_ms};
use crate::pipeline::{Backend, RunObserver, RunRequest};
use crate::run::Stdin;
use crate::run::cancel::CancelToken;
use crate::run::outcome::{RunOutcome, Status};

/// What a record says of a run that was running when its server stopped.
pub const LOST_MESSAGE: &str = "the server stopped while this run was running; it was not re-run (scripts may have side effects)";

/// Recovers what a previous server left: runs still `running` end `lost`
/// (their local sandboxes died with that server; containers it left are
/// removed), queued runs stay queued.
pub async fn recover(service: &Service) -> Result<(), StoreError> {
    let lost = service.store().mark_lost(LOST_MESSAGE).await?;
    for row in &lost {
        tracing::warn!("run {} was running when the server stopped: lost", row.id);
        service.metrics().runs.with_label_values(&["lost"]).inc();
        audit_status(service, row, "lost", Some(LOST_MESSAGE));
    }
    if !lost.is_empty() {
        service.wake_callbacks();
    }
    // Containers whose scriptbox is gone (a killed server) are removed;
    // a machine without an engine has none.
    let _ = tokio::task::spawn_blocking(|| {
        if let Ok(engine) = crate::engine::Engine::connect() {
            crate::run::docker::reap(&engine);
        }
    })
    .await;
    Ok(())
}

/// Records in the audit log a final status the service decided itself
/// (`lost`, `cancelled` before the run started).
pub fn audit_status(
    service: &Service,
    row: &super::store::RunRow,
    status: &str,
    reason: Option<&str>,
) {
    if let Some(log) = service.audit() {
        let policy = crate::audit::PolicyRef {
            name: row.policy.clone(),
            digest: row.policy_digest.clone(),
        };
        log.record_run_status(
            Some(&policy),
            Some(&row.script_sha256),
            status,
            None,
            reason,
        );
    }
}

/// Claims and starts runs while worker slots are free, until `stop`.
pub async fn schedule(service: Service, mut stop: watch::Receiver<bool>) {
    let slots = service.0.slots.clone();
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop.borrow() {
            return;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let claimed = service
            .store()
            .claim_next(
                service.node(),
                service.config().tenant_max_running,
                service.config().lease,
            )
            .await;
        if claimed.is_ok() {
            backoff = Duration::from_millis(250);
        }
        match claimed {
            Ok(Some(run)) => {
                let service = service.clone();
                tokio::spawn(async move {
                    execute(&service, run).await;
                    drop(permit);
                    service.wake();
                });
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    _ = service.0.wake.notified() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                drop(permit);
                tracing::error!("claiming a run: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The outcome's fields for the record: everything of `scriptbox.run/1`
/// but stdout and stderr, which are the stored output.
pub fn outcome_fields(outcome: &RunOutcome) -> serde_json::Value {
    let mut value = serde_json::to_value(outcome).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("stdout");
        map.remove("stderr");
        map.remove("schema");
        map.remove("status");
    }
    value
}

/// Runs one claimed run to its end and records it.
async fn execute(service: &Service, run: ClaimedRun) {
    let id = run.row.id.clone();
    let claim = Claim::of(&run.row);
    let token = CancelToken::new();
    service
        .0
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), (token.clone(), Instant::now()));
    service.metrics().running.inc();
    let started = Instant::now();

    let outcome = match request_for(service, &run) {
        Err(message) => RunOutcome::without_execution(Status::Error, &run.row.backend, message),
        Ok(request) => {
            let (sender, receiver) = mpsc::unbounded_channel();
            let writer = tokio::spawn(write_output(
                service.store().clone(),
                service.bus().clone(),
                id.clone(),
                claim.clone(),
                receiver,
            ));
            let blocking_token = token.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let observer = ChannelObserver(sender);
                run_checked_again(&request, &blocking_token, &observer)
            })
            .await
            .unwrap_or_else(|e| {
                RunOutcome::without_execution(
                    Status::Error,
                    &run.row.backend,
                    format!("internal error while running (a scriptbox bug): {e}"),
                )
            });
            // Every chunk is stored before the run is recorded as ended.
            let _ = writer.await;
            outcome
        }
    };
    let mut status = RunStatus::from(outcome.status);
    let mut fields = outcome_fields(&outcome);
    let recorded = record_end(service, &id, &claim, &mut status, &mut fields).await;
    if recorded {
        let m = service.metrics();
        m.runs.with_label_values(&[status.as_str()]).inc();
        m.run_seconds
            .with_label_values(&[&run.row.backend])
            .observe(outcome.durations.run);
        m.build_seconds
            .with_label_values(&[&run.row.backend])
            .observe(outcome.durations.build);
    }
    tracing::info!(
        "run {id} ({}) ended {} in {:.2} s",
        run.row.tenant,
        status.as_str(),
        started.elapsed().as_secs_f64()
    );
    service
        .0
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    service.metrics().running.dec();
    service.bus().changed(&id);
    service.wake_callbacks();
}

/// Records the end of run `id` under `claim`, retrying while the store is
/// unreachable (with backoff, for up to ten minutes: a database restart
/// loses nothing). A run this node stopped because it no longer held it is
/// given up instead (`lost`, or queued again once). True when this call
/// recorded the end; false when the claim no longer held the run (another
/// node ended it: a run ends once).
async fn record_end(
    service: &Service,
    id: &str,
    claim: &Claim,
    status: &mut RunStatus,
    fields: &mut serde_json::Value,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut backoff = Duration::from_millis(100);
    let mut fenced = false;
    loop {
        fenced |= service.take_fenced(id);
        let result = if fenced {
            let message = super::cluster::FENCED_MESSAGE;
            match service.store().give_up(id, claim, message).await {
                Ok(now) => {
                    *fields = serde_json::json!({ "message": message });
                    *status = now.unwrap_or(RunStatus::Lost);
                    // Queued again: it has not ended.
                    Ok(now == Some(RunStatus::Lost))
                }
                Err(e) => Err(e),
            }
        } else {
            service.store().finish(id, claim, *status, fields).await
        };
        match result {
            Ok(done) => return done,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!("recording the end of run {id}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!("the end of run {id} was not recorded: {e}");
                return false;
            }
        }
    }
}

/// Runs a request whose decisions were recorded when it was submitted:
/// validated again (the same bytes, under the policy in force now) without
/// recording the decisions twice, then built and run with its audit log.
fn run_checked_again(
    request: &RunRequest,
    cancel: &CancelToken,
    observer: &ChannelObserver,
) -> RunOutcome {
    observer.stage(crate::pipeline::Stage::Validate);
    let quiet = RunRequest {
        audit: None,
        ..request.clone()
    };
    match crate::pipeline::check(&quiet) {
        Ok(checked) => crate::pipeline::execute(request, &checked, cancel, observer),
        Err(outcome) => {
            if let Some(log) = &request.audit {
                let policy = crate::audit::PolicyRef::from(request.policy.as_ref());
                let digest = crate::pipeline::script_sha256(&request.script);
                log.record_run(Some(&policy), Some(&digest), &outcome);
            }
            *outcome
        }
    }
}

/// The pipeline request for a claimed run, or why it cannot run.
fn request_for(service: &Service, run: &ClaimedRun) -> Result<RunRequest, String> {
    let row = &run.row;
    let policy = service
        .policies()
        .get(&row.policy)
        .map_err(|e| e.to_string())?;
    let backend = match row.backend.as_str() {
        "docker" => Backend::Docker,
        _ => Backend::Local,
    };
    Ok(RunRequest {
        script: run.script.clone(),
        script_path: row.filename.clone().into(),
        policy,
        profile: row.profile.clone(),
        backend,
        unsandboxed: false,
        args: row.args.clone(),
        stdin: run.stdin.clone().map_or(Stdin::Empty, Stdin::Bytes),
        cache_dir: service.config().cache_dir.clone(),
        python: service.config().python.clone(),
        base_image: None,
        audit: service.audit().cloned(),
    })
}

/// Once `stop` is set: waits for running runs to finish within the grace
/// period, then cancels the rest and waits for them to be recorded.
pub async fn drain(service: Service, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
    let deadline = Instant::now() + service.config().grace;
    while service.running_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<String> = service
        .0
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    if !left.is_empty() {
        tracing::warn!(
            "grace period over: cancelling {} running run(s)",
            left.len()
        );
    }
    for id in &left {
        service.cancel_local(id);
    }
    while service.running_count() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes, every minute (or half the retention period, if shorter), records and output of runs that ended longer
/// ago than the retention period (when one is set).
pub async fn retain(service: Service, mut stop: watch::Receiver<bool>) {
    let Some(retain) = service.config().retain else {
        return;
    };
    let every = (retain / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let before = now_ms() - retain.as_millis() as i64;
        match service.store().delete_finished_before(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("retention: deleted {n} run(s) older than {retain:?}"),
            Err(e) => tracing::warn!("retention: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.changed() => return,
        }
    }
}
