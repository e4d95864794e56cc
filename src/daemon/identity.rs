//! Machine identities for build agents: managed identity (Azure VM IMDS, App Service and
//! Functions), service principal with a client secret, and workload identity federation with a
//! token file. Each gets an Azure DevOps token with no person and no refresh token; the broker
//! simply asks again ahead of expiry.
//!
//! Configured like azure-identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
//! `AZURE_FEDERATED_TOKEN_FILE`, `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, overridable per
//! identity in the configuration file. A misconfiguration is one line naming what is missing.

use super::endpoint;
use super::entra::{AZURE_DEVOPS_SCOPE, EntraError, TokenSet};
use crate::config::IdentityConfig;
use crate::secret::Secret;
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The Azure DevOps resource, for managed-identity endpoints that take `resource=`.
const AZURE_DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const IMDS: &str = "http://169.254.169.254";

/// Which user-assigned managed identity (by client id, object id or resource id), if not the
/// system-assigned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAssigned {
    Client(String),
    Object(String),
    Resource(String),
}

#[derive(Debug, Clone)]
pub enum MachineIdentity {
    ManagedIdentity {
        user_assigned: Option<UserAssigned>,
        endpoint: MiEndpoint,
    },
    ServicePrincipal {
        tenant: String,
        client_id: String,
        credential: SpCredential,
    },
    Workload {
        tenant: String,
        client_id: String,
        source: AssertionSource,
    },
}

/// Where a managed identity asks, from the variables the platform sets.
#[derive(Debug, Clone, Default)]
pub struct MiEndpoint {
    identity_endpoint: Option<String>,
    identity_header: Option<Secret>,
    imds_endpoint: Option<String>,
    pod_authority: Option<String>,
}

/// How a service principal proves itself.
#[derive(Debug, Clone)]
pub enum SpCredential {
    Secret(Secret),
    /// A PEM file with the certificate (first) and its RSA private key; read at every
    /// exchange, so a renewed certificate is picked up.
    Certificate {
        path: PathBuf,
        send_chain: bool,
    },
}

/// Where a workload identity's federated token (the client assertion) comes from.
#[derive(Debug, Clone)]
pub enum AssertionSource {
    /// A file the platform keeps fresh (AKS, generic): read at every exchange.
    File(PathBuf),
    /// GitHub Actions' OIDC provider (`permissions: id-token: write`).
    GitHubActions { url: String, token: Secret },
    /// Azure Pipelines' OIDC endpoint for a service connection.
    AzurePipelines {
        uri: String,
        access_token: Secret,
        connection_id: String,
    },
}

