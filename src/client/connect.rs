//! Reaching the daemon: connect to its socket, start it when none answers (and wait, bounded,
//! for its readiness line), replace a daemon of another version, and exchange one request
//! for one response under a deadline. Synchronous and std-only.

use crate::daemon_protocol::{self, IpcError, Request, RequestEnvelope, Response};
use crate::paths;
use interprocess::local_socket::traits::{Stream as _, StreamCommon as _};
use interprocess::local_socket::{ConnectOptions, GenericFilePath, Stream, ToFsName};
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a starting daemon may take to say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start the daemon ({exe}): {message}; its log is {log}")]
    Start {
        exe: String,
        message: String,
        log: String,
    },
    /// The daemon said why it cannot start.
    #[error("the daemon cannot start: {reason}")]
    Refused { reason: String },
    #[error("the daemon did not answer within {0:?}; see {log}", log = paths::log_path().display())]
    Timeout(Duration),
    /// It did not answer, and it was ended: the next command starts a new one.
    #[error("the daemon (pid {pid}) did not answer within {waited:?} and was ended; the next command starts a new one (its log: {log})", log = paths::log_path().display())]
    Ended { pid: i32, waited: Duration },
    /// The process behind the socket is stopped (SIGSTOP, a debugger): it cannot answer.
    #[error(
        "the daemon (pid {pid}) is stopped and cannot answer; end it with: git-credential-azdo stop"
    )]
    Stopped { pid: i32 },
    #[error("talking to the daemon: {0}")]
    Ipc(#[from] IpcError),
    #[error(
        "the running daemon is version {daemon}, newer than this client ({}); update git-credential-azdo or put the newer one first on PATH",
        daemon_protocol::PACKAGE_VERSION
    )]
    OlderClient { daemon: String },
}

/// Connects to the daemon's socket and checks that the process behind it runs as this user:
/// a socket someone else planted on the path gets nothing, not even the request (which
/// carries the caller's identity variables).
fn connect_once() -> std::io::Result<Stream> {
    let path = paths::socket_path();
    let name = path.as_path().to_fs_name::<GenericFilePath>()?;
    let stream = ConnectOptions::new().name(name).connect_sync()?;
    let ours = unsafe { libc::geteuid() };
    match stream.peer_creds()?.euid() {
        Some(uid) if uid == ours => Ok(stream),
        theirs => Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} is served by {}, not by you (uid {ours}); sent it nothing. Remove {} if it is yours, or set XDG_RUNTIME_DIR to a private directory",
                path.display(),
                theirs.map_or("an unknown user".into(), |u| format!("uid {u}")),
                paths::runtime_dir().display()
            ),
        )),
    }
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable
    )
}

/// The daemon binary: `$GIT_CREDENTIAL_AZDO_DAEMON`, else next to this executable, else `PATH`.
fn daemon_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("GIT_CREDENTIAL_AZDO_DAEMON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let name = "git-credential-azdo-daemon";
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Starts a daemon in its own process group and waits for its readiness line.
fn start_daemon() -> Result<(), ConnectError> {
    let exe = daemon_exe();
    let log = paths::log_path();
    let fail = |message: String| ConnectError::Start {
        exe: exe.display().to_string(),
        message,
        log: log.display().to_string(),
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    let log_file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)
            .map_err(|e| fail(format!("cannot open its log: {e}")))?
    };
    let mut cmd = Command::new(&exe);
    // Only what locates the user's files and session: nothing of this caller's environment may
    // decide where the shared daemon sends secrets or whose identity it uses (`launch`).
    cmd.env_clear();
    for k in crate::launch::PASSED_TO_DAEMON {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        // Not inside the repository git runs in (it may be on a mount to be unmounted).
        .current_dir("/");
    // Its own session: neither a Ctrl-C meant for git nor the terminal closing stops it.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(START_DEADLINE) {
        Ok(Ok(line)) if line.starts_with("ready") || line.starts_with("busy") => Ok(()),
        // It says why it cannot start (a configuration error, say).
        Ok(Ok(line)) if line.starts_with(crate::launch::FAILED_PREFIX) => {
            let _ = child.wait();
            Err(ConnectError::Refused {
                reason: line[crate::launch::FAILED_PREFIX.len()..]
                    .trim()
                    .to_string(),
            })
        }
        Ok(Ok(_)) => {
            let status = child.wait().ok();
            Err(fail(format!(
                "it exited before it was ready ({})",
                status.map(|s| s.to_string()).unwrap_or_default()
            )))
        }
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!("it was not ready within {START_DEADLINE:?}"))),
    }
}

