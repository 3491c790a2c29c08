//! The order of a run, driven on tokio's paused clock with an engine that only records and a
//! storage that logs what it is asked: the lake is taken before anything is read and given back
//! on every path, the vacuum comes only after a run that succeeded, and a signal at each stage
//! stops the run where it is.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::compile::{PlanOptions, compile};
use crate::diagnostic::SourceFile;
use crate::engine::{Engine, TaskContext, TaskError, TaskOutput, TaskProgress};
use crate::executor::Observer;
use crate::executor::TaskRecord;
use crate::lease::{LEASE_FILE, now_ms, to_json};
use crate::plan::PlannedTask;
use crate::storage::delta::{Committed, DeltaCommit, DeltaSnapshot, DeltaTables, DeltaVersion, Orphans};
use crate::storage::local::LocalStorage;
use crate::storage::{AccessCheck, ObjectMeta, Storage, TableFile, TableManifest, TableWrite, Version};
use crate::vars::VarInputs;

/// What happened, in order.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Where `event` first happened; fails the test when it never did.
    fn at(&self, event: &str) -> usize {
        let events = self.events();
        events.iter().position(|e| e == event).unwrap_or_else(|| panic!("no `{event}` in {events:?}"))
    }

    fn has(&self, event: &str) -> bool {
        self.events().iter().any(|e| e == event)
    }
}

/// The local disk, logging the lease, the listing of the input and the run record.
struct Logged {
    log: Arc<Log>,
}

#[async_trait]
impl Storage for Logged {
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
        if root.ends_with("/in") {
            self.log.push("input listed");
        }
        LocalStorage.list(root, glob).await
    }
    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        LocalStorage.read(path).await
    }
    async fn head(&self, path: &str) -> Result<ObjectMeta, StorageError> {
        LocalStorage.head(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.delete(path).await
    }
    async fn write(&self, path: &str, data: Vec<u8>) -> Result<(), StorageError> {
        if path.ends_with("/run.json") {
            self.log.push("run record written");
        } else if path.ends_with("/LATEST") {
            self.log.push("LATEST written");
        }
        LocalStorage.write(path, data).await
    }
    async fn remove_all(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.remove_all(path).await
    }
    async fn begin_table(&self, target: &str, tag: &str) -> Result<TableWrite, StorageError> {
        LocalStorage.begin_table(target, tag).await
    }
    fn table_file(&self, write: &TableWrite, relative: &str) -> TableFile {
        LocalStorage.table_file(write, relative)
    }
    async fn commit_table(
        &self,
        write: &TableWrite,
        manifest: &TableManifest,
        fence: Option<&dyn Fence>,
    ) -> Result<(), StorageError> {
        LocalStorage.commit_table(write, manifest, fence).await
    }
    async fn abort_table(&self, write: &TableWrite, files: &[TableFile]) -> Result<(), StorageError> {
        LocalStorage.abort_table(write, files).await
    }
    async fn check_access(&self, path: &str, write: bool) -> AccessCheck {
        LocalStorage.check_access(path, write).await
    }
    async fn create_new(&self, path: &str, data: Vec<u8>) -> Result<Version, StorageError> {
        let created = LocalStorage.create_new(path, data).await;
        if path.ends_with(LEASE_FILE) && created.is_ok() {
            self.log.push("lease taken");
        }
        created
    }
    async fn read_versioned(&self, path: &str) -> Result<(Vec<u8>, Version), StorageError> {
        LocalStorage.read_versioned(path).await
    }
    async fn replace_if(&self, path: &str, data: Vec<u8>, version: &Version) -> Result<Version, StorageError> {
        LocalStorage.replace_if(path, data, version).await
    }
    async fn delete_if(&self, path: &str, version: &Version) -> Result<(), StorageError> {
        let deleted = LocalStorage.delete_if(path, version).await;
        if path.ends_with(LEASE_FILE) && deleted.is_ok() {
            self.log.push("lease released");
        }
        deleted
    }
    async fn remove_leftovers(
        &self,
        target: &str,
        dead: &[String],
        fence: Option<&dyn Fence>,
    ) -> Result<Vec<String>, StorageError> {
        LocalStorage.remove_leftovers(target, dead, fence).await
    }
}

