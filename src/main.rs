//! The `scriptbox` command line: parses arguments and dispatches to one
//! module per command in [`cli`]. All real work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "scriptbox",
    version,
    about = "Validate, build environments for, and sandbox user Python scripts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find every dependency of Python scripts without running them.
    ///
    /// Exit status: 0 every required dependency is present, 1 something
    /// required is missing, 2 the input is unusable (unreadable, undecodable,
    /// syntax error, bad inline metadata, bad arguments). With several files,
    /// the highest status wins.
    Validate(cli::validate::ValidateArgs),
    /// Check and explain the administrators' whitelist policies (policies/*.toml).
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Build and inspect cached environments (venv layers and images).
    #[command(subcommand)]
    Env(cli::env::EnvCommand),
    /// Build the base images in images/ through the Docker engine.
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// Validate a script, build or reuse its environment, and run it under
    /// the policy profile's limits, in the local sandbox or a container.
    ///
    /// Exit status: 0 succeeded, 1 the script failed (non-zero exit),
    /// 2 scriptbox error or bad arguments, 3 rejected (validation or
    /// policy), 4 timed out, 5 CPU limit, 6 memory limit, 7 output limit,
    /// 8 killed by a signal.
    Run(cli::run::RunArgs),
    /// Summarise the audit log: the most requested missing packages, the
    /// most often forbidden ones, builds and their failures, runs by status.
    ///
    /// Exit status: 0 success, 2 bad arguments or an unreadable log.
    Stats(cli::stats::StatsArgs),
    /// Report what isolation this machine offers (bwrap, user namespaces,
    /// cgroups, seccomp, gVisor, the Docker engine, KVM), with a one-line
    /// fix for what is missing.
    ///
    /// Exit status: 0 the local backend works, 2 it does not (or bad
    /// arguments).
    Doctor(cli::doctor::DoctorArgs),
    /// Serve the HTTP API the platform's backend hands scripts to: a
    /// durable queue of runs, live output, cancellation, tokens per tenant.
    ///
    /// Stops on SIGTERM or SIGINT: no new runs; running ones get the grace
    /// period, then are cancelled; queued ones stay queued.
    Serve(cli::serve::ServeArgs),
    /// Create, list and revoke the service's bearer tokens; print a
    /// tenant's callback signing secret.
    #[command(subcommand)]
    Token(cli::serve::TokenCommand),
    /// Internal: the egress relay that runs inside a sandbox (DNS stub,
    /// proxy port, transparent listeners), piping to the host proxy.
    #[command(hide = true)]
    EgressRelay(cli::egress_relay::EgressRelayArgs),
    /// Internal: the first process of a sandbox, which starts the script,
    /// forwards signals, reaps orphans and reports how the script ended.
    #[command(hide = true)]
    SandboxInit(cli::sandbox_init::SandboxInitArgs),
}

fn main() -> ExitCode {
    init_tracing();
    // One line, like every other error, instead of the default report.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("scriptbox: internal error: {info}");
    }));
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => cli::validate::run(args),
        Command::Policy(command) => cli::policy::run(command),
        Command::Env(command) => cli::env::run(command),
        Command::Image(command) => cli::image::run(command),
        Command::Run(args) => cli::run::run(args),
        Command::Stats(args) => cli::stats::run(args),
        Command::Doctor(args) => cli::doctor::run(args),
        Command::Serve(args) => cli::serve::run_serve(args),
        Command::Token(command) => cli::serve::run_token(command),
        Command::EgressRelay(args) => cli::egress_relay::run(args),
        Command::SandboxInit(args) => cli::sandbox_init::run(args),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SCRIPTBOX_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

// The parser allocates an AST node per expression; mimalloc measured
// faster than the system allocator for that pattern (see scripts/bench-validate).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
