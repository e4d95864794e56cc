//! The daemon: one per user, started on demand. Owns start-up (private socket directory,
//! pid-file lock, stale-socket recovery, readiness signal), the HTTP client, and shutdown.

mod broker;
mod challenge;
mod claims;
mod crashpoint;
mod discovery;
mod endpoint;
mod gits;
mod loopback;
mod recent;
mod schedule;
mod server;
mod sources;
pub mod store;

use crate::config::Config;
use crate::paths;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

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

/// An error and its causes on one line (reqwest's top-level message alone hides the cause).
/// reqwest names URLs in its errors, never request bodies.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot open the OS keyring (store = \"keyring\" in the configuration): {0}")]
    Store(store::StoreError),
    #[error("cannot read the account records: {0}")]
    Records(store::StoreError),
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

/// The daemon's one HTTP client: OS trust store (and `SSL_CERT_FILE` for a service), plus the
/// configuration's `ssl_cert_file`; proxy from the configuration (with its `no_proxy`) or, for a
/// service, the environment; connect and total timeouts, no redirects.
fn http_client(config: &Config) -> Result<reqwest::Client, DaemonError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(config.http_timeout()))
        .timeout(config.http_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("git-credential-azdo/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = &config.proxy {
        // Not quoted in the error: a proxy URL may carry a password.
        let no_proxy = match &config.no_proxy {
            Some(list) => reqwest::NoProxy::from_string(list),
            None => reqwest::NoProxy::from_env(),
        };
        let proxy = reqwest::Proxy::all(p)
            .map_err(|_| {
                DaemonError::Setup("the proxy in the configuration is not a valid URL".into())
            })?
            .no_proxy(no_proxy);
        b = b.proxy(proxy);
    }
    if let Some(file) = &config.ssl_cert_file {
        let pem = fs::read(file)
            .map_err(|e| DaemonError::Setup(format!("cannot read ssl_cert_file {file}: {e}")))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            DaemonError::Setup(format!(
                "ssl_cert_file {file} holds no PEM certificates: {e}"
            ))
        })?;
        for root in roots {
            b = b.add_root_certificate(root);
        }
    }
    b.build()
        .map_err(|e| DaemonError::Setup(format!("cannot set up HTTPS: {e}")))
}

/// Runs the daemon until `shutdown` turns true (or a client asks it to stop). `ready` gets
/// one line once the socket accepts connections: `ready …`, or `busy …` when another daemon
/// already runs.
/// `service_identity`: the identity variables of a daemon run as a service, used for requests
/// that carry none (empty when started on demand; see `launch`).
pub async fn run(
    config: Config,
    service_identity: std::collections::BTreeMap<String, crate::secret::Secret>,
    mut ready: impl Write,
    shutdown: watch::Receiver<bool>,
) -> Result<Exit, DaemonError> {
    endpoint::require_https(
        "the authority (authority_host, or AZURE_AUTHORITY_HOST)",
        &config.authority(),
    )
    .map_err(|e| DaemonError::Setup(e.to_string()))?;
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
    let name = socket
        .as_path()
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| DaemonError::Setup(format!("bad socket path {}: {e}", socket.display())))?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(|e| DaemonError::Setup(format!("cannot listen on {}: {e}", socket.display())))?;
    pid_file.set_len(0).ok();
    let _ = writeln!(pid_file, "{}", std::process::id());

    let data_dir = paths::data_dir();
    // We hold the lock: a half-written store file beside the real one is a dead daemon's.
    store::remove_stale_temporaries(&data_dir);
    let secret_store = store::choose(config.store, &data_dir)
        .await
        .map_err(DaemonError::Store)?;
    let records = store::Records::load_or_set_aside(&data_dir).map_err(DaemonError::Records)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        socket = %socket.display(),
        store = %secret_store.describe(),
        accounts = records.accounts.len(),
        "daemon started"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut any_stop = stop_rx.clone();
    let mut external = shutdown.clone();
    let combined = {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = any_stop.wait_for(|s| *s) => {}
                _ = external.wait_for(|s| *s) => {}
            }
            let _ = tx.send(true);
        });
        rx
    };
    let http = http_client(&config)?;
    let gits = std::sync::Arc::new(gits::Gits::new(config.auth));
    let broker = broker::Broker::new(
        config,
        http,
        store::StoreHandle::new(secret_store.clone()),
        data_dir,
        records,
        service_identity,
        combined.clone(),
    );
    let _ = writeln!(
        ready,
        "ready: pid {} store {}",
        std::process::id(),
        secret_store.kind()
    );
    let _ = ready.flush();
    drop(ready);
    server::serve(listener, broker, gits, combined, stop_tx).await;
    // Remove the socket before the lock goes, so the next daemon never sees ours.
    let _ = fs::remove_file(&socket);
    drop(pid_file);
    tracing::info!("daemon stopped");
    Ok(Exit::Stopped)
}
