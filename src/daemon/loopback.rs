//! The loopback redirect listener for browser sign-in: a one-shot HTTP server on
//! `localhost`, one port held on both 127.0.0.1 and ::1, that receives Entra's redirect (`?code=…&state=…` or `?error=…`), hands it to
//! the sign-in, and shows the person the page the sign-in returns. Over TLS for legacy Azure
//! DevOps OAuth apps, whose callback must be https.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// What the browser brought back to the redirect URI.
#[derive(Debug, Default)]
pub struct Redirect {
    pub code: Option<crate::secret::Secret>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A page for the browser.
pub struct Page {
    pub ok: bool,
    pub title: String,
    pub text: String,
}

impl Page {
    fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let color = if self.ok { "#107c10" } else { "#a4262c" };
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
<body style=\"font-family:system-ui,sans-serif;max-width:40em;margin:4em auto\">\
<h1 style=\"color:{color}\">{t}</h1><p>{x}</p><p>You can close this tab.</p></body></html>",
            t = esc(&self.title),
            x = esc(&self.text)
        )
    }
}

type Handoff = (Redirect, oneshot::Sender<Page>);

/// The redirect listener: one port held on both loopback addresses. A browser may resolve
/// `localhost` to either, so a port held on one only would leave the other free for another
/// local user's process to take, and with it the redirect and its code (RFC 8252 §8.3).
pub struct Listener {
    v4: TcpListener,
    /// `None` only where the machine has no IPv6 loopback at all (nobody can bind it then).
    v6: Option<TcpListener>,
    pub port: u16,
}

impl Listener {
    async fn accept(&self) -> std::io::Result<TcpStream> {
        match &self.v6 {
            None => self.v4.accept().await.map(|(s, _)| s),
            Some(v6) => tokio::select! {
                r = self.v4.accept() => r.map(|(s, _)| s),
                r = v6.accept() => r.map(|(s, _)| s),
            },
        }
    }
}

/// How many free ports to try before giving up when another process holds `[::1]` on them.
const FREE_PORT_TRIES: usize = 20;

/// Binds a free port on both `127.0.0.1` and `[::1]`.
pub async fn bind() -> std::io::Result<Listener> {
    let mut last = None;
    for _ in 0..FREE_PORT_TRIES {
        match bind_port(0).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            other => return other,
        }
    }
    Err(last.expect("tried at least once"))
}

/// Binds `port` (0: a free one) on both `127.0.0.1` and `[::1]`, or fails: a port another
/// process holds on either address is refused.
pub async fn bind_port(port: u16) -> std::io::Result<Listener> {
    let v4 = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = v4.local_addr()?.port();
    let v6 = match TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)).await {
        Ok(l) => Some(l),
        // No IPv6 loopback on this machine: no process can take [::1] either.
        Err(e) if no_ipv6(&e) => {
            tracing::debug!(error = %e, "no IPv6 loopback here; the redirect listens on 127.0.0.1 only");
            None
        }
        Err(e) => {
            let kind = e.kind();
            return Err(std::io::Error::new(
                kind,
                format!("[::1]:{port} is held by another process ({e})"),
            ));
        }
    };
    Ok(Listener { v4, v6, port })
}

/// The errors of binding `[::1]` on a machine without IPv6.
fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL) | Some(libc::EAFNOSUPPORT)
    )
}

