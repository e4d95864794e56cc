//! Mock Azure DevOps over HTTPS: checks `Authorization` (Bearer or Basic) against
//! a [`MockEntra`] and the organisation's tenant (or, once `accept_legacy` is
//! called, against a [`MockVssps`](super::vssps::MockVssps) and the token's
//! scopes), answers 401 with the real service's challenge headers, serves
//! `_apis/connectionData`, and runs `git http-backend` (CGI) for
//! `/{org}/{project}/_git/{repo}` smart-HTTP paths.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Method, Request, Response};
use serde_json::json;

use super::entra::{ADO_RESOURCE, EntraValidator, MockEntra, TokenInfo};
use super::tls::{HttpsServer, Resp, TestCa, guid, response};
use super::vssps::{LegacyTokenInfo, VsspsValidator};

/// Authorization scheme a request presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    None,
    Bearer,
    Basic,
    Other,
}

/// One request seen by the mock, in arrival order.
#[derive(Clone, Debug)]
pub struct AdoRequest {
    pub method: String,
    pub path: String,
    pub scheme: Scheme,
    pub accepted: bool,
    /// Accepted with a legacy (app.vssps.visualstudio.com) access token.
    pub legacy: bool,
    /// The `Content-Length` it declared (none for a chunked body).
    pub content_length: Option<u64>,
}

impl AdoRequest {
    /// git's 4-byte probe POST (`0000`), sent before a request body larger than
    /// `http.postBuffer` to find out whether the server wants credentials.
    pub fn is_probe(&self) -> bool {
        self.method == "POST" && self.path.ends_with("-pack") && self.content_length == Some(4)
    }
}

/// Scopes of a legacy token that allow reading git repositories.
pub const LEGACY_CODE_READ: &[&str] = &["vso.code", "vso.code_write", "vso.code_full"];
/// Scopes of a legacy token that allow pushing (`git-receive-pack`).
pub const LEGACY_CODE_WRITE: &[&str] = &["vso.code_write", "vso.code_full"];

#[derive(Default)]
struct State {
    org_tenants: HashMap<String, String>,
    /// Organizations that do not exist: every request gets 404.
    missing_orgs: std::collections::HashSet<String>,
    reject_all: bool,
    legacy: Option<VsspsValidator>,
    log: Vec<AdoRequest>,
}

/// Who an accepted request is authenticated as.
struct Caller {
    /// Identity id: the Entra `oid`, or the legacy token's user id.
    id: String,
    name: String,
    /// Sign-in address: the Entra `upn` (empty for apps), or the legacy user's email.
    account: String,
}

impl Caller {
    fn entra(t: &TokenInfo) -> Caller {
        Caller {
            id: t.oid.clone(),
            name: t.name.clone(),
            account: t.upn.clone(),
        }
    }

    fn legacy(t: &LegacyTokenInfo) -> Caller {
        Caller {
            id: t.user_id.clone(),
            name: t.name.clone(),
            account: t.email.clone(),
        }
    }
}

struct Ctx {
    state: Arc<Mutex<State>>,
    entra: EntraValidator,
    root: PathBuf,
    base: String,
    instance_id: String,
}

pub struct MockAdo {
    state: Arc<Mutex<State>>,
    root: PathBuf,
    server: HttpsServer,
}

