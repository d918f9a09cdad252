//! `scriptbox image build`: the base images in `images/`, through the
//! engine's API (what the platform's CI runs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use scriptbox::engine::Engine;
use scriptbox::images::{self, ImageRecipe};

use scriptbox::env::build::{host_python, lock_digest, require_lock};

use super::env::{Failure, cache_dir, env_failure};
use super::progress::Spinner;
use super::{EXIT_USAGE, Format, load_policy};

/// `scriptbox image ...`
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build base images from images/NAME/Dockerfile (all of them, in
    /// order, when no NAME is given), tagged scriptbox/NAME:X.Y.
    ///
    /// An image whose Dockerfile copies `site-packages/` gets the policy's
    /// preinstalled packages there, installed on the host by uv from the
    /// policy's lock. Exit status: 0 built, 1 the policy has no lock,
    /// 2 build failure, engine not answering or bad arguments.
    Build {
        /// Image names (directories in images/).
        names: Vec<String>,
        /// Policy whose preinstalled packages go into the image.
        #[arg(long, default_value = "default")]
        policy: String,
        /// The image to build on (the `BASE` build argument).
        #[arg(long, value_name = "IMAGE")]
        base: Option<String>,
        /// A host interpreter of the policy's Python, to compile bytecode with.
        #[arg(long, default_value = "python3")]
        python: String,
        /// The build's network mode: `none` (default), or `default` for a
        /// Dockerfile that fetches from a package mirror (images/python).
        #[arg(long, default_value = "none", value_name = "MODE")]
        network: String,
        /// Tag to give the image instead of scriptbox/NAME:X.Y (one NAME only).
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
        /// Where the image directories are.
        #[arg(long, default_value = "images", value_name = "DIR")]
        images_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// Runs `command`.
pub fn run(command: ImageCommand) -> ExitCode {
    let ImageCommand::Build {
        names,
        policy,
        base,
        python,
        network,
        tag,
        images_dir,
        format,
    } = command;
    if tag.is_some() && names.len() != 1 {
        eprintln!("scriptbox: error: --tag needs exactly one image NAME");
        return ExitCode::from(EXIT_USAGE);
    }
    let policy = match load_policy(&policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let result = (|| -> Result<(), Failure> {
        let cache = cache_dir()?;
        let names = if names.is_empty() {
            images::list(&images_dir).map_err(|e| {
                (
                    EXIT_USAGE,
                    format!("{}: cannot list images: {e}", images_dir.display()),
                )
            })?
        } else {
            names
        };
        let lock = require_lock(&policy).map_err(env_failure)?;
        let packages =
            scriptbox::env::closure(lock, &policy.preinstalled).map_err(|e| (1, e.to_string()))?;
        let engine = Engine::connect().map_err(|e| (EXIT_USAGE, e.to_string()))?;
        let compile_with = host_python(&python, &policy, &cache)
            .ok()
            .and_then(|t| t.executable);
        let mut previous: Option<String> = None;
        for name in names {
            let dir = images_dir.join(&name);
            if !dir.join("Dockerfile").is_file() {
                return Err((
                    EXIT_USAGE,
                    format!(
                        "{}: no Dockerfile there (expected images/NAME/Dockerfile)",
                        dir.display()
                    ),
                ));
            }
            let recipe = ImageRecipe {
                name: name.clone(),
                dir,
                // Each image builds on the one before it, unless told otherwise.
                base: base.clone().or_else(|| previous.clone()).or_else(|| {
                    Some(format!(
                        "{}/python:3.{}",
                        images::REPOSITORY,
                        policy.python.minor
                    ))
                }),
                policy: policy.clone(),
                packages: packages.clone(),
                lock_digest: lock_digest(&policy),
                compile_with: compile_with.clone(),
                tag: tag.clone(),
                network: network.clone(),
            };
            let spinner = Spinner::start(&format!("building image {name}"));
            let built = images::build(
                &engine,
                &recipe,
                &cache,
                &scriptbox::uv::program(),
                &mut |l| spinner.step(l),
            );
            spinner.finish();
            let built = built.map_err(|e| (EXIT_USAGE, e.to_string()))?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "schema": "scriptbox.image-build/1",
                        "name": built.name,
                        "tag": built.tag,
                        "id": built.id,
                        "packages": built.packages,
                        "seconds": built.seconds,
                    })
                ),
                Format::Text => println!(
                    "built {} {} ({} packages) in {:.1} s",
                    built.tag, built.id, built.packages, built.seconds
                ),
            }
            previous = Some(built.id);
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("scriptbox: error: {message}");
            ExitCode::from(code)
        }
    }
}
