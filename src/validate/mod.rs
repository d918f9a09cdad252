//! The validation stage: a script in, its dependency set and verdict out.
//!
//! [`validate_file`] reads and parses a script (never running it), resolves
//! every import against the target's standard library, the script's own
//! directory, the target's installed distributions and the curated table, and
//! merges in PEP 723 inline dependencies. The resulting [`ValidationReport`]
//! is what later stages consume; [`validate_packages`] and
//! [`create_error_message`] mirror the origin platform's Python API.

pub mod import_map;
pub mod imports;
pub mod inline_metadata;
pub mod installed;
pub mod local;
pub mod names;
pub mod nesting;
pub mod report;
pub mod source;
pub mod stack;
pub mod stdlib;
pub mod target;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pep508_rs::pep440_rs::VersionSpecifiers;
use pep508_rs::{PackageName, VersionOrUrl};
use serde::Serialize;
use tracing::info_span;

use self::imports::{ImportForm, ImportKind, ImportSite, SyntaxIssue, scan_source};
use self::inline_metadata::{MetadataError, parse_inline_metadata};
use self::installed::InstalledMatch;
use self::local::SiblingModules;
use self::names::{cmp_case_insensitive, normalize_distribution};
use self::nesting::{TooDeep, check_nesting};
use self::source::{DEFAULT_MAX_SCRIPT_BYTES, SourceError, decode_source, read_script_bytes};
use self::stack::with_large_stack;
use self::stdlib::StdlibStatus;
use self::target::TargetPython;
use crate::audit::AuditLog;
use crate::policy::Policy;
use crate::policy::verdict::{PolicyJudgement, PolicyStatus, judge};

/// Settings of one validation.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Largest script accepted, in bytes.
    pub max_script_bytes: u64,
    /// Whether modules beside the script count as local (`import helpers`
    /// with `helpers.py` next to it). Off when the script will run alone.
    pub sibling_modules: bool,
    /// Directory listings shared by every validation using these options.
    pub siblings: Arc<SiblingModules>,
    /// The whitelist policy to judge dependencies by, if any.
    pub policy: Option<Arc<Policy>>,
    /// Where to record the policy's decisions (with a policy only).
    pub audit: Option<Arc<AuditLog>>,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            max_script_bytes: DEFAULT_MAX_SCRIPT_BYTES,
            sibling_modules: true,
            siblings: Arc::default(),
            policy: None,
            audit: None,
        }
    }
}

/// Why a script could not be validated at all.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The file could not be read or decoded.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The code nests deeper than any Python compiler accepts.
    #[error(transparent)]
    TooDeep(#[from] TooDeep),
}

/// Where an import's module comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportStatus {
    /// The target's standard library.
    Stdlib,
    /// The script's own package (relative import) or a module beside it.
    Local,
    /// Provided by the target environment.
    Installed,
    /// Not provided by the target environment.
    Missing,
    /// Standard library in older Pythons, gone from the target's.
    RemovedFromStdlib,
}

/// One import with its resolution.
#[derive(Debug, Clone)]
pub struct ResolvedImport {
    /// The import as found in the source.
    pub site: ImportSite,
    /// Where it comes from.
    pub status: ImportStatus,
    /// The distribution providing (or that would provide) it.
    pub distribution: Option<String>,
    /// Other distributions that provide the same import name.
    pub alternatives: Vec<String>,
    /// True when `distribution` is only the import name itself.
    pub guessed: bool,
    /// A human hint, e.g. what replaced a removed stdlib module.
    pub note: Option<String>,
    /// The policy's status for a third-party import, under a policy.
    pub policy: Option<PolicyStatus>,
}

impl ResolvedImport {
    /// True when this import makes the script fail if left unresolved. Under
    /// a policy, packages it can provide are judged through the dependency
    /// set instead.
    pub fn blocks(&self) -> bool {
        self.site.kind == ImportKind::Required
            && matches!(
                self.status,
                ImportStatus::Missing | ImportStatus::RemovedFromStdlib
            )
            && matches!(self.policy, None | Some(PolicyStatus::Unknown))
    }
}

