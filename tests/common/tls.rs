//! Test TLS material and the plumbing the mock servers share: a throw-away CA
//! (rcgen) whose server certificate covers `127.0.0.1` and `localhost`, an HTTPS
//! server running on its own background tokio runtime (stopped on drop), and
//! small helpers for randomness, GUIDs and wall-clock time. The CA carries its world's
//! secret ledger to the mocks started from it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::secrets::Secrets;

/// A self-signed CA plus one server certificate it signed, for 127.0.0.1 and localhost.
/// It also carries its world's secret ledger: every mock server is started from the world's
/// CA (or from a mock that was), so every mock records there what it hands out.
pub struct TestCa {
    ca_path: PathBuf,
    config: Arc<ServerConfig>,
    secrets: Secrets,
}

impl TestCa {
    /// Generates the CA and server certificate and writes the CA to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};

        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "git-credential-azdo test CA");
        ca_params.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![Ku::DigitalSignature];
        params.extended_key_usages = vec![Eku::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();

        let chain = vec![
            cert.der().clone(),
            CertificateDer::from(ca_cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestCa {
            ca_path,
            config: Arc::new(config),
            secrets: Secrets::default(),
        }
    }

    /// `dir/ca.pem`: give it to the product as `SSL_CERT_FILE` and to git as `GIT_SSL_CAINFO`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// rustls server configuration (ALPN http/1.1) serving the test certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The secret ledger of the world this CA belongs to (see [`super::secrets`]).
    pub fn secrets(&self) -> Secrets {
        self.secrets.clone()
    }
}

/// Response type of every mock.
pub type Resp = Response<Full<Bytes>>;

/// An HTTPS server on `127.0.0.1:0`, owning a background thread and tokio runtime.
/// Dropping it stops the accept loop and the runtime (open connections included).
pub struct HttpsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HttpsServer {
    /// `accept` is asked after each TCP accept: `false` drops the stream at once.
    /// `make_handler` gets the bound address; its handler answering `None` aborts
    /// the connection without a response.
    pub fn start<A, M, H, F>(tls: Arc<ServerConfig>, accept: A, make_handler: M) -> HttpsServer
    where
        A: Fn() -> bool + Send + 'static,
        M: FnOnce(SocketAddr) -> H,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Option<Resp>> + Send + 'static,
    {
        Self::spawn(Some(tls), accept, make_handler)
    }

    /// The same server over plain HTTP (for endpoints that are http, such as IMDS).
    pub fn start_plain<H, F>(handler: H) -> HttpsServer
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Option<Resp>> + Send + 'static,
    {
        Self::spawn(None, || true, move |_| handler)
    }

    fn spawn<A, M, H, F>(tls: Option<Arc<ServerConfig>>, accept: A, make_handler: M) -> HttpsServer
    where
        A: Fn() -> bool + Send + 'static,
        M: FnOnce(SocketAddr) -> H,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Option<Resp>> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let handler = Arc::new(make_handler(addr));
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tls.map(TlsAcceptor::from);
                loop {
                    let tcp = tokio::select! {
                        _ = &mut stopped => break,
                        r = listener.accept() => match r {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                    };
                    if !accept() {
                        drop(tcp);
                        continue;
                    }
                    let (acceptor, handler) = (acceptor.clone(), handler.clone());
                    tokio::spawn(async move {
                        match acceptor {
                            Some(a) => {
                                if let Ok(stream) = a.accept(tcp).await {
                                    serve(TokioIo::new(stream), handler).await;
                                }
                            }
                            None => serve(TokioIo::new(tcp), handler).await,
                        }
                    });
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        HttpsServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves one connection with `handler`; `None` from it aborts the connection.
async fn serve<I, H, F>(io: I, handler: Arc<H>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Option<Resp>> + Send + 'static,
{
    let svc = service_fn(move |req| {
        let fut = handler(req);
        async move {
            fut.await
                .ok_or_else(|| std::io::Error::other("aborted by the mock"))
        }
    });
    let _ = http1::Builder::new().serve_connection(io, svc).await;
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A response with a body and content type.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

/// Cryptographically random bytes (rustls' ring provider, no extra dependency).
/// Escapes text and double-quoted attribute values, for the mocks' HTML pages.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page that must not be cached (sign-in and error pages).
pub fn html_response(status: u16, body: String) -> Resp {
    let mut r = response(status, "text/html; charset=utf-8", body);
    let no_store = "no-store, no-cache".parse().unwrap();
    r.headers_mut().insert("Cache-Control", no_store);
    r
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .unwrap();
    buf
}

/// A random lower-case GUID.
pub fn guid() -> String {
    guid_from(&random_bytes(16))
}

/// Formats the first 16 bytes as a GUID.
pub fn guid_from(b: &[u8]) -> String {
    let h: String = b[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex).
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Seconds since the Unix epoch (wall clock).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `2026-01-31 12:34:56Z`, the timestamp format of Entra error bodies.
pub fn timestamp(unix: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let (days, secs) = ((unix / 86400) as i64, unix % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}
