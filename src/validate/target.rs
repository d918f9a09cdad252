//! The Python environment a script is validated against.
//!
//! An interpreter is asked once — with `-I -S`, so neither `site`, `.pth`
//! files nor anything of the user's is imported — for its version, its base
//! `sys.path`, the site-packages directories `site` would add, and the PEP 508
//! marker values. `.pth` path lines are then read here, never executed. The
//! answer is cached on disk, keyed by the interpreter file's identity, so
//! repeat validations do not pay for a Python start-up. A *bare* target (a
//! version with nothing installed) needs no interpreter at all.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder};
use serde::{Deserialize, Serialize};

use crate::cache::{read_json, sha256_hex, write_json};
use crate::validate::installed::InstalledIndex;

/// Version of the cached interpreter-description format; bump on change.
const CACHE_SCHEMA: u32 = 1;

/// The program run inside the target interpreter. Only the standard library
/// is imported, and `site` only for its path helpers (with `-S` it runs
/// nothing at import).
const QUERY: &str = r#"
import json, os, platform, site, sys, sysconfig
exe_dir = os.path.dirname(sys.executable)
cfg = None
for d in (exe_dir, os.path.dirname(exe_dir)):
    c = os.path.join(d, "pyvenv.cfg")
    if os.path.isfile(c):
        cfg = c
        break
prefixes = [sys.prefix]
system_site = True
if cfg:
    system_site = False
    with open(cfg, encoding="utf-8") as f:
        for line in f:
            k, _, v = line.partition("=")
            if k.strip().lower() == "include-system-site-packages":
                system_site = v.strip().lower() == "true"
    vp = os.path.dirname(cfg)
    prefixes = [vp] + ([sys.prefix] if system_site else [])
user = []
if system_site:
    try:
        user = [site.getusersitepackages()]
    except Exception:
        pass
impl = sys.implementation
iv = impl.version
impl_version = "%d.%d.%d" % iv[:3]
if iv.releaselevel != "final":
    impl_version += iv.releaselevel[0] + str(iv.serial)
print(json.dumps({
    "version": platform.python_version(),
    "executable": sys.executable,
    "base_path": [p for p in sys.path if p],
    "site_packages": user + site.getsitepackages(prefixes),
    "markers": {
        "implementation_name": impl.name,
        "implementation_version": impl_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"#;

/// Why a target environment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The interpreter path or name did not resolve to a file.
    #[error(
        "Python interpreter '{0}' not found (pass an interpreter, a venv directory, or --python-version X.Y)"
    )]
    NotFound(String),
    /// The interpreter could not be started.
    #[error("cannot run Python interpreter '{path}': {reason}")]
    Spawn {
        /// The interpreter.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The interpreter ran but did not answer as expected.
    #[error(
        "Python interpreter '{path}' did not describe itself ({reason}); is it CPython 3.8 or newer?"
    )]
    BadAnswer {
        /// The interpreter.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A `--python-version` that is not `3.N`.
    #[error("invalid Python version '{0}' (expected 3.N, e.g. 3.12)")]
    BadVersion(String),
}

/// PEP 508 marker values of an interpreter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkerValues {
    /// `implementation_name`
    pub implementation_name: String,
    /// `implementation_version`
    pub implementation_version: String,
    /// `os_name`
    pub os_name: String,
    /// `platform_machine`
    pub platform_machine: String,
    /// `platform_python_implementation`
    pub platform_python_implementation: String,
    /// `platform_release`
    pub platform_release: String,
    /// `platform_system`
    pub platform_system: String,
    /// `platform_version`
    pub platform_version: String,
    /// `python_full_version`
    pub python_full_version: String,
    /// `python_version`
    pub python_version: String,
    /// `sys_platform`
    pub sys_platform: String,
}

impl MarkerValues {
    /// Marker values of a CPython `version` on Linux x86_64, used for bare targets.
    pub fn linux_cpython(version: &str) -> MarkerValues {
        let short: Vec<&str> = version.split('.').take(2).collect();
        MarkerValues {
            implementation_name: "cpython".into(),
            implementation_version: version.into(),
            os_name: "posix".into(),
            platform_machine: "x86_64".into(),
            platform_python_implementation: "CPython".into(),
            platform_release: String::new(),
            platform_system: "Linux".into(),
            platform_version: String::new(),
            python_full_version: version.into(),
            python_version: short.join("."),
            sys_platform: "linux".into(),
        }
    }

    /// As a `pep508_rs` environment for evaluating requirement markers.
    pub fn environment(&self) -> Option<MarkerEnvironment> {
        MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: &self.implementation_name,
            implementation_version: &self.implementation_version,
            os_name: &self.os_name,
            platform_machine: &self.platform_machine,
            platform_python_implementation: &self.platform_python_implementation,
            platform_release: &self.platform_release,
            platform_system: &self.platform_system,
            platform_version: &self.platform_version,
            python_full_version: &self.python_full_version,
            python_version: &self.python_version,
            sys_platform: &self.sys_platform,
        })
        .ok()
    }
}