/// Whether a needed distribution is present in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DependencyStatus {
    /// Installed, and any declared specifier is satisfied.
    Installed,
    /// Not installed.
    Missing,
    /// Installed at a version the declared specifier excludes.
    WrongVersion,
    /// Declared with a marker that excludes the target (e.g. Windows-only).
    NotApplicable,
}

/// Where a dependency was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DependencySource {
    /// Required by an import statement.
    Import,
    /// Declared in the PEP 723 block.
    Inline,
}

/// A third-party distribution the script needs: the dependency set handed to
/// the environment builder.
#[derive(Debug, Clone, Serialize)]
pub struct Dependency {
    /// Distribution name as it is best known (`PyYAML`).
    pub name: String,
    /// PEP 503 normalised name.
    pub normalized: String,
    /// The requirement to install (`pandas>=2`), without markers.
    pub requirement: String,
    /// Whether the target has it.
    pub status: DependencyStatus,
    /// The installed version, when installed.
    pub installed_version: Option<String>,
    /// Where the need came from.
    pub sources: Vec<DependencySource>,
    /// True when the name came from no table, only the import name.
    pub guessed: bool,
    /// The versions the script asks for in its inline metadata.
    #[serde(skip)]
    pub requested: Option<VersionSpecifiers>,
    /// The policy's judgement, when validating under a policy.
    pub policy: Option<PolicyJudgement>,
}

/// The policy a script was validated under.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// The policy's name (its file stem).
    pub name: String,
    /// The policy file.
    pub path: PathBuf,
    /// The policy's semantic digest.
    pub digest: String,
    /// Whether installable packages are installed without asking.
    pub auto_install: bool,
}

/// The `requires-python` check.
#[derive(Debug, Clone, Serialize)]
pub struct RequiresPython {
    /// The specifier as declared.
    pub specifier: String,
    /// Whether the target's version satisfies it.
    pub satisfied: bool,
    /// Line of the metadata block.
    pub line: u32,
}

/// Everything validation found out about one script.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    /// The script.
    pub path: PathBuf,
    /// The target's full Python version.
    pub python_version: String,
    /// The target interpreter (`None` for a bare version target).
    pub python: Option<PathBuf>,
    /// Every import, in source order.
    pub imports: Vec<ResolvedImport>,
    /// Third-party distributions needed, sorted case-insensitively.
    pub dependencies: Vec<Dependency>,
    /// The PEP 723 `requires-python` check, if declared.
    pub requires_python: Option<RequiresPython>,
    /// The first syntax errors (imports were still collected around them).
    pub syntax_errors: Vec<SyntaxIssue>,
    /// How many syntax errors there are in all.
    pub syntax_error_count: usize,
    /// An unusable inline metadata block.
    pub metadata_error: Option<MetadataError>,
    /// Distribution names that must be installed, sorted case-insensitively.
    pub missing: Vec<String>,
    /// Requirements to pass to pip, same order as `missing`.
    pub missing_requirements: Vec<String>,
    /// Required imports, not removed stdlib modules, that no known
    /// distribution provides.
    pub unresolved: Vec<String>,
    /// The policy validated under, if any.
    pub policy: Option<PolicySummary>,
    /// Why each forbidden dependency is refused.
    pub forbidden: Vec<String>,
    /// Installable requirements the environment builder will add (policies
    /// with `auto_install = true`).
    pub to_install: Vec<String>,
    /// [`script_digest`] of the script's bytes, when it was computed
    /// (validations that are audited).
    pub script_sha256: Option<String>,
}

/// Overall verdict of a validation, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every required dependency is present.
    Ok,
    /// Something required is missing.
    Missing,
    /// The policy forbids something required.
    Forbidden,
    /// The input is unusable (syntax error, bad metadata, unreadable).
    Invalid,
}

impl Verdict {
    /// The process exit code documented in the README.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::Missing | Verdict::Forbidden => 1,
            Verdict::Invalid => 2,
        }
    }
}

