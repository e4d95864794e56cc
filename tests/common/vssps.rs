//! Mock of the legacy Azure DevOps OAuth 2.0 service (app.vssps.visualstudio.com)
//! over HTTPS: registered apps (callback URL, scopes, JWT-shaped client secret),
//! `GET /oauth2/authorize` (`response_type=Assertion`, exact callback match, scopes
//! within the registration), `POST /oauth2/token` with the JWT-bearer assertion
//! grant (authorization code) and the refresh-token grant (strict rotation,
//! revocation), JWT-shaped access tokens that [`VsspsValidator`] (hence `MockAdo`,
//! see `MockAdo::accept_legacy`) recognises, counters, and fault switches.
//!
//! Wire format as the real service: token requests are form-encoded with
//! `client_assertion_type`, `client_assertion` (the client secret), `grant_type`,
//! `assertion` and `redirect_uri`; a success is JSON whose `expires_in` is a
//! *string*; errors are JSON `{"Error": ..., "ErrorDescription": ...}`.
//!
//! Every secret it issues (client secrets, codes, access and refresh tokens) or is shown goes
//! into its world's ledger (see [`MockVssps::secrets`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::entra::{AuthorizeOutcome, Fault, JWT_BEARER_ASSERTION};
use super::secrets::{SecretKind, SecretRecord, Secrets};
use super::tls::{HttpsServer, Resp, TestCa, guid, random_bytes, response, unix_now};
use super::tls::{html_escape, html_response};

/// `grant_type` that redeems an authorization code (sent as `assertion`).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `iss` and `aud` of every token the service issues.
pub const VSTOKEN_ISSUER: &str = "app.vstoken.visualstudio.com";
/// Scope the service adds to every grant it answers.
pub const AUTHORIZATION_GRANT_SCOPE: &str = "vso.authorization_grant";

/// What a valid legacy access token says (see [`VsspsValidator::validate`]).
#[derive(Clone, Debug)]
pub struct LegacyTokenInfo {
    /// `nameid` claim: the user's id (a GUID, stable per mock).
    pub user_id: String,
    /// Display name of the user (not in the token; what Azure DevOps would show).
    pub name: String,
    /// The user's email (sign-in address).
    pub email: String,
    /// `appid` claim.
    pub app_id: String,
    /// `scp` claim, split on spaces (the granted scopes, without `vso.authorization_grant`).
    pub scopes: Vec<String>,
    /// `exp` claim, seconds since the Unix epoch.
    pub exp: u64,
    expires_at: SystemTime,
}

impl LegacyTokenInfo {
    /// True when the token carries any of `scopes`.
    pub fn has_any_scope(&self, scopes: &[&str]) -> bool {
        self.scopes.iter().any(|s| scopes.contains(&s.as_str()))
    }
}

/// Counters and the last values seen, as returned by [`MockVssps::stats`].
#[derive(Clone, Debug, Default)]
pub struct VsspsStats {
    /// Authorize-endpoint requests, valid or not (`Fault::Down` ones never arrive).
    pub authorize_requests: usize,
    /// Query parameters of the last authorize request.
    pub last_authorize: Option<BTreeMap<String, String>>,
    /// Successful code redemptions (`grant_type=...:jwt-bearer`).
    pub code_ok: usize,
    /// Refused code redemptions, whatever the reason (client secret, missing field,
    /// callback, unknown, spent, expired or other app's code...); faults not included.
    pub code_refused: usize,
    /// Successful refresh-token grants.
    pub refresh_ok: usize,
    /// Refused refresh-token grants, whatever the reason (client secret, callback,
    /// unknown, reused, revoked, other app's token...); faults not included.
    pub refresh_refused: usize,
    /// Token-endpoint requests, faulted ones included.
    pub token_requests: usize,
    /// Form fields of the last token-endpoint request (faulted ones included).
    pub last_token_form: Option<BTreeMap<String, String>>,
    /// The `Error` value of the last error answer of the token endpoint.
    pub last_error: Option<String>,
    /// Connections closed by `Fault::Down`.
    pub dropped_connections: usize,
}

#[derive(Clone)]
struct User {
    name: String,
    email: String,
}