/// Audience Entra expects in federated tokens.
const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl MachineIdentity {
    /// Builds an identity from its configuration and azure-identity's environment variables,
    /// and checks that every address it would send a secret to is https (the managed-identity
    /// endpoints Azure serves on the machine aside: [`endpoint::require_https_or_local`]).
    pub fn resolve(
        name: &str,
        cfg: &IdentityConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MachineIdentity, String> {
        let identity = Self::from_settings(name, cfg, lookup)?;
        identity
            .check_endpoints()
            .map_err(|e| format!("identity '{name}': {e}"))?;
        Ok(identity)
    }

    /// The addresses this identity sends a secret to are allowed.
    fn check_endpoints(&self) -> Result<(), String> {
        match self {
            MachineIdentity::ManagedIdentity { endpoint, .. } => {
                for (var, url) in [
                    ("IDENTITY_ENDPOINT", &endpoint.identity_endpoint),
                    ("IMDS_ENDPOINT", &endpoint.imds_endpoint),
                    ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &endpoint.pod_authority),
                ] {
                    if let Some(url) = url {
                        endpoint::require_https_or_local(var, url)?;
                    }
                }
                Ok(())
            }
            MachineIdentity::Workload {
                source: AssertionSource::GitHubActions { url, .. },
                ..
            } => endpoint::require_https("ACTIONS_ID_TOKEN_REQUEST_URL", url),
            MachineIdentity::Workload {
                source: AssertionSource::AzurePipelines { uri, .. },
                ..
            } => endpoint::require_https("SYSTEM_OIDCREQUESTURI", uri),
            _ => Ok(()),
        }
    }

    fn from_settings(
        name: &str,
        cfg: &IdentityConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MachineIdentity, String> {
        let env = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let need = |value: Option<String>, key: &str, var: &str| {
            value.or_else(|| env(var)).ok_or_else(|| {
                format!("identity '{name}' needs {key}: set {var}, or {key} under [identities.{name}] in the configuration")
            })
        };
        match cfg.kind.as_str() {
            "managed-identity" => {
                let user_assigned = match (&cfg.client_id, &cfg.object_id, &cfg.resource_id) {
                    (Some(c), None, None) => Some(UserAssigned::Client(c.clone())),
                    (None, Some(o), None) => Some(UserAssigned::Object(o.clone())),
                    (None, None, Some(r)) => Some(UserAssigned::Resource(r.clone())),
                    (None, None, None) => env("AZURE_CLIENT_ID").map(UserAssigned::Client),
                    _ => {
                        return Err(format!(
                            "identity '{name}': give only one of client_id, object_id, resource_id"
                        ));
                    }
                };
                Ok(MachineIdentity::ManagedIdentity {
                    user_assigned,
                    endpoint: MiEndpoint {
                        identity_endpoint: env("IDENTITY_ENDPOINT"),
                        identity_header: env("IDENTITY_HEADER").map(Secret::new),
                        imds_endpoint: env("IMDS_ENDPOINT"),
                        pod_authority: env("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
                    },
                })
            }
            "service-principal" => {
                let tenant = need(cfg.tenant.clone(), "tenant", "AZURE_TENANT_ID")?;
                let client_id = need(cfg.client_id.clone(), "client_id", "AZURE_CLIENT_ID")?;
                let secret = match &cfg.client_secret_file {
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .map(|s| s.trim().to_string())
                            .map_err(|e| {
                                format!(
                                    "identity '{name}': cannot read client_secret_file {f}: {e}"
                                )
                            })?,
                    ),
                    None => env("AZURE_CLIENT_SECRET"),
                };
                let certificate = cfg
                    .client_certificate_path
                    .clone()
                    .or_else(|| env("AZURE_CLIENT_CERTIFICATE_PATH"));
                let credential = match (secret, certificate) {
                    (Some(s), _) => SpCredential::Secret(Secret::new(s)),
                    (None, Some(path)) => SpCredential::Certificate {
                        path: PathBuf::from(path),
                        send_chain: cfg.send_certificate_chain
                            || env("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
                    },
                    (None, None) => {
                        return Err(format!(
                            "identity '{name}' needs a client secret or certificate: set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH (or client_secret_file / client_certificate_path under [identities.{name}])"
                        ));
                    }
                };
                Ok(MachineIdentity::ServicePrincipal {
                    tenant,
                    client_id,
                    credential,
                })
            }
            "workload-identity" => {
                let tenant = need(cfg.tenant.clone(), "tenant", "AZURE_TENANT_ID")?;
                let client_id = need(cfg.client_id.clone(), "client_id", "AZURE_CLIENT_ID")?;
                let file = cfg
                    .federated_token_file
                    .clone()
                    .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE"));
                let source = match (cfg.token_source.as_deref(), file) {
                    (None | Some("file"), Some(f)) => AssertionSource::File(PathBuf::from(f)),
                    (Some("file"), None) => {
                        return Err(format!(
                            "identity '{name}' needs federated_token_file: set AZURE_FEDERATED_TOKEN_FILE, or federated_token_file under [identities.{name}]"
                        ));
                    }
                    (Some("github-actions"), _) | (None, None)
                        if env("ACTIONS_ID_TOKEN_REQUEST_URL").is_some() =>
                    {
                        AssertionSource::GitHubActions {
                            url: need(None, "an OIDC request URL", "ACTIONS_ID_TOKEN_REQUEST_URL")?,
                            token: Secret::new(need(
                                None,
                                "an OIDC request token (permissions: id-token: write)",
                                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                            )?),
                        }
                    }
                    (Some("azure-pipelines"), _) | (None, None)
                        if env("SYSTEM_OIDCREQUESTURI").is_some() =>
                    {
                        AssertionSource::AzurePipelines {
                            uri: need(None, "the OIDC request URI", "SYSTEM_OIDCREQUESTURI")?,
                            access_token: Secret::new(need(
                                None,
                                "the job's access token (env: SYSTEM_ACCESSTOKEN: $(System.AccessToken))",
                                "SYSTEM_ACCESSTOKEN",
                            )?),
                            connection_id: need(
                                cfg.service_connection_id.clone(),
                                "service_connection_id",
                                "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
                            )?,
                        }
                    }
                    (Some(other @ ("github-actions" | "azure-pipelines")), _) => {
                        return Err(format!(
                            "identity '{name}' uses token_source '{other}', but this is not running there (its OIDC variables are not set)"
                        ));
                    }
                    (Some(other), _) => {
                        return Err(format!(
                            "identity '{name}' has token_source '{other}'; use file, github-actions or azure-pipelines"
                        ));
                    }
                    (None, None) => {
                        return Err(format!(
                            "identity '{name}' has no federated token: set AZURE_FEDERATED_TOKEN_FILE, or run in GitHub Actions (id-token: write) or Azure Pipelines"
                        ));
                    }
                };
                Ok(MachineIdentity::Workload {
                    tenant,
                    client_id,
                    source,
                })
            }
            other => Err(format!(
                "identity '{name}' has kind '{other}'; use managed-identity, service-principal or workload-identity"
            )),
        }
    }

    /// For `status`: the kind and who.
    pub fn describe(&self) -> String {
        match self {
            MachineIdentity::ManagedIdentity { user_assigned, .. } => match user_assigned {
                None => "managed identity (system-assigned)".into(),
                Some(UserAssigned::Client(c)) => format!("managed identity (client id {c})"),
                Some(UserAssigned::Object(o)) => format!("managed identity (object id {o})"),
                Some(UserAssigned::Resource(r)) => format!("managed identity ({r})"),
            },
            MachineIdentity::ServicePrincipal {
                client_id,
                credential,
                ..
            } => match credential {
                SpCredential::Secret(_) => format!("service principal {client_id} (client secret)"),
                SpCredential::Certificate { path, .. } => format!(
                    "service principal {client_id} (certificate {})",
                    path.display()
                ),
            },
            MachineIdentity::Workload {
                client_id, source, ..
            } => match source {
                AssertionSource::File(f) => {
                    format!("workload identity {client_id} (token file {})", f.display())
                }
                AssertionSource::GitHubActions { .. } => {
                    format!("workload identity {client_id} (GitHub Actions OIDC)")
                }
                AssertionSource::AzurePipelines { connection_id, .. } => format!(
                    "workload identity {client_id} (Azure Pipelines OIDC, service connection {connection_id})"
                ),
            },
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            MachineIdentity::ManagedIdentity { .. } => "managed",
            MachineIdentity::ServicePrincipal { tenant, .. }
            | MachineIdentity::Workload { tenant, .. } => tenant,
        }
    }

    /// Gets a fresh Azure DevOps token. `direct` must not use a proxy (IMDS is link-local).
    pub async fn acquire(
        &self,
        http: &reqwest::Client,
        direct: &reqwest::Client,
        authority: &str,
    ) -> Result<TokenSet, EntraError> {
        match self {
            MachineIdentity::ManagedIdentity {
                user_assigned,
                endpoint,
            } => managed_identity(direct, user_assigned.as_ref(), endpoint).await,
            MachineIdentity::ServicePrincipal {
                tenant,
                client_id,
                credential,
            } => match credential {
                SpCredential::Secret(secret) => {
                    client_credentials(http, authority, tenant, client_id, Some(secret), None).await
                }
                SpCredential::Certificate { path, send_chain } => {
                    let aud = format!("{authority}/{tenant}/oauth2/v2.0/token");
                    let assertion = certificate_assertion(path, client_id, &aud, *send_chain)
                        .map_err(EntraError::Rejected)?;
                    client_credentials(http, authority, tenant, client_id, None, Some(&assertion))
                        .await
                }
            },
            MachineIdentity::Workload {
                tenant,
                client_id,
                source,
            } => {
                let assertion = federated_token(http, source).await?;
                client_credentials(http, authority, tenant, client_id, None, Some(&assertion)).await
            }
        }
    }
}

/// A fresh federated token from its source.
async fn federated_token(
    http: &reqwest::Client,
    source: &AssertionSource,
) -> Result<Secret, EntraError> {
    #[derive(Deserialize)]
    struct GitHub {
        value: Secret,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Pipelines {
        oidc_token: Secret,
    }
    let unreadable =
        |what: &str| EntraError::Transient(format!("{what}'s answer was not readable"));
    let check = |what: &str, r: reqwest::Response| {
        if r.status().is_success() {
            Ok(r)
        } else {
            let msg = format!("{what} answered {}", r.status());
            Err(if r.status().is_server_error() {
                EntraError::Transient(msg)
            } else {
                EntraError::Rejected(msg)
            })
        }
    };
    let net =
        |what: &str, e: reqwest::Error| EntraError::Transient(format!("cannot reach {what}: {e}"));
    match source {
        // Re-read on every exchange: the platform rotates the file.
        AssertionSource::File(f) => std::fs::read_to_string(f)
            .map(|t| Secret::new(t.trim().to_string()))
            .map_err(|e| {
                EntraError::Rejected(format!(
                    "cannot read the federated token file {}: {e}",
                    f.display()
                ))
            }),
        AssertionSource::GitHubActions { url, token } => {
            let what = "GitHub Actions' OIDC provider";
            let r = http
                .get(url)
                .query(&[("audience", EXCHANGE_AUDIENCE)])
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| net(what, e))?;
            let t: GitHub = check(what, r)?.json().await.map_err(|_| unreadable(what))?;
            Ok(t.value)
        }
        AssertionSource::AzurePipelines {
            uri,
            access_token,
            connection_id,
        } => {
            let what = "Azure Pipelines' OIDC endpoint";
            let r = http
                .post(uri)
                .query(&[
                    ("api-version", "7.1"),
                    ("serviceConnectionId", connection_id),
                ])
                .bearer_auth(access_token.expose())
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .map_err(|e| net(what, e))?;
            let t: Pipelines = check(what, r)?.json().await.map_err(|_| unreadable(what))?;
            Ok(t.oidc_token)
        }
    }
}

/// A client assertion signed with the certificate's RSA key (RS256): header with the
/// certificate's `x5t#S256` and `x5t` thumbprints (and `x5c` chain on request); `aud` is the
/// token endpoint, `iss` = `sub` = the client id, valid for ten minutes.
fn certificate_assertion(
    path: &std::path::Path,
    client_id: &str,
    aud: &str,
    send_chain: bool,
) -> Result<Secret, String> {
    use base64::Engine;
    use ring::{digest, rand, signature};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read the certificate {shown}: {e}"))?;
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown} is not a PEM certificate file: {e}"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| format!("{shown} holds no certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!("{shown} holds no private key (PEM with the certificate and its key)")
    })?;
    let key_pair = match &key {
        PrivateKeyDer::Pkcs8(k) => signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(format!("the key in {shown} is not an RSA key")),
    }
    .map_err(|e| format!("the key in {shown} is not a usable RSA key: {e}"))?;
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t#S256": b64url(digest::digest(&digest::SHA256, leaf).as_ref()),
        "x5t": b64url(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf).as_ref()),
    });
    if send_chain {
        header["x5c"] = certs
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
            .collect();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rng = rand::SystemRandom::new();
    let mut jti = [0u8; 16];
    rand::SecureRandom::fill(&rng, &mut jti).map_err(|_| "no randomness".to_string())?;
    let payload = serde_json::json!({
        "aud": aud, "iss": client_id, "sub": client_id,
        "jti": b64url(&jti), "nbf": now, "iat": now, "exp": now + 600,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes())
    );
    let mut sig = vec![0u8; key_pair.public().modulus_len()];
    key_pair
        .sign(
            &signature::RSA_PKCS1_SHA256,
            &rng,
            input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| format!("signing with the key in {shown} failed"))?;
    Ok(Secret::new(format!("{input}.{}", b64url(&sig))))
}

