//! One line of the audit log (schema `scriptbox.audit/1`), as written.
//!
//! Every key is always present, `null` when it does not apply, so a reader
//! (`scriptbox stats`, `jq`, a log shipper) never probes for keys. The keys
//! and their meaning are documented in the README; an incompatible change
//! bumps [`SCHEMA`].

use serde::{Deserialize, Serialize};

/// Identifier of the audit log's line schema.
pub const SCHEMA: &str = "scriptbox.audit/1";

/// Longest `reason` kept, in bytes: a line stays small, so it is written
/// whole by one `write(2)`, and the log stays readable.
pub const MAX_REASON_BYTES: usize = 2000;

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A decision about one package.
    Decision,
    /// The final status of one run.
    Run,
}

/// The decision a `decision` line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Allowed by the policy, not in its base environment.
    Installable,
    /// Denied, not allowed, or allowed only at versions the script excludes.
    Forbidden,
    /// No distribution could be determined for an import.
    Unknown,
    /// Installed into an environment layer that was just built.
    Installed,
    /// Building the layer that was to hold it failed.
    InstallFailed,
}

impl Decision {
    /// The kebab-case name, as written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Installable => "installable",
            Decision::Forbidden => "forbidden",
            Decision::Unknown => "unknown",
            Decision::Installed => "installed",
            Decision::InstallFailed => "install-failed",
        }
    }
}

/// One line, borrowed from what it describes.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// When, RFC 3339 in UTC with milliseconds (`2026-05-01T12:00:00.123Z`).
    pub time: &'a str,
    /// What the line records.
    pub event: Event,
    /// Which edge wrote it: `validate`, `env-build`, `run` (the service will
    /// add its own).
    pub origin: &'a str,
    /// sha256 of the script's text, when a script is involved.
    pub script_sha256: Option<&'a str>,
    /// The policy's name.
    pub policy: Option<&'a str>,
    /// The policy's semantic digest.
    pub policy_digest: Option<&'a str>,
    /// For `decision` lines.
    pub decision: Option<Decision>,
    /// PEP 503 name of the distribution (for `unknown`: the module).
    pub package: Option<&'a str>,
    /// The script's specifier (decisions) or the pinned version (builds).
    pub version: Option<&'a str>,
    /// Why, in words: the policy's reason, a build's error, a run's message.
    pub reason: Option<&'a str>,
    /// For `run` lines: the run's status (`succeeded`, `rejected`, ...).
    pub status: Option<&'a str>,
    /// The environment key: the layer built (decisions) or used (runs).
    pub env_key: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// A line with only the common keys set.
    pub fn new(time: &'a str, event: Event, origin: &'a str) -> Record<'a> {
        Record {
            schema: SCHEMA,
            time,
            event,
            origin,
            script_sha256: None,
            policy: None,
            policy_digest: None,
            decision: None,
            package: None,
            version: None,
            reason: None,
            status: None,
            env_key: None,
        }
    }

    /// Appends the line, with its newline, to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let mut line = self.clone();
        let shortened;
        if let Some(reason) = line.reason
            && reason.len() > MAX_REASON_BYTES
        {
            shortened = format!("{}...", truncate_at_char(reason, MAX_REASON_BYTES));
            line.reason = Some(&shortened);
        }
        serde_json::to_writer(&mut *out, &line).expect("a record serialises");
        out.push(b'\n');
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_at_char(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The current time as the log writes it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_present_and_long_reasons_are_cut() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let mut record = Record::new("2026-01-01T00:00:00.000Z", Event::Decision, "validate");
        record.reason = Some(&long);
        record.decision = Some(Decision::InstallFailed);
        let mut out = Vec::new();
        record.write_line(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 13, "{keys:?}");
        assert_eq!(value["decision"], "install-failed");
        assert_eq!(value["schema"], SCHEMA);
        let reason = value["reason"].as_str().unwrap();
        assert!(reason.len() <= MAX_REASON_BYTES + 3 && reason.ends_with("..."));
    }
}