/// An app registered with the service.
#[derive(Clone)]
struct App {
    callback: String,
    scopes: Vec<String>,
    secret: String,
}

struct Code {
    app_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    user: User,
    expires_at: Instant,
    redeemed: bool,
}

struct Refresh {
    app_id: String,
    scopes: Vec<String>,
    user: User,
    used: bool,
    revoked: bool,
}

struct Settings {
    fault: Fault,
    authorize_outcome: AuthorizeOutcome,
    token_lifetime: Duration,
    code_lifetime: Duration,
    strict_rotation: bool,
    user: User,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fault: Fault::None,
            authorize_outcome: AuthorizeOutcome::Approve,
            token_lifetime: Duration::from_secs(3599),
            code_lifetime: Duration::from_secs(15 * 60),
            strict_rotation: true,
            user: User {
                name: "Grace Hopper".into(),
                email: "grace@fabrikam.example".into(),
            },
        }
    }
}

struct State {
    cfg: Settings,
    stats: VsspsStats,
    /// The user's id (`nameid`), fixed for the life of the mock.
    user_id: String,
    apps: HashMap<String, App>,
    codes: HashMap<String, Code>,
    refresh_tokens: HashMap<String, Refresh>,
    access_tokens: HashMap<String, LegacyTokenInfo>,
    /// The world's ledger: what this mock issues or is shown is recorded as `"vssps"`.
    secrets: Secrets,
}

/// Checks access tokens issued by a [`MockVssps`]; cheap to clone, outlives the server.
#[derive(Clone)]
pub struct VsspsValidator(Arc<Mutex<State>>);

impl VsspsValidator {
    /// `Some` only for an access token this mock issued whose expiry is still in the future.
    pub fn validate(&self, token: &str) -> Option<LegacyTokenInfo> {
        let st = self.0.lock().unwrap();
        let info = st.access_tokens.get(token)?;
        (info.expires_at > SystemTime::now()).then(|| info.clone())
    }
}

/// The mock legacy OAuth service; [`MockVssps::url`] stands for
/// `https://app.vssps.visualstudio.com`.
pub struct MockVssps {
    state: Arc<Mutex<State>>,
    server: HttpsServer,
}

impl MockVssps {
    pub fn start(ca: &TestCa) -> MockVssps {
        let state = Arc::new(Mutex::new(State {
            cfg: Settings::default(),
            stats: VsspsStats::default(),
            user_id: guid(),
            apps: HashMap::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            secrets: ca.secrets(),
        }));
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
        MockVssps { state, server }
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    /// `{url}/oauth2/authorize`
    pub fn authorize_url(&self) -> String {
        format!("{}/oauth2/authorize", self.url())
    }

    /// `{url}/oauth2/token`
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }

    pub fn validator(&self) -> VsspsValidator {
        VsspsValidator(self.state.clone())
    }

