//! `scriptbox doctor`: what isolation this machine offers, as a table or
//! as JSON; the exit code says whether the local backend can run scripts.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use scriptbox::doctor::{Options, diagnose, to_text};
use scriptbox::policy::{load, resolve_policy_path};

use super::{EXIT_USAGE, Format, POLICIES_DIR};

/// How long the Docker engine may take to answer: a dead daemon must
/// not hold the report up.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);

/// `scriptbox doctor` arguments.
#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Output format (JSON: one object, schema `scriptbox.doctor/1`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The policy whose base image the Docker backend needs (a name in
    /// policies/, or a policy file's path).
    #[arg(long, default_value = "default")]
    policy: String,
}

/// Runs `scriptbox doctor`.
pub fn run(args: DoctorArgs) -> ExitCode {
    let path = resolve_policy_path(&args.policy, Path::new(POLICIES_DIR));
    // A policy that cannot be loaded only fails the base-image check: the
    // rest of the report still helps.
    let loaded = load(&path)
        .map(|(policy, _)| policy)
        .map_err(|e| format!("policy '{}' cannot be used: {e}", args.policy));
    let report = diagnose(&Options {
        policy: loaded.as_ref().map_err(Clone::clone),
        engine_timeout: ENGINE_TIMEOUT,
    });
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&report).expect("the report serialises")
        ),
        Format::Text => print!("{}", to_text(&report)),
    }
    if report.backends.local {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    }
}
