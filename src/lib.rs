//! scriptbox: a per-script sandbox manager for user-uploaded Python scripts.
//!
//! Each script goes through three stages, each a module with a narrow typed
//! interface so it can be read, tested and replaced alone:
//!
//! 1. **validate** ([`validate`]) — parse the script without running it, find
//!    every import and inline (PEP 723) dependency, resolve each against a
//!    [`validate::target::TargetPython`], and judge it by the whitelist
//!    [`policy`]: a [`validate::ValidationReport`] whose `dependencies` are
//!    the dependency set the build starts from.
//! 2. **build** ([`env`]) — [`env::build::plan`] pins that set from the
//!    policy's lock and [`env::build::ensure`] builds or finds the cached,
//!    content-addressed environment: venv layers on the host, or a Docker
//!    image through the engine ([`engine`], base images in [`images`]). The
//!    result is an [`env::EnvHandle`].
//! 3. **run** ([`run`]) — a backend ([`run::local`], bubblewrap; or
//!    [`run::docker`], a container per run) executes the script in that
//!    environment under the profile's [`run::limits::Limits`], with a
//!    [`run::cancel::CancelToken`] and an [`run::output::OutputSink`] for
//!    live output: a [`run::outcome::RunOutcome`] with exactly one status.
//!
//! [`pipeline::run`] chains the three for one script; the `scriptbox`
//! binary's commands and the service are thin edges over it.
//!
//! Supporting modules: [`cache`] (the cache directory and atomic JSON
//! entries), [`uv`] (running the uv binary), [`units`] (sizes and durations
//! as administrators write them). The validation stage's own parts live
//! under [`validate`]: `source` (PEP 263), `nesting` and `stack` (bounds on
//! hostile nesting), `imports` (the AST walk), `inline_metadata` (PEP 723),
//! `stdlib` and `import_map` (embedded data tables), `installed`
//! (dist-info metadata), `local`, `names` (PEP 503), `target` and `report`.
//!
//! Records: [`audit`] appends every install decision and run status to the
//! audit log, in the data directory of [`dirs`], and aggregates it
//! (`scriptbox stats`).
//!
//! [`doctor`] reports what isolation the machine offers each backend
//! (`scriptbox doctor`).

pub mod audit;
pub mod cache;
pub mod dirs;
pub mod doctor;
pub mod egress;
pub mod engine;
pub mod env;
pub mod images;
pub mod pipeline;
pub mod policy;
pub mod run;
pub mod service;
pub mod units;
pub mod uv;
pub mod validate;
