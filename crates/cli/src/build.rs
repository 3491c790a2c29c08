//! What this build of dagrun carries: its engines and storages, chosen by cargo features
//! (`polars`: the local engine and the report's answers; `aws`: S3 and EMR; `delta`: Delta Lake
//! tables). Everything else asks
//! here, so that a lean build (`cargo build --no-default-features`) validates, graphs and dry-runs
//! any pipeline, and says which feature a run would need instead of failing obscurely.

use std::sync::Arc;

use dagrun_core::decisions::RunDecisions;
use dagrun_core::engine::{Engines, Exchange};
use dagrun_core::plan::{Plan, S3Settings};
use dagrun_core::storage::{Storage, Storages};

use crate::exit::Exit;

/// Every engine the file format knows, whether or not this build carries it.
pub(crate) const KNOWN_ENGINES: &[&str] = &["local", "emr"];

/// The cargo feature that carries an engine.
pub(crate) fn feature_of(engine: &str) -> &'static str {
    match engine {
        "emr" => "aws",
        _ => "polars",
    }
}

/// Whether this build carries `engine`.
pub(crate) fn has_engine(engine: &str) -> bool {
    (engine == "local" && cfg!(feature = "polars")) || (engine == "emr" && cfg!(feature = "aws"))
}

/// The enabled features, for `--version` and messages.
pub(crate) fn features() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "polars") {
        out.push("polars");
    }
    if cfg!(feature = "aws") {
        out.push("aws");
    }
    if cfg!(feature = "delta") {
        out.push("delta");
    }
    out
}

/// How `validate` derives transforms' columns: with the local engine's SQL planner, when this
/// build carries it (a lean build checks tables, not columns).
pub(crate) fn schema_check() -> Option<dagrun_core::compile::SchemaCheck> {
    #[cfg(feature = "polars")]
    return Some(dagrun_polars::schema_check());
    #[cfg(not(feature = "polars"))]
    None
}

/// Why something needs a feature this build lacks.
pub(crate) fn missing(what: &str, feature: &str) -> String {
    format!(
        "{what} is not in this build of dagrun (features: {}); build it with `cargo build --features {feature}` \
         (the default build has every feature)",
        if features().is_empty() { "none".to_string() } else { features().join(", ") }
    )
}

/// Stops a run before anything happens if one of its tasks needs an engine this build lacks.
pub(crate) fn check_engines(plan: &Plan, decisions: &RunDecisions) -> Result<(), Exit> {
    for task in plan.tasks() {
        let engine = decisions.engine(task.index());
        if !has_engine(engine) {
            let what = format!("task `{}` runs on `{engine}`, which", task.id());
            return Err(Exit::config(format!("error: {}", missing(&what, feature_of(engine)))));
        }
    }
    Ok(())
}

/// The S3 storage, when this build has it.
pub(crate) async fn s3(settings: &S3Settings) -> Option<Arc<dyn Storage>> {
    #[cfg(feature = "aws")]
    {
        Some(Arc::new(dagrun_aws::S3Storage::connect(settings).await))
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = settings;
        None
    }
}

/// Where a plan's bytes live: the local disk, plus S3 when a path is an `s3://` URI and this
/// build has it.
pub(crate) async fn storages(plan: &Plan) -> Storages {
    let mut storages = Storages::default();
    if plan.uses_s3() {
        storages.s3 = s3(plan.s3()).await;
    }
    with_delta(storages)
}

/// `storages` with Delta Lake tables on them, when this build has them.
pub(crate) fn with_delta(mut storages: Storages) -> Storages {
    #[cfg(feature = "delta")]
    {
        storages.delta = Some(Arc::new(dagrun_delta::DeltaLake::new(&storages)));
    }
    #[cfg(not(feature = "delta"))]
    {
        storages.delta = None;
    }
    storages
}

/// The tables a run keeps for the report's answers (see `dagrun_polars::KeptTables`); nothing in a
/// build without the local engine.
#[derive(Default, Clone)]
pub(crate) struct Kept {
    #[cfg(feature = "polars")]
    pub tables: Option<Arc<dagrun_polars::KeptTables>>,
}

