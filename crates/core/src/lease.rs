//! The lease on a lake: one run at a time writes a lake's tables. A lake is every folder that
//! holds one of the pipeline's tables, plus its runs folder; each has a lease file
//! (`<folder>/_dagrun/lease.json`, `<runs>/lease.json`: the same file for Sparkify's
//! `output/_dagrun`). Before its first write a run creates each of them (S3 `If-None-Match: *`,
//! on disk an exclusive create) in one order (by path, so two runs never wait on each other),
//! naming itself (run id, a token of this process, host, pid and the process's identity) with an
//! expiry, and renews them while it lives. A second run waits (`--wait-for-lock`) or stops,
//! naming the holder. Two pipelines writing one table therefore exclude each other whatever their
//! `runs:` folder. Every change after the create is conditional on the version last seen (S3
//! `If-Match`), so two runs can never both believe they hold a lease file.
//!
//! Taking over: a lease whose holder stopped renewing is taken over once it expires. At once only
//! with proof that the holder is dead: the same host name, boot ([`ProcessIdentity::boot_id`])
//! and pid namespace, and no process with its pid and start time. A host name alone proves
//! nothing: two containers, or cloned VMs, share one.
//!
//! Fencing ([`Lease::fence`]): a holder that was frozen (a GC pause, a suspended laptop, a stalled VM)
//! may wake after its lease passed to another run. It must not write then, so every commit and
//! every write of the lake's `LATEST` first checks, by reading the lease files, that this process
//! still holds all of them with time to spare. A process frozen between that check and its commit
//! is stopped by the Delta log itself: a commit lands only as the version right after the one its
//! load read, so once the new holder has committed a table, no earlier holder can commit to it
//! (the argument is in `docs/guarantees.md`).
//!
//! Clocks: expiry is wall-clock time written by the holder and read by the others, so hosts must
//! agree on the time to well within the lease's length (a few seconds against minutes).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::path::join_path;
use crate::storage::{Fence, Op, Storage, StorageError, StorageErrorKind, Version};

/// The lease's file name in the runs folder.
pub(crate) const LEASE_FILE: &str = "lease.json";
/// Where the lease of a folder holding tables lives, relative to that folder.
pub const LAKE_LEASE: &str = "_dagrun/lease.json";
/// How long a lease lasts without renewal, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// What tells one process apart from every other, on every machine and in every container:
/// enough to prove that a lease's holder is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// `/proc/sys/kernel/random/boot_id`: new at every boot of every machine (cloned VMs too).
    pub boot_id: String,
    /// The pid namespace (`pid:[4026531836]`): each container has its own, in which pids repeat.
    pub pid_ns: String,
    /// When the process started, in clock ticks after boot: a pid reused later is another process.
    pub start_ticks: u64,
}

impl ProcessIdentity {
    /// This process's identity, where the system tells it (Linux, with a `/proc` of this
    /// process's own pid namespace); `None` elsewhere, and then no holder can be proven dead.
    pub fn of_this_process() -> Option<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_string();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?.display().to_string();
        // `/proc` may be another namespace's (a container sharing the host's): then pids read
        // there are not this process's pids, and nothing can be proven.
        let (pid, start_ticks) = proc_stat("self").ok()??;
        if pid != std::process::id() || boot_id.is_empty() {
            return None;
        }
        Some(Self { boot_id, pid_ns, start_ticks })
    }
}

