//! The curated import-name → distribution table, for names nothing installed
//! provides.
//!
//! Data, not code: `src/data/import_names.tsv` (several candidates per import
//! name, the first being the default suggestion) and `src/data/no_guess.tsv`
//! (import names whose same-named project on the index is a different or
//! placeholder project). `scripts/verify-import-map` checks every entry
//! against the real projects' wheel metadata.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use crate::validate::stdlib::data_lines;

static TABLE: LazyLock<HashMap<&'static str, Vec<&'static str>>> = LazyLock::new(|| {
    data_lines(include_str!("../data/import_names.tsv"))
        .filter_map(|line| {
            let mut cols = line.split('\t').map(str::trim).filter(|c| !c.is_empty());
            let import = cols.next()?;
            let dists: Vec<&str> = cols.take_while(|c| !c.starts_with('#')).collect();
            (!dists.is_empty()).then_some((import, dists))
        })
        .collect()
});

/// Every proper dotted prefix of a table key that is not itself a key.
static NAMESPACES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    TABLE
        .keys()
        .flat_map(|key| key.match_indices('.').map(move |(i, _)| &key[..i]))
        .filter(|prefix| !TABLE.contains_key(prefix))
        .collect()
});

static NO_GUESS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    data_lines(include_str!("../data/no_guess.tsv"))
        .filter_map(|line| line.split('\t').next())
        .collect()
});

/// Distributions known to provide an import path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDistributions {
    /// The dotted import prefix the table matched (e.g. `google.protobuf`).
    pub matched: &'static str,
    /// The default suggestion.
    pub default: &'static str,
    /// The releases of the default that provide the name, when only some
    /// do (`<82` for setuptools, whose later releases dropped
    /// `pkg_resources`): part of the requirement to install.
    pub specifier: Option<&'static str>,
    /// Other distributions providing the same import name.
    pub alternatives: Vec<&'static str>,
}

/// A table field split into its distribution name and optional PEP 440
/// specifier: `setuptools<82` → (`setuptools`, `<82`).
fn split_specifier(field: &'static str) -> (&'static str, Option<&'static str>) {
    match field.find(['<', '>', '=', '!', '~']) {
        Some(i) => (&field[..i], Some(&field[i..])),
        None => (field, None),
    }
}

/// Looks up the longest dotted prefix of `module` in the curated table.
pub fn lookup(module: &str) -> Option<KnownDistributions> {
    let mut prefix = module;
    loop {
        if let Some((key, dists)) = TABLE.get_key_value(prefix) {
            let (default, specifier) = split_specifier(dists[0]);
            return Some(KnownDistributions {
                matched: key,
                default,
                specifier,
                alternatives: dists[1..].iter().map(|d| split_specifier(d).0).collect(),
            });
        }
        prefix = &prefix[..prefix.rfind('.')?];
    }
}

/// True when the table has entries below `prefix` (`google.cloud` has
/// `google.cloud.storage`), i.e. `prefix` is a namespace the table splits.
pub fn has_deeper_entries(prefix: &str) -> bool {
    NAMESPACES.contains(prefix)
}

/// True when the same-named project on the index is not what this import
/// name means, so the name itself must never be suggested to `pip install`.
pub fn never_guess(top_level: &str) -> bool {
    NO_GUESS.contains(top_level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_pairs_are_mapped() {
        for (import, dist) in [
            ("cv2", "opencv-python"),
            ("sklearn", "scikit-learn"),
            ("yaml", "PyYAML"),
            ("bs4", "beautifulsoup4"),
            ("talib", "TA-Lib"),
            ("alpaca_trade_api", "alpaca-trade-api"),
            ("binance", "python-binance"),
            ("dateutil", "python-dateutil"),
            ("jwt", "PyJWT"),
            ("Crypto", "pycryptodome"),
        ] {
            let found = lookup(import).unwrap_or_else(|| panic!("{import} unmapped"));
            assert!(
                found.default.eq_ignore_ascii_case(dist),
                "{import} -> {} (expected {dist})",
                found.default
            );
        }
        assert!(
            lookup("PIL.Image")
                .unwrap()
                .default
                .eq_ignore_ascii_case("pillow")
        );
    }

    #[test]
    fn alternatives_and_dotted_prefixes() {
        let binance = lookup("binance.client").unwrap();
        assert!(binance.alternatives.contains(&"binance-connector"));
        assert_eq!(
            lookup("google.protobuf.message").unwrap().default,
            "protobuf"
        );
        assert_eq!(
            lookup("azure.storage.blob").unwrap().default,
            "azure-storage-blob"
        );
        assert_eq!(lookup("definitely_not_a_known_module"), None);
    }

    #[test]
    fn pkg_resources_needs_a_setuptools_that_still_ships_it() {
        let known = lookup("pkg_resources.extern").unwrap();
        assert_eq!(known.default, "setuptools");
        assert_eq!(known.specifier, Some("<82"));
        assert_eq!(lookup("pandas").unwrap().specifier, None);
    }

    #[test]
    fn placeholders_are_never_guessed() {
        for name in [
            "sklearn",
            "jwt",
            "attr",
            "serial",
            "dotenv",
            "bs4",
            "docx",
            "telegram",
            "kafka",
            "websocket",
            "binance",
        ] {
            assert!(never_guess(name), "{name} must be in no_guess.tsv");
        }
        assert!(!never_guess("pandas"));
    }
}
