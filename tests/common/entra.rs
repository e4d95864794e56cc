//! Mock Microsoft Entra ID (login.microsoftonline.com v2.0 endpoints) over HTTPS:
//! the device-code flow, the authorization-code flow with PKCE (S256, loopback
//! redirect URIs), refresh-token grants with rotation and revocation, the
//! client-credentials grant for registered apps (client secret, or a federated
//! JWT assertion), JWT-shaped access tokens that `validate` recognises, app
//! tokens minted for other mocks (see [`EntraMinter`]), request counters, and
//! fault switches (down, HTTP status, slow, garbage). Every secret it issues or is
//! shown goes into its world's ledger (see [`MockEntra::secrets`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Value, json};

use super::secrets::{SecretKind, SecretRecord, Secrets};
use super::tls::{HttpsServer, Resp, TestCa, guid, guid_from, is_guid, random_bytes};
use super::tls::{html_escape, html_response, response, timestamp, unix_now};
use hyper::StatusCode;

/// Azure DevOps' resource (application) id: the `aud` of tokens meant for it.
pub const ADO_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const GRAPH_RESOURCE: &str = "00000003-0000-0000-c000-000000000000";
/// Visual Studio's public client, the product's default: its only redirect URI is
/// `http://localhost` (any port, as Entra ignores the port of a loopback redirect).
pub const VISUAL_STUDIO_CLIENT: &str = "872cd9fa-d31f-45e0-9eab-6e460a02d1f1";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The audience Entra expects in a federated (workload identity) assertion.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

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
    /// This status with an HTML page instead of an OAuth error (a gateway's 503, a front
    /// door's 429), and `Retry-After` when given.
    Page(u16, Option<u64>),
}

/// What the "person at the browser" does on the authorize endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// Signs in and consents: 302 to the redirect URI with `code`, `state`, `session_state`.
    #[default]
    Approve,
    /// Declines consent: 302 with `error=access_denied` (AADSTS65004).
    Deny,
    /// Never finishes signing in: 200 with the login page, no redirect.
    Ignore,
}

/// What a valid access token says (see [`MockEntra::validate`]).
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub tid: String,
    pub oid: String,
    /// Empty for app (service principal, managed identity) tokens.
    pub upn: String,
    /// The user's name, or the app's display name for app tokens.
    pub name: String,
    pub aud: String,
    pub appid: String,
    /// `"user"` or `"app"`, as the token's `idtyp` claim.
    pub idtyp: String,
    /// `exp` claim, seconds since the Unix epoch.
    pub exp: u64,
    expires_at: SystemTime,
}

/// One request to the token endpoint, in arrival order.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub grant_type: String,
    /// `client_id` of the request (form or HTTP Basic), empty if none.
    pub client_id: String,
    pub tenant: String,
    pub at: SystemTime,
    pub status: u16,
    /// `expires_in` of the access token answered (0 when refused).
    pub lifetime_s: u64,
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
    /// Tenant path segment of the last devicecode/authorize/token request.
    pub last_tenant: Option<String>,
    /// Scope of the last devicecode request.
    pub last_scope: Option<String>,
    /// `claims` parameter of the last refresh grant.
    pub last_claims: Option<String>,
    pub last_user_code: Option<String>,
    /// Every token-endpoint request, faulted ones included.
    pub token_requests: Vec<TokenRequest>,
    /// Authorize-endpoint requests (not faulted), valid or not.
    pub authorize_requests: usize,
    /// Parameters of the last authorize request (query, or form for a POST).
    pub last_authorize: Option<BTreeMap<String, String>>,
    /// Successful authorization-code grants.
    pub auth_code_ok: usize,
    /// Refused authorization-code grants (bad verifier, reused, expired, missing parameter...).
    pub auth_code_refused: usize,
    /// Successful client-credentials grants (secret or federated assertion).
    pub client_credentials_ok: usize,
    /// Refused client-credentials grants (unknown app, wrong secret, bad assertion, scope...).
    pub client_credentials_refused: usize,
    /// `client_id` of the last token-endpoint request that had one (any grant).
    pub last_client_id: Option<String>,
    /// When each device-code poll arrived, in order.
    pub device_code_poll_times: Vec<Instant>,
    /// Device-code polls answered `slow_down`.
    pub slow_downs: usize,
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
    /// The interval this code's polls must keep: the advertised one, plus 5 s per `slow_down`.
    interval: Duration,
    last_poll: Option<Instant>,
}

struct AuthCode {
    client_id: String,
    /// Tenant id the code was issued in (`tid_of` the authorize URL's tenant).
    tid: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    user: User,
    expires_at: Instant,
    redeemed: bool,
}

struct Refresh {
    client_id: String,
    /// Tenant id it was issued in: it is redeemed there and nowhere else.
    tid: String,
    scope: String,
    user: User,
    issued: u64,
    used: bool,
    revoked: bool,
}

/// An app registration known to the mock's token endpoint.
#[derive(Clone, Default)]
struct App {
    secret: Option<String>,
    /// Subjects of its federated identity credentials (audience `api://AzureADTokenExchange`).
    federated_subjects: Vec<String>,
    /// Certificate credentials: `x5t#S256` thumbprint and RSA public key (PKCS#1 DER).
    certificates: Vec<(String, Vec<u8>)>,
}