impl ValidationReport {
    /// The overall verdict.
    pub fn verdict(&self) -> Verdict {
        if !self.syntax_errors.is_empty() || self.metadata_error.is_some() {
            Verdict::Invalid
        } else if !self.forbidden.is_empty() {
            Verdict::Forbidden
        } else if !self.missing.is_empty()
            || !self.unresolved.is_empty()
            || self.imports.iter().any(ResolvedImport::blocks)
            || self.requires_python.as_ref().is_some_and(|r| !r.satisfied)
        {
            Verdict::Missing
        } else {
            Verdict::Ok
        }
    }

    /// The distributions the environment must hold for this script: those
    /// its policy judged available or installable.
    pub fn buildable(&self) -> Vec<String> {
        use crate::policy::verdict::PolicyStatus;
        self.dependencies
            .iter()
            .filter(|d| {
                d.policy.as_ref().is_some_and(|j| {
                    matches!(
                        j.status,
                        PolicyStatus::Available | PolicyStatus::Installable
                    )
                })
            })
            .map(|d| d.normalized.clone())
            .collect()
    }

    /// `pip install ...` for the missing requirements, if any.
    pub fn pip_command(&self) -> Option<String> {
        pip_command(&self.missing_requirements)
    }

    /// Distributions the script needs that the target already has.
    pub fn available(&self) -> Vec<String> {
        self.dependencies
            .iter()
            .filter(|d| d.status == DependencyStatus::Installed)
            .map(|d| d.name.clone())
            .collect()
    }
}

/// Validates the script at `path` against `target`.
pub fn validate_file(
    path: &Path,
    target: &TargetPython,
    options: &ValidateOptions,
) -> Result<ValidationReport, ValidateError> {
    let span = info_span!(
        "validate",
        script = %path.display(),
        digest = tracing::field::Empty,
        python = %target.version
    );
    let _guard = span.enter();
    let bytes = read_script_bytes(path, options.max_script_bytes)?;
    // Hashing costs a little per file, so only when someone is listening.
    let digest = (options.audit.is_some() || !span.is_disabled()).then(|| script_digest(&bytes));
    if let Some(digest) = &digest {
        span.record("digest", digest.as_str());
    }
    let source = decode_source(&bytes)?;
    drop(bytes);
    let siblings = match (options.sibling_modules, path.parent()) {
        (true, Some(dir)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            Some(options.siblings.in_dir(dir))
        }
        _ => None,
    };
    let mut report = validate_source(path, &source, target, siblings.as_deref())?;
    report.script_sha256 = digest;
    judge_and_record(&mut report, options);
    Ok(report)
}

/// Validates a script already read into memory (what `run` will execute,
/// so the file cannot change between the check and the run). `path` only
/// names it in the report.
pub fn validate_bytes(
    path: &Path,
    bytes: &[u8],
    target: &TargetPython,
    options: &ValidateOptions,
) -> Result<ValidationReport, ValidateError> {
    let span = info_span!("validate", script = %path.display(), python = %target.version);
    let _guard = span.enter();
    if bytes.len() as u64 > options.max_script_bytes {
        return Err(crate::validate::source::SourceError::TooLarge {
            size: bytes.len() as u64,
            limit: options.max_script_bytes,
        }
        .into());
    }
    let source = decode_source(bytes)?;
    let mut report = validate_source(path, &source, target, None)?;
    if options.audit.is_some() {
        report.script_sha256 = Some(script_digest(bytes));
    }
    judge_and_record(&mut report, options);
    Ok(report)
}

/// Judges the report under the options' policy, if any, and records the
/// decisions in the options' audit log, if any: every edge that validates
/// (the CLI commands, the service) goes through here.
fn judge_and_record(report: &mut ValidationReport, options: &ValidateOptions) {
    if let Some(policy) = &options.policy {
        apply_policy(report, policy);
        if let Some(audit) = &options.audit {
            audit.record_decisions(report);
        }
    }
}

