//! Mock Microsoft Entra ID (login.microsoftonline.com v2.0 endpoints) over HTTPS:
//! the device-code flow, refresh-token grants with rotation and revocation,
//! JWT-shaped access tokens that `validate` recognises, request counters, and
//! fault switches (down, HTTP status, slow, garbage).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Value, json};

use super::tls::{HttpsServer, Resp, TestCa, guid, guid_from, is_guid, random_bytes};
use super::tls::{response, timestamp, unix_now};
use hyper::StatusCode;

/// Azure DevOps' resource (application) id: the `aud` of tokens meant for it.
pub const ADO_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const GRAPH_RESOURCE: &str = "00000003-0000-0000-c000-000000000000";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What the mock does to every request.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Fault {
    #[default]
    None,
    /// Close every connection without a response (right after TCP accept).
    Down,
    /// Answer this status with `temporarily_unavailable`, plus `Retry-After` if given.
    Status(u16, Option<u64>),
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// 200 with `<html>not json</html>`.
    Garbage,
}

/// What a valid access token says (see [`MockEntra::validate`]).
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub tid: String,
    pub oid: String,
    pub upn: String,
    pub name: String,
    pub aud: String,
    pub appid: String,
    /// `exp` claim, seconds since the Unix epoch.
    pub exp: u64,
    expires_at: SystemTime,
}

/// One request to the token endpoint, in arrival order.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub grant_type: String,
    pub tenant: String,
    pub at: SystemTime,
    pub status: u16,
}

/// Counters and the last values seen, as returned by [`MockEntra::stats`].
#[derive(Clone, Debug, Default)]
pub struct EntraStats {
    pub devicecode_requests: usize,
    /// Device-code grant requests (polls), answered or not.
    pub device_code_polls: usize,
    /// Successful refresh-token grants.
    pub refresh_ok: usize,
    /// Refused refresh-token grants (reused, revoked, unknown...).
    pub refresh_refused: usize,
    /// Connections closed by `Fault::Down`.
    pub dropped_connections: usize,
    /// Tenant path segment of the last devicecode/token request.
    pub last_tenant: Option<String>,
    /// Scope of the last devicecode request.
    pub last_scope: Option<String>,
    /// `claims` parameter of the last refresh grant.
    pub last_claims: Option<String>,
    pub last_user_code: Option<String>,
    /// Every token-endpoint request, faulted ones included.
    pub token_requests: Vec<TokenRequest>,
}

#[derive(Clone, Copy, PartialEq)]
enum Approval {
    Pending,
    Approved,
    Declined,
}

#[derive(Clone)]
struct User {
    name: String,
    upn: String,
}

struct DeviceCode {
    user_code: String,
    client_id: String,
    tenant: String,
    scope: String,
    expires_at: Instant,
    polls: u32,
    approval: Approval,
    redeemed: bool,
}

struct Refresh {
    client_id: String,
    scope: String,
    user: User,
    issued: u64,
    used: bool,
    revoked: bool,
}

struct Settings {
    fault: Fault,
    interval: u64,
    auto_approve_after_polls: u32,
    strict_rotation: bool,
    token_lifetime: Duration,
    device_code_lifetime: Duration,
    user: User,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fault: Fault::None,
            interval: 1,
            auto_approve_after_polls: 1,
            strict_rotation: true,
            token_lifetime: Duration::from_secs(3600),
            device_code_lifetime: Duration::from_secs(900),
            user: User {
                name: "Ada Lovelace".into(),
                upn: "ada@contoso.example".into(),
            },
        }
    }
}

#[derive(Default)]
struct State {
    cfg: Settings,
    stats: EntraStats,
    device_codes: HashMap<String, DeviceCode>,
    refresh_tokens: HashMap<String, Refresh>,
    access_tokens: HashMap<String, TokenInfo>,
}

/// Checks access tokens issued by a [`MockEntra`]; cheap to clone, outlives the server.
#[derive(Clone)]
pub struct EntraValidator(Arc<Mutex<State>>);

impl EntraValidator {
    /// `Some` only for a token this mock issued whose expiry is still in the future.
    pub fn validate(&self, token: &str) -> Option<TokenInfo> {
        let st = self.0.lock().unwrap();
        let info = st.access_tokens.get(token)?;
        (info.expires_at > SystemTime::now()).then(|| info.clone())
    }
}

