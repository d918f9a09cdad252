//! The HTTP API (v1): routes, handlers and the OpenAPI document generated
//! from them (`/openapi.json`). Handlers only check input, call the store
//! and the pipeline, and shape answers; every error is an [`ApiError`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use utoipa::OpenApi;

use super::Service;
use super::error::{ApiError, ApiJson};
use super::model::{
    BackendName, CallbackAttempt, CallbackInfo, CallbackState, Durations, EnvRef, ErrorBody,
    Health, LogEvent, PolicyInfo, PolicyList, PolicyRef, RunPage, RunRecord, RunStatus, SubmitRun,
    ValidateScript,
};
use super::queue::outcome_fields;
use super::store::{Admission, Admitted, Caller, CancelState, NewRun, RunFilter, RunRow};
use super::{MAX_SCRIPT_BYTES, MAX_STDIN_BYTES};
use crate::pipeline::{Backend, RunRequest};
use crate::run::Stdin;

/// Longest `?wait=` accepted, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;
/// Most runs per page.
const MAX_PAGE: i64 = 500;
/// Bounds on what a submission may carry besides the script.
const MAX_ARGS: usize = 1000;
const MAX_ARG_BYTES: usize = 64 * 1024;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 256;
const MAX_KEY_BYTES: usize = 255;
const MAX_FILENAME: usize = 255;

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "scriptbox",
        description = "Validate, build environments for, and run user Python scripts in sandboxes.",
        license(name = "MIT")
    ),
    paths(health, validate, submit, list_runs, get_run, run_logs, cancel_run, list_policies, stats),
    components(schemas(
        SubmitRun, ValidateScript, RunRecord, RunPage, RunStatus, BackendName, PolicyRef,
        CallbackInfo, CallbackState, CallbackAttempt,
        Durations, EnvRef, ErrorBody, super::model::ErrorDetail, Health, LogEvent, PolicyInfo, PolicyList
    )),
    modifiers(&BearerAuth),
    tags((name = "runs", description = "Submit, follow and cancel runs"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The service's routes, with request limits, load shedding and metrics.
pub fn router(service: Service) -> Router {
    use axum::error_handling::HandleErrorLayer;
    use tower::ServiceBuilder;
    let max_in_flight = service.config().max_in_flight;
    let api = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/validate", post(validate))
        .route("/v1/runs", post(submit).get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/logs", get(run_logs))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/policies", get(list_policies))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    api.layer(
        ServiceBuilder::new()
            // Over the limit, a request is refused at once (429) rather
            // than queued behind thousands of others.
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                ApiError::too_many(
                    "overloaded",
                    "the server is handling too many requests; try again shortly",
                    1,
                )
            }))
            .load_shed()
            .concurrency_limit(max_in_flight),
    )
    .layer(axum::extract::DefaultBodyLimit::max(
        service.config().max_body,
    ))
    .layer(axum::middleware::from_fn_with_state(
        service.clone(),
        count_request,
    ))
    .with_state(service)
}

/// Counts every request by method, route and status, and times it.
async fn count_request(State(service): State<Service>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = service.metrics();
    m.requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method-not-allowed",
        message: "this endpoint does not take that method (see /openapi.json)".into(),
        retry_after: None,
    }
}