struct Settings {
    fault: Fault,
    interval: u64,
    auto_approve_after_polls: u32,
    strict_rotation: bool,
    /// Refuse every refresh token with `invalid_grant` and this AADSTS code.
    refuse_refresh: Option<u32>,
    token_lifetime: Duration,
    /// With [`MockEntra::set_token_lifetime_range`]: each token's lifetime is drawn from
    /// `token_lifetime..=this`, in whole seconds, as Entra varies them (60–90 minutes).
    token_lifetime_max: Option<Duration>,
    /// Seconds added to the `iat`, `nbf` and `exp` claims of new access tokens: Entra's clock
    /// against the client's (negative: the client's clock is ahead).
    claims_clock_offset: i64,
    device_code_lifetime: Duration,
    authorize_outcome: AuthorizeOutcome,
    auth_code_lifetime: Duration,
    user: User,
    /// The next this many device-code polls are answered `slow_down` whatever their timing.
    slow_down_polls: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fault: Fault::None,
            interval: 1,
            auto_approve_after_polls: 1,
            strict_rotation: true,
            refuse_refresh: None,
            token_lifetime: Duration::from_secs(3600),
            token_lifetime_max: None,
            claims_clock_offset: 0,
            device_code_lifetime: Duration::from_secs(900),
            authorize_outcome: AuthorizeOutcome::Approve,
            auth_code_lifetime: Duration::from_secs(600),
            user: User {
                name: "Ada Lovelace".into(),
                upn: "ada@contoso.example".into(),
            },
            slow_down_polls: 0,
        }
    }
}

#[derive(Default)]
struct State {
    cfg: Settings,
    stats: EntraStats,
    device_codes: HashMap<String, DeviceCode>,
    auth_codes: HashMap<String, AuthCode>,
    refresh_tokens: HashMap<String, Refresh>,
    access_tokens: HashMap<String, TokenInfo>,
    apps: HashMap<String, App>,
    /// Public clients and the redirect URIs registered for each, as in their app registration.
    redirect_uris: HashMap<String, Vec<String>>,
    /// The world's ledger: what this mock issues or is shown is recorded as `"entra"`.
    secrets: Secrets,
    /// The lifetime drawn for the token request being answered.
    drawn_lifetime: Option<Duration>,
}

impl State {
    /// A Unix time as the claims show it (see [`MockEntra::set_claims_clock_offset`]).
    fn skewed(&self, t: u64) -> u64 {
        t.saturating_add_signed(self.cfg.claims_clock_offset)
    }

    /// Lifetime of the token being issued: the configured one, or the one drawn for this
    /// request from the configured range.
    fn lifetime(&mut self) -> Duration {
        let (min, max) = (self.cfg.token_lifetime, self.cfg.token_lifetime_max);
        let Some(max) = max.filter(|m| *m > min) else {
            return min;
        };
        *self.drawn_lifetime.get_or_insert_with(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos(),
            );
            let span = max.as_secs() - min.as_secs() + 1;
            Duration::from_secs(min.as_secs() + h.finish() % span)
        })
    }

    fn secret(&self, kind: SecretKind, value: &str) {
        self.secrets.record(kind, "entra", value)
    }
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

/// A workload identity that app tokens are minted for: a service principal or a
/// managed identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppIdentity {
    /// `appid` claim (application / client id).
    pub client_id: String,
    /// `oid` and `sub` claims (the service principal's object id).
    pub object_id: String,
    /// `app_displayname` claim (and [`TokenInfo::name`]).
    pub display_name: String,
    /// `xms_mirid` claim: the Azure resource id of a managed identity.
    pub mi_res_id: Option<String>,
}

impl AppIdentity {
    /// A registered app: object id [`app_object_id`], display name `app <client_id>`.
    pub fn app(client_id: &str) -> AppIdentity {
        AppIdentity {
            client_id: client_id.into(),
            object_id: app_object_id(client_id),
            display_name: format!("app {client_id}"),
            mi_res_id: None,
        }
    }
}

/// Mints app tokens that the mock's [`EntraValidator`] (hence `MockAdo`) accepts;
/// cheap to clone, for other mocks (the managed-identity endpoints) to hold.
#[derive(Clone)]
pub struct EntraMinter(Arc<Mutex<State>>);

impl EntraMinter {
    /// An access token for `identity` in `tenant` (a GUID is the `tid`, any other
    /// name means [`MockEntra::HOME_TENANT`]) for `resource` (`499b84ac-...`,
    /// with or without `/.default` or a trailing `/`, is Azure DevOps; anything
    /// else, less any `/.default`, becomes the `aud`). Lifetime: the mock's token lifetime.
    /// Returns the token and its `exp` (Unix seconds).
    pub fn mint(&self, identity: &AppIdentity, tenant: &str, resource: &str) -> (String, u64) {
        let mut st = self.0.lock().unwrap();
        st.mint_app(identity, tenant, resource, "2")
    }

