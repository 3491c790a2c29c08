//! Resume: which tasks need not run because everything they lead to is already published from
//! the same inputs and configuration.
//!
//! Every task gets a fingerprint: a SHA-256 of dagrun's version, the task's resolved
//! configuration, its dependencies' fingerprints, and for an extract the listing of its input
//! files (path, size, and modification time or ETag). A load writes its fingerprint into the
//! table's `_manifest.json`. On the next run a load is up to date when the published manifest
//! has the same fingerprint and every file it names is there with its size; a half-written table
//! has no manifest, so it never counts. Tasks that lead only to up-to-date loads are skipped too;
//! anything that feeds a stale load runs, so a run that failed in the middle resumes by running
//! again. `--force` reruns everything, `--force TASK` that task and what depends on it.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::content::ContentHashes;
use crate::decisions::RunDecisions;

use crate::path::{compile_glob, is_s3, join_path};
use crate::plan::{Action, DEFAULT_ENGINE, Load, Plan, Replace};
use crate::record::InputsHashed;
use crate::slice::{Day, RunSlice, SliceRequest, describe_days, window};
use crate::spec::TableFormat;
use crate::storage::{MANIFEST, ObjectMeta, StorageError, Storages, TableManifest};

/// What to rerun regardless of fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Force {
    #[default]
    /// Only what is stale runs.
    Nothing,
    /// Everything runs.
    All,
    /// These tasks and everything downstream of them.
    Tasks(Vec<String>),
}

/// The outcome of [`assess`].
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// Task index -> fingerprint.
    pub fingerprints: BTreeMap<usize, String>,
    /// Tasks that need not run, with the reason shown in plans and summaries.
    pub fresh: BTreeMap<usize, String>,
    /// Why each load that runs must run (no table yet, inputs changed, forced...).
    pub stale: BTreeMap<usize, String>,
    /// For a plan with sliced extracts: the days this run reads and what each load records.
    pub slice: Option<RunSlice>,
    /// Why the run must not go ahead at all (an input that does not cover what a load would
    /// replace), found before anything is written.
    pub refused: Vec<String>,
    /// What hashing local inputs' bytes cost.
    pub inputs_hashed: InputsHashed,
    /// The asked days' listing is not enough: a table must be rebuilt from every day.
    relist: bool,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Computes fingerprints and decides what is up to date. Reads listings and manifests, and the
/// bytes of local input files whose content hash is not cached yet (see [`crate::content`]);
/// `keep_hashes` keeps those hashes in the runs folder (a dry run writes nothing). `decisions`
/// says which days were asked for and where each task runs.
pub async fn assess(
    plan: &Plan,
    decisions: &RunDecisions,
    storages: &Storages,
    force: &Force,
    keep_hashes: bool,
) -> Freshness {
    let out = assess_listing(plan, decisions, storages, force, keep_hashes, false).await;
    if !out.relist {
        return out;
    }
    // A run of some days that must rebuild a table from every day: every file is listed.
    assess_listing(plan, decisions, storages, force, keep_hashes, true).await
}