    pub fn validate(&self, token: &str) -> Option<LegacyTokenInfo> {
        self.validator().validate(token)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Registers an app (`client_id` = `app_id`) with its callback URL and the scopes
    /// it may ask for; returns its new, JWT-shaped client secret. Registering the same
    /// id again replaces the registration (and the secret).
    pub fn add_app(&self, app_id: &str, callback: &str, scopes: &[&str]) -> String {
        let secret = self.with(|s| client_secret(app_id, &s.user_id));
        self.add_app_with_secret(app_id, callback, scopes, &secret);
        secret
    }

    /// [`MockVssps::add_app`] with a given client secret.
    pub fn add_app_with_secret(&self, app_id: &str, callback: &str, scopes: &[&str], secret: &str) {
        let app = App {
            callback: callback.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            secret: secret.into(),
        };
        self.with(|s| {
            s.secrets.record(SecretKind::ClientSecret, "vssps", secret);
            s.apps.insert(app_id.into(), app)
        });
    }

    /// Identity of tokens issued from now on (default Grace Hopper,
    /// grace@fabrikam.example); the user id stays the same.
    pub fn set_user(&self, name: &str, email: &str) {
        let user = User {
            name: name.into(),
            email: email.into(),
        };
        self.with(|s| s.cfg.user = user)
    }

    /// The user's id (`nameid` of the tokens), a GUID fixed for the life of the mock.
    pub fn user_id(&self) -> String {
        self.with(|s| s.user_id.clone())
    }

    /// What the authorize endpoint does with a valid request (default `Approve`).
    pub fn set_authorize_outcome(&self, outcome: AuthorizeOutcome) {
        self.with(|s| s.cfg.authorize_outcome = outcome)
    }
    /// Lifetime of new access tokens, also their `expires_in` (default 3599 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.token_lifetime = lifetime)
    }
    /// Lifetime of new authorization codes (default 15 min; `ZERO` issues expired codes).
    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.code_lifetime = lifetime)
    }
    /// Refuse a refresh token used a second time; default true.
    pub fn set_strict_rotation(&self, strict: bool) {
        self.with(|s| s.cfg.strict_rotation = strict)
    }
    /// Every refresh token issued so far is refused from now on.
    pub fn revoke_all_refresh_tokens(&self) {
        self.with(|s| s.refresh_tokens.values_mut().for_each(|r| r.revoked = true))
    }
    /// `Down` closes every connection (both endpoints); `Status`, `Slow` and `Garbage`
    /// apply to the token endpoint only.
    pub fn set_fault(&self, fault: Fault) {
        self.with(|s| s.cfg.fault = fault)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> VsspsStats {
        self.with(|s| s.stats.clone())
    }

    /// Every secret this mock issued (client secrets, codes, access and refresh tokens) or was
    /// shown (client secrets, codes, refresh tokens presented to the token endpoint), in order.
    pub fn secrets(&self) -> Vec<SecretRecord> {
        self.with(|s| s.secrets.recorded_by("vssps"))
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Option<Resp> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let query = req.uri().query().unwrap_or_default().as_bytes().to_vec();
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    match path.trim_end_matches('/') {
        "/oauth2/authorize" => {
            let params: Form = url::form_urlencoded::parse(&query).into_owned().collect();
            let mut st = state.lock().unwrap();
            if st.cfg.fault == Fault::Down {
                return None;
            }
            Some(match method {
                Method::GET => st.authorize(&params),
                _ => error_page(405, "The requested resource does not support this method."),
            })
        }
        "/oauth2/token" => {
            let fault = state.lock().unwrap().cfg.fault.clone();
            match fault {
                Fault::Down => return None,
                Fault::Slow(d) => tokio::time::sleep(d).await,
                _ => {}
            }
            let body = req.into_body().collect().await.ok()?.to_bytes();
            let form: Form = url::form_urlencoded::parse(&body).into_owned().collect();
            let mut st = state.lock().unwrap();
            if let Some(v) = form.get("client_assertion") {
                st.secrets.record(SecretKind::ClientSecret, "vssps", v);
            }
            if let Some(v) = form.get("assertion") {
                let kind = match form.get("grant_type").map(String::as_str) {
                    Some("refresh_token") => SecretKind::RefreshToken,
                    _ => SecretKind::AuthorizationCode,
                };
                st.secrets.record(kind, "vssps", v);
            }
            st.stats.token_requests += 1;
            st.stats.last_token_form = Some(form.clone().into_iter().collect());
            let resp = match fault {
                Fault::Status(code, retry_after) => {
                    let mut r = error(
                        "temporarily_unavailable",
                        "The service is temporarily unavailable.",
                    );
                    *r.status_mut() = StatusCode::from_u16(code).unwrap();
                    if let Some(secs) = retry_after {
                        r.headers_mut().insert("Retry-After", secs.into());
                    }
                    r
                }
                Fault::Garbage => response(200, "text/html", "<html>not json</html>"),
                _ if method != Method::POST => error(
                    "invalid_request",
                    "The token endpoint only accepts POST requests.",
                ),
                _ if !is_form(content_type.as_ref()) => error(
                    "invalid_request",
                    "Content-Type must be application/x-www-form-urlencoded.",
                ),
                _ => st.token(&form),
            };
            if resp.status() != StatusCode::OK {
                st.stats.last_error = error_of(&resp);
            }
            Some(resp)
        }
        _ => Some(response(
            404,
            "text/html",
            "<html><body>404 - Not Found</body></html>",
        )),
    }
}

type Form = HashMap<String, String>;

/// `application/x-www-form-urlencoded`, parameters (charset) allowed.
fn is_form(content_type: Option<&HeaderValue>) -> bool {
    let value = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// The `Error` of an error response this module built (its value is kept in the
/// response's extensions, so the body need not be parsed back).
fn error_of(resp: &Resp) -> Option<String> {
    resp.extensions().get::<ErrorName>().map(|e| e.0.clone())
}

#[derive(Clone)]
struct ErrorName(String);

/// 400 with the legacy service's error body (`invalid_client` is 401).
fn error(error: &str, description: &str) -> Resp {
    let status = match error {
        "invalid_client" => 401,
        _ => 400,
    };
    let body = json!({"Error": error, "ErrorDescription": description});
    let mut r = json_response(status, &body);
    r.extensions_mut().insert(ErrorName(error.into()));
    r
}

fn json_response(status: u16, body: &Value) -> Resp {
    let mut r = response(status, "application/json; charset=utf-8", body.to_string());
    let no_store = "no-store, no-cache".parse().unwrap();
    r.headers_mut().insert("Cache-Control", no_store);
    r
}

/// `header.payload.signature` with JSON header and payload and a random signature.
fn jwt(payload: &Value) -> String {
    let thumbprint = URL_SAFE_NO_PAD.encode(random_bytes(20));
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": thumbprint});
    let [h, p] = [header, payload.clone()].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(random_bytes(64)))
}

/// A client secret as the service hands out: a JWT naming the app, valid for a year.
fn client_secret(app_id: &str, owner: &str) -> String {
    let now = unix_now();
    jwt(&json!({
        "cid": app_id, "csi": guid(), "nameid": owner,
        "iss": VSTOKEN_ISSUER, "aud": VSTOKEN_ISSUER,
        "nbf": now, "exp": now + 365 * 86400,
    }))
}

impl State {
    /// `GET /oauth2/authorize`: what the browser sees. A bad client, response type,
    /// callback or scope gets an HTML error page (never a redirect); then the outcome.
    fn authorize(&mut self, params: &Form) -> Resp {
        self.stats.authorize_requests += 1;
        self.stats.last_authorize = Some(params.clone().into_iter().collect());
        let app = params.get("client_id").and_then(|id| self.apps.get(id));
        let Some(app) = app.cloned() else {
            return error_page(400, "Invalid client_id. The application is not registered.");
        };
        let app_id = &params["client_id"];
        if params.get("response_type").map(String::as_str) != Some("Assertion") {
            return error_page(400, "Invalid response_type. It must be 'Assertion'.");
        }
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return error_page(400, "Invalid redirect_uri. The parameter is missing.");
        };
        if *redirect_uri != app.callback {
            return error_page(
                400,
                "Invalid redirect_uri. It does not match the callback URL registered for the application.",
            );
        }
        let requested: Vec<String> = params
            .get("scope")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let unregistered = requested.iter().find(|s| !app.scopes.contains(s));
        if requested.is_empty() || unregistered.is_some() {
            let which = unregistered.map_or("(none)", String::as_str);
            return error_page(
                400,
                &format!(
                    "Invalid scope: {which}. The requested scopes must be among those registered for the application."
                ),
            );
        }
        let state = params.get("state").map(String::as_str);
        match self.cfg.authorize_outcome {
            AuthorizeOutcome::Approve => {}
            AuthorizeOutcome::Deny => {
                let mut pairs = vec![("error", "access_denied")];
                pairs.extend(state.map(|s| ("state", s)));
                return redirect_to(redirect_uri, &pairs);
            }
            AuthorizeOutcome::Ignore => return sign_in_page(),
        }
        let now = unix_now();
        let code = jwt(&json!({
            "aui": guid(), "nameid": self.user_id, "appid": app_id,
            "scp": requested.join(" "), "iss": VSTOKEN_ISSUER, "aud": VSTOKEN_ISSUER,
            "nbf": now, "exp": now + self.cfg.code_lifetime.as_secs(),
        }));
        let entry = Code {
            app_id: app_id.clone(),
            redirect_uri: redirect_uri.clone(),
            scopes: requested,
            user: self.cfg.user.clone(),
            expires_at: Instant::now() + self.cfg.code_lifetime,
            redeemed: false,
        };
        self.secrets
            .record(SecretKind::AuthorizationCode, "vssps", &code);
        self.codes.insert(code.clone(), entry);
        let mut pairs = vec![("code", code.as_str())];
        pairs.extend(state.map(|s| ("state", s)));
        redirect_to(redirect_uri, &pairs)
    }

    /// `POST /oauth2/token`, counted by its `grant_type`.
    fn token(&mut self, form: &Form) -> Resp {
        let resp = self.authenticate_and_grant(form);
        let ok = resp.status() == StatusCode::OK;
        let counter = match (form.get("grant_type").map(String::as_str), ok) {
            (Some(JWT_BEARER_GRANT), true) => &mut self.stats.code_ok,
            (Some(JWT_BEARER_GRANT), false) => &mut self.stats.code_refused,
            (Some("refresh_token"), true) => &mut self.stats.refresh_ok,
            (Some("refresh_token"), false) => &mut self.stats.refresh_refused,
            _ => return resp,
        };
        *counter += 1;
        resp
    }

    /// Client authentication by the app's secret, then the grant.
    fn authenticate_and_grant(&mut self, form: &Form) -> Resp {
        let missing = |field: &str| {
            error(
                "invalid_request",
                &format!("The request is missing the required parameter '{field}'."),
            )
        };
        match form.get("client_assertion_type").map(String::as_str) {
            None => return missing("client_assertion_type"),
            Some(JWT_BEARER_ASSERTION) => {}
            Some(other) => {
                return error(
                    "invalid_request",
                    &format!("Invalid client_assertion_type '{other}'."),
                );
            }
        }
        let Some(secret) = form.get("client_assertion") else {
            return missing("client_assertion");
        };
        let found = self.apps.iter().find(|(_, a)| a.secret == *secret);
        let Some((app_id, app)) = found.map(|(id, a)| (id.clone(), a.clone())) else {
            return error("invalid_client", "Invalid client auth token.");
        };
        let grant = match form.get("grant_type").map(String::as_str) {
            None => return missing("grant_type"),
            Some(g @ (JWT_BEARER_GRANT | "refresh_token")) => g,
            Some(other) => {
                return error(
                    "unsupported_grant_type",
                    &format!("The grant type '{other}' is not supported."),
                );
            }
        };
        self.grant(&app_id, &app, grant == "refresh_token", form)
    }

    fn grant(&mut self, app_id: &str, app: &App, refresh: bool, form: &Form) -> Resp {
        let Some(assertion) = form.get("assertion") else {
            return error(
                "invalid_request",
                "The request is missing the required parameter 'assertion'.",
            );
        };
        let Some(redirect_uri) = form.get("redirect_uri") else {
            return error(
                "invalid_request",
                "The request is missing the required parameter 'redirect_uri'.",
            );
        };
        if *redirect_uri != app.callback {
            return error(
                "invalid_request",
                "The redirect_uri does not match the callback URL registered for the application.",
            );
        }
        let (scopes, user) = if refresh {
            let strict = self.cfg.strict_rotation;
            match self.refresh_tokens.get_mut(assertion) {
                None => return error("invalid_grant", "Invalid refresh token."),
                Some(r) if r.revoked => {
                    return error("invalid_grant", "The refresh token has been revoked.");
                }
                Some(r) if r.app_id != app_id => {
                    return error(
                        "invalid_grant",
                        "The refresh token was issued to another application.",
                    );
                }
                Some(r) if r.used && strict => {
                    return error("invalid_grant", "The refresh token has already been used.");
                }
                Some(r) => {
                    r.used = true;
                    (r.scopes.clone(), r.user.clone())
                }
            }
        } else {
            // Only a success uses the code up.
            match self.codes.get_mut(assertion) {
                None => return error("invalid_grant", "Invalid authorization code."),
                Some(c) if c.redeemed => {
                    return error(
                        "invalid_grant",
                        "The authorization code has already been used.",
                    );
                }
                Some(c) if Instant::now() >= c.expires_at => {
                    return error("invalid_grant", "The authorization code has expired.");
                }
                Some(c) if c.app_id != app_id => {
                    return error(
                        "invalid_grant",
                        "The authorization code was issued to another application.",
                    );
                }
                Some(c) if c.redirect_uri != *redirect_uri => {
                    return error(
                        "invalid_request",
                        "The redirect_uri does not match the one of the authorization request.",
                    );
                }
                Some(c) => {
                    c.redeemed = true;
                    (c.scopes.clone(), c.user.clone())
                }
            }
        };
        self.issue(app_id, scopes, user)
    }

    fn issue(&mut self, app_id: &str, scopes: Vec<String>, user: User) -> Resp {
        let (now, lifetime) = (unix_now(), self.cfg.token_lifetime);
        let scp = scopes.join(" ");
        let info = LegacyTokenInfo {
            user_id: self.user_id.clone(),
            name: user.name.clone(),
            email: user.email.clone(),
            app_id: app_id.into(),
            scopes: scopes.clone(),
            exp: now + lifetime.as_secs(),
            expires_at: SystemTime::now() + lifetime,
        };
        let access_token = jwt(&json!({
            "nameid": self.user_id, "scp": scp, "aui": guid(), "appid": app_id,
            "iss": VSTOKEN_ISSUER, "aud": VSTOKEN_ISSUER, "nbf": now, "exp": info.exp,
        }));
        self.secrets
            .record(SecretKind::AccessToken, "vssps", &access_token);
        self.access_tokens.insert(access_token.clone(), info);
        let refresh_token = jwt(&json!({
            "nameid": self.user_id, "ac": guid(), "acr": "1", "appid": app_id,
            "iss": VSTOKEN_ISSUER, "aud": VSTOKEN_ISSUER, "nbf": now,
        }));
        let entry = Refresh {
            app_id: app_id.into(),
            scopes: scopes.clone(),
            user,
            used: false,
            revoked: false,
        };
        self.secrets
            .record(SecretKind::RefreshToken, "vssps", &refresh_token);
        self.refresh_tokens.insert(refresh_token.clone(), entry);
        let mut granted = scopes;
        if !granted.iter().any(|s| s == AUTHORIZATION_GRANT_SCOPE) {
            granted.push(AUTHORIZATION_GRANT_SCOPE.into());
        }
        json_response(
            200,
            &json!({
                "access_token": access_token, "token_type": "jwt-bearer",
                "expires_in": lifetime.as_secs().to_string(),
                "refresh_token": refresh_token, "scope": granted.join(" "),
            }),
        )
    }
}

