//! `scriptbox stats`: what the audit log says about requested, refused and
//! installed packages and about runs, as a table or as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use scriptbox::audit::stats::{Filter, collect, parse_since, to_text};

use super::{EXIT_USAGE, Format};

/// `scriptbox stats` arguments.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Only records from this date (2026-05-01, midnight UTC), UTC time
    /// (2026-05-01T12:00:00Z) or this long ago (7d, 24h).
    #[arg(long, value_name = "DATE|DURATION")]
    since: Option<String>,
    /// Only records about this policy (a name, or a policy file's path).
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Output format (JSON: one object, schema `scriptbox.stats/1`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// How many entries each list shows.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// The audit log to read (default: $SCRIPTBOX_AUDIT_LOG, else audit.jsonl
    /// in the data directory).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

/// Runs `scriptbox stats`.
pub fn run(args: StatsArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("scriptbox: error: {message}");
        ExitCode::from(EXIT_USAGE)
    };
    let since = match args
        .since
        .as_deref()
        .map(|s| parse_since(s, std::time::SystemTime::now()))
    {
        None => None,
        Some(Ok(bound)) => Some(bound),
        Some(Err(e)) => return fail(e.to_string()),
    };
    // Records name a policy by its file stem, however it was given.
    let policy = args.policy.as_deref().map(|p| {
        let path = std::path::Path::new(p);
        if p.ends_with(".toml") || p.contains('/') {
            path.file_stem()
                .map_or(p.to_string(), |s| s.to_string_lossy().into_owned())
        } else {
            p.to_string()
        }
    });
    let Some(log) = args.log.or_else(scriptbox::audit::default_path) else {
        return fail(scriptbox::audit::AuditError::NoLocation.to_string());
    };
    let stats = match collect(&log, Filter { since, policy }, args.top) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&stats).expect("statistics serialise")
        ),
        Format::Text => {
            if stats.files.is_empty() {
                eprintln!(
                    "scriptbox: no audit log at {} yet (nothing has been recorded)",
                    log.display()
                );
            }
            print!("{}", to_text(&stats));
        }
    }
    ExitCode::SUCCESS
}
