//! The lease on a lake: one run at a time writes the tables of a runs folder. Before its first
//! write a run creates `<runs>/lease.json` (S3 `If-None-Match: *`, on disk an exclusive create),
//! naming itself (run id, a token of this process, host, pid) with an expiry, and renews it while
//! it lives. A second run waits (`--wait-for-lock`) or stops, naming the holder. A lease whose
//! holder died is taken over once it expires, or at once when the holder was a process of this
//! host that no longer exists. Every change after the create is conditional on the version last
//! seen (S3 `If-Match`), so two runs can never both believe they hold it.
//!
//! Clocks: expiry is wall-clock time written by the holder and read by the others, so hosts must
//! agree on the time to well within the lease's length (a few seconds against minutes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::path::join_path;
use crate::storage::{Storage, StorageError, StorageErrorKind, Version};

/// The lease's file name in the runs folder.
pub(crate) const LEASE_FILE: &str = "lease.json";
/// How long a lease lasts without renewal, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// What a lease says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The run's id.
    pub run_id: String,
    /// Unique to the holding process: two processes with one run id are still told apart.
    pub token: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The host the process runs on.
    pub host: String,
    /// The process's id on that host.
    pub pid: u32,
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

    /// The holder was a process of this host that is gone: its lease needs no waiting for.
    fn dead_here(&self) -> bool {
        self.host == host_name() && self.pid != std::process::id() && !process_alive(self.pid)
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

/// A held lease, renewed in the background until [`Lease::release`].
pub struct Lease {
    storage: Arc<dyn Storage>,
    path: String,
    state: Arc<Mutex<Held>>,
    renewer: JoinHandle<()>,
    /// Tells the renewer to stop between renewals (never in the middle of one: a renewal cut
    /// off after its write landed would leave this lease holding a stale version).
    stop: CancellationToken,
    /// Whom this lease was taken over from, if anyone.
    took_over: Option<String>,
    lost: CancellationToken,
    /// Who holds it instead, once it was lost.
    lost_to: Arc<Mutex<Option<String>>>,
}

struct Held {
    holder: Holder,
    version: Version,
}

impl Lease {
    /// Takes the lease of `runs_dir` for `me`, waiting as `options` says. `cancel` stops a wait.
    pub async fn acquire(
        storage: Arc<dyn Storage>,
        runs_dir: &str,
        me: Holder,
        options: &LeaseOptions,
        cancel: &CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let path = join_path(runs_dir, LEASE_FILE);
        let ttl_ms = options.ttl.as_millis() as u64;
        let started = tokio::time::Instant::now();
        let mut announced = false;
        loop {
            let now = now_ms();
            let mut mine = me.clone();
            (mine.started_at_ms, mine.renewed_at_ms, mine.expires_at_ms) = (now, now, now + ttl_ms);
            let mut took_over = None;
            let taken = match storage.create_new(&path, to_json(&mine)).await {
                Ok(version) => Some((mine, version)),
                Err(e) if e.kind == StorageErrorKind::AlreadyExists => {
                    let (bytes, version) = match storage.read_versioned(&path).await {
                        Ok(found) => found,
                        // Released in between: try again at once.
                        Err(e) if e.kind == StorageErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let holder: Holder = serde_json::from_slice(&bytes)
                        .map_err(|e| LeaseError::Foreign { path: path.clone(), why: e.to_string() })?;
                    if holder.token == me.token {
                        // Our own create whose answer was lost and retried.
                        Some((holder, version))
                    } else if holder.expired(now) || holder.dead_here() {
                        match storage.replace_if(&path, to_json(&mine), &version).await {
                            Ok(version) => {
                                let why = if holder.expired(now) {
                                    "stopped renewing it"
                                } else {
                                    "is no longer running on this host"
                                };
                                warn!(lease = %path, "took over the lease of a run that {why}: {}", holder.describe());
                                took_over = Some(holder.describe());
                                Some((mine, version))
                            }
                            Err(e) if matches!(e.kind, StorageErrorKind::Conflict | StorageErrorKind::NotFound) => {
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        let waited = started.elapsed();
                        match options.wait {
                            Some(limit) if waited < limit => {
                                if !announced {
                                    info!(lease = %path, "waiting for the lake: {}", holder.describe());
                                    announced = true;
                                }
                                tokio::select! {
                                    _ = tokio::time::sleep(options.poll.min(limit - waited)) => {}
                                    _ = cancel.cancelled() => return Err(LeaseError::Cancelled(path)),
                                }
                                continue;
                            }
                            _ => {
                                return Err(LeaseError::Held {
                                    path,
                                    holder: Box::new(holder),
                                    waited: options.wait.map(|_| waited),
                                });
                            }
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let (holder, version) = taken.expect("every other branch continues or returns");
            let mut lease = Lease::hold(storage, path, holder, version, options.ttl);
            lease.took_over = took_over;
            return Ok(lease);
        }
    }

    fn hold(storage: Arc<dyn Storage>, path: String, holder: Holder, version: Version, ttl: Duration) -> Lease {
        let state = Arc::new(Mutex::new(Held { holder, version }));
        let lost = CancellationToken::new();
        let lost_to = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            storage.clone(),
            path.clone(),
            state.clone(),
            ttl,
            lost.clone(),
            lost_to.clone(),
            stop.clone(),
        ));
        Lease { storage, path, state, renewer, stop, lost, lost_to, took_over: None }
    }

    /// The run whose lease this one took over (it stopped renewing, or died on this host): what
    /// it was writing may be left half-done.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
    }

    /// Cancelled when the lease is lost (taken over after renewals failed for its whole length).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Who took the lease over, once it was lost.
    pub fn lost_to(&self) -> Option<String> {
        self.lost_to.lock().expect("lease").clone()
    }

    /// Where the lease lives.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Stops renewing and gives the lease back (only if it is still ours).
    pub async fn release(self) -> Result<(), StorageError> {
        self.stop.cancel();
        let _ = self.renewer.await;
        if self.lost.is_cancelled() {
            return Ok(());
        }
        let version = self.state.lock().expect("lease").version.clone();
        match self.storage.delete_if(&self.path, &version).await {
            Err(e) if e.kind == StorageErrorKind::Conflict => {
                warn!(lease = %self.path, "the lease was no longer ours when the run ended");
                Ok(())
            }
            Err(e) if e.kind == StorageErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Renews the lease every quarter of its length until aborted or lost.
async fn renew(
    storage: Arc<dyn Storage>,
    path: String,
    state: Arc<Mutex<Held>>,
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
        let now = now_ms();
        let (mut holder, version) = {
            let held = state.lock().expect("lease");
            (held.holder.clone(), held.version.clone())
        };
        (holder.renewed_at_ms, holder.expires_at_ms) = (now, now + ttl.as_millis() as u64);
        match storage.replace_if(&path, to_json(&holder), &version).await {
            Ok(version) => *state.lock().expect("lease") = Held { holder, version },
            Err(e) if matches!(e.kind, StorageErrorKind::Conflict | StorageErrorKind::NotFound) => {
                let other = match storage.read_versioned(&path).await {
                    Ok((bytes, _)) => serde_json::from_slice::<Holder>(&bytes)
                        .map_or_else(|_| "something that is not a dagrun lease".to_string(), |h| h.describe()),
                    Err(_) => "nobody (the lease file is gone)".to_string(),
                };
                error!(lease = %path, "the lease on the lake was lost; now held by {other}");
                *lost_to.lock().expect("lease") = Some(other);
                lost.cancel();
                return;
            }
            Err(e) => {
                let expires = state.lock().expect("lease").holder.expires_at_ms;
                if now_ms() > expires {
                    error!(lease = %path, error = %e, "the lease on the lake expired: it could not be renewed");
                    *lost_to.lock().expect("lease") = Some(format!("nobody: renewing failed ({e})"));
                    lost.cancel();
                    return;
                }
                warn!(lease = %path, error = %e, "could not renew the lease; trying again");
            }
        }
    }
}

fn to_json(holder: &Holder) -> Vec<u8> {
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
    use super::*;
    use crate::storage::LocalStorage;

    fn storage() -> Arc<dyn Storage> {
        Arc::new(LocalStorage)
    }

    fn options() -> LeaseOptions {
        LeaseOptions { ttl: Duration::from_secs(60), wait: None, poll: Duration::from_millis(20) }
    }

    #[tokio::test]
    async fn a_second_run_is_refused_and_named_the_holder_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("_dagrun").display().to_string();
        let cancel = CancellationToken::new();
        let first = Holder::this_process("r1", "tok1", "sparkify");
        let lease = Lease::acquire(storage(), &runs, first, &options(), &cancel).await.unwrap();
        let second = Holder::this_process("r2", "tok2", "sparkify");
        let err = Lease::acquire(storage(), &runs, second.clone(), &options(), &cancel).await.err().unwrap();
        let LeaseError::Held { holder, .. } = &err else { panic!("{err}") };
        assert_eq!((holder.run_id.as_str(), holder.pid), ("r1", std::process::id()));
        assert!(err.to_string().contains("run r1 of pipeline `sparkify` on host"), "{err}");
        lease.release().await.unwrap();
        let lease = Lease::acquire(storage(), &runs, second, &options(), &cancel).await.unwrap();
        lease.release().await.unwrap();
        assert!(!dir.path().join("_dagrun").join(LEASE_FILE).exists());
    }

    #[tokio::test]
    async fn a_waiting_run_gets_the_lease_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().display().to_string();
        let cancel = CancellationToken::new();
        let lease =
            Lease::acquire(storage(), &runs, Holder::this_process("r1", "a", "p"), &options(), &cancel).await.unwrap();
        let waiting = {
            let runs = runs.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let options = LeaseOptions { wait: Some(Duration::from_secs(30)), ..options() };
                Lease::acquire(storage(), &runs, Holder::this_process("r2", "b", "p"), &options, &cancel).await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        lease.release().await.unwrap();
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(second.state.lock().unwrap().holder.run_id, "r2");
        second.release().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_learns_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().display().to_string();
        let cancel = CancellationToken::new();
        let short = LeaseOptions { ttl: Duration::from_millis(200), ..options() };
        let first =
            Lease::acquire(storage(), &runs, Holder::this_process("r1", "a", "p"), &short, &cancel).await.unwrap();
        // The holder stops renewing (as if frozen) and its lease runs out.
        first.renewer.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second =
            Lease::acquire(storage(), &runs, Holder::this_process("r2", "b", "p"), &short, &cancel).await.unwrap();
        // The first one's next renewal finds the lease changed.
        let again = tokio::spawn(renew(
            storage(),
            first.path.clone(),
            first.state.clone(),
            Duration::from_millis(200),
            first.lost.clone(),
            first.lost_to.clone(),
            CancellationToken::new(),
        ));
        tokio::time::timeout(Duration::from_secs(5), first.lost.cancelled()).await.unwrap();
        again.await.unwrap();
        assert!(first.lost_to().unwrap().starts_with("run r2 of pipeline `p`"), "{:?}", first.lost_to());
        first.release().await.unwrap();
        assert!(dir.path().join(LEASE_FILE).exists(), "the loser must not delete the winner's lease");
        second.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_of_a_dead_process_on_this_host_is_taken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().display().to_string();
        let mut dead = Holder::this_process("r0", "gone", "p");
        dead.pid = 0x7fff_fff0;
        dead.expires_at_ms = now_ms() + 3_600_000;
        std::fs::write(dir.path().join(LEASE_FILE), to_json(&dead)).unwrap();
        let cancel = CancellationToken::new();
        let lease =
            Lease::acquire(storage(), &runs, Holder::this_process("r1", "a", "p"), &options(), &cancel).await.unwrap();
        lease.release().await.unwrap();
        // A holder on another host is waited for until it expires.
        let mut elsewhere = dead.clone();
        elsewhere.host = "another-host".into();
        std::fs::write(dir.path().join(LEASE_FILE), to_json(&elsewhere)).unwrap();
        let err = Lease::acquire(storage(), &runs, Holder::this_process("r1", "a", "p"), &options(), &cancel)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, LeaseError::Held { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_lease_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEASE_FILE), "my notes").unwrap();
        let cancel = CancellationToken::new();
        let runs = dir.path().display().to_string();
        let err = Lease::acquire(storage(), &runs, Holder::this_process("r1", "a", "p"), &options(), &cancel)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, LeaseError::Foreign { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join(LEASE_FILE)).unwrap(), "my notes");
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_543_622_400_000), "2018-12-01 00:00:00 UTC");
    }
}
