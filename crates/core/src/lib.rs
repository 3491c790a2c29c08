//! dagrun-core: the pipeline spec and its validation into a plan, the concurrent executor, graph
//! rendering, and the `Engine` / `Storage` traits that engines and storages implement.
//!
//! This crate never depends on polars or the AWS SDKs, so its tests build in seconds.
//!
//! | module | owns |
//! | --- | --- |
//! | [`yaml`] | the located YAML tree (serde-saphyr) |
//! | [`decode`] | typed decoding that collects every problem |
//! | [`spec`] | raw spec types mirroring the file |
//! | [`vars`] | `${var}`, `${env:NAME}`, `--set` |
//! | [`lease`] | the lease on a lake: one writing run at a time |
//! | [`path`] | local and S3 paths: normalizing, links resolved, which folder holds which |
//! | [`compile`] | spec -> plan: every rule of the file format, every problem located |
//! | [`plan`] | the validated, immutable plan and the questions later layers ask of it |
//! | [`decisions`] | what a run decides beside the plan: engines after `auto`, budget, days, what is fresh |
//! | [`sql`] | static SQL reading (syntax errors, referenced tables) |
//! | [`retry`] | the retry policy |
//! | [`resume`] | fingerprints and what is up to date |
//! | [`run`] | a run's order: lease, resume, leftovers, execute, record, vacuum, release |
//! | [`content`] | content fingerprints of local inputs, cached by file identity |
//! | [`redact`] | secrets hidden by value in everything printed or written |
//! | [`slice`] | slices of the input by day: incremental runs and backfills |
//! | [`emr`] | the `engines.emr` section: EMR cluster settings and their checks |
//! | [`dry_run`] | the dry run: the executor walked with engines that only describe |
//! | [`executor`] | running a plan: concurrency, retries, timeouts, cancellation |
//! | [`engine`] | where tasks run (`Engine`) |
//! | [`storage`] | where bytes live (`Storage`), local disk, atomic publish |
//! | [`units`] | sizes and durations: parse and format |
//! | [`graph`] | ascii / DOT / Mermaid |
//! | [`diagnostic`] | located errors with source line and caret |

pub mod auto;
pub mod compile;
pub mod content;
pub mod cost;
pub mod decisions;
pub(crate) mod decode;
pub mod diagnostic;
pub mod dry_run;
pub mod emr;
pub mod engine;
pub mod executor;
pub mod graph;
pub mod lease;
pub mod path;
pub mod plan;
pub mod record;
pub mod redact;
pub mod resume;
pub mod retry;
pub mod run;
pub mod slice;
pub mod spec;
pub mod sql;
pub mod storage;
pub mod units;
pub mod vars;
pub(crate) mod yaml;

pub use compile::{PlanError, PlanOptions};
pub use diagnostic::{Diagnostic, Diagnostics, Pos, SourceFile};
pub use engine::{Engine, Engines, TaskContext, TaskError, TaskOutput};
pub use executor::{ExecutorOptions, RunReport, TaskRecord, TaskState, execute};
pub use plan::Plan;
pub use storage::{Storage, Storages};
pub use vars::VarInputs;
