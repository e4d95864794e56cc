//! A load generator for the daemon's socket: opens many connections first, then releases them
//! together, each sending one request line exactly as the client frames it and reading one
//! response line. For the benchmarks (`tests/bench.rs`).

use git_credential_azdo::ipc::{self, Request, RequestEnvelope, Response};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// What one burst did.
pub struct Burst {
    /// Connections asked for.
    pub connections: usize,
    /// Connections opened before the release.
    pub opened: usize,
    /// Time to open them (connections in the daemon's accept queue, or accepted).
    pub open_time: Duration,
    /// Requests answered with a token, and each one's time from the release to the whole
    /// response line.
    pub answered: Vec<Duration>,
    /// The same requests, each timed from the moment its own task began to send it (the
    /// generator's own scheduling after the release left out).
    pub answered_from_send: Vec<Duration>,
    /// Everything else, by kind (`connect: ...`, `timeout`, `response: needs_login`, ...).
    pub errors: BTreeMap<String, usize>,
    /// From the release to the last answer or failure.
    pub wall: Duration,
    /// When the connections were released.
    pub released_at: Instant,
}

impl Burst {
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// `kind ×count, ...`, or `none`.
    pub fn error_summary(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One `get` for `org` as `git-credential-azdo get` frames it: the envelope as one JSON line.
pub fn get_line(org: &str) -> Vec<u8> {
    let env = RequestEnvelope {
        protocol: ipc::PROTOCOL,
        version: ipc::PACKAGE_VERSION.into(),
        request: Request::Get {
            org: org.into(),
            env: Default::default(),
        },
    };
    let mut line = Vec::new();
    ipc::write_message(&mut line, &env).expect("a request serializes");
    line
}

/// Opens `n` connections to `socket`, then sends `line` on all of them at once and reads one
/// response line from each, allowing `limit` from the release. `before_release` runs after the
/// connections are open, just before they are released.
///
/// Connections are opened with a blocking `connect(2)`, as the client does: when the daemon's
/// accept queue is full, connecting waits for room instead of failing.
pub fn burst(
    socket: &Path,
    n: usize,
    line: &[u8],
    limit: Duration,
    before_release: impl FnOnce(),
) -> Burst {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut errors = BTreeMap::new();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(s) => streams.push(s),
            Err(e) => *errors.entry(format!("connect: {}", kind(&e))).or_insert(0) += 1,
        }
    }
    let open_time = started.elapsed();
    let opened = streams.len();
    let line: Arc<[u8]> = line.into();
    let (go, release) = watch::channel(None::<Instant>);
    let tasks: Vec<_> = {
        let _rt = rt.enter();
        streams
            .into_iter()
            .map(|s| {
                s.set_nonblocking(true).expect("nonblocking");
                let stream = tokio::net::UnixStream::from_std(s).expect("register with tokio");
                let (line, mut release) = (line.clone(), release.clone());
                rt.spawn(async move {
                    let t0 = *release
                        .wait_for(Option::is_some)
                        .await
                        .expect("released")
                        .as_ref()
                        .expect("some");
                    let sent = Instant::now();
                    let outcome = tokio::time::timeout(limit, exchange(stream, &line))
                        .await
                        .unwrap_or_else(|_| Err("timeout".into()));
                    (t0.elapsed(), sent.elapsed(), Instant::now(), outcome)
                })
            })
            .collect()
    };
    drop(release);
    before_release();
    let released_at = Instant::now();
    go.send(Some(released_at)).expect("tasks wait");
    let mut answered = Vec::with_capacity(opened);
    let mut answered_from_send = Vec::with_capacity(opened);
    let mut last = released_at;
    rt.block_on(async {
        for t in tasks {
            let (latency, own, ended, outcome) = t.await.expect("task");
            last = last.max(ended);
            match outcome {
                Ok(()) => {
                    answered.push(latency);
                    answered_from_send.push(own);
                }
                Err(e) => *errors.entry(e).or_insert(0) += 1,
            }
        }
    });
    Burst {
        connections: n,
        opened,
        open_time,
        answered,
        answered_from_send,
        errors,
        wall: last - released_at,
        released_at,
    }
}

/// One request, one response line; `Ok` only for a token.
async fn exchange(mut stream: tokio::net::UnixStream, line: &[u8]) -> Result<(), String> {
    stream
        .write_all(line)
        .await
        .map_err(|e| format!("write: {}", kind(&e)))?;
    let mut reader = BufReader::with_capacity(4096, stream);
    let mut buf = Vec::with_capacity(4096);
    reader
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| format!("read: {}", kind(&e)))?;
    match ipc::decode::<Response>(&buf) {
        Ok(Response::Token { .. }) => Ok(()),
        Ok(Response::Error { error, .. }) => Err(format!("response: error {error:?}")),
        Ok(other) => Err(format!(
            "response: {}",
            format!("{other:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("?")
        )),
        Err(ipc::IpcError::Closed) => Err("closed without an answer".into()),
        Err(e) => Err(format!("response: {e}")),
    }
}

/// An I/O error's kind and errno, without the path.
fn kind(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{:?} (errno {code})", e.kind()),
        None => format!("{:?}", e.kind()),
    }
}