/// Where the redirect is expected, and whether over TLS.
pub struct Endpoint {
    pub path: String,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Endpoint {
    /// Plain http at `/` (Entra's loopback redirect).
    pub fn plain() -> Endpoint {
        Endpoint {
            path: "/".into(),
            tls: None,
        }
    }
}

/// The redirect carried by an address the browser ended on, as a person pastes it.
pub fn parse_url(url: &str) -> Option<Redirect> {
    let u = url::Url::parse(url.trim()).ok()?;
    Some(parse(u.query().unwrap_or("")))
}

fn parse(query: &str) -> Redirect {
    let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    Redirect {
        code: q.get("code").map(|c| crate::secret::Secret::new(c.clone())),
        state: q.get("state").cloned(),
        error: q.get("error").cloned(),
        error_description: q.get("error_description").cloned(),
    }
}

/// Serves until one redirect arrives (then answers it with `complete`'s page) or `deadline`
/// passes. `None` when nobody came back in time.
pub async fn wait_for_redirect<F, Fut>(
    listener: Listener,
    endpoint: Endpoint,
    deadline: Duration,
    state: &str,
    complete: F,
) -> Option<()>
where
    F: FnOnce(Redirect) -> Fut,
    Fut: Future<Output = Page>,
{
    let (tx, mut rx) = mpsc::channel::<Handoff>(1);
    let tx = Arc::new(Mutex::new(Some(tx)));
    let state: Arc<str> = Arc::from(state);
    let path: Arc<str> = Arc::from(endpoint.path.as_str());
    let mut connections = tokio::task::JoinSet::new();
    let accept = async {
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, state, path) = (tx.clone(), state.clone(), path.clone());
            let tls = endpoint.tls.clone();
            connections.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (tx, state, path) = (tx.clone(), state.clone(), path.clone());
                    async move { Ok::<_, hyper::Error>(answer(req, tx, &state, &path).await) }
                });
                // One request per connection, and a slow client cannot hold one open.
                let http = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .keep_alive(false)
                    .clone();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(tls) => {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(10), tls.accept(stream));
                        // A browser that does not trust the certificate yet closes the
                        // connection here, and comes back once the person accepts it.
                        if let Ok(Ok(stream)) = handshake.await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    };
    let handoff = tokio::select! {
        h = rx.recv() => h,
        _ = accept => None,
        _ = tokio::time::sleep(deadline) => None,
    };
    let Some((redirect, reply)) = handoff else {
        connections.abort_all();
        return None;
    };
    let page = complete(redirect).await;
    let _ = reply.send(page);
    // Let the connection task write the page, then close everything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    connections.abort_all();
    Some(())
}

async fn answer(
    req: Request<Incoming>,
    tx: Arc<Mutex<Option<mpsc::Sender<Handoff>>>>,
    state: &str,
    path: &str,
) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    let redirect = parse(req.uri().query().unwrap_or(""));
    if req.uri().path() != path || (redirect.code.is_none() && redirect.error.is_none()) {
        return respond(StatusCode::NOT_FOUND, "not found".into());
    }
    // A request that is not this sign-in's (another page or process guessing the port) is
    // refused and the sign-in keeps waiting for the real redirect.
    if redirect.state.as_deref() != Some(state) {
        let page = Page {
            ok: false,
            title: "Sign-in failed".into(),
            text: "state mismatch: this answer does not belong to the sign-in in progress".into(),
        };
        return respond(StatusCode::BAD_REQUEST, page.html());
    }
    // Only the first redirect is taken; a reload finds the sign-in already handled.
    let Some(sender) = tx.lock().unwrap().take() else {
        let page = Page {
            ok: false,
            title: "Already handled".into(),
            text: "This sign-in has already been completed or abandoned.".into(),
        };
        return respond(StatusCode::GONE, page.html());
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    if sender.send((redirect, reply_tx)).await.is_err() {
        return respond(StatusCode::GONE, "sign-in over".into());
    }
    match reply_rx.await {
        Ok(page) => {
            let status = if page.ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            respond(status, page.html())
        }
        Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, "sign-in failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_code_and_error_redirects() {
        let r = parse("code=abc%2Bdef&state=s1&session_state=x");
        assert_eq!(r.code.unwrap().expose(), "abc+def");
        assert_eq!(r.state.as_deref(), Some("s1"));
        let e = parse("error=access_denied&error_description=AADSTS65004%3A+User+declined");
        assert_eq!(e.error.as_deref(), Some("access_denied"));
        assert_eq!(
            e.error_description.as_deref(),
            Some("AADSTS65004: User declined")
        );
    }

    #[test]
    fn page_escapes_html() {
        let p = Page {
            ok: true,
            title: "Connected".into(),
            text: "<script>x</script> & co".into(),
        };
        let h = p.html();
        assert!(h.contains("&lt;script&gt;") && h.contains("&amp; co"));
    }
}
