//! Callbacks: a run submitted with a `callback_url` has its final record
//! POSTed there when it ends, signed with its tenant's secret ([`sign`]),
//! to hosts the server allows ([`allow`]).
//!
//! Delivery is durable: the store marks a callback due the moment its run
//! ends (whichever way it ends), a delivery loop takes due callbacks under
//! a lease, and every attempt is recorded on the run. A receiver that does
//! not answer 2xx is tried again after a delay that doubles each time (from
//! `--callback-backoff`, at most an hour), up to `--callback-attempts`
//! attempts in all; a refused address is not retried. Deliveries are at
//! least once: a receiver deduplicates on the record's `id`. Redirects are
//! never followed.

pub mod allow;
pub mod sign;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, watch};

pub use allow::{CallbackAllow, CallbackTarget};

use super::Service;
use super::model::CallbackAttempt;
use super::store::{CallbackNext, RunRow, now_ms};

/// How callbacks are delivered (`scriptbox serve --callback-*`).
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Where they may go.
    pub allow: CallbackAllow,
    /// Attempts per callback, the first included.
    pub max_attempts: u32,
    /// The delay before the first retry; each later one doubles.
    pub backoff: Duration,
    /// How long one attempt may take, connection to answer.
    pub timeout: Duration,
}

impl Default for CallbackConfig {
    fn default() -> CallbackConfig {
        CallbackConfig {
            allow: CallbackAllow::default(),
            max_attempts: 8,
            backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 16;
/// The event a callback reports (`X-Scriptbox-Event`).
pub const EVENT: &str = "run.ended";

/// The delay after the `attempts`-th failed attempt: the backoff doubled
/// for each attempt after the first, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Delivers due callbacks until `stop`, then waits (at most one attempt's
/// timeout) for those in flight. What is still due then is delivered at
/// the next start.
pub async fn deliver(service: Service, mut stop: watch::Receiver<bool>) {
    let config = service.config().callbacks.clone();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let lease = config.timeout + Duration::from_secs(30);
    loop {
        if *stop.borrow() {
            break;
        }
        let free = slots.available_permits();
        if free > 0 {
            let now = now_ms();
            match service
                .store()
                .take_due_callbacks(now, now + lease.as_millis() as i64, free as i64)
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let service = service.clone();
                        tokio::spawn(async move {
                            attempt(&service, &id).await;
                            drop(permit);
                            service.wake_callbacks();
                        });
                    }
                }
                Err(e) => tracing::warn!("taking due callbacks: {e}"),
            }
        }
        let wait_ms = if slots.available_permits() == 0 {
            1000
        } else {
            match service.store().next_callback_due().await {
                Ok(Some(at)) => (at - now_ms()).clamp(5, 1000),
                _ => 1000,
            }
        };
        tokio::select! {
            _ = service.callbacks_woken() => {},
            _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {},
            _ = stop.changed() => {},
        }
    }
    let _ = tokio::time::timeout(config.timeout, slots.acquire_many(IN_FLIGHT as u32)).await;
}

/// Why an attempt failed, and whether another may succeed.
struct Failure {
    address: Option<SocketAddr>,
    status_code: Option<u16>,
    error: String,
    /// No retry can help (a refused address, no secret).
    permanent: bool,
}

impl Failure {
    fn permanent(error: String) -> Failure {
        Failure {
            address: None,
            status_code: None,
            error,
            permanent: true,
        }
    }
}

