//! What the target environment has installed, read from files alone.
//!
//! Each `sys.path` directory is listed once. Installed distributions are read
//! from their `*.dist-info` / `*.egg-info` metadata — PEP 794 `Import-Name`
//! when present, else the RECORD (or `installed-files.txt`) file list, else
//! `top_level.txt` — and nothing is ever imported. Import paths resolve by
//! longest dotted prefix, so namespace packages map to the right distribution
//! (`google.protobuf` → protobuf, `google.cloud.storage` →
//! google-cloud-storage). Modules sitting on `sys.path` without metadata
//! (copied in by hand) still count as importable.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{read_json, sha256_hex, write_json};
use crate::validate::names::normalize_distribution;
use crate::validate::source::open_regular;

/// Version of the cached index format; bump on change.
const INDEX_CACHE_SCHEMA: u32 = 1;

/// Upper bound on bytes read from one metadata file: RECORD files of large
/// wheels are a few MiB; anything larger is not a real RECORD.
const MAX_METADATA_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One installed distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledDistribution {
    /// The name as the distribution spells it (`PyYAML`).
    pub name: String,
    /// The version from its metadata, when readable.
    pub version: Option<String>,
}

/// The installed distributions and importable modules of a set of `sys.path`
/// directories.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InstalledIndex {
    dists: Vec<InstalledDistribution>,
    /// Dotted module roots (packages with `__init__`, or modules) → dists.
    roots: HashMap<String, Vec<usize>>,
    /// Namespace package prefixes (no `__init__`) → dists contributing to them.
    namespaces: HashMap<String, Vec<usize>>,
    /// PEP 503-normalised distribution name → dist.
    by_name: HashMap<String, usize>,
    /// Top-level names importable from the listed directories, metadata or not.
    on_path: HashSet<String>,
}

/// The outcome of looking a module up in an [`InstalledIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstalledMatch<'a> {
    /// One or more distributions provide the module (more than one when, say,
    /// opencv-python and opencv-python-headless are both installed).
    Distributions(Vec<&'a InstalledDistribution>),
    /// Importable from `sys.path`, but no distribution metadata claims it.
    Unowned,
}

impl InstalledIndex {
    /// Indexes the given `sys.path` directories, first entry first: when a
    /// distribution appears twice, the earlier one shadows the later.
    pub fn scan(paths: &[PathBuf]) -> InstalledIndex {
        let mut index = InstalledIndex::default();
        for dir in paths {
            index.scan_dir(dir);
        }
        index
    }

    /// Like [`InstalledIndex::scan`], but answered from the cache directory
    /// while no listed directory has changed. Installing, upgrading or
    /// removing a distribution adds or removes entries in its directory,
    /// which changes the directory's modification time and so the key.
    pub fn scan_cached(paths: &[PathBuf], cache_dir: Option<&Path>) -> InstalledIndex {
        let Some(dir) = cache_dir else {
            return InstalledIndex::scan(paths);
        };
        let file = dir
            .join("installed")
            .join(format!("{}.json", index_key(paths)));
        if let Some(index) = read_json::<InstalledIndex>(&file) {
            return index;
        }
        let index = InstalledIndex::scan(paths);
        write_json(&file, &index);
        index
    }

