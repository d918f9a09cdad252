//! The OS-package layer of an environment image, built with no network.
//!
//! A policy's allow entry may name Debian packages a Python package needs
//! (`system = ["libta-lib0"]`). The image build has no network, so the
//! `.deb` files are fetched on the host and sent in the build context:
//! - the base image's dpkg status file is read from the image (through a
//!   container that is created, never started), so that apt resolves exactly
//!   what the image lacks;
//! - the host's apt downloads those packages and their missing dependencies
//!   (`apt-get install --download-only` against that status file; the host's
//!   apt sources must be the image's Debian release, and its package lists
//!   current: `apt-get update`);
//! - where the host cannot reach a package mirror either, the files are
//!   taken from the directory named by `SCRIPTBOX_DEB_DIR` instead;
//! - in the build, one `RUN dpkg -i` installs them as root, and the image's
//!   user is restored.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::BuildError;
use super::scratch::cache_err;
use crate::engine::Engine;

/// Environment variable naming a directory of `.deb` files to use instead
/// of downloading them.
pub const DEB_DIR_VAR: &str = "SCRIPTBOX_DEB_DIR";

/// Puts into `debs` the `.deb` files that `packages` need on top of
/// `base_image`; returns their file names (empty when the image has them).
pub fn fetch_debs(
    engine: &Engine,
    base_image: &str,
    packages: &[String],
    scratch: &Path,
    debs: &Path,
) -> Result<Vec<String>, BuildError> {
    if let Some(bad) = packages.iter().find(|p| !is_debian_name(p)) {
        return Err(BuildError::Step {
            step: "fetching system packages".into(),
            detail: format!("'{bad}' is not a Debian package name"),
        });
    }
    fs::create_dir_all(debs.join("partial")).map_err(|e| cache_err(debs, e))?;
    if let Some(dir) = std::env::var_os(DEB_DIR_VAR) {
        let dir = Path::new(&dir);
        for entry in fs::read_dir(dir).map_err(|e| cache_err(dir, e))?.flatten() {
            if entry.path().extension().is_some_and(|x| x == "deb") {
                let dest = debs.join(entry.file_name());
                fs::copy(entry.path(), &dest).map_err(|e| cache_err(&dest, e))?;
            }
        }
    } else {
        let status = engine.read_file(base_image, "/var/lib/dpkg/status")?;
        let status_file = scratch.join("dpkg-status");
        fs::write(&status_file, status).map_err(|e| cache_err(&status_file, e))?;
        let out = Command::new("apt-get")
            .args(["install", "--download-only", "--no-install-recommends", "-y", "-qq"])
            .arg(format!("-oDir::State::status={}", status_file.display()))
            .arg(format!("-oDir::Cache::archives={}", debs.display()))
            .arg("-oDebug::NoLocking=true")
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| BuildError::Step {
                step: "fetching system packages".into(),
                detail: format!(
                    "cannot run apt-get ({e}); system packages need Debian's apt on the host, or {DEB_DIR_VAR} naming a directory of .deb files"
                ),
            })?;
        if !out.status.success() {
            return Err(BuildError::Step {
                step: format!("fetching system packages {}", packages.join(" ")),
                detail: format!(
                    "{}\n(is the host's package list current? `apt-get update`; or set {DEB_DIR_VAR})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    let _ = fs::remove_dir_all(debs.join("partial"));
    let _ = fs::remove_file(debs.join("lock"));
    let mut names: Vec<String> = fs::read_dir(debs)
        .map_err(|e| cache_err(debs, e))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".deb"))
        .collect();
    names.sort();
    if let Some(absent) = packages
        .iter()
        .find(|p| !names.iter().any(|n| n.starts_with(&format!("{p}_"))))
        && std::env::var_os(DEB_DIR_VAR).is_some()
    {
        return Err(BuildError::Step {
            step: "fetching system packages".into(),
            detail: format!("{DEB_DIR_VAR} holds no {absent}_*.deb"),
        });
    }
    Ok(names)
}

/// Debian package names: lower-case letters, digits, `+ - .`, starting
/// with a letter or digit (Debian policy 5.6.1).
fn is_debian_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// The Dockerfile lines installing the `.deb` files of `debs/` as root and
/// restoring `user`.
pub fn dockerfile_lines(user: &str) -> String {
    format!(
        "COPY debs/ /tmp/scriptbox-debs/\nUSER 0:0\nRUN PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin dpkg -i /tmp/scriptbox-debs/*.deb && rm -rf /tmp/scriptbox-debs\nUSER {user}\n"
    )
}