/// Connects, starting the daemon when none answers.
fn connect_or_start() -> Result<Stream, ConnectError> {
    match connect_once() {
        Ok(s) => return Ok(s),
        Err(e) if is_absent(&e) => {}
        Err(e) => return Err(ConnectError::Ipc(e.into())),
    }
    // `busy` means another daemon holds the lock: one starting at the same moment (it binds
    // soon), or one on its way out (then the second start takes over).
    for attempt in 0..2 {
        start_daemon()?;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match connect_once() {
                Ok(s) => return Ok(s),
                Err(e) if is_absent(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if is_absent(&e) && attempt == 0 => break,
                Err(e) => return Err(ConnectError::Ipc(e.into())),
            }
        }
    }
    unreachable!("the second attempt returns")
}

/// How often a wait for the daemon's answer looks whether the daemon is stopped.
const STOPPED_CHECK: Duration = Duration::from_secs(1);

fn exchange(stream: Stream, req: &Request, deadline: Duration) -> Result<Response, ConnectError> {
    stream
        .set_send_timeout(Some(Duration::from_secs(5)))
        .map_err(IpcError::from)?;
    let env = RequestEnvelope {
        protocol: daemon_protocol::PROTOCOL,
        version: daemon_protocol::PACKAGE_VERSION.into(),
        request: req.clone(),
    };
    daemon_protocol::write_message(&stream, &env).map_err(|e| failed(e, deadline))?;
    answer(&stream, deadline)
}

/// What a failed exchange means for the caller.
fn failed(e: IpcError, deadline: Duration) -> ConnectError {
    match e {
        IpcError::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            ConnectError::Timeout(deadline)
        }
        // A daemon that refuses us (another user's, say) just closes the connection.
        IpcError::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
            ) =>
        {
            ConnectError::Ipc(IpcError::Closed)
        }
        e => ConnectError::Ipc(e),
    }
}

/// Reads the answer within `deadline`. The wait is cut into slices: between them, a daemon
/// found stopped ends the wait at once ([`ConnectError::Stopped`]) instead of at the deadline.
fn answer(stream: &Stream, deadline: Duration) -> Result<Response, ConnectError> {
    let start = Instant::now();
    let mut reader = BufReader::new(stream);
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(ConnectError::Timeout(deadline));
        }
        let slice = Some(left.min(STOPPED_CHECK));
        stream.set_recv_timeout(slice).map_err(IpcError::from)?;
        match reader.fill_buf() {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let stopped = super::process::running().filter(|p| super::process::is_stopped(*p));
                if let Some(pid) = stopped {
                    return Err(ConnectError::Stopped { pid });
                }
            }
            Err(e) => return Err(failed(e.into(), deadline)),
        }
    }
    let left = deadline.saturating_sub(start.elapsed());
    stream
        .set_recv_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(IpcError::from)?;
    daemon_protocol::read_message(reader).map_err(|e| failed(e, deadline))
}

/// Sends one request and returns the daemon's answer, starting or replacing the daemon as
/// needed. `deadline` bounds the wait for the answer. A daemon that is stopped is ended and
/// replaced, and the request asked again; one that does not answer within the deadline is
/// ended, so that the next command starts a new one instead of waiting again.
pub fn call(req: &Request, deadline: Duration) -> Result<Response, ConnectError> {
    let first = match exchange(connect_or_start()?, req, deadline) {
        Err(ConnectError::Stopped { pid }) => {
            super::process::end(pid);
            exchange(connect_or_start()?, req, deadline)
        }
        r => r,
    };
    let resp = match first {
        // A daemon shutting down closes connections it has not answered: ask the next one.
        Err(ConnectError::Ipc(IpcError::Closed)) => {
            std::thread::sleep(Duration::from_millis(50));
            exchange(connect_or_start()?, req, deadline)?
        }
        Err(ConnectError::Timeout(waited)) => {
            return Err(match super::process::running() {
                Some(pid) if super::process::end(pid) => ConnectError::Ended { pid, waited },
                _ => ConnectError::Timeout(waited),
            });
        }
        r => r?,
    };
    match resp {
        Response::VersionMismatch { daemon }
            if daemon_protocol::is_newer(&daemon, daemon_protocol::PACKAGE_VERSION) =>
        {
            Err(ConnectError::OlderClient { daemon })
        }
        Response::VersionMismatch { .. } => {
            // The old daemon exits after answering; wait for its socket to go, then start ours.
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && connect_once().is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
            exchange(connect_or_start()?, req, deadline)
        }
        r => Ok(r),
    }
}

/// Sends one request only if a daemon is already running (`None` when none is).
pub fn call_if_running(
    req: &Request,
    deadline: Duration,
) -> Result<Option<Response>, ConnectError> {
    match connect_once() {
        Ok(s) => exchange(s, req, deadline).map(Some),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(ConnectError::Ipc(e.into())),
    }
}