/// Entra's client-credentials grant with a secret or a client assertion.
async fn client_credentials(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    client_id: &str,
    secret: Option<&Secret>,
    assertion: Option<&Secret>,
) -> Result<TokenSet, EntraError> {
    let token_url = TokenUrl::new(format!("{authority}/{tenant}/oauth2/v2.0/token"))
        .map_err(|e| EntraError::Rejected(format!("bad authority URL: {e}")))?;
    let mut client = BasicClient::new(ClientId::new(client_id.to_string()))
        .set_token_uri(token_url)
        .set_auth_type(oauth2::AuthType::RequestBody);
    if let Some(s) = secret {
        client = client.set_client_secret(ClientSecret::new(s.expose().to_string()));
    }
    let mut req = client
        .exchange_client_credentials()
        .add_scope(Scope::new(AZURE_DEVOPS_SCOPE.to_string()));
    if let Some(a) = assertion {
        req = req
            .add_extra_param(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .add_extra_param("client_assertion", a.expose().to_string());
    }
    let t = req
        .request_async(http)
        .await
        .map_err(|e| super::entra::classify("client-credentials request", e))?;
    Ok(TokenSet {
        access: Secret::new(t.access_token().secret().clone()),
        refresh: None,
        expires_in: t.expires_in().unwrap_or(Duration::from_secs(3600)),
    })
}

/// Azure Arc: the first request is refused with `WWW-Authenticate: Basic realm=<key file>`;
/// the file's content (readable only by privileged local users) authorizes the second.
async fn arc(req: reqwest::RequestBuilder, endpoint: &str) -> Result<TokenSet, EntraError> {
    let what = "Azure Arc identity endpoint";
    let host = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    if !matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
        return Err(EntraError::Rejected(format!(
            "the {what} must be on this machine (localhost), not '{host}'"
        )));
    }
    let net = |e: reqwest::Error| EntraError::Transient(format!("cannot reach the {what}: {e}"));
    let first = req
        .try_clone()
        .expect("a GET without a body clones")
        .send()
        .await
        .map_err(net)?;
    let realm = first
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Basic realm="))
        .map(|p| p.trim_matches('"').to_string());
    let Some(key_file) = realm.filter(|_| first.status().as_u16() == 401) else {
        return Err(EntraError::Rejected(format!(
            "the {what} answered {} without its key-file challenge",
            first.status()
        )));
    };
    // Only a small `.key` file: never send an arbitrary file's content anywhere.
    let meta = std::fs::metadata(&key_file).map_err(|e| {
        EntraError::Rejected(format!("cannot read the Arc key file {key_file}: {e}"))
    })?;
    let dir = env("GIT_CREDENTIAL_AZDO_ARC_TOKENS_DIR")
        .unwrap_or_else(|| "/var/opt/azcmagent/tokens".into());
    let in_dir = std::fs::canonicalize(&key_file)
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .zip(std::fs::canonicalize(&dir).ok())
        .is_some_and(|(parent, dir)| parent == dir);
    if !key_file.ends_with(".key") || meta.len() > 4096 || !in_dir {
        return Err(EntraError::Rejected(format!(
            "the {what} named {key_file}, which is not an Arc key file"
        )));
    }
    let key = std::fs::read_to_string(&key_file).map_err(|e| {
        EntraError::Rejected(format!("cannot read the Arc key file {key_file}: {e}"))
    })?;
    let resp = req
        .header("Authorization", format!("Basic {}", key.trim()))
        .send()
        .await
        .map_err(net)?;
    if !resp.status().is_success() {
        return Err(EntraError::Rejected(format!(
            "the {what} answered {} to the key file's proof",
            resp.status()
        )));
    }
    mi_token(resp, what).await
}

