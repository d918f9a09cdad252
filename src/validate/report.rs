//! Rendering validation results: people get text, machines get JSON.
//!
//! The JSON shape is a stable, versioned schema (documented in the README):
//! every key is always present, with `null` or `[]` when empty, so consumers
//! never need to probe for keys. Bump [`SCHEMA`] on any incompatible change.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::policy::verdict::PolicyStatus;
use crate::validate::imports::{ImportForm, ImportKind, SyntaxIssue};
use crate::validate::{
    Dependency, ImportStatus, PolicySummary, RequiresPython, ValidateError, ValidationReport,
    Verdict, missing_message,
};

/// Identifier of the JSON schema emitted by `scriptbox validate --format json`.
pub const SCHEMA: &str = "scriptbox.validate/1";

#[derive(Serialize)]
struct JsonImport<'a> {
    module: &'a str,
    top_level: &'a str,
    names: &'a [String],
    line: u32,
    column: u32,
    kind: ImportKind,
    form: ImportForm,
    status: ImportStatus,
    distribution: Option<&'a str>,
    alternatives: &'a [String],
    guessed: bool,
    note: Option<&'a str>,
    policy_status: Option<PolicyStatus>,
}

#[derive(Serialize)]
struct JsonMessage<'a> {
    line: Option<u32>,
    message: &'a str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    path: String,
    verdict: Verdict,
    exit_code: i32,
    python_version: Option<&'a str>,
    python: Option<String>,
    imports: Vec<JsonImport<'a>>,
    dependencies: &'a [Dependency],
    requires_python: Option<&'a RequiresPython>,
    missing: &'a [String],
    pip_command: Option<String>,
    unresolved: &'a [String],
    policy: Option<&'a PolicySummary>,
    forbidden: &'a [String],
    to_install: &'a [String],
    syntax_errors: &'a [SyntaxIssue],
    syntax_error_count: usize,
    metadata_error: Option<JsonMessage<'a>>,
    error: Option<JsonMessage<'a>>,
}

/// One JSON object (no trailing newline) for a validated script.
pub fn to_json(report: &ValidationReport) -> String {
    let metadata_message = report.metadata_error.as_ref().map(ToString::to_string);
    let verdict = report.verdict();
    let json = JsonReport {
        schema: SCHEMA,
        path: report.path.display().to_string(),
        verdict,
        exit_code: verdict.exit_code(),
        python_version: Some(&report.python_version),
        python: report.python.as_ref().map(|p| p.display().to_string()),
        imports: report
            .imports
            .iter()
            .map(|i| JsonImport {
                module: &i.site.module,
                top_level: i.site.top_level(),
                names: &i.site.names,
                line: i.site.line,
                column: i.site.column,
                kind: i.site.kind,
                form: i.site.form,
                status: i.status,
                distribution: i.distribution.as_deref(),
                alternatives: &i.alternatives,
                guessed: i.guessed,
                note: i.note.as_deref(),
                policy_status: i.policy,
            })
            .collect(),
        dependencies: &report.dependencies,
        requires_python: report.requires_python.as_ref(),
        missing: &report.missing,
        pip_command: report.pip_command(),
        unresolved: &report.unresolved,
        policy: report.policy.as_ref(),
        forbidden: &report.forbidden,
        to_install: &report.to_install,
        syntax_errors: &report.syntax_errors,
        syntax_error_count: report.syntax_error_count,
        metadata_error: report
            .metadata_error
            .as_ref()
            .zip(metadata_message.as_deref())
            .map(|(e, m)| JsonMessage {
                line: Some(e.line()),
                message: m,
            }),
        error: None,
    };
    serde_json::to_string(&json).expect("report serialises")
}

/// One JSON object (no trailing newline) for a script that could not be validated.
pub fn error_to_json(path: &Path, message: &str) -> String {
    let json = JsonReport {
        schema: SCHEMA,
        path: path.display().to_string(),
        verdict: Verdict::Invalid,
        exit_code: Verdict::Invalid.exit_code(),
        python_version: None,
        python: None,
        imports: Vec::new(),
        dependencies: &[],
        requires_python: None,
        missing: &[],
        pip_command: None,
        unresolved: &[],
        policy: None,
        forbidden: &[],
        to_install: &[],
        syntax_errors: &[],
        syntax_error_count: 0,
        metadata_error: None,
        error: Some(JsonMessage {
            line: None,
            message,
        }),
    };
    serde_json::to_string(&json).expect("report serialises")
}