/// Delta tables that are never there yet, at version 1 once loaded, and whose vacuum is logged.
struct Tables {
    log: Arc<Log>,
}

#[async_trait]
impl DeltaTables for Tables {
    async fn snapshot(&self, _: &str, _: Option<u64>) -> Result<Option<DeltaSnapshot>, StorageError> {
        Ok(None)
    }
    async fn commit(&self, _: &str, _: DeltaCommit) -> Result<Committed, StorageError> {
        unreachable!("the test engine commits nothing")
    }
    async fn latest_version(&self, _: &str) -> Result<Option<u64>, StorageError> {
        Ok(Some(1))
    }
    async fn last_load(&self, _: &str) -> Result<Option<TableManifest>, StorageError> {
        Ok(None)
    }
    async fn history(&self, _: &str, _: Option<usize>) -> Result<Vec<DeltaVersion>, StorageError> {
        Ok(Vec::new())
    }
    async fn vacuum(&self, _: &str, _: Duration, _: Option<&dyn Fence>) -> Result<usize, StorageError> {
        self.log.push("vacuum");
        Ok(0)
    }
    async fn remove_orphans(
        &self,
        _: &str,
        _: Orphans<'_>,
        _: Option<&dyn Fence>,
    ) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }
}

/// How the test engine treats one task.
#[derive(Clone, Copy, PartialEq)]
enum Act {
    Succeed,
    Fail,
    /// Runs until the run is cancelled.
    Hang,
}

struct Recording {
    log: Arc<Log>,
    acts: BTreeMap<String, Act>,
}

#[async_trait]
impl Engine for Recording {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn run(&self, task: &PlannedTask, cx: TaskContext) -> Result<TaskOutput, TaskError> {
        self.log.push(format!("task {}", task.id()));
        match self.acts.get(task.id()).copied().unwrap_or(Act::Succeed) {
            Act::Succeed => Ok(TaskOutput::default()),
            Act::Fail => Err(TaskError::permanent("scripted failure")),
            Act::Hang => {
                cx.cancel.cancelled().await;
                Err(TaskError::permanent("cancelled"))
            }
        }
    }
}

struct Quiet;

impl TaskProgress for Quiet {
    fn set_length(&self, _: Option<u64>, _: &str) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
}

impl Observer for Quiet {
    fn attempt_started(&self, _: &PlannedTask, _: u32) -> Arc<dyn TaskProgress> {
        Arc::new(Quiet)
    }
    fn attempt_failed(&self, _: &PlannedTask, _: u32, _: &TaskError, _: Option<Duration>) {}
    fn task_finished(&self, _: &PlannedTask, _: &TaskRecord) {}
}

/// Hooks that log, and may cancel the run once it has executed.
struct Hooks {
    log: Arc<Log>,
    cancel_after_execution: Option<CancellationToken>,
}

#[async_trait]
impl RunHooks for Hooks {
    fn observer(&self, _: &Plan) -> Arc<dyn Observer> {
        Arc::new(Quiet)
    }

    fn executed(&self, _: &RunReport) {
        self.log.push("executed");
        if let Some(cancel) = &self.cancel_after_execution {
            cancel.cancel();
        }
    }
}

struct Lake {
    dir: tempfile::TempDir,
    log: Arc<Log>,
    plan: Arc<Plan>,
    storages: Storages,
}

