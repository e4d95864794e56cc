//! Mock managed-identity endpoints over plain HTTP (as the real ones are): the Azure VM
//! Instance Metadata Service (`/metadata/identity/oauth2/token`, header `Metadata: true`)
//! and the App Service / Functions endpoint (`/msi/token`, header `X-IDENTITY-HEADER`).
//! Tokens are minted by a [`MockEntra`], so `MockAdo` accepts them. A system-assigned
//! identity with fixed ids, user-assigned identities by client id, object id or resource
//! id, request counters, and `fail_next` for throttling and outages. Its App Service header
//! secret goes into the world's ledger (the tokens are recorded by the `MockEntra` that mints
//! them).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::entra::{AppIdentity, EntraMinter, MockEntra};
use super::secrets::{SecretKind, SecretRecord};
use super::tls::{HttpsServer, Resp, guid, unix_now};

/// Which of the two managed-identity endpoints a request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiEndpoint {
    /// Azure VM IMDS: `GET /metadata/identity/oauth2/token`.
    Imds,
    /// App Service / Functions: `GET /msi/token`.
    AppService,
}

/// Which identity a token request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityRef {
    /// No `client_id`/`object_id`/`msi_res_id`: the system-assigned identity.
    SystemAssigned,
    ClientId(String),
    /// `object_id` (or App Service's `principal_id`).
    ObjectId(String),
    /// `msi_res_id` (or App Service's `mi_res_id`).
    ResourceId(String),
}

/// One token request, in arrival order.
#[derive(Clone, Debug)]
pub struct MiRequest {
    pub endpoint: MiEndpoint,
    /// What was asked for; `None` when the request named more than one identity.
    pub identity: Option<IdentityRef>,
    pub resource: Option<String>,
    pub api_version: Option<String>,
    pub status: u16,
}

/// A user-assigned managed identity.
#[derive(Clone, Debug)]
struct UserAssigned {
    client_id: String,
    object_id: String,
    msi_res_id: String,
}

struct State {
    user_assigned: Vec<UserAssigned>,
    system_assigned: bool,
    tenant: String,
    /// (requests still to fail, status).
    fail: (usize, u16),
    /// Close every connection without an answer, as an unreachable endpoint does.
    down: bool,
    token_requests: usize,
    served: usize,
    log: Vec<MiRequest>,
}

struct Ctx {
    state: Arc<Mutex<State>>,
    minter: EntraMinter,
    secret: String,
    /// Tokens handed out, for [`MockImds::secrets`].
    minted: Arc<Mutex<Vec<String>>>,
}

impl Ctx {
    fn mint(&self, app: &AppIdentity, tenant: &str, resource: &str) -> (String, u64) {
        let (token, exp) = self.minter.mint(app, tenant, resource);
        self.minted.lock().unwrap().push(token.clone());
        (token, exp)
    }
}

/// Give [`MockImds::url`] to the product as the IMDS base (`AZURE_POD_IDENTITY_AUTHORITY_HOST`),
/// or [`MockImds::app_service_endpoint`] and [`MockImds::header_secret`] as `IDENTITY_ENDPOINT`
/// and `IDENTITY_HEADER`.
pub struct MockImds {
    state: Arc<Mutex<State>>,
    secret: String,
    minted: Arc<Mutex<Vec<String>>>,
    server: HttpsServer,
}

