//! Docker images holding a script's packages, built through the engine's API.
//!
//! An environment image is `FROM <base image id>` plus one `COPY` of a
//! site-packages directory that uv fills on the host for the image's Python
//! version and platform (`--target`, `--python-version`,
//! `--python-platform`). The directory goes to the engine as a tar build
//! context, so the build needs no network and runs no package code. Packages
//! the base image already holds (per its manifest) are not copied again.
//!
//! Images are tagged `scriptbox-env:<key>` and labelled (see
//! [`crate::engine::labels`]) with the full key, the lock's digest, the base
//! image id, and a manifest of what the image's Python can import, which
//! `scriptbox validate --image` reads without starting a container. The tag
//! appears only when the build succeeded, so a failed or killed build leaves
//! no partial environment behind.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::install::{InstallTarget, install};
use super::key::KeyInputs;
use super::scratch::{KeyLock, Scratch, cache_err};
use super::{BuildError, EnvHandle, EnvLocation};
use crate::engine::{Engine, EngineError, ImageInfo, labels};
use crate::policy::lock::LockedPackage;
use crate::validate::installed::InstalledIndex;

/// The repository environment images are tagged in.
pub const ENV_REPOSITORY: &str = "scriptbox-env";

/// Schema of [`ImageManifest`].
pub const MANIFEST_SCHEMA: &str = "scriptbox.image-manifest/1";

/// Where a base image without an `io.scriptbox.site-packages` label keeps
/// packages (Debian's python3).
const DEFAULT_SITE: &str = "/usr/local/lib/python3.11/dist-packages";

/// What an image's Python can import, recorded at build time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageManifest {
    /// [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// The image's full Python version.
    pub python: String,
    /// Installed distributions and the modules they provide.
    pub installed: InstalledIndex,
}

impl ImageManifest {
    /// The manifest recorded on `image`, if it has one of this schema.
    pub fn of(image: &ImageInfo) -> Option<ImageManifest> {
        let text = image.label(labels::MANIFEST)?;
        let manifest: ImageManifest = serde_json::from_str(text).ok()?;
        (manifest.schema == MANIFEST_SCHEMA).then_some(manifest)
    }
}

/// What an environment image should hold.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The base image (tag or id).
    pub base_image: String,
    /// The policy's platform tag.
    pub platform: String,
    /// The pinned closure the script needs.
    pub packages: Vec<LockedPackage>,
    /// sha256 of the lock the pins come from (a label).
    pub lock_digest: String,
    /// The simple index to fetch them from (the policy's).
    pub index: String,
    /// Debian packages the policy says a package needs, by package name.
    pub system: std::collections::BTreeMap<String, Vec<String>>,
}

/// Options that change what an image build produces (part of the key).
const IMAGE_OPTIONS: &[&str] = &["no-deps", "only-binary", "require-hashes", "target"];

/// The base image, its Python version and site-packages directory.
pub struct BaseImage {
    /// As the engine reports it.
    pub info: ImageInfo,
    /// The image's full Python version.
    pub python: String,
    /// Where its Python finds packages.
    pub site_packages: String,
    /// What it already holds.
    pub manifest: Option<ImageManifest>,
}

