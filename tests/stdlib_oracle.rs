//! Correctness against a real oracle: CPython's own `ast` module.
//!
//! For every file of the machine's CPython standard library (its `Lib`,
//! without site-packages) that `ast.parse` accepts, the set of absolute
//! top-level names imported by `import` / `from ... import` statements must
//! be exactly what scriptbox's import finder reports. Dynamic imports are
//! excluded on our side because `ast` has no notion of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use scriptbox::validate::imports::{ImportForm, scan_source};
use scriptbox::validate::nesting::check_nesting;
use scriptbox::validate::source::{DEFAULT_MAX_SCRIPT_BYTES, read_script};
use scriptbox::validate::stack::with_large_stack;

/// Walks the stdlib with CPython and prints `{path: [top-level names]}` for
/// every file `ast` accepts.
const ORACLE: &str = r#"
import ast, json, os, sys, sysconfig
lib = sysconfig.get_paths()["stdlib"]
out = {}
for root, dirs, files in os.walk(lib):
    dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
    for f in sorted(files):
        if not f.endswith(".py"):
            continue
        p = os.path.join(root, f)
        try:
            with open(p, "rb") as fh:
                tree = ast.parse(fh.read(), p)
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
            continue
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[p] = sorted(names)
json.dump({"lib": lib, "files": out}, sys.stdout)
"#;

mod support;
use support::python_command as python;

#[test]
fn top_level_imports_match_cpython_ast_on_the_whole_stdlib() {
    let output = Command::new(python())
        .args(["-I", "-c", ORACLE])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    #[derive(serde::Deserialize)]
    struct Oracle {
        lib: PathBuf,
        files: BTreeMap<PathBuf, BTreeSet<String>>,
    }
    let oracle: Oracle = serde_json::from_slice(&output.stdout).expect("oracle JSON");
    assert!(
        oracle.files.len() > 500,
        "expected a full standard library under {}, found {} files",
        oracle.lib.display(),
        oracle.files.len()
    );

    let mut mismatches = Vec::new();
    for (path, expected) in &oracle.files {
        let ours = our_top_levels(path);
        if &ours != expected {
            let missing: Vec<_> = expected.difference(&ours).collect();
            let extra: Vec<_> = ours.difference(expected).collect();
            mismatches.push(format!(
                "{}: missing {missing:?}, extra {extra:?}",
                path.display()
            ));
        }
    }
    eprintln!(
        "stdlib oracle: compared {} files of {} with CPython's ast; {} mismatches",
        oracle.files.len(),
        oracle.lib.display(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn our_top_levels(path: &Path) -> BTreeSet<String> {
    let source = read_script(path, DEFAULT_MAX_SCRIPT_BYTES)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let scan = with_large_stack(|| {
        check_nesting(&source).map(|()| scan_source(&source, ruff_python_ast::PythonVersion::PY311))
    })
    .unwrap_or_else(|_| panic!("{}: refused as too deep", path.display()));
    scan.imports
        .iter()
        .filter(|i| i.form != ImportForm::Dynamic && !i.is_relative())
        .map(|i| i.top_level().to_string())
        .collect()
}
