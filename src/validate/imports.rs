//! Finding every import in a script without running it.
//!
//! The script is parsed with ruff's error-recovering parser, so a file with a
//! syntax error still yields every import the parser could recover, together
//! with the errors (line and column). The walk covers every statement and
//! expression: module level, function and class bodies, every compound
//! statement, and literal dynamic imports (`importlib.import_module("x")`,
//! an aliased `import_module("x")`, `__import__("x")`) anywhere in an
//! expression. Each import is classified by the code around it, because only
//! imports that always run can make validation fail.

use std::collections::HashSet;

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{self as ast, ExceptHandler, Expr, PythonVersion, Stmt};
use ruff_python_parser::{Mode, ParseOptions};
use ruff_source_file::LineIndex;
use ruff_text_size::{Ranged, TextSize};
use serde::Serialize;

/// How an import is guarded, which decides whether its absence is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportKind {
    /// Runs unconditionally whenever its enclosing code runs.
    Required,
    /// Inside a `try:` whose handlers catch `ImportError` (or a superclass),
    /// or a `with suppress(ImportError):` block: the script copes without it.
    Optional,
    /// Under `if TYPE_CHECKING:`: never executed at run time.
    TypingOnly,
    /// Under an `if` testing the platform or Python version.
    Conditional,
}

impl ImportKind {
    /// The kebab-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Required => "required",
            ImportKind::Optional => "optional",
            ImportKind::TypingOnly => "typing-only",
            ImportKind::Conditional => "conditional",
        }
    }
}

/// The syntactic form an import was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportForm {
    /// `import a.b.c [as d]`
    Import,
    /// `from a.b import c` (also relative forms).
    From,
    /// `importlib.import_module("x")`, `import_module("x")`, `__import__("x")`.
    Dynamic,
}

/// One import found in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSite {
    /// Dotted module path as written, with leading dots for relative imports
    /// (`from .m import y` gives `.m`, `from . import x` gives `.`).
    pub module: String,
    /// For `from` imports, the imported names (`*` for a star import).
    pub names: Vec<String>,
    /// 1-based line of the import.
    pub line: u32,
    /// 1-based column (in characters) of the import.
    pub column: u32,
    /// How the import is guarded.
    pub kind: ImportKind,
    /// How it was written.
    pub form: ImportForm,
}

impl ImportSite {
    /// True for relative imports, which always name the script's own package.
    pub fn is_relative(&self) -> bool {
        self.module.starts_with('.')
    }

    /// The first component of the module path (the module itself when relative).
    pub fn top_level(&self) -> &str {
        if self.is_relative() {
            &self.module
        } else {
            self.module.split('.').next().unwrap_or(&self.module)
        }
    }
}

/// A syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyntaxIssue {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What the parser expected or rejected.
    pub message: String,
}

/// Everything found in one script's source.
#[derive(Debug, Clone, Default)]
pub struct ScriptScan {
    /// Imports in source order.
    pub imports: Vec<ImportSite>,
    /// The first [`MAX_REPORTED_SYNTAX_ERRORS`] syntax errors in source
    /// order, including syntax the target Python version lacks.
    pub syntax_errors: Vec<SyntaxIssue>,
    /// How many syntax errors there are in all.
    pub syntax_error_count: usize,
}

/// Syntax errors reported per script; the rest are only counted.
pub const MAX_REPORTED_SYNTAX_ERRORS: usize = 100;