    /// The token lifetime new tokens get (see [`MockEntra::set_token_lifetime`]).
    pub fn token_lifetime(&self) -> Duration {
        self.0.lock().unwrap().cfg.token_lifetime
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
        let registered = [(VISUAL_STUDIO_CLIENT.into(), vec!["http://localhost".into()])];
        let state = Arc::new(Mutex::new(State {
            secrets: ca.secrets(),
            drawn_lifetime: None,
            redirect_uris: registered.into_iter().collect(),
            ..State::default()
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

    /// A handle that mints app tokens (for the managed-identity mock).
    pub fn minter(&self) -> EntraMinter {
        EntraMinter(self.state.clone())
    }

    /// An Azure DevOps token for the app `client_id` as the client-credentials grant
    /// would issue it in `tenant` (registered or not): `(token, exp)`.
    pub fn mint_app_token(&self, client_id: &str, tenant: &str) -> (String, u64) {
        let app = AppIdentity::app(client_id);
        self.with(|s| s.mint_app(&app, tenant, ADO_RESOURCE, "1"))
    }

    /// Registers an app for the client-credentials grant, with a client secret or
    /// none (then only federated assertions work, see `add_federated_app`). Calling
    /// it again replaces the secret and keeps federated credentials.
    pub fn add_app(&self, client_id: &str, secret: Option<&str>) {
        self.with(|s| {
            if let Some(secret) = secret {
                s.secret(SecretKind::ClientSecret, secret);
            }
            s.apps.entry(client_id.into()).or_default().secret = secret.map(Into::into)
        })
    }

    /// Registers an app (or adds to one) a certificate credential: a client assertion whose
    /// header names this `x5t#S256` thumbprint must be signed (RS256) by the matching key,
    /// with `aud` = the token endpoint, `iss` = `sub` = the client id, and within its time.
    pub fn add_certificate_app(&self, client_id: &str, x5t_s256: &str, rsa_public_key_der: &[u8]) {
        self.with(|s| {
            s.apps
                .entry(client_id.into())
                .or_default()
                .certificates
                .push((x5t_s256.into(), rsa_public_key_der.to_vec()))
        })
    }

    /// Registers an app (or adds to one) a federated identity credential: a client
    /// assertion is accepted when it is a JWT (signature not checked) with this `sub`,
    /// `aud` = `api://AzureADTokenExchange` and an `exp` in the future.
    pub fn add_federated_app(&self, client_id: &str, expected_assertion_subject: &str) {
        self.with(|s| {
            let app = s.apps.entry(client_id.into()).or_default();
            app.federated_subjects
                .push(expected_assertion_subject.into())
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EntraStats {
        self.with(|s| s.stats.clone())
    }

    /// Every secret this mock issued (tokens, refresh tokens, device and authorization codes,
    /// tokens minted for the managed-identity mocks) or was shown (client secrets, client
    /// assertions, PKCE verifiers, registered client secrets), in order.
    pub fn secrets(&self) -> Vec<SecretRecord> {
        self.with(|s| s.secrets.recorded_by("entra"))
    }

    /// The world's whole ledger, for mocks started from this one.
    pub fn ledger(&self) -> Secrets {
        self.with(|s| s.secrets.clone())
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
    /// Refuse every refresh token with `invalid_grant` and this AADSTS code (70008: expired,
    /// 700082: inactive for 90 days), or stop refusing with `None`.
    pub fn refuse_refresh_tokens(&self, code: Option<u32>) {
        self.with(|s| s.cfg.refuse_refresh = code)
    }
    /// Each token lives a random whole number of seconds in `min..=max`, as Entra's access
    /// tokens live 60–90 minutes.
    pub fn set_token_lifetime_range(&self, min: Duration, max: Duration) {
        self.with(|s| {
            s.cfg.token_lifetime = min;
            s.cfg.token_lifetime_max = Some(max);
        })
    }
    /// Shifts the `iat`, `nbf` and `exp` claims of new access tokens by `secs`, as a client
    /// whose clock is `-secs` ahead of Entra's sees them (a resumed VM, an RTC in local time).
    /// `expires_in` and what Azure DevOps accepts are unchanged.
    pub fn set_claims_clock_offset(&self, secs: i64) {
        self.with(|s| s.cfg.claims_clock_offset = secs)
    }
    /// Lifetime of new access tokens (default 3600 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.token_lifetime = lifetime)
    }
    /// Lifetime of new device codes (default 900 s).
    pub fn set_device_code_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.device_code_lifetime = lifetime)
    }
    /// What the authorize endpoint does with a valid request (default `Approve`).
    pub fn set_authorize_outcome(&self, outcome: AuthorizeOutcome) {
        self.with(|s| s.cfg.authorize_outcome = outcome)
    }
    /// Lifetime of new authorization codes (default 600 s; `ZERO` issues expired codes).
    pub fn set_auth_code_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.cfg.auth_code_lifetime = lifetime)
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
    /// Registers a redirect URI for `client_id` (a public client, for the authorization-code
    /// flow). Out of the box only Visual Studio's client is registered, with `http://localhost`.
    pub fn register_redirect_uri(&self, client_id: &str, uri: &str) {
        self.with(|s| {
            let uris = s.redirect_uris.entry(client_id.into()).or_default();
            uris.push(uri.into())
        })
    }
    /// The next `polls` device-code polls are answered `slow_down` (each adds 5 s to the
    /// interval that code's polls must keep). Polls that come sooner than that interval after
    /// the previous one get `slow_down` too, whatever this says.
    pub fn slow_down_next_polls(&self, polls: u32) {
        self.with(|s| s.cfg.slow_down_polls = polls)
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
    let query = req.uri().query().unwrap_or_default().as_bytes().to_vec();
    let basic = basic_client_auth(req.headers());
    let body = req.into_body().collect().await.ok()?.to_bytes();
    let mut form: Form = url::form_urlencoded::parse(&body).into_owned().collect();
    // client_secret_basic: the header supplies what the form leaves out.
    if let Some((id, secret)) = basic {
        form.entry("client_id".into()).or_insert(id);
        form.entry("client_secret".into()).or_insert(secret);
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (tenant, endpoint) = match segs.as_slice() {
        [
            t,
            "oauth2",
            "v2.0",
            e @ ("devicecode" | "token" | "authorize"),
        ] => (t.to_string(), *e),
        _ => return Some(response(404, "text/html", "<html>Not Found</html>")),
    };
    let mut st = state.lock().unwrap();
    st.drawn_lifetime = None;
    // What the client shows: secrets too, even unknown or refused ones.
    let shown = [
        ("client_secret", SecretKind::ClientSecret),
        ("client_assertion", SecretKind::ClientAssertion),
        ("code_verifier", SecretKind::PkceVerifier),
        ("refresh_token", SecretKind::RefreshToken),
        ("code", SecretKind::AuthorizationCode),
        ("device_code", SecretKind::DeviceCode),
    ];
    if endpoint == "token" {
        for (field, kind) in shown {
            if let Some(v) = form.get(field) {
                st.secret(kind, v);
            }
        }
    }
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
        Fault::Page(code, retry_after) => {
            let mut r = response(
                code,
                "text/html",
                "<html><body>Please try again later</body></html>",
            );
            if let Some(secs) = retry_after {
                r.headers_mut().insert("Retry-After", secs.into());
            }
            r
        }
        // Entra's authorize endpoint takes GET (query) and POST (form).
        _ if endpoint == "authorize" && method == Method::POST => st.authorize(&tenant, &form),
        _ if endpoint == "authorize" => {
            let query = url::form_urlencoded::parse(&query).into_owned().collect();
            st.authorize(&tenant, &query)
        }
        _ if method != Method::POST => aad("invalid_request", 900561, ""),
        _ if endpoint == "devicecode" => st.devicecode(&tenant, &form),
        _ => st.token(&tenant, &form),
    };
    if endpoint == "token" {
        let client_id = form.get("client_id").cloned();
        if client_id.is_some() {
            st.stats.last_client_id = client_id.clone();
        }
        let lifetime_s = match resp.status().as_u16() {
            200 => st.lifetime().as_secs(),
            _ => 0,
        };
        st.stats.token_requests.push(TokenRequest {
            grant_type: form.get("grant_type").cloned().unwrap_or_default(),
            client_id: client_id.unwrap_or_default(),
            tenant,
            at: SystemTime::now(),
            status: resp.status().as_u16(),
            lifetime_s,
        });
    }
    Some(resp)
}

type Form = HashMap<String, String>;

/// `Authorization: Basic` client credentials (RFC 6749 2.3.1: each part form-urlencoded).
fn basic_client_auth(headers: &hyper::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        let bytes = format!("x={s}").into_bytes();
        let mut pairs = url::form_urlencoded::parse(&bytes).into_owned();
        pairs.next().map(|(_, v)| v).unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn json_response(status: u16, body: &Value) -> Resp {
    let mut r = response(status, "application/json; charset=utf-8", body.to_string());
    let no_store = "no-store, no-cache".parse().unwrap();
    r.headers_mut().insert("Cache-Control", no_store);
    r
}

/// The text of an AADSTS error; `arg` fills the `{}` of the message.
fn message(error: &str, code: u32, arg: &str) -> String {
    match code {
        70000 if error == "authorization_declined" => "The user has declined to authorize the request.",
        70000 => "Provided grant is invalid or malformed.",
        70003 => "The app requested an unsupported grant type '{}'.",
        70008 => "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        700082 => "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for 90.00:00:00.",
        70016 => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        70019 => "Verification code expired.",
        50173 => "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}'.",
        54005 => "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        50058 => "A silent sign-in request was sent but no user is signed in.",
        50148 => "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
        50149 => "Invalid Code_Challenge_method parameter.",
        501481 => "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        501491 => "Invalid size of Code_Challenge parameter.",
        65001 => "The user or administrator has not consented to use the application with ID '{}'. Send an interactive authorization request for this user and resource.",
        65004 => "User declined to consent to access the app.",
        70002 => "Error validating credentials. {}",
        700005 if error == "invalid_grant" && arg == "refresh" => "Provided refresh token is intended to use against other tenant, thus rejected.",
        700005 => "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        700054 => "response_type '{}' is not enabled for the application.",
        90033 => "A transient error has occurred. Please try again.",
        900144 => "The request body must contain the following parameter: '{}'.",
        900561 => "The endpoint only accepts POST requests.",
        7000215 => "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
        7000218 => "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        700024 => "Client assertion is not within its valid time range. {}",
        700027 => "Client assertion failed signature validation. {}",
        700021 => "Client assertion application identifier doesn't match 'client_id' parameter. {}",
        50012 => "Authentication failed. The audience of the client assertion is not the token endpoint: {}",
        700212 => "No matching federated identity record found for presented assertion audience '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
        700213 => "No matching federated identity record found for presented assertion subject '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
        90011 => "Unexpected client assertion type '{}'.",
        50027 => "JWT token is invalid or malformed.",
        500011 => "The resource principal named {} was not found in the tenant. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
        28000 => "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {} is not valid.",
        70011 => "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
        1002012 => "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        _ => "Invalid request. Request is malformed or invalid.",
    }
    .replace("{}", arg)
}

/// A 400 with an Entra v2 error body; `arg` fills the `{}` of the message.
fn aad(error: &str, code: u32, arg: &str) -> Resp {
    aad_text(error, code, &message(error, code, arg))
}

/// A 400 with an Entra v2 error body and this message (after `AADSTS{code}: `).
fn aad_text(error: &str, code: u32, message: &str) -> Resp {
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
        if let Err((error, code, arg)) = parse_scopes(scope) {
            return aad(error, code, &arg);
        }
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
            interval: Duration::from_secs(self.cfg.interval),
            last_poll: None,
        };
        self.secret(SecretKind::DeviceCode, &device_code);
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
            Some("authorization_code") => {
                let resp = self.auth_code_grant(tenant, client_id, form);
                match resp.status() == StatusCode::OK {
                    true => self.stats.auth_code_ok += 1,
                    false => self.stats.auth_code_refused += 1,
                }
                resp
            }
            Some("client_credentials") => {
                let resp = self.client_credentials_grant(tenant, client_id, form);
                match resp.status() == StatusCode::OK {
                    true => self.stats.client_credentials_ok += 1,
                    false => self.stats.client_credentials_refused += 1,
                }
                resp
            }
            Some(other) => aad("unsupported_grant_type", 70003, other),
        }
    }

    /// The `client_credentials` grant (Entra v2): a registered app, a client secret or a
    /// federated JWT assertion (a `client_assertion` wins over a `client_secret`), and a
    /// single `<resource>/.default` scope. No refresh token.
    fn client_credentials_grant(&mut self, tenant: &str, client_id: &str, form: &Form) -> Resp {
        let Some(scope) = form.get("scope") else {
            return aad("invalid_request", 900144, "scope");
        };
        let Some(app) = self.apps.get(client_id) else {
            let text = format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            );
            return aad_text("unauthorized_client", 700016, &text);
        };
        if let Some(assertion) = form.get("client_assertion") {
            match form.get("client_assertion_type").map(String::as_str) {
                None => return aad("invalid_request", 900144, "client_assertion_type"),
                Some(JWT_BEARER_ASSERTION) => {}
                Some(other) => return aad("invalid_request", 90011, other),
            }
            let refused =
                if assertion_header(assertion).is_some_and(|h| h.get("x5t#S256").is_some()) {
                    check_certificate_assertion(app, client_id, tenant, assertion)
                } else {
                    check_federated_assertion(app, assertion)
                };
            if let Some(refused) = refused {
                return refused;
            }
        } else {
            let Some(secret) = form.get("client_secret") else {
                return aad("invalid_client", 7000218, "");
            };
            if app.secret.as_ref() != Some(secret) {
                let mut r = aad("invalid_client", 7000215, client_id);
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
        }
        let mut scopes = scope.split_whitespace();
        let resource = match (scopes.next(), scopes.next()) {
            (Some(s), None) => s.strip_suffix("/.default").filter(|r| !r.is_empty()),
            _ => None,
        };
        let Some(resource) = resource else {
            return aad("invalid_scope", 1002012, scope);
        };
        let acr = if form.contains_key("client_assertion") {
            "2"
        } else {
            "1"
        };
        let (token, _) = self.mint_app(&AppIdentity::app(client_id), tenant, resource, acr);
        let lifetime = self.lifetime().as_secs();
        json_response(
            200,
            &json!({
                "token_type": "Bearer", "expires_in": lifetime,
                "ext_expires_in": lifetime, "access_token": token,
            }),
        )
    }

    /// An app-only access token (`idtyp` app, no `upn`/`name`/`scp`); `acr` is the
    /// `appidacr` claim ("1" secret, "2" certificate or assertion).
    fn mint_app(
        &mut self,
        app: &AppIdentity,
        tenant: &str,
        resource: &str,
        acr: &str,
    ) -> (String, u64) {
        let tid = tid_of(tenant);
        let resource = resource.trim();
        let resource = resource.strip_suffix("/.default").unwrap_or(resource);
        let aud = match resource.trim_end_matches('/') {
            r if r.eq_ignore_ascii_case(ADO_RESOURCE) => ADO_RESOURCE,
            _ => resource,
        };
        let (now, lifetime) = (unix_now(), self.lifetime());
        let info = TokenInfo {
            tid: tid.clone(),
            oid: app.object_id.clone(),
            upn: String::new(),
            name: app.display_name.clone(),
            aud: aud.into(),
            appid: app.client_id.clone(),
            idtyp: "app".into(),
            exp: now + lifetime.as_secs(),
            expires_at: SystemTime::now() + lifetime,
        };
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "mock"});
        let mut payload = json!({
            "aud": aud, "iss": format!("https://sts.windows.net/{tid}/"),
            "iat": self.skewed(now), "nbf": self.skewed(now), "exp": self.skewed(info.exp), "app_displayname": app.display_name,
            "appid": app.client_id, "appidacr": acr, "idp": format!("https://sts.windows.net/{tid}/"),
            "idtyp": "app", "oid": app.object_id, "sub": app.object_id, "tid": tid, "ver": "1.0",
        });
        if let Some(mirid) = &app.mi_res_id {
            payload["xms_mirid"] = mirid.as_str().into();
        }
        let [h, p] = [header, payload].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
        let token = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(random_bytes(32)));
        let exp = info.exp;
        self.secret(SecretKind::AccessToken, &token);
        self.access_tokens.insert(token.clone(), info);
        (token, exp)
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
        // RFC 8628 3.5: a poll sooner than the interval after the last one (or one the test
        // asks to slow down) gets `slow_down`, and this code's interval grows by 5 s.
        let now = Instant::now();
        self.stats.device_code_poll_times.push(now);
        let early = dc
            .last_poll
            .is_some_and(|last| now < last + dc.interval.saturating_sub(Duration::from_millis(50)));
        dc.last_poll = Some(now);
        if early || self.cfg.slow_down_polls > 0 {
            self.cfg.slow_down_polls = self.cfg.slow_down_polls.saturating_sub(1);
            dc.interval += Duration::from_secs(5);
            self.stats.slow_downs += 1;
            return aad_text(
                "slow_down",
                70016,
                "OAuth 2.0 device flow error. Polling too frequently: add 5 seconds to the interval.",
            );
        }
        if now >= dc.expires_at {
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
        // The request is checked before the grant is used: a bad scope leaves it redeemable.
        let stored = self.refresh_tokens.get(rt).map(|r| r.scope.clone());
        if let Some(scope) = form.get("scope").or(stored.as_ref())
            && let Err((error, code, arg)) = parse_scopes(scope)
        {
            self.stats.refresh_refused += 1;
            return aad(error, code, &arg);
        }
        let strict = self.cfg.strict_rotation;
        let refuse = self.cfg.refuse_refresh;
        let refused = match self.refresh_tokens.get_mut(rt) {
            None => Some(aad("invalid_grant", 9002313, "")),
            Some(r) if refuse.is_some() => {
                let code = refuse.unwrap();
                Some(aad("invalid_grant", code, &timestamp(r.issued)))
            }
            Some(r) if r.revoked => Some(aad("invalid_grant", 50173, &timestamp(r.issued))),
            Some(r) if r.client_id != client_id => Some(aad("invalid_grant", 70000, "")),
            Some(r) if r.tid != tid_of(tenant) => Some(aad("invalid_grant", 700005, "refresh")),
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

    /// `GET /{tenant}/oauth2/v2.0/authorize`: what the browser sees. Problems with the
    /// client or the redirect URI get an error page; once the redirect URI is known
    /// to be good, every other outcome is a 302 back to it (or the login page).
    fn authorize(&mut self, tenant: &str, params: &Form) -> Resp {
        self.stats.authorize_requests += 1;
        self.stats.last_authorize = Some(params.clone().into_iter().collect());
        let Some(client_id) = params.get("client_id") else {
            return error_page(900144, &message("", 900144, "client_id"));
        };
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return error_page(900144, &message("", 900144, "redirect_uri"));
        };
        let Some(registered) = self.redirect_uris.get(client_id) else {
            let text = format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            );
            return error_page(700016, &text);
        };
        if !registered.iter().any(|r| redirect_matches(r, redirect_uri)) {
            return error_page(
                50011,
                &format!(
                    "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this."
                ),
            );
        }
        let state = params.get("state").map(String::as_str);
        let fail = |error: &str, code: u32, arg: &str| {
            let description = format!("AADSTS{code}: {}", message(error, code, arg));
            let mut pairs = vec![("error", error), ("error_description", &description)];
            pairs.extend(state.map(|s| ("state", s)));
            redirect_to(redirect_uri, &pairs)
        };
        match params.get("response_type").map(String::as_str) {
            None => return fail("invalid_request", 900144, "response_type"),
            Some("code") => {}
            Some(other) => return fail("invalid_request", 700054, other),
        }
        let Some(scope) = params.get("scope") else {
            return fail("invalid_request", 900144, "scope");
        };
        if let Err((error, code, arg)) = parse_scopes(scope) {
            return fail(error, code, &arg);
        }
        let Some(challenge) = params.get("code_challenge") else {
            return fail("invalid_request", 900144, "code_challenge");
        };
        // RFC 7636 would default a missing method to `plain`; this mock takes S256 only.
        if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return fail("invalid_request", 50149, "");
        }
        let b64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if challenge.len() != 43 || !challenge.bytes().all(b64url) {
            return fail("invalid_request", 501491, "");
        }
        // prompt=none: no UI may be shown, so what would need the person fails instead.
        let silent = params.get("prompt").is_some_and(|p| p == "none");
        match (self.cfg.authorize_outcome, silent) {
            (AuthorizeOutcome::Approve, _) => {}
            (AuthorizeOutcome::Deny, false) => {
                let description = format!("AADSTS65004: {}", message("", 65004, ""));
                let mut pairs = vec![
                    ("error", "access_denied"),
                    ("error_description", &description),
                ];
                pairs.extend(state.map(|s| ("state", s)));
                return redirect_to(redirect_uri, &pairs);
            }
            (AuthorizeOutcome::Deny, true) => return fail("consent_required", 65001, client_id),
            (AuthorizeOutcome::Ignore, false) => {
                let hint = params.get("login_hint").map_or("", String::as_str);
                return login_page(tenant, hint);
            }
            (AuthorizeOutcome::Ignore, true) => return fail("login_required", 50058, ""),
        }
        let code = format!("0.A{}", URL_SAFE_NO_PAD.encode(random_bytes(96)));
        let entry = AuthCode {
            client_id: client_id.clone(),
            tid: tid_of(tenant),
            redirect_uri: redirect_uri.clone(),
            challenge: challenge.clone(),
            scope: scope.clone(),
            user: self.cfg.user.clone(),
            expires_at: Instant::now() + self.cfg.auth_code_lifetime,
            redeemed: false,
        };
        self.secret(SecretKind::AuthorizationCode, &code);
        self.auth_codes.insert(code.clone(), entry);
        let session_state = guid();
        let mut pairs = vec![("code", code.as_str())];
        pairs.extend(state.map(|s| ("state", s)));
        pairs.push(("session_state", &session_state));
        redirect_to(redirect_uri, &pairs)
    }