/// The pid and start time of `/proc/<which>/stat`; `Ok(None)` when there is no such process.
fn proc_stat(which: &str) -> std::io::Result<Option<(u32, u64)>> {
    let text = match std::fs::read_to_string(format!("/proc/{which}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the last `)`.
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc/<pid>/stat");
    let (head, rest) = text.rsplit_once(')').ok_or_else(bad)?;
    let pid = head.split_whitespace().next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    // Field 22 of the line is the 20th after the comm (state is the 3rd field).
    let start = rest.split_whitespace().nth(19).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(Some((pid, start)))
}

/// What a lease says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The run's id.
    pub run_id: String,
    /// Unique to the holding process: two processes with one run id are still told apart. The
    /// data files a load writes carry it (`part-00000-<run>-<token>-<attempt>.parquet`).
    pub token: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The host the process runs on.
    pub host: String,
    /// The process's id on that host.
    pub pid: u32,
    /// Who the process is beyond its pid, where the system says (see [`ProcessIdentity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ProcessIdentity>,
    /// When the lease was taken, in epoch milliseconds.
    pub started_at_ms: u64,
    /// When it was last renewed.
    pub renewed_at_ms: u64,
    /// When it expires unless renewed.
    pub expires_at_ms: u64,
}

impl Holder {
    /// This process, about to run `run_id` of `pipeline`.
    pub fn this_process(run_id: &str, token: &str, pipeline: &str) -> Self {
        Self {
            run_id: run_id.to_string(),
            token: token.to_string(),
            pipeline: pipeline.to_string(),
            host: host_name(),
            pid: std::process::id(),
            identity: ProcessIdentity::of_this_process(),
            started_at_ms: 0,
            renewed_at_ms: 0,
            expires_at_ms: 0,
        }
    }

    /// One line naming the holder: who, where, since when, until when.
    pub fn describe(&self) -> String {
        format!(
            "run {} of pipeline `{}` on host {} (pid {}), started {}, lease expires {}",
            self.run_id,
            self.pipeline,
            self.host,
            self.pid,
            format_time(self.started_at_ms),
            format_time(self.expires_at_ms)
        )
    }

    fn expired(&self, now: u64) -> bool {
        now > self.expires_at_ms
    }

    /// The lease has not expired: its run is alive, or died less than a lease's length ago.
    pub fn is_live(&self) -> bool {
        !self.expired(now_ms())
    }

    /// How long ago it was last renewed.
    pub fn renewed_ago(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.renewed_at_ms))
    }

    /// Whether the holder is proven gone: a process of this machine, this boot and this pid
    /// namespace, whose pid no longer names it (no process, or one started at another time).
    /// Anything short of that proves nothing, and its lease is waited for.
    pub fn proven_dead(&self) -> bool {
        self.proven_dead_given(ProcessIdentity::of_this_process().as_ref())
    }

    fn proven_dead_given(&self, mine: Option<&ProcessIdentity>) -> bool {
        let (Some(theirs), Some(mine)) = (&self.identity, mine) else { return false };
        if self.host != host_name()
            || theirs.boot_id != mine.boot_id
            || theirs.pid_ns != mine.pid_ns
            || self.pid == std::process::id()
        {
            return false;
        }
        match proc_stat(&self.pid.to_string()) {
            Ok(None) => true,
            Ok(Some((_, started))) => started != theirs.start_ticks,
            Err(_) => false,
        }
    }
}

/// How a run asks for the lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// How long the lease lasts without renewal.
    pub ttl: Duration,
    /// How long to wait for a live holder; `None`: do not wait.
    pub wait: Option<Duration>,
    /// Pause between looks while waiting.
    pub poll: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self { ttl: DEFAULT_TTL, wait: None, poll: Duration::from_secs(2) }
    }
}

/// Why the lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another live run holds it.
    #[error("another run holds the lake at {path}: {}", holder.describe())]
    Held {
        /// Where the lease is.
        path: String,
        /// Who holds it.
        holder: Box<Holder>,
        /// How long this run waited, when it was allowed to.
        waited: Option<Duration>,
    },
    /// The lease file is not one dagrun wrote.
    #[error("{path} is not a dagrun lease ({why}); if no run is using this lake, delete it")]
    Foreign {
        /// Where the file is.
        path: String,
        /// Why it is not a lease.
        why: String,
    },
    /// Reading or writing it failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The run was interrupted while waiting.
    #[error("interrupted while waiting for the lease on {0}")]
    Cancelled(String),
}