    /// Looks up a dotted module path by its longest indexed prefix.
    pub fn lookup(&self, module: &str) -> Option<InstalledMatch<'_>> {
        let mut prefix = module;
        loop {
            if let Some(ids) = self.roots.get(prefix) {
                return Some(self.dists_of(ids));
            }
            match prefix.rfind('.') {
                Some(dot) => prefix = &prefix[..dot],
                None => break,
            }
        }
        // `import google` alone succeeds when any distribution contributes to
        // the namespace; a deeper path under a namespace is not provided by
        // anything found above.
        if let Some(ids) = self.namespaces.get(module) {
            return Some(self.dists_of(ids));
        }
        let top = module.split('.').next().unwrap_or(module);
        if !self.namespaces.contains_key(top) && self.on_path.contains(top) {
            return Some(InstalledMatch::Unowned);
        }
        None
    }

    /// True when `module` is a namespace package some distribution contributes to.
    pub fn is_namespace(&self, module: &str) -> bool {
        self.namespaces.contains_key(module)
    }

    /// The installed distribution with this (PEP 503-equivalent) name.
    pub fn distribution(&self, name: &str) -> Option<&InstalledDistribution> {
        self.by_name
            .get(&normalize_distribution(name))
            .map(|&i| &self.dists[i])
    }

    /// Number of distributions found.
    pub fn len(&self) -> usize {
        self.dists.len()
    }

    /// True when no distribution was found.
    pub fn is_empty(&self) -> bool {
        self.dists.is_empty()
    }

    /// Every distribution found, in `sys.path` order.
    pub fn distributions(&self) -> &[InstalledDistribution] {
        &self.dists
    }

    /// Adds `lower`'s contents behind this index's, as if its directories
    /// came later on `sys.path` (an image layer over its base).
    pub fn merge(&mut self, lower: InstalledIndex) {
        let mut ids = Vec::with_capacity(lower.dists.len());
        for (old, dist) in lower.dists.into_iter().enumerate() {
            let normalized = normalize_distribution(&dist.name);
            if let Some(&existing) = self.by_name.get(&normalized) {
                ids.push((old, None, existing));
                continue; // shadowed by the upper layer
            }
            let id = self.dists.len();
            self.dists.push(dist);
            self.by_name.insert(normalized, id);
            ids.push((old, Some(id), id));
        }
        let remap = |old: &usize| ids.iter().find(|(o, new, _)| o == old && new.is_some());
        for (module, owners) in lower.roots {
            let mapped: Vec<usize> = owners.iter().filter_map(remap).map(|t| t.2).collect();
            if !mapped.is_empty() {
                self.roots.entry(module).or_default().extend(mapped);
            }
        }
        for (ns, owners) in lower.namespaces {
            let entry = self.namespaces.entry(ns).or_default();
            for id in owners.iter().filter_map(remap).map(|t| t.2) {
                if !entry.contains(&id) {
                    entry.push(id);
                }
            }
        }
        self.on_path.extend(lower.on_path);
    }

    fn dists_of(&self, ids: &[usize]) -> InstalledMatch<'_> {
        InstalledMatch::Distributions(ids.iter().map(|&i| &self.dists[i]).collect())
    }

    fn scan_dir(&mut self, dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut metadata_dirs = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if name.ends_with(".dist-info") || name.ends_with(".egg-info") {
                metadata_dirs.push(entry.path());
            } else if let Some(module) = module_name_of_entry(name, is_dir) {
                self.on_path.insert(module.to_string());
            }
        }
        // Sorted so that the result does not depend on directory order.
        metadata_dirs.sort();
        for meta in metadata_dirs {
            self.add_distribution(dir, &meta);
        }
    }

    fn add_distribution(&mut self, site: &Path, meta: &Path) {
        let is_egg = meta.extension().is_some_and(|e| e == "egg-info");
        // An egg-info may be a single PKG-INFO-style file instead of a directory.
        let headers_file = if meta.is_dir() {
            meta.join(if is_egg { "PKG-INFO" } else { "METADATA" })
        } else {
            meta.to_path_buf()
        };
        let headers = read_headers(&headers_file);
        let Some(name) = headers.name.or_else(|| name_from_metadata_dir(meta)) else {
            return;
        };
        let normalized = normalize_distribution(&name);
        if self.by_name.contains_key(&normalized) {
            return; // shadowed by an earlier sys.path entry
        }
        let id = self.dists.len();
        self.dists.push(InstalledDistribution {
            name,
            version: headers.version,
        });
        self.by_name.insert(normalized.clone(), id);

        let mut modules = ModuleSet::default();
        if let Some(import_names) = headers.import_names {
            // PEP 794: authoritative when present, even when empty.
            for n in import_names {
                modules.roots.insert(n);
            }
        } else if meta.is_dir() {
            if !is_egg {
                if let Some(paths) = read_record_paths(&meta.join("RECORD")) {
                    modules = modules_from_paths(paths.iter().map(String::as_str));
                }
            } else if let Some(paths) = read_lines(&meta.join("installed-files.txt")) {
                // Paths there are relative to the egg-info directory.
                let rel = relative_to_site(site, meta, &paths);
                modules = modules_from_paths(rel.iter().map(String::as_str));
            }
            if modules.roots.is_empty()
                && let Some(tops) = read_lines(&meta.join("top_level.txt"))
            {
                modules.roots.extend(
                    tops.into_iter()
                        .map(|t| t.trim().replace('/', "."))
                        .filter(|t| !t.is_empty()),
                );
            }
        }
        if modules.roots.is_empty() && modules.namespaces.is_empty() {
            // Nothing better known: assume the conventional import name.
            modules.roots.insert(normalized.replace('-', "_"));
        }
        for root in modules.roots {
            self.roots.entry(root).or_default().push(id);
        }
        for ns in modules.namespaces {
            let ids = self.namespaces.entry(ns).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
}

/// Cache key of an index: the schema and each directory's path and
/// modification time.
fn index_key(paths: &[PathBuf]) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut key = format!("{INDEX_CACHE_SCHEMA}\0");
    for path in paths {
        let stamp = fs::metadata(path).map_or((0, 0, 0), |m| (m.mtime(), m.mtime_nsec(), m.ino()));
        key.push_str(&format!("{}\0{:?}\0", path.display(), stamp));
    }
    sha256_hex(key.as_bytes())
}