/// The sha256 of a script file's bytes, hex-encoded (what `sha256sum`
/// prints): how logs and records name a script.
pub fn script_digest(bytes: &[u8]) -> String {
    crate::cache::sha256_hex(bytes)
}

/// Validates script text; `siblings` are the module names importable from
/// the script's directory, when those count.
pub fn validate_source(
    path: &Path,
    source: &str,
    target: &TargetPython,
    siblings: Option<&HashSet<String>>,
) -> Result<ValidationReport, ValidateError> {
    let minor = target.minor;
    let version = ruff_python_ast::PythonVersion {
        major: 3,
        minor: minor.clamp(7, 15),
    };
    let scan = with_large_stack(|| check_nesting(source).map(|()| scan_source(source, version)))?;

    let (metadata, metadata_error) = match parse_inline_metadata(source) {
        Ok(m) => (m, None),
        Err(e) => (None, Some(e)),
    };

    let mut imports = Vec::with_capacity(scan.imports.len());
    for site in scan.imports {
        for site in expand_namespace_import(site, target) {
            imports.push(resolve_import(site, target, siblings));
        }
    }

    let mut deps: BTreeMap<String, Dependency> = BTreeMap::new();
    for import in &imports {
        if import.site.kind != ImportKind::Required {
            continue;
        }
        let Some(dist) = &import.distribution else {
            continue;
        };
        let normalized = normalize_distribution(dist);
        let (status, installed_version) = match import.status {
            ImportStatus::Installed => (
                DependencyStatus::Installed,
                target
                    .installed
                    .distribution(dist)
                    .and_then(|d| d.version.clone()),
            ),
            ImportStatus::Missing | ImportStatus::RemovedFromStdlib => {
                (DependencyStatus::Missing, None)
            }
            _ => continue,
        };
        // Where only some releases provide the module (pkg_resources ships
        // with setuptools<82), the requirement says which.
        let specifier = (status == DependencyStatus::Missing)
            .then(|| import_map::lookup(&import.site.module))
            .flatten()
            .filter(|known| known.default == dist.as_str())
            .and_then(|known| known.specifier);
        deps.entry(normalized.clone())
            .or_insert_with(|| Dependency {
                name: dist.clone(),
                normalized,
                requirement: format!("{dist}{}", specifier.unwrap_or_default()),
                status,
                installed_version,
                sources: vec![DependencySource::Import],
                guessed: import.guessed,
                requested: specifier.and_then(|s| s.parse::<VersionSpecifiers>().ok()),
                policy: None,
            });
    }

    let mut requires_python = None;
    if let Some(meta) = &metadata {
        if let Some(spec) = &meta.requires_python {
            requires_python = Some(RequiresPython {
                specifier: spec.to_string(),
                satisfied: spec.contains(&target.version),
                line: meta.line,
            });
        }
        let env = target.markers.environment();
        for dep in &meta.dependencies {
            merge_inline(&mut deps, dep, target, env.as_ref());
        }
    }

    let mut dependencies: Vec<Dependency> = deps.into_values().collect();
    dependencies.sort_by(|a, b| cmp_case_insensitive(&a.name, &b.name));
    let needs_install = |d: &&Dependency| {
        matches!(
            d.status,
            DependencyStatus::Missing | DependencyStatus::WrongVersion
        )
    };
    let missing = dependencies
        .iter()
        .filter(needs_install)
        .map(|d| d.name.clone())
        .collect();
    let missing_requirements = dependencies
        .iter()
        .filter(needs_install)
        .map(|d| d.requirement.clone())
        .collect();
    let mut unresolved: Vec<String> = imports
        .iter()
        // Removed stdlib modules get their own message, not this one.
        .filter(|i| i.blocks() && i.status == ImportStatus::Missing && i.distribution.is_none())
        .map(|i| i.site.module.clone())
        .collect();
    unresolved.dedup();

    Ok(ValidationReport {
        path: path.to_path_buf(),
        python_version: target.version.to_string(),
        python: target.executable.clone(),
        imports,
        dependencies,
        requires_python,
        syntax_errors: scan.syntax_errors,
        syntax_error_count: scan.syntax_error_count,
        metadata_error,
        missing,
        missing_requirements,
        unresolved,
        policy: None,
        forbidden: Vec::new(),
        to_install: Vec::new(),
        script_sha256: None,
    })
}