/// Makes one delivery attempt of run `id`'s callback and records it.
async fn attempt(service: &Service, id: &str) {
    let config = &service.config().callbacks;
    let row = match service.store().get_run(id, None).await {
        Ok(Some(row)) if row.callback_state.as_deref() == Some("pending") => row,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!("callback of run {id}: {e}");
            return;
        }
    };
    let number = row.callback_attempts.len() as u32 + 1;
    let at = now_ms();
    let started = Instant::now();
    let result = match tokio::time::timeout(config.timeout, post(service, &row, number)).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            address: None,
            status_code: None,
            error: format!("no answer within {:?}", config.timeout),
            permanent: false,
        }),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let (record, next) = match result {
        Ok((address, status)) => (
            CallbackAttempt {
                attempt: number,
                at: super::api::rfc3339(at),
                address: Some(address.to_string()),
                status_code: Some(status),
                error: None,
                duration_ms,
            },
            CallbackNext::Delivered,
        ),
        Err(failure) => {
            let next = if failure.permanent || number >= config.max_attempts {
                CallbackNext::Failed
            } else {
                CallbackNext::Retry(now_ms() + backoff(config.backoff, number).as_millis() as i64)
            };
            (
                CallbackAttempt {
                    attempt: number,
                    at: super::api::rfc3339(at),
                    address: failure.address.map(|a| a.to_string()),
                    status_code: failure.status_code,
                    error: Some(failure.error),
                    duration_ms,
                },
                next,
            )
        }
    };
    let result = match next {
        CallbackNext::Delivered => "delivered",
        CallbackNext::Retry(_) => "retry",
        CallbackNext::Failed => "failed",
    };
    tracing::info!(
        "callback of run {id}: attempt {number} {result}{}",
        record
            .error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    service
        .metrics()
        .callbacks
        .with_label_values(&[result])
        .inc();
    for retry in 0..5u32 {
        match service
            .store()
            .record_callback_attempt(id, &record, next)
            .await
        {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("recording callback attempt of run {id}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100 << retry)).await;
            }
        }
    }
}

/// POSTs the run's final record to its callback URL: the URL checked
/// again under the server's patterns, its host resolved, every address
/// checked, and the first checked address that accepts a connection
/// dialled (never the name again). The address and status on a 2xx.
async fn post(service: &Service, row: &RunRow, number: u32) -> Result<(SocketAddr, u16), Failure> {
    let config = &service.config().callbacks;
    let url = row.callback_url.as_deref().unwrap_or_default();
    let target = config
        .allow
        .check_url(url)
        .map_err(|e| Failure::permanent(format!("refused: {e}")))?;
    let secret = service
        .store()
        .tenant_secret(&row.tenant)
        .await
        .map_err(|e| Failure {
            address: None,
            status_code: None,
            error: e.to_string(),
            permanent: false,
        })?
        .ok_or_else(|| {
            Failure::permanent(format!(
                "tenant '{}' has no callback secret (scriptbox token secret --tenant {})",
                row.tenant, row.tenant
            ))
        })?;
    let output = super::api::output_text(service, &row.id).await.ok();
    let body = serde_json::to_vec(&super::api::record(row, output)).unwrap_or_default();
    let addresses = config.allow.resolve(&target).await.map_err(|e| Failure {
        permanent: e.starts_with("refused"),
        ..Failure::permanent(e)
    })?;
    let mut last_error = String::new();
    let mut stream = None;
    for address in &addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(s) => {
                stream = Some((s, *address));
                break;
            }
            Err(e) => last_error = format!("cannot connect to {address}: {e}"),
        }
    }
    let Some((stream, address)) = stream else {
        return Err(Failure {
            address: addresses.first().copied(),
            status_code: None,
            error: last_error,
            permanent: false,
        });
    };
    let failed = |error: String, status_code: Option<u16>| Failure {
        address: Some(address),
        status_code,
        error,
        permanent: false,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(format!("HTTP handshake with {address}: {e}"), None))?;
    let driver = tokio::spawn(connection);
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let host = match target.url.port() {
        Some(port) => format!("{}:{port}", target.url.host_str().unwrap_or_default()),
        None => target.url.host_str().unwrap_or_default().to_string(),
    };
    let path = &target.url[url::Position::BeforePath..url::Position::AfterQuery];
    let request = hyper::Request::post(path)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("scriptbox/", env!("CARGO_PKG_VERSION")))
        .header("x-scriptbox-event", EVENT)
        .header("x-scriptbox-delivery", format!("{}.{number}", row.id))
        .header("x-scriptbox-attempt", number.to_string())
        .header(sign::TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            sign::SIGNATURE_HEADER,
            sign::signature(&secret, timestamp, &body),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure::permanent(format!("cannot make the request: {e}")))?;
    let answer = sender.send_request(request).await;
    driver.abort();
    let response = answer.map_err(|e| failed(format!("no answer from {address}: {e}"), None))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok((address, status))
    } else {
        Err(failed(
            format!("the receiver answered {}", response.status()),
            Some(status),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 2), Duration::from_secs(10));
        assert_eq!(backoff(base, 4), Duration::from_secs(40));
        assert_eq!(backoff(base, 30), MAX_BACKOFF);
    }
}
