//! Where scriptbox keeps data that is not cache: records such as the audit
//! log (and, with the service, its store). Unlike the cache directory
//! ([`crate::cache::default_cache_dir`]), nothing here may be deleted
//! without losing history.

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