/// RFC 3339 (UTC, milliseconds) of a time in ms since the epoch.
pub(crate) fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// The record of a stored run, with its output when given.
pub fn record(row: &RunRow, output: Option<(String, String)>) -> RunRecord {
    let o = row.outcome.as_ref();
    let (stdout, stderr) = match output {
        Some((out, err)) => (Some(out), Some(err)),
        None => (None, None),
    };
    RunRecord {
        schema: "scriptbox.run-record/1".into(),
        id: row.id.clone(),
        tenant: row.tenant.clone(),
        status: row.status,
        created_at: rfc3339(row.created_at),
        started_at: row.started_at.map(rfc3339),
        finished_at: row.finished_at.map(rfc3339),
        filename: row.filename.clone(),
        script_sha256: row.script_sha256.clone(),
        policy: PolicyRef {
            name: row.policy.clone(),
            digest: row.policy_digest.clone(),
        },
        profile: row.profile.clone(),
        backend: row.backend.clone(),
        args: row.args.clone(),
        labels: row.labels.clone(),
        attempts: row.attempts,
        exit_code: outcome_field(o, "exit_code"),
        signal: outcome_field(o, "signal"),
        stdout,
        stderr,
        stdout_truncated: outcome_field(o, "stdout_truncated").unwrap_or(false),
        stderr_truncated: outcome_field(o, "stderr_truncated").unwrap_or(false),
        durations: outcome_field(o, "durations"),
        peak_memory_bytes: outcome_field(o, "peak_memory_bytes"),
        env: outcome_field(o, "env"),
        enforcement: outcome_field(o, "enforcement").unwrap_or_default(),
        message: outcome_field(o, "message"),
        pip_command: outcome_field(o, "pip_command"),
        callback: row.callback_url.as_ref().map(|url| {
            let state = match row.callback_state.as_deref() {
                Some("delivered") => CallbackState::Delivered,
                Some("failed") => CallbackState::Failed,
                Some(_) => CallbackState::Pending,
                // Ended in this very request (rejected at submission):
                // the store has made it due already.
                None if row.status.is_final() => CallbackState::Pending,
                None => CallbackState::Waiting,
            };
            CallbackInfo {
                url: url.clone(),
                state,
                attempts: row.callback_attempts.clone(),
                next_attempt_at: match state {
                    CallbackState::Pending => row.callback_next_at.map(rfc3339),
                    _ => None,
                },
            }
        }),
    }
}

/// One field of a stored outcome, if present and of the right type.
fn outcome_field<T: serde::de::DeserializeOwned>(
    outcome: Option<&serde_json::Value>,
    name: &str,
) -> Option<T> {
    serde_json::from_value(outcome?.get(name)?.clone()).ok()
}

/// A run's stored output as (stdout, stderr) text.
pub(crate) async fn output_text(service: &Service, id: &str) -> Result<(String, String), ApiError> {
    let chunks = service.store().output(id, 0).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for c in chunks {
        if c.stream == "stderr" {
            err.extend_from_slice(&c.data);
        } else {
            out.extend_from_slice(&c.data);
        }
    }
    Ok((
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// The file name to give a script: the last path component, only safe
/// characters, ending in `.py`.
fn script_filename(given: Option<&str>) -> Result<String, ApiError> {
    let Some(given) = given else {
        return Ok("script.py".into());
    };
    if given.len() > MAX_FILENAME {
        return Err(ApiError::bad_request(
            "invalid-field",
            format!("filename is longer than {MAX_FILENAME} bytes"),
        ));
    }
    let name = crate::run::sandbox_name(std::path::Path::new(given));
    Ok(name)
}

fn check_submission(body: &SubmitRun) -> Result<(), ApiError> {
    if body.script.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::too_large(
            "script-too-large",
            format!(
                "the script is {} bytes; the limit is {MAX_SCRIPT_BYTES}",
                body.script.len()
            ),
        ));
    }
    if body
        .stdin
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STDIN_BYTES)
    {
        return Err(ApiError::too_large(
            "stdin-too-large",
            format!("stdin is larger than {MAX_STDIN_BYTES} bytes"),
        ));
    }
    if body.args.len() > MAX_ARGS || body.args.iter().any(|a| a.len() > MAX_ARG_BYTES) {
        return Err(ApiError::bad_request(
            "invalid-field",
            format!("args: at most {MAX_ARGS} arguments of at most {MAX_ARG_BYTES} bytes each"),
        ));
    }
    if body.args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request(
            "invalid-field",
            "args: an argument cannot contain a NUL character",
        ));
    }
    if body.labels.len() > MAX_LABELS
        || body.labels.iter().any(|(k, v)| {
            k.is_empty() || k.len() > MAX_LABEL_KEY || v.len() > MAX_LABEL_VALUE || k.contains('=')
        })
    {
        return Err(ApiError::bad_request(
            "invalid-field",
            format!(
                "labels: at most {MAX_LABELS}, keys of 1 to {MAX_LABEL_KEY} bytes without '=', values up to {MAX_LABEL_VALUE} bytes"
            ),
        ));
    }
    if body
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid-field",
            format!("idempotency_key must be 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The service is up and its store answers.
#[utoipa::path(get, path = "/v1/health", responses(
    (status = 200, description = "Up", body = Health),
    (status = 503, description = "The store does not answer", body = ErrorBody)
))]
async fn health(State(service): State<Service>) -> Result<Json<Health>, ApiError> {
    let queued = service.store().queued().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        queued,
        running: service.running_count() as i64,
    }))
}