impl BaseImage {
    /// Looks up `name` in the engine.
    pub fn find(engine: &Engine, name: &str) -> Result<BaseImage, BuildError> {
        let info = engine
            .image(name)?
            .ok_or_else(|| EngineError::NoSuchImage(name.into()))?;
        let python = info.label(labels::PYTHON).map(str::to_string).ok_or_else(|| {
            BuildError::Step {
                step: format!("using base image {name}"),
                detail: format!(
                    "it has no {} label saying which Python it holds; build it from images/python or with scripts/bootstrap-base-image.sh",
                    labels::PYTHON
                ),
            }
        })?;
        let site_packages = info
            .label(labels::SITE_PACKAGES)
            .unwrap_or(DEFAULT_SITE)
            .to_string();
        // Both go into a Dockerfile: nothing but a plain absolute path and a
        // plain user spec.
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c))
        };
        if !site_packages.starts_with('/')
            || !plain(&site_packages)
            || !(info.user.is_empty() || plain(&info.user))
        {
            return Err(BuildError::Step {
                step: format!("using base image {name}"),
                detail: format!(
                    "its {} label ({site_packages:?}) or user ({:?}) is not a plain path or user",
                    labels::SITE_PACKAGES,
                    info.user
                ),
            });
        }
        let manifest = ImageManifest::of(&info);
        Ok(BaseImage {
            info,
            python,
            site_packages,
            manifest,
        })
    }

    /// Installs `layer` into `site` (a build context's `site-packages/`) for
    /// this image's Python on `platform`, and returns the manifest of the
    /// image that copies it over this one.
    pub fn fill_site_packages(
        &self,
        uv: &str,
        site: &Path,
        layer: &[LockedPackage],
        index: &str,
        platform: &str,
        compile_with: Option<&Path>,
    ) -> Result<ImageManifest, BuildError> {
        fs::create_dir_all(site).map_err(|e| cache_err(site, e))?;
        let scratch = site.parent().unwrap_or(site);
        let minor: String = self.python.split('.').take(2).collect::<Vec<_>>().join(".");
        install(
            uv,
            scratch,
            layer,
            index,
            &InstallTarget::Directory {
                dir: site,
                version: &minor,
                platform,
                compile_with,
            },
        )?;
        // uv's console-script shims name the host's interpreter, and its
        // lock file is its own: neither belongs in the image.
        let _ = fs::remove_dir_all(site.join("bin"));
        let _ = fs::remove_file(site.join(".lock"));
        let mut installed = InstalledIndex::scan(&[site.to_path_buf()]);
        if let Some(lower) = self.manifest.clone() {
            installed.merge(lower.installed);
        }
        Ok(ImageManifest {
            schema: MANIFEST_SCHEMA.into(),
            python: self.python.clone(),
            installed,
        })
    }

    /// `packages` minus what this image already holds at the same version.
    /// A different version of a pinned package in the base is an error: the
    /// environment would not hold exactly the lock's pins.
    pub fn missing(&self, packages: &[LockedPackage]) -> Result<Vec<LockedPackage>, BuildError> {
        let Some(manifest) = &self.manifest else {
            return Ok(packages.to_vec());
        };
        let mut out = Vec::new();
        for p in packages {
            match manifest.installed.distribution(p.name.as_ref()) {
                None => out.push(p.clone()),
                Some(d) if d.version.as_deref() == Some(p.version.as_str()) => {}
                Some(d) => {
                    return Err(BuildError::Step {
                        step: "layering on the base image".into(),
                        detail: format!(
                            "base image {} holds {} {} but the lock pins {}; rebuild the base (`scriptbox image build`) from the same policy",
                            self.info.id,
                            d.name,
                            d.version.as_deref().unwrap_or("?"),
                            p.version
                        ),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The image tag of an environment key.
pub fn env_tag(key: &str) -> String {
    format!("{ENV_REPOSITORY}:{key}")
}

/// Returns the image for `spec`, building it once if needed.
pub fn ensure_image(
    engine: &Engine,
    spec: &ImageSpec,
    cache: &Path,
    uv: &str,
    compile_with: &dyn Fn() -> Option<PathBuf>,
    on_line: &mut dyn FnMut(&str),
) -> Result<EnvHandle, BuildError> {
    let base = BaseImage::find(engine, &spec.base_image)?;
    let layer = base.missing(&spec.packages)?;
    // Every package's system needs, also of packages the base holds: apt
    // downloads only what the image lacks.
    let mut system: Vec<String> = spec
        .packages
        .iter()
        .filter_map(|p| spec.system.get(p.name.as_ref()))
        .flatten()
        .cloned()
        .collect();
    system.sort();
    system.dedup();
    let uv_version = super::venv::uv_version(uv, cache)?;
    let compile_with = if layer.is_empty() {
        None
    } else {
        compile_with()
    };
    let mut options: Vec<String> = IMAGE_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(
        if compile_with.is_some() {
            "bytecode"
        } else {
            "no-bytecode"
        }
        .into(),
    );
    options.extend(system.iter().map(|s| format!("system:{s}")));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let mut inputs = KeyInputs::new(
        "image",
        &base.python,
        &spec.platform,
        &layer,
        &options,
        &uv_version,
    );
    inputs.base = Some(base.info.id.clone());
    let key = inputs.key();
    let span = tracing::info_span!("build", env = %key.short(), kind = "image");
    let _guard = span.enter();
    let envs = cache.join("envs");
    let tag = env_tag(key.as_str());
    let handle = |id: String, cache_hit: bool, build_seconds: f64| EnvHandle {
        key: key.clone(),
        location: EnvLocation::Image {
            id,
            tag: tag.clone(),
        },
        base: None,
        layer_packages: super::pins(&layer),
        cache_hit,
        build_seconds,
        built: if cache_hit {
            Vec::new()
        } else {
            vec![super::BuiltLayer {
                key: key.clone(),
                packages: super::pins(&layer),
            }]
        },
    };
    let found = |engine: &Engine| -> Result<Option<String>, BuildError> {
        Ok(engine
            .image(&tag)?
            .filter(|i| i.label(labels::KEY) == Some(key.as_str()))
            .map(|i| i.id))
    };
    if layer.is_empty() {
        // The base already holds everything: it is the environment.
        let tag = base
            .info
            .tags
            .first()
            .cloned()
            .unwrap_or(base.info.id.clone());
        return Ok(EnvHandle {
            location: EnvLocation::Image {
                id: base.info.id.clone(),
                tag,
            },
            ..handle(base.info.id.clone(), true, 0.0)
        });
    }
    if let Some(id) = found(engine)? {
        super::store::record_use(&envs, key.as_str());
        return Ok(handle(id, true, 0.0));
    }
    let _lock = KeyLock::acquire(&envs, key.as_str())?;
    if let Some(id) = found(engine)? {
        super::store::record_use(&envs, key.as_str());
        return Ok(handle(id, true, 0.0));
    }
    let started = Instant::now();
    // Everything from here builds this layer: a failure names its packages.
    let mut build = || -> Result<String, BuildError> {
        let scratch = Scratch::claim(&envs)?;
        let context = &scratch.path;
        let site = context.join("site-packages");
        let manifest = base.fill_site_packages(
            uv,
            &site,
            &layer,
            &spec.index,
            &spec.platform,
            compile_with.as_deref(),
        )?;
        let mut dockerfile = format!("FROM {}\n", base.info.id);
        if !system.is_empty() {
            let debs = super::system_packages::fetch_debs(
                engine,
                &base.info.id,
                &system,
                context,
                &context.join("debs"),
            )?;
            if !debs.is_empty() {
                let user = if base.info.user.is_empty() {
                    "0:0"
                } else {
                    &base.info.user
                };
                dockerfile.push_str(&super::system_packages::dockerfile_lines(user));
            }
        }
        dockerfile.push_str(&format!(
            "COPY --chown=0:0 [\"site-packages/\", {}]\n",
            serde_json::to_string(&format!("{}/", base.site_packages))
                .expect("a string serialises")
        ));
        let path = context.join("Dockerfile");
        fs::write(&path, dockerfile).map_err(|e| cache_err(&path, e))?;
        let layer_size = super::store::disk_size(&site);
        let image_labels = HashMap::from([
            (labels::KIND.to_string(), "env".to_string()),
            (labels::KEY.to_string(), key.to_string()),
            (labels::LOCK_DIGEST.to_string(), spec.lock_digest.clone()),
            (labels::BASE.to_string(), base.info.id.clone()),
            (
                labels::MANIFEST.to_string(),
                serde_json::to_string(&manifest).expect("manifest serialises"),
            ),
            (labels::CREATED.to_string(), super::store::now().to_string()),
            (labels::LAYER_SIZE.to_string(), layer_size.to_string()),
        ]);
        let id = engine.build(
            context,
            &tag,
            &image_labels,
            &HashMap::new(),
            "none",
            on_line,
        )?;
        drop(scratch);
        Ok(id)
    };
    let id = build().map_err(|e| e.in_layer(&layer))?;
    super::store::record_use(&envs, key.as_str());
    Ok(handle(id, false, started.elapsed().as_secs_f64()))
}