/// The one-line message for a script that could not be validated.
pub fn error_line(path: &Path, error: &ValidateError) -> String {
    format!("{}: {error}", path.display())
}

/// The human-readable report: one row per import, problems, then the origin
/// platform's missing-packages message when something required is missing.
pub fn to_text(report: &ValidationReport) -> String {
    let mut out = String::new();
    let target = match (&report.policy, &report.python) {
        (Some(p), _) => format!("under policy '{}' ({})", p.name, p.path.display()),
        (None, Some(python)) => format!("({})", python.display()),
        (None, None) => "(bare: nothing installed)".to_string(),
    };
    let _ = writeln!(
        out,
        "{}: Python {} {target}",
        report.path.display(),
        report.python_version
    );
    if report.imports.is_empty() {
        let _ = writeln!(out, "  no imports");
    }
    let width = report
        .imports
        .iter()
        .map(|i| i.site.module.len())
        .max()
        .unwrap_or(0)
        .clamp(8, 40);
    for i in &report.imports {
        let status = match i.status {
            ImportStatus::Stdlib => "stdlib",
            ImportStatus::Local => "local",
            ImportStatus::Installed => "installed",
            ImportStatus::Missing => "missing",
            ImportStatus::RemovedFromStdlib => "removed-from-stdlib",
        };
        let mut detail = String::new();
        if let Some(d) = &i.distribution {
            detail.push_str(d);
            if i.guessed {
                detail.push_str(" (guessed from the import name)");
            }
        }
        if !i.alternatives.is_empty() {
            let _ = write!(detail, " (or: {})", i.alternatives.join(", "));
        }
        if let Some(note) = &i.note {
            if !detail.is_empty() {
                detail.push_str(" - ");
            }
            detail.push_str(note);
        }
        let status = match i.policy {
            Some(PolicyStatus::Available) => "available",
            Some(PolicyStatus::Installable) => "installable",
            Some(PolicyStatus::Forbidden) => "forbidden",
            Some(PolicyStatus::Unknown) => "unknown",
            None => status,
        };
        let status = match i.site.kind {
            ImportKind::Required => status.to_string(),
            other => format!("{status} ({})", other.as_str()),
        };
        let row = format!(
            "  line {:>4}  {:<width$}  {:<32}{}",
            i.site.line,
            i.site.module,
            status,
            detail,
            width = width
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    for e in &report.syntax_errors {
        let _ = writeln!(
            out,
            "{}:{}:{}: syntax error: {}",
            report.path.display(),
            e.line,
            e.column,
            e.message
        );
    }
    let unlisted = report.syntax_error_count - report.syntax_errors.len();
    if unlisted > 0 {
        let _ = writeln!(
            out,
            "{}: ... and {unlisted} more syntax errors",
            report.path.display()
        );
    }
    if let Some(e) = &report.metadata_error {
        let _ = writeln!(out, "{}: {e}", report.path.display());
    }
    if let Some(rp) = report.requires_python.as_ref().filter(|r| !r.satisfied) {
        let _ = writeln!(
            out,
            "{}:{}: script requires Python {}, but the target is Python {}",
            report.path.display(),
            rp.line,
            rp.specifier,
            report.python_version
        );
    }
    for i in report.imports.iter().filter(|i| i.blocks()) {
        if i.status == ImportStatus::RemovedFromStdlib && i.distribution.is_none() {
            let _ = writeln!(
                out,
                "{}:{}: '{}' is not in Python {}'s standard library ({})",
                report.path.display(),
                i.site.line,
                i.site.module,
                report.python_version,
                i.note.as_deref().unwrap_or("removed")
            );
        }
    }
    for module in &report.unresolved {
        let _ = writeln!(
            out,
            "{}: no known distribution provides '{module}'; find the right package before installing anything named '{}'",
            report.path.display(),
            module.split('.').next().unwrap_or(module)
        );
    }
    if !report.forbidden.is_empty() {
        let policy = report.policy.as_ref().map_or("", |p| p.name.as_str());
        let _ = writeln!(out, "\nNot allowed by policy '{policy}':");
        for reason in &report.forbidden {
            let _ = writeln!(out, "  {reason}");
        }
    }
    if !report.to_install.is_empty() {
        let _ = writeln!(
            out,
            "\nTo be installed by the environment builder: {}",
            report.to_install.join(", ")
        );
    }
    if !report.missing.is_empty() {
        out.push('\n');
        let message = missing_message(&report.missing, &report.missing_requirements);
        out.push_str(&message);
        out.push('\n');
    }
    out
}
