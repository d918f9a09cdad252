//! PEP 723 inline script metadata: the `# /// script` block.
//!
//! The block is found with the PEP's own rules (a `# /// script` line, then
//! comment lines, closed by the last `# ///` before the first non-comment
//! line), parsed as TOML, and checked strictly: requirements must be plain
//! PEP 508 names with specifiers (no URL, VCS or path: those would fetch code
//! from outside the administrators' index), and no `[tool.*]` table may
//! redirect installs to another index or source. Every error names the
//! script line it is on.

use std::str::FromStr;

use pep508_rs::pep440_rs::VersionSpecifiers;
use pep508_rs::{Requirement, VersionOrUrl};
use serde::Deserialize;
use toml::Spanned;

/// Keys under `[tool.*]` that would make an installer fetch from somewhere
/// other than the configured index.
const REDIRECTING_KEYS: &[&str] = &[
    "index",
    "index-url",
    "extra-index-url",
    "find-links",
    "sources",
    "no-index",
    "index-strategy",
    "trusted-host",
    "dependency-metadata",
    "override-dependencies",
];

/// The validated contents of a script's metadata block.
#[derive(Debug, Clone)]
pub struct InlineMetadata {
    /// 1-based line of the `# /// script` opener.
    pub line: u32,
    /// `requires-python`, when declared.
    pub requires_python: Option<VersionSpecifiers>,
    /// `dependencies`, in declaration order.
    pub dependencies: Vec<InlineRequirement>,
}

/// One declared dependency.
#[derive(Debug, Clone)]
pub struct InlineRequirement {
    /// The parsed requirement (name normalised per PEP 503).
    pub requirement: Requirement,
    /// 1-based script line the requirement string is on.
    pub line: u32,
}

/// Why a metadata block is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// `# /// script` with no closing `# ///`.
    #[error(
        "line {line}: inline script metadata block opened here is never closed (expected a '# ///' line)"
    )]
    Unclosed {
        /// Line of the opener.
        line: u32,
    },
    /// More than one `script` block.
    #[error("line {line}: second '# /// script' block (PEP 723 allows one per script)")]
    Duplicate {
        /// Line of the second opener.
        line: u32,
    },
    /// The TOML is malformed or has the wrong shape.
    #[error("line {line}: invalid inline script metadata: {message}")]
    Toml {
        /// Script line of the problem.
        line: u32,
        /// What was wrong.
        message: String,
    },
    /// A dependency is not a valid PEP 508 requirement.
    #[error("line {line}: invalid dependency '{requirement}': {message}")]
    InvalidRequirement {
        /// Script line.
        line: u32,
        /// The string as written.
        requirement: String,
        /// What the PEP 508 parser expected.
        message: String,
    },
    /// A dependency names a URL, VCS checkout or path.
    #[error(
        "line {line}: dependency '{requirement}' is a direct URL/VCS/path reference; only names with version specifiers from the package index are allowed"
    )]
    DirectReference {
        /// Script line.
        line: u32,
        /// The string as written.
        requirement: String,
    },
    /// `requires-python` is not a PEP 440 specifier set.
    #[error("line {line}: invalid requires-python '{value}': {message}")]
    InvalidRequiresPython {
        /// Script line.
        line: u32,
        /// The string as written.
        value: String,
        /// What the PEP 440 parser expected.
        message: String,
    },
    /// A `[tool.*]` table would redirect installs.
    #[error(
        "line {line}: '{key}' would redirect package installs; scripts cannot choose indexes or sources (remove it)"
    )]
    RedirectingTool {
        /// Script line of the table.
        line: u32,
        /// Dotted key, e.g. `tool.uv.index-url`.
        key: String,
    },
}