/// Judges a report's dependencies and imports under `policy`: each becomes
/// available, installable, forbidden or unknown, and the lists of what is
/// missing (or to be installed) and forbidden follow from that.
pub fn apply_policy(report: &mut ValidationReport, policy: &Policy) {
    let judge_name =
        |name: &str, requested: Option<&VersionSpecifiers>| match name.parse::<PackageName>() {
            Ok(name) => judge(policy, &name, requested),
            Err(_) => PolicyJudgement {
                status: PolicyStatus::Unknown,
                reason: format!("'{name}' is not a valid distribution name"),
            },
        };
    for dep in &mut report.dependencies {
        if dep.status != DependencyStatus::NotApplicable {
            dep.policy = Some(judge_name(&dep.normalized, dep.requested.as_ref()));
        }
    }
    for import in &mut report.imports {
        let third_party = matches!(
            import.status,
            ImportStatus::Installed | ImportStatus::Missing | ImportStatus::RemovedFromStdlib
        );
        import.policy = match (&import.distribution, third_party) {
            (Some(dist), true) => {
                let normalized = normalize_distribution(dist);
                let known = report
                    .dependencies
                    .iter()
                    .find(|d| d.normalized == normalized);
                Some(match known.and_then(|d| d.policy.as_ref()) {
                    Some(j) => j.status,
                    None => judge_name(&normalized, None).status,
                })
            }
            (None, true) if import.status == ImportStatus::Missing => Some(PolicyStatus::Unknown),
            _ => None,
        };
    }
    let judged = |status: PolicyStatus| {
        report
            .dependencies
            .iter()
            .filter(move |d| d.policy.as_ref().is_some_and(|j| j.status == status))
    };
    let installable: Vec<&Dependency> = judged(PolicyStatus::Installable).collect();
    let requirements: Vec<String> = installable.iter().map(|d| d.requirement.clone()).collect();
    let names: Vec<String> = installable.iter().map(|d| d.name.clone()).collect();
    report.forbidden = judged(PolicyStatus::Forbidden)
        .filter_map(|d| d.policy.as_ref().map(|j| j.reason.clone()))
        .collect();
    if policy.install.auto_install {
        report.missing = Vec::new();
        report.missing_requirements = Vec::new();
        report.to_install = requirements;
    } else {
        report.missing = names;
        report.missing_requirements = requirements;
    }
    report.policy = Some(PolicySummary {
        name: policy.name.clone(),
        path: policy.path.clone(),
        digest: policy.digest(),
        auto_install: policy.install.auto_install,
    });
}

/// `from google.cloud import storage, bigquery` imports two distributions:
/// when the module is only a namespace, each name is resolved on its own.
fn expand_namespace_import(site: ImportSite, target: &TargetPython) -> Vec<ImportSite> {
    if site.form != ImportForm::From
        || site.is_relative()
        || site.names.iter().any(|n| n == "*")
        || !(target.installed.is_namespace(&site.module)
            || import_map::has_deeper_entries(&site.module))
    {
        return vec![site];
    }
    site.names
        .iter()
        .map(|name| ImportSite {
            module: format!("{}.{}", site.module, name),
            names: vec![name.clone()],
            ..site.clone()
        })
        .collect()
}