/// Parses `source` for the given target version and collects its imports.
///
/// Deeply nested code recurses in the parser and in the walk, so callers that
/// accept untrusted input run this on a thread with a large stack (see
/// [`crate::validate::stack::with_large_stack`]).
pub fn scan_source(source: &str, target: PythonVersion) -> ScriptScan {
    let options = ParseOptions::from(Mode::Module).with_target_version(target);
    let parsed = ruff_python_parser::parse_unchecked(source, options);
    let index = LineIndex::from_source_text(source);
    let position = |offset: TextSize| {
        let lc = index.line_column(offset, source);
        (lc.line.get() as u32, lc.column.get() as u32)
    };

    // A hostile file can hold a million errors: order them by position, keep
    // the first few for the report and only count the rest.
    let mut found: Vec<(TextSize, &dyn std::fmt::Display)> = parsed
        .errors()
        .iter()
        .map(|e| (e.location.start(), &e.error as &dyn std::fmt::Display))
        .chain(
            parsed
                .unsupported_syntax_errors()
                .iter()
                .map(|e| (e.range.start(), e as &dyn std::fmt::Display)),
        )
        .collect();
    found.sort_by_key(|(offset, _)| *offset);
    let syntax_error_count = found.len();
    let syntax_errors = found
        .into_iter()
        .take(MAX_REPORTED_SYNTAX_ERRORS)
        .map(|(offset, message)| {
            let (line, column) = position(offset);
            SyntaxIssue {
                line,
                column,
                message: message.to_string(),
            }
        })
        .collect();

    let mut collector = Collector::default();
    if let ast::Mod::Module(module) = parsed.syntax() {
        collector.visit_body(&module.body);
    }
    let imports = collector.finish(&position);
    // The AST is dropped here, still on the caller's (large) stack.
    drop(parsed);
    ScriptScan {
        imports,
        syntax_errors,
        syntax_error_count,
    }
}

/// A dynamic-import call whose callee is only known to be an import function
/// once every binding in the file has been seen.
struct PendingCall {
    callee: Callee,
    module: String,
    offset: TextSize,
    kind: ImportKind,
}

enum Callee {
    /// A bare name, e.g. `import_module("x")` or `im("x")`.
    Name(String),
    /// `NAME.import_module("x")`, where NAME must be bound to `importlib`.
    ImportlibAttr(String),
}

#[derive(Default)]
struct Collector {
    found: Vec<(String, Vec<String>, TextSize, ImportKind, ImportForm)>,
    pending: Vec<PendingCall>,
    /// Local names bound to `importlib.import_module`.
    import_module_names: HashSet<String>,
    /// Local names bound to the `importlib` module.
    importlib_names: HashSet<String>,
    /// Local names bound to `typing` / `typing_extensions`.
    typing_names: HashSet<String>,
    /// Local names bound to `TYPE_CHECKING`.
    type_checking_names: HashSet<String>,
    /// Local names bound to the `sys`, `os` and `platform` modules.
    sys_names: HashSet<String>,
    os_names: HashSet<String>,
    platform_names: HashSet<String>,
    /// Local names bound to `sys.platform`, `sys.version_info`, `sys.implementation`.
    platform_values: HashSet<String>,
    typing_depth: u32,
    optional_depth: u32,
    conditional_depth: u32,
}

impl Collector {
    fn kind(&self) -> ImportKind {
        if self.typing_depth > 0 {
            ImportKind::TypingOnly
        } else if self.optional_depth > 0 {
            ImportKind::Optional
        } else if self.conditional_depth > 0 {
            ImportKind::Conditional
        } else {
            ImportKind::Required
        }
    }

    fn bind_import(&mut self, alias: &ast::Alias) {
        let full = alias.name.id.as_str();
        let bound = match &alias.asname {
            Some(asname) => asname.id.to_string(),
            // `import a.b` binds `a`, which is the module `a`.
            None => full.split('.').next().unwrap_or(full).to_string(),
        };
        // `import importlib.util` binds `importlib` itself.
        let target = if alias.asname.is_some() {
            full.to_string()
        } else {
            bound.clone()
        };
        match target.as_str() {
            "importlib" => {
                self.importlib_names.insert(bound);
            }
            "typing" | "typing_extensions" => {
                self.typing_names.insert(bound);
            }
            "sys" => {
                self.sys_names.insert(bound);
            }
            "os" => {
                self.os_names.insert(bound);
            }
            "platform" => {
                self.platform_names.insert(bound);
            }
            _ => {}
        }
    }