impl Lake {
    fn new() -> Lake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        std::fs::write(dir.path().join("in/1.json"), "{\"x\": 1}").unwrap();
        let text = format!(
            "name: t\nvars: {{root: \"{}\"}}\nruns: \"${{root}}/out/_dagrun\"\ntasks:\n  - {{id: e, kind: extract, path: \"${{root}}/in\", format: jsonl, \
             schema: {{x: int}}}}\n  - {{id: l, kind: load, depends_on: [e], table: e, path: \"${{root}}/out/t\", \
             format: delta}}\n",
            dir.path().display()
        );
        let options = PlanOptions { engines: vec!["local".into()], ..PlanOptions::default() };
        let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
        let plan = Arc::new(compile(SourceFile::new("t.yaml", text), &inputs, &options).unwrap());
        let log = Arc::new(Log::default());
        let storages = Storages {
            local: Arc::new(Logged { log: log.clone() }),
            delta: Some(Arc::new(Tables { log: log.clone() })),
            ..Storages::default()
        };
        Lake { dir, log, plan, storages }
    }

    async fn run(&self, acts: &[(&str, Act)], cancel: CancellationToken, after: bool) -> Result<RunOutcome, RunError> {
        let engines = Engines::new().with(Arc::new(Recording {
            log: self.log.clone(),
            acts: acts.iter().map(|(t, a)| (t.to_string(), *a)).collect(),
        }));
        let mut options = ExecutorOptions::new("r1");
        options.jitter_seed = Some(1);
        let request = RunRequest { options, force: Force::Nothing, lease: LeaseOptions::default() };
        let hooks = Hooks { log: self.log.clone(), cancel_after_execution: after.then(|| cancel.clone()) };
        let decisions = RunDecisions::new(&self.plan);
        run(self.plan.clone(), decisions, request, &engines, &self.storages, &hooks, cancel).await
    }

    fn lease_file(&self) -> std::path::PathBuf {
        self.dir.path().join("out/_dagrun").join(LEASE_FILE)
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_takes_the_lake_before_reading_and_gives_it_back_after_recording() {
    let lake = Lake::new();
    let outcome = lake.run(&[], CancellationToken::new(), false).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", lake.log.events());
    let log = &lake.log;
    let order = [
        "lease taken",
        "input listed",
        "task e",
        "task l",
        "executed",
        "vacuum",
        "run record written",
        "LATEST written",
        "lease released",
    ];
    let at: Vec<usize> = order.iter().map(|e| log.at(e)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{order:?} in that order: {:?}", log.events());
    assert!(!lake.lease_file().exists());
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_is_recorded_without_a_vacuum_and_the_lake_is_given_back() {
    let lake = Lake::new();
    let outcome = lake.run(&[("l", Act::Fail)], CancellationToken::new(), false).await.unwrap();
    assert!(!outcome.succeeded());
    assert_eq!(outcome.record.report.exit_code(), 1);
    assert!(!lake.log.has("vacuum"), "{:?}", lake.log.events());
    assert!(lake.log.at("run record written") < lake.log.at("lease released"));
    assert!(!lake.lease_file().exists());
}

#[tokio::test(start_paused = true)]
async fn a_signal_before_the_run_writes_nothing_and_takes_no_lease() {
    let lake = Lake::new();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = lake.run(&[], cancel, false).await.unwrap_err();
    assert!(matches!(err, RunError::Interrupted), "{err}");
    assert!(lake.log.events().is_empty(), "{:?}", lake.log.events());
}

#[tokio::test(start_paused = true)]
async fn a_signal_while_waiting_for_the_lake_stops_the_wait() {
    let lake = Lake::new();
    // Another live run holds the lake.
    std::fs::create_dir_all(lake.lease_file().parent().unwrap()).unwrap();
    let mut other = Holder::this_process("other", "other-token", "t");
    other.expires_at_ms = now_ms() + 3_600_000;
    std::fs::write(lake.lease_file(), to_json(&other)).unwrap();
    let engines = Engines::new().with(Arc::new(Recording { log: lake.log.clone(), acts: BTreeMap::new() }));
    let request = RunRequest {
        options: ExecutorOptions::new("r1"),
        force: Force::Nothing,
        lease: LeaseOptions { wait: Some(Duration::from_secs(600)), ..LeaseOptions::default() },
    };
    let hooks = Hooks { log: lake.log.clone(), cancel_after_execution: None };
    let cancel = CancellationToken::new();
    let signal = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            cancel.cancel();
        })
    };
    let decisions = RunDecisions::new(&lake.plan);
    let err = run(lake.plan.clone(), decisions, request, &engines, &lake.storages, &hooks, cancel).await.unwrap_err();
    signal.await.unwrap();
    assert!(matches!(err, RunError::InterruptedWaiting), "{err}");
    assert!(!lake.log.has("input listed") && !lake.log.has("task e"), "{:?}", lake.log.events());
    assert!(lake.lease_file().exists(), "the other run's lease is left as it is");
}

