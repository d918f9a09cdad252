//! Running uv, the resolver and installer scriptbox drives.
//!
//! Every uv process gets a cleared environment (uv reads `UV_INDEX_URL`,
//! `UV_CONSTRAINT` and the like even with `--no-config`, and only the policy
//! may decide where packages come from) and dies with scriptbox, so a killed
//! scriptbox leaves no uv writing into its cache.

use std::path::Path;
use std::process::{Command, Stdio};

/// Environment variables uv may see.
const ENV_PASSTHROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "UV_CACHE_DIR",
    "UV_HTTP_TIMEOUT",
    "UV_HTTP_RETRIES",
    "UV_HTTP_CONNECT_TIMEOUT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The uv program: `$SCRIPTBOX_UV`, else `uv` on PATH.
pub fn program() -> String {
    std::env::var("SCRIPTBOX_UV").unwrap_or_else(|_| "uv".into())
}

/// A uv command in `cwd` with the cleared environment described above.
pub fn command(uv: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(uv);
    cmd.current_dir(cwd)
        .env_clear()
        .envs(
            ENV_PASSTHROUGH
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}