    fn bind_from(&mut self, module: &str, alias: &ast::Alias) {
        let name = alias.name.id.as_str();
        let bound = alias
            .asname
            .as_ref()
            .map_or_else(|| name.to_string(), |a| a.id.to_string());
        match (module, name) {
            ("importlib", "import_module") => {
                self.import_module_names.insert(bound);
            }
            ("typing" | "typing_extensions", "TYPE_CHECKING") => {
                self.type_checking_names.insert(bound);
            }
            ("sys", "platform" | "version_info" | "implementation") => {
                self.platform_values.insert(bound);
            }
            _ => {}
        }
    }

    fn is_type_checking(&self, test: &Expr) -> bool {
        match test {
            Expr::Name(n) => self.type_checking_names.contains(n.id.as_str()),
            Expr::Attribute(a) => {
                a.attr.id.as_str() == "TYPE_CHECKING"
                    && matches!(&*a.value, Expr::Name(n) if self.typing_names.contains(n.id.as_str()))
            }
            _ => false,
        }
    }

    fn is_not_type_checking(&self, test: &Expr) -> bool {
        matches!(test, Expr::UnaryOp(u) if u.op == ast::UnaryOp::Not && self.is_type_checking(&u.operand))
    }

    fn tests_platform(&self, test: &Expr) -> bool {
        let mut finder = PlatformTest {
            collector: self,
            found: false,
        };
        finder.visit_expr(test);
        finder.found
    }

    fn record(&mut self, module: String, names: Vec<String>, at: TextSize, form: ImportForm) {
        let kind = self.kind();
        self.found.push((module, names, at, kind, form));
    }

    fn finish(mut self, position: &dyn Fn(TextSize) -> (u32, u32)) -> Vec<ImportSite> {
        for call in std::mem::take(&mut self.pending) {
            let is_import = match &call.callee {
                Callee::Name(name) => self.import_module_names.contains(name),
                Callee::ImportlibAttr(name) => self.importlib_names.contains(name),
            };
            if is_import {
                self.found.push((
                    call.module,
                    Vec::new(),
                    call.offset,
                    call.kind,
                    ImportForm::Dynamic,
                ));
            }
        }
        self.found.sort_by_key(|f| f.2);
        self.found
            .into_iter()
            .map(|(module, names, at, kind, form)| {
                let (line, column) = position(at);
                ImportSite {
                    module,
                    names,
                    line,
                    column,
                    kind,
                    form,
                }
            })
            .collect()
    }

    /// Records a literal dynamic import, if `call` is one.
    fn dynamic_import(&mut self, call: &ast::ExprCall) {
        let Some(Expr::StringLiteral(lit)) = call.arguments.args.first() else {
            return;
        };
        let module = lit.value.to_str();
        if !is_module_path(module) {
            return;
        }
        let module = module.to_string();
        let at = call.range().start();
        let kind = self.kind();
        match &*call.func {
            Expr::Name(n) if n.id.as_str() == "__import__" => {
                self.found
                    .push((module, Vec::new(), at, kind, ImportForm::Dynamic));
            }
            Expr::Name(n) => self.pending.push(PendingCall {
                callee: Callee::Name(n.id.to_string()),
                module,
                offset: at,
                kind,
            }),
            Expr::Attribute(a) if a.attr.id.as_str() == "import_module" => {
                if let Expr::Name(n) = &*a.value {
                    self.pending.push(PendingCall {
                        callee: Callee::ImportlibAttr(n.id.to_string()),
                        module,
                        offset: at,
                        kind,
                    });
                }
            }
            _ => {}
        }
    }

    fn visit_guarded(&mut self, body: &[Stmt], guard: Guard) {
        let counter = match guard {
            Guard::TypingOnly => &mut self.typing_depth,
            Guard::Optional => &mut self.optional_depth,
            Guard::Conditional => &mut self.conditional_depth,
        };
        *counter += 1;
        self.visit_body(body);
        let counter = match guard {
            Guard::TypingOnly => &mut self.typing_depth,
            Guard::Optional => &mut self.optional_depth,
            Guard::Conditional => &mut self.conditional_depth,
        };
        *counter -= 1;
    }
}

