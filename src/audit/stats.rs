//! What the audit log says, in aggregate: the packages scripts ask for and
//! do not get, the ones they are refused, builds, and runs by status
//! (`scriptbox stats`, schema `scriptbox.stats/1`).
//!
//! The log is read as a stream, oldest rotated file first, one line at a
//! time into a reused buffer; each line is parsed into a small struct that
//! borrows its strings from the buffer, and only the keys the aggregation
//! needs are kept. A line that is not a `scriptbox.audit/1` record is
//! counted as unreadable and skipped.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::record::{Decision, Event, SCHEMA as AUDIT_SCHEMA};

/// Identifier of the JSON schema of `scriptbox stats --format json`.
pub const SCHEMA: &str = "scriptbox.stats/1";

/// Why the statistics could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A log file could not be opened or read.
    #[error("cannot read the audit log {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bad `--since`.
#[derive(Debug, thiserror::Error)]
#[error(
    "--since '{0}': expected a date (2026-05-01), a UTC time (2026-05-01T12:00:00Z) or a duration back from now (7d, 24h, 30m)"
)]
pub struct BadSince(pub String);

/// Parses `--since`: a date (midnight UTC), an RFC 3339 time in UTC, or a
/// duration back from `now`. Returns the bound as the log writes times.
pub fn parse_since(text: &str, now: SystemTime) -> Result<String, BadSince> {
    let bad = || BadSince(text.to_string());
    let trimmed = text.trim();
    let at = if let Ok(ago) = humantime::parse_duration(trimmed) {
        now.checked_sub(ago).ok_or_else(bad)?
    } else if trimmed.len() == 10 {
        humantime::parse_rfc3339(&format!("{trimmed}T00:00:00Z")).map_err(|_| bad())?
    } else {
        humantime::parse_rfc3339_weak(trimmed.trim_end_matches(['Z', 'z'])).map_err(|_| bad())?
    };
    Ok(humantime::format_rfc3339_millis(at).to_string())
}

/// Which lines count.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only lines at or after this time (as the log writes times; see
    /// [`parse_since`]). Times written by the log all have one format, so
    /// they compare as strings.
    pub since: Option<String>,
    /// Only lines about the policy of this name.
    pub policy: Option<String>,
}

/// One file read.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// Its lines (complete ones).
    pub lines: u64,
}

/// A package asked for and not available.
#[derive(Debug, Clone, Serialize)]
pub struct Requested {
    /// Its name (for `unknown`: the module).
    pub package: String,
    /// `installable` or `unknown`.
    pub decision: Decision,
    /// How many decisions named it.
    pub requests: u64,
    /// How many distinct scripts asked for it.
    pub scripts: u64,
}

/// A package refused.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// Its name.
    pub package: String,
    /// How many times it was refused.
    pub refusals: u64,
    /// How many distinct scripts asked for it.
    pub scripts: u64,
}

/// A package and a count.
#[derive(Debug, Clone, Serialize)]
pub struct Counted {
    /// Its name.
    pub package: String,
    /// How many times.
    pub count: u64,
}

/// Environment builds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Builds {
    /// Distinct environment layers built.
    pub layers_built: u64,
    /// `installed` lines: packages installed, over all builds.
    pub packages_installed: u64,
    /// Failed build attempts (their lines share one time and reason).
    pub failed: u64,
    /// `install-failed` lines that name a package.
    pub packages_failed: u64,
    /// The packages whose layers failed most often.
    pub most_failed: Vec<Counted>,
}

/// Runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Runs {
    /// All runs.
    pub total: u64,
    /// Runs by final status, most frequent first.
    pub by_status: Vec<StatusCount>,
}

/// A run status and how often runs ended with it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusCount {
    /// The status (`succeeded`, `rejected`, ...).
    pub status: String,
    /// How many runs.
    pub count: u64,
}

/// The statistics (schema `scriptbox.stats/1`).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The log read (its current file).
    pub log: PathBuf,
    /// The files read, oldest first.
    pub files: Vec<FileSummary>,
    /// Lines read in all.
    pub lines: u64,
    /// Lines that are not `scriptbox.audit/1` records.
    pub unreadable: u64,
    /// Records that passed the filter.
    pub counted: u64,
    /// The `--since` bound, as compared.
    pub since: Option<String>,
    /// The `--policy` filter.
    pub policy: Option<String>,
    /// The most requested packages that were not available, most first.
    pub missing: Vec<Requested>,
    /// The most often forbidden packages, most first.
    pub forbidden: Vec<Refused>,
    /// Environment builds.
    pub builds: Builds,
    /// Runs.
    pub runs: Runs,
}