    /// The `authorization_code` grant. Only a success uses the code up; a refused
    /// attempt (wrong verifier, redirect URI, client...) leaves it redeemable.
    fn auth_code_grant(&mut self, tenant: &str, client_id: &str, form: &Form) -> Resp {
        let (Some(code), Some(redirect_uri)) = (form.get("code"), form.get("redirect_uri")) else {
            let missing = if form.contains_key("code") {
                "redirect_uri"
            } else {
                "code"
            };
            return aad("invalid_request", 900144, missing);
        };
        let Some(ac) = self.auth_codes.get_mut(code) else {
            return aad("invalid_grant", 9002313, "");
        };
        if ac.redeemed {
            return aad("invalid_grant", 54005, "");
        }
        if Instant::now() >= ac.expires_at {
            return aad("invalid_grant", 70008, "");
        }
        if ac.client_id != client_id {
            return aad("invalid_grant", 70000, "");
        }
        if ac.tid != tid_of(tenant) {
            return aad("invalid_grant", 700005, "");
        }
        if ac.redirect_uri != *redirect_uri {
            let why = format!(
                "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not match the redirect URI '{}' provided when requesting Authorization code.",
                ac.redirect_uri
            );
            return aad("invalid_grant", 70002, &why);
        }
        // A missing verifier is a mismatch too (AADSTS50148), as Entra reports it.
        let Some(verifier) = form.get("code_verifier") else {
            return aad("invalid_grant", 50148, "");
        };
        // RFC 7636 4.1: 43 to 128 unreserved characters.
        let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let well_formed = (43..=128).contains(&verifier.len()) && verifier.bytes().all(unreserved);
        if !well_formed || pkce_challenge(verifier) != ac.challenge {
            return aad("invalid_grant", 501481, "");
        }
        let scope = form.get("scope").unwrap_or(&ac.scope).clone();
        if let Err((error, code, arg)) = parse_scopes(&scope) {
            return aad(error, code, &arg);
        }
        ac.redeemed = true;
        let offline = [&scope, &ac.scope]
            .iter()
            .any(|s| s.split(' ').any(|s| s == "offline_access"));
        let user = ac.user.clone();
        self.issue(tenant, client_id, &scope, user, offline)
    }