impl MockImds {
    /// Client (application) id of the system-assigned identity.
    pub const SYSTEM_CLIENT_ID: &'static str = "5a6b7c8d-0e1f-4a2b-8c3d-4e5f6a7b8c9d";
    /// Object (principal) id of the system-assigned identity.
    pub const SYSTEM_OBJECT_ID: &'static str = "9f8e7d6c-5b4a-4c3d-9e2f-1a0b9c8d7e6f";
    /// Resource id of the VM the system-assigned identity belongs to (`xms_mirid`).
    pub const SYSTEM_RESOURCE_ID: &'static str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/build/providers/Microsoft.Compute/virtualMachines/build-agent-1";
    /// `api-version`s the IMDS endpoint takes.
    pub const IMDS_API_VERSIONS: [&'static str; 2] = ["2018-02-01", "2019-08-01"];
    /// The `api-version` the App Service endpoint takes.
    pub const APP_SERVICE_API_VERSION: &'static str = "2019-08-01";

    /// Serves both endpoints on `127.0.0.1:0`, minting tokens with `entra`.
    pub fn start(entra: &MockEntra) -> MockImds {
        let state = Arc::new(Mutex::new(State {
            user_assigned: Vec::new(),
            system_assigned: true,
            tenant: MockEntra::HOME_TENANT.to_string(),
            fail: (0, 200),
            down: false,
            token_requests: 0,
            served: 0,
            log: Vec::new(),
        }));
        let secret = guid().replace('-', "").to_ascii_uppercase();
        entra
            .ledger()
            .record(SecretKind::IdentityHeader, "imds", &secret);
        let minted = Arc::new(Mutex::new(Vec::new()));
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            minter: entra.minter(),
            secret: secret.clone(),
            minted: minted.clone(),
        });
        let server = HttpsServer::start_plain(move |req| handle(ctx.clone(), req));
        MockImds {
            state,
            secret,
            minted,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// `http://127.0.0.1:PORT/msi/token`, App Service's `IDENTITY_ENDPOINT`.
    pub fn app_service_endpoint(&self) -> String {
        format!("{}/msi/token", self.url())
    }

    /// The App Service `X-IDENTITY-HEADER` value (`IDENTITY_HEADER`), random per mock.
    pub fn header_secret(&self) -> &str {
        &self.secret
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// The secrets this mock handed out so far: its header secret, then every token it
    /// served (all also in the world's ledger, the tokens as the minting `MockEntra`'s).
    pub fn secrets(&self) -> Vec<SecretRecord> {
        let header = SecretRecord {
            kind: SecretKind::IdentityHeader,
            source: "imds",
            value: self.secret.clone(),
        };
        let minted = self.minted.lock().unwrap().clone();
        let tokens = minted.into_iter().map(|value| SecretRecord {
            kind: SecretKind::AccessToken,
            source: "imds",
            value,
        });
        std::iter::once(header).chain(tokens).collect()
    }

    /// Attaches a user-assigned identity; `msi_res_id` is its Azure resource id
    /// (`/subscriptions/.../Microsoft.ManagedIdentity/userAssignedIdentities/NAME`).
    /// Ids match case-insensitively.
    pub fn add_user_assigned(&self, client_id: &str, object_id: &str, msi_res_id: &str) {
        let ua = UserAssigned {
            client_id: client_id.into(),
            object_id: object_id.into(),
            msi_res_id: msi_res_id.into(),
        };
        self.with(|s| s.user_assigned.push(ua))
    }

    /// Whether the machine has a system-assigned identity (default true). Without one, a
    /// request that names no identity gets 400 "Identity not found".
    pub fn set_system_assigned(&self, enabled: bool) {
        self.with(|s| s.system_assigned = enabled)
    }

    /// Tenant of the identities (default [`MockEntra::HOME_TENANT`]).
    pub fn set_tenant(&self, tenant: &str) {
        self.with(|s| s.tenant = tenant.into())
    }

    /// The next `n` token requests (either endpoint, valid or not) get `status` (429 with
    /// `Retry-After: 1`), then requests are served normally again.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.with(|s| s.fail = (n, status))
    }

    /// While `down`, every connection is closed without an answer (the endpoint is gone).
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down)
    }

    /// Requests to either token endpoint so far, failed ones included.
    pub fn token_requests(&self) -> usize {
        self.with(|s| s.token_requests)
    }

    /// Tokens handed out so far (200 answers).
    pub fn served(&self) -> usize {
        self.with(|s| s.served)
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<MiRequest> {
        self.with(|s| s.log.clone())
    }

    /// What the last token request asked for.
    pub fn last_identity(&self) -> Option<IdentityRef> {
        self.with(|s| s.log.last().and_then(|r| r.identity.clone()))
    }
}