/// What an interpreter said about itself (cached on disk).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InterpreterInfo {
    /// [`CACHE_SCHEMA`] for cached entries; absent from the interpreter's answer.
    #[serde(default)]
    schema: u32,
    version: String,
    executable: String,
    base_path: Vec<PathBuf>,
    site_packages: Vec<PathBuf>,
    markers: MarkerValues,
}

/// A Python environment to validate scripts against.
#[derive(Debug, Clone)]
pub struct TargetPython {
    /// Full version, e.g. `3.11.7`.
    pub version: Version,
    /// CPython 3.x minor version, selecting the standard-library table.
    pub minor: u8,
    /// The interpreter, `None` for a bare target.
    pub executable: Option<PathBuf>,
    /// The import path: base `sys.path`, site-packages, and `.pth` additions.
    pub sys_path: Vec<PathBuf>,
    /// Marker values for evaluating requirement markers.
    pub markers: MarkerValues,
    /// What is installed along `sys_path`.
    pub installed: InstalledIndex,
}

impl TargetPython {
    /// A CPython `3.N` with nothing installed, for checking a script against a
    /// version no local interpreter provides.
    pub fn bare(version: &str) -> Result<TargetPython, TargetError> {
        let bad = || TargetError::BadVersion(version.to_string());
        let (major, minor) = version.split_once('.').ok_or_else(bad)?;
        let minor: u8 = minor.parse().map_err(|_| bad())?;
        if major != "3" || minor > 99 {
            return Err(bad());
        }
        let full = format!("3.{minor}");
        Ok(TargetPython {
            version: Version::from_str(&full).map_err(|_| bad())?,
            minor,
            executable: None,
            sys_path: Vec::new(),
            markers: MarkerValues::linux_cpython(&full),
            installed: InstalledIndex::default(),
        })
    }

    /// The Python of an image, from the manifest recorded at build time:
    /// CPython `version` (X.Y.Z) with `installed` on its path.
    pub fn from_manifest(
        version: &str,
        installed: InstalledIndex,
    ) -> Result<TargetPython, TargetError> {
        let bad = || TargetError::BadVersion(version.to_string());
        let parsed = Version::from_str(version).map_err(|_| bad())?;
        let release = parsed.release();
        if release.first() != Some(&3) || release.len() < 2 {
            return Err(bad());
        }
        let minor = u8::try_from(release[1]).map_err(|_| bad())?;
        Ok(TargetPython {
            version: parsed,
            minor,
            executable: None,
            sys_path: Vec::new(),
            markers: MarkerValues::linux_cpython(version),
            installed,
        })
    }

    /// Describes the interpreter at `spec`: a path to an interpreter, a venv
    /// directory, or a command name looked up on `PATH`.
    pub fn from_interpreter(
        spec: &str,
        cache_dir: Option<&Path>,
    ) -> Result<TargetPython, TargetError> {
        let exe = resolve_interpreter(spec)?;
        let info = match cache_dir.and_then(|dir| cache_key(&exe).map(|k| (dir, k))) {
            Some((dir, key)) => {
                let file = dir.join("interpreters").join(format!("{key}.json"));
                match read_cached(&file) {
                    Some(info) => info,
                    None => {
                        let info = query(&exe)?;
                        write_json(&file, &info);
                        info
                    }
                }
            }
            // A launcher script (pyenv's shim): its answer is kept briefly.
            None => match cache_dir.zip(crate::cache::script_identity(&exe)) {
                Some((dir, key)) => {
                    let file = dir.join("interpreters").join(format!("script-{key}.json"));
                    match crate::cache::read_json_fresh::<InterpreterInfo>(
                        &file,
                        crate::cache::SCRIPT_ANSWER_TTL,
                    )
                    .filter(|info| info.schema == CACHE_SCHEMA)
                    {
                        Some(info) => info,
                        None => {
                            let info = query(&exe)?;
                            write_json(&file, &info);
                            info
                        }
                    }
                }
                None => query(&exe)?,
            },
        };
        let bad = |reason: String| TargetError::BadAnswer {
            path: exe.display().to_string(),
            reason,
        };
        let version = Version::from_str(&info.version).map_err(|e| bad(e.to_string()))?;
        let release = version.release();
        if release.first() != Some(&3) || release.len() < 2 {
            return Err(bad(format!("version {} is not Python 3", info.version)));
        }
        let minor =
            u8::try_from(release[1]).map_err(|_| bad("minor version out of range".into()))?;
        let sys_path = full_sys_path(&info);
        let installed = InstalledIndex::scan_cached(&sys_path, cache_dir);
        Ok(TargetPython {
            version,
            minor,
            executable: Some(PathBuf::from(info.executable)),
            sys_path,
            markers: info.markers,
            installed,
        })
    }
}