#[derive(Clone, Copy)]
enum Guard {
    TypingOnly,
    Optional,
    Conditional,
}

/// A plausible dotted module path, optionally relative (`.x`, `..x.y`).
fn is_module_path(s: &str) -> bool {
    let rest = s.trim_start_matches('.');
    !rest.is_empty()
        && rest.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        })
}

/// True when an exception handler's type would catch a failed import.
fn catches_import_error(handler: &ExceptHandler) -> bool {
    let ExceptHandler::ExceptHandler(h) = handler;
    match &h.type_ {
        None => true,
        Some(ty) => names_import_error(ty),
    }
}

fn names_import_error(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Name(n) => n.id.as_str(),
        Expr::Attribute(a) => a.attr.id.as_str(),
        Expr::Tuple(t) => return t.elts.iter().any(names_import_error),
        _ => return false,
    };
    matches!(
        name,
        "ImportError" | "ModuleNotFoundError" | "Exception" | "BaseException"
    )
}

/// `with suppress(ImportError):` / `with contextlib.suppress(...)`.
fn suppresses_import_error(item: &ast::WithItem) -> bool {
    let Expr::Call(call) = &item.context_expr else {
        return false;
    };
    let is_suppress = match &*call.func {
        Expr::Name(n) => n.id.as_str() == "suppress",
        Expr::Attribute(a) => a.attr.id.as_str() == "suppress",
        _ => false,
    };
    is_suppress && call.arguments.args.iter().any(names_import_error)
}

impl<'a> Visitor<'a> for Collector {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::Import(import) => {
                for alias in &import.names {
                    let module = alias.name.id.to_string();
                    self.bind_import(alias);
                    self.record(
                        module,
                        Vec::new(),
                        alias.range().start(),
                        ImportForm::Import,
                    );
                }
            }
            Stmt::ImportFrom(from) => {
                let mut module = ".".repeat(from.level as usize);
                if let Some(m) = &from.module {
                    module.push_str(m.id.as_str());
                }
                if from.level == 0 {
                    for alias in &from.names {
                        self.bind_from(&module, alias);
                    }
                }
                let names = from.names.iter().map(|a| a.name.id.to_string()).collect();
                self.record(module, names, from.range().start(), ImportForm::From);
            }
            Stmt::If(stmt_if) => {
                self.visit_expr(&stmt_if.test);
                if self.is_type_checking(&stmt_if.test) {
                    self.visit_guarded(&stmt_if.body, Guard::TypingOnly);
                    for clause in &stmt_if.elif_else_clauses {
                        if let Some(test) = &clause.test {
                            self.visit_expr(test);
                        }
                        self.visit_body(&clause.body);
                    }
                } else if self.is_not_type_checking(&stmt_if.test) {
                    self.visit_body(&stmt_if.body);
                    for clause in &stmt_if.elif_else_clauses {
                        if let Some(test) = &clause.test {
                            self.visit_expr(test);
                            self.visit_body(&clause.body);
                        } else {
                            self.visit_guarded(&clause.body, Guard::TypingOnly);
                        }
                    }
                } else {
                    // Once any test in an if/elif chain depends on the
                    // platform, every later branch does too.
                    let mut platform = self.tests_platform(&stmt_if.test);
                    let guard = |p: bool| if p { Some(Guard::Conditional) } else { None };
                    match guard(platform) {
                        Some(g) => self.visit_guarded(&stmt_if.body, g),
                        None => self.visit_body(&stmt_if.body),
                    }
                    for clause in &stmt_if.elif_else_clauses {
                        if let Some(test) = &clause.test {
                            self.visit_expr(test);
                            platform |= self.tests_platform(test);
                        }
                        match guard(platform) {
                            Some(g) => self.visit_guarded(&clause.body, g),
                            None => self.visit_body(&clause.body),
                        }
                    }
                }
            }
            Stmt::Try(stmt_try) => {
                if stmt_try.handlers.iter().any(catches_import_error) {
                    self.visit_guarded(&stmt_try.body, Guard::Optional);
                } else {
                    self.visit_body(&stmt_try.body);
                }
                for handler in &stmt_try.handlers {
                    self.visit_except_handler(handler);
                }
                self.visit_body(&stmt_try.orelse);
                self.visit_body(&stmt_try.finalbody);
            }
            Stmt::With(with) if with.items.iter().any(suppresses_import_error) => {
                for item in &with.items {
                    self.visit_with_item(item);
                }
                self.visit_guarded(&with.body, Guard::Optional);
            }
            _ => visitor::walk_stmt(self, stmt),
        }
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Call(call) = expr {
            self.dynamic_import(call);
        }
        visitor::walk_expr(self, expr);
    }
}

