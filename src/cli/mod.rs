//! Subcommands of the `scriptbox` binary that drive the build stage: each
//! turns arguments into library calls, and results into output and an exit
//! code.

pub mod env;
pub mod image;
pub mod progress;
pub mod run;