/// A string borrowed from the line when it has no escapes, owned otherwise.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The keys of a line the aggregation reads; the others are skipped.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    schema: Str<'a>,
    #[serde(borrow)]
    time: Str<'a>,
    event: Event,
    #[serde(borrow, default)]
    script_sha256: Option<Str<'a>>,
    #[serde(borrow, default)]
    policy: Option<Str<'a>>,
    #[serde(default)]
    decision: Option<Decision>,
    #[serde(borrow, default)]
    package: Option<Str<'a>>,
    #[serde(borrow, default)]
    reason: Option<Str<'a>>,
    #[serde(borrow, default)]
    status: Option<Str<'a>>,
    #[serde(borrow, default)]
    env_key: Option<Str<'a>>,
}

/// Hashes a script's digest prefix by taking its low 64 bits: the digest is
/// already uniformly random, so hashing it again only costs time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Per-package counts: decisions and the distinct scripts behind them, by
/// the first 128 bits of their sha256 (a collision among even a billion
/// scripts has a chance below 1e-20).
#[derive(Default)]
struct PackageTally {
    count: u64,
    scripts: HashSet<u128, std::hash::BuildHasherDefault<DigestHasher>>,
}

impl PackageTally {
    fn add(&mut self, script: Option<&str>) {
        self.count += 1;
        if let Some(digest) = script.and_then(parse_digest) {
            self.scripts.insert(digest);
        }
    }
}

/// The first 128 bits of a hex sha256 (so a set of scripts costs no
/// string copies); `None` for anything but 64 hex digits.
fn parse_digest(hex: &str) -> Option<u128> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex[..32], 16).ok()
}

/// Adds to `map[key]`, copying the key only the first time it is seen.
fn tally<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The running aggregation, fed one line at a time.
#[derive(Default)]
pub struct Aggregator {
    filter: Filter,
    lines: u64,
    unreadable: u64,
    counted: u64,
    installable: HashMap<String, PackageTally>,
    unknown: HashMap<String, PackageTally>,
    forbidden: HashMap<String, PackageTally>,
    layers: HashSet<String>,
    installed: u64,
    failed_attempts: HashSet<u64>,
    failed_packages: HashMap<String, u64>,
    runs: HashMap<String, u64>,
}

impl Aggregator {
    /// An empty aggregation counting only what `filter` lets through.
    pub fn new(filter: Filter) -> Aggregator {
        Aggregator {
            filter,
            ..Aggregator::default()
        }
    }