    fn issue(
        &mut self,
        tenant: &str,
        client_id: &str,
        scope: &str,
        user: User,
        refresh: bool,
    ) -> Resp {
        let tid = tid_of(tenant);
        // The callers checked the scope: only Azure DevOps or Graph remain.
        let ado = parse_scopes(scope).ok() == Some(ADO_RESOURCE);
        let aud = if ado { ADO_RESOURCE } else { GRAPH_RESOURCE };
        let (now, lifetime) = (unix_now(), self.lifetime());
        let info = TokenInfo {
            tid: tid.clone(),
            oid: oid_for(&user.upn),
            upn: user.upn.clone(),
            name: user.name.clone(),
            aud: aud.into(),
            appid: client_id.into(),
            idtyp: "user".into(),
            exp: now + lifetime.as_secs(),
            expires_at: SystemTime::now() + lifetime,
        };
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "mock"});
        let payload = json!({
            "aud": aud, "iss": format!("https://sts.windows.net/{tid}/"),
            "iat": self.skewed(now), "nbf": self.skewed(now), "exp": self.skewed(info.exp), "name": user.name, "upn": user.upn,
            "unique_name": user.upn, "oid": info.oid, "tid": tid,
            "scp": "user_impersonation", "appid": client_id, "ver": "1.0",
        });
        let [h, p] = [header, payload].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
        let token = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(random_bytes(32)));
        self.secret(SecretKind::AccessToken, &token);
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
                tid: tid.clone(),
                scope: scope.into(),
                user,
                issued: now,
                used: false,
                revoked: false,
            };
            self.secret(SecretKind::RefreshToken, &rt);
            self.refresh_tokens.insert(rt.clone(), entry);
            body["refresh_token"] = rt.into();
        }
        json_response(200, &body)
    }
}

