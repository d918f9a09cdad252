//! Reading a policy file and checking everything about it in one pass.
//!
//! serde stops at the first problem; administrators want all of them at
//! once, each with its line and column. So the file is parsed with
//! `toml_edit`, which keeps every key's and value's span, and walked by hand:
//! each unknown key, wrong type, bad specifier, size or duration, duplicate,
//! contradiction and missing piece becomes one [`Diagnostic`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use pep508_rs::PackageName;
use pep508_rs::pep440_rs::VersionSpecifiers;
use ruff_source_file::LineIndex;
use ruff_text_size::TextSize;
use toml_edit::{Item, TableLike, Value};

use super::{
    AllowEntry, DEFAULT_INDEX, DEFAULT_PLATFORM, DenyEntry, Diagnostic, InstallOptions, Isolation,
    Network, Policy, Position, Profile, PythonTarget, Severity,
};
use crate::units::{parse_duration, parse_size};

/// Largest policy file read (a 5,000-entry policy is about 300 KiB).
const MAX_POLICY_BYTES: u64 = 16 * 1024 * 1024;

/// Why a policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("{}: cannot read policy: {reason}", path.display())]
    Unreadable {
        /// The policy file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file has errors (and maybe warnings).
    #[error("{} has {} error(s)", path.display(), diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// Everything found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Reads and checks the policy at `path`. On success, warnings (if any) come
/// with the policy.
pub fn load(path: &Path) -> Result<(Policy, Vec<Diagnostic>), PolicyLoadError> {
    let text = read_policy_text(path)?;
    load_text(path, &text)
}

/// Reads a policy file's text: a regular file, at most 16 MiB, UTF-8.
pub fn read_policy_text(path: &Path) -> Result<String, PolicyLoadError> {
    let unreadable = |reason: String| PolicyLoadError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let (file, meta) =
        crate::validate::source::open_regular(path).map_err(|e| unreadable(e.to_string()))?;
    if meta.len() > MAX_POLICY_BYTES {
        return Err(unreadable(format!(
            "{} bytes is larger than the {MAX_POLICY_BYTES}-byte limit",
            meta.len()
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_POLICY_BYTES), &mut text)
        .map_err(|e| unreadable(format!("{e} (expected UTF-8 TOML)")))?;
    Ok(text)
}

/// Checks policy text as if read from `path` (whose stem names the policy).
pub fn load_text(path: &Path, text: &str) -> Result<(Policy, Vec<Diagnostic>), PolicyLoadError> {
    let mut reader = Reader {
        file: path.to_path_buf(),
        text,
        index: LineIndex::from_source_text(text),
        diagnostics: Vec::new(),
    };
    let policy = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => reader.policy(path, doc.as_table()),
        Err(e) => {
            reader.error(e.span(), format!("invalid TOML: {}", e.message().trim()));
            None
        }
    };
    reader.diagnostics.sort_by_key(|d| (d.line, d.column));
    match policy {
        Some(policy)
            if !reader
                .diagnostics
                .iter()
                .any(|d| d.severity == Severity::Error) =>
        {
            let mut policy = policy;
            let mut warnings = reader.diagnostics;
            warnings.extend(lock_staleness(&policy));
            policy.lock = super::lock::Lock::for_policy(&policy);
            Ok((policy, warnings))
        }
        _ => Err(PolicyLoadError::Invalid {
            path: path.to_path_buf(),
            diagnostics: reader.diagnostics,
        }),
    }
}

/// A warning when the lock beside the policy was made from another version
/// of it.
fn lock_staleness(policy: &Policy) -> Option<Diagnostic> {
    let lock = std::fs::read_to_string(policy.lock_path()).ok()?;
    let recorded = lock
        .lines()
        .take(20)
        .find_map(|l| l.strip_prefix("# policy-digest: "))?
        .trim()
        .to_string();
    let digest = policy.digest();
    (recorded != digest).then(|| Diagnostic {
        file: policy.path.clone(),
        line: 1,
        column: 1,
        severity: Severity::Warning,
        message: format!(
            "lock {} is stale (made from policy digest {}, now {}): run `scriptbox policy lock --policy {}`",
            policy.lock_path().display(),
            short(&recorded),
            short(&digest),
            policy.name
        ),
    })
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

struct Reader<'a> {
    file: PathBuf,
    text: &'a str,
    index: LineIndex,
    diagnostics: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &[
    "python",
    "install",
    "preinstalled",
    "allow",
    "deny",
    "profiles",
];
const PYTHON_KEYS: &[&str] = &["version", "platform"];
const INSTALL_KEYS: &[&str] = &["auto_install", "wheels_only", "index", "exclude_newer"];
const ALLOW_KEYS: &[&str] = &["name", "version", "system", "note"];
const DENY_KEYS: &[&str] = &["name", "reason"];
const PROFILE_KEYS: &[&str] = &[
    "memory",
    "cpus",
    "pids",
    "wall_time",
    "output",
    "tmp",
    "network",
    "isolation",
    "egress",
    "egress_private",
    "egress_resolve",
    "egress_connections",
    "egress_bytes",
];

/// The profile keys that only mean something with `network = "allowlist"`.
const EGRESS_KEYS: &[&str] = &[
    "egress",
    "egress_private",
    "egress_resolve",
    "egress_connections",
    "egress_bytes",
];

/// What `network =` says, before the egress keys are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkKind {
    None,
    Allowlist,
}

impl Reader<'_> {
    fn position(&self, span: Option<Range<usize>>) -> Position {
        let offset = span.map_or(0, |s| s.start.min(self.text.len()));
        let lc = self
            .index
            .line_column(TextSize::new(offset as u32), self.text);
        Position {
            line: lc.line.get() as u32,
            column: lc.column.get() as u32,
        }
    }

    fn push(&mut self, severity: Severity, span: Option<Range<usize>>, message: String) {
        let at = self.position(span);
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            severity,
            message,
        });
    }

    fn error(&mut self, span: Option<Range<usize>>, message: String) {
        self.push(Severity::Error, span, message);
    }

    /// Reports keys of `table` not in `known`, naming what was expected.
    fn unknown_keys(&mut self, table: &dyn TableLike, where_: &str, known: &[&str]) {
        for (key, _) in table.iter() {
            if !known.contains(&key) {
                let span = table.get_key_value(key).and_then(|(k, _)| k.span());
                // A top-level key written after a [table] header lands in that table.
                let hint = if TOP_KEYS.contains(&key) && known != TOP_KEYS {
                    format!(
                        "; top-level keys like '{key}' must come before the first [table] header"
                    )
                } else {
                    String::new()
                };
                self.error(
                    span,
                    format!(
                        "unknown key '{key}' in {where_} (expected one of: {}){hint}",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn policy(&mut self, path: &Path, top: &toml_edit::Table) -> Option<Policy> {
        self.unknown_keys(top, "the policy", TOP_KEYS);
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("policy")
            .to_string();
        let python = self.python(top.get("python"));
        let install = self.install(top.get("install"));
        let allow = self.allow(top.get("allow"));
        let deny = self.deny(top.get("deny"));
        let mut preinstalled = self.preinstalled(top.get("preinstalled"));
        let profiles = self.profiles(top.get("profiles"));

        let allowed: HashMap<&PackageName, &AllowEntry> =
            allow.iter().map(|a| (&a.name, a)).collect();
        for d in &deny {
            if let Some(a) = allowed.get(&d.name) {
                self.error_at(
                    d.at,
                    format!(
                        "'{}' is both denied here and allowed at line {} (remove one of them)",
                        d.name, a.at.line
                    ),
                );
            }
        }
        for (name, at) in &preinstalled {
            if !allowed.contains_key(name) {
                self.error_at(
                    *at,
                    format!(
                        "'{name}' is preinstalled but not allowed (add [[allow]] name = \"{name}\")"
                    ),
                );
            }
        }
        preinstalled.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Policy {
            name,
            path: path.to_path_buf(),
            python: python?,
            install: install?,
            preinstalled: preinstalled.into_iter().map(|(n, _)| n).collect(),
            allow,
            deny,
            profiles: profiles?,
            lock: None,
        })
    }

    /// Records `name` as seen at `at`; when it was seen before, reports
    /// `message(first line)` and returns false.
    fn first_occurrence(
        &mut self,
        seen: &mut HashMap<PackageName, Position>,
        name: &PackageName,
        at: Position,
        message: impl FnOnce(u32) -> String,
    ) -> bool {
        if let Some(first) = seen.get(name) {
            let line = first.line;
            self.error_at(at, message(line));
            return false;
        }
        seen.insert(name.clone(), at);
        true
    }

    fn error_at(&mut self, at: Position, message: String) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            severity: Severity::Error,
            message,
        });
    }

    fn table<'i>(&mut self, item: &'i Item, what: &str) -> Option<&'i dyn TableLike> {
        let table = item.as_table_like();
        if table.is_none() {
            self.error(item.span(), format!("{what} must be a table"));
        }
        table
    }

    fn string(&mut self, item: &Item, what: &str) -> Option<String> {
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.error(item.span(), format!("{what} must be a string"));
                None
            }
        }
    }

    fn bool(&mut self, item: &Item, what: &str) -> Option<bool> {
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(item.span(), format!("{what} must be true or false"));
                None
            }
        }
    }

    fn package_name(&mut self, item: &Item, what: &str) -> Option<PackageName> {
        let text = self.string(item, what)?;
        match PackageName::from_str(&text) {
            Ok(name) => Some(name),
            Err(e) => {
                self.error(item.span(), format!("invalid package name '{text}': {e}"));
                None
            }
        }
    }

    fn python(&mut self, item: Option<&Item>) -> Option<PythonTarget> {
        let Some(item) = item else {
            self.error(
                None,
                "missing [python] table (expected version = \"3.N\")".into(),
            );
            return None;
        };
        let table = self.table(item, "[python]")?;
        self.unknown_keys(table, "[python]", PYTHON_KEYS);
        let minor = match table.get("version") {
            None => {
                self.error(
                    item.span(),
                    "missing python.version (expected e.g. \"3.11\")".into(),
                );
                None
            }
            Some(v) => {
                let text = self.string(v, "python.version")?;
                let minor = text
                    .strip_prefix("3.")
                    .and_then(|m| m.parse::<u8>().ok())
                    .filter(|m| crate::validate::stdlib::has_table(*m));
                if minor.is_none() {
                    self.error(
                        v.span(),
                        format!(
                            "python.version '{text}' is not supported (expected 3.{} to 3.{})",
                            crate::validate::stdlib::OLDEST_MINOR,
                            crate::validate::stdlib::NEWEST_MINOR
                        ),
                    );
                }
                minor
            }
        };
        let platform = match table.get("platform") {
            None => DEFAULT_PLATFORM.to_string(),
            Some(v) => {
                let text = self.string(v, "python.platform")?;
                if !is_linux_platform(&text) {
                    self.error(
                        v.span(),
                        format!(
                            "python.platform '{text}' is not a Linux platform uv knows (expected e.g. {DEFAULT_PLATFORM}, aarch64-manylinux_2_28, x86_64-unknown-linux-gnu)"
                        ),
                    );
                    return None;
                }
                text
            }
        };
        Some(PythonTarget {
            minor: minor?,
            platform,
        })
    }

    fn install(&mut self, item: Option<&Item>) -> Option<InstallOptions> {
        let mut options = InstallOptions {
            auto_install: false,
            wheels_only: true,
            index: DEFAULT_INDEX.to_string(),
            exclude_newer: None,
        };
        let Some(item) = item else {
            return Some(options);
        };
        let table = self.table(item, "[install]")?;
        self.unknown_keys(table, "[install]", INSTALL_KEYS);
        let mut ok = true;
        if let Some(v) = table.get("auto_install") {
            options.auto_install = self.bool(v, "install.auto_install").unwrap_or_else(|| {
                ok = false;
                false
            });
        }
        if let Some(v) = table.get("wheels_only") {
            options.wheels_only = self.bool(v, "install.wheels_only").unwrap_or_else(|| {
                ok = false;
                true
            });
        }
        if let Some(v) = table.get("index") {
            match self.string(v, "install.index") {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    options.index = url.trim_end_matches('/').to_string();
                }
                Some(url) => {
                    self.error(
                        v.span(),
                        format!("install.index '{url}' must be an http(s) URL of a simple index"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(v) = table.get("exclude_newer") {
            match self.string(v, "install.exclude_newer") {
                Some(date) if is_date_or_timestamp(&date) => options.exclude_newer = Some(date),
                Some(date) => {
                    self.error(
                        v.span(),
                        format!(
                            "install.exclude_newer '{date}' must be a date (2026-01-31) or an RFC 3339 time (2026-01-31T00:00:00Z)"
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(options)
    }

    /// The tables of an array of tables (`[[allow]]`) or an array of inline
    /// tables (`allow = [{ ... }]`), with their spans.
    fn entries<'i>(
        &mut self,
        item: &'i Item,
        what: &str,
    ) -> Vec<(&'i dyn TableLike, Option<Range<usize>>)> {
        match item {
            Item::ArrayOfTables(tables) => tables
                .iter()
                .map(|t| (t as &dyn TableLike, t.span()))
                .collect(),
            Item::Value(Value::Array(array)) => {
                let mut out = Vec::with_capacity(array.len());
                for value in array.iter() {
                    match value.as_inline_table() {
                        Some(t) => out.push((t as &dyn TableLike, value.span())),
                        None => self.error(
                            value.span(),
                            format!("each {what} entry must be a table like {{ name = \"...\" }}"),
                        ),
                    }
                }
                out
            }
            _ => {
                self.error(
                    item.span(),
                    format!(
                        "{what} must be an array of tables ([[{what}]] or {what} = [{{ ... }}])"
                    ),
                );
                Vec::new()
            }
        }
    }

    fn allow(&mut self, item: Option<&Item>) -> Vec<AllowEntry> {
        let Some(item) = item else { return Vec::new() };
        let mut out: Vec<AllowEntry> = Vec::new();
        let mut seen: HashMap<PackageName, Position> = HashMap::new();
        for (table, span) in self.entries(item, "allow") {
            self.unknown_keys(table, "an [[allow]] entry", ALLOW_KEYS);
            let at = self.position(span.clone());
            let Some(name_item) = table.get("name") else {
                self.error(
                    span,
                    "[[allow]] entry without a name (expected name = \"...\")".into(),
                );
                continue;
            };
            let name = self.package_name(name_item, "allow.name");
            let version = table.get("version").and_then(|v| {
                let text = self.string(v, "allow.version")?;
                match VersionSpecifiers::from_str(&text) {
                    Ok(spec) => Some(spec),
                    Err(e) => {
                        self.error(
                            v.span(),
                            format!(
                                "invalid version specifier '{text}': {} (expected PEP 440, e.g. \">=2,<3\")",
                                e.to_string().lines().next().unwrap_or("").trim_end_matches(':')
                            ),
                        );
                        None
                    }
                }
            });
            let system = table
                .get("system")
                .map(|v| self.system_packages(v))
                .unwrap_or_default();
            let note = table.get("note").and_then(|v| self.string(v, "allow.note"));
            let Some(name) = name else { continue };
            if !self.first_occurrence(&mut seen, &name, at, |line| {
                format!("duplicate allow entry for '{name}' (first at line {line}); merge them")
            }) {
                continue;
            }
            out.push(AllowEntry {
                name,
                version,
                system,
                note,
                at,
            });
        }
        out
    }

    fn system_packages(&mut self, item: &Item) -> Vec<String> {
        let Some(array) = item.as_array() else {
            self.error(
                item.span(),
                "allow.system must be an array of Debian package names".into(),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for value in array.iter() {
            match value.as_str() {
                Some(name) if is_debian_package(name) => out.push(name.to_string()),
                other => self.error(
                    value.span(),
                    format!(
                        "'{}' is not a Debian package name (lowercase letters, digits, + - .)",
                        other.map_or_else(|| value.to_string().trim().to_string(), str::to_string)
                    ),
                ),
            }
        }
        out
    }

    fn deny(&mut self, item: Option<&Item>) -> Vec<DenyEntry> {
        let Some(item) = item else { return Vec::new() };
        let mut out = Vec::new();
        let mut seen: HashMap<PackageName, Position> = HashMap::new();
        for (table, span) in self.entries(item, "deny") {
            self.unknown_keys(table, "a [[deny]] entry", DENY_KEYS);
            let at = self.position(span.clone());
            let name = match table.get("name") {
                Some(v) => self.package_name(v, "deny.name"),
                None => {
                    self.error(span.clone(), "[[deny]] entry without a name".into());
                    None
                }
            };
            let reason = match table.get("reason") {
                Some(v) => self.string(v, "deny.reason"),
                None => {
                    self.error(
                        span,
                        "[[deny]] entry without a reason (say why, e.g. reason = \"typosquat of pandas\")".into(),
                    );
                    None
                }
            };
            let (Some(name), Some(reason)) = (name, reason) else {
                continue;
            };
            if self.first_occurrence(&mut seen, &name, at, |line| {
                format!("duplicate deny entry for '{name}' (first at line {line})")
            }) {
                out.push(DenyEntry { name, reason, at });
            }
        }
        out
    }

    fn preinstalled(&mut self, item: Option<&Item>) -> Vec<(PackageName, Position)> {
        let Some(item) = item else { return Vec::new() };
        let Some(array) = item.as_array() else {
            self.error(
                item.span(),
                "preinstalled must be an array of package names".into(),
            );
            return Vec::new();
        };
        let mut out: Vec<(PackageName, Position)> = Vec::new();
        let mut seen: HashMap<PackageName, Position> = HashMap::new();
        for value in array.iter() {
            let at = self.position(value.span());
            let Some(text) = value.as_str() else {
                self.error(value.span(), "preinstalled entries must be strings".into());
                continue;
            };
            let name = match PackageName::from_str(text) {
                Ok(n) => n,
                Err(e) => {
                    self.error(value.span(), format!("invalid package name '{text}': {e}"));
                    continue;
                }
            };
            if self.first_occurrence(&mut seen, &name, at, |line| {
                format!("'{name}' is listed twice in preinstalled (first at line {line})")
            }) {
                out.push((name, at));
            }
        }
        out
    }

    fn profiles(&mut self, item: Option<&Item>) -> Option<BTreeMap<String, Profile>> {
        let Some(item) = item else {
            self.error(
                None,
                "missing [profiles.default] (every policy needs a default profile of resource limits)".into(),
            );
            return None;
        };
        let table = self.table(item, "[profiles]")?;
        let Some(default_item) = table.get("default") else {
            self.error(
                item.span(),
                "missing [profiles.default] (every policy needs a default profile of resource limits)".into(),
            );
            return None;
        };
        let default = self.profile(default_item, "default", None);
        // A broken default still lets the other profiles be checked, against
        // a stand-in whose values are never used.
        let stand_in = Profile {
            memory: 1 << 30,
            cpus: 1.0,
            pids: 64,
            wall_time: Duration::from_secs(60),
            output: 1 << 20,
            tmp: 1 << 20,
            network: Network::Allowlist(Box::new(crate::egress::Egress {
                allow: crate::egress::Allowlist::default(),
                private: Vec::new(),
                resolve: BTreeMap::new(),
                max_connections: crate::egress::DEFAULT_MAX_CONNECTIONS,
                max_bytes: crate::egress::DEFAULT_MAX_BYTES,
            })),
            isolation: Isolation::Namespaces,
        };
        let inherit = default.as_ref().unwrap_or(&stand_in);
        let mut out = BTreeMap::new();
        let mut ok = default.is_some();
        for (name, value) in table.iter() {
            if name == "default" {
                continue;
            }
            match self.profile(value, name, Some(inherit)) {
                Some(p) => {
                    out.insert(name.to_string(), p);
                }
                None => ok = false,
            }
        }
        out.insert("default".to_string(), default?);
        ok.then_some(out)
    }

    /// Reads one profile; fields missing from a non-default profile come
    /// from `inherit` (the default profile).
    fn profile(&mut self, item: &Item, name: &str, inherit: Option<&Profile>) -> Option<Profile> {
        let where_ = format!("[profiles.{name}]");
        let table = self.table(item, &where_)?;
        self.unknown_keys(table, &where_, PROFILE_KEYS);
        let mut ok = true;
        let mut field = |this: &mut Self, key: &str| -> Option<&Item> {
            let found = table.get(key);
            if found.is_none() && inherit.is_none() {
                this.error(
                    item.span(),
                    format!(
                        "{where_} is missing '{key}' (the default profile must set every limit)"
                    ),
                );
                ok = false;
            }
            found
        };
        let found = field(self, "memory");
        let memory = self.size_field(found, name, "memory", 4 << 20);
        let found = field(self, "output");
        let output = self.size_field(found, name, "output", 1);
        let found = field(self, "tmp");
        let tmp = self.size_field(found, name, "tmp", 0);
        let wall_time = field(self, "wall_time").map(|v| self.duration(v, name));
        let pids = field(self, "pids").map(|v| self.pids(v, name));
        let cpus = field(self, "cpus").map(|v| self.cpus(v, name));
        let network_kind = field(self, "network").map(|v| self.network(v, name));
        // Optional even in the default profile: namespaces unless it says.
        let isolation = table.get("isolation").map(|v| self.isolation(v, name));
        if !ok {
            return None;
        }
        let inherited_kind = inherit.map(|p| match p.network {
            Network::None => NetworkKind::None,
            Network::Allowlist(_) => NetworkKind::Allowlist,
        });
        let network = match network_kind {
            Some(kind) => kind.map(|k| self.egress(table, name, k, inherit)),
            None => inherited_kind.map(|k| self.egress(table, name, k, inherit)),
        }
        .flatten();
        let pick = |found: Option<Option<u64>>, inherited: Option<u64>| match found {
            Some(v) => v,
            None => inherited,
        };
        Some(Profile {
            memory: pick(memory, inherit.map(|p| p.memory))?,
            output: pick(output, inherit.map(|p| p.output))?,
            tmp: pick(tmp, inherit.map(|p| p.tmp))?,
            wall_time: match wall_time {
                Some(v) => v?,
                None => inherit?.wall_time,
            },
            pids: match pids {
                Some(v) => v?,
                None => inherit?.pids,
            },
            cpus: match cpus {
                Some(v) => v?,
                None => inherit?.cpus,
            },
            network: network?,
            isolation: match isolation {
                Some(v) => v?,
                None => inherit.map_or(Isolation::Namespaces, |p| p.isolation),
            },
        })
    }

    /// Reads the egress keys of a profile whose network is `kind`; keys
    /// this profile does not set come from `inherit` (when it has an
    /// allowlist too) or the defaults.
    fn egress(
        &mut self,
        table: &dyn TableLike,
        profile: &str,
        kind: NetworkKind,
        inherit: Option<&Profile>,
    ) -> Option<Network> {
        if kind == NetworkKind::None {
            let mut ok = true;
            for key in EGRESS_KEYS {
                if let Some((k, _)) = table.get_key_value(key) {
                    self.error(
                        k.span(),
                        format!(
                            "profiles.{profile}.{key} needs network = \"allowlist\" (this profile's network is \"none\")"
                        ),
                    );
                    ok = false;
                }
            }
            return ok.then_some(Network::None);
        }
        let base = inherit.and_then(|p| p.network.egress());
        let mut ok = true;
        let allow = match table.get("egress") {
            Some(item) => self.egress_rules(item, profile).or_else(|| {
                ok = false;
                None
            }),
            None => Some(base.map(|e| e.allow.clone()).unwrap_or_default()),
        };
        let private = match table.get("egress_private") {
            Some(item) => self.egress_private(item, profile).or_else(|| {
                ok = false;
                None
            }),
            None => Some(base.map(|e| e.private.clone()).unwrap_or_default()),
        };
        let resolve = match table.get("egress_resolve") {
            Some(item) => self.egress_resolve(item, profile).or_else(|| {
                ok = false;
                None
            }),
            None => Some(base.map(|e| e.resolve.clone()).unwrap_or_default()),
        };
        let max_connections = match table.get("egress_connections") {
            Some(item) => match item.as_integer() {
                Some(n) if (1..=1_000_000).contains(&n) => Some(n as u64),
                _ => {
                    self.error(
                        item.span(),
                        format!(
                            "profiles.{profile}.egress_connections must be a whole number of connections from 1 to 1000000"
                        ),
                    );
                    None
                }
            },
            None => Some(base.map_or(crate::egress::DEFAULT_MAX_CONNECTIONS, |e| {
                e.max_connections
            })),
        };
        let max_bytes = match self.size_field(table.get("egress_bytes"), profile, "egress_bytes", 1)
        {
            Some(found) => found,
            None => Some(base.map_or(crate::egress::DEFAULT_MAX_BYTES, |e| e.max_bytes)),
        };
        let egress = crate::egress::Egress {
            allow: allow?,
            private: private?,
            resolve: resolve?,
            max_connections: max_connections?,
            max_bytes: max_bytes?,
        };
        if !ok {
            return None;
        }
        self.egress_warnings(table, profile, &egress);
        Some(Network::Allowlist(Box::new(egress)))
    }

    /// Warnings about egress settings that are valid but likely mistakes.
    fn egress_warnings(
        &mut self,
        table: &dyn TableLike,
        profile: &str,
        egress: &crate::egress::Egress,
    ) {
        let span_of = |key: &str| table.get_key_value(key).and_then(|(k, _)| k.span());
        if egress.allow.rules.is_empty() && table.contains_key("network") {
            self.push(
                Severity::Warning,
                span_of("network"),
                format!(
                    "profiles.{profile} has network = \"allowlist\" but no egress entries, so nothing can be reached"
                ),
            );
        }
        let Some(resolve) = table.get("egress_resolve").and_then(|i| i.as_table_like()) else {
            return;
        };
        let addresses = crate::egress::AddressPolicy {
            private: egress.private.clone(),
        };
        for (name, ip) in &egress.resolve {
            let span = resolve
                .iter()
                .find(|(k, _)| crate::egress::rule::host_name(k).is_ok_and(|n| &n == name))
                .and_then(|(k, _)| resolve.get_key_value(k))
                .and_then(|(k, _)| k.span());
            if !egress.allow.allows_name(name) {
                self.push(
                    Severity::Warning,
                    span.clone(),
                    format!(
                        "egress_resolve names '{name}', which no egress entry of profiles.{profile} allows, so it is never used"
                    ),
                );
            }
            if let Err(why) = addresses.check(*ip) {
                self.push(
                    Severity::Warning,
                    span,
                    format!(
                        "egress_resolve sends '{name}' to {ip}, which the proxy refuses ({why}) unless egress_private covers it"
                    ),
                );
            }
        }
    }

    fn egress_rules(&mut self, item: &Item, profile: &str) -> Option<crate::egress::Allowlist> {
        use crate::egress::EgressRule;
        let what = format!("profiles.{profile}.egress");
        let Some(array) = item.as_array() else {
            self.error(
                item.span(),
                format!("{what} must be an array of host names like [\"api.example.com\", \"*.example.com\"]"),
            );
            return None;
        };
        let mut ok = true;
        let mut rules = Vec::new();
        // (pattern, port) -> where it was first allowed.
        let mut seen: HashMap<(String, u16), (Position, String)> = HashMap::new();
        for value in array.iter() {
            let Some(text) = value.as_str() else {
                self.error(value.span(), format!("{what} entries must be strings"));
                ok = false;
                continue;
            };
            let rule = match EgressRule::parse(text) {
                Ok(rule) => rule,
                Err(e) => {
                    self.error(value.span(), format!("{what}: {e}"));
                    ok = false;
                    continue;
                }
            };
            let at = self.position(value.span());
            let mut duplicate = None;
            for port in rule.ports() {
                let key = (rule.pattern.to_string(), *port);
                if let Some((first, text)) = seen.get(&key) {
                    duplicate = Some((*port, first.line, first.column, text.clone()));
                    break;
                }
            }
            if let Some((port, line, column, first)) = duplicate {
                self.error_at(
                    at,
                    format!(
                        "{what}: '{text}' repeats port {port} of '{first}' at line {line}, column {column}"
                    ),
                );
                ok = false;
                continue;
            }
            for port in rule.ports() {
                seen.insert((rule.pattern.to_string(), *port), (at, text.to_string()));
            }
            rules.push(rule);
        }
        ok.then_some(crate::egress::Allowlist { rules })
    }

    fn egress_private(&mut self, item: &Item, profile: &str) -> Option<Vec<ipnet::IpNet>> {
        let what = format!("profiles.{profile}.egress_private");
        let Some(array) = item.as_array() else {
            self.error(
                item.span(),
                format!("{what} must be an array of CIDRs like [\"10.1.2.0/24\"]"),
            );
            return None;
        };
        let mut ok = true;
        let mut out: Vec<ipnet::IpNet> = Vec::new();
        for value in array.iter() {
            let text = value.as_str().unwrap_or_default();
            let net = match text.parse::<ipnet::IpNet>() {
                Ok(net) => net,
                Err(_) => {
                    let hint = if text.parse::<std::net::IpAddr>().is_ok() {
                        format!(
                            " (for one address write \"{text}/{}\")",
                            if text.contains(':') { 128 } else { 32 }
                        )
                    } else {
                        String::new()
                    };
                    self.error(
                        value.span(),
                        format!(
                            "{what}: '{}' is not a CIDR like \"10.1.2.0/24\"{hint}",
                            value.to_string().trim().trim_matches('"')
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            if net.trunc() != net {
                self.error(
                    value.span(),
                    format!(
                        "{what}: '{text}' has host bits set (did you mean \"{}\"?)",
                        net.trunc()
                    ),
                );
                ok = false;
                continue;
            }
            if out.contains(&net) {
                self.error(value.span(), format!("{what}: '{text}' is listed twice"));
                ok = false;
                continue;
            }
            out.push(net);
        }
        ok.then_some(out)
    }

    fn egress_resolve(
        &mut self,
        item: &Item,
        profile: &str,
    ) -> Option<BTreeMap<String, std::net::IpAddr>> {
        let what = format!("profiles.{profile}.egress_resolve");
        let Some(table) = item.as_table_like() else {
            self.error(
                item.span(),
                format!("{what} must be a table of names to addresses like {{ \"api.example.test\" = \"127.0.0.1\" }}"),
            );
            return None;
        };
        let mut ok = true;
        let mut out = BTreeMap::new();
        for (key, value) in table.iter() {
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            let name = match crate::egress::rule::host_name(key) {
                Ok(name) => name,
                Err(e) => {
                    self.error(key_span, format!("{what}: '{key}' is not a host name: {e}"));
                    ok = false;
                    continue;
                }
            };
            let Some(ip) = value
                .as_str()
                .and_then(|v| v.parse::<std::net::IpAddr>().ok())
            else {
                self.error(
                    value.span(),
                    format!("{what}.\"{key}\" must be an IP address like \"127.0.0.1\""),
                );
                ok = false;
                continue;
            };
            if out.insert(name.clone(), ip).is_some() {
                self.error(key_span, format!("{what}: '{name}' is listed twice"));
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn size_field(
        &mut self,
        item: Option<&Item>,
        profile: &str,
        key: &str,
        min: u64,
    ) -> Option<Option<u64>> {
        let item = item?;
        let what = format!("profiles.{profile}.{key}");
        let text = match (item.as_str(), item.as_integer()) {
            (Some(s), _) => s.to_string(),
            (None, Some(n)) if n >= 0 => n.to_string(),
            _ => {
                self.error(item.span(), format!("{what} must be a size like \"512M\""));
                return Some(None);
            }
        };
        match parse_size(&text) {
            Ok(n) if n >= min => Some(Some(n)),
            Ok(n) => {
                self.error(
                    item.span(),
                    format!("{what} = {n} bytes is below the minimum of {min}"),
                );
                Some(None)
            }
            Err(e) => {
                self.error(item.span(), format!("{what}: {e}"));
                Some(None)
            }
        }
    }

    fn duration(&mut self, item: &Item, profile: &str) -> Option<Duration> {
        let what = format!("profiles.{profile}.wall_time");
        let text = self.string(item, &what)?;
        match parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(item.span(), format!("{what} must be longer than zero"));
                None
            }
            Err(e) => {
                self.error(item.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    fn pids(&mut self, item: &Item, profile: &str) -> Option<u32> {
        match item.as_integer() {
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
            _ => {
                self.error(
                    item.span(),
                    format!(
                        "profiles.{profile}.pids must be a whole number of processes, at least 1"
                    ),
                );
                None
            }
        }
    }

    fn cpus(&mut self, item: &Item, profile: &str) -> Option<f64> {
        let value = item
            .as_float()
            .or_else(|| item.as_integer().map(|n| n as f64));
        match value {
            Some(c) if c > 0.0 && c <= 1024.0 => Some(c),
            _ => {
                self.error(
                    item.span(),
                    format!(
                        "profiles.{profile}.cpus must be a number of cores above 0 (e.g. 1 or 0.5)"
                    ),
                );
                None
            }
        }
    }

    fn isolation(&mut self, item: &Item, profile: &str) -> Option<Isolation> {
        let text = self.string(item, &format!("profiles.{profile}.isolation"))?;
        match text.as_str() {
            "namespaces" => Some(Isolation::Namespaces),
            "gvisor" => Some(Isolation::Gvisor),
            other => {
                self.error(
                    item.span(),
                    format!(
                        "profiles.{profile}.isolation '{other}' is not supported (expected \"namespaces\" or \"gvisor\")"
                    ),
                );
                None
            }
        }
    }

    fn network(&mut self, item: &Item, profile: &str) -> Option<NetworkKind> {
        let text = self.string(item, &format!("profiles.{profile}.network"))?;
        match text.as_str() {
            "none" => Some(NetworkKind::None),
            "allowlist" => Some(NetworkKind::Allowlist),
            other => {
                self.error(
                    item.span(),
                    format!(
                        "profiles.{profile}.network '{other}' is not supported (expected \"none\" or \"allowlist\")"
                    ),
                );
                None
            }
        }
    }
}

fn is_linux_platform(text: &str) -> bool {
    let Some((arch, rest)) = text.split_once('-') else {
        return false;
    };
    matches!(arch, "x86_64" | "aarch64")
        && (matches!(rest, "unknown-linux-gnu" | "unknown-linux-musl")
            || rest
                .strip_prefix("manylinux_2_")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

fn is_debian_package(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() >= 2
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

/// `YYYY-MM-DD` or an RFC 3339 timestamp.
fn is_date_or_timestamp(text: &str) -> bool {
    let is_date = |d: &str| {
        let b = d.as_bytes();
        b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    };
    is_date(text) || humantime::parse_rfc3339(text).is_ok()
}
