//! `scriptbox egress-relay` (hidden): runs the egress relay inside a
//! sandbox's network namespace, for the backends to start.
//!
//! - With a command after `--` (how the sandboxes start it), it binds its
//!   sockets, then becomes that command while a forked child serves the
//!   relay ([`scriptbox::egress::beside`]).
//! - Without one, it prints one JSON line when its sockets are bound
//!   (`scriptbox.egress-relay/1`: `dns`, `proxy`), then serves until it is
//!   killed or its parent dies.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use scriptbox::egress::{Relay, RelayConfig};

use super::EXIT_USAGE;

/// `scriptbox egress-relay` arguments.
#[derive(clap::Args)]
pub struct EgressRelayArgs {
    /// The relay's settings (JSON: socket, allow, dns, proxy, synthetic, ...).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The host proxy's Unix socket (overrides the config's).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// When started as root: the uid the forked relay drops to.
    #[arg(long, value_name = "UID")]
    drop_to: Option<u32>,
    /// The command to become once the relay's sockets are bound.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Runs the relay.
pub fn run(args: EgressRelayArgs) -> ExitCode {
    if args.command.is_empty() {
        die_with_parent();
    }
    let mut config = match RelayConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    let relay = match Relay::bind(config) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if !args.command.is_empty() {
        let error = scriptbox::egress::beside::serve_beside(relay, args.drop_to, &args.command);
        return fail(&error.to_string());
    }
    let ready = serde_json::json!({
        "schema": "scriptbox.egress-relay/1",
        "dns": relay.dns_addr().to_string(),
        "proxy": relay.proxy_addr().to_string(),
    });
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{ready}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return fail("cannot write the ready line to stdout");
    }
    match relay.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("scriptbox: error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// The relay must not outlive whoever started it (the sandbox's init).
fn die_with_parent() {
    // SAFETY: getppid and prctl(PR_SET_PDEATHSIG) take no pointers.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            std::process::exit(i32::from(EXIT_USAGE));
        }
    }
}
