//! The daemon: one per user, started on demand. Owns start-up at the user's paths (private
//! socket directory, pid-file lock, stale-socket recovery, readiness signal) and the
//! composition root, `run`, which assembles what `setup.rs` describes and serves it.

mod broker;
mod challenge;
mod claims;
pub mod clock;
mod crashpoint;
mod discovery;
mod endpoint;
mod gits;
mod loopback;
mod recent;
mod schedule;
mod server;
pub(crate) mod setup;
mod sources;
pub mod store;

use setup::http_client;
pub use setup::{DaemonError, Settings, Stores};

use crate::paths;
use clock::Clock;
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Raises the soft limit on open files to the hard limit: each waiting client holds a
/// connection, and a build farm's burst can exceed the usual soft limit of 1024.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            // An unlimited hard limit cannot be the soft one (the kernel caps open files at
            // fs.nr_open, 1,048,576 by default).
            let target = lim.rlim_max.min(1 << 20);
            if lim.rlim_cur < target {
                lim.rlim_cur = target;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Served until asked to stop.
    Stopped,
    /// Another daemon holds the lock: nothing to do.
    AlreadyRunning,
}

/// Creates the socket directory 0700, or checks that an existing one is ours and private.
pub fn private_runtime_dir(dir: &Path) -> Result<(), DaemonError> {
    let setup = |what: &str, e: std::io::Error| {
        DaemonError::Setup(format!("{what} {}: {e}", dir.display()))
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| setup("cannot create", e))?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| setup("cannot set permissions of", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(setup("cannot create", e)),
    }
    match paths::check_private_dir(dir).map_err(|e| setup("cannot inspect", e))? {
        Ok(()) => Ok(()),
        Err(paths::NotPrivate::NotOurs) => Err(DaemonError::Setup(format!(
            "{} is not a directory owned by you (uid {}); remove it and try again",
            dir.display(),
            unsafe { libc::geteuid() }
        ))),
        Err(paths::NotPrivate::OpenToOthers(mode)) => Err(DaemonError::Setup(format!(
            "{} is accessible to other users (mode {mode:o}); run: chmod 700 {}",
            dir.display(),
            dir.display()
        ))),
    }
}

/// Takes the pid-file lock; `None` when another daemon holds it.
fn lock_pid_file(path: &Path) -> Result<Option<File>, DaemonError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| DaemonError::Setup(format!("cannot open {}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(DaemonError::Setup(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Listens on `path`, owner-only. The caller has made sure no other daemon uses it.
pub fn bind(path: &Path) -> Result<Listener, DaemonError> {
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| DaemonError::Setup(format!("bad socket path {}: {e}", path.display())))?;
    ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(|e| DaemonError::Setup(format!("cannot listen on {}: {e}", path.display())))
}

/// The daemon's composition root: serves `listener` with tokens kept in `stores`, on `clock`'s
/// time, until `shutdown` is cancelled (from outside, or by a client's `stop`). Reads no
/// environment and no path of its own: tests run it in-process on a socket of theirs.
pub async fn run(
    listener: Listener,
    stores: Stores,
    settings: Settings,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    Daemon::new(stores, settings, clock, shutdown)?
        .serve(listener)
        .await;
    Ok(())
}

/// A daemon put together, not yet serving: everything that can fail at start-up has.
pub struct Daemon {
    broker: Arc<broker::Broker>,
    gits: Arc<gits::Gits>,
    shutdown: CancellationToken,
}

impl Daemon {
    pub fn new(
        stores: Stores,
        settings: Settings,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Result<Daemon, DaemonError> {
        endpoint::require_https(
            "the authority (authority_host, or AZURE_AUTHORITY_HOST)",
            &settings.config.authority(),
        )
        .map_err(|e| DaemonError::Setup(e.to_string()))?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            store = %stores.secrets.describe(),
            accounts = stores.records.accounts.len(),
            "daemon started"
        );
        let http = http_client(&settings.config)?;
        let gits = Arc::new(gits::Gits::new(settings.config.auth));
        let broker = broker::Broker::new(settings, http, stores, clock, shutdown.clone());
        Ok(Daemon {
            broker,
            gits,
            shutdown,
        })
    }

    /// Serves until shutdown.
    pub async fn serve(self, listener: Listener) {
        server::serve(listener, self.broker, self.gits, self.shutdown).await;
        tracing::info!("daemon stopped");
    }
}

/// Starts the user's daemon at the usual paths and runs it until `shutdown` is cancelled or a
/// client asks it to stop: checks the socket directory, takes the pid-file lock, recovers a
/// dead daemon's socket and temporaries, opens the stores. `ready` gets one line once the
/// socket accepts connections: `ready …`, or `busy …` when another daemon already runs.
pub async fn start(
    settings: Settings,
    mut ready: impl Write,
    shutdown: CancellationToken,
) -> Result<Exit, DaemonError> {
    let dir = paths::runtime_dir();
    private_runtime_dir(&dir)?;
    let Some(mut pid_file) = lock_pid_file(&paths::pid_path())? else {
        let _ = writeln!(ready, "busy: another daemon is running");
        return Ok(Exit::AlreadyRunning);
    };
    // We hold the lock, so a socket file left here belongs to a daemon that died.
    let socket = paths::socket_path();
    match fs::remove_file(&socket) {
        Ok(()) => tracing::info!(path = %socket.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DaemonError::Setup(format!(
                "cannot remove {}: {e}",
                socket.display()
            )));
        }
    }
    let listener = bind(&socket)?;
    pid_file.set_len(0).ok();
    let _ = writeln!(pid_file, "{}", std::process::id());

    let data_dir = paths::data_dir();
    // We hold the lock: a half-written store file beside the real one is a dead daemon's.
    store::remove_stale_temporaries(&data_dir);
    let stores = Stores::open(&settings.config, data_dir).await?;
    let store_kind = stores.secrets.kind();
    let daemon = Daemon::new(stores, settings, Clock::system(), shutdown);
    let daemon = match daemon {
        Ok(d) => d,
        Err(e) => {
            let _ = fs::remove_file(&socket);
            return Err(e);
        }
    };
    tracing::info!(socket = %socket.display(), "listening");
    let _ = writeln!(
        ready,
        "ready: pid {} store {store_kind}",
        std::process::id()
    );
    let _ = ready.flush();
    drop(ready);
    daemon.serve(listener).await;
    // Remove the socket before the lock goes, so the next daemon never sees ours.
    let _ = fs::remove_file(&socket);
    drop(pid_file);
    Ok(Exit::Stopped)
}
