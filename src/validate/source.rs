//! Turning a script file's bytes into text the way CPython would.
//!
//! CPython decodes source as UTF-8 unless a PEP 263 coding cookie on line 1 or 2
//! names another encoding; a UTF-8 byte-order mark is skipped (and conflicts with
//! any cookie other than UTF-8). NUL bytes are a syntax error in CPython, so they
//! are rejected here before parsing. Everything in this module is bounded: the
//! file size is checked from metadata before a byte is read.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest script accepted by default (16 MiB). Uploaded trading scripts are a
/// few kilobytes; anything near this size is a mistake or an attack.
pub const DEFAULT_MAX_SCRIPT_BYTES: u64 = 16 * 1024 * 1024;

/// Why a script's bytes could not be turned into source text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// The file could not be opened or read.
    #[error("cannot read file: {0}")]
    Unreadable(String),
    /// The path names a directory or another non-regular file.
    #[error("not a regular file (expected a Python script)")]
    NotAFile,
    /// The file exceeds the configured size limit.
    #[error(
        "file is {size} bytes, larger than the {limit}-byte limit for scripts (raise it with --max-size)"
    )]
    TooLarge {
        /// Size of the file in bytes.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The file contains a NUL byte, which CPython refuses.
    #[error("line {line}: source contains a NUL byte (binary file? expected Python source text)")]
    NulByte {
        /// 1-based line of the first NUL byte.
        line: usize,
    },
    /// The coding cookie names an encoding we do not know.
    #[error("line {line}: unknown encoding '{name}' in coding declaration")]
    UnknownEncoding {
        /// 1-based line of the cookie.
        line: usize,
        /// The declared encoding name.
        name: String,
    },
    /// The bytes are not valid in the declared (or default UTF-8) encoding.
    #[error(
        "line {line}: bytes are not valid {encoding} (declare the file's encoding with a '# -*- coding: NAME -*-' line)"
    )]
    Undecodable {
        /// 1-based line of the first invalid byte.
        line: usize,
        /// Name of the encoding that failed.
        encoding: String,
    },
    /// A UTF-8 BOM together with a cookie naming another encoding.
    #[error(
        "line {line}: encoding problem: '{name}' declared but the file starts with a UTF-8 byte-order mark"
    )]
    BomConflict {
        /// 1-based line of the cookie.
        line: usize,
        /// The declared encoding name.
        name: String,
    },
}

/// Reads `path` and decodes it, refusing files larger than `max_bytes`.
pub fn read_script(path: &Path, max_bytes: u64) -> Result<String, SourceError> {
    decode_source(&read_script_bytes(path, max_bytes)?)
}

