//! One run's egress, seen from the host: the [`HostProxy`] on a Unix
//! socket in a directory of the run's own, and the files the sandbox
//! mounts from that directory at [`SANDBOX_DIR`]: the relay's config, the
//! `resolv.conf` that points lookups at the relay's DNS stub, and an
//! `/etc/hosts` that answers `localhost` without asking it. Both backends
//! start one per run of a `network = "allowlist"` profile, mount the
//! directory read-only, start the relay beside the script
//! ([`super::beside`]) and, at the end, [`EgressSession::finish`] gives
//! the report for the run's outcome.

use std::path::{Path, PathBuf};

use super::proxy::{HostProxy, HostProxyHandle};
use super::record::EgressReport;
use super::relay::RelayConfig;
use super::{EgressConfig, EgressError};

/// Where the session's directory appears inside the sandbox.
pub const SANDBOX_DIR: &str = "/run/scriptbox/egress";

/// Where the `scriptbox` binary appears inside the sandbox (the relay and
/// the init are this binary's hidden commands).
pub const SANDBOX_BINARY: &str = "/run/scriptbox/scriptbox";

/// A run's host proxy and the files its sandbox mounts.
pub struct EgressSession {
    dir: tempfile::TempDir,
    relay: RelayConfig,
    proxy: Option<HostProxyHandle>,
}

impl EgressSession {
    /// Makes the directory (readable by the sandbox's uid), starts the
    /// proxy on `proxy.sock` in it, and writes the relay's files. `handoff`
    /// off: the relay never asks for upstream sockets (under gVisor, where
    /// descriptors do not cross a host Unix socket).
    pub fn start(config: EgressConfig, handoff: bool) -> Result<EgressSession, EgressError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &str, e: std::io::Error| EgressError::Io(format!("{what}: {e}"));
        let dir = crate::dirs::temp_dir_with_mode("scriptbox-egress-", 0o755)
            .map_err(|e| io("creating the egress directory", e))?;
        let mut relay = RelayConfig::new(
            Path::new(SANDBOX_DIR).join("proxy.sock"),
            config.allow.clone(),
        );
        relay.handoff = handoff;
        let files = [
            (
                "relay.json",
                serde_json::to_string_pretty(&relay).map_err(|e| EgressError::Io(e.to_string()))?,
            ),
            ("resolv.conf", relay.resolv_conf()),
            (
                "hosts",
                "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tsandbox\n".to_string(),
            ),
        ];
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, text)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
                })
                .map_err(|e| io(&path.display().to_string(), e))?;
        }
        let proxy = HostProxy::start(config, &dir.path().join("proxy.sock"))?;
        Ok(EgressSession {
            dir,
            relay,
            proxy: Some(proxy),
        })
    }

    /// The directory to mount read-only at [`SANDBOX_DIR`].
    pub fn host_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Files to mount over the sandbox's own: (host file, sandbox path).
    pub fn etc_files(&self) -> Vec<(PathBuf, &'static str)> {
        vec![
            (self.dir.path().join("resolv.conf"), "/etc/resolv.conf"),
            (self.dir.path().join("hosts"), "/etc/hosts"),
        ]
    }

    /// The words that start the relay and then become the command after
    /// them; `drop_to` is the uid the relay takes when it starts as root.
    pub fn relay_prefix(&self, drop_to: Option<u32>) -> Vec<String> {
        let mut words = vec![
            SANDBOX_BINARY.to_string(),
            "egress-relay".into(),
            "--config".into(),
            format!("{SANDBOX_DIR}/relay.json"),
        ];
        if let Some(uid) = drop_to {
            words.extend(["--drop-to".into(), uid.to_string()]);
        }
        words.push("--".into());
        words
    }

    /// The variables that point proxy-aware clients at the relay.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.relay.proxy_env()
    }

    /// Stops the proxy and returns what it recorded.
    pub fn finish(mut self) -> EgressReport {
        self.proxy
            .take()
            .map(HostProxyHandle::finish)
            .unwrap_or_default()
    }
}