/// Reads a managed-identity token answer.
async fn mi_token(resp: reqwest::Response, what: &str) -> Result<TokenSet, EntraError> {
    let t: MiToken = resp
        .json()
        .await
        .map_err(|_| EntraError::Transient(format!("the {what}'s answer was not readable")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires_in = number(&t.expires_in)
        .or_else(|| number(&t.expires_on).map(|on| on.saturating_sub(now)))
        .unwrap_or(3600);
    Ok(TokenSet {
        access: t.access_token,
        refresh: None,
        expires_in: Duration::from_secs(expires_in),
    })
}

/// A managed-identity token answer: numbers arrive as strings.
#[derive(Deserialize)]
struct MiToken {
    access_token: Secret,
    expires_in: Option<serde_json::Value>,
    expires_on: Option<serde_json::Value>,
}

fn number(v: &Option<serde_json::Value>) -> Option<u64> {
    match v.as_ref()? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// IMDS (Azure VMs); App Service/Functions when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
/// are set; Azure Arc when `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` are. Retries 404/410/429/5xx with exponential back-off, as Microsoft documents for IMDS.
async fn managed_identity(
    http: &reqwest::Client,
    user_assigned: Option<&UserAssigned>,
    at: &MiEndpoint,
) -> Result<TokenSet, EntraError> {
    let (mut req, what) = match (
        at.identity_endpoint.clone(),
        at.identity_header.as_ref().map(|h| h.expose().to_string()),
        at.imds_endpoint.as_ref(),
    ) {
        (Some(endpoint), Some(header), _) => (
            http.get(&endpoint)
                .query(&[
                    ("api-version", "2019-08-01"),
                    ("resource", AZURE_DEVOPS_RESOURCE),
                ])
                .header("X-IDENTITY-HEADER", header),
            "App Service managed identity endpoint",
        ),
        (Some(endpoint), None, Some(_)) => {
            if user_assigned.is_some() {
                return Err(EntraError::Rejected(
                    "Azure Arc supports only the system-assigned identity".into(),
                ));
            }
            let req = http
                .get(&endpoint)
                .query(&[
                    ("api-version", "2020-06-01"),
                    ("resource", AZURE_DEVOPS_RESOURCE),
                ])
                .header("Metadata", "true");
            return arc(req, &endpoint).await;
        }
        _ => {
            let base = at.pod_authority.clone().unwrap_or_else(|| IMDS.into());
            (
                http.get(format!(
                    "{}/metadata/identity/oauth2/token",
                    base.trim_end_matches('/')
                ))
                .query(&[
                    ("api-version", "2018-02-01"),
                    ("resource", AZURE_DEVOPS_RESOURCE),
                ])
                .header("Metadata", "true"),
                "Azure Instance Metadata Service (IMDS)",
            )
        }
    };
    if let Some(u) = user_assigned {
        let app_service = what.starts_with("App Service");
        let (k, v) = match u {
            UserAssigned::Client(c) => ("client_id", c),
            UserAssigned::Object(o) => ("object_id", o),
            // IMDS calls it msi_res_id; App Service (2019-08-01) mi_res_id.
            UserAssigned::Resource(r) if app_service => ("mi_res_id", r),
            UserAssigned::Resource(r) => ("msi_res_id", r),
        };
        req = req.query(&[(k, v)]);
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=5 {
        let Some(this) = req.try_clone() else {
            break;
        };
        let resp = this.timeout(Duration::from_secs(10)).send().await.map_err(|e| {
            EntraError::Transient(format!("cannot reach the {what}: {e} (is this an Azure machine with a managed identity?)"))
        })?;
        let status = resp.status().as_u16();
        if matches!(status, 404 | 410 | 429 | 500..=599) && attempt < 5 {
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(delay)
                .min(Duration::from_secs(30));
            tracing::info!(
                status,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "managed identity endpoint busy; retrying"
            );
            tokio::time::sleep(wait).await;
            delay *= 2;
            continue;
        }
        if !resp.status().is_success() {
            // Error bodies carry no secrets.
            let body = resp.text().await.unwrap_or_default();
            let detail: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            // IMDS: {"error","error_description"}; App Service: {"statusCode","message"}.
            let desc = detail["error_description"]
                .as_str()
                .or(detail["message"].as_str())
                .or(detail["error"].as_str())
                .unwrap_or("no details");
            return Err(EntraError::Rejected(format!(
                "the {what} answered {status}: {desc}"
            )));
        }
        return mi_token(resp, what).await;
    }
    Err(EntraError::Transient(format!(
        "the {what} stayed busy after 5 tries"
    )))
}
