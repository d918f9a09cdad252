//! Where scriptbox keeps data that is not cache: records such as the audit
//! log (and, with the service, its store). Unlike the cache directory
//! ([`crate::cache::default_cache_dir`]), nothing here may be deleted
//! without losing history. Also how scriptbox makes the temporary
//! directories it shares with a sandbox, each with an exact mode.

use std::path::PathBuf;

/// The data directory: `$SCRIPTBOX_DATA_DIR`, else
/// `$XDG_DATA_HOME/scriptbox`, else `~/.local/share/scriptbox`; absolute, so
/// a process that changes directory keeps writing to the same place. `None`
/// when none of these variables is set (or set empty).
pub fn data_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = if let Some(dir) = var("SCRIPTBOX_DATA_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = var("XDG_DATA_HOME") {
        PathBuf::from(dir).join("scriptbox")
    } else {
        PathBuf::from(var("HOME")?)
            .join(".local")
            .join("share")
            .join("scriptbox")
    };
    std::path::absolute(&dir).ok()
}

/// A new temporary directory (`prefix` then random) whose mode is exactly
/// `mode`, whatever the umask: run and egress directories must be readable
/// by the sandbox's uid (0755), an init's report directory by root alone
/// (0700).
pub fn temp_dir_with_mode(prefix: &str, mode: u32) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode))?;
    Ok(dir)
}
