//! A bound on how deeply a script nests, checked before the recursive parser runs.
//!
//! ruff's parser and AST walk recurse once per nesting level, and each level
//! costs about 1 KiB of AST, so a 16 MiB file of `-------1` would exhaust any
//! stack and gigabytes of memory. CPython refuses such files too (200 nested
//! brackets in its tokenizer, a recursion limit in its parser and compiler),
//! so refusing them loses nothing a script could use. The estimate comes from
//! ruff's lexer, which is iterative: brackets, f-strings and indentation open
//! levels, and operators and keywords deepen the current level until a comma
//! or the end of a logical line (left-deep chains like `a+b+c` and unary
//! chains like `not not x` nest in the AST without any bracket).

use ruff_python_ast::token::TokenKind;
use ruff_python_parser::Mode;

/// Deepest nesting accepted: far beyond anything CPython compiles, well
/// within what [`crate::validate::stack::PARSE_STACK_BYTES`] parses (3 million levels
/// were measured to fit).
pub const MAX_NESTING: u64 = 100_000;

/// Deepest f-string / t-string nesting accepted: CPython 3.12's own limit
/// (`MAXFSTRINGLEVEL`). ruff's parser is quadratic in this depth for targets
/// before 3.12, so it needs a bound of its own.
pub const MAX_FSTRING_NESTING: u64 = 150;

/// Which bound a script exceeded. (ruff's lexer does not expose token
/// positions publicly, so the place is not reported.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooDeep {
    /// Brackets, operators and blocks nest deeper than [`MAX_NESTING`].
    #[error(
        "code nests more than {MAX_NESTING} levels deep (CPython rejects far less; refusing to parse)"
    )]
    Code,
    /// f-strings nest deeper than [`MAX_FSTRING_NESTING`].
    #[error(
        "f-strings nest more than {MAX_FSTRING_NESTING} levels deep (CPython's limit; refusing to parse)"
    )]
    FString,
}

/// Returns an error when any token nests deeper than [`MAX_NESTING`].
///
/// Every level of the estimate is opened by a token of at least one byte, so
/// a source of at most [`MAX_NESTING`] bytes cannot exceed it and is not
/// lexed at all (most scripts: this keeps the check off the hot path).
pub fn check_nesting(source: &str) -> Result<(), TooDeep> {
    if source.len() as u64 <= MAX_NESTING {
        return Ok(());
    }
    let mut lexer = ruff_python_parser::lexer::lex(source, Mode::Module);
    // Chain lengths of the enclosing levels, and their sum.
    let mut enclosing: Vec<u64> = Vec::new();
    let mut enclosing_sum: u64 = 0;
    let mut chain: u64 = 0;
    let mut indent: u64 = 0;
    let mut fstrings: u64 = 0;
    loop {
        let kind = lexer.next_token();
        match kind {
            TokenKind::EndOfFile => return Ok(()),
            TokenKind::FStringStart | TokenKind::TStringStart => {
                fstrings += 1;
                if fstrings > MAX_FSTRING_NESTING {
                    return Err(TooDeep::FString);
                }
                enclosing.push(chain);
                enclosing_sum += chain;
                chain = 0;
            }
            TokenKind::Lpar | TokenKind::Lsqb | TokenKind::Lbrace => {
                enclosing.push(chain);
                enclosing_sum += chain;
                chain = 0;
            }
            TokenKind::Rpar
            | TokenKind::Rsqb
            | TokenKind::Rbrace
            | TokenKind::FStringEnd
            | TokenKind::TStringEnd => {
                if matches!(kind, TokenKind::FStringEnd | TokenKind::TStringEnd) {
                    fstrings = fstrings.saturating_sub(1);
                }
                match enclosing.pop() {
                    // A closed group keeps its place in the parent's chain:
                    // `f()()()` nests three calls deep.
                    Some(parent) => {
                        enclosing_sum -= parent;
                        chain = parent + 1;
                    }
                    None => chain = 0,
                }
            }
            TokenKind::Comma | TokenKind::Semi | TokenKind::Newline => chain = 0,
            TokenKind::Indent => indent += 1,
            TokenKind::Dedent => indent = indent.saturating_sub(1),
            k if k.is_operator() || k.is_keyword() => chain += 1,
            _ => continue,
        }
        let depth = enclosing.len() as u64 + enclosing_sum + chain + indent;
        if depth > MAX_NESTING {
            return Err(TooDeep::Code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_code_passes() {
        let src = "import os\ndata = [-1, -2, -3] * 3\nx = f()()[0].a.b\nif x:\n    y = {'a': 1}\n";
        assert_eq!(check_nesting(src), Ok(()));
    }

    #[test]
    fn flat_literals_do_not_count_as_depth() {
        let items: Vec<String> = (0..200_000).map(|i| format!("-{i}")).collect();
        let src = format!("data = [{}]\n", items.join(", "));
        assert_eq!(check_nesting(&src), Ok(()));
    }

    #[test]
    fn each_kind_of_deep_nesting_is_caught() {
        let n = MAX_NESTING as usize + 10;
        for src in [
            format!("x = {}1{}\n", "(".repeat(n), ")".repeat(n)),
            format!("x = {}1\n", "-".repeat(n)),
            format!("x = {}1\n", "not ".repeat(n)),
            format!("x = {}\n", vec!["1"; n].join("+")),
            format!("x = f{}\n", "()".repeat(n)),
            format!("x = a{}\n", ".b".repeat(n)),
        ] {
            assert!(check_nesting(&src).is_err(), "{}", &src[..20]);
        }
    }

    #[test]
    fn fstring_nesting_has_its_own_bound() {
        let pad = "# padding\n".repeat(20_000);
        let n = MAX_FSTRING_NESTING as usize;
        let ok = format!("{pad}x = {}1{}\n", "f'{".repeat(n), "}'".repeat(n));
        assert_eq!(check_nesting(&ok), Ok(()));
        let deep = format!("{pad}x = {}1{}\n", "f'{".repeat(n + 1), "}'".repeat(n + 1));
        assert_eq!(check_nesting(&deep), Err(TooDeep::FString));
    }

    #[test]
    fn ten_thousand_levels_pass() {
        // Padded past MAX_NESTING bytes so that the lexer really runs.
        let src = format!(
            "{}x = {}1{}\n",
            "# padding\n".repeat(20_000),
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(src.len() as u64 > MAX_NESTING);
        assert_eq!(check_nesting(&src), Ok(()));
    }
}
