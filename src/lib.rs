//! scriptbox: a per-script sandbox manager for user-uploaded Python scripts.
//!
//! Each script goes through three stages, each a module with a narrow typed
//! interface so it can be read, tested and replaced alone:
//!
//! 1. **validate** ([`validate`]) — parse the script without running it, find
//!    every import and inline (PEP 723) dependency, and resolve each against a
//!    [`target::TargetPython`]: a [`validate::ValidationReport`] whose
//!    `dependencies` are the dependency set later stages build from.
//! 2. **build** — a cached environment holding exactly the allowed packages
//!    (coming with the environment builder).
//! 3. **run** — execute the script in that environment under hard limits
//!    (coming with the runner).
//!
//! Supporting modules: [`source`] (bytes → text per PEP 263), [`nesting`] and
//! [`stack`] (bounds on hostile nesting), [`imports`] (the AST walk),
//! [`inline_metadata`] (PEP 723), [`stdlib`] and [`import_map`] (embedded
//! data tables), [`installed`] (reading dist-info metadata), [`names`]
//! (PEP 503), [`report`] (text and JSON output).

pub mod cache;
pub mod engine;
pub mod env;
pub mod images;
pub mod import_map;
pub mod imports;
pub mod inline_metadata;
pub mod installed;
pub mod local;
pub mod names;
pub mod nesting;
pub mod policy;
pub mod report;
pub mod run;
pub mod source;
pub mod stack;
pub mod stdlib;
pub mod target;
pub mod units;
pub mod uv;
pub mod validate;
