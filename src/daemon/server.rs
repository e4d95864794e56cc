//! The daemon's socket server: accepts local connections, refuses other users, reads one
//! request under a deadline, hands it to the broker (a token's answer, Bearer or Basic, is
//! chosen by `gits` for the git asking) and writes one response.

use super::broker::{Broker, LoginRequest};
use super::gits::Gits;
use crate::daemon_protocol::{self, ErrorKind, Request, RequestEnvelope, Response};
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is cancelled: from outside (a signal), or by a request (`stop`, or a
/// newer client). Then it stops accepting, and gives requests in progress a few seconds.
pub async fn serve(
    listener: Listener,
    broker: Arc<Broker>,
    gits: Arc<Gits>,
    shutdown: CancellationToken,
) {
    let own_uid = unsafe { libc::geteuid() };
    // A tracker rather than a JoinSet: a finished request wakes nobody.
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.cancelled() => break,
        };
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_creds().map(|c| c.euid()) {
            Ok(Some(uid)) if uid == own_uid => {}
            other => {
                tracing::warn!(peer = ?other, "refused a connection from another user");
                continue; // dropping the stream closes it
            }
        }
        let (broker, gits, stop) = (broker.clone(), gits.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = handle(stream, broker, gits, stop).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        tracing::warn!("requests still running at shutdown were cut off");
    }
}

/// How long requests in progress may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// The part of a request every version understands, checked before the rest is decoded.
#[derive(serde::Deserialize)]
struct Header {
    protocol: u32,
    version: String,
}

async fn handle(
    stream: Stream,
    broker: Arc<Broker>,
    gits: Arc<Gits>,
    stop: CancellationToken,
) -> Result<(), daemon_protocol::IpcError> {
    // Requests are a few hundred bytes: a small buffer keeps a thousand waiting clients cheap.
    let mut reader = BufReader::with_capacity(1024, stream);
    let mut line = Vec::with_capacity(512);
    let mut limited = (&mut reader).take(daemon_protocol::MAX_MESSAGE as u64 + 1);
    let read = limited.read_until(b'\n', &mut line);
    match tokio::time::timeout(READ_DEADLINE, read).await {
        Ok(r) => {
            r?;
        }
        Err(_) => {
            tracing::debug!("client sent no request before the deadline");
            return Ok(());
        }
    }
    let (response, then_stop) = match daemon_protocol::decode::<Header>(&line) {
        Err(e) => (bad_request(e), false),
        // Same package: serve.
        Ok(h)
            if h.protocol == daemon_protocol::PROTOCOL
                && h.version == daemon_protocol::PACKAGE_VERSION =>
        {
            match daemon_protocol::decode::<RequestEnvelope>(&line) {
                Ok(env) => dispatch(env.request, &broker, &gits).await,
                Err(e) => (bad_request(e), false),
            }
        }
        // A newer client: exit so it can start its own daemon. An older one is told, and
        // this daemon stays (an old copy of the client must not keep replacing it).
        Ok(h) => {
            let upgrade = daemon_protocol::is_newer(&h.version, daemon_protocol::PACKAGE_VERSION);
            tracing::info!(client = %h.version, upgrade, "client of another version");
            (
                Response::VersionMismatch {
                    daemon: daemon_protocol::PACKAGE_VERSION.into(),
                },
                upgrade,
            )
        }
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialize");
    out.push(b'\n');
    let stream = reader.get_mut();
    let written = stream.write_all(&out).await;
    let _ = stream.flush().await;
    if then_stop {
        stop.cancel();
    }
    written.map_err(Into::into)
}

fn bad_request(e: daemon_protocol::IpcError) -> Response {
    Response::error(ErrorKind::BadRequest, e.to_string())
}

/// The organization a request names, when it is not one Azure DevOps could have: checked as
/// the client's policy checks it, so no caller makes the daemon remember (or log) anything else.
fn invalid_org(req: &Request) -> Option<&str> {
    let org = match req {
        Request::Get { org, .. } | Request::Erase { org, .. } | Request::LoginStart { org, .. } => {
            org
        }
        Request::Logout { org: Some(org) } => org,
        _ => return None,
    };
    (!crate::policy::valid_org(org)).then_some(org.as_str())
}

async fn dispatch(req: Request, broker: &Arc<Broker>, gits: &Gits) -> (Response, bool) {
    if let Some(org) = invalid_org(&req) {
        let shown: String = org.chars().take(60).collect();
        let message = format!(
            "{shown:?} is not an Azure DevOps organization name (letters, digits, '-' and '_', at most 50)"
        );
        return (Response::error(ErrorKind::BadRequest, message), false);
    }
    let r = match req {
        Request::Get {
            org,
            env,
            authtype,
            git,
        } => match broker.get(&org, &env).await {
            Response::Token {
                token, expires_at, ..
            } => Response::Token {
                token,
                expires_at,
                scheme: gits.scheme(authtype, git.as_ref()).await,
            },
            other => other,
        },
        Request::Erase {
            org,
            host,
            token,
            wwwauth,
        } => {
            match broker.erase(&org, &host, token.as_ref(), &wwwauth).await {
                // Refused for good: git's user is told whose token and what to do.
                Some(r) => Response::Error {
                    error: ErrorKind::Denied,
                    message: r.message,
                    retry_in: None,
                    fix: Some(r.fix),
                },
                None => Response::Done,
            }
        }
        Request::LoginStart {
            org,
            host,
            tenant,
            wwwauth,
            browser,
            timeout_secs,
            app,
        } => {
            broker
                .login_start(LoginRequest {
                    org,
                    host,
                    tenant,
                    wwwauth,
                    browser,
                    timeout: Duration::from_secs(timeout_secs.unwrap_or(300).clamp(5, 3600)),
                    app,
                })
                .await
        }
        Request::LoginWait { flow } => broker.login_wait(&flow).await,
        Request::LoginRedirect { flow, url } => broker.login_redirect(&flow, &url).await,
        Request::Logout { org } => broker.logout(org.as_deref()).await,
        Request::Status => broker.status().await,
        Request::Doctor { env, git } => {
            let mut checks = broker.doctor(&env).await;
            checks.push(gits.doctor(git.as_ref()).await);
            Response::Doctor { checks }
        }
        Request::Ping => Response::Pong {
            version: daemon_protocol::PACKAGE_VERSION.into(),
            pid: std::process::id(),
            store: broker.store_description(),
        },
        Request::Shutdown => return (Response::Done, true),
    };
    (r, false)
}