impl MockAdo {
    /// Serves the repositories under `root` (see [`MockAdo::create_repo`]).
    pub fn start(ca: &TestCa, entra: &MockEntra, root: &Path) -> MockAdo {
        let state = Arc::new(Mutex::new(State::default()));
        let (shared, entra, root_dir) = (state.clone(), entra.validator(), root.to_path_buf());
        let server = HttpsServer::start(
            ca.server_config(),
            || true,
            move |addr| {
                let ctx = Arc::new(Ctx {
                    state: shared,
                    entra,
                    root: root_dir,
                    base: format!("https://{addr}"),
                    instance_id: guid(),
                });
                move |req| handle(ctx.clone(), req)
            },
        );
        MockAdo {
            state,
            root: root.to_path_buf(),
            server,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes an empty bare repository (branch `main`, push allowed) and returns its clone URL.
    pub fn create_repo(&self, org: &str, project: &str, repo: &str) -> String {
        let dir = self.root.join(org).join(project).join("_git").join(repo);
        std::fs::create_dir_all(&dir).unwrap();
        let git = |before: &str, after: &str| {
            let mut cmd = git_command(&self.root);
            cmd.args(before.split_whitespace()).arg(&dir);
            let out = cmd.args(after.split_whitespace()).output().unwrap();
            assert!(
                out.status.success(),
                "git {before} {dir:?} {after}: {out:?}"
            );
        };
        git("-c init.defaultBranch=main init --bare -q", "");
        git("-C", "config http.receivepack true");
        format!("{}/{org}/{project}/_git/{repo}", self.url())
    }

    /// A repository with `branches` branches, each on a commit of its own, so a clone wants
    /// `branches` distinct objects (50 bytes of negotiation each): enough of them make the
    /// request body larger than `http.postBuffer`. Returns its clone URL.
    pub fn create_repo_with_branches(
        &self,
        org: &str,
        project: &str,
        repo: &str,
        branches: usize,
    ) -> String {
        let url = self.create_repo(org, project, repo);
        let dir = self.root.join(org).join(project).join("_git").join(repo);
        let mut stream = String::new();
        for i in 0..branches {
            let msg = format!("branch {i}\n");
            stream.push_str(&format!(
                "commit refs/heads/b{i:05}\ncommitter T <t@example.com> 1700000000 +0000\ndata {}\n{msg}\n",
                msg.len()
            ));
        }
        stream.push_str(
            "commit refs/heads/main\ncommitter T <t@example.com> 1700000000 +0000\ndata 5\nmain\n\n",
        );
        let mut cmd = git_command(&self.root);
        cmd.arg("-C").arg(&dir).args(["fast-import", "--quiet"]);
        let out = super::harness::run_with_input(&mut cmd, stream.as_bytes());
        assert!(out.status.success(), "fast-import: {out:?}");
        url
    }

    /// `org` does not exist: Azure DevOps answers 404 to anything under it, with or without
    /// credentials.
    pub fn set_org_missing(&self, org: &str) {
        let mut st = self.state.lock().unwrap();
        st.missing_orgs.insert(org.to_ascii_lowercase());
    }

    /// Tenant that owns `org` (default [`MockEntra::HOME_TENANT`]).
    pub fn set_org_tenant(&self, org: &str, tenant: &str) {
        let mut st = self.state.lock().unwrap();
        st.org_tenants.insert(org.into(), tenant.into());
    }

    /// Also accepts the access tokens of this legacy OAuth service (app.vssps), in any
    /// organization: git reads need `vso.code`, `vso.code_write` or `vso.code_full`,
    /// pushes `vso.code_write` or `vso.code_full`; anything else (`connectionData`)
    /// just a valid token. Replaces an earlier validator.
    pub fn accept_legacy(&self, validator: VsspsValidator) {
        self.state.lock().unwrap().legacy = Some(validator);
    }

    /// While true every request is 401, valid token or not ("access removed").
    pub fn reject_all(&self, reject: bool) {
        self.state.lock().unwrap().reject_all = reject;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<AdoRequest> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Schemes of the accepted requests, in order.
    pub fn auth_schemes_accepted(&self) -> Vec<Scheme> {
        self.schemes(true)
    }

    /// Schemes of the refused requests, in order.
    pub fn auth_schemes_rejected(&self) -> Vec<Scheme> {
        self.schemes(false)
    }

    fn schemes(&self, accepted: bool) -> Vec<Scheme> {
        let st = self.state.lock().unwrap();
        let log = st.log.iter().filter(|r| r.accepted == accepted);
        log.map(|r| r.scheme).collect()
    }
}

/// `git` with a config isolated from the machine's and the caller's GIT_* variables.
fn git_command(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home).env("GIT_CONFIG_NOSYSTEM", "1");
    cmd
}

fn parse_auth(headers: &HeaderMap) -> (Scheme, Option<String>) {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return (Scheme::None, None);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        (Scheme::Bearer, Some(rest.trim().to_string()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest.trim()).ok();
        let token = decoded
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (user, token) = s.split_once(':')?;
                (!user.is_empty()).then(|| token.to_string())
            });
        (Scheme::Basic, token)
    } else {
        (Scheme::Other, None)
    }
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Option<Resp> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(&org) = segs.first() else {
        return Some(response(404, "text/html", "<html>Not Found</html>"));
    };
    if ctx
        .state
        .lock()
        .unwrap()
        .missing_orgs
        .contains(&org.to_ascii_lowercase())
    {
        return Some(response(
            404,
            "text/html",
            "<html>TF400813: Not Found</html>",
        ));
    }
    let (scheme, token) = parse_auth(req.headers());
    let (tenant, reject_all, legacy) = {
        let st = ctx.state.lock().unwrap();
        let tenant = st.org_tenants.get(org).cloned();
        let tenant = tenant.unwrap_or_else(|| MockEntra::HOME_TENANT.to_string());
        (tenant, st.reject_all, st.legacy.clone())
    };
    let entra_user = token.as_deref().and_then(|t| ctx.entra.validate(t));
    let entra_user = entra_user.filter(|u| u.tid == tenant && u.aud == ADO_RESOURCE);
    let caller = match entra_user {
        Some(u) => Some((Caller::entra(&u), false)),
        None => {
            let needed = legacy_scopes(&segs[1..], req.uri().query());
            let legacy_user = token
                .as_deref()
                .zip(legacy)
                .and_then(|(t, v)| v.validate(t));
            let legacy_user = legacy_user.filter(|u| needed.is_none_or(|s| u.has_any_scope(s)));
            legacy_user.map(|u| (Caller::legacy(&u), true))
        }
    };
    let caller = caller.filter(|_| !reject_all);
    ctx.state.lock().unwrap().log.push(AdoRequest {
        method: method.to_string(),
        path: path.to_string(),
        scheme,
        accepted: caller.is_some(),
        legacy: caller.as_ref().is_some_and(|(_, legacy)| *legacy),
        content_length: req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()),
    });
    let Some((user, _)) = caller else {
        return Some(unauthorized(&ctx.base, org, &tenant));
    };
    Some(match &segs[1..] {
        [] => response(200, "text/html", format!("<html>{org}</html>")),
        ["_apis", "connectionData"] if method == Method::GET => {
            connection_data(&ctx, &user, &tenant)
        }
        [_, "_git", _, "info", "refs"] | [_, "_git", _, "git-upload-pack" | "git-receive-pack"] => {
            http_backend(&ctx, req, &user).await
        }
        _ => response(404, "text/html", "<html>TF400898: Not Found</html>"),
    })
}