fn json_response(status: u16, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Server", "IMDS/150.870.65.1325")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// IMDS's error shape: `{"error":..,"error_description":..}`.
fn imds_error(status: u16, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// App Service's error shape: `{"statusCode":..,"message":..,"correlationId":..}`.
fn app_service_error(status: u16, message: &str) -> Resp {
    json_response(
        status,
        &json!({"statusCode": status, "message": message, "correlationId": guid()}),
    )
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Option<Resp> {
    if ctx.state.lock().unwrap().down {
        return None;
    }
    let endpoint = match req.uri().path() {
        "/metadata/identity/oauth2/token" => MiEndpoint::Imds,
        "/msi/token" => MiEndpoint::AppService,
        _ => {
            let body = Full::new(Bytes::from_static(b"Not Found"));
            return Some(Response::builder().status(404).body(body).unwrap());
        }
    };
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let metadata_ok = header("Metadata").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let secret_ok = header("X-IDENTITY-HEADER") == Some(ctx.secret.as_str());
    let get = req.method() == Method::GET;

    let names: &[(&str, MakeRef)] = match endpoint {
        MiEndpoint::Imds => &[
            ("client_id", IdentityRef::ClientId),
            ("object_id", IdentityRef::ObjectId),
            ("msi_res_id", IdentityRef::ResourceId),
        ],
        MiEndpoint::AppService => &[
            ("client_id", IdentityRef::ClientId),
            ("object_id", IdentityRef::ObjectId),
            ("principal_id", IdentityRef::ObjectId),
            ("msi_res_id", IdentityRef::ResourceId),
            ("mi_res_id", IdentityRef::ResourceId),
        ],
    };
    let given: Vec<IdentityRef> = names
        .iter()
        .filter_map(|(k, make)| query.get(*k).map(|v| make(v.clone())))
        .collect();
    let identity = match given.len() {
        0 => Some(IdentityRef::SystemAssigned),
        1 => given.into_iter().next(),
        _ => None,
    };
    let resource = query.get("resource").filter(|r| !r.is_empty()).cloned();
    let api_version = query.get("api-version").cloned();

    let mut st = ctx.state.lock().unwrap();
    st.token_requests += 1;
    let resp = if st.fail.0 > 0 {
        st.fail.0 -= 1;
        fault(endpoint, st.fail.1)
    } else {
        let req = Checked {
            get,
            metadata_ok,
            secret_ok,
            api_version: api_version.as_deref(),
            resource: resource.as_deref(),
            identity: identity.as_ref(),
        };
        match endpoint {
            MiEndpoint::Imds => imds(&ctx, &st, &req),
            MiEndpoint::AppService => app_service(&ctx, &st, &req),
        }
    };
    let status = resp.status().as_u16();
    st.served += usize::from(status == 200);
    st.log.push(MiRequest {
        endpoint,
        identity,
        resource,
        api_version,
        status,
    });
    Some(resp)
}

/// A query parameter that names an identity, and how.
type MakeRef = fn(String) -> IdentityRef;

/// What a token request carried.
struct Checked<'a> {
    get: bool,
    metadata_ok: bool,
    secret_ok: bool,
    api_version: Option<&'a str>,
    resource: Option<&'a str>,
    identity: Option<&'a IdentityRef>,
}

fn fault(endpoint: MiEndpoint, status: u16) -> Resp {
    let (error, text) = match status {
        429 => ("too_many_requests", "Too many requests. Retry later."),
        404 | 410 => (
            "not_found",
            "The managed identity is being updated. Retry later.",
        ),
        _ => (
            "unknown",
            "Failed to retrieve token from the Active directory.",
        ),
    };
    let mut r = match endpoint {
        MiEndpoint::Imds => imds_error(status, error, text),
        MiEndpoint::AppService => app_service_error(status, text),
    };
    if status == 429 {
        r.headers_mut().insert("Retry-After", 1.into());
    }
    r
}

/// The identity a request names, if the machine has it.
fn find(st: &State, identity: &IdentityRef) -> Option<AppIdentity> {
    let system = AppIdentity {
        client_id: MockImds::SYSTEM_CLIENT_ID.into(),
        object_id: MockImds::SYSTEM_OBJECT_ID.into(),
        display_name: "build-agent-1".into(),
        mi_res_id: Some(MockImds::SYSTEM_RESOURCE_ID.into()),
    };
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let ua = match identity {
        IdentityRef::SystemAssigned => return st.system_assigned.then_some(system),
        IdentityRef::ClientId(id) => st.user_assigned.iter().find(|u| eq(&u.client_id, id)),
        IdentityRef::ObjectId(id) => st.user_assigned.iter().find(|u| eq(&u.object_id, id)),
        IdentityRef::ResourceId(id) => st.user_assigned.iter().find(|u| eq(&u.msi_res_id, id)),
    }?;
    let name = ua.msi_res_id.rsplit('/').next().unwrap_or_default();
    Some(AppIdentity {
        client_id: ua.client_id.clone(),
        object_id: ua.object_id.clone(),
        display_name: name.to_string(),
        mi_res_id: Some(ua.msi_res_id.clone()),
    })
}

fn imds(ctx: &Ctx, st: &State, req: &Checked) -> Resp {
    let bad = |text: &str| imds_error(400, "invalid_request", text);
    if !req.get {
        return imds_error(405, "invalid_request", "Method not allowed");
    }
    if !req.metadata_ok {
        return bad("Required metadata header not specified");
    }
    if !req
        .api_version
        .is_some_and(|v| MockImds::IMDS_API_VERSIONS.contains(&v))
    {
        return bad("Bad request. api-version is invalid or was not specified in the request.");
    }
    let Some(resource) = req.resource else {
        return bad("Required audience parameter not specified");
    };
    let Some(identity) = req.identity else {
        return bad("Only one of client_id, object_id or msi_res_id may be specified");
    };
    let Some(app) = find(st, identity) else {
        return bad("Identity not found");
    };
    let (token, exp) = ctx.mint(&app, &st.tenant, resource);
    let now = unix_now();
    json_response(
        200,
        &json!({
            "access_token": token, "refresh_token": "",
            "expires_in": exp.saturating_sub(now).to_string(), "expires_on": exp.to_string(),
            "not_before": now.to_string(), "resource": resource, "token_type": "Bearer",
            "client_id": app.client_id,
        }),
    )
}

fn app_service(ctx: &Ctx, st: &State, req: &Checked) -> Resp {
    if !req.get {
        return app_service_error(405, "Method not allowed.");
    }
    if !req.secret_ok {
        return app_service_error(400, "The X-IDENTITY-HEADER header is missing or invalid.");
    }
    if req.api_version != Some(MockImds::APP_SERVICE_API_VERSION) {
        return app_service_error(400, "The api-version is missing or not supported.");
    }
    let Some(resource) = req.resource else {
        return app_service_error(400, "The resource parameter is required.");
    };
    let Some(identity) = req.identity else {
        return app_service_error(
            400,
            "Only one of client_id, principal_id, object_id, mi_res_id or msi_res_id may be given.",
        );
    };
    let Some(app) = find(st, identity) else {
        return app_service_error(400, "Unable to load the proper Managed Identity.");
    };
    let (token, exp) = ctx.mint(&app, &st.tenant, resource);
    json_response(
        200,
        &json!({
            "access_token": token, "expires_on": exp.to_string(), "resource": resource,
            "token_type": "Bearer", "client_id": app.client_id,
        }),
    )
}