/// The importable module a directory entry provides, if any: a package
/// directory, `name.py`/`name.pyc`, or an extension module
/// (`name.cpython-311-x86_64-linux-gnu.so`, `name.pyd`).
pub(crate) fn module_name_of_entry(name: &str, is_dir: bool) -> Option<&str> {
    let stem = if is_dir {
        name
    } else {
        let dot = name.find('.')?;
        let ext = name.rsplit('.').next().unwrap_or("");
        if !matches!(ext, "py" | "pyc" | "so" | "pyd") {
            return None;
        }
        &name[..dot]
    };
    is_identifier(stem).then_some(stem)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

#[derive(Default)]
struct Headers {
    name: Option<String>,
    version: Option<String>,
    import_names: Option<Vec<String>>,
}

/// Reads the RFC 822 header block of METADATA / PKG-INFO (not the body).
fn read_headers(path: &Path) -> Headers {
    let mut headers = Headers::default();
    let Ok((file, _)) = open_regular(path) else {
        return headers;
    };
    use std::io::Read;
    let reader = BufReader::new(file.take(MAX_METADATA_FILE_BYTES));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.to_ascii_lowercase().as_str() {
            "name" => headers.name = Some(value.to_string()),
            "version" => headers.version = Some(value.to_string()),
            "import-name" | "import-namespace" => {
                let names = headers.import_names.get_or_insert_with(Vec::new);
                // `Import-Name: foo; private` — the marker does not matter here.
                let name = value.split(';').next().unwrap_or("").trim();
                if !name.is_empty() {
                    names.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    headers
}

/// `foo_bar-1.2.dist-info` → `foo_bar`.
fn name_from_metadata_dir(meta: &Path) -> Option<String> {
    let stem = meta.file_stem()?.to_str()?;
    Some(stem.split('-').next()?.to_string())
}

fn read_lines(path: &Path) -> Option<Vec<String>> {
    use std::io::Read;
    let (file, _) = open_regular(path).ok()?;
    let mut text = String::new();
    file.take(MAX_METADATA_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// The first (path) column of each RECORD row; the CSV quoting only matters
/// for paths containing commas or quotes.
fn read_record_paths(path: &Path) -> Option<Vec<String>> {
    let lines = read_lines(path)?;
    Some(
        lines
            .into_iter()
            .filter_map(|line| {
                if let Some(rest) = line.strip_prefix('"') {
                    let mut out = String::new();
                    let mut chars = rest.chars().peekable();
                    while let Some(c) = chars.next() {
                        if c == '"' {
                            if chars.peek() == Some(&'"') {
                                chars.next();
                                out.push('"');
                            } else {
                                break;
                            }
                        } else {
                            out.push(c);
                        }
                    }
                    Some(out)
                } else {
                    line.split(',').next().map(str::to_string)
                }
            })
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

fn relative_to_site(site: &Path, meta: &Path, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| {
            let joined = meta.join(p);
            let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
            for comp in joined.components() {
                match comp {
                    std::path::Component::ParentDir => {
                        parts.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => parts.push(other.as_os_str()),
                }
            }
            let normalized: PathBuf = parts.iter().collect();
            normalized
                .strip_prefix(site)
                .ok()
                .and_then(|r| r.to_str())
                .map(str::to_string)
        })
        .collect()
}

#[derive(Default, Debug, PartialEq, Eq)]
struct ModuleSet {
    roots: HashSet<String>,
    namespaces: HashSet<String>,
}

/// Derives dotted module roots from installed file paths: the shallowest
/// directory with an `__init__` makes a root; directories above it without
/// one are namespace packages; a module file outside any regular package is
/// a root of its own.
fn modules_from_paths<'p>(paths: impl Iterator<Item = &'p str>) -> ModuleSet {
    let files: Vec<&str> = paths
        .filter(|p| {
            !p.starts_with("..")
                && !p.starts_with('/')
                && !p.contains("__pycache__")
                && !p.contains(".dist-info/")
                && !p.contains(".egg-info/")
                && !p.contains(".data/")
        })
        .collect();
    let packages: HashSet<&str> = files
        .iter()
        .filter_map(|p| {
            let (dir, file) = p.rsplit_once('/')?;
            let stem = file.split('.').next()?;
            (stem == "__init__").then_some(dir)
        })
        .collect();
    let mut set = ModuleSet::default();
    for path in files {
        let (dirs, file) = match path.rsplit_once('/') {
            Some((d, f)) => (d, f),
            None => ("", path),
        };
        let Some(module) = module_name_of_entry(file, false) else {
            continue;
        };
        if dirs.is_empty() {
            set.roots.insert(module.to_string());
            continue;
        }
        // Find the shallowest regular package containing the file.
        let components: Vec<&str> = dirs.split('/').collect();
        if !components.iter().all(|c| is_identifier(c)) {
            continue; // not importable (e.g. `bin/`, `share/`, `foo-1.0/`)
        }
        let mut root = None;
        for depth in 1..=components.len() {
            let dir = components[..depth].join("/");
            if packages.contains(dir.as_str()) {
                root = Some(depth);
                break;
            }
            set.namespaces.insert(components[..depth].join("."));
        }
        match root {
            Some(depth) => {
                set.roots.insert(components[..depth].join("."));
            }
            None => {
                // A module directly inside a namespace package.
                let mut dotted = components.join(".");
                if module != "__init__" {
                    dotted.push('.');
                    dotted.push_str(module);
                }
                set.roots.insert(dotted);
            }
        }
    }
    set.namespaces.retain(|ns| !set.roots.contains(ns));
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(paths: &[&str]) -> (Vec<String>, Vec<String>) {
        let set = modules_from_paths(paths.iter().copied());
        let mut r: Vec<String> = set.roots.into_iter().collect();
        let mut n: Vec<String> = set.namespaces.into_iter().collect();
        r.sort();
        n.sort();
        (r, n)
    }

    #[test]
    fn regular_packages_and_modules() {
        let (r, n) = roots(&[
            "yaml/__init__.py",
            "yaml/composer.py",
            "_yaml/__init__.py",
            "six.py",
            "PyYAML-6.0.dist-info/RECORD",
            "../../bin/tool",
            "numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
            "numpy/__init__.py",
        ]);
        assert_eq!(r, ["_yaml", "numpy", "six", "yaml"]);
        assert!(n.is_empty());
    }

    #[test]
    fn namespace_packages() {
        let (r, n) = roots(&[
            "google/cloud/storage/__init__.py",
            "google/cloud/storage/blob.py",
            "google/protobuf/__init__.py",
        ]);
        assert_eq!(r, ["google.cloud.storage", "google.protobuf"]);
        assert_eq!(n, ["google", "google.cloud"]);
    }

    #[test]
    fn entries_on_path() {
        assert_eq!(module_name_of_entry("foo.py", false), Some("foo"));
        assert_eq!(
            module_name_of_entry("_cffi_backend.cpython-311-x86_64-linux-gnu.so", false),
            Some("_cffi_backend")
        );
        assert_eq!(module_name_of_entry("pkg", true), Some("pkg"));
        assert_eq!(module_name_of_entry("LICENSE", false), None);
        assert_eq!(
            module_name_of_entry("distutils-precedence.pth", false),
            None
        );
        assert_eq!(module_name_of_entry("README.txt", false), None);
        assert_eq!(module_name_of_entry("foo-1.0.dist-info", true), None);
    }
}