/// The scopes of which a legacy token needs one for this path below the organization
/// (`None`: any valid token will do).
fn legacy_scopes(segs: &[&str], query: Option<&str>) -> Option<&'static [&'static str]> {
    let service = |q: &str| {
        let mut pairs = url::form_urlencoded::parse(q.as_bytes());
        pairs
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.into_owned())
    };
    match segs {
        [_, "_git", _, "git-receive-pack"] => Some(LEGACY_CODE_WRITE),
        [_, "_git", _, "info", "refs"]
            if query.and_then(service).as_deref() == Some("git-receive-pack") =>
        {
            Some(LEGACY_CODE_WRITE)
        }
        [_, "_git", _, ..] => Some(LEGACY_CODE_READ),
        _ => None,
    }
}

fn unauthorized(base: &str, org: &str, tenant: &str) -> Resp {
    Response::builder()
        .status(401)
        .header("Content-Type", "text/html; charset=utf-8")
        .header(
            "WWW-Authenticate",
            format!("Bearer authorization_uri=https://login.microsoftonline.com/{tenant}"),
        )
        .header("WWW-Authenticate", format!("Basic realm=\"{base}/\""))
        .header("WWW-Authenticate", "TFS-Federated")
        .header("X-TFS-FedAuthRealm", format!("{base}/"))
        .header("X-TFS-FedAuthIssuer", format!("{base}/{org}/"))
        .header("X-VSS-ResourceTenant", tenant)
        .header("X-VSS-AuthorizationEndpoint", format!("{base}/{org}/"))
        .header("X-TFS-ProcessId", guid())
        .body(Full::new(Bytes::from_static(
            b"<html><head><title>Azure DevOps Services | Sign In</title></head><body>401 - Unauthorized</body></html>",
        )))
        .unwrap()
}