async fn metrics(State(service): State<Service>) -> Response {
    if let Ok(queued) = service.store().queued().await {
        service.metrics().queued.set(queued);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        service.metrics().render(),
    )
        .into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Validates a script under a policy without running it.
#[utoipa::path(post, path = "/v1/validate", request_body = ValidateScript, security(("bearer" = [])),
    responses(
        (status = 200, description = "The `scriptbox.validate/1` object (see the README)", body = Object),
        (status = 400, description = "Bad request or unknown policy", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn validate(
    State(service): State<Service>,
    _caller: Caller,
    ApiJson(body): ApiJson<ValidateScript>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.script.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::too_large(
            "script-too-large",
            format!("the script is larger than {MAX_SCRIPT_BYTES} bytes"),
        ));
    }
    let policy_name = body.policy.as_deref().unwrap_or("default");
    let policy = service
        .policies()
        .get(policy_name)
        .map_err(|e| ApiError::bad_request("unknown-policy", e.to_string()))?;
    let filename = script_filename(body.filename.as_deref())?;
    let report = tokio::task::spawn_blocking(move || {
        use crate::validate::{ValidateOptions, report, validate_bytes};
        let path = std::path::PathBuf::from(&filename);
        let options = ValidateOptions {
            policy: Some(policy.clone()),
            sibling_modules: false,
            ..ValidateOptions::default()
        };
        let target =
            crate::validate::target::TargetPython::bare(&format!("3.{}", policy.python.minor));
        match target {
            Err(e) => report::error_to_json(&path, &e.to_string()),
            Ok(target) => match validate_bytes(&path, body.script.as_bytes(), &target, &options) {
                Ok(r) => report::to_json(&r),
                Err(e) => report::error_to_json(&path, &e.to_string()),
            },
        }
    })
    .await
    .map_err(|_| ApiError::unavailable("validation failed internally"))?;
    let value: serde_json::Value = serde_json::from_str(&report)
        .map_err(|_| ApiError::unavailable("validation produced no report"))?;
    Ok(Json(value))
}

/// Query of `POST /v1/runs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct WaitQuery {
    /// Answer once the run ends, if it ends within this many seconds (at most 60).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

fn parse_wait(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let mut wait = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k == "wait" {
            let secs: u64 = v.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid-query",
                    format!("wait must be 0 to {MAX_WAIT_SECONDS} seconds"),
                )
            })?;
            if secs > MAX_WAIT_SECONDS {
                return Err(ApiError::bad_request(
                    "invalid-query",
                    format!("wait must be 0 to {MAX_WAIT_SECONDS} seconds"),
                ));
            }
            wait = Some(secs);
        }
    }
    Ok(wait)
}

/// Submits a script: validated at once under the policy (a rejection is
/// in this answer), then queued.
#[utoipa::path(post, path = "/v1/runs", request_body = SubmitRun, params(WaitQuery), security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded: queued, or rejected by validation or the policy, or (with `wait`) finished", body = RunRecord),
        (status = 200, description = "An earlier submission with the same idempotency key and body", body = RunRecord),
        (status = 400, description = "Bad request, unknown policy or profile, refused callback URL (`callback-refused`), or a callback without a tenant secret (`no-callback-secret`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "Idempotency key reused with another body", body = ErrorBody),
        (status = 413, description = "Script, stdin or body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Queue full, tenant quota or overloaded (see Retry-After)", body = ErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ErrorBody)
    ))]