/// The service's error page (never a redirect).
fn error_page(status: u16, message: &str) -> Resp {
    let text = html_escape(message);
    html_response(
        status,
        format!(
            "<!DOCTYPE html><html><head><title>Azure DevOps Services | Error</title></head><body>\
             <h1>Authorization error</h1><p id=\"error\">{text}</p>\
             <p>Activity Id: {}</p></body></html>",
            guid()
        ),
    )
}

/// The sign-in page a browser shows while the person has not finished (200, no redirect).
fn sign_in_page() -> Resp {
    html_response(
        200,
        "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>\
         <h1>Sign in</h1><form method=\"post\" action=\"/_signin\">\
         <input type=\"email\" name=\"loginfmt\" placeholder=\"Email, phone, or Skype\">\
         <input type=\"submit\" value=\"Next\"></form></body></html>"
            .into(),
    )
}

/// `302 Found` to `redirect_uri` with `pairs` form-encoded into its query (`&` if it
/// already has one).
fn redirect_to(redirect_uri: &str, pairs: &[(&str, &str)]) -> Resp {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let sep = match redirect_uri.contains('?') {
        false => "?",
        true if redirect_uri.ends_with(['?', '&']) => "",
        true => "&",
    };
    let location = format!("{redirect_uri}{sep}{query}");
    let Ok(header) = HeaderValue::from_str(&location) else {
        return error_page(400, "Invalid redirect_uri.");
    };
    let href = html_escape(&location);
    let body = format!(
        "<html><head><title>Object moved</title></head><body>\
         <h2>Object moved to <a href=\"{href}\">here</a>.</h2></body></html>"
    );
    let mut r = html_response(302, body);
    r.headers_mut().insert("Location", header);
    r
}