impl Kept {
    /// Lets the kept tables go (the answers are computed).
    pub(crate) fn release(&self) {
        #[cfg(feature = "polars")]
        if let Some(tables) = &self.tables {
            tables.clear();
        }
    }

    /// Keeps the published tables the plan's report queries read.
    pub(crate) fn for_report(plan: &Plan) -> Self {
        #[cfg(feature = "polars")]
        {
            let mut wanted = std::collections::BTreeSet::new();
            for q in plan.report() {
                wanted.extend(dagrun_core::sql::referenced_tables(&q.sql).unwrap_or_default());
            }
            let tables = (!wanted.is_empty()).then(|| Arc::new(dagrun_polars::KeptTables::new(wanted)));
            Self { tables }
        }
        #[cfg(not(feature = "polars"))]
        {
            let _ = plan;
            Self {}
        }
    }
}

/// How this run's EMR engine behaves beyond the pipeline (`--keep-staging`, `--refresh-prices`).
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) struct EmrOptions {
    pub keep_staging: bool,
    pub refresh_prices: bool,
}

/// How this run's local engine behaves beyond the pipeline (the run's flags).
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "polars"), allow(dead_code))]
pub(crate) struct LocalFlags {
    /// `--spill-above`: `Some(None)` never spills.
    pub spill_above: Option<Option<u64>>,
    pub allow_breaking_schema: bool,
    /// Not `--no-cache`.
    pub extract_cache: bool,
}

/// The engines of a run that this build carries, sharing its storages and one table exchange
/// (a table made on EMR is read locally from where it was published, and the other way round).
pub(crate) async fn engines(
    storages: &Storages,
    plan: &Plan,
    decisions: &RunDecisions,
    kept: &Kept,
    local_flags: LocalFlags,
    emr_options: EmrOptions,
) -> Result<Engines, Exit> {
    let LocalFlags { spill_above, allow_breaking_schema, extract_cache } = local_flags;
    let exchange = Arc::new(Exchange::default());
    let engines = Engines::new();
    #[cfg(feature = "polars")]
    let (engines, local) = {
        let mut options = dagrun_polars::LocalOptions::default();
        if let Some(spill) = spill_above {
            options.spill_above = spill;
        }
        options.allow_breaking_schema = allow_breaking_schema;
        options.extract_cache = extract_cache;
        options.kept = kept.tables.clone();
        let local = dagrun_polars::LocalEngine::new(storages.clone(), options)
            .map_err(|e| Exit::failed(e.to_string()))?
            .with_exchange(exchange.clone());
        let local = Arc::new(local);
        (engines.with(local.clone()), local)
    };
    #[cfg(not(feature = "polars"))]
    let _ = (spill_above, storages, allow_breaking_schema, extract_cache, kept);
    #[cfg(not(feature = "aws"))]
    let _ = emr_options;
    #[cfg(feature = "aws")]
    let engines = match plan.emr() {
        Some(settings) => {
            let s3 = storages
                .s3
                .clone()
                .ok_or_else(|| Exit::config("error: the emr engine needs S3 for engines.emr.staging"))?;
            #[cfg(feature = "polars")]
            let exporter: Arc<dyn dagrun_core::engine::TableExport> = local;
            #[cfg(not(feature = "polars"))]
            let exporter: Arc<dyn dagrun_core::engine::TableExport> = return Err(Exit::config(format!(
                "error: {}",
                missing("the local engine, which EMR runs need", "polars")
            )));
            let refresh = emr_options.refresh_prices;
            let budget = decisions.budget();
            let emr =
                dagrun_aws::emr::EmrEngine::connect(settings.clone(), s3, exporter, exchange, plan, budget, refresh)
                    .await
                    .keep_staging(emr_options.keep_staging);
            engines.with(Arc::new(emr))
        }
        None => engines,
    };
    #[cfg(not(feature = "aws"))]
    let _ = (plan, decisions, exchange);
    Ok(engines)
}

/// Removes the spill folders of dagrun processes on this host that are gone.
pub(crate) fn remove_dead_spills() {
    #[cfg(feature = "polars")]
    dagrun_polars::remove_dead_spills();
}