/// The decoded JSON header of a JWT, if it is one.
fn assertion_header(jwt: &str) -> Option<Value> {
    let h = jwt.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// Checks a certificate client assertion: the thumbprint names a registered certificate
/// whose key verifies the RS256 signature; `aud` is this tenant's token endpoint; `iss` and
/// `sub` are the client id; within its time. `Some` is the refusal.
fn check_certificate_assertion(
    app: &App,
    client_id: &str,
    tenant: &str,
    jwt: &str,
) -> Option<Resp> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Some(aad("invalid_request", 50027, ""));
    }
    let header = assertion_header(jwt)?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let thumb = header["x5t#S256"].as_str().unwrap_or_default();
    let Some((_, key)) = app.certificates.iter().find(|(t, _)| t == thumb) else {
        return Some(aad(
            "invalid_client",
            700027,
            &format!("Key was not found: x5t#S256 {thumb}"),
        ));
    };
    if header["alg"] != "RS256" {
        return Some(aad("invalid_client", 700027, "alg must be RS256"));
    }
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
    let input = format!("{}.{}", parts[0], parts[1]);
    let verified =
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(input.as_bytes(), &sig);
    if verified.is_err() {
        return Some(aad(
            "invalid_client",
            700027,
            "The signature does not verify.",
        ));
    }
    if claims["iss"] != client_id || claims["sub"] != client_id {
        return Some(aad("invalid_client", 700021, client_id));
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    if !aud.ends_with(&format!("/{tenant}/oauth2/v2.0/token")) || !aud.starts_with("https://") {
        return Some(aad("invalid_client", 50012, aud));
    }
    let now = unix_now();
    if claims["exp"].as_u64().is_none_or(|e| e <= now) {
        return Some(aad("invalid_client", 700024, "expired"));
    }
    None
}

