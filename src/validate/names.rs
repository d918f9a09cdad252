//! Distribution names, compared the way the index compares them (PEP 503).

use std::cmp::Ordering;

/// PEP 503 normal form: lowercase, runs of `-`, `_`, `.` become one `-`.
///
/// Uses `pep508_rs::PackageName` for valid names; the fallback keeps lookups
/// total for the odd malformed name found in installed metadata.
pub fn normalize_distribution(name: &str) -> String {
    if let Ok(valid) = pep508_rs::PackageName::new(name.to_string()) {
        return valid.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut pending_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            pending_sep = true;
        } else {
            if pending_sep && !out.is_empty() {
                out.push('-');
            }
            pending_sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Case-insensitive order, as the seed's messages list packages.
pub fn cmp_case_insensitive(a: &str, b: &str) -> Ordering {
    a.to_lowercase()
        .cmp(&b.to_lowercase())
        .then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep503() {
        assert_eq!(normalize_distribution("PyYAML"), "pyyaml");
        assert_eq!(
            normalize_distribution("alpaca_trade_api"),
            "alpaca-trade-api"
        );
        assert_eq!(normalize_distribution("Foo.._-Bar"), "foo-bar");
        assert_eq!(
            cmp_case_insensitive("pandas-ta", "Alpaca"),
            Ordering::Greater
        );
    }
}