    /// Adds one line (without its newline).
    pub fn add(&mut self, line: &[u8]) {
        self.lines += 1;
        let record: Line<'_> = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(_) => {
                self.unreadable += 1;
                return;
            }
        };
        if &*record.schema != AUDIT_SCHEMA {
            self.unreadable += 1;
            return;
        }
        if let Some(since) = &self.filter.since
            && &*record.time < since.as_str()
        {
            return;
        }
        if let Some(policy) = &self.filter.policy
            && record.policy.as_deref() != Some(policy.as_str())
        {
            return;
        }
        self.counted += 1;
        let script = record.script_sha256.as_deref();
        match record.event {
            Event::Run => {
                let status = record.status.as_deref().unwrap_or("unknown");
                *tally(&mut self.runs, status) += 1;
            }
            Event::Decision => {
                let package = record.package.as_deref();
                match (record.decision, package) {
                    (Some(Decision::Installable), Some(p)) => {
                        tally(&mut self.installable, p).add(script)
                    }
                    (Some(Decision::Unknown), Some(p)) => tally(&mut self.unknown, p).add(script),
                    (Some(Decision::Forbidden), Some(p)) => {
                        tally(&mut self.forbidden, p).add(script)
                    }
                    (Some(Decision::Installed), _) => {
                        self.installed += 1;
                        if let Some(key) = record.env_key.as_deref()
                            && !self.layers.contains(key)
                        {
                            self.layers.insert(key.to_string());
                        }
                    }
                    (Some(Decision::InstallFailed), p) => {
                        // One attempt's lines share its time and reason.
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        (&*record.time, record.reason.as_deref(), script).hash(&mut h);
                        self.failed_attempts.insert(h.finish());
                        if let Some(p) = p {
                            *tally(&mut self.failed_packages, p) += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Adds every line of `reader`. A last line without its newline is a
    /// record still being written: it is skipped unless it parses.
    pub fn add_all(&mut self, reader: impl BufRead) -> std::io::Result<u64> {
        let mut reader = reader;
        let mut buf = Vec::with_capacity(1024);
        let mut lines = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                return Ok(lines);
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            } else if serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_err() {
                return Ok(lines);
            }
            if buf.is_empty() {
                continue;
            }
            lines += 1;
            self.add(&buf);
        }
    }

    /// The statistics, keeping the `top` entries of each list.
    pub fn finish(self, log: PathBuf, files: Vec<FileSummary>, top: usize) -> Stats {
        let requested = |map: HashMap<String, PackageTally>, decision: Decision| {
            map.into_iter().map(move |(package, t)| Requested {
                package,
                decision,
                requests: t.count,
                scripts: t.scripts.len() as u64,
            })
        };
        let mut missing: Vec<Requested> = requested(self.installable, Decision::Installable)
            .chain(requested(self.unknown, Decision::Unknown))
            .collect();
        missing.sort_by(|a, b| {
            (b.requests, b.scripts)
                .cmp(&(a.requests, a.scripts))
                .then_with(|| a.package.cmp(&b.package))
        });
        missing.truncate(top);
        let mut forbidden: Vec<Refused> = self
            .forbidden
            .into_iter()
            .map(|(package, t)| Refused {
                package,
                refusals: t.count,
                scripts: t.scripts.len() as u64,
            })
            .collect();
        forbidden.sort_by(|a, b| {
            (b.refusals, b.scripts)
                .cmp(&(a.refusals, a.scripts))
                .then_with(|| a.package.cmp(&b.package))
        });
        forbidden.truncate(top);
        let mut most_failed: Vec<Counted> = self
            .failed_packages
            .into_iter()
            .map(|(package, count)| Counted { package, count })
            .collect();
        let packages_failed = most_failed.iter().map(|c| c.count).sum();
        most_failed.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.package.cmp(&b.package))
        });
        most_failed.truncate(top);
        let by_status: BTreeMap<String, u64> = self.runs.into_iter().collect();
        let mut by_status: Vec<StatusCount> = by_status
            .into_iter()
            .map(|(status, count)| StatusCount { status, count })
            .collect();
        by_status.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.status.cmp(&b.status)));
        Stats {
            schema: SCHEMA,
            log,
            files,
            lines: self.lines,
            unreadable: self.unreadable,
            counted: self.counted,
            since: self.filter.since,
            policy: self.filter.policy,
            missing,
            forbidden,
            builds: Builds {
                layers_built: self.layers.len() as u64,
                packages_installed: self.installed,
                failed: self.failed_attempts.len() as u64,
                packages_failed,
                most_failed,
            },
            runs: Runs {
                total: by_status.iter().map(|s| s.count).sum(),
                by_status,
            },
        }
    }
}

/// Reads the log at `log` and its rotated files (oldest first) and
/// aggregates them, keeping the `top` entries of each list. A log that does
/// not exist yet has no lines.
pub fn collect(log: &Path, filter: Filter, top: usize) -> Result<Stats, StatsError> {
    let files = super::file::open_all(log).map_err(|source| StatsError::Read {
        path: log.to_path_buf(),
        source,
    })?;
    let mut aggregator = Aggregator::new(filter);
    let mut summaries = Vec::new();
    for (path, file) in files {
        let lines = aggregator
            .add_all(BufReader::with_capacity(256 * 1024, file))
            .map_err(|source| StatsError::Read {
                path: path.clone(),
                source,
            })?;
        summaries.push(FileSummary { path, lines });
    }
    Ok(aggregator.finish(log.to_path_buf(), summaries, top))
}

/// The statistics as a table for a terminal.
pub fn to_text(stats: &Stats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = write!(
        out,
        "Audit log {}: {} file(s), {} line(s)",
        stats.log.display(),
        stats.files.len(),
        stats.lines
    );
    if stats.unreadable > 0 {
        let _ = write!(
            out,
            ", {} unreadable (not scriptbox.audit/1 records; skipped)",
            stats.unreadable
        );
    }
    out.push('\n');
    let mut filters = Vec::new();
    if let Some(since) = &stats.since {
        filters.push(format!("since {since}"));
    }
    if let Some(policy) = &stats.policy {
        filters.push(format!("policy '{policy}'"));
    }
    if !filters.is_empty() {
        let _ = writeln!(
            out,
            "Counting {} record(s) {}",
            stats.counted,
            filters.join(", ")
        );
    }

    out.push_str("\nMost requested missing packages\n");
    table(
        &mut out,
        &["<PACKAGE", "<DECISION", "REQUESTS", "SCRIPTS"],
        stats
            .missing
            .iter()
            .map(|r| {
                vec![
                    r.package.clone(),
                    r.decision.as_str().to_string(),
                    r.requests.to_string(),
                    r.scripts.to_string(),
                ]
            })
            .collect(),
    );

    out.push_str("\nMost often forbidden packages\n");
    table(
        &mut out,
        &["<PACKAGE", "REFUSALS", "SCRIPTS"],
        stats
            .forbidden
            .iter()
            .map(|r| {
                vec![
                    r.package.clone(),
                    r.refusals.to_string(),
                    r.scripts.to_string(),
                ]
            })
            .collect(),
    );

    let b = &stats.builds;
    out.push_str("\nBuilds\n");
    let _ = writeln!(
        out,
        "  layers built   {:>8}   ({} package installs)",
        b.layers_built, b.packages_installed
    );
    let _ = writeln!(
        out,
        "  failed builds  {:>8}   ({} package failures)",
        b.failed, b.packages_failed
    );
    if !b.most_failed.is_empty() {
        let names: Vec<String> = b
            .most_failed
            .iter()
            .map(|c| format!("{} ({})", c.package, c.count))
            .collect();
        let _ = writeln!(out, "  failed most    {}", names.join(", "));
    }

    let _ = writeln!(out, "\nRuns ({})", stats.runs.total);
    table(
        &mut out,
        &["<STATUS", "COUNT"],
        stats
            .runs
            .by_status
            .iter()
            .map(|s| vec![s.status.clone(), s.count.to_string()])
            .collect(),
    );
    out
}