fn resolve_import(
    site: ImportSite,
    target: &TargetPython,
    siblings: Option<&HashSet<String>>,
) -> ResolvedImport {
    let mut resolved = ResolvedImport {
        status: ImportStatus::Missing,
        distribution: None,
        alternatives: Vec::new(),
        guessed: false,
        note: None,
        policy: None,
        site,
    };
    if resolved.site.is_relative() {
        resolved.status = ImportStatus::Local;
        return resolved;
    }
    let top = resolved.site.top_level().to_string();
    let module = resolved.site.module.clone();
    if siblings.is_some_and(|names| names.contains(&top)) {
        resolved.status = ImportStatus::Local;
        return resolved;
    }
    match stdlib::classify(&top, target.minor) {
        StdlibStatus::Present => {
            resolved.status = ImportStatus::Stdlib;
            return resolved;
        }
        StdlibStatus::Removed(removed) => {
            // A backport installed in the target makes it importable again.
            if let Some(InstalledMatch::Distributions(d)) = target.installed.lookup(&module) {
                resolved.status = ImportStatus::Installed;
                resolved.distribution = d.first().map(|d| d.name.clone());
                return resolved;
            }
            // Some replacements provide the name without owning it in their
            // file list: setuptools serves `distutils` through a .pth hook.
            if let Some(installed) = removed
                .replacement
                .and_then(|r| target.installed.distribution(r))
            {
                resolved.status = ImportStatus::Installed;
                resolved.distribution = Some(installed.name.clone());
                resolved.note = Some(format!(
                    "removed from the standard library in Python 3.{}; provided by {}",
                    removed.removed_in_minor, installed.name
                ));
                return resolved;
            }
            resolved.status = ImportStatus::RemovedFromStdlib;
            resolved.distribution = removed.replacement.map(str::to_string);
            let mut note = format!(
                "removed from the standard library in Python 3.{}",
                removed.removed_in_minor
            );
            if !removed.note.is_empty() {
                note.push_str("; ");
                note.push_str(removed.note);
            }
            resolved.note = Some(note);
            return resolved;
        }
        StdlibStatus::Absent => {}
    }
    match target.installed.lookup(&module) {
        Some(InstalledMatch::Distributions(dists)) => {
            resolved.status = ImportStatus::Installed;
            let mut names = dists.iter().map(|d| d.name.clone());
            resolved.distribution = names.next();
            resolved.alternatives = names.collect();
            return resolved;
        }
        Some(InstalledMatch::Unowned) => {
            resolved.status = ImportStatus::Installed;
            resolved.note = Some("importable, but no installed distribution claims it".into());
            return resolved;
        }
        None => {}
    }
    resolved.status = ImportStatus::Missing;
    if let Some(known) = import_map::lookup(&module) {
        resolved.distribution = Some(known.default.to_string());
        resolved.alternatives = known.alternatives.iter().map(|s| s.to_string()).collect();
    } else if import_map::never_guess(&top) {
        resolved.note = Some(format!(
            "the project named '{top}' on the package index is not this module; no known distribution provides it"
        ));
    } else {
        resolved.distribution = Some(top);
        resolved.guessed = true;
    }
    resolved
}

fn merge_inline(
    deps: &mut BTreeMap<String, Dependency>,
    dep: &crate::validate::inline_metadata::InlineRequirement,
    target: &TargetPython,
    env: Option<&pep508_rs::MarkerEnvironment>,
) {
    let req = &dep.requirement;
    let normalized = req.name.to_string();
    let applies = env.is_none_or(|env| req.evaluate_markers(env, &[]));
    let installed = target.installed.distribution(&normalized);
    let specifiers = match &req.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(s)) => Some(s),
        _ => None,
    };
    let status = if !applies {
        DependencyStatus::NotApplicable
    } else {
        match installed {
            None => DependencyStatus::Missing,
            Some(d) => {
                let ok = match (specifiers, &d.version) {
                    (Some(spec), Some(v)) => v
                        .parse::<pep508_rs::pep440_rs::Version>()
                        .is_ok_and(|v| spec.contains(&v)),
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                if ok {
                    DependencyStatus::Installed
                } else {
                    DependencyStatus::WrongVersion
                }
            }
        }
    };
    let mut requirement = req.name.to_string();
    if !req.extras.is_empty() {
        let extras: Vec<String> = req.extras.iter().map(ToString::to_string).collect();
        requirement.push_str(&format!("[{}]", extras.join(",")));
    }
    if let Some(spec) = specifiers {
        requirement.push_str(&spec.to_string());
    }
    let installed_version = installed.and_then(|d| d.version.clone());
    match deps.get_mut(&normalized) {
        Some(existing) => {
            // The declaration is more precise than what an import implies.
            if status != DependencyStatus::NotApplicable {
                existing.status = status;
                existing.requirement = requirement;
                existing.requested = specifiers.cloned();
            }
            existing.guessed = false;
            if !existing.sources.contains(&DependencySource::Inline) {
                existing.sources.push(DependencySource::Inline);
            }
        }
        None => {
            let name = installed.map_or_else(|| normalized.clone(), |d| d.name.clone());
            deps.insert(
                normalized.clone(),
                Dependency {
                    name,
                    normalized,
                    requirement,
                    status,
                    installed_version,
                    sources: vec![DependencySource::Inline],
                    guessed: false,
                    requested: specifiers.cloned(),
                    policy: None,
                },
            );
        }
    }
}

