//! A run as a library call. [`run`] takes a compiled [`Plan`], the [`RunDecisions`] made so far
//! (engines after `auto`, the budget, the days asked for), a [`RunRequest`] (the run's flags),
//! the engines and storages, and [`RunHooks`] (where progress, the summary and the report's
//! answers go), and owns the order of a run:
//!
//! 1. take the lake's lease: nothing is written before, and a lost lease stops the run;
//! 2. decide what is up to date and which days run ([`crate::resume`]), refusing an input that
//!    does not cover the lake;
//! 3. remove what dead runs left, and their unfinished uploads;
//! 4. execute;
//! 5. record the run: each table's version, the vacuum (only after a run that succeeded and was
//!    not told to stop), the report's answers;
//! 6. write the run record, and `LATEST` while the run holds the lake;
//! 7. remove leftover staging while the lake is still the run's, and give the lease back, on
//!    every path from the lease on.
//!
//! The CLI parses flags, builds the engines this build carries, and renders; a test drives the
//! same order on a paused clock (`run/tests.rs`).

mod lake;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::decisions::RunDecisions;
use crate::engine::Engines;
use crate::executor::{self, ExecutorOptions, Observer, RunReport};
use crate::lease::{Holder, Lease, LeaseError, LeaseOptions, LeasePlace};
use crate::path::join_path;
use crate::plan::{Action, Plan};
use crate::record::{self, Answers, RunRecord};
use crate::resume::{self, Force};
use crate::slice::RunSlice;
use crate::storage::{Fence, StorageError, Storages};

/// What a run is asked to do beyond its plan and decisions: the run's flags.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Jobs, fail-fast, the run's id and this process's token.
    pub options: ExecutorOptions,
    /// What to rerun regardless of fingerprints.
    pub force: Force,
    /// How to take the lake's lease.
    pub lease: LeaseOptions,
}

/// Where a run meets what surrounds it: the terminal, the report's answers (an engine's work).
#[async_trait]
pub trait RunHooks: Send + Sync {
    /// The days the run reads were decided: `slice`, and what is up to date.
    fn days_decided(&self, _plan: &Plan, _slice: &RunSlice, _fresh: &BTreeMap<usize, String>) {}

    /// Where the executor's progress goes.
    fn observer(&self, plan: &Plan) -> Arc<dyn Observer>;

    /// The executor finished, with this report.
    fn executed(&self, _report: &RunReport) {}

    /// The answers to the report's queries over the tables as the run left them; `previous` is
    /// the run before (whose answers may be carried over). `None` where none can be computed.
    async fn answers(&self, _record: &RunRecord, _previous: Option<&RunRecord>) -> Option<Answers> {
        None
    }
}

/// Why a run did not start: nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A signal came before the run took the lake.
    #[error("interrupted before the run started: nothing was written")]
    Interrupted,
    /// A signal came while the run waited for the lake's lease.
    #[error("interrupted while waiting for the lake's lease")]
    InterruptedWaiting,
    /// Another run holds the lake.
    #[error(transparent)]
    Held(LeaseError),
    /// The lease could not be taken for another reason (a storage that failed, a foreign file).
    #[error("taking the lease on the lake: {0}")]
    Lease(LeaseError),
    /// The input does not cover what a load would replace (each reason is one line).
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    /// What dead runs left could not be removed.
    #[error("{0}")]
    Leftovers(String),
}

/// How a run that started ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Its record, as written.
    pub record: RunRecord,
    /// Where the record was written, or why it could not be.
    pub written: Result<String, StorageError>,
    /// Who holds the lake now, when the run lost its lease (and was stopped).
    pub lost_to: Option<String>,
    /// The run was told to stop (a signal, or the lost lease) at some point.
    pub cancelled: bool,
}

impl RunOutcome {
    /// Every task succeeded or was up to date, and nothing told the run to stop.
    pub fn succeeded(&self) -> bool {
        self.record.report.succeeded() && !self.cancelled && self.lost_to.is_none()
    }
}

