//! `scriptbox sandbox-init` (hidden): the first process of every sandbox,
//! which starts the script's command, forwards signals to it, reaps
//! orphans and reports how the command ended
//! ([`scriptbox::run::init`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use scriptbox::run::init::{InitConfig, InitError, ReportTo, run_init};

use super::EXIT_USAGE;

/// `scriptbox sandbox-init` arguments.
#[derive(clap::Args)]
pub struct SandboxInitArgs {
    /// Write the report to this inherited descriptor.
    #[arg(long, value_name = "FD")]
    status_fd: Option<i32>,
    /// Write the report to this file (created; must not exist).
    #[arg(long, value_name = "PATH")]
    status_file: Option<PathBuf>,
    /// Read the command from this descriptor (NUL-separated words).
    #[arg(long, value_name = "FD")]
    command_fd: Option<i32>,
    /// Read the command from this file (NUL-separated words; removed once
    /// read), where no descriptor can be passed in (gVisor).
    #[arg(long, value_name = "PATH", conflicts_with = "command_fd")]
    command_file: Option<PathBuf>,
    /// Read the mount plan from this descriptor (JSON) and carry it out
    /// first.
    #[arg(long, value_name = "FD")]
    plan_fd: Option<i32>,
    /// Install the seccomp program in this descriptor once set up
    /// (repeatable).
    #[arg(long, value_name = "FD")]
    seccomp_fd: Vec<i32>,
    /// The uid the command runs as.
    #[arg(long, requires = "gid")]
    uid: Option<u32>,
    /// The gid the command runs as.
    #[arg(long, requires = "uid")]
    gid: Option<u32>,
    /// The command.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Runs the init.
pub fn run(args: SandboxInitArgs) -> ExitCode {
    let report = match (args.status_fd, args.status_file) {
        (Some(fd), None) => ReportTo::Fd(fd),
        (None, Some(path)) => ReportTo::File(path),
        _ => return fail(&InitError::NoReport),
    };
    let config = InitConfig {
        report,
        command_fd: args.command_fd,
        command_file: args.command_file,
        user: args.uid.zip(args.gid),
        plan_fd: args.plan_fd,
        seccomp_fds: args.seccomp_fd,
        command: args.command,
    };
    match run_init(config) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => fail(&e),
    }
}

fn fail(e: &InitError) -> ExitCode {
    eprintln!("scriptbox: sandbox init: {e}");
    ExitCode::from(EXIT_USAGE)
}
