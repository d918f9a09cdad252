//! The content address of an environment.
//!
//! Two scripts needing the same pinned closure on the same interpreter share
//! one environment, so the key covers exactly what decides the environment's
//! contents and nothing else — never the script or its path.

use serde::Serialize;

use crate::policy::lock::LockedPackage;

/// Version of the key's input format; bump when what goes into an
/// environment changes in a way the other inputs do not show.
pub const KEY_SCHEMA: u32 = 2;

/// The sha256 naming one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EnvKey(String);

impl EnvKey {
    /// The full hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex digits, for logs and listings.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl std::fmt::Display for EnvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything that decides an environment's contents.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInputs {
    /// Backend kind (`venv` or `image`).
    pub kind: String,
    /// What the environment is layered on: the key of the venv layer
    /// underneath, or the id of the image it is built `FROM`.
    pub base: Option<String>,
    /// The interpreter's full version, e.g. `3.11.7`.
    pub python_version: String,
    /// The interpreter's platform, e.g. `x86_64-manylinux_2_28`.
    pub platform: String,
    /// The pinned closure: (name, version, sorted hashes), sorted by name.
    pub packages: Vec<(String, String, Vec<String>)>,
    /// Install options that change the result (e.g. bytecode compilation).
    pub options: Vec<String>,
    /// The installer's version string.
    pub uv_version: String,
}

impl KeyInputs {
    /// Inputs for `packages`, sorted so that order never matters.
    pub fn new(
        kind: &str,
        python_version: &str,
        platform: &str,
        packages: &[LockedPackage],
        options: &[&str],
        uv_version: &str,
    ) -> KeyInputs {
        let mut pinned: Vec<(String, String, Vec<String>)> = packages
            .iter()
            .map(|p| {
                let mut hashes = p.hashes.clone();
                hashes.sort();
                (p.name.to_string(), p.version.clone(), hashes)
            })
            .collect();
        pinned.sort();
        pinned.dedup();
        let mut options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        options.sort();
        KeyInputs {
            kind: kind.into(),
            base: None,
            python_version: python_version.into(),
            platform: platform.into(),
            packages: pinned,
            options,
            uv_version: uv_version.into(),
        }
    }

    /// The key: sha256 over the schema and the canonical JSON of the inputs.
    pub fn key(&self) -> EnvKey {
        let json = serde_json::to_string(self).expect("key inputs serialise");
        EnvKey(crate::cache::sha256_hex(
            format!("scriptbox-env/{KEY_SCHEMA}\0{json}").as_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, hash: &str) -> LockedPackage {
        LockedPackage {
            name: name.parse().unwrap(),
            version: version.into(),
            hashes: vec![hash.into()],
            via: vec![],
        }
    }

    #[test]
    fn order_does_not_matter_and_every_input_does() {
        let a = [
            pkg("numpy", "2.0", "sha256:a"),
            pkg("six", "1.17.0", "sha256:b"),
        ];
        let b = [a[1].clone(), a[0].clone()];
        let key = |p: &[LockedPackage], v: &str, uv: &str| {
            KeyInputs::new("venv", v, "x86_64-manylinux_2_28", p, &["compile"], uv).key()
        };
        let base = key(&a, "3.11.7", "uv 1");
        assert_eq!(base, key(&b, "3.11.7", "uv 1"));
        assert_ne!(base, key(&a, "3.11.8", "uv 1"));
        assert_ne!(base, key(&a, "3.11.7", "uv 2"));
        assert_ne!(
            base,
            key(
                &[pkg("numpy", "2.0", "sha256:c"), a[1].clone()],
                "3.11.7",
                "uv 1"
            )
        );
        assert_eq!(base.as_str().len(), 64);
    }
}