/// Runs `plan` as `decisions` and `request` say, on `engines` and `storages`; `cancel` stops it
/// (Ctrl-C, SIGTERM). See the module's documentation for the order.
pub async fn run(
    plan: Arc<Plan>,
    decisions: RunDecisions,
    request: RunRequest,
    engines: &Engines,
    storages: &Storages,
    hooks: &dyn RunHooks,
    cancel: CancellationToken,
) -> Result<RunOutcome, RunError> {
    let RunRequest { mut options, force, lease: lease_options } = request;
    if cancel.is_cancelled() {
        return Err(RunError::Interrupted);
    }
    // One writing run per lake: nothing is written before the lease is ours.
    let mut places = Vec::new();
    for path in plan.lease_paths() {
        let storage = storages.for_path(&path).map_err(|e| RunError::Lease(LeaseError::Storage(e)))?;
        places.push(LeasePlace { path, storage: storage.clone() });
    }
    let me = Holder::this_process(&options.run_id, &options.instance, plan.name());
    let lease = match Lease::acquire(places, me, &lease_options, &cancel).await {
        Ok(lease) => lease,
        Err(LeaseError::Cancelled(_)) => return Err(RunError::InterruptedWaiting),
        Err(e @ LeaseError::Held { .. }) => return Err(RunError::Held(e)),
        Err(e) => return Err(RunError::Lease(e)),
    };
    // A lost lease stops the run like a signal, before anything more is published.
    {
        let lost = lease.lost();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            cancel.cancel();
        });
    }
    // Holders proven dead can never commit: what they left goes now. A holder whose lease only
    // expired may be frozen, and its files go only once this run has committed their table.
    let dead: Vec<String> =
        lease.took_over().iter().filter(|t| t.proven_dead).map(|t| t.holder.token.clone()).collect();
    let fence = lease.fence();
    options.fence = Some(fence.clone());
    let leased = run_leased(&plan, decisions, options, force, engines, storages, hooks, &cancel, &dead, fence.as_ref());
    let outcome = leased.await;
    // This run's own failed attempts removed their files; staging folders of earlier runs that
    // did not finish go, only while this run still holds the lake.
    if !lease.lost().is_cancelled()
        && let Err(e) = lake::remove_leftovers(&plan, storages, None, &[], fence.as_ref()).await
    {
        warn!("{e}");
    }
    let lost_to = lease.lost_to();
    if let Err(e) = lease.release().await {
        warn!("could not release the lease on the lake: {e}");
    }
    let (record, written) = outcome?;
    Ok(RunOutcome { record, written, lost_to, cancelled: cancel.is_cancelled() })
}

/// The part of a run that holds the lake: resume, leftovers, execute, record.
#[allow(clippy::too_many_arguments)]
async fn run_leased(
    plan: &Arc<Plan>,
    mut decisions: RunDecisions,
    mut options: ExecutorOptions,
    force: Force,
    engines: &Engines,
    storages: &Storages,
    hooks: &dyn RunHooks,
    cancel: &CancellationToken,
    dead: &[String],
    fence: &dyn Fence,
) -> Result<(RunRecord, Result<String, StorageError>), RunError> {
    // What is already published from the same inputs (reads listings and manifests only).
    let freshness = resume::assess(plan, &decisions, storages, &force, true).await;
    let inputs_hashed = freshness.inputs_hashed;
    if !freshness.refused.is_empty() {
        return Err(RunError::Refused(freshness.refused));
    }
    // What killed runs left beside the tables this run loads (a 100,000-file table that is up
    // to date is not listed), and in every Delta table what holders proven dead wrote.
    let loading: Vec<usize> = plan
        .tasks()
        .iter()
        .filter(|t| matches!(t.action(), Action::Load(_)) && !freshness.fresh.contains_key(&t.index()))
        .map(|t| t.index())
        .collect();
    lake::remove_leftovers(plan, storages, Some(&loading), dead, fence).await.map_err(RunError::Leftovers)?;
    lake::abort_stale_uploads(plan, &decisions, storages).await;
    if let Some(slice) = &freshness.slice {
        decisions.decide_slice(slice.clone());
        hooks.days_decided(plan, slice, &freshness.fresh);
    }
    decisions.fresh = freshness.fresh;
    decisions.fingerprints = freshness.fingerprints;
    options.expected = record::last_durations(plan, storages).await;
    let auto = decisions.auto.clone();
    let decisions = Arc::new(decisions);
    info!(pipeline = %plan.name(), run = %options.run_id, tasks = plan.tasks().len(), jobs = options.jobs, "run started");

    let observer = hooks.observer(plan);
    let report = executor::execute(plan.clone(), decisions, engines, &options, observer, cancel.clone()).await;
    hooks.executed(&report);
    let succeeded = report.exit_code() == 0;
    let mut record = RunRecord::new(plan, report, join_path(plan.runs_dir(), &options.run_id));
    record.auto = auto;
    record.inputs_hashed = inputs_hashed;
    record.versions = lake::delta_versions(plan, &record, storages).await;
    if succeeded && !cancel.is_cancelled() {
        lake::vacuum(plan, storages, &record.versions, Some(fence)).await;
    }
    // The report's answers are part of the run: computed now, over the tables as this run left
    // them, and kept in its record (a failed query is an answer with its error, not a failure).
    if !plan.report().is_empty() {
        record.answers = if succeeded && !cancel.is_cancelled() {
            let previous = record::latest(plan.runs_dir(), storages).await;
            hooks.answers(&record, previous.as_ref()).await
        } else {
            Some(Answers {
                not_computed: Some("the run did not succeed, so its tables may not all be as planned".into()),
                items: Vec::new(),
                ..Default::default()
            })
        };
    }
    let written = record::write(&record, storages, plan.runs_dir(), Some(fence)).await;
    Ok((record, written))
}
