//! A mock HTTP proxy on `127.0.0.1` (random port), for the tests of the daemon's `proxy`
//! setting. It owns a listener thread and one thread per connection (std only), and stops
//! when dropped, open tunnels included.
//!
//! - `CONNECT host:port`: connects to the target (loopback only: a test never reaches a real
//!   host), answers `200 Connection established`, and relays bytes both ways until either side
//!   closes. Each tunnel's target is recorded, with the bytes relayed towards it, counted before
//!   they are written: once a mock has seen a request that came through a tunnel, the count
//!   already shows it.
//! - Any other request (a plain forward-proxy request, `GET http://…`): its method and absolute
//!   URL are recorded, and it is answered `502 Bad Gateway`.
//! - With [`MockProxy::start_with_auth`], a request without the right
//!   `Proxy-Authorization: Basic …` is answered `407` with `Proxy-Authenticate: Basic
//!   realm="corp"` and recorded as refused. Header values are never recorded (they carry the
//!   proxy's password).

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// One `CONNECT` the proxy accepted.
struct Tunnel {
    target: String,
    /// Bytes relayed from the client to the target so far.
    sent: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    tunnels: Mutex<Vec<Tunnel>>,
    plain: Mutex<Vec<String>>,
    refused: Mutex<Vec<String>>,
    /// Every socket the proxy holds (client and upstream sides), shut down on drop.
    open: Mutex<Vec<TcpStream>>,
    /// The `Proxy-Authorization` value required, when any.
    auth: Option<String>,
}

impl State {
    fn hold(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            self.open.lock().unwrap().push(c);
        }
    }
}

pub struct MockProxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl MockProxy {
    /// A proxy that asks for no credentials.
    pub fn start() -> MockProxy {
        Self::spawn(State::default())
    }

    /// A proxy that answers `407` unless the request carries `user:password` (Basic).
    pub fn start_with_auth(user: &str, password: &str) -> MockProxy {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self::spawn(State {
            auth: Some(format!("Basic {basic}")),
            ..State::default()
        })
    }

    fn spawn(state: State) -> MockProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(state);
        let stop = Arc::new(AtomicBool::new(false));
        let (st, halt) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.hold(&conn);
                let st = st.clone();
                thread::spawn(move || serve(conn, &st));
            }
        });
        MockProxy {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:PORT`
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target (`host:port`) of every tunnel asked for, in order.
    pub fn tunnels(&self) -> Vec<String> {
        let tunnels = self.state.tunnels.lock().unwrap();
        tunnels.iter().map(|t| t.target.clone()).collect()
    }

    /// How many tunnels to `target` (`host:port`) were asked for.
    pub fn tunnels_to(&self, target: &str) -> usize {
        self.tunnels().iter().filter(|t| *t == target).count()
    }

    /// Bytes relayed to `target` (`host:port`) over all its tunnels so far.
    pub fn bytes_to(&self, target: &str) -> u64 {
        let tunnels = self.state.tunnels.lock().unwrap();
        tunnels
            .iter()
            .filter(|t| t.target == target)
            .map(|t| t.sent.load(Ordering::SeqCst))
            .sum()
    }

    /// Every plain (not `CONNECT`) request, as `METHOD absolute-URL`, in order.
    pub fn plain(&self) -> Vec<String> {
        self.state.plain.lock().unwrap().clone()
    }

    /// Every request answered `407`, as `METHOD target`, in order.
    pub fn refused(&self) -> Vec<String> {
        self.state.refused.lock().unwrap().clone()
    }
}

impl Drop for MockProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self.state.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Reads a request head: the request line and the `Proxy-Authorization` value, if any.
fn read_head(r: &mut impl BufRead) -> Option<(String, Option<String>)> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).ok()?;
    if line.is_empty() {
        return None;
    }
    let request = String::from_utf8_lossy(&line).trim().to_string();
    let mut auth = None;
    loop {
        let mut h = Vec::new();
        if r.read_until(b'\n', &mut h).ok()? == 0 {
            return None;
        }
        let h = String::from_utf8_lossy(&h);
        let h = h.trim();
        if h.is_empty() {
            return Some((request, auth));
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("proxy-authorization")
        {
            auth = Some(v.trim().to_string());
        }
    }
}

fn is_loopback(target: &str) -> bool {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

fn serve(client: TcpStream, st: &State) {
    let Ok(read_side) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_side);
    let Some((request, auth)) = read_head(&mut reader) else {
        return;
    };
    let mut parts = request.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut out = &client;
    if let Some(want) = &st.auth
        && auth.as_deref() != Some(want.as_str())
    {
        st.refused
            .lock()
            .unwrap()
            .push(format!("{method} {target}"));
        let _ = out.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Basic realm=\"corp\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    if !method.eq_ignore_ascii_case("CONNECT") {
        st.plain.lock().unwrap().push(format!("{method} {target}"));
        let _ = out.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let sent = Arc::new(AtomicU64::new(0));
    st.tunnels.lock().unwrap().push(Tunnel {
        target: target.clone(),
        sent: sent.clone(),
    });
    let upstream = match is_loopback(&target) {
        true => TcpStream::connect(&target).ok(),
        false => None,
    };
    let Some(upstream) = upstream else {
        let _ = out.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    st.hold(&upstream);
    if out
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // Client to target (what the reader already buffered first), counted before written.
    let Ok(mut to_target) = upstream.try_clone() else {
        return;
    };
    let up = thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sent.fetch_add(n as u64, Ordering::SeqCst);
                    if to_target.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_target.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut &upstream, &mut out);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
}
