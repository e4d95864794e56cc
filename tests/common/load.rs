//! A load generator for the daemon's socket: opens many connections first, then releases them
//! together, each sending one request line exactly as the client frames it and reading one
//! response line. For the benchmarks (`tests/bench.rs`).

use git_credential_azdo::daemon_protocol::{self, Request, RequestEnvelope, Response};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

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
        protocol: daemon_protocol::PROTOCOL,
        version: daemon_protocol::PACKAGE_VERSION.into(),
        request: Request::Get {
            org: org.into(),
            env: Default::default(),
            authtype: true,
            git: None,
        },
    };
    let mut line = Vec::new();
    daemon_protocol::write_message(&mut line, &env).expect("a request serializes");
    line
}

/// Opens `n` connections to `socket`, then sends `line` on all of them at once and reads one
/// response line from each, allowing `limit` from the release. `before_release` runs after the
/// connections are open, just before they are released.
///
/// Connections are opened with a blocking `connect(2)`, as the client does: when the daemon's
/// accept queue is full, connecting waits for room instead of failing.
///
/// The generator is kept as light as it can be, because it shares the machine's cores with
/// the daemon it measures: one thread per core, each owning a share of the connections, with
/// plain blocking sockets and no event loop. After the release each thread writes the request
/// on all of its connections, then reads the answers in the same order. An answer that arrived
/// while the thread was still reading an earlier one is timed when the thread reaches it, so
/// the latencies err long, never short.
pub fn burst(
    socket: &Path,
    n: usize,
    line: &[u8],
    limit: Duration,
    before_release: impl FnOnce(),
) -> Burst {
    let mut errors = BTreeMap::new();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        match UnixStream::connect(socket) {
            Ok(s) => streams.push(s),
            Err(e) => *errors.entry(format!("connect: {}", kind(&e))).or_insert(0) += 1,
        }
    }
    let open_time = started.elapsed();
    let opened = streams.len();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, opened.max(1));
    let mut shares: Vec<Vec<UnixStream>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        shares[i % threads].push(s);
    }
    let line: Arc<[u8]> = line.into();
    let go = Arc::new(Barrier::new(threads + 1));
    let release = Arc::new(OnceLock::<Instant>::new());
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (line, go, release) = (line.clone(), go.clone(), release.clone());
            std::thread::spawn(move || {
                go.wait();
                let t0 = *release.get().expect("released before the barrier");
                let deadline = t0 + limit;
                let mut sent = Vec::with_capacity(share.len());
                let mut outcomes = Vec::with_capacity(share.len());
                for mut s in share {
                    let at = Instant::now();
                    match s.write_all(&line) {
                        Ok(()) => sent.push((s, at)),
                        Err(e) => outcomes.push(Outcome::failed(format!("write: {}", kind(&e)))),
                    }
                }
                let mut buf = Vec::with_capacity(4096);
                for (s, at) in sent {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                        outcomes.push(Outcome::failed("timeout".into()));
                        continue;
                    }
                    buf.clear();
                    let result = read_answer(&s, &mut buf);
                    let end = Instant::now();
                    outcomes.push(Outcome {
                        from_release: end - t0,
                        from_send: end - at,
                        ended: end,
                        result,
                    });
                }
                outcomes
            })
        })
        .collect();
    before_release();
    let released_at = Instant::now();
    release.set(released_at).expect("released once");
    go.wait();
    let mut answered = Vec::with_capacity(opened);
    let mut answered_from_send = Vec::with_capacity(opened);
    let mut last = released_at;
    for w in workers {
        for o in w.join().expect("a generator thread") {
            last = last.max(o.ended);
            match o.result {
                Ok(()) => {
                    answered.push(o.from_release);
                    answered_from_send.push(o.from_send);
                }
                Err(e) => *errors.entry(e).or_insert(0) += 1,
            }
        }
    }
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

/// What became of one request.
struct Outcome {
    from_release: Duration,
    from_send: Duration,
    ended: Instant,
    result: Result<(), String>,
}

impl Outcome {
    fn failed(why: String) -> Outcome {
        let now = Instant::now();
        Outcome {
            from_release: Duration::ZERO,
            from_send: Duration::ZERO,
            ended: now,
            result: Err(why),
        }
    }
}