/// The mock authority; give [`MockEntra::url`] to the product as `AZURE_AUTHORITY_HOST`.
pub struct MockEntra {
    state: Arc<Mutex<State>>,
    server: HttpsServer,
}

impl MockEntra {
    /// Tenant of the mock's only user; used when the URL names `organizations`/`common`.
    pub const HOME_TENANT: &'static str = "3c6d1b2a-8e4f-4a7b-9c1d-5e2f7a8b9c0d";
    /// For `set_auto_approve_after_polls`: only `approve()` approves.
    pub const MANUAL_APPROVAL: u32 = u32::MAX;

    pub fn start(ca: &TestCa) -> MockEntra {
        let state = Arc::new(Mutex::new(State::default()));
        let gate = state.clone();
        let accept = move || {
            let mut st = gate.lock().unwrap();
            let down = st.cfg.fault == Fault::Down;
            st.stats.dropped_connections += usize::from(down);
            !down
        };
        let shared = state.clone();
        let server = HttpsServer::start(ca.server_config(), accept, move |_| {
            move |req| handle(shared.clone(), req)
        });
        MockEntra { state, server }
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    pub fn validator(&self) -> EntraValidator {
        EntraValidator(self.state.clone())
    }

    pub fn validate(&self, token: &str) -> Option<TokenInfo> {
        self.validator().validate(token)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EntraStats {
        self.with(|s| s.stats.clone())
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.with(|s| s.cfg.fault = fault)
    }
    /// Polling interval advertised by the devicecode endpoint (default 1 s).
    pub fn set_interval(&self, secs: u64) {
        self.with(|s| s.cfg.interval = secs)
    }
    /// Device-code polls answered `authorization_pending` before success (default 1).
    pub fn set_auto_approve_after_polls(&self, polls: u32) {
        self.with(|s| s.cfg.auto_approve_after_polls = polls)
    }
    /// Refuse a refresh token used a second time (AADSTS70008); default true.
    pub fn set_strict_rotation(&self, strict: bool) {
        self.with(|s| s.cfg.strict_rotation = strict)
    }
    /// Lifetime of new access tokens (default 3600 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.token_lifetime = lifetime)
    }
    /// Lifetime of new device codes (default 900 s).
    pub fn set_device_code_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.device_code_lifetime = lifetime)
    }
    /// Identity of tokens issued from now on (default Ada Lovelace, ada@contoso.example).
    pub fn set_user(&self, name: &str, upn: &str) {
        let user = User {
            name: name.into(),
            upn: upn.into(),
        };
        self.with(|s| s.cfg.user = user)
    }
    /// Approves a pending device code; false if the user code is unknown.
    pub fn approve(&self, user_code: &str) -> bool {
        self.set_approval(user_code, Approval::Approved)
    }
    /// Declines a pending device code; false if the user code is unknown.
    pub fn decline(&self, user_code: &str) -> bool {
        self.set_approval(user_code, Approval::Declined)
    }
    fn set_approval(&self, user_code: &str, approval: Approval) -> bool {
        self.with(|s| {
            let codes = s.device_codes.values_mut();
            let found = codes.filter(|d| d.user_code == user_code);
            found.map(|d| d.approval = approval).count() > 0
        })
    }
    /// Every refresh token issued so far is refused from now on (AADSTS50173).
    pub fn revoke_all_refresh_tokens(&self) {
        self.with(|s| s.refresh_tokens.values_mut().for_each(|r| r.revoked = true))
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Option<Resp> {
    let fault = state.lock().unwrap().cfg.fault.clone();
    match fault {
        Fault::Down => return None,
        Fault::Slow(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let body = req.into_body().collect().await.ok()?.to_bytes();
    let form: Form = url::form_urlencoded::parse(&body).into_owned().collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (tenant, endpoint) = match segs.as_slice() {
        [t, "oauth2", "v2.0", e @ ("devicecode" | "token")] => (t.to_string(), *e),
        _ => return Some(response(404, "text/html", "<html>Not Found</html>")),
    };
    let mut st = state.lock().unwrap();
    st.stats.last_tenant = Some(tenant.clone());
    let resp = match fault {
        Fault::Status(code, retry_after) => {
            let mut r = aad("temporarily_unavailable", 90033, "");
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            if let Some(secs) = retry_after {
                r.headers_mut().insert("Retry-After", secs.into());
            }
            r
        }
        Fault::Garbage => response(200, "text/html", "<html>not json</html>"),
        _ if method != Method::POST => aad("invalid_request", 900561, ""),
        _ if endpoint == "devicecode" => st.devicecode(&tenant, &form),
        _ => st.token(&tenant, &form),
    };
    if endpoint == "token" {
        st.stats.token_requests.push(TokenRequest {
            grant_type: form.get("grant_type").cloned().unwrap_or_default(),
            tenant,
            at: SystemTime::now(),
            status: resp.status().as_u16(),
        });
    }
    Some(resp)
}

type Form = HashMap<String, String>;

fn json_response(status: u16, body: &Value) -> Resp {
    let mut r = response(status, "application/json; charset=utf-8", body.to_string());
    let no_store = "no-store, no-cache".parse().unwrap();
    r.headers_mut().insert("Cache-Control", no_store);
    r
}

/// A 400 with an Entra v2 error body; `arg` fills the `{}` of the message.
fn aad(error: &str, code: u32, arg: &str) -> Resp {
    let message = match code {
        70000 if error == "authorization_declined" => "The user has declined to authorize the request.",
        70000 => "Provided grant is invalid or malformed.",
        70003 => "The app requested an unsupported grant type '{}'.",
        70008 => "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        70016 => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        70019 => "Verification code expired.",
        50173 => "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}'.",
        54005 => "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        90033 => "A transient error has occurred. Please try again.",
        900144 => "The request body must contain the following parameter: '{}'.",
        900561 => "The endpoint only accepts POST requests.",
        _ => "Invalid request. Request is malformed or invalid.",
    }
    .replace("{}", arg);
    let (ts, trace, corr) = (timestamp(unix_now()), guid(), guid());
    let description = format!(
        "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"
    );
    json_response(
        400,
        &json!({
            "error": error, "error_description": description, "error_codes": [code],
            "timestamp": ts, "trace_id": trace, "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

impl State {
    fn devicecode(&mut self, tenant: &str, form: &Form) -> Resp {
        self.stats.devicecode_requests += 1;
        let (Some(client_id), Some(scope)) = (form.get("client_id"), form.get("scope")) else {
            let param = if form.contains_key("client_id") {
                "scope"
            } else {
                "client_id"
            };
            return aad("invalid_request", 900144, param);
        };
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let user_code: String = random_bytes(8)
            .iter()
            .map(|b| ALNUM[*b as usize % ALNUM.len()] as char)
            .collect();
        let device_code = format!("DAQABIQEAAAD{}", URL_SAFE_NO_PAD.encode(random_bytes(150)));
        self.stats.last_scope = Some(scope.clone());
        self.stats.last_user_code = Some(user_code.clone());
        let lifetime = self.cfg.device_code_lifetime;
        let dc = DeviceCode {
            user_code: user_code.clone(),
            client_id: client_id.clone(),
            tenant: tenant.to_string(),
            scope: scope.clone(),
            expires_at: Instant::now() + lifetime,
            polls: 0,
            approval: Approval::Pending,
            redeemed: false,
        };
        self.device_codes.insert(device_code.clone(), dc);
        let uri = "https://microsoft.com/devicelogin";
        json_response(
            200,
            &json!({
                "user_code": user_code, "device_code": device_code, "verification_uri": uri,
                "expires_in": lifetime.as_secs(), "interval": self.cfg.interval,
                "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
            }),
        )
    }

    fn token(&mut self, tenant: &str, form: &Form) -> Resp {
        let Some(client_id) = form.get("client_id") else {
            return aad("invalid_request", 900144, "client_id");
        };
        match form.get("grant_type").map(String::as_str) {
            None => aad("invalid_request", 900144, "grant_type"),
            Some(DEVICE_CODE_GRANT) => self.device_code_grant(tenant, client_id, form),
            Some("refresh_token") => self.refresh_grant(tenant, client_id, form),
            Some(other) => aad("unsupported_grant_type", 70003, other),
        }
    }

    fn device_code_grant(&mut self, tenant: &str, client_id: &str, form: &Form) -> Resp {
        self.stats.device_code_polls += 1;
        let Some(code) = form.get("device_code") else {
            return aad("invalid_request", 900144, "device_code");
        };
        let auto = self.cfg.auto_approve_after_polls;
        let Some(dc) = self.device_codes.get_mut(code) else {
            return aad("invalid_grant", 70000, "");
        };
        if dc.redeemed {
            return aad("invalid_grant", 54005, "");
        }
        if dc.client_id != client_id || dc.tenant != tenant {
            return aad("invalid_grant", 70000, "");
        }
        dc.polls += 1;
        if Instant::now() >= dc.expires_at {
            return aad("expired_token", 70019, "");
        }
        match dc.approval {
            Approval::Declined => return aad("authorization_declined", 70000, ""),
            Approval::Pending if dc.polls <= auto => {
                return aad("authorization_pending", 70016, "");
            }
            _ => dc.redeemed = true,
        }
        let scope = dc.scope.clone();
        let offline = scope.split(' ').any(|s| s == "offline_access");
        let user = self.cfg.user.clone();
        self.issue(tenant, client_id, &scope, user, offline)
    }

    fn refresh_grant(&mut self, tenant: &str, client_id: &str, form: &Form) -> Resp {
        let Some(rt) = form.get("refresh_token") else {
            return aad("invalid_request", 900144, "refresh_token");
        };
        self.stats.last_claims = form.get("claims").cloned();
        let strict = self.cfg.strict_rotation;
        let refused = match self.refresh_tokens.get_mut(rt) {
            None => Some(aad("invalid_grant", 9002313, "")),
            Some(r) if r.revoked => Some(aad("invalid_grant", 50173, &timestamp(r.issued))),
            Some(r) if r.client_id != client_id => Some(aad("invalid_grant", 70000, "")),
            Some(r) if r.used && strict => Some(aad("invalid_grant", 70008, "")),
            Some(r) => {
                r.used = true;
                None
            }
        };
        if let Some(resp) = refused {
            self.stats.refresh_refused += 1;
            return resp;
        }
        self.stats.refresh_ok += 1;
        let r = &self.refresh_tokens[rt];
        let scope = form.get("scope").unwrap_or(&r.scope).clone();
        let user = r.user.clone();
        self.issue(tenant, client_id, &scope, user, true)
    }

    fn issue(
        &mut self,
        tenant: &str,
        client_id: &str,
        scope: &str,
        user: User,
        refresh: bool,
    ) -> Resp {
        let tid = match is_guid(tenant) {
            true => tenant.to_ascii_lowercase(),
            false => MockEntra::HOME_TENANT.to_string(),
        };
        let ado = scope.contains(ADO_RESOURCE);
        let aud = if ado { ADO_RESOURCE } else { GRAPH_RESOURCE };
        let (now, lifetime) = (unix_now(), self.cfg.token_lifetime);
        let info = TokenInfo {
            tid: tid.clone(),
            oid: oid_for(&user.upn),
            upn: user.upn.clone(),
            name: user.name.clone(),
            aud: aud.into(),
            appid: client_id.into(),
            exp: now + lifetime.as_secs(),
            expires_at: SystemTime::now() + lifetime,
        };
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "mock"});
        let payload = json!({
            "aud": aud, "iss": format!("https://sts.windows.net/{tid}/"),
            "iat": now, "nbf": now, "exp": info.exp, "name": user.name, "upn": user.upn,
            "unique_name": user.upn, "oid": info.oid, "tid": tid,
            "scp": "user_impersonation", "appid": client_id, "ver": "1.0",
        });
        let [h, p] = [header, payload].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
        let token = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(random_bytes(32)));
        self.access_tokens.insert(token.clone(), info);
        let granted = match ado {
            true => format!("{ADO_RESOURCE}/user_impersonation {ADO_RESOURCE}/.default"),
            false => scope.to_string(),
        };
        let mut body = json!({
            "token_type": "Bearer", "scope": granted, "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(), "access_token": token,
        });
        if refresh {
            let rt = format!("1.A{}", URL_SAFE_NO_PAD.encode(random_bytes(120)));
            let entry = Refresh {
                client_id: client_id.into(),
                scope: scope.into(),
                user,
                issued: now,
                used: false,
                revoked: false,
            };
            self.refresh_tokens.insert(rt.clone(), entry);
            body["refresh_token"] = rt.into();
        }
        json_response(200, &body)
    }
}

/// A stable object id per user principal name (FNV-1a, two seeds).
fn oid_for(upn: &str) -> String {
    let fnv = |seed: u64| {
        let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        upn.bytes().fold(seed, step).to_be_bytes()
    };
    guid_from(&[fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4)].concat())
}