/// Checks a federated client assertion: a JWT (signature not checked) that is within its
/// time range, for `api://AzureADTokenExchange`, whose subject has a federated credential.
/// `Some` is the refusal.
fn check_federated_assertion(app: &App, assertion: &str) -> Option<Resp> {
    let malformed = || aad("invalid_request", 50027, "");
    let parts: Vec<&str> = assertion.split('.').collect();
    let b64url = |p: &&str| {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        !p.is_empty() && p.bytes().all(ok)
    };
    if parts.len() != 3 || !parts.iter().all(b64url) {
        return Some(malformed());
    }
    let decode = |p: &str| {
        let bytes = URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let (Some(_header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Some(malformed());
    };
    let Some(exp) = claims["exp"].as_u64() else {
        return Some(malformed());
    };
    let now = unix_now();
    let nbf = claims["nbf"].as_u64();
    // Entra allows five minutes of clock skew on `nbf`.
    if now >= exp || nbf.is_some_and(|nbf| nbf > now + 300) {
        let iso = |t: u64| timestamp(t).replace(' ', "T").replace('Z', ".0000000Z");
        let from = nbf.map_or("(none)".to_string(), iso);
        let range = format!(
            "Current time: {}, assertion valid from {from}, expiry time of assertion {}.",
            iso(now),
            iso(exp)
        );
        return Some(aad("invalid_client", 700024, &range));
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == TOKEN_EXCHANGE_AUDIENCE,
        Value::Array(a) => a.iter().any(|a| a == TOKEN_EXCHANGE_AUDIENCE),
        _ => false,
    };
    if !aud_ok {
        let aud = match &claims["aud"] {
            Value::String(a) => a.clone(),
            other => other.to_string(),
        };
        return Some(aad("invalid_client", 700212, &aud));
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !app.federated_subjects.iter().any(|s| s == sub) {
        return Some(aad("invalid_client", 700213, sub));
    }
    None
}

/// The fixed object id the mock gives the service principal of app `client_id`.
pub fn app_object_id(client_id: &str) -> String {
    oid_for(&format!("app:{}", client_id.to_ascii_lowercase()))
}

/// A stable object id per user principal name (FNV-1a, two seeds).
fn oid_for(upn: &str) -> String {
    let fnv = |seed: u64| {
        let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        upn.bytes().fold(seed, step).to_be_bytes()
    };
    guid_from(&[fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4)].concat())
}

/// The `tid` of tokens issued at this tenant path segment.
fn tid_of(tenant: &str) -> String {
    match is_guid(tenant) {
        true => tenant.to_ascii_lowercase(),
        false => MockEntra::HOME_TENANT.to_string(),
    }
}

/// Whether a redirect URI sent in a request matches one registered for the app, as Entra
/// matches them: scheme, host and path exactly (the path case-sensitively; no path and `/` are
/// the same), the query too; the port is ignored only for `http://localhost` and
/// `http://127.0.0.1` (the loopback exception), and `localhost` is not `127.0.0.1`. No
/// userinfo, no fragment, visible ASCII only.
fn redirect_matches(registered: &str, requested: &str) -> bool {
    let (Ok(r), Ok(q)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    let clean = requested.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
        && q.username().is_empty()
        && q.password().is_none();
    let loopback = r.scheme() == "http" && matches!(r.host_str(), Some("localhost" | "127.0.0.1"));
    let path = |u: &url::Url| match u.path() {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    clean
        && r.scheme() == q.scheme()
        && r.host_str().map(str::to_ascii_lowercase) == q.host_str().map(str::to_ascii_lowercase)
        && (loopback || r.port_or_known_default() == q.port_or_known_default())
        && path(&r) == path(&q)
        && r.query() == q.query()
}

/// The resource a v2 `scope` parameter asks a user token for, parsed as Entra does: scopes
/// are space-separated; `openid`, `profile`, `email` and `offline_access` name no resource; a
/// scope without a `/` is a Microsoft Graph permission; any other is `{resource}/{permission}`,
/// the resource an application id or URI. Every resource scope must name the same resource
/// (AADSTS28000); only Azure DevOps and Graph exist here (AADSTS500011); Azure DevOps has
/// `.default` and `user_impersonation`, and `.default` stands alone (AADSTS70011). No resource
/// scope at all means Graph. `Err` is `(error, AADSTS code, argument)`.
fn parse_scopes(scope: &str) -> Result<&'static str, (&'static str, u32, String)> {
    const OIDC: [&str; 4] = ["openid", "profile", "email", "offline_access"];
    let mut resource: Option<&'static str> = None;
    let mut permissions = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if OIDC.contains(&s) {
            continue;
        }
        let (res, permission) = match s.rsplit_once('/') {
            None => (GRAPH_RESOURCE, s),
            Some((r, p)) => {
                let r = r.trim_end_matches('/');
                let found = if r.eq_ignore_ascii_case(ADO_RESOURCE)
                    || r.eq_ignore_ascii_case("https://app.vssps.visualstudio.com")
                {
                    ADO_RESOURCE
                } else if r.eq_ignore_ascii_case(GRAPH_RESOURCE)
                    || r.eq_ignore_ascii_case("https://graph.microsoft.com")
                {
                    GRAPH_RESOURCE
                } else {
                    return Err(("invalid_resource", 500011, r.to_string()));
                };
                (found, p)
            }
        };
        if resource.is_some_and(|known| known != res) {
            return Err(("invalid_scope", 28000, scope.to_string()));
        }
        resource = Some(res);
        permissions.push(permission);
    }
    let resource = resource.unwrap_or(GRAPH_RESOURCE);
    let known = |p: &&str| match resource {
        ADO_RESOURCE => matches!(*p, ".default" | "user_impersonation"),
        _ => matches!(*p, ".default" | "User.Read"),
    };
    let alone = !permissions.contains(&".default") || permissions.len() == 1;
    match permissions.iter().find(|p| !known(p)) {
        Some(bad) => Err(("invalid_scope", 70011, bad.to_string())),
        None if !alone => Err(("invalid_scope", 70011, scope.to_string())),
        None => Ok(resource),
    }
}

/// Entra's "Sorry, but we're having trouble signing you in." page, as a 400.
fn error_page(code: u32, message: &str) -> Resp {
    let (ts, trace, corr) = (timestamp(unix_now()), guid(), guid());
    let text = html_escape(&format!("AADSTS{code}: {message}"));
    html_response(
        400,
        format!(
            "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>\
             <h1>Sorry, but we're having trouble signing you in.</h1><p id=\"error\">{text}</p>\
             <p>Request Id: {trace}<br>Correlation Id: {corr}<br>Timestamp: {ts}</p></body></html>"
        ),
    )
}

/// The sign-in page a browser shows while the person has not finished (200, no redirect).
fn login_page(tenant: &str, login_hint: &str) -> Resp {
    let (tenant, hint) = (html_escape(tenant), html_escape(login_hint));
    html_response(
        200,
        format!(
            "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>\
             <h1>Sign in</h1><form method=\"post\" action=\"/{tenant}/login\">\
             <input type=\"email\" name=\"loginfmt\" value=\"{hint}\" placeholder=\"Email, phone, or Skype\">\
             <input type=\"submit\" value=\"Next\"></form></body></html>"
        ),
    )
}

/// `302 Found` to `redirect_uri` with `pairs` form-encoded into its query.
fn redirect_to(redirect_uri: &str, pairs: &[(&str, &str)]) -> Resp {
    // A URI without a path comes back with `/` (`http://localhost:7071` → `…:7071/`).
    let parsed = url::Url::parse(redirect_uri).map(String::from);
    let redirect_uri = parsed.as_deref().unwrap_or(redirect_uri);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let sep = match redirect_uri.contains('?') {
        false => "?",
        true if redirect_uri.ends_with(['?', '&']) => "",
        true => "&",
    };
    let location = format!("{redirect_uri}{sep}{query}");
    let href = html_escape(&location);
    let body = format!(
        "<html><head><title>Object moved</title></head><body>\
         <h2>Object moved to <a href=\"{href}\">here</a>.</h2></body></html>"
    );
    let mut r = html_response(302, body);
    // `redirect_matches` admits only visible ASCII, so this always parses.
    r.headers_mut()
        .insert("Location", location.parse().unwrap());
    r
}

/// The S256 PKCE challenge of a verifier: BASE64URL-NOPAD(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

/// SHA-256 (FIPS 180-4). `ring` is only a transitive dependency, so the mock
/// carries its own; tests/mocks.rs checks it against the FIPS/RFC vectors and ring.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    // Padding: 0x80, zeros to 56 mod 64, then the length in bits, big-endian.
    let mut msg = data.to_vec();
    msg.push(0x80);
    msg.resize(msg.len().next_multiple_of(64), 0);
    if msg.len() - data.len() < 9 {
        msg.resize(msg.len() + 64, 0);
    }
    let bits = (data.len() as u64).wrapping_mul(8).to_be_bytes();
    let end = msg.len();
    msg[end - 8..].copy_from_slice(&bits);
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (t, word) in block.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes(word.try_into().unwrap());
        }
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16]
                .wrapping_add(s0)
                .wrapping_add(w[t - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for (k, wt) in K.iter().zip(w) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(wt);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let t2 = s0.wrapping_add((a & b) ^ (a & c) ^ (b & c));
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (o, x) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}
