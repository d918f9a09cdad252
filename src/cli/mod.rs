//! Subcommands of the `scriptbox` binary, one module per command: each
//! turns arguments into library calls, and results into output and an exit
//! code. Nothing here does work the library could do.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

pub mod doctor;
pub mod egress_relay;
pub mod env;
pub mod image;
pub mod policy;
pub mod progress;
pub mod run;
pub mod sandbox_init;
pub mod serve;
pub mod stats;
pub mod validate;

/// Exit code for bad arguments or an unusable environment (same as unusable input).
pub const EXIT_USAGE: u8 = 2;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// A report for people, with the exact pip command for what is missing.
    Text,
    /// One JSON object per script (JSON Lines), schema `scriptbox.validate/1`.
    Json,
}

/// Directory holding policies by name.
pub const POLICIES_DIR: &str = "policies";

/// Loads a policy by name or path; on failure prints its diagnostics and
/// returns the exit code to use.
pub fn load_policy(spec: &str) -> Result<scriptbox::policy::Policy, ExitCode> {
    use scriptbox::policy::{PolicyLoadError, load, resolve_policy_path};
    let path = resolve_policy_path(spec, Path::new(POLICIES_DIR));
    match load(&path) {
        Ok((policy, _)) => Ok(policy),
        Err(PolicyLoadError::Invalid { path, diagnostics }) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!(
                "scriptbox: error: {} has errors; run `scriptbox policy check {}`",
                path.display(),
                path.display()
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
        Err(e) => {
            eprintln!("scriptbox: error: {e}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}