fn connection_data(ctx: &Ctx, user: &Caller, tenant: &str) -> Resp {
    let descriptor = format!(
        "aad.{}",
        STANDARD_NO_PAD.encode(format!("{tenant}\\{}", user.id))
    );
    let identity = json!({
        "id": user.id,
        "descriptor": descriptor,
        "subjectDescriptor": descriptor,
        "providerDisplayName": user.name,
        "isActive": true,
        "properties": {"Account": {"$type": "System.String", "$value": user.account}},
        "resourceVersion": 2,
        "metaTypeId": 0,
    });
    let body = json!({
        "authenticatedUser": identity,
        "authorizedUser": identity,
        "instanceId": ctx.instance_id,
        "deploymentType": "hosted",
        "locationServiceData": {},
    });
    response(200, "application/json; charset=utf-8", body.to_string())
}

/// Runs `git http-backend` as a CGI script for one request.
async fn http_backend(ctx: &Ctx, req: Request<Incoming>, user: &Caller) -> Resp {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return response(400, "text/plain", "bad request body");
    };
    let header = |name: &str| {
        let value = parts.headers.get(name).and_then(|v| v.to_str().ok());
        value.map(str::to_string)
    };
    let mut cmd = git_command(&ctx.root);
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &ctx.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", &user.account)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if parts.method == Method::POST {
        cmd.env("CONTENT_LENGTH", body.len().to_string());
    }
    for (cgi, http) in [
        ("CONTENT_TYPE", "content-type"),
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        ("HTTP_GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(v) = header(http) {
            cmd.env(cgi, v);
        }
    }
    let run = move || {
        let mut child = cmd.spawn()?;
        let mut stdin = child.stdin.take().unwrap();
        // Feed stdin from another thread so a chatty backend cannot deadlock us.
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let out = child.wait_with_output();
        let _ = writer.join();
        out
    };
    let out = match tokio::task::spawn_blocking(run).await {
        Ok(Ok(out)) => out,
        other => return response(500, "text/plain", format!("git http-backend: {other:?}")),
    };
    if !out.status.success() || !out.stderr.is_empty() {
        eprintln!(
            "mock ado: git http-backend {} {}: {}: {}",
            parts.method,
            parts.uri,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_cgi(&out.stdout)
}

/// CGI output: headers up to a blank line (`Status:` sets the status), then the body.
fn parse_cgi(out: &[u8]) -> Resp {
    let split = |sep: &[u8]| {
        out.windows(sep.len())
            .position(|w| w == sep)
            .map(|i| (i, i + sep.len()))
    };
    let Some((head_end, body_start)) = split(b"\r\n\r\n").or_else(|| split(b"\n\n")) else {
        return response(502, "text/plain", "malformed CGI response");
    };
    let mut status = 200;
    let mut builder = Response::builder();
    for line in String::from_utf8_lossy(&out[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value.get(..3).and_then(|s| s.parse().ok()).unwrap_or(500);
        } else {
            builder = builder.header(name, value);
        }
    }
    let body = Bytes::copy_from_slice(&out[body_start..]);
    builder.status(status).body(Full::new(body)).unwrap()
}