/// Writes a table; columns whose header starts with `<` are left-aligned
/// (the `<` is not shown), the others right-aligned.
fn table(out: &mut String, header: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let left: Vec<bool> = header.iter().map(|h| h.starts_with('<')).collect();
    let header: Vec<&str> = header.iter().map(|h| h.trim_start_matches('<')).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(header[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            text.push_str("  ");
            if left[i] {
                text.push_str(cell);
                text.push_str(&pad);
            } else {
                text.push_str(&pad);
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(time: &str, decision: &str, package: &str, script: char) -> String {
        format!(
            r#"{{"schema":"scriptbox.audit/1","time":"{time}","event":"decision","origin":"validate","script_sha256":"{}","policy":"default","policy_digest":"d","decision":"{decision}","package":"{package}","version":null,"reason":"r","status":null,"env_key":null}}"#,
            script.to_string().repeat(64)
        )
    }

    #[test]
    fn counts_requests_scripts_and_unreadable_lines() {
        let t = "2026-05-01T00:00:00.000Z";
        let log = [
            line(t, "forbidden", "requests", 'a'),
            line(t, "forbidden", "requests", 'a'),
            line(t, "forbidden", "requests", 'b'),
            line(t, "installable", "six", 'c'),
            line("2026-04-01T00:00:00.000Z", "installable", "six", 'd'),
            line(t, "unknown", "AlgorithmImports", 'e'),
            "not json".into(),
            r#"{"schema":"scriptbox.run/1","time":"x","event":"run"}"#.into(),
            // Escapes cannot be borrowed: the owned path.
            line(t, "forbidden", "we\\u0069rd", 'f'),
            format!(
                r#"{{"schema":"scriptbox.audit/1","time":"{t}","event":"run","origin":"run","script_sha256":null,"policy":"default","policy_digest":"d","decision":null,"package":null,"version":null,"reason":null,"status":"succeeded","env_key":"k"}}"#
            ),
        ]
        .join("\n")
            + "\n{\"schema\": \"partial";
        let mut agg = Aggregator::new(Filter {
            since: Some("2026-04-15T00:00:00.000Z".into()),
            policy: None,
        });
        let n = agg.add_all(log.as_bytes()).unwrap();
        assert_eq!(n, 10, "the partial last line is not counted");
        let stats = agg.finish("log".into(), Vec::new(), 10);
        assert_eq!(stats.unreadable, 2);
        assert_eq!(stats.counted, 7, "one line is before --since");
        assert_eq!(stats.forbidden[0].package, "requests");
        assert_eq!(stats.forbidden[0].refusals, 3);
        assert_eq!(stats.forbidden[0].scripts, 2);
        assert_eq!(stats.forbidden[1].package, "weird");
        let six = stats.missing.iter().find(|m| m.package == "six").unwrap();
        assert_eq!((six.requests, six.scripts), (1, 1));
        assert_eq!(stats.runs.total, 1);
        let text = to_text(&stats);
        assert!(text.contains("AlgorithmImports"), "{text}");
    }

    #[test]
    fn since_accepts_dates_times_and_durations() {
        let now = humantime::parse_rfc3339("2026-05-10T12:00:00Z").unwrap();
        assert_eq!(
            parse_since("2026-05-01", now).unwrap(),
            "2026-05-01T00:00:00.000Z"
        );
        assert_eq!(
            parse_since("2026-05-01T06:30:00Z", now).unwrap(),
            "2026-05-01T06:30:00.000Z"
        );
        assert_eq!(parse_since("1d", now).unwrap(), "2026-05-09T12:00:00.000Z");
        for bad in ["yesterday", "2026-13-01", "", "5 parsecs"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
