//! Base images from `images/NAME/Dockerfile`, built through the engine's API.
//!
//! A base image's build context is its directory in `images/` plus, when
//! its Dockerfile copies `site-packages/`, that directory filled on the host
//! by uv with the policy's preinstalled closure for the image's Python (so
//! the build needs no network and runs no package code). The `BASE` build
//! argument names the image to build on; the result is tagged
//! `scriptbox/NAME:X.Y` and labelled with its name, the policy and lock
//! digests, and a manifest of what its Python can import.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::{Engine, labels};
use crate::env::BuildError;
use crate::env::image::BaseImage;
use crate::env::scratch::{Scratch, cache_err};
use crate::policy::Policy;
use crate::policy::lock::LockedPackage;

/// The repository base images are tagged in: `scriptbox/NAME:X.Y`.
pub const REPOSITORY: &str = "scriptbox";

/// What to build.
pub struct ImageRecipe {
    /// The directory name in `images/`.
    pub name: String,
    /// `images/NAME`.
    pub dir: PathBuf,
    /// The `BASE` build argument, if the Dockerfile takes one.
    pub base: Option<String>,
    /// The policy whose preinstalled closure fills `site-packages/`.
    pub policy: Policy,
    /// That closure.
    pub packages: Vec<LockedPackage>,
    /// sha256 of the policy's lock.
    pub lock_digest: String,
    /// A host interpreter of the image's X.Y, to compile bytecode with.
    pub compile_with: Option<PathBuf>,
    /// The tag, instead of `scriptbox/NAME:X.Y`.
    pub tag: Option<String>,
    /// The build's network mode: `none`, unless the Dockerfile itself
    /// fetches something (`images/python` runs apt-get).
    pub network: String,
}

/// A built base image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltImage {
    /// Its name in `images/`.
    pub name: String,
    /// `scriptbox/NAME:X.Y`.
    pub tag: String,
    /// The image id.
    pub id: String,
    /// Packages copied in from the policy's lock.
    pub packages: usize,
    /// Seconds the build took.
    pub seconds: f64,
}

/// The image directories under `images_dir` in build order: those whose
/// `BASE` is another of them come after it.
pub fn list(images_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(images_dir)?
        .flatten()
        .filter(|e| e.path().join("Dockerfile").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    // `python` is the root every other image builds on.
    names.sort_by_key(|n| n != "python");
    Ok(names)
}

/// Builds `recipe` and returns the image.
pub fn build(
    engine: &Engine,
    recipe: &ImageRecipe,
    cache: &Path,
    uv: &str,
    on_line: &mut dyn FnMut(&str),
) -> Result<BuiltImage, BuildError> {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("image-build", image = %recipe.name);
    let _guard = span.enter();
    let dockerfile = recipe.dir.join("Dockerfile");
    let text = fs::read_to_string(&dockerfile).map_err(|e| cache_err(&dockerfile, e))?;
    let wants_packages = text.contains("site-packages/");
    let base = match &recipe.base {
        Some(b) if text.contains("ARG BASE") => Some(BaseImage::find(engine, b)?),
        _ => None,
    };
    let envs = cache.join("envs");
    let scratch = Scratch::claim(&envs)?;
    copy_dir(&recipe.dir, &scratch.path)?;
    let mut manifest = None;
    let mut copied = 0;
    let python = base.as_ref().map(|b| b.python.clone());
    if wants_packages {
        let Some(base) = &base else {
            return Err(BuildError::Step {
                step: format!("building image {}", recipe.name),
                detail: "its Dockerfile copies site-packages/ but takes no `ARG BASE` to learn the Python version from".into(),
            });
        };
        let layer = base.missing(&recipe.packages)?;
        copied = layer.len();
        manifest = Some(base.fill_site_packages(
            uv,
            &scratch.path.join("site-packages"),
            &layer,
            &recipe.policy.install.index,
            &recipe.policy.python.platform,
            recipe.compile_with.as_deref(),
        )?);
    }
    let minor = python
        .as_deref()
        .map(|v| v.split('.').take(2).collect::<Vec<_>>().join("."))
        .unwrap_or_else(|| format!("3.{}", recipe.policy.python.minor));
    let tag = recipe
        .tag
        .clone()
        .unwrap_or_else(|| format!("{REPOSITORY}/{}:{minor}", recipe.name));
    let mut image_labels = HashMap::from([
        (labels::KIND.to_string(), "base".to_string()),
        (labels::IMAGE.to_string(), recipe.name.clone()),
        (
            labels::CREATED.to_string(),
            crate::env::store::now().to_string(),
        ),
    ]);
    if let Some(manifest) = &manifest {
        image_labels.insert(labels::POLICY_DIGEST.into(), recipe.policy.digest());
        image_labels.insert(labels::LOCK_DIGEST.into(), recipe.lock_digest.clone());
        image_labels.insert(
            labels::MANIFEST.into(),
            serde_json::to_string(manifest).expect("manifest serialises"),
        );
    }
    let mut args = HashMap::new();
    if let Some(base) = &base {
        args.insert("BASE".to_string(), base.info.id.clone());
    }
    let id = engine.build(
        &scratch.path,
        &tag,
        &image_labels,
        &args,
        &recipe.network,
        on_line,
    )?;
    Ok(BuiltImage {
        name: recipe.name.clone(),
        tag,
        id,
        packages: copied,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The base image a policy's environments are layered on: the newest image
/// built from `images/trading` with this policy's packages, else the plain
/// Python image `scriptbox/python:X.Y`.
pub fn default_base(engine: &Engine, policy: &Policy) -> Result<String, BuildError> {
    let mut candidates = engine.images_labelled(&[
        format!("{}=base", labels::KIND),
        format!("{}={}", labels::POLICY_DIGEST, policy.digest()),
    ])?;
    candidates.sort_by_key(|i| {
        i.label(labels::CREATED)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = candidates.pop() {
        return Ok(newest.id);
    }
    Ok(format!("{REPOSITORY}/python:3.{}", policy.python.minor))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), BuildError> {
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.map_err(|e| BuildError::Cache {
            path: from.to_path_buf(),
            reason: e.to_string(),
        })?;
        let rel = entry.path().strip_prefix(from).expect("under the root");
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&dest).map_err(|e| cache_err(&dest, e))?;
        } else if entry.file_type().is_file() {
            fs::copy(entry.path(), &dest).map_err(|e| cache_err(&dest, e))?;
        }
    }
    Ok(())
}