/// Reads `path`'s bytes, refusing anything but a regular file of at most
/// `max_bytes`.
pub fn read_script_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
    let (file, meta) = open_regular(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => SourceError::NotAFile,
        _ => SourceError::Unreadable(io_reason(&e)),
    })?;
    if meta.len() > max_bytes {
        return Err(SourceError::TooLarge {
            size: meta.len(),
            limit: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` keeps the bound even if the file grows between stat and read.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SourceError::Unreadable(io_reason(&e)))?;
    if bytes.len() as u64 > max_bytes {
        return Err(SourceError::TooLarge {
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// Opens `path` for reading only if it is a regular file (after following
/// symlinks); anything else fails with `ErrorKind::InvalidInput`.
///
/// O_NONBLOCK: opening a FIFO (or a symlink to one) planted where a file
/// should be must not block forever; the fstat then rejects it. Regular
/// files ignore the flag.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// The OS error without Rust's "(os error N)" suffix, lower-cased like a sentence fragment.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Decodes Python source bytes per PEP 263 (BOM, coding cookie, UTF-8 default).
pub fn decode_source(bytes: &[u8]) -> Result<String, SourceError> {
    if let Some(pos) = memchr::memchr(0, bytes) {
        return Err(SourceError::NulByte {
            line: line_of(bytes, pos),
        });
    }
    let (has_bom, body) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    let cookie = find_coding_cookie(body);
    let encoding = match &cookie {
        None => Encoding::Utf8,
        Some((line, name)) => {
            let enc =
                Encoding::from_python_name(name).ok_or_else(|| SourceError::UnknownEncoding {
                    line: *line,
                    name: name.clone(),
                })?;
            if has_bom && enc != Encoding::Utf8 {
                return Err(SourceError::BomConflict {
                    line: *line,
                    name: name.clone(),
                });
            }
            enc
        }
    };
    encoding.decode(body)
}

fn line_of(bytes: &[u8], pos: usize) -> usize {
    memchr::memchr_iter(b'\n', &bytes[..pos]).count() + 1
}

/// The encodings a coding cookie may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same value.
    Latin1,
    Other(&'static encoding_rs::Encoding),
}

impl Encoding {
    /// Maps a Python codec name to an encoding, normalising as Python's codec
    /// registry does (case, `_` vs `-`).
    fn from_python_name(name: &str) -> Option<Encoding> {
        let norm = name.to_ascii_lowercase().replace('_', "-");
        match norm.as_str() {
            "utf-8" | "utf8" | "u8" | "utf" | "utf8-ucs2" | "utf8-ucs4" | "cp65001" => {
                return Some(Encoding::Utf8);
            }
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" | "8859" | "cp819" | "l1"
            | "latin" | "iso-ir-100" => return Some(Encoding::Latin1),
            "ascii" | "us-ascii" | "646" => return Some(Encoding::Utf8),
            _ => {}
        }
        // Python spells some codecs differently from the WHATWG labels.
        let label = match norm.as_str() {
            "cp1252" => "windows-1252",
            "cp1251" => "windows-1251",
            "cp1250" => "windows-1250",
            "euc-jp" | "eucjp" => "euc-jp",
            "shift-jis" | "sjis" | "s-jis" | "cp932" => "shift_jis",
            "gbk" | "cp936" => "gbk",
            "big5" | "cp950" => "big5",
            other => other,
        };
        encoding_rs::Encoding::for_label(label.as_bytes()).map(|enc| {
            if enc == encoding_rs::UTF_8 {
                Encoding::Utf8
            } else {
                Encoding::Other(enc)
            }
        })
    }

    fn decode(self, body: &[u8]) -> Result<String, SourceError> {
        match self {
            Encoding::Utf8 => match std::str::from_utf8(body) {
                Ok(text) => Ok(text.to_owned()),
                Err(e) => Err(SourceError::Undecodable {
                    line: line_of(body, e.valid_up_to()),
                    encoding: "UTF-8".into(),
                }),
            },
            Encoding::Latin1 => Ok(body.iter().map(|&b| b as char).collect()),
            Encoding::Other(enc) => {
                let (text, had_errors) = enc.decode_without_bom_handling(body);
                if had_errors {
                    let first_bad = text.find('\u{FFFD}').unwrap_or(0);
                    let line = text[..first_bad].matches('\n').count() + 1;
                    return Err(SourceError::Undecodable {
                        line,
                        encoding: enc.name().into(),
                    });
                }
                Ok(text.into_owned())
            }
        }
    }
}

/// Finds a PEP 263 coding cookie on line 1, or on line 2 when line 1 is a
/// comment or blank. Returns the 1-based line and the declared name.
fn find_coding_cookie(body: &[u8]) -> Option<(usize, String)> {
    let mut lines = body.split(|&b| b == b'\n');
    for line_no in 1..=2 {
        let line = lines.next()?;
        if let Some(name) = cookie_in_line(line) {
            return Some((line_no, name));
        }
        let trimmed = line.trim_ascii_start();
        if !(trimmed.is_empty() || trimmed.starts_with(b"#")) {
            return None;
        }
    }
    None
}

/// Matches `^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)` against one line: the
/// first "coding" followed by `:` or `=` wins, as with the non-greedy regex.
fn cookie_in_line(line: &[u8]) -> Option<String> {
    let start = line
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | 0x0c))?;
    let mut rest = line[start..].strip_prefix(b"#")?;
    loop {
        let at = rest.windows(6).position(|w| w == b"coding")?;
        rest = &rest[at + 6..];
        if let Some(b':' | b'=') = rest.first() {
            break;
        }
    }
    let after = &rest[1..];
    let after = &after[after
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(after.len())..];
    let end = after
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        .unwrap_or(after.len());
    if end == 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&after[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_default_and_bom() {
        assert_eq!(decode_source(b"import os\n").unwrap(), "import os\n");
        assert_eq!(
            decode_source(b"\xEF\xBB\xBFimport os\n").unwrap(),
            "import os\n"
        );
    }

    #[test]
    fn latin1_cookie() {
        let src = b"# -*- coding: latin-1 -*-\nname = '\xe9'\nimport numpy\n";
        let text = decode_source(src).unwrap();
        assert!(text.contains("'\u{e9}'"));
    }

    #[test]
    fn cookie_on_second_line_only_after_comment() {
        let src = b"#!/usr/bin/env python\n# vim: set fileencoding=latin-1 :\nx='\xe9'\n";
        assert!(decode_source(src).unwrap().contains('\u{e9}'));
        let src = b"x = 1\n# coding: latin-1\ny='\xe9'\n";
        assert_eq!(
            decode_source(src),
            Err(SourceError::Undecodable {
                line: 3,
                encoding: "UTF-8".into()
            })
        );
    }

    #[test]
    fn nul_and_unknown_encoding() {
        assert_eq!(
            decode_source(b"import os\n\0\n"),
            Err(SourceError::NulByte { line: 2 })
        );
        assert!(matches!(
            decode_source(b"# coding: klingon\n"),
            Err(SourceError::UnknownEncoding { line: 1, .. })
        ));
        assert!(matches!(
            decode_source(b"\xEF\xBB\xBF# coding: latin-1\n"),
            Err(SourceError::BomConflict { .. })
        ));
    }

    #[test]
    fn non_greedy_cookie() {
        assert_eq!(
            cookie_in_line(b"# decoding coding: cp1252"),
            Some("cp1252".into())
        );
        assert_eq!(cookie_in_line(b"x = 1 # coding: utf-8"), None);
    }
}