/// Quotes a requirement for a POSIX shell when it contains special characters.
fn shell_word(word: &str) -> String {
    if word.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '+' | ',')
    }) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `pip install A B` for the given requirements, `None` when there are none.
pub fn pip_command(requirements: &[String]) -> Option<String> {
    if requirements.is_empty() {
        return None;
    }
    let words: Vec<String> = requirements.iter().map(|r| shell_word(r)).collect();
    Some(format!("pip install {}", words.join(" ")))
}

/// The origin platform's message for missing packages, word for word.
/// Empty when nothing is missing.
pub fn create_error_message(missing: &[String]) -> String {
    missing_message(missing, missing)
}

/// The same message, listing `names` and installing `requirements` (which
/// may carry version specifiers the names omit).
pub fn missing_message(names: &[String], requirements: &[String]) -> String {
    let Some(pip) = pip_command(requirements) else {
        return String::new();
    };
    format!(
        "Missing Python packages detected!\n\nYour script requires the following packages that are not installed:\n{}\n\nTo install these packages, run:\n{pip}\n\nOr ask your administrator to install them in the backend environment.",
        names.join(", ")
    )
}

/// The origin platform's `validate_packages(path) -> (all_ok, missing, available)`.
pub fn validate_packages(
    path: &Path,
    target: &TargetPython,
) -> Result<(bool, Vec<String>, Vec<String>), ValidateError> {
    let report = validate_file(path, target, &ValidateOptions::default())?;
    Ok((
        report.verdict() == Verdict::Ok,
        report.missing.clone(),
        report.available(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_message_word_for_word() {
        let msg = create_error_message(&["alpaca-trade-api".into(), "pandas-ta".into()]);
        assert_eq!(
            msg,
            "Missing Python packages detected!\n\nYour script requires the following packages that are not installed:\nalpaca-trade-api, pandas-ta\n\nTo install these packages, run:\npip install alpaca-trade-api pandas-ta\n\nOr ask your administrator to install them in the backend environment."
        );
        assert_eq!(create_error_message(&[]), "");
    }

    #[test]
    fn pip_command_quotes_specifiers() {
        assert_eq!(
            pip_command(&["pandas>=2".into(), "numpy".into()]).unwrap(),
            "pip install 'pandas>=2' numpy"
        );
    }

    fn bare(src: &str, version: &str) -> ValidationReport {
        let target = TargetPython::bare(version).unwrap();
        validate_source(Path::new("script.py"), src, &target, None).unwrap()
    }

    #[test]
    fn seed_example_on_an_empty_target() {
        let r = bare(
            "import pandas as pd\nimport pandas_ta as ta\nfrom alpaca_trade_api import REST\nimport os\n",
            "3.11",
        );
        assert_eq!(r.missing, ["alpaca-trade-api", "pandas", "pandas-ta"]);
        assert_eq!(r.verdict(), Verdict::Missing);
        assert_eq!(r.imports[3].status, ImportStatus::Stdlib);
    }

    #[test]
    fn removed_stdlib_modules_by_version() {
        let src = "import distutils.core\nimport imp\n";
        assert_eq!(bare(src, "3.11").verdict(), Verdict::Ok);
        let r = bare(src, "3.12");
        assert_eq!(r.imports[0].status, ImportStatus::RemovedFromStdlib);
        assert_eq!(r.imports[0].distribution.as_deref(), Some("setuptools"));
        assert_eq!(r.imports[1].status, ImportStatus::RemovedFromStdlib);
        assert_eq!(r.imports[1].distribution, None);
        assert_eq!(r.missing, ["setuptools"]);
        assert!(r.unresolved.is_empty(), "imp has its own message");
        assert_eq!(r.verdict(), Verdict::Missing);
    }

    #[test]
    fn installed_replacement_satisfies_a_removed_module() {
        // setuptools serves `distutils` through a .pth hook; its file list
        // has no `distutils/`, yet the import works.
        let site = tempfile::tempdir().unwrap();
        let info = site.path().join("setuptools-80.9.0.dist-info");
        std::fs::create_dir(&info).unwrap();
        std::fs::write(
            info.join("METADATA"),
            "Name: setuptools\nVersion: 80.9.0\n\n",
        )
        .unwrap();
        std::fs::write(
            info.join("RECORD"),
            "_distutils_hack/__init__.py,,\nsetuptools/__init__.py,,\n",
        )
        .unwrap();
        let mut target = TargetPython::bare("3.12").unwrap();
        target.installed =
            crate::validate::installed::InstalledIndex::scan(&[site.path().to_path_buf()]);
        let r =
            validate_source(Path::new("s.py"), "import distutils.util\n", &target, None).unwrap();
        assert_eq!(r.imports[0].status, ImportStatus::Installed);
        assert_eq!(r.imports[0].distribution.as_deref(), Some("setuptools"));
        assert_eq!(r.verdict(), Verdict::Ok);
    }

    #[test]
    fn placeholders_never_become_guesses() {
        let r = bare("import sklearn\nimport some_unknown_mod\n", "3.11");
        assert_eq!(r.imports[0].distribution.as_deref(), Some("scikit-learn"));
        assert!(!r.imports[0].guessed);
        assert_eq!(
            r.imports[1].distribution.as_deref(),
            Some("some_unknown_mod")
        );
        assert!(r.imports[1].guessed);
    }

    #[test]
    fn only_required_imports_fail() {
        let src = "try:\n    import ujson\nexcept ImportError:\n    ujson = None\n";
        let r = bare(src, "3.11");
        assert_eq!(r.imports[0].status, ImportStatus::Missing);
        assert_eq!(r.verdict(), Verdict::Ok);
        assert!(r.missing.is_empty());
    }

    #[test]
    fn inline_dependencies_join_and_carry_specifiers() {
        let src = "# /// script\n# requires-python = \">=3.12\"\n# dependencies = [\"pandas-ta>=0.3\", \"pywin32; sys_platform == 'win32'\"]\n# ///\nimport pandas_ta\n";
        let r = bare(src, "3.11");
        assert_eq!(r.missing_requirements, ["pandas-ta>=0.3"]);
        assert!(!r.requires_python.as_ref().unwrap().satisfied);
        let pywin = r
            .dependencies
            .iter()
            .find(|d| d.normalized == "pywin32")
            .unwrap();
        assert_eq!(pywin.status, DependencyStatus::NotApplicable);
        assert!(bare(src, "3.12").requires_python.unwrap().satisfied);
    }

    #[test]
    fn namespace_from_imports_split_per_name() {
        let r = bare("from google.cloud import storage, bigquery\n", "3.11");
        let dists: Vec<Option<&str>> = r
            .imports
            .iter()
            .map(|i| i.distribution.as_deref())
            .collect();
        assert_eq!(
            dists,
            [Some("google-cloud-storage"), Some("google-cloud-bigquery")]
        );
    }
}
