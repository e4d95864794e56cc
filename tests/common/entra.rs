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

/// Azure DevOps' resource (application) id: the `aud` of tokens meant for it.
pub const ADO_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const GRAPH_RESOURCE: &str = "00000003-0000-0000-c000-000000000000";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What the mock does to every request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
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

#[derive(Clone, Copy, PartialEq)]
enum Approval {
    Pending,
    Approved,
    Declined,
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
    name: String,
    upn: String,
    issued: u64,
    used: bool,
    revoked: bool,
}

struct State {
    fault: Fault,
    interval: u64,
    auto_approve_after_polls: u32,
    strict_rotation: bool,
    token_lifetime: Duration,
    device_code_lifetime: Duration,
    name: String,
    upn: String,
    device_codes: HashMap<String, DeviceCode>,
    refresh_tokens: HashMap<String, Refresh>,
    access_tokens: HashMap<String, TokenInfo>,
    devicecode_requests: usize,
    device_code_polls: usize,
    refresh_ok: usize,
    refresh_refused: usize,
    dropped_connections: usize,
    last_tenant: Option<String>,
    last_scope: Option<String>,
    last_claims: Option<String>,
    last_user_code: Option<String>,
    token_requests: Vec<TokenRequest>,
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
        let state = Arc::new(Mutex::new(State {
            fault: Fault::None,
            interval: 1,
            auto_approve_after_polls: 1,
            strict_rotation: true,
            token_lifetime: Duration::from_secs(3600),
            device_code_lifetime: Duration::from_secs(900),
            name: "Ada Lovelace".into(),
            upn: "ada@contoso.example".into(),
            device_codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            devicecode_requests: 0,
            device_code_polls: 0,
            refresh_ok: 0,
            refresh_refused: 0,
            dropped_connections: 0,
            last_tenant: None,
            last_scope: None,
            last_claims: None,
            last_user_code: None,
            token_requests: Vec::new(),
        }));
        let gate = state.clone();
        let accept = move || {
            let mut st = gate.lock().unwrap();
            let down = st.fault == Fault::Down;
            st.dropped_connections += usize::from(down);
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

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.with(|s| s.fault = fault)
    }
    /// Polling interval advertised by the devicecode endpoint (default 1 s).
    pub fn set_interval(&self, secs: u64) {
        self.with(|s| s.interval = secs)
    }
    /// Device-code polls answered `authorization_pending` before success (default 1).
    pub fn set_auto_approve_after_polls(&self, polls: u32) {
        self.with(|s| s.auto_approve_after_polls = polls)
    }
    /// Refuse a refresh token used a second time (AADSTS70008); default true.
    pub fn set_strict_rotation(&self, strict: bool) {
        self.with(|s| s.strict_rotation = strict)
    }
    /// Lifetime of new access tokens (default 3600 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.token_lifetime = lifetime)
    }
    /// Lifetime of new device codes (default 900 s).
    pub fn set_device_code_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.device_code_lifetime = lifetime)
    }
    /// Identity put in tokens issued from now on (default Ada Lovelace, ada@contoso.example).
    pub fn set_user(&self, name: &str, upn: &str) {
        self.with(|s| (s.name, s.upn) = (name.into(), upn.into()))
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
            s.device_codes
                .values_mut()
                .filter(|d| d.user_code == user_code)
                .map(|d| d.approval = approval)
                .count()
                > 0
        })
    }
    /// Every refresh token issued so far is refused from now on (AADSTS50173).
    pub fn revoke_all_refresh_tokens(&self) {
        self.with(|s| s.refresh_tokens.values_mut().for_each(|r| r.revoked = true))
    }

    pub fn devicecode_requests(&self) -> usize {
        self.with(|s| s.devicecode_requests)
    }
    pub fn device_code_polls(&self) -> usize {
        self.with(|s| s.device_code_polls)
    }
    /// Successful refresh-token grants.
    pub fn refresh_ok(&self) -> usize {
        self.with(|s| s.refresh_ok)
    }
    /// Refused refresh-token grants (reused, revoked, unknown...).
    pub fn refresh_refused(&self) -> usize {
        self.with(|s| s.refresh_refused)
    }
    /// Connections closed by `Fault::Down`.
    pub fn dropped_connections(&self) -> usize {
        self.with(|s| s.dropped_connections)
    }
    /// Tenant path segment of the last devicecode/token request.
    pub fn last_tenant(&self) -> Option<String> {
        self.with(|s| s.last_tenant.clone())
    }
    /// Scope of the last devicecode request.
    pub fn last_scope(&self) -> Option<String> {
        self.with(|s| s.last_scope.clone())
    }
    /// `claims` parameter of the last refresh grant.
    pub fn last_claims(&self) -> Option<String> {
        self.with(|s| s.last_claims.clone())
    }
    pub fn last_user_code(&self) -> Option<String> {
        self.with(|s| s.last_user_code.clone())
    }
    /// Every token-endpoint request so far, faulted ones included.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.with(|s| s.token_requests.clone())
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Option<Resp> {
    let fault = state.lock().unwrap().fault.clone();
    match fault {
        Fault::Down => return None,
        Fault::Slow(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let body = req.into_body().collect().await.ok()?.to_bytes();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (tenant, endpoint) = match segs.as_slice() {
        [t, "oauth2", "v2.0", e @ ("devicecode" | "token")] => (t.to_string(), *e),
        _ => return Some(response(404, "text/html", "<html>Not Found</html>")),
    };
    let mut st = state.lock().unwrap();
    st.last_tenant = Some(tenant.clone());
    let resp = match fault {
        Fault::Status(code, retry_after) => {
            let mut r = error(
                code,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            );
            if let Some(secs) = retry_after {
                r.headers_mut().insert("Retry-After", secs.into());
            }
            r
        }
        Fault::Garbage => response(200, "text/html", "<html>not json</html>"),
        _ if method != Method::POST => error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        ),
        _ if endpoint == "devicecode" => st.devicecode(&tenant, &form),
        _ => st.token(&tenant, &form),
    };
    if endpoint == "token" {
        st.token_requests.push(TokenRequest {
            grant_type: form.get("grant_type").cloned().unwrap_or_default(),
            tenant,
            at: SystemTime::now(),
            status: resp.status().as_u16(),
        });
    }
    Some(resp)
}

fn json_response(status: u16, body: &Value) -> Resp {
    let mut r = response(status, "application/json; charset=utf-8", body.to_string());
    r.headers_mut()
        .insert("Cache-Control", "no-store, no-cache".parse().unwrap());
    r
}

/// An Entra v2 error body: `{"error", "error_description": "AADSTSnnn: ...", "error_codes", ...}`.
fn error(status: u16, error: &str, code: u32, message: &str) -> Resp {
    let (ts, trace, corr) = (timestamp(unix_now()), guid(), guid());
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"
            ),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn missing(param: &str) -> Resp {
    let msg = format!("The request body must contain the following parameter: '{param}'.");
    error(400, "invalid_request", 900144, &msg)
}

fn malformed_grant() -> Resp {
    error(
        400,
        "invalid_grant",
        70000,
        "Provided grant is invalid or malformed.",
    )
}

impl State {
    fn devicecode(&mut self, tenant: &str, form: &HashMap<String, String>) -> Resp {
        self.devicecode_requests += 1;
        let Some(client_id) = form.get("client_id") else {
            return missing("client_id");
        };
        let Some(scope) = form.get("scope") else {
            return missing("scope");
        };
        self.last_scope = Some(scope.clone());
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let user_code: String = random_bytes(8)
            .iter()
            .map(|b| ALNUM[*b as usize % ALNUM.len()] as char)
            .collect();
        let device_code = format!("DAQABIQEAAAD{}", URL_SAFE_NO_PAD.encode(random_bytes(150)));
        self.last_user_code = Some(user_code.clone());
        self.device_codes.insert(
            device_code.clone(),
            DeviceCode {
                user_code: user_code.clone(),
                client_id: client_id.clone(),
                tenant: tenant.to_string(),
                scope: scope.clone(),
                expires_at: Instant::now() + self.device_code_lifetime,
                polls: 0,
                approval: Approval::Pending,
                redeemed: false,
            },
        );
        let uri = "https://microsoft.com/devicelogin";
        json_response(
            200,
            &json!({
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": uri,
                "expires_in": self.device_code_lifetime.as_secs(),
                "interval": self.interval,
                "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
            }),
        )
    }

    fn token(&mut self, tenant: &str, form: &HashMap<String, String>) -> Resp {
        let Some(client_id) = form.get("client_id") else {
            return missing("client_id");
        };
        match form.get("grant_type").map(String::as_str) {
            None => missing("grant_type"),
            Some(DEVICE_CODE_GRANT) => self.device_code_grant(tenant, client_id, form),
            Some("refresh_token") => self.refresh_grant(tenant, client_id, form),
            Some(other) => error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            ),
        }
    }

    fn device_code_grant(
        &mut self,
        tenant: &str,
        client_id: &str,
        form: &HashMap<String, String>,
    ) -> Resp {
        self.device_code_polls += 1;
        let Some(code) = form.get("device_code") else {
            return missing("device_code");
        };
        let auto = self.auto_approve_after_polls;
        let Some(dc) = self.device_codes.get_mut(code) else {
            return error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the input parameter 'device_code' is not valid.",
            );
        };
        if dc.redeemed {
            return error(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            );
        }
        if dc.client_id != client_id || dc.tenant != tenant {
            return malformed_grant();
        }
        dc.polls += 1;
        if Instant::now() >= dc.expires_at {
            return error(400, "expired_token", 70019, "Verification code expired.");
        }
        match dc.approval {
            Approval::Declined => {
                return error(
                    400,
                    "authorization_declined",
                    70000,
                    "The user has declined to authorize the request.",
                );
            }
            Approval::Pending if dc.polls <= auto => {
                return error(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                );
            }
            _ => {}
        }
        dc.redeemed = true;
        let scope = dc.scope.clone();
        let (name, upn) = (self.name.clone(), self.upn.clone());
        let offline = scope.split(' ').any(|s| s == "offline_access");
        self.issue(tenant, client_id, &scope, &name, &upn, offline)
    }

    fn refresh_grant(
        &mut self,
        tenant: &str,
        client_id: &str,
        form: &HashMap<String, String>,
    ) -> Resp {
        let Some(rt) = form.get("refresh_token") else {
            return missing("refresh_token");
        };
        self.last_claims = form.get("claims").cloned();
        let strict = self.strict_rotation;
        let refused = match self.refresh_tokens.get_mut(rt) {
            None => Some(error(
                400,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            )),
            Some(r) if r.revoked => {
                let issued = timestamp(r.issued);
                Some(error(
                    400,
                    "invalid_grant",
                    50173,
                    &format!(
                        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{issued}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                        timestamp(unix_now())
                    ),
                ))
            }
            Some(r) if r.client_id != client_id => Some(malformed_grant()),
            Some(r) if r.used && strict => Some(error(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            )),
            Some(r) => {
                r.used = true;
                None
            }
        };
        if let Some(resp) = refused {
            self.refresh_refused += 1;
            return resp;
        }
        self.refresh_ok += 1;
        let r = &self.refresh_tokens[rt];
        let scope = form.get("scope").unwrap_or(&r.scope).clone();
        let (name, upn) = (r.name.clone(), r.upn.clone());
        self.issue(tenant, client_id, &scope, &name, &upn, true)
    }

    fn issue(
        &mut self,
        tenant: &str,
        client_id: &str,
        scope: &str,
        name: &str,
        upn: &str,
        with_refresh: bool,
    ) -> Resp {
        let tid = if is_guid(tenant) {
            tenant.to_ascii_lowercase()
        } else {
            MockEntra::HOME_TENANT.to_string()
        };
        let aud = if scope.contains(ADO_RESOURCE) {
            ADO_RESOURCE
        } else {
            GRAPH_RESOURCE
        };
        let (now, lifetime) = (unix_now(), self.token_lifetime.as_secs());
        let info = TokenInfo {
            tid: tid.clone(),
            oid: oid_for(upn),
            upn: upn.into(),
            name: name.into(),
            aud: aud.into(),
            appid: client_id.into(),
            exp: now + lifetime,
            expires_at: SystemTime::now() + self.token_lifetime,
        };
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "mock"});
        let payload = json!({
            "aud": aud, "iss": format!("https://sts.windows.net/{tid}/"),
            "iat": now, "nbf": now, "exp": info.exp,
            "name": name, "upn": upn, "unique_name": upn, "oid": info.oid, "tid": tid,
            "scp": "user_impersonation", "appid": client_id, "ver": "1.0",
        });
        let b64 = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes()),
            b64(&random_bytes(32))
        );
        self.access_tokens.insert(token.clone(), info);
        let granted = if aud == ADO_RESOURCE {
            format!("{ADO_RESOURCE}/user_impersonation {ADO_RESOURCE}/.default")
        } else {
            scope.to_string()
        };
        let mut body = json!({
            "token_type": "Bearer", "scope": granted,
            "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token,
        });
        if with_refresh {
            let rt = format!("1.A{}", URL_SAFE_NO_PAD.encode(random_bytes(120)));
            let refresh = Refresh {
                client_id: client_id.into(),
                scope: scope.into(),
                name: name.into(),
                upn: upn.into(),
                issued: now,
                used: false,
                revoked: false,
            };
            self.refresh_tokens.insert(rt.clone(), refresh);
            body["refresh_token"] = rt.into();
        }
        json_response(200, &body)
    }
}

/// A stable object id per user principal name (FNV-1a, two seeds).
fn oid_for(upn: &str) -> String {
    let fnv = |seed: u64| {
        upn.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let bytes: Vec<u8> = [fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4)]
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect();
    guid_from(&bytes)
}