/// The lease of `runs_dir` as it stands, if there is one (`dagrun emr gc` reads it to tell a live
/// run's cluster from a dead one's).
pub async fn current(storage: &dyn Storage, runs_dir: &str) -> Result<Option<Holder>, LeaseError> {
    let path = join_path(runs_dir, LEASE_FILE);
    match storage.read(&path).await {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| LeaseError::Foreign { path, why: e.to_string() })
        }
        Err(e) if e.kind == StorageErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The lease file of a runs folder.
pub fn runs_lease(runs_dir: &str) -> String {
    join_path(runs_dir, LEASE_FILE)
}

/// One lease file to take, and the storage it is on.
#[derive(Clone)]
pub struct LeasePlace {
    /// Where the lease file is.
    pub path: String,
    /// The storage holding it.
    pub storage: Arc<dyn Storage>,
}

/// A lease this run took over from another holder.
#[derive(Debug, Clone)]
pub struct TakenOver {
    /// The lease file.
    pub path: String,
    /// Who held it.
    pub holder: Holder,
    /// Whether the holder was proven dead (else its lease had expired, and it may be frozen).
    pub proven_dead: bool,
}

struct HeldFile {
    storage: Arc<dyn Storage>,
    path: String,
    state: Mutex<Held>,
}

#[derive(Clone)]
struct Held {
    holder: Holder,
    version: Version,
}