/// [`assess`], listing only the files the asked days need unless `every_file`.
async fn assess_listing(
    plan: &Plan,
    decisions: &RunDecisions,
    storages: &Storages,
    force: &Force,
    keep_hashes: bool,
    every_file: bool,
) -> Freshness {
    let mut out = Freshness::default();
    let runs_dir = plan.runs_dir();
    let mut hashes = ContentHashes::open((!is_s3(runs_dir)).then(|| std::path::Path::new(runs_dir)));
    let threads = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let order = plan.topological_order();

    // Fingerprints, dependencies first. `base` is the same chain with the listings of sliced
    // extracts left out: a day's fingerprint adds that day's files to it.
    let mut base: BTreeMap<usize, String> = BTreeMap::new();
    let mut day_files: BTreeMap<usize, BTreeMap<Day, String>> = BTreeMap::new();
    for &i in &order {
        let task = &plan.tasks[i];
        let mut h = Sha256::new();
        h.update(format!("dagrun {}\n", env!("CARGO_PKG_VERSION")));
        // A stable serialization: field names and values, not Rust's Debug output, which may change
        // with any compiler or refactor.
        let action = serde_json::to_string(&task.action).expect("an action serializes");
        h.update(format!("task {} {}\n{action}\n", task.id, task.kind));
        let mut deps: Vec<(&str, &String)> =
            task.deps.iter().map(|&d| (plan.tasks[d].id.as_str(), &out.fingerprints[&d])).collect();
        deps.sort();
        let mut b = h.clone();
        for (id, fp) in deps {
            h.update(format!("dep {id} {fp}\n"));
        }
        let mut base_deps: Vec<(&str, &String)> =
            task.deps.iter().map(|&d| (plan.tasks[d].id.as_str(), &base[&d])).collect();
        base_deps.sort();
        for (id, fp) in base_deps {
            b.update(format!("dep {id} {fp}\n"));
        }
        if let Action::Extract(e) = &task.action {
            // The asked days' files, and those of twice `slice_tolerance` days around them: enough
            // to know every file of a day next to the asked ones.
            let tolerance = e.slice_tolerance.unwrap_or(0);
            let days = decisions
                .slice()
                .and_then(|s| s.requested)
                .filter(|_| !every_file)
                .map(|r| r.days().into_iter().flat_map(|d| window(d, 2 * tolerance)).collect::<BTreeSet<Day>>());
            let listed = match storages.list_days_and_keep(&e.path, &e.glob, e.slice.as_ref(), days.as_ref()).await {
                Ok(mut files) if !is_s3(&e.path) => {
                    let mut cache = std::mem::take(&mut hashes);
                    let (cache, files) = tokio::task::spawn_blocking(move || {
                        cache.stamp(&mut files, threads);
                        (cache, files)
                    })
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    hashes = cache;
                    Ok(files)
                }
                other => other,
            };
            h.update(listing_digest(&listed));
            match (&e.slice, &listed) {
                (Some(template), Ok(files)) => {
                    let mut by_day: BTreeMap<Day, Sha256> = BTreeMap::new();
                    for f in files {
                        match template.day_of(&f.relative) {
                            Some(day) => by_day.entry(day).or_default().update(file_line(f)),
                            None => out.refused.push(format!(
                                "{} of extract `{}` does not fit its `slice_path` `{}`, so no slice of the input \
                                 holds it: rename or move it, or narrow the extract's `glob`",
                                join_path(&e.path, &f.relative),
                                task.id,
                                template.text
                            )),
                        }
                    }
                    day_files.insert(i, by_day.into_iter().map(|(d, h)| (d, hex(&h.finalize()))).collect());
                    b.update(format!("sliced by {}\n", template.text));
                }
                _ => b.update(listing_digest(&listed)),
            }
        }
        out.fingerprints.insert(i, hex(&h.finalize()));
        base.insert(i, hex(&b.finalize()));
    }
    out.inputs_hashed =
        InputsHashed { files: hashes.hashed as u64, bytes: hashes.hashed_bytes, seconds: hashes.hashing.as_secs_f64() };
    if hashes.hashed > 0 {
        tracing::debug!(
            files = hashes.hashed,
            seconds = hashes.hashing.as_secs_f64(),
            "hashed the bytes of local inputs not seen before"
        );
    }
    if keep_hashes {
        hashes.save();
    }
    let forced: BTreeSet<usize> = match force {
        Force::Nothing => BTreeSet::new(),
        Force::All => (0..plan.tasks.len()).collect(),
        Force::Tasks(ids) => {
            let mut set = BTreeSet::new();
            for id in ids {
                if let Some(t) = plan.task(id) {
                    set.insert(t.index);
                    set.extend(plan.descendants(t.index));
                }
            }
            set
        }
    };

    // Loads fed by a sliced extract: up to date day by day.
    let mut fresh_loads: BTreeMap<usize, String> = BTreeMap::new();
    if let Some(requested) = decisions.slice().map(|s| s.requested) {
        let slice =
            assess_days(plan, decisions, storages, &forced, requested, &base, &day_files, every_file, &mut out).await;
        for (&i, reason) in &slice.1 {
            match reason {
                Ok(fresh) => {
                    fresh_loads.insert(i, fresh.clone());
                }
                Err(stale) => {
                    out.stale.insert(i, stale.clone());
                }
            }
        }
        out.slice = Some(slice.0);
    }
    // Other loads: up to date when the published manifest carries the same fingerprint.
    for task in &plan.tasks {
        let Action::Load(load) = &task.action else { continue };
        if fresh_loads.contains_key(&task.index) || out.stale.contains_key(&task.index) {
            continue;
        }
        if forced.contains(&task.index) {
            out.stale.insert(task.index, "forced".into());
            continue;
        }
        match published(storages, load).await {
            Ok(Some(manifest)) if manifest.fingerprint.as_deref() == Some(out.fingerprints[&task.index].as_str()) => {
                fresh_loads.insert(
                    task.index,
                    format!("up to date: published by run {} from the same inputs", manifest.run_id),
                );
            }
            Ok(None) => {
                out.stale.insert(task.index, "not published yet".into());
            }
            Ok(_) => {
                out.stale.insert(task.index, "inputs or configuration changed since it was published".into());
            }
            Err(why) => {
                out.stale.insert(task.index, why);
            }
        }
    }

    // What must run: stale loads, forced tasks, tasks whose results nothing records (no load
    // downstream), and everything those depend on. The rest is up to date.
    let order = plan.topological_order();
    // Whether a load lies downstream of each task, from the last tasks back.
    let mut leads_to_load = vec![false; plan.tasks.len()];
    for &i in order.iter().rev() {
        leads_to_load[i] =
            plan.dependents(i).iter().any(|&d| matches!(plan.tasks[d].action, Action::Load(_)) || leads_to_load[d]);
    }
    let mut run: BTreeSet<usize> = BTreeSet::new();
    for task in &plan.tasks {
        let i = task.index;
        let is_load = matches!(task.action, Action::Load(_));
        if forced.contains(&i) || (is_load && !fresh_loads.contains_key(&i)) || (!is_load && !leads_to_load[i]) {
            // The task and everything upstream of it not yet marked.
            let mut stack = vec![i];
            while let Some(j) = stack.pop() {
                if run.insert(j) {
                    stack.extend(plan.tasks[j].deps.iter().copied());
                }
            }
        }
    }
    for task in &plan.tasks {
        let i = task.index;
        if run.contains(&i) {
            continue;
        }
        let reason = match fresh_loads.get(&i) {
            Some(reason) => reason.clone(),
            None => {
                let loads: Vec<&str> = plan
                    .descendants(i)
                    .into_iter()
                    .filter(|&d| matches!(plan.tasks[d].action, Action::Load(_)))
                    .map(|d| plan.tasks[d].id.as_str())
                    .collect();
                format!("up to date: only feeds {}, already published", loads.join(", "))
            }
        };
        out.fresh.insert(i, reason);
    }
    out
}

