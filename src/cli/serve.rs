//! `scriptbox serve`: the HTTP service, and `scriptbox token`: its bearer
//! tokens. Both open the same store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use scriptbox::service::auth::{new_token, token_hash, valid_tenant};
use scriptbox::service::callback::sign::new_secret;
use scriptbox::service::callback::{CallbackAllow, CallbackConfig};
use scriptbox::service::cluster::NodeRole;
use scriptbox::service::store::{Role, Store};
use scriptbox::service::{ServeConfig, serve};

use super::{EXIT_USAGE, Format, POLICIES_DIR};

/// `scriptbox serve` arguments.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8750", value_name = "ADDR")]
    listen: SocketAddr,
    /// The store: an SQLite database file (default: service.db in the data
    /// directory), or a PostgreSQL URL (`postgres://USER:PASSWORD@HOST/DB`)
    /// shared by several nodes.
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
    /// What this node does: `api` (the HTTP API, runs nothing), `worker`
    /// (runs scripts; serves only /v1/health and /metrics) or `all`.
    /// `api` and `worker` need a PostgreSQL store.
    #[arg(long, default_value = "all", value_parser = ["api", "worker", "all"])]
    role: String,
    /// How long a worker's claim on a run holds without a heartbeat before
    /// any node may end the run `lost` (PostgreSQL store).
    #[arg(long, default_value = "30s", value_parser = scriptbox::units::parse_duration, value_name = "DURATION")]
    lease: Duration,
    /// Runs executing at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Runs queued on the whole service before submissions get 429.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_queue: i64,
    /// Runs queued per tenant before its submissions get 429.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    tenant_max_queued: i64,
    /// Runs running per tenant at once (default: the number of workers).
    #[arg(long, value_name = "N")]
    tenant_max_running: Option<i64>,
    /// On SIGTERM, how long running runs may finish before being cancelled.
    #[arg(long, default_value = "30s", value_parser = scriptbox::units::parse_duration, value_name = "DURATION")]
    grace: Duration,
    /// Delete records and output of runs that ended longer ago than this.
    #[arg(long, value_parser = scriptbox::units::parse_duration, value_name = "DURATION")]
    retain: Option<Duration>,
    /// Directory of the policies runs may name.
    #[arg(long, default_value = POLICIES_DIR, value_name = "DIR")]
    policies: PathBuf,
    /// The host interpreter venv layers are based on (local backend).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Requests handled at once; more get 429 at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_in_flight: usize,
    /// Where callbacks may go (repeatable): a host name, `*.domain`, `*`
    /// (any host name), or an address or CIDR, which also opens that range
    /// (loopback, private and metadata addresses are refused otherwise).
    /// Without any, runs cannot ask for callbacks.
    #[arg(long = "callback-allow", value_name = "PATTERN")]
    callback_allow: Vec<String>,
    /// Delivery attempts per callback, the first included.
    #[arg(long, default_value_t = 8, value_name = "N")]
    callback_attempts: u32,
    /// The delay before the first retry of a callback; it doubles after
    /// each failed attempt (at most 1h).
    #[arg(long, default_value = "5s", value_parser = scriptbox::units::parse_duration, value_name = "DURATION")]
    callback_backoff: Duration,
    /// How long one callback attempt may take.
    #[arg(long, default_value = "10s", value_parser = scriptbox::units::parse_duration, value_name = "DURATION")]
    callback_timeout: Duration,
}

