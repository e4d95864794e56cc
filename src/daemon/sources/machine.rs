//! Machine identities for build agents: managed identity (`managed`: Azure VM IMDS, App Service
//! and Functions, Azure Arc), service principal with a client secret or certificate
//! (`principal`), and workload identity federation (`federated`). This file resolves which
//! identity a request's variables and the configuration name; each gets an Azure DevOps token with no person and no refresh token; the broker
//! simply asks again ahead of expiry.
//!
//! Configured like azure-identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
//! `AZURE_FEDERATED_TOKEN_FILE`, `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, overridable per
//! identity in the configuration file. A misconfiguration is one line naming what is missing.

mod federated;
mod managed;
mod principal;

use federated::*;
use managed::*;
use principal::*;

use super::entra::AZURE_DEVOPS_SCOPE;
use super::{SourceError, TokenSet};
use crate::config::IdentityConfig;
use crate::daemon::endpoint;
use crate::secret::Secret;
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

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

/// Why a machine identity cannot be used: what is missing or wrong in its configuration or
/// variables, in one line naming the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "identity '{name}' needs {key}: set {var}, or {key} under [identities.{name}] in the configuration"
    )]
    Needs {
        name: String,
        key: &'static str,
        var: &'static str,
    },
    /// A value only the job's environment gives (no configuration key holds it).
    #[error("identity '{name}' needs {what}: set {var} in the job's environment")]
    NeedsVariable {
        name: String,
        what: &'static str,
        var: &'static str,
    },
    #[error("identity '{name}': give only one of client_id, object_id, resource_id")]
    OnlyOneId { name: String },
    #[error("identity '{name}': cannot read client_secret_file {file}: {source}")]
    SecretFile {
        name: String,
        file: String,
        source: std::io::Error,
    },
    #[error(
        "identity '{name}' needs a client secret or certificate: set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH (or client_secret_file / client_certificate_path under [identities.{name}])"
    )]
    NoClientCredential { name: String },
    #[error(
        "identity '{name}' needs federated_token_file: set AZURE_FEDERATED_TOKEN_FILE, or federated_token_file under [identities.{name}]"
    )]
    NoTokenFile { name: String },
    #[error(
        "identity '{name}' uses token_source '{token_source}', but this is not running there (its OIDC variables are not set)"
    )]
    NotRunningThere { name: String, token_source: String },
    #[error(
        "identity '{name}' has token_source '{token_source}'; use file, github-actions or azure-pipelines"
    )]
    UnknownTokenSource { name: String, token_source: String },
    #[error(
        "identity '{name}' has no federated token: set AZURE_FEDERATED_TOKEN_FILE, or run in GitHub Actions (id-token: write) or Azure Pipelines"
    )]
    NoFederatedToken { name: String },
    #[error(
        "identity '{name}' has kind '{kind}'; use managed-identity, service-principal or workload-identity"
    )]
    UnknownKind { name: String, kind: String },
    /// An address the identity would send a secret to is not allowed.
    #[error("identity '{name}': {source}")]
    Endpoint {
        name: String,
        #[source]
        source: endpoint::EndpointError,
    },
    /// An organization (or the default) names an identity the configuration does not define.
    #[error(
        "identity '{name}' (for organization '{org}') is not defined under [identities] in {}",
        .config.display()
    )]
    Undefined {
        name: String,
        org: String,
        config: PathBuf,
    },
}

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
    ) -> Result<MachineIdentity, IdentityError> {
        let identity = Self::from_settings(name, cfg, lookup)?;
        identity
            .check_endpoints()
            .map_err(|source| IdentityError::Endpoint {
                name: name.to_string(),
                source,
            })?;
        Ok(identity)
    }

    /// The addresses this identity sends a secret to are allowed.
    fn check_endpoints(&self) -> Result<(), endpoint::EndpointError> {
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
    ) -> Result<MachineIdentity, IdentityError> {
        let env = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let need = |value: Option<String>, key: &'static str, var: &'static str| {
            value
                .or_else(|| env(var))
                .ok_or_else(|| IdentityError::Needs {
                    name: name.to_string(),
                    key,
                    var,
                })
        };
        let need_var = |what: &'static str, var: &'static str| {
            env(var).ok_or_else(|| IdentityError::NeedsVariable {
                name: name.to_string(),
                what,
                var,
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
                        return Err(IdentityError::OnlyOneId {
                            name: name.to_string(),
                        });
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
                        std::fs::read_to_string(crate::paths::expand_home(f))
                            .map(|s| s.trim().to_string())
                            .map_err(|source| IdentityError::SecretFile {
                                name: name.to_string(),
                                file: f.clone(),
                                source,
                            })?,
                    ),
                    None => env("AZURE_CLIENT_SECRET"),
                };
                let certificate = cfg
                    .client_certificate_path
                    .as_deref()
                    .map(crate::paths::expand_home)
                    .or_else(|| env("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from));
                let credential = match (secret, certificate) {
                    (Some(s), _) => SpCredential::Secret(Secret::new(s)),
                    (None, Some(path)) => SpCredential::Certificate {
                        path,
                        send_chain: cfg.send_certificate_chain
                            || env("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
                    },
                    (None, None) => {
                        return Err(IdentityError::NoClientCredential {
                            name: name.to_string(),
                        });
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
                    .as_deref()
                    .map(crate::paths::expand_home)
                    .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from));
                let source = match (cfg.token_source.as_deref(), file) {
                    (None | Some("file"), Some(f)) => AssertionSource::File(f),
                    (Some("file"), None) => {
                        return Err(IdentityError::NoTokenFile {
                            name: name.to_string(),
                        });
                    }
                    (Some("github-actions"), _) | (None, None)
                        if env("ACTIONS_ID_TOKEN_REQUEST_URL").is_some() =>
                    {
                        AssertionSource::GitHubActions {
                            url: need_var("an OIDC request URL", "ACTIONS_ID_TOKEN_REQUEST_URL")?,
                            token: Secret::new(need_var(
                                "an OIDC request token (permissions: id-token: write)",
                                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                            )?),
                        }
                    }
                    (Some("azure-pipelines"), _) | (None, None)
                        if env("SYSTEM_OIDCREQUESTURI").is_some() =>
                    {
                        AssertionSource::AzurePipelines {
                            uri: need_var("the OIDC request URI", "SYSTEM_OIDCREQUESTURI")?,
                            access_token: Secret::new(need_var(
                                "the job's access token (map it in the step: env: SYSTEM_ACCESSTOKEN: $(System.AccessToken))",
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
                        return Err(IdentityError::NotRunningThere {
                            name: name.to_string(),
                            token_source: other.to_string(),
                        });
                    }
                    (Some(other), _) => {
                        return Err(IdentityError::UnknownTokenSource {
                            name: name.to_string(),
                            token_source: other.to_string(),
                        });
                    }
                    (None, None) => {
                        return Err(IdentityError::NoFederatedToken {
                            name: name.to_string(),
                        });
                    }
                };
                Ok(MachineIdentity::Workload {
                    tenant,
                    client_id,
                    source,
                })
            }
            other => Err(IdentityError::UnknownKind {
                name: name.to_string(),
                kind: other.to_string(),
            }),
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
    ) -> Result<TokenSet, SourceError> {
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
                        .map_err(|e| SourceError::Rejected(e.to_string()))?;
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