#[tokio::test(start_paused = true)]
async fn a_signal_during_a_task_records_the_run_skips_the_vacuum_and_gives_the_lake_back() {
    let lake = Lake::new();
    let cancel = CancellationToken::new();
    let signal = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            cancel.cancel();
        })
    };
    let outcome = lake.run(&[("l", Act::Hang)], cancel, false).await.unwrap();
    signal.await.unwrap();
    assert!(outcome.cancelled && !outcome.succeeded());
    assert!(!lake.log.has("vacuum"), "{:?}", lake.log.events());
    assert!(lake.log.has("run record written") && lake.log.has("lease released"), "{:?}", lake.log.events());
    assert!(!lake.lease_file().exists());
}

#[tokio::test(start_paused = true)]
async fn a_signal_after_every_task_finished_keeps_the_record_and_skips_the_vacuum() {
    let lake = Lake::new();
    let outcome = lake.run(&[], CancellationToken::new(), true).await.unwrap();
    assert!(outcome.cancelled && outcome.record.report.succeeded());
    assert!(!outcome.succeeded());
    assert!(!lake.log.has("vacuum"), "{:?}", lake.log.events());
    assert!(lake.log.at("executed") < lake.log.at("run record written"));
    assert!(!lake.lease_file().exists());
}

#[tokio::test(start_paused = true)]
async fn an_input_that_does_not_cover_the_lake_is_refused_before_any_task_and_the_lake_given_back() {
    let lake = Lake::new();
    // A file of a sliced extract that fits no day of its `slice_path`.
    std::fs::write(lake.dir.path().join("in/notes.json"), "{\"ts\": 1}").unwrap();
    std::fs::write(lake.dir.path().join("in/2018-11-05.json"), "{\"ts\": 1541376000000}").unwrap();
    let text = format!(
        "name: t\nvars: {{root: \"{}\"}}\nruns: \"${{root}}/out/_dagrun\"\ntasks:\n  - {{id: e, kind: extract, path: \"${{root}}/in\", format: jsonl, \
         slice_path: \"{{year}}-{{month}}-{{day}}.json\", slice_column: at, schema: {{ts: int, at: {{type: timestamp_ms, \
         from: ts}}}}}}\n  - {{id: l, kind: load, depends_on: [e], table: e, path: \"${{root}}/out/t\", format: delta, \
         mode: partitions, slice_column: at}}\n",
        lake.dir.path().display()
    );
    let options = PlanOptions { engines: vec!["local".into()], ..PlanOptions::default() };
    let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
    let plan = Arc::new(compile(SourceFile::new("t.yaml", text), &inputs, &options).unwrap());
    let lake = Lake { plan, ..lake };
    let err = lake.run(&[], CancellationToken::new(), false).await.unwrap_err();
    let RunError::Refused(reasons) = &err else { panic!("{err}") };
    assert!(
        reasons.iter().any(|r| r.contains("notes.json of extract `e` does not fit its `slice_path`")),
        "{reasons:?}"
    );
    assert!(!lake.log.has("task e"), "{:?}", lake.log.events());
    assert!(lake.log.at("lease taken") < lake.log.at("lease released"));
    assert!(!lake.lease_file().exists());
}