async fn submit(
    State(service): State<Service>,
    caller: Caller,
    RawQuery(query): RawQuery,
    ApiJson(body): ApiJson<SubmitRun>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(query.as_deref())?;
    if !service.accepting() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    check_submission(&body)?;
    let policy_name = body.policy.clone().unwrap_or_else(|| "default".into());
    let policy = service
        .policies()
        .get(&policy_name)
        .map_err(|e| ApiError::bad_request("unknown-policy", e.to_string()))?;
    let profile = body.profile.clone().unwrap_or_else(|| "default".into());
    if profile.is_empty() || profile.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid-field",
            "profile must be 1 to 64 characters",
        ));
    }
    if !policy.profiles.contains_key(&profile) {
        let names: Vec<&str> = policy.profiles.keys().map(String::as_str).collect();
        return Err(ApiError::bad_request(
            "unknown-profile",
            format!(
                "policy '{}' has no profile '{profile}' (it has: {})",
                policy.name,
                names.join(", ")
            ),
        ));
    }
    if let Some(url) = &body.callback_url {
        service
            .config()
            .callbacks
            .allow
            .check_url(url)
            .map_err(|e| ApiError::bad_request("callback-refused", e))?;
        if service
            .store()
            .tenant_secret(&caller.tenant)
            .await?
            .is_none()
        {
            return Err(ApiError::bad_request(
                "no-callback-secret",
                format!(
                    "tenant '{}' has no callback secret to sign with; an operator makes one with `scriptbox token secret --tenant {}`",
                    caller.tenant, caller.tenant
                ),
            ));
        }
    }
    let backend = body.backend.unwrap_or(BackendName::Local);
    let filename = script_filename(body.filename.as_deref())?;
    let script = body.script.clone().into_bytes();
    let request_digest = crate::cache::sha256_hex(&serde_json::to_vec(&body).unwrap_or_default());
    let run = NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: caller.tenant.clone(),
        filename: filename.clone(),
        script_sha256: crate::pipeline::script_sha256(&script),
        script: script.clone(),
        stdin: body.stdin.clone().map(String::into_bytes),
        args: body.args.clone(),
        policy: policy.name.clone(),
        policy_digest: policy.digest(),
        profile: profile.clone(),
        backend: match backend {
            BackendName::Local => "local".into(),
            BackendName::Docker => "docker".into(),
        },
        labels: body.labels.clone(),
        idempotency_key: body.idempotency_key.clone(),
        request_digest,
        retry_on_lost: body.retry_on_lost,
        callback_url: body.callback_url.clone(),
    };
    // Validation under the policy happens here, so a rejection is known in
    // this answer; the worker validates the same bytes again before running.
    let request = RunRequest {
        script,
        script_path: filename.into(),
        policy,
        profile,
        backend: match backend {
            BackendName::Local => Backend::Local,
            BackendName::Docker => Backend::Docker,
        },
        unsandboxed: false,
        args: body.args.clone(),
        stdin: Stdin::Empty,
        cache_dir: service.config().cache_dir.clone(),
        python: service.config().python.clone(),
        base_image: None,
        audit: service.audit().cloned(),
    };
    let checked = tokio::task::spawn_blocking(move || crate::pipeline::check(&request).err())
        .await
        .map_err(|_| ApiError::unavailable("validation failed internally"))?;
    let limits = Admission {
        max_queue: service.config().max_queue,
        tenant_max_queued: service.config().tenant_max_queued,
    };
    let finished = checked.map(|outcome| {
        let status = RunStatus::from(outcome.status);
        (status, outcome_fields(&outcome))
    });
    let admitted = service
        .store()
        .admit(&run, limits, finished.as_ref().map(|(s, o)| (*s, o)))
        .await?;
    let (status, row) = match admitted {
        Admitted::Created(row) => {
            if row.status == RunStatus::Queued {
                service.wake();
            } else {
                service.wake_callbacks();
                service
                    .metrics()
                    .runs
                    .with_label_values(&[row.status.as_str()])
                    .inc();
            }
            (StatusCode::CREATED, row)
        }
        Admitted::Existing(row) => (StatusCode::OK, row),
    };
    let row = match wait {
        Some(secs) if secs > 0 && !row.status.is_final() => {
            wait_for_end(&service, &row.id, Duration::from_secs(secs))
                .await?
                .unwrap_or(row)
        }
        _ => row,
    };
    let output = if row.status.is_final() {
        Some(output_text(&service, &row.id).await?)
    } else {
        None
    };
    Ok((status, Json(record(&row, output))).into_response())
}

/// Waits up to `limit` for run `id` to end; its row then (or the latest).
async fn wait_for_end(
    service: &Service,
    id: &str,
    limit: Duration,
) -> Result<Option<RunRow>, ApiError> {
    let mut changes = service.bus().subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let row = service.store().get_run(id, None).await?;
        match &row {
            Some(r) if !r.status.is_final() => {}
            _ => return Ok(row),
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(row),
            _ = super::logs::changed(&mut changes, id) => {},
            _ = tokio::time::sleep(Duration::from_millis(500)) => {},
        }
    }
}

/// Query of `GET /v1/runs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListQuery {
    /// Only runs with this status.
    status: Option<RunStatus>,
    /// Only runs with this label, as `key=value` (repeat the parameter for
    /// several).
    #[param(pattern = "^[^=]+=.*$")]
    label: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// From `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
    /// Admins only (403 otherwise): only this tenant's runs.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    tenant: Option<String>,
}