/// `scriptbox token ...`
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for a tenant and print it (alone, on stdout). Only its
    /// hash is stored: it cannot be shown again.
    Create {
        /// The tenant (letters, digits, '.', '_' and '-').
        #[arg(long)]
        tenant: String,
        /// `submit` (the tenant's own runs) or `admin` (everything).
        #[arg(long, default_value = "submit", value_parser = ["submit", "admin"])]
        role: String,
        /// The store (default: service.db in the data directory), or a
        /// PostgreSQL URL.
        #[arg(long, value_name = "PATH|URL")]
        store: Option<String>,
    },
    /// List tokens (ids, tenants, roles; never the tokens).
    Ls {
        /// The store (a path or a PostgreSQL URL).
        #[arg(long, value_name = "PATH|URL")]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the tenant's secret for checking its callbacks' signatures
    /// (alone, on stdout), making one if it has none.
    Secret {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Replace the secret with a new one (callbacks made from now on
        /// are signed with it).
        #[arg(long)]
        rotate: bool,
        /// The store (a path or a PostgreSQL URL).
        #[arg(long, value_name = "PATH|URL")]
        store: Option<String>,
    },
    /// Revoke a token by its id (from `token ls`).
    Revoke {
        /// The token's id.
        id: String,
        /// The store (a path or a PostgreSQL URL).
        #[arg(long, value_name = "PATH|URL")]
        store: Option<String>,
    },
}

/// The store's location: as given (a path or a URL), else service.db in
/// the data directory.
fn store_location(given: Option<String>) -> Result<String, String> {
    match given {
        Some(p) if p.is_empty() => Err("--store: expected a file path or a postgres:// URL".into()),
        Some(p) => Ok(p),
        None => scriptbox::dirs::data_dir()
            .map(|d| d.join("service.db").display().to_string())
            .ok_or_else(|| "no data directory (set SCRIPTBOX_DATA_DIR or pass --store)".into()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("scriptbox: error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Runs `scriptbox serve` until SIGTERM or SIGINT.
pub fn run_serve(args: ServeArgs) -> ExitCode {
    let store = match store_location(args.store) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let role: NodeRole = match args.role.parse() {
        Ok(r) => r,
        Err(e) => return fail(format!("--role {e}")),
    };
    let shared = scriptbox::service::store::is_postgres_url(&store);
    if role != NodeRole::All && !shared {
        return fail(format!(
            "--role {}: expected a PostgreSQL store (--store postgres://...); an SQLite store is one machine's, served by one `--role all` node",
            role.as_str()
        ));
    }
    if args.lease < Duration::from_secs(1) {
        return fail("--lease: expected at least 1s");
    }
    let Some(cache_dir) = scriptbox::cache::default_cache_dir() else {
        return fail("no cache directory (set SCRIPTBOX_CACHE_DIR)");
    };
    if !args.policies.is_dir() {
        return fail(format!(
            "{}: not a directory (expected the policies directory; pass --policies DIR)",
            args.policies.display()
        ));
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if workers == 0 || args.max_queue < 1 || args.tenant_max_queued < 1 {
        return fail("--workers, --max-queue and --tenant-max-queued must be at least 1");
    }
    if args.callback_attempts == 0 || args.callback_timeout.is_zero() {
        return fail("--callback-attempts and --callback-timeout must be more than 0");
    }
    let allow = match CallbackAllow::parse(&args.callback_allow) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let config = ServeConfig {
        listen: args.listen,
        workers,
        max_queue: args.max_queue,
        tenant_max_queued: args.tenant_max_queued,
        tenant_max_running: args.tenant_max_running.unwrap_or(workers as i64).max(1),
        grace: args.grace,
        retain: args.retain,
        policies_dir: std::path::absolute(&args.policies).unwrap_or(args.policies),
        cache_dir,
        python: args.python,
        // A script and its stdin at their limits, as JSON strings.
        max_body: 2 * (scriptbox::service::MAX_SCRIPT_BYTES + scriptbox::service::MAX_STDIN_BYTES),
        max_in_flight: args.max_in_flight.max(1),
        callbacks: CallbackConfig {
            allow,
            max_attempts: args.callback_attempts,
            backoff: args.callback_backoff,
            timeout: args.callback_timeout,
        },
        role,
        lease: args.lease,
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let result = rt.block_on(async {
        let store = Store::open(&store).await?;
        serve(config, store).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Runs `scriptbox token ...`.
pub fn run_token(command: TokenCommand) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let open = |location: Option<String>| async move {
        let location = store_location(location)?;
        Store::open(&location).await.map_err(|e| e.to_string())
    };
    let result: Result<(), String> = rt.block_on(async {
        match command {
            TokenCommand::Create {
                tenant,
                role,
                store,
            } => {
                if !valid_tenant(&tenant) {
                    return Err(format!(
                        "--tenant '{tenant}': expected 1 to 64 letters, digits, '.', '_' or '-'"
                    ));
                }
                let role = if role == "admin" {
                    Role::Admin
                } else {
                    Role::Submit
                };
                let store = open(store).await?;
                let token = new_token().map_err(|e| format!("no randomness: {e}"))?;
                let id = store
                    .create_token(&tenant, role, &token_hash(&token))
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!(
                    "scriptbox: token {id} for tenant '{tenant}' ({})",
                    role.as_str()
                );
                println!("{token}");
                Ok(())
            }
            TokenCommand::Ls { store, format } => {
                let store = open(store).await?;
                for t in store.list_tokens().await.map_err(|e| e.to_string())? {
                    match format {
                        Format::Json => println!(
                            "{}",
                            serde_json::json!({
                                "schema": "scriptbox.token/1",
                                "id": t.id,
                                "tenant": t.tenant,
                                "role": t.role,
                                "created_at": t.created_at,
                                "revoked_at": t.revoked_at,
                            })
                        ),
                        Format::Text => println!(
                            "{}  {:<24} {:<6} {}",
                            t.id,
                            t.tenant,
                            t.role.as_str(),
                            if t.revoked_at.is_some() {
                                "revoked"
                            } else {
                                "active"
                            }
                        ),
                    }
                }
                Ok(())
            }
            TokenCommand::Secret {
                tenant,
                rotate,
                store,
            } => {
                if !valid_tenant(&tenant) {
                    return Err(format!(
                        "--tenant '{tenant}': expected 1 to 64 letters, digits, '.', '_' or '-'"
                    ));
                }
                let store = open(store).await?;
                let fresh = new_secret().map_err(|e| format!("no randomness: {e}"))?;
                let secret = store
                    .ensure_tenant_secret(&tenant, &fresh, rotate)
                    .await
                    .map_err(|e| e.to_string())?;
                if secret == fresh {
                    eprintln!("scriptbox: new callback secret for tenant '{tenant}'");
                }
                println!("{secret}");
                Ok(())
            }
            TokenCommand::Revoke { id, store } => {
                let store = open(store).await?;
                if store.revoke_token(&id).await.map_err(|e| e.to_string())? {
                    println!("revoked {id}");
                    Ok(())
                } else {
                    Err(format!(
                        "no active token with id '{id}' (see `scriptbox token ls`)"
                    ))
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