/// Looks for `sys.platform`, `sys.version_info`, `sys.implementation`,
/// `os.name` and `platform.<anything>()` in an `if` test.
struct PlatformTest<'c> {
    collector: &'c Collector,
    found: bool,
}

impl<'a> Visitor<'a> for PlatformTest<'_> {
    fn visit_expr(&mut self, expr: &'a Expr) {
        if self.found {
            return;
        }
        let c = self.collector;
        match expr {
            Expr::Attribute(a) => {
                if let Expr::Name(base) = &*a.value {
                    let base = base.id.as_str();
                    let attr = a.attr.id.as_str();
                    if (c.sys_names.contains(base)
                        && matches!(attr, "platform" | "version_info" | "implementation"))
                        || (c.os_names.contains(base) && attr == "name")
                        || (c.platform_names.contains(base)
                            && matches!(
                                attr,
                                "system"
                                    | "machine"
                                    | "python_implementation"
                                    | "python_version"
                                    | "python_version_tuple"
                                    | "release"
                            ))
                    {
                        self.found = true;
                        return;
                    }
                }
            }
            Expr::Name(n) if c.platform_values.contains(n.id.as_str()) => {
                self.found = true;
                return;
            }
            _ => {}
        }
        visitor::walk_expr(self, expr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(src: &str) -> Vec<(String, ImportKind, ImportForm, u32)> {
        scan_source(src, PythonVersion::PY311)
            .imports
            .into_iter()
            .map(|i| (i.module, i.kind, i.form, i.line))
            .collect()
    }

    fn modules_with_kind(src: &str, kind: ImportKind) -> Vec<String> {
        scan(src)
            .into_iter()
            .filter(|i| i.1 == kind)
            .map(|i| i.0)
            .collect()
    }

    #[test]
    fn every_static_form() {
        let src = "import a.b.c as d\nfrom e.f import g\nfrom . import x\nfrom .m import y\nfrom ..p.q import z\nimport h, i as j\n";
        let found: Vec<String> = scan(src).into_iter().map(|i| i.0).collect();
        assert_eq!(found, ["a.b.c", "e.f", ".", ".m", "..p.q", "h", "i"]);
    }

    #[test]
    fn imports_in_every_block() {
        let src = r#"
def f():
    import in_func
class C:
    import in_class
    def m(self):
        from in_method import x
for _ in []:
    import in_for
while False:
    import in_while
with open("f") as fh:
    import in_with
match cmd:
    case 1:
        import in_match
async def g():
    async with ctx():
        import in_async_with
lambda: __import__("in_lambda")
"#;
        let found: Vec<String> = scan(src).into_iter().map(|i| i.0).collect();
        assert_eq!(
            found,
            [
                "in_func",
                "in_class",
                "in_method",
                "in_for",
                "in_while",
                "in_with",
                "in_match",
                "in_async_with",
                "in_lambda"
            ]
        );
    }

    #[test]
    fn dynamic_imports_and_aliases() {
        let src = r#"
import importlib.util
import importlib as il
x = importlib.import_module("dyn_a")
y = il.import_module("dyn_b.sub")
def later():
    return im("dyn_c") + import_module("dyn_d")
from importlib import import_module as im
z = [__import__("dyn_e")]
not_import = other.import_module("nope1")
also_not = import_module("nope2")  # shadowed? no: import_module is never bound
w = importlib.import_module(name_variable)
"#;
        let found: Vec<String> = scan(src)
            .into_iter()
            .filter(|i| i.2 == ImportForm::Dynamic)
            .map(|i| i.0)
            .collect();
        assert_eq!(found, ["dyn_a", "dyn_b.sub", "dyn_c", "dyn_e"]);
    }

    #[test]
    fn optional_imports() {
        let src = r#"
try:
    import ujson as json
except ImportError:
    import json
try:
    import orjson
except (ValueError, ModuleNotFoundError):
    pass
try:
    import needed
except ValueError:
    pass
try:
    import anything
except:
    pass
try:
    import exc
except builtins.Exception:
    pass
from contextlib import suppress
with suppress(ImportError):
    import suppressed
"#;
        assert_eq!(
            modules_with_kind(src, ImportKind::Optional),
            ["ujson", "orjson", "anything", "exc", "suppressed"]
        );
        assert_eq!(
            modules_with_kind(src, ImportKind::Required),
            ["json", "needed", "contextlib"]
        );
    }

    #[test]
    fn typing_only_and_conditional() {
        let src = r#"
import sys, os, platform
from typing import TYPE_CHECKING
import typing as t
if TYPE_CHECKING:
    import tc1
else:
    import runtime1
if t.TYPE_CHECKING:
    import tc2
if not TYPE_CHECKING:
    import runtime2
else:
    import tc3
if sys.platform == "win32":
    import winreg
elif sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli
if os.name == "nt":
    import msvcrt
if platform.system() == "Windows":
    import win32api
if True:
    import plain
"#;
        assert_eq!(
            modules_with_kind(src, ImportKind::TypingOnly),
            ["tc1", "tc2", "tc3"]
        );
        assert_eq!(
            modules_with_kind(src, ImportKind::Conditional),
            ["winreg", "tomllib", "tomli", "msvcrt", "win32api"]
        );
        assert_eq!(
            modules_with_kind(src, ImportKind::Required),
            [
                "sys", "os", "platform", "typing", "typing", "runtime1", "runtime2", "plain"
            ]
        );
    }

    #[test]
    fn typing_wins_over_optional() {
        let src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    try:\n        import x\n    except ImportError:\n        pass\n";
        assert_eq!(modules_with_kind(src, ImportKind::TypingOnly), ["x"]);
    }

    #[test]
    fn syntax_error_keeps_other_imports() {
        let src = "import pandas\ndef broken(:\n    pass\nimport numpy\nfrom alpaca_trade_api import REST\n";
        let scan = scan_source(src, PythonVersion::PY311);
        let mods: Vec<&str> = scan.imports.iter().map(|i| i.module.as_str()).collect();
        assert_eq!(mods, ["pandas", "numpy", "alpaca_trade_api"]);
        assert!(!scan.syntax_errors.is_empty());
        assert_eq!(scan.syntax_errors[0].line, 2);
    }

    #[test]
    fn version_specific_syntax() {
        let src = "import pandas\nrow = {}\nprint(f\"{row[\"close\"]}\")\n";
        assert!(
            scan_source(src, PythonVersion::PY312)
                .syntax_errors
                .is_empty()
        );
        let old = scan_source(src, PythonVersion::PY311);
        assert_eq!(old.syntax_errors.len(), 1, "{:?}", old.syntax_errors);
        assert_eq!(old.syntax_errors[0].line, 3);
    }

    #[test]
    fn lines_and_columns_with_crlf() {
        let src = "import os\r\n\r\n    \r\nif x:\r\n    import numpy\r\n";
        let scan = scan_source(src, PythonVersion::PY311);
        assert_eq!(scan.imports[1].line, 5);
        assert_eq!(scan.imports[1].column, 12);
    }
}