/// Lists runs, newest first: the caller's own, or (admins) every tenant's.
#[utoipa::path(get, path = "/v1/runs", params(ListQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "`tenant` without an admin token", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn list_runs(
    State(service): State<Service>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<RunPage>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid-query", m);
    let mut filter = RunFilter {
        tenant: caller.scope().map(str::to_string),
        limit: 50,
        ..RunFilter::default()
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "status" => {
                filter.status = Some(
                    RunStatus::from_name(&v)
                        .ok_or_else(|| bad(format!("status '{v}' is not a run status")))?,
                )
            }
            "label" => {
                let (key, value) = v
                    .split_once('=')
                    .ok_or_else(|| bad(format!("label '{v}' must be key=value")))?;
                filter.labels.push((key.to_string(), value.to_string()));
            }
            "limit" => {
                filter.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1 to {MAX_PAGE}")))?
            }
            "cursor" => {
                filter.before = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("cursor is not one this server gave".into()))?,
                )
            }
            "tenant" => {
                caller.require_admin()?;
                if !super::auth::valid_tenant(&v) {
                    return Err(bad(format!("tenant '{v}' is not a tenant name")));
                }
                filter.tenant = Some(v.into_owned());
            }
            other => return Err(bad(format!("unknown query parameter '{other}'"))),
        }
    }
    if filter.labels.len() > MAX_LABELS {
        return Err(bad(format!("at most {MAX_LABELS} labels")));
    }
    let rows = service.store().list_runs(&filter).await?;
    let next_cursor = (rows.len() as i64 == filter.limit)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(RunPage {
        runs: rows.iter().map(|r| record(r, None)).collect(),
        next_cursor,
    }))
}

/// A run's record, with its output once it has ended.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path, description = "The run's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run", body = RunRecord),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn get_run(
    State(service): State<Service>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    let row = service
        .store()
        .get_run(&id, caller.scope())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run '{id}'")))?;
    let output = if row.status.is_final() {
        Some(output_text(&service, &id).await?)
    } else {
        None
    };
    Ok(Json(record(&row, output)))
}