/// Finds the interpreter file for `spec` without resolving symlinks (a venv's
/// `bin/python` is a symlink whose location is what makes it a venv).
fn resolve_interpreter(spec: &str) -> Result<PathBuf, TargetError> {
    let path = Path::new(spec);
    let not_found = || TargetError::NotFound(spec.to_string());
    if path.is_dir() {
        for candidate in ["bin/python3", "bin/python", "Scripts/python.exe"] {
            let exe = path.join(candidate);
            if exe.is_file() {
                return Ok(absolute(&exe));
            }
        }
        return Err(not_found());
    }
    if spec.contains('/') {
        return if path.is_file() {
            Ok(absolute(path))
        } else {
            Err(not_found())
        };
    }
    let search = std::env::var_os("PATH").ok_or_else(not_found)?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(spec))
        .find(|candidate| candidate.is_file())
        .map(|p| absolute(&p))
        .ok_or_else(not_found)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A cache key identifying the interpreter file and its venv configuration,
/// or `None` when the file is a script (a pyenv-style shim picks a different
/// interpreter per directory and environment, so its answer cannot be cached).
fn cache_key(exe: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let real = fs::canonicalize(exe).ok()?;
    let mut head = [0u8; 2];
    let mut file = fs::File::open(&real).ok()?;
    std::io::Read::read_exact(&mut file, &mut head).ok()?;
    if &head == b"#!" {
        return None;
    }
    let meta = fs::metadata(&real).ok()?;
    let mut key = format!(
        "{CACHE_SCHEMA}\0{}\0{}\0{}\0{}\0{}\0{}\0",
        exe.display(),
        real.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    );
    let exe_dir = exe.parent()?;
    for dir in [Some(exe_dir), exe_dir.parent()].into_iter().flatten() {
        if let Ok(cfg) = fs::read_to_string(dir.join("pyvenv.cfg")) {
            key.push_str(&cfg);
            break;
        }
    }
    Some(sha256_hex(key.as_bytes()))
}

fn read_cached(file: &Path) -> Option<InterpreterInfo> {
    read_json::<InterpreterInfo>(file).filter(|info| info.schema == CACHE_SCHEMA)
}

/// Upper bound on an interpreter's self-description; real ones are ~2 KiB.
const MAX_QUERY_OUTPUT: usize = 1024 * 1024;

fn query(exe: &Path) -> Result<InterpreterInfo, TargetError> {
    let path = exe.display().to_string();
    let output = Command::new(exe)
        .args(["-I", "-S", "-c", QUERY])
        .stdin(Stdio::null())
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .output()
        .map_err(|e| TargetError::Spawn {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let bad = |reason: String| TargetError::BadAnswer {
        path: path.clone(),
        reason,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no output").to_string();
        return Err(bad(format!("exited with {}: {last}", output.status)));
    }
    if output.stdout.len() > MAX_QUERY_OUTPUT {
        return Err(bad("answer too large".into()));
    }
    let mut info: InterpreterInfo = serde_json::from_slice(&output.stdout)
        .map_err(|e| bad(format!("unreadable answer: {e}")))?;
    info.schema = CACHE_SCHEMA;
    Ok(info)
}

/// Base `sys.path`, then each existing site-packages directory followed by
/// the directories its `.pth` files add — as `site` would, without running
/// the `import` lines `.pth` files may contain.
fn full_sys_path(info: &InterpreterInfo) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if seen.insert(p.clone()) {
            out.push(p);
        }
    };
    for p in &info.base_path {
        push(p.clone(), &mut out);
    }
    for site in &info.site_packages {
        if !site.is_dir() {
            continue;
        }
        push(site.clone(), &mut out);
        for extra in pth_directories(site) {
            push(extra, &mut out);
        }
    }
    out
}

fn pth_directories(site: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(site) else {
        return Vec::new();
    };
    let mut pth: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pth"))
        .collect();
    pth.sort();
    let mut dirs = Vec::new();
    for file in pth {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().take(10_000) {
            let line = line.trim_end();
            if line.is_empty()
                || line.starts_with('#')
                || line.starts_with("import ")
                || line.starts_with("import\t")
            {
                continue;
            }
            let dir = site.join(line);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_targets() {
        let t = TargetPython::bare("3.13").unwrap();
        assert_eq!(t.minor, 13);
        assert!(t.installed.is_empty());
        assert!(t.markers.environment().is_some());
        assert!(TargetPython::bare("2.7").is_err());
        assert!(TargetPython::bare("three").is_err());
    }

    #[test]
    fn missing_interpreter() {
        assert!(matches!(
            TargetPython::from_interpreter("/nonexistent/python3", None),
            Err(TargetError::NotFound(_))
        ));
    }

    #[test]
    fn pth_lines_are_read_not_run() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("extra")).unwrap();
        fs::write(
            dir.path().join("a.pth"),
            "# comment\nextra\nimport os; os.system('false')\nmissing\n",
        )
        .unwrap();
        assert_eq!(pth_directories(dir.path()), vec![dir.path().join("extra")]);
    }
}