/// One file's line in a listing digest: path, size, and ETag (for a local file, the hash of its
/// bytes) or, where there is none, its modification time.
fn file_line(f: &ObjectMeta) -> String {
    let stamp = match (&f.etag, f.modified) {
        (Some(etag), _) => etag.clone(),
        (None, Some(t)) => t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()).to_string(),
        (None, None) => String::new(),
    };
    format!("{}\t{}\t{stamp}\n", f.relative, f.size)
}

/// A stable digest of an extract's input files; a listing error gives a digest that matches
/// nothing, so the task runs (and reports the error).
fn listing_digest(listed: &Result<Vec<ObjectMeta>, StorageError>) -> String {
    match listed {
        Ok(files) => {
            let mut h = Sha256::new();
            for f in files {
                h.update(file_line(f));
            }
            format!("inputs {}\n", hex(&h.finalize()))
        }
        Err(e) => format!("inputs unavailable {e} {:?}\n", std::time::SystemTime::now()),
    }
}

/// What each load fed by a sliced extract must do: its stale days, its day fingerprints after the
/// run, whether it replaces its whole table. Returns the run's slice, and per load either why it
/// is up to date (`Ok`) or why it runs (`Err`). Refusals go to `out.refused`.
///
/// Days are the data's: a row is of its `slice_column`'s day, and a file of day F may hold rows
/// of the days within the extract's `slice_tolerance` of F. A day's fingerprint therefore covers
/// the files of the days around it, and a late file makes its neighbours stale too. A `merge`
/// table cannot take a row back, so when a file day it was made from changed or went (rather
/// than a day being added), it is rebuilt from every day.
#[allow(clippy::too_many_arguments)]
async fn assess_days(
    plan: &Plan,
    run: &RunDecisions,
    storages: &Storages,
    forced: &BTreeSet<usize>,
    requested: Option<SliceRequest>,
    base: &BTreeMap<usize, String>,
    day_files: &BTreeMap<usize, BTreeMap<Day, String>>,
    every_file: bool,
    out: &mut Freshness,
) -> (RunSlice, BTreeMap<usize, Result<String, String>>) {
    // A sliced extract whose listing failed: nothing can be decided by day. Its loads run, and
    // the extract reports the error when it lists again.
    let unlisted: Vec<usize> = plan
        .tasks
        .iter()
        .filter(|t| matches!(&t.action, Action::Extract(e) if e.slice.is_some()) && !day_files.contains_key(&t.index))
        .map(|t| t.index)
        .collect();
    if !unlisted.is_empty() {
        let mut decisions = BTreeMap::new();
        for task in &plan.tasks {
            if matches!(task.action, Action::Load(_)) && !plan.sliced_extracts_of(task.index).is_empty() {
                decisions.insert(task.index, Err("its input could not be listed".to_string()));
            }
        }
        return (RunSlice { requested, ..RunSlice::default() }, decisions);
    }
    let tolerance = |e: usize| match &plan.tasks[e].action {
        Action::Extract(x) => x.slice_tolerance.unwrap_or(0),
        _ => 0,
    };
    // The days the input holds rows of: each file's day and the days around it.
    let input_days: BTreeSet<Day> =
        day_files.iter().flat_map(|(&e, files)| files.keys().flat_map(move |&f| window(f, tolerance(e)))).collect();
    let wanted: BTreeSet<Day> = match requested {
        Some(r) => r.days(),
        None => input_days.clone(),
    };
    struct Fed {
        index: usize,
        /// The table's days now (`None`: no table, or one without day fingerprints).
        published: Option<BTreeMap<String, String>>,
        /// The file days its rows were read from, as recorded.
        files_published: Option<BTreeMap<String, String>>,
        exists: bool,
        /// Each day with input: its fingerprint now.
        now: BTreeMap<Day, String>,
        /// Each file day of its input: its fingerprint now.
        files_now: BTreeMap<Day, String>,
        /// The widest `slice_tolerance` of its sliced extracts.
        tolerance: u32,
        stale: BTreeSet<Day>,
        overwrite: bool,
    }
    let mut fed = Vec::new();
    let mut decisions = BTreeMap::new();
    let mut rewrite_all = false;
    let mut rebuilt: Option<String> = None;
    for task in &plan.tasks {
        let Action::Load(load) = &task.action else { continue };
        let sources = plan.sliced_extracts_of(task.index);
        if sources.is_empty() {
            continue;
        }
        if load.format != TableFormat::Delta {
            // dagrun's Parquet convention records no days: its table is replaced whole, up to date
            // by the fingerprint of everything it reads.
            let decision = match published(storages, load).await {
                Ok(Some(m))
                    if m.fingerprint.as_deref() == out.fingerprints.get(&task.index).map(String::as_str)
                        && !forced.contains(&task.index) =>
                {
                    Ok(format!("up to date: published by run {} from the same inputs", m.run_id))
                }
                Ok(None) => Err("not published yet".to_string()),
                Ok(Some(_)) if forced.contains(&task.index) => Err("forced".to_string()),
                Ok(Some(_)) => Err("inputs or configuration changed since it was published".to_string()),
                Err(why) => Err(why),
            };
            rewrite_all |= decision.is_err();
            decisions.insert(task.index, decision);
            continue;
        }
        let (published, files_published, exists) = match published(storages, load).await {
            Ok(Some(m)) => (m.slices, m.file_days, true),
            Ok(None) => (None, None, false),
            Err(why) => {
                decisions.insert(task.index, Err(why));
                (None, None, true)
            }
        };
        let tolerance_max = sources.iter().map(|&e| tolerance(e)).max().unwrap_or(0);
        let mut now = BTreeMap::new();
        for &day in wanted.union(&input_days) {
            let files: Vec<String> = sources
                .iter()
                .flat_map(|&e| {
                    window(day, tolerance(e)).filter_map(move |f| {
                        day_files.get(&e).and_then(|m| m.get(&f)).map(|h| format!("{} {f} {h}", plan.tasks[e].id))
                    })
                })
                .collect();
            if files.is_empty() {
                continue;
            }
            let mut h = Sha256::new();
            h.update(format!("{}\n{day}\n{}", base[&task.index], files.join("\n")));
            now.insert(day, hex(&h.finalize()));
        }
        let mut files_now: BTreeMap<Day, Sha256> = BTreeMap::new();
        for &e in &sources {
            for (f, h) in day_files.get(&e).into_iter().flatten() {
                files_now.entry(*f).or_default().update(format!("{} {h}\n", plan.tasks[e].id));
            }
        }
        let files_now: BTreeMap<Day, String> = files_now.into_iter().map(|(d, h)| (d, hex(&h.finalize()))).collect();
        let held: BTreeSet<Day> = published.iter().flat_map(|p| p.keys()).filter_map(|d| Day::parse(d)).collect();
        let is_forced = forced.contains(&task.index);
        let stale: BTreeSet<Day> = wanted
            .iter()
            .copied()
            .filter(|d| match now.get(d) {
                Some(fp) => is_forced || published.as_ref().and_then(|p| p.get(&d.to_string())) != Some(fp),
                // No input that day: stale only if the table holds rows of it.
                None => held.contains(d),
            })
            .collect();
        if requested.is_none() && !is_forced {
            let dropped: Vec<Day> = held.difference(&input_days).copied().collect();
            if !dropped.is_empty() {
                out.refused.push(format!(
                    "load `{}`: the input has no files for {} day(s) that table `{}` holds ({}); a run over \
                     the whole input would drop them. Nothing was written. Run with --partition or \
                     --since/--until to replace only the days the input has, or with --force={} to rebuild the \
                     table from this input alone",
                    task.id,
                    dropped.len(),
                    load.table,
                    describe_days(&dropped),
                    task.id
                ));
            }
        }
        // A merge cannot take rows back: a file day it was made from that changed, near a day this
        // run replaces, means rebuilding it from every day. So does one that went, when the run is
        // over the whole input (a run of some days may be given only their own files, as a folder
        // of last night's logs; the days it lacks are not taken for withdrawn).
        if matches!(load.mode, Replace::Merge { .. }) && exists && !(is_forced && requested.is_none()) {
            let changed: BTreeSet<Day> = files_published
                .iter()
                .flatten()
                .filter_map(|(d, fp)| Some((Day::parse(d)?, fp)))
                .filter(|(d, fp)| match files_now.get(d) {
                    Some(now) => now != *fp,
                    None => requested.is_none(),
                })
                .map(|(d, _)| d)
                .filter(|&f| window(f, tolerance_max).any(|d| stale.contains(&d)))
                .collect();
            if !changed.is_empty() && rebuilt.is_none() {
                rebuilt = Some(format!(
                    "the input of {} changed since `{}` (mode: merge) was made from it, and a merge cannot take \
                     rows back: every table its extract feeds is rebuilt from every day",
                    describe_days(&changed),
                    load.table
                ));
            }
        }
        fed.push(Fed {
            index: task.index,
            published,
            files_published,
            exists,
            now,
            files_now,
            tolerance: tolerance_max,
            stale,
            overwrite: load.mode.is_overwrite(),
        });
    }
    if rebuilt.is_some() && requested.is_some() && !every_file {
        // Every day's files are needed: the caller lists them all and asks again.
        out.relist = true;
    }
    if let Some(why) = &rebuilt {
        for f in &fed {
            let task = &plan.tasks[f.index];
            let held: BTreeSet<Day> = f.published.iter().flat_map(|p| p.keys()).filter_map(|d| Day::parse(d)).collect();
            let missing: Vec<Day> = held.difference(&input_days).copied().collect();
            // A run over every day that lacks days is refused above already.
            if !missing.is_empty() && !out.relist && requested.is_some() {
                out.refused.push(format!(
                    "load `{}`: {why}, but the input has no files for {} day(s) that its table holds ({}); nothing \
                     was written. Run over an input that has every day, or with --force={} to rebuild it from \
                     this input alone",
                    task.id,
                    missing.len(),
                    describe_days(&missing),
                    task.id
                ));
            }
        }
    }
    // The run's days: what some load needs; every day of the input when a load that replaces its
    // whole table has to run.
    // A task fed by a sliced extract that leads to no load (a check or transform run for its own
    // sake, or cut off by --only) reads every asked day.
    let unrecorded = plan.tasks.iter().any(|t| {
        plan.dependents(t.index).is_empty()
            && !matches!(t.action, Action::Load(_))
            && !plan.sliced_extracts_of(t.index).is_empty()
    });
    // An extract on another engine (EMR) reads every file it is given: no narrowing.
    let elsewhere = plan
        .tasks
        .iter()
        .any(|t| matches!(&t.action, Action::Extract(e) if e.slice.is_some()) && run.engine(t.index) != DEFAULT_ENGINE);
    let must_rewrite_all =
        rewrite_all || unrecorded || elsewhere || fed.iter().any(|f| f.overwrite && !f.stale.is_empty());
    let mut days: BTreeSet<Day> = if rebuilt.is_some() {
        input_days.clone()
    } else if must_rewrite_all {
        wanted.clone()
    } else {
        fed.iter().flat_map(|f| f.stale.iter().copied()).collect()
    };
    // A day with no file of its own (the day before the first file, after the last, or between
    // two) whose every file this run reads anyway runs too when it is stale: a backfill from the
    // 1st also settles the 31st before it, whose rows can only be in the file of the 1st, and no
    // later run has to replace such a day alone.
    if !days.is_empty() {
        let own: BTreeSet<Day> = day_files.values().flat_map(|m| m.keys().copied()).collect();
        let widest = fed.iter().map(|f| f.tolerance).max().unwrap_or(0);
        let read = |f: Day| window(f, widest).any(|d| days.contains(&d));
        // Where every file of a day is known: the whole input, or the asked days and
        // `slice_tolerance` around them (the listing reaches twice that far).
        let known = |d: &Day| match requested.filter(|_| !every_file) {
            Some(r) => r.since.0 - widest as i32 <= d.0 && d.0 <= r.until.0 + widest as i32,
            None => true,
        };
        let extra: Vec<Day> = input_days
            .iter()
            .copied()
            .filter(|d| known(d) && !days.contains(d) && !own.contains(d))
            .filter(|&d| window(d, widest).filter(|f| own.contains(f)).all(read))
            .filter(|d| fed.iter().any(|f| f.published.as_ref().and_then(|p| p.get(&d.to_string())) != f.now.get(d)))
            .collect();
        days.extend(extra);
    }
    let mut slice = RunSlice { requested, days: days.clone(), decided: true, rebuilt, ..RunSlice::default() };
    for f in fed {
        let whole = !f.exists
            || forced.contains(&f.index) && requested.is_none()
            || match &f.published {
                Some(p) => p.keys().filter_map(|d| Day::parse(d)).all(|d| days.contains(&d)),
                None => requested.is_none(),
            };
        let mut record: BTreeMap<String, String> =
            if whole { BTreeMap::new() } else { f.published.clone().unwrap_or_default() };
        for day in &days {
            match f.now.get(day) {
                Some(fp) => record.insert(day.to_string(), fp.clone()),
                None => record.remove(&day.to_string()),
            };
        }
        // The file days this run reads for its days: their rows of those days are in the table now.
        let mut file_record: BTreeMap<String, String> =
            if whole { BTreeMap::new() } else { f.files_published.clone().unwrap_or_default() };
        for (file_day, fp) in &f.files_now {
            if window(*file_day, f.tolerance).any(|d| days.contains(&d)) {
                file_record.insert(file_day.to_string(), fp.clone());
            }
        }
        if whole {
            slice.whole.insert(f.index);
        }
        slice.records.insert(f.index, record);
        slice.file_records.insert(f.index, file_record);
        if decisions.contains_key(&f.index) {
            continue;
        }
        let decision = if f.stale.is_empty() && slice.rebuilt.is_none() {
            let scope = match requested {
                Some(r) => format!("for {}", r.describe()),
                None => "for every day of the input".to_string(),
            };
            Ok(format!("up to date {scope}: every day published from the same inputs"))
        } else if !f.exists {
            Err("not published yet".to_string())
        } else if f.stale.is_empty() {
            Err("rebuilt from every day".to_string())
        } else {
            Err(format!("{} day(s) to replace: {}", f.stale.len(), describe_days(&f.stale)))
        };
        decisions.insert(f.index, decision);
    }
    (slice, decisions)
}