/// The run's output as Server-Sent Events: `stdout` and `stderr` events
/// (data `{"text": ...}`, id the chunk's number) as the script writes
/// them, then `end` with the final record. `Last-Event-ID` resumes after
/// that chunk; a finished run's output is replayed from the store.
#[utoipa::path(get, path = "/v1/runs/{id}/logs", params(
        ("id" = String, Path, description = "The run's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An event stream, one `LogEvent` per event", content_type = "text/event-stream", body = LogEvent),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn run_logs(
    State(service): State<Service>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    service
        .store()
        .get_run(&id, caller.scope())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run '{id}'")))?;
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .max(0);
    let mut changes = service.bus().subscribe();
    let stream = async_stream::stream! {
        let mut last = after;
        loop {
            let chunks = match service.store().output(&id, last).await {
                Ok(c) => c,
                Err(e) => {
                    yield Ok(Event::default().event("error").data(e.to_string()));
                    break;
                }
            };
            for chunk in chunks {
                last = chunk.seq;
                let text = String::from_utf8_lossy(&chunk.data);
                let data = serde_json::json!({ "text": text }).to_string();
                yield Ok(Event::default().id(chunk.seq.to_string()).event(chunk.stream).data(data));
            }
            let row = match service.store().get_run(&id, None).await {
                Ok(Some(row)) => row,
                _ => break,
            };
            if row.status.is_final() {
                // Output stored before the end was recorded is all there is.
                let rest = service.store().output(&id, last).await.unwrap_or_default();
                for chunk in rest {
                    last = chunk.seq;
                    let text = String::from_utf8_lossy(&chunk.data);
                    let data = serde_json::json!({ "text": text }).to_string();
                    yield Ok(Event::default().id(chunk.seq.to_string()).event(chunk.stream).data(data));
                }
                let output = output_text(&service, &id).await.ok();
                let data = serde_json::to_string(&record(&row, output)).unwrap_or_default();
                yield Ok(Event::default().id(last.to_string()).event("end").data(data));
                break;
            }
            tokio::select! {
                _ = super::logs::changed(&mut changes, &id) => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Cancels a run: a queued run never starts; a running one is stopped.
/// Both end `cancelled`.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = String, Path, description = "The run's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled: the final record", body = RunRecord),
        (status = 202, description = "Asked to stop; it has not ended yet", body = RunRecord),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 409, description = "The run had already ended", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn cancel_run(
    State(service): State<Service>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match service.store().cancel(&id, caller.scope()).await? {
        CancelState::Missing => return Err(ApiError::not_found(format!("no run '{id}'"))),
        CancelState::AlreadyFinished => {
            return Err(ApiError::conflict(
                "already-finished",
                format!("run '{id}' has already ended"),
            ));
        }
        CancelState::WasQueued => {
            service
                .metrics()
                .runs
                .with_label_values(&["cancelled"])
                .inc();
            service.bus().changed(&id);
            service.wake_callbacks();
            if let Some(row) = service.store().get_run(&id, None).await? {
                super::queue::audit_status(
                    &service,
                    &row,
                    "cancelled",
                    Some("cancelled before it started"),
                );
            }
        }
        CancelState::Running => {
            service.cancel_local(&id);
        }
    }
    let row = wait_for_end(&service, &id, Duration::from_secs(10))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run '{id}'")))?;
    let (status, output) = if row.status.is_final() {
        (StatusCode::OK, Some(output_text(&service, &id).await?))
    } else {
        (StatusCode::ACCEPTED, None)
    };
    Ok((status, Json(record(&row, output))).into_response())
}

/// The policies this server holds (admins).
#[utoipa::path(get, path = "/v1/policies", security(("bearer" = [])),
    responses(
        (status = 200, description = "Policies", body = PolicyList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn list_policies(
    State(service): State<Service>,
    caller: Caller,
) -> Result<Json<PolicyList>, ApiError> {
    caller.require_admin()?;
    let book = service.policies();
    let policies = book
        .names()
        .into_iter()
        .filter_map(|name| book.get(&name).ok())
        .map(|p| PolicyInfo {
            name: p.name.clone(),
            digest: p.digest(),
            locked: p.lock.is_some(),
            python: format!("3.{}", p.python.minor),
            auto_install: p.install.auto_install,
            preinstalled: p.preinstalled.iter().map(ToString::to_string).collect(),
            allowed: p.allow.len(),
            profiles: p.profiles.keys().cloned().collect(),
        })
        .collect();
    Ok(Json(PolicyList { policies }))
}

/// Query of `GET /v1/stats`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct StatsQuery {
    /// Only records since this date (`2026-11-01`, RFC 3339) or for this
    /// long (`7d`, `12h`).
    since: Option<String>,
    /// Only records about this policy.
    policy: Option<String>,
    /// How many packages per list (default 10).
    #[param(minimum = 1, maximum = 1000)]
    top: Option<usize>,
}

/// Statistics for administrators: the audit log's `scriptbox.stats/1`
/// (the most requested missing packages, the most often forbidden, builds,
/// run statuses), and the runs this service holds, by status.
#[utoipa::path(get, path = "/v1/stats", params(StatsQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "Statistics: `audit` is the `scriptbox.stats/1` object (see the README)", body = Object),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 429, description = "Overloaded", body = ErrorBody),
        (status = 503, description = "Unavailable", body = ErrorBody)
    ))]
async fn stats(
    State(service): State<Service>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_admin()?;
    let bad = |m: String| ApiError::bad_request("invalid-query", m);
    let mut filter = crate::audit::stats::Filter::default();
    let mut top = 10usize;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "since" => {
                filter.since = Some(
                    crate::audit::stats::parse_since(&v, std::time::SystemTime::now())
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            "policy" => filter.policy = Some(v.into_owned()),
            "top" => {
                top = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("top must be 1 to 1000".into()))?
            }
            other => return Err(bad(format!("unknown query parameter '{other}'"))),
        }
    }
    let counts: BTreeMap<String, i64> = service.store().count_by_status().await?;
    let audit = match service.audit().map(|log| log.path().to_path_buf()) {
        None => serde_json::Value::Null,
        Some(path) => tokio::task::spawn_blocking(move || {
            crate::audit::stats::collect(&path, filter, top)
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| ApiError::unavailable("statistics failed internally"))?
        .map_err(ApiError::unavailable)?,
    };
    Ok(Json(serde_json::json!({
        "schema": "scriptbox.service-stats/1",
        "runs_by_status": counts,
        "audit": audit,
    })))
}