/// Reads one response line; `Ok` only for a token.
fn read_answer(mut s: &UnixStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    while !buf.contains(&b'\n') {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timeout".into());
            }
            Err(e) => return Err(format!("read: {}", kind(&e))),
        }
    }
    match daemon_protocol::decode::<Response>(buf) {
        Ok(Response::Token { .. }) => Ok(()),
        Ok(Response::Error { error, .. }) => Err(format!("response: error {error:?}")),
        Ok(other) => Err(format!(
            "response: {}",
            format!("{other:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("?")
        )),
        Err(daemon_protocol::IpcError::Closed) => Err("closed without an answer".into()),
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

/// A server with none of the daemon's work, to put beside it: it answers every connection on
/// its socket with the same response line, so the load generator times only what the kernel
/// and the I/O model cost.
#[derive(Clone, Copy, Debug)]
pub enum Floor {
    /// One thread and an epoll loop (mio): the event-driven model the daemon uses, without
    /// tokio, JSON, timers or a broker.
    Epoll,
    /// One blocking thread per core, each serving its share of the connections in order:
    /// no event loop at all, the kernel's floor. Not a design a daemon can use: one client
    /// that never sends would stall every connection behind it.
    BlockingThreads,
}

/// A running floor server; dropping it stops it and removes its socket.
pub struct FloorServer {
    pub socket: std::path::PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake a thread blocked in accept.
        let _ = UnixStream::connect(&self.socket);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A token response line as the daemon sends it, for the floor servers to answer with.
pub fn token_line() -> Vec<u8> {
    let mut line = serde_json::to_vec(&Response::Token {
        token: "eyJ0eXAiOiJKV1QifQ.floor.floor".to_string().into(),
        expires_at: 4_102_444_800,
        scheme: Default::default(),
    })
    .expect("a response serializes");
    line.push(b'\n');
    line
}

/// Starts a `kind` floor server on `socket` that answers `n` connections (then idles).
pub fn floor_server(kind: Floor, socket: &Path, n: usize) -> FloorServer {
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind a floor socket");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer: Arc<[u8]> = token_line().into();
    let threads = match kind {
        Floor::Epoll => {
            let stop = stop.clone();
            vec![std::thread::spawn(move || {
                epoll_floor(listener, &answer, &stop)
            })]
        }
        Floor::BlockingThreads => {
            let stop = stop.clone();
            vec![std::thread::spawn(move || {
                blocking_floor(listener, n, &answer, &stop)
            })]
        }
    };
    FloorServer {
        socket: socket.to_path_buf(),
        stop,
        threads,
    }
}

fn epoll_floor(
    listener: std::os::unix::net::UnixListener,
    answer: &[u8],
    stop: &std::sync::atomic::AtomicBool,
) {
    use mio::{Events, Interest, Poll, Token};
    listener.set_nonblocking(true).expect("nonblocking");
    let mut listener = mio::net::UnixListener::from_std(listener);
    let mut poll = Poll::new().expect("epoll");
    poll.registry()
        .register(&mut listener, Token(0), Interest::READABLE)
        .expect("register the listener");
    let mut conns = std::collections::HashMap::new();
    let mut next = 1;
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        for ev in events.iter() {
            if ev.token() == Token(0) {
                while let Ok((mut s, _)) = listener.accept() {
                    if poll
                        .registry()
                        .register(&mut s, Token(next), Interest::READABLE)
                        .is_ok()
                    {
                        conns.insert(next, s);
                        next += 1;
                    }
                }
                continue;
            }
            let Some(mut s) = conns.remove(&ev.token().0) else {
                continue;
            };
            match s.read(&mut buf) {
                // One request fits one read here; the generator sends a few hundred bytes.
                Ok(k) if k > 0 => {
                    let _ = s.write_all(answer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    conns.insert(ev.token().0, s);
                }
                _ => {}
            }
        }
    }
}

fn blocking_floor(
    listener: std::os::unix::net::UnixListener,
    n: usize,
    answer: &Arc<[u8]>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut shares: Vec<Vec<UnixStream>> = (0..cores).map(|_| Vec::new()).collect();
    for i in 0..n {
        match listener.accept() {
            Ok((s, _)) if !stop.load(std::sync::atomic::Ordering::SeqCst) => {
                shares[i % cores].push(s)
            }
            _ => return,
        }
    }
    let servers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                for mut s in share {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    if matches!(s.read(&mut buf), Ok(k) if k > 0) {
                        let _ = s.write_all(&answer);
                    }
                }
            })
        })
        .collect();
    for s in servers {
        let _ = s.join();
    }
}