impl MetadataError {
    /// The script line the error is on.
    pub fn line(&self) -> u32 {
        match self {
            MetadataError::Unclosed { line }
            | MetadataError::Duplicate { line }
            | MetadataError::Toml { line, .. }
            | MetadataError::InvalidRequirement { line, .. }
            | MetadataError::DirectReference { line, .. }
            | MetadataError::InvalidRequiresPython { line, .. }
            | MetadataError::RedirectingTool { line, .. } => *line,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMetadata {
    requires_python: Option<Spanned<String>>,
    dependencies: Option<Vec<Spanned<String>>>,
    tool: Option<toml::Value>,
}

/// The raw block: its opener line and the TOML text with `# ` prefixes removed.
struct Block {
    line: u32,
    toml: String,
}

/// Finds and validates the script's metadata block; `Ok(None)` when it has none.
pub fn parse_inline_metadata(source: &str) -> Result<Option<InlineMetadata>, MetadataError> {
    let Some(block) = find_block(source)? else {
        return Ok(None);
    };
    let line_of =
        |offset: usize| block.line + 1 + block.toml[..offset].matches('\n').count() as u32;
    let raw: RawMetadata = toml::from_str(&block.toml).map_err(|e| MetadataError::Toml {
        line: e.span().map_or(block.line, |s| line_of(s.start)),
        message: e.message().trim().to_string(),
    })?;

    if let Some(tool) = &raw.tool {
        // toml's spans do not survive nested tables here; find the header.
        let at = block
            .toml
            .lines()
            .position(|l| l.trim_start().starts_with("[tool") || l.trim_start().starts_with("tool"))
            .unwrap_or(0);
        let line = block.line + 1 + at as u32;
        if let Some(key) = redirecting_key(tool, "tool") {
            return Err(MetadataError::RedirectingTool { line, key });
        }
    }

    let requires_python = match &raw.requires_python {
        None => None,
        Some(spec) => Some(VersionSpecifiers::from_str(spec.get_ref()).map_err(|e| {
            MetadataError::InvalidRequiresPython {
                line: line_of(spec.span().start),
                value: spec.get_ref().clone(),
                message: e.to_string(),
            }
        })?),
    };

    let mut dependencies = Vec::new();
    for dep in raw.dependencies.unwrap_or_default() {
        let line = line_of(dep.span().start);
        let text = dep.get_ref();
        let invalid = |message: String| MetadataError::InvalidRequirement {
            line,
            requirement: text.clone(),
            message,
        };
        // A URL requirement is refused before the parser sees it: pep508_rs
        // resolves paths and environment variables (and can panic) there.
        if text.split(';').next().unwrap_or("").contains('@') {
            return Err(MetadataError::DirectReference {
                line,
                requirement: text.clone(),
            });
        }
        check_names(text).map_err(invalid)?;
        let requirement =
            Requirement::from_str(text).map_err(|e| invalid(first_line(&e.message.to_string())))?;
        if matches!(requirement.version_or_url, Some(VersionOrUrl::Url(_))) {
            return Err(MetadataError::DirectReference {
                line,
                requirement: text.clone(),
            });
        }
        dependencies.push(InlineRequirement { requirement, line });
    }
    Ok(Some(InlineMetadata {
        line: block.line,
        requires_python,
        dependencies,
    }))
}

/// pep508_rs 0.9.2 panics (an `expect`) on a name or extra ending in `-`,
/// `_` or `.` when more follows it (`"a- >=1"`, `"a[b-]"`), so names and
/// extras are checked first with the PEP 508 rule: letters, digits, `-_.`,
/// starting and ending alphanumeric. Everything else is left to the parser.
fn check_names(text: &str) -> Result<(), String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let check = |what: &str, name: &str| {
        if alnum(name.chars().next()) && alnum(name.chars().last()) {
            Ok(())
        } else {
            Err(format!(
                "{what} '{name}' must start and end with a letter or digit"
            ))
        }
    };
    let text = text.trim_start();
    let end = text.find(|c: char| !is_name_char(c)).unwrap_or(text.len());
    if end == 0 {
        return Err("expected a package name at the start".into());
    }
    check("package name", &text[..end])?;
    let rest = text[end..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let extras = &extras[..extras.find(']').unwrap_or(extras.len())];
        for extra in extras.split(',').map(str::trim_start) {
            // The parser takes the leading run of name characters as the
            // extra (and only then looks at what follows).
            let extra = &extra[..extra
                .find(|c: char| !is_name_char(c))
                .unwrap_or(extra.len())];
            if !extra.is_empty() {
                check("extra", extra)?;
            }
        }
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// The first key under a tool table that would redirect installs.
fn redirecting_key(value: &toml::Value, path: &str) -> Option<String> {
    let toml::Value::Table(table) = value else {
        return None;
    };
    for (key, inner) in table {
        let here = format!("{path}.{key}");
        if REDIRECTING_KEYS.contains(&key.as_str())
            || REDIRECTING_KEYS.contains(&key.replace('_', "-").as_str())
        {
            return Some(here);
        }
        if let Some(found) = redirecting_key(inner, &here) {
            return Some(found);
        }
    }
    None
}

/// Applies PEP 723's block grammar line by line (universal newlines).
fn find_block(source: &str) -> Result<Option<Block>, MetadataError> {
    // Almost no script has a block: skip the line split for them.
    if memchr::memmem::find(source.as_bytes(), b"# /// script").is_none() {
        return Ok(None);
    }
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut found: Option<Block> = None;
    let mut i = 0;
    while i < lines.len() {
        if lines[i] != "# /// script" {
            i += 1;
            continue;
        }
        let opener = i;
        if found.is_some() {
            return Err(MetadataError::Duplicate {
                line: opener as u32 + 1,
            });
        }
        let mut close = None;
        let mut j = opener + 1;
        while j < lines.len() && (lines[j] == "#" || lines[j].starts_with("# ")) {
            if lines[j] == "# ///" {
                close = Some(j);
            }
            j += 1;
        }
        let Some(close) = close else {
            return Err(MetadataError::Unclosed {
                line: opener as u32 + 1,
            });
        };
        let toml = lines[opener + 1..close]
            .iter()
            .map(|l| l.strip_prefix("# ").unwrap_or(&l[1..]))
            .collect::<Vec<_>>()
            .join("\n");
        found = Some(Block {
            line: opener as u32 + 1,
            toml,
        });
        i = close + 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dependencies_and_requires_python() {
        let src = "#!/usr/bin/env python3\n# /// script\n# requires-python = \">=3.10\"\n# dependencies = [\n#   \"pandas>=2\",\n#   \"Pandas_TA\",\n# ]\n# ///\nimport pandas\n";
        let meta = parse_inline_metadata(src).unwrap().unwrap();
        assert_eq!(meta.line, 2);
        assert_eq!(meta.requires_python.unwrap().to_string(), ">=3.10");
        let names: Vec<String> = meta
            .dependencies
            .iter()
            .map(|d| d.requirement.name.to_string())
            .collect();
        assert_eq!(names, ["pandas", "pandas-ta"]);
        assert_eq!(meta.dependencies[1].line, 6);
    }

    #[test]
    fn no_block_is_fine() {
        assert!(
            parse_inline_metadata("import os\n# /// other\n# ///\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn unclosed_and_duplicate_blocks() {
        assert_eq!(
            parse_inline_metadata("x = 1\n# /// script\n# dependencies = []\nimport os\n")
                .unwrap_err(),
            MetadataError::Unclosed { line: 2 }
        );
        let two = "# /// script\n# ///\nx = 1\n# /// script\n# ///\n";
        assert_eq!(
            parse_inline_metadata(two).unwrap_err(),
            MetadataError::Duplicate { line: 4 }
        );
    }

    #[test]
    fn bad_toml_points_at_the_line() {
        let src = "# /// script\n# dependencies = [\n#   \"pandas\"\n#   \"numpy\",\n# ]\n# ///\n";
        let err = parse_inline_metadata(src).unwrap_err();
        assert!(matches!(err, MetadataError::Toml { line: 4, .. }), "{err}");
        let src = "# /// script\n# dependencies = \"pandas\"\n# ///\n";
        assert!(matches!(
            parse_inline_metadata(src).unwrap_err(),
            MetadataError::Toml { line: 2, .. }
        ));
        let src = "# /// script\n# requires-python = \">=3.8\"\n# flavour = 1\n# ///\n";
        assert!(matches!(
            parse_inline_metadata(src).unwrap_err(),
            MetadataError::Toml { line: 3, .. }
        ));
    }

    #[test]
    fn direct_references_are_rejected() {
        for dep in [
            "pkg @ https://example.invalid/pkg-1.0.tar.gz",
            "pkg @ git+https://example.invalid/repo.git",
            "pkg @ file:///tmp/pkg.whl",
        ] {
            let src = format!("# /// script\n# dependencies = [\"{dep}\"]\n# ///\n");
            assert!(
                matches!(
                    parse_inline_metadata(&src).unwrap_err(),
                    MetadataError::DirectReference { line: 2, .. }
                ),
                "{dep}"
            );
        }
        let src = "# /// script\n# dependencies = [\"./local/path\"]\n# ///\n";
        assert!(matches!(
            parse_inline_metadata(src).unwrap_err(),
            MetadataError::InvalidRequirement { .. }
        ));
    }

    #[test]
    fn redirecting_tool_tables_are_rejected() {
        let src = "# /// script\n# dependencies = []\n# [tool.uv]\n# index-url = \"http://127.0.0.1:1/simple\"\n# ///\n";
        let err = parse_inline_metadata(src).unwrap_err();
        assert_eq!(
            err,
            MetadataError::RedirectingTool {
                line: 3,
                key: "tool.uv.index-url".into()
            }
        );
        let src = "# /// script\n# [tool.uv.sources]\n# pandas = { path = \"../x\" }\n# ///\n";
        assert!(matches!(
            parse_inline_metadata(src).unwrap_err(),
            MetadataError::RedirectingTool { .. }
        ));
        let harmless = "# /// script\n# [tool.ruff]\n# line-length = 100\n# ///\n";
        assert!(parse_inline_metadata(harmless).is_ok());
    }

    #[test]
    fn names_ending_in_separators_are_errors_not_panics() {
        for dep in [
            "a- >=1",
            "a-[x]",
            "a-(>=1)",
            "a-<2",
            "a_ ",
            "-a",
            ">=1",
            "a[b-]",
            "a[x, b.]==1",
            "pandas[perfMMMce-]==2.2.*",
            "pandrapes[formance,exc2- !=4stem ",
        ] {
            let src = format!("# /// script\n# dependencies = [\"{dep}\"]\n# ///\n");
            assert!(
                matches!(
                    parse_inline_metadata(&src).unwrap_err(),
                    MetadataError::InvalidRequirement { line: 2, .. }
                ),
                "{dep}"
            );
        }
        let src = "# /// script\n# dependencies = [\"a.b-c_d[x-y, z] >=1\"]\n# ///\n";
        assert!(parse_inline_metadata(src).is_ok());
        let src = "# /// script\n# dependencies = [\"a. @ ./x\"]\n# ///\n";
        assert!(matches!(
            parse_inline_metadata(src).unwrap_err(),
            MetadataError::DirectReference { .. }
        ));
    }

    #[test]
    fn bad_requires_python() {
        let src = "# /// script\n# requires-python = \"three\"\n# ///\n";
        assert!(matches!(
            parse_inline_metadata(src).unwrap_err(),
            MetadataError::InvalidRequiresPython { line: 2, .. }
        ));
    }
}