/// The manifest of the table `load` publishes, in its format, if it is complete: every file it
/// names is present with its size.
async fn published(storages: &Storages, load: &Load) -> Result<Option<TableManifest>, String> {
    let path = load.path.as_str();
    let storage = storages.for_path(path).map_err(|e| e.to_string())?;
    let manifest: TableManifest = match load.format {
        // The log is the table: a version names only files that were whole when it was
        // committed, and nothing else deletes them before retention. Only the last load's commit
        // is read (replaying the log of a 100,000-file table, or listing it, would cost a
        // one-day run more than its work); a log that cannot be read fails the load, naming it.
        TableFormat::Delta => {
            let delta = storages.delta(path).map_err(|e| e.to_string())?;
            return delta.last_load(path).await.map_err(|e| format!("its Delta log cannot be read ({e})"));
        }
        TableFormat::Parquet => {
            let manifest_path = format!("{}/{MANIFEST}", path.trim_end_matches('/'));
            let Ok(bytes) = storage.read(&manifest_path).await else { return Ok(None) };
            serde_json::from_slice(&bytes).map_err(|e| format!("its manifest is unreadable ({e})"))?
        }
    };
    let glob = compile_glob("**").map_err(|e| e.to_string())?;
    let present: BTreeMap<String, u64> =
        storage.list(path, &glob).await.map_err(|e| e.to_string())?.into_iter().map(|o| (o.relative, o.size)).collect();
    for file in &manifest.files {
        if present.get(&file.path) != Some(&file.size) {
            return Err(format!("the published table is incomplete ({} is missing or changed)", file.path));
        }
    }
    Ok(Some(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{PlanOptions, compile};
    use crate::diagnostic::SourceFile;
    use crate::storage::{LocalStorage, ManifestFile, Storage};
    use crate::vars::VarInputs;

    fn plan(root: &std::path::Path) -> Plan {
        let text = format!(
            r#"name: t
vars: {{root: "{}"}}
tasks:
  - {{id: a, kind: extract, path: "${{root}}/in_a", format: jsonl, schema: {{x: int}}}}
  - {{id: b, kind: extract, path: "${{root}}/in_b", format: jsonl, schema: {{x: int}}}}
  - {{id: load_a, kind: load, depends_on: [a], table: a, path: "${{root}}/out/a"}}
  - {{id: load_b, kind: load, depends_on: [b], table: b, path: "${{root}}/out/b"}}
  - {{id: both, kind: transform, depends_on: [a, b], sql: "SELECT * FROM a UNION ALL SELECT * FROM b"}}
"#,
            root.display()
        );
        let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
        compile(SourceFile::new("t.yaml", text), &inputs, &PlanOptions::default()).unwrap()
    }

    /// Publishes a one-file table at `path` carrying `fingerprint`.
    async fn publish(path: &std::path::Path, fingerprint: &str) {
        let storage = LocalStorage;
        let target = path.display().to_string();
        let write = storage.begin_table(&target, "r0-1").await.unwrap();
        storage.write(&storage.table_file(&write, "part-00000.parquet").path, b"data".to_vec()).await.unwrap();
        let manifest = TableManifest {
            table: "t".into(),
            run_id: "r0".into(),
            rows: 1,
            partition_by: Vec::new(),
            files: vec![ManifestFile { path: "part-00000.parquet".into(), size: 4, rows: None }],
            fingerprint: Some(fingerprint.into()),
            slices: None,
            file_days: None,
        };
        storage.commit_table(&write, &manifest, None).await.unwrap();
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for input in ["in_a", "in_b"] {
            std::fs::create_dir_all(dir.path().join(input)).unwrap();
            std::fs::write(dir.path().join(input).join("1.json"), "{\"x\": 1}").unwrap();
        }
        dir
    }

    fn ids(plan: &Plan, set: &BTreeMap<usize, String>) -> Vec<String> {
        set.keys().map(|&i| plan.tasks[i].id.clone()).collect()
    }

    #[tokio::test]
    async fn nothing_published_means_everything_runs() {
        let dir = setup();
        let p = plan(dir.path());
        let f = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        assert!(f.fresh.is_empty());
        assert_eq!(f.stale.values().next().unwrap(), "not published yet");
        assert_eq!(f.fingerprints.len(), p.tasks.len(), "every task has a fingerprint");
    }

    #[tokio::test]
    async fn a_load_published_from_the_same_inputs_is_skipped_with_what_only_feeds_it() {
        let dir = setup();
        let p = plan(dir.path());
        let first = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        let load_a = p.task("load_a").unwrap().index;
        publish(&dir.path().join("out/a"), &first.fingerprints[&load_a]).await;

        let p = plan(dir.path());
        let again = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        // `a` also feeds `both`, which records nothing and so always runs: `a` must run too.
        assert_eq!(ids(&p, &again.fresh), vec!["load_a"]);
        assert_eq!(again.fresh[&load_a], "up to date: published by run r0 from the same inputs");
    }

    #[tokio::test]
    async fn changed_inputs_forcing_and_missing_files_make_a_load_stale() {
        let dir = setup();
        let p = plan(dir.path());
        let first = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        let load_b = p.task("load_b").unwrap().index;
        publish(&dir.path().join("out/b"), &first.fingerprints[&load_b]).await;

        let p = plan(dir.path());
        let unchanged = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        assert_eq!(ids(&p, &unchanged.fresh), vec!["load_b"]);

        let forced =
            assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Tasks(vec!["b".into()]), false).await;
        assert!(forced.fresh.is_empty());
        assert_eq!(forced.stale[&load_b], "forced");

        std::fs::write(dir.path().join("in_b/1.json"), "{\"x\": 2}\n").unwrap();
        let changed = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        assert!(changed.fresh.is_empty());
        assert_eq!(changed.stale[&load_b], "inputs or configuration changed since it was published");

        std::fs::remove_file(dir.path().join("out/b/part-00000.parquet")).unwrap();
        let broken = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        assert!(broken.stale[&load_b].starts_with("the published table is incomplete"), "{:?}", broken.stale);
    }

    #[tokio::test]
    async fn a_touched_input_stays_up_to_date_and_other_bytes_behind_the_same_size_and_time_do_not() {
        let dir = setup();
        let p = plan(dir.path());
        let first = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        let load_b = p.task("load_b").unwrap().index;
        publish(&dir.path().join("out/b"), &first.fingerprints[&load_b]).await;
        let file = dir.path().join("in_b/1.json");
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();

        let touch = std::fs::File::options().write(true).open(&file).unwrap();
        touch.set_modified(before + std::time::Duration::from_secs(3600)).unwrap();
        let touched = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        assert_eq!(ids(&p, &touched.fresh), vec!["load_b"], "{:?}", touched.stale);

        std::fs::write(&file, "{\"x\": 3}").unwrap();
        let copy = std::fs::File::options().write(true).open(&file).unwrap();
        copy.set_modified(before).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), "{\"x\": 1}".len() as u64);
        let changed = assess(&p, &RunDecisions::new(&p), &Storages::default(), &Force::Nothing, false).await;
        assert!(changed.fresh.is_empty());
        assert_eq!(changed.stale[&load_b], "inputs or configuration changed since it was published");
    }
}