/// A held lease on every folder of a lake, renewed in the background until [`Lease::release`].
pub struct Lease {
    files: Arc<Vec<HeldFile>>,
    renewer: JoinHandle<()>,
    /// Tells the renewer to stop between renewals (never in the middle of one: a renewal cut
    /// off after its write landed would leave this lease holding a stale version).
    stop: CancellationToken,
    took_over: Vec<TakenOver>,
    lost: CancellationToken,
    /// Who holds it instead, once it was lost.
    lost_to: Arc<Mutex<Option<String>>>,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// Takes every lease file of `places` for `me`, in their order (every run must use one order,
    /// [`crate::plan::Plan::lease_paths`]'s, so that two never wait on each other), waiting as
    /// `options` says. `cancel` stops a wait. Either all are taken, or none is kept.
    pub async fn acquire(
        places: Vec<LeasePlace>,
        me: Holder,
        options: &LeaseOptions,
        cancel: &CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let mut places = places;
        let mut seen = std::collections::HashSet::new();
        places.retain(|p| seen.insert(p.path.clone()));
        let started = tokio::time::Instant::now();
        let mut files: Vec<HeldFile> = Vec::with_capacity(places.len());
        let mut took_over = Vec::new();
        for place in places {
            match acquire_file(&place, &me, options, cancel, started).await {
                Ok((held, taken)) => {
                    took_over.extend(taken);
                    files.push(HeldFile { storage: place.storage, path: place.path, state: Mutex::new(held) });
                }
                Err(e) => {
                    for file in &files {
                        let version = file.state.lock().expect("lease").version.clone();
                        if let Err(e) = file.storage.delete_if(&file.path, &version).await {
                            warn!(lease = %file.path, error = %e, "could not give back a lease file");
                        }
                    }
                    return Err(e);
                }
            }
        }
        let files = Arc::new(files);
        let lost = CancellationToken::new();
        let lost_to = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(files.clone(), options.ttl, lost.clone(), lost_to.clone(), stop.clone()));
        Ok(Lease { files, renewer, stop, took_over, lost, lost_to, token: me.token, ttl: options.ttl })
    }

    /// The leases this one took over (their holders stopped renewing, or died on this machine):
    /// what they were writing may be left half-done.
    pub fn took_over(&self) -> &[TakenOver] {
        &self.took_over
    }

    /// Cancelled when the lease is lost (taken over after renewals failed for its whole length).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Who took the lease over, once it was lost.
    pub fn lost_to(&self) -> Option<String> {
        self.lost_to.lock().expect("lease").clone()
    }

    /// Where the lease files are, in the order they were taken.
    pub fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.path.as_str()).collect()
    }

    /// The check every write to the lake makes first: that this process still holds the lease.
    pub fn fence(&self) -> Arc<dyn Fence> {
        Arc::new(LeaseFence {
            places: self.files.iter().map(|f| (f.storage.clone(), f.path.clone())).collect(),
            token: self.token.clone(),
            lost: self.lost.clone(),
            lost_to: self.lost_to.clone(),
            margin: commit_margin(self.ttl),
        })
    }

    /// Stops renewing and gives the lease back (each file only if it is still ours).
    pub async fn release(self) -> Result<(), StorageError> {
        self.stop.cancel();
        let _ = self.renewer.await;
        if self.lost.is_cancelled() {
            return Ok(());
        }
        let mut first_error = None;
        for file in self.files.iter().rev() {
            let version = file.state.lock().expect("lease").version.clone();
            match file.storage.delete_if(&file.path, &version).await {
                Err(e) if e.kind == StorageErrorKind::Conflict => {
                    warn!(lease = %file.path, "the lease was no longer ours when the run ended");
                }
                Err(e) if e.kind == StorageErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
                Ok(()) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// How much of its length a lease must have left for a write to the lake to start: a quarter
/// (the renewal interval), at most 30 s.
fn commit_margin(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_secs(30))
}

/// Takes one lease file: creates it, takes it over when its holder is gone, or waits.
async fn acquire_file(
    place: &LeasePlace,
    me: &Holder,
    options: &LeaseOptions,
    cancel: &CancellationToken,
    started: tokio::time::Instant,
) -> Result<(Held, Option<TakenOver>), LeaseError> {
    let (storage, path) = (&place.storage, &place.path);
    let ttl_ms = options.ttl.as_millis() as u64;
    let mut announced = false;
    loop {
        let now = now_ms();
        let mut mine = me.clone();
        (mine.started_at_ms, mine.renewed_at_ms, mine.expires_at_ms) = (now, now, now + ttl_ms);
        match storage.create_new(path, to_json(&mine)).await {
            Ok(version) => return Ok((Held { holder: mine, version }, None)),
            Err(e) if e.kind == StorageErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let (bytes, version) = match storage.read_versioned(path).await {
            Ok(found) => found,
            // Released in between: try again at once.
            Err(e) if e.kind == StorageErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let holder: Holder = serde_json::from_slice(&bytes)
            .map_err(|e| LeaseError::Foreign { path: path.clone(), why: e.to_string() })?;
        if holder.token == me.token {
            // Our own create whose answer was lost and retried.
            return Ok((Held { holder, version }, None));
        }
        let proven_dead = !holder.expired(now) && holder.proven_dead();
        if holder.expired(now) || proven_dead {
            match storage.replace_if(path, to_json(&mine), &version).await {
                Ok(version) => {
                    let why = if proven_dead { "is no longer running on this machine" } else { "stopped renewing it" };
                    warn!(lease = %path, "took over the lease of a run that {why}: {}", holder.describe());
                    let taken = TakenOver { path: path.clone(), holder, proven_dead };
                    return Ok((Held { holder: mine, version }, Some(taken)));
                }
                Err(e) if matches!(e.kind, StorageErrorKind::Conflict | StorageErrorKind::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let waited = started.elapsed();
        match options.wait {
            Some(limit) if waited < limit => {
                if !announced {
                    info!(lease = %path, "waiting for the lake: {}", holder.describe());
                    announced = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(options.poll.min(limit - waited)) => {}
                    _ = cancel.cancelled() => return Err(LeaseError::Cancelled(path.clone())),
                }
            }
            _ => {
                return Err(LeaseError::Held {
                    path: path.clone(),
                    holder: Box::new(holder),
                    waited: options.wait.map(|_| waited),
                });
            }
        }
    }
}

/// Renews every lease file every quarter of the lease's length until stopped or lost.
async fn renew(
    files: Arc<Vec<HeldFile>>,
    ttl: Duration,
    lost: CancellationToken,
    lost_to: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
) {
    let every = (ttl / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        for file in files.iter() {
            if let Err(other) = renew_file(file, ttl).await {
                error!(lease = %file.path, "the lease on the lake was lost; now held by {other}");
                *lost_to.lock().expect("lease") = Some(other);
                lost.cancel();
                return;
            }
        }
    }
}

/// One renewal of one file; `Err` names who holds it instead once it is lost.
async fn renew_file(file: &HeldFile, ttl: Duration) -> Result<(), String> {
    let now = now_ms();
    let Held { mut holder, version } = file.state.lock().expect("lease").clone();
    (holder.renewed_at_ms, holder.expires_at_ms) = (now, now + ttl.as_millis() as u64);
    match file.storage.replace_if(&file.path, to_json(&holder), &version).await {
        Ok(version) => {
            *file.state.lock().expect("lease") = Held { holder, version };
            Ok(())
        }
        Err(e) if matches!(e.kind, StorageErrorKind::Conflict | StorageErrorKind::NotFound) => {
            Err(match file.storage.read_versioned(&file.path).await {
                Ok((bytes, _)) => serde_json::from_slice::<Holder>(&bytes)
                    .map_or_else(|_| "something that is not a dagrun lease".to_string(), |h| h.describe()),
                Err(_) => "nobody (the lease file is gone)".to_string(),
            })
        }
        Err(e) => {
            let expires = file.state.lock().expect("lease").holder.expires_at_ms;
            if now_ms() > expires {
                error!(lease = %file.path, error = %e, "the lease on the lake expired: it could not be renewed");
                return Err(format!("nobody: renewing failed ({e})"));
            }
            warn!(lease = %file.path, error = %e, "could not renew the lease; trying again");
            Ok(())
        }
    }
}

/// The fence of a held [`Lease`]: reads every lease file.
struct LeaseFence {
    places: Vec<(Arc<dyn Storage>, String)>,
    token: String,
    lost: CancellationToken,
    lost_to: Arc<Mutex<Option<String>>>,
    margin: Duration,
}

impl fmt::Debug for LeaseFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<&str> = self.places.iter().map(|(_, p)| p.as_str()).collect();
        write!(f, "LeaseFence({})", paths.join(", "))
    }
}

fn fenced(path: &str, why: String) -> StorageError {
    StorageError::new(
        StorageErrorKind::Fenced,
        Op::Checking,
        path,
        format!("this run no longer holds the lake's lease: {why}; nothing more is written"),
    )
}

#[async_trait]
impl Fence for LeaseFence {
    async fn check(&self) -> Result<(), StorageError> {
        if self.lost.is_cancelled() {
            let to = self.lost_to.lock().expect("lease").clone().unwrap_or_else(|| "another run".into());
            let path = self.places.first().map_or("", |(_, p)| p.as_str());
            return Err(fenced(path, format!("it was lost to {to}")));
        }
        for (storage, path) in &self.places {
            let holder = match storage.read_versioned(path).await {
                Ok((bytes, _)) => serde_json::from_slice::<Holder>(&bytes)
                    .map_err(|e| fenced(path, format!("the lease file is not a dagrun lease ({e})")))?,
                Err(e) if e.kind == StorageErrorKind::NotFound => {
                    return Err(fenced(path, "the lease file is gone".into()));
                }
                Err(e) => return Err(e),
            };
            if holder.token != self.token {
                return Err(fenced(path, format!("it is held by {}", holder.describe())));
            }
            let left = Duration::from_millis(holder.expires_at_ms.saturating_sub(now_ms()));
            if left < self.margin {
                return Err(fenced(
                    path,
                    format!(
                        "it expires in {} ms, less than the {} ms a write may take (its renewals are failing)",
                        left.as_millis(),
                        self.margin.as_millis()
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn to_json(holder: &Holder) -> Vec<u8> {
    serde_json::to_vec_pretty(holder).expect("a lease serializes")
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `2026-12-01 22:08:56 UTC` for epoch milliseconds.
pub(crate) fn format_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
}

/// Whether a process with this id exists on this host.
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::storage::LocalStorage;

    fn storage() -> Arc<dyn Storage> {
        Arc::new(LocalStorage)
    }

    fn places(dir: &str) -> Vec<LeasePlace> {
        vec![LeasePlace { path: join_path(dir, LEASE_FILE), storage: storage() }]
    }

    fn options() -> LeaseOptions {
        LeaseOptions { ttl: Duration::from_secs(60), wait: None, poll: Duration::from_millis(20) }
    }

    async fn take(dir: &str, run: &str, token: &str, options: &LeaseOptions) -> Result<Lease, LeaseError> {
        Lease::acquire(places(dir), Holder::this_process(run, token, "p"), options, &CancellationToken::new()).await
    }

    #[tokio::test]
    async fn a_second_run_is_refused_and_named_the_holder_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("_dagrun").display().to_string();
        let cancel = CancellationToken::new();
        let first = Holder::this_process("r1", "tok1", "sparkify");
        let lease = Lease::acquire(places(&runs), first, &options(), &cancel).await.unwrap();
        let second = Holder::this_process("r2", "tok2", "sparkify");
        let err = Lease::acquire(places(&runs), second.clone(), &options(), &cancel).await.err().unwrap();
        let LeaseError::Held { holder, .. } = &err else { panic!("{err}") };
        assert_eq!((holder.run_id.as_str(), holder.pid), ("r1", std::process::id()));
        assert!(err.to_string().contains("run r1 of pipeline `sparkify` on host"), "{err}");
        lease.release().await.unwrap();
        let lease = Lease::acquire(places(&runs), second, &options(), &cancel).await.unwrap();
        lease.release().await.unwrap();
        assert!(!dir.path().join("_dagrun").join(LEASE_FILE).exists());
    }

    #[tokio::test]
    async fn a_lake_of_several_folders_is_taken_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a").display().to_string(), dir.path().join("b").display().to_string());
        let both = |token: &str| {
            let mut p = places(&a);
            p.extend(places(&b));
            p.extend(places(&a));
            (p, Holder::this_process(token, token, "p"))
        };
        let cancel = CancellationToken::new();
        // Another pipeline holds only `b`.
        let other = take(&b, "other", "o", &options()).await.unwrap();
        let (p, me) = both("me");
        let err = Lease::acquire(p, me, &options(), &cancel).await.err().unwrap();
        assert!(matches!(err, LeaseError::Held { ref path, .. } if path.starts_with(&b)), "{err}");
        assert!(!Path::new(&join_path(&a, LEASE_FILE)).exists(), "the file taken first is given back");
        other.release().await.unwrap();
        let (p, me) = both("me");
        let lease = Lease::acquire(p, me, &options(), &cancel).await.unwrap();
        assert_eq!(lease.paths().len(), 2, "one file per folder: {:?}", lease.paths());
        lease.release().await.unwrap();
        assert!(!Path::new(&join_path(&a, LEASE_FILE)).exists() && !Path::new(&join_path(&b, LEASE_FILE)).exists());
    }

    #[tokio::test]
    async fn a_waiting_run_gets_the_lease_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().display().to_string();
        let lease = take(&runs, "r1", "a", &options()).await.unwrap();
        let waiting = {
            let runs = runs.clone();
            tokio::spawn(async move {
                let options = LeaseOptions { wait: Some(Duration::from_secs(30)), ..options() };
                take(&runs, "r2", "b", &options).await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        lease.release().await.unwrap();
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(second.files[0].state.lock().unwrap().holder.run_id, "r2");
        second.release().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_is_fenced_and_learns_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().display().to_string();
        let short = LeaseOptions { ttl: Duration::from_millis(200), ..options() };
        let first = take(&runs, "r1", "a", &short).await.unwrap();
        let fence = first.fence();
        // The holder stops renewing (as if frozen) and its lease runs out: it may no longer write.
        first.renewer.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = fence.check().await.unwrap_err();
        assert_eq!(err.kind, StorageErrorKind::Fenced);
        assert!(err.to_string().contains("(its renewals are failing)"), "{err}");
        let second = take(&runs, "r2", "b", &short).await.unwrap();
        assert!(!second.took_over()[0].proven_dead, "an expired holder may be frozen, not dead");
        let err = fence.check().await.unwrap_err();
        assert!(err.to_string().contains("it is held by run r2 of pipeline `p`"), "{err}");
        second.fence().check().await.unwrap();
        // The first one's next renewal finds the lease changed.
        let again = tokio::spawn(renew(
            first.files.clone(),
            Duration::from_millis(200),
            first.lost.clone(),
            first.lost_to.clone(),
            CancellationToken::new(),
        ));
        tokio::time::timeout(Duration::from_secs(5), first.lost.cancelled()).await.unwrap();
        again.await.unwrap();
        assert!(first.lost_to().unwrap().starts_with("run r2 of pipeline `p`"), "{:?}", first.lost_to());
        assert!(fence.check().await.unwrap_err().to_string().contains("it was lost to run r2"));
        first.release().await.unwrap();
        assert!(dir.path().join(LEASE_FILE).exists(), "the loser must not delete the winner's lease");
        second.release().await.unwrap();
    }

    fn planted(dir: &Path, holder: &Holder) {
        let mut holder = holder.clone();
        holder.expires_at_ms = now_ms() + 3_600_000;
        std::fs::write(dir.join(LEASE_FILE), to_json(&holder)).unwrap();
    }

    #[tokio::test]
    async fn only_a_holder_proven_dead_on_this_machine_is_taken_over_before_its_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().display().to_string();
        let Some(mine) = ProcessIdentity::of_this_process() else {
            assert!(std::env::var_os("DAGRUN_REQUIRE_ALL").is_none(), "this machine cannot prove a process gone");
            return;
        };
        let mut dead = Holder::this_process("r0", "gone", "p");
        dead.pid = 0x7fff_fff0;
        planted(dir.path(), &dead);
        let lease = take(&runs, "r1", "a", &options()).await.unwrap();
        assert!(lease.took_over()[0].proven_dead);
        lease.release().await.unwrap();

        // A pid of this namespace that names a process started at another time: reused.
        let mut reused = Holder::this_process("r0", "gone", "p");
        reused.pid = 1;
        reused.identity = Some(ProcessIdentity { start_ticks: u64::MAX, ..mine.clone() });
        planted(dir.path(), &reused);
        take(&runs, "r1", "a", &options()).await.unwrap().release().await.unwrap();

        // Proves nothing: another host, another boot, another pid namespace (a container with the
        // same host name), or no identity at all (an older dagrun, another system).
        let other_host = Holder { host: "another-host".into(), ..dead.clone() };
        let other_boot =
            Holder { identity: Some(ProcessIdentity { boot_id: "x".into(), ..mine.clone() }), ..dead.clone() };
        let other_ns =
            Holder { identity: Some(ProcessIdentity { pid_ns: "pid:[1]".into(), ..mine.clone() }), ..dead.clone() };
        let unknown = Holder { identity: None, ..dead.clone() };
        for holder in [other_host, other_boot, other_ns, unknown] {
            planted(dir.path(), &holder);
            let err = take(&runs, "r1", "a", &options()).await.err().unwrap();
            assert!(matches!(err, LeaseError::Held { .. }), "{holder:?}: {err}");
        }
        // And a live process of this namespace is alive.
        let alive = Holder::this_process("r0", "other-token", "p");
        assert!(!alive.proven_dead());
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_lease_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEASE_FILE), "my notes").unwrap();
        let runs = dir.path().display().to_string();
        let err = take(&runs, "r1", "a", &options()).await.err().unwrap();
        assert!(matches!(err, LeaseError::Foreign { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join(LEASE_FILE)).unwrap(), "my notes");
    }

    #[test]
    fn this_process_reads_its_own_start_time() {
        if let Some(me) = ProcessIdentity::of_this_process() {
            assert_eq!(proc_stat(&std::process::id().to_string()).unwrap(), Some((std::process::id(), me.start_ticks)));
            assert!(me.pid_ns.starts_with("pid:["), "{}", me.pid_ns);
        }
        assert_eq!(proc_stat("999999999").unwrap(), None);
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_543_622_400_000), "2018-12-01 00:00:00 UTC");
    }
}
