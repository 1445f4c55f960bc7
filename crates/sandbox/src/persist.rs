//! Crash-safe state files of `azml-operator sandbox`.
//!
//! Every file is replaced atomically: the new content goes to a temporary file in the same directory (created with
//! its final mode, so a file holding secrets is never readable by others, not even for a moment), is fsynced, and
//! is renamed over the old file; then the directory is fsynced. A crash at any point (`kill -9`, power loss) leaves
//! either the old or the new file, never a torn one.
//!
//! [`StateWriter`] keeps a file in line with an in-memory store: a background task wakes when the store reports a
//! change, takes a snapshot, and writes it unless it equals the last one written. Changes arriving while it writes
//! are coalesced into the next write, and writes are at least `min_interval` apart, so a burst of changes costs one
//! or two writes and request handlers never wait for the disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Who may read a state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Mode 0600: the file holds secrets (keys, client secrets, the CA's private key, Kubernetes Secrets).
    Private,
    /// Mode 0644: nothing secret (CA certificate, ports, kubeconfig without credentials).
    Public,
}

impl Visibility {
    #[cfg(unix)]
    fn mode(self) -> u32 {
        match self {
            Visibility::Private => 0o600,
            Visibility::Public => 0o644,
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes` atomically and durably (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8], visibility: Visibility) -> io::Result<()> {
    let tmp = temp_path(path);
    // A temporary file left by a crash is garbage: its content never became the state.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(visibility.mode());
    }
    #[cfg(not(unix))]
    let _ = visibility;
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path);
    Ok(())
}

/// Makes the rename durable. Best effort: not every platform can open a directory for syncing.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Creates the state directory (mode 0700 when it is new: it holds secrets).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// A snapshot of a store as the bytes of its state file.
pub type SnapshotFn = Arc<dyn Fn() -> Result<Vec<u8>, String> + Send + Sync>;

/// Keeps one state file in line with a store (see the module docs).
pub struct StateWriter {
    path: PathBuf,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StateWriter {
    /// Starts the writer. `changed` is notified by the store on every change; the file is written once right away
    /// (so it exists from the start) and then after each change.
    pub fn spawn(
        path: PathBuf,
        visibility: Visibility,
        changed: Arc<Notify>,
        snapshot: SnapshotFn,
        min_interval: Duration,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(path.clone(), visibility, changed, snapshot, min_interval, stop.clone()));
        StateWriter { path, stop, task: Some(task) }
    }

    /// Writes the latest state one last time and stops.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            warn!(path = %self.path.display(), error = %e, "the state writer ended abnormally");
        }
    }
}

impl Drop for StateWriter {
    /// A writer dropped without [`StateWriter::finish`] (e.g. a start that failed half-way) still writes the
    /// latest state once, in the background, and ends.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(
    path: PathBuf,
    visibility: Visibility,
    changed: Arc<Notify>,
    snapshot: SnapshotFn,
    min_interval: Duration,
    stop: CancellationToken,
) {
    let mut last: Option<Arc<Vec<u8>>> = None;
    let mut ok = write_if_changed(&path, visibility, &snapshot, &mut last).await;
    loop {
        // Writes are at least `min_interval` apart: changes meanwhile are coalesced into the next one.
        tokio::select! {
            () = tokio::time::sleep(min_interval) => {}
            () = stop.cancelled() => {}
        }
        // A failed write is retried after the interval even if nothing changes.
        if ok && !stop.is_cancelled() {
            tokio::select! {
                () = changed.notified() => {}
                () = stop.cancelled() => {}
            }
        }
        // Read before the write: a stop that arrives while a snapshot is being written may postdate that
        // snapshot, so the loop goes round once more and the final write takes a snapshot after the stop.
        let stopping = stop.is_cancelled();
        ok = write_if_changed(&path, visibility, &snapshot, &mut last).await;
        if stopping {
            if !ok {
                // One more attempt for the final state; a second failure is logged.
                write_if_changed(&path, visibility, &snapshot, &mut last).await;
            }
            return;
        }
    }
}

/// Snapshots and writes (off the async threads) unless the snapshot equals the last write. False on failure.
async fn write_if_changed(
    path: &Path,
    visibility: Visibility,
    snapshot: &SnapshotFn,
    last: &mut Option<Arc<Vec<u8>>>,
) -> bool {
    let (path_owned, snapshot, previous) = (path.to_path_buf(), snapshot.clone(), last.clone());
    let outcome = tokio::task::spawn_blocking(move || -> Result<Option<Arc<Vec<u8>>>, String> {
        let bytes = snapshot()?;
        if previous.as_deref() == Some(&bytes) {
            return Ok(None);
        }
        write_atomic(&path_owned, &bytes, visibility).map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(bytes)))
    })
    .await;
    match outcome {
        Ok(Ok(Some(bytes))) => {
            debug!(path = %path.display(), bytes = bytes.len(), "state saved");
            *last = Some(bytes);
            true
        }
        Ok(Ok(None)) => true,
        Ok(Err(e)) => {
            warn!(path = %path.display(), error = %e, "cannot save the sandbox state; retrying");
            false
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the state snapshot failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_a_crashed_write_leaves_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"{\"v\":1}", Visibility::Private).unwrap();
        // A crash in the middle of the next write leaves a torn temporary file; the state file is untouched and
        // the next write discards the leftover.
        std::fs::write(temp_path(&path), b"{\"v\":2, \"tor").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"v\":1}");
        write_atomic(&path, b"{\"v\":3}", Visibility::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"v\":3}");
        assert!(!temp_path(&path).exists());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_created_0600_even_when_replacing_a_readable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("azure-state.json");
        std::fs::write(&path, b"old").unwrap();
        assert_ne!(mode(&path), 0o600);
        write_atomic(&path, b"new", Visibility::Private).unwrap();
        assert_eq!(mode(&path), 0o600);
        let public = dir.path().join("sandbox.json");
        write_atomic(&public, b"{}", Visibility::Public).unwrap();
        assert_eq!(mode(&public) & 0o077, mode(&public) & 0o044, "a public file is at most world-readable");
    }

    #[tokio::test]
    async fn the_writer_saves_on_start_on_change_and_on_finish_and_skips_unchanged_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let value = Arc::new(std::sync::Mutex::new(1u32));
        let snapshots = Arc::new(AtomicUsize::new(0));
        let (v, n) = (value.clone(), snapshots.clone());
        let snapshot: SnapshotFn = Arc::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(format!("{}", v.lock().map(|g| *g).unwrap_or(0)).into_bytes())
        });
        let changed = Arc::new(Notify::new());
        let writer =
            StateWriter::spawn(path.clone(), Visibility::Private, changed.clone(), snapshot, Duration::from_millis(10));
        let read = || std::fs::read_to_string(&path).unwrap_or_default();
        wait_for(|| read() == "1").await;
        *value.lock().unwrap() = 2;
        changed.notify_one();
        wait_for(|| read() == "2").await;
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        // A notification without a change snapshots but does not rewrite the file.
        let before = snapshots.load(Ordering::SeqCst);
        changed.notify_one();
        wait_for(|| snapshots.load(Ordering::SeqCst) > before).await;
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        // The last change is written on finish even without a notification.
        *value.lock().unwrap() = 3;
        writer.finish().await;
        assert_eq!(read(), "3");
    }

    #[tokio::test]
    async fn a_finish_during_a_write_still_saves_the_state_as_it_is_at_the_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let value = Arc::new(std::sync::Mutex::new(1u32));
        let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let snapshots = Arc::new(AtomicUsize::new(0));
        let (v, s, n) = (value.clone(), slow.clone(), snapshots.clone());
        let snapshot: SnapshotFn = Arc::new(move || {
            let bytes = format!("{}", v.lock().map(|g| *g).unwrap_or(0)).into_bytes();
            n.fetch_add(1, Ordering::SeqCst);
            if s.load(Ordering::SeqCst) {
                // The snapshot is taken; the write is still running when the test changes the state and finishes.
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(bytes)
        });
        let changed = Arc::new(Notify::new());
        let writer =
            StateWriter::spawn(path.clone(), Visibility::Private, changed.clone(), snapshot, Duration::from_millis(1));
        let read = || std::fs::read_to_string(&path).unwrap_or_default();
        wait_for(|| read() == "1").await;
        slow.store(true, Ordering::SeqCst);
        *value.lock().unwrap() = 2;
        let before = snapshots.load(Ordering::SeqCst);
        changed.notify_one();
        wait_for(|| snapshots.load(Ordering::SeqCst) > before).await;
        *value.lock().unwrap() = 3;
        writer.finish().await;
        assert_eq!(read(), "3", "the state changed after the snapshot being written must still be saved");
    }

    async fn wait_for(mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "condition not reached");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
