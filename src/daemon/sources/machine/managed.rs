//! Managed identity: Azure VM IMDS, App Service and Functions (`IDENTITY_ENDPOINT` with
//! `IDENTITY_HEADER`), Azure Arc (a key file named by a 401), and AKS pod identity's endpoint.

use super::*;

/// The Azure DevOps resource, for managed-identity endpoints that take `resource=`.
pub(super) const AZURE_DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";

pub(super) const IMDS: &str = "http://169.254.169.254";

/// Azure Arc: the first request is refused with `WWW-Authenticate: Basic realm=<key file>`;
/// the file's content (readable only by privileged local users) authorizes the second.
pub(super) async fn arc(
    req: reqwest::RequestBuilder,
    endpoint: &str,
) -> Result<TokenSet, SourceError> {
    let what = "Azure Arc identity endpoint";
    let host = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    if !matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
        return Err(SourceError::Rejected(format!(
            "the {what} must be on this machine (localhost), not '{host}'"
        )));
    }
    let net = |e: reqwest::Error| SourceError::Transient(format!("cannot reach the {what}: {e}"));
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
        return Err(SourceError::Rejected(format!(
            "the {what} answered {} without its key-file challenge",
            first.status()
        )));
    };
    // Only a small `.key` file: never send an arbitrary file's content anywhere.
    let meta = std::fs::metadata(&key_file).map_err(|e| {
        SourceError::Rejected(format!("cannot read the Arc key file {key_file}: {e}"))
    })?;
    let dir = env("GIT_CREDENTIAL_AZDO_ARC_TOKENS_DIR")
        .unwrap_or_else(|| "/var/opt/azcmagent/tokens".into());
    let in_dir = std::fs::canonicalize(&key_file)
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .zip(std::fs::canonicalize(&dir).ok())
        .is_some_and(|(parent, dir)| parent == dir);
    if !key_file.ends_with(".key") || meta.len() > 4096 || !in_dir {
        return Err(SourceError::Rejected(format!(
            "the {what} named {key_file}, which is not an Arc key file"
        )));
    }
    let key = std::fs::read_to_string(&key_file).map_err(|e| {
        SourceError::Rejected(format!("cannot read the Arc key file {key_file}: {e}"))
    })?;
    let resp = req
        .header("Authorization", format!("Basic {}", key.trim()))
        .send()
        .await
        .map_err(net)?;
    if !resp.status().is_success() {
        return Err(SourceError::Rejected(format!(
            "the {what} answered {} to the key file's proof",
            resp.status()
        )));
    }
    mi_token(resp, what).await
}

/// Reads a managed-identity token answer.
pub(super) async fn mi_token(resp: reqwest::Response, what: &str) -> Result<TokenSet, SourceError> {
    let t: MiToken = resp
        .json()
        .await
        .map_err(|_| SourceError::Transient(format!("the {what}'s answer was not readable")))?;
    let now = crate::clock::unix_secs();
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
pub(super) struct MiToken {
    access_token: Secret,
    expires_in: Option<serde_json::Value>,
    expires_on: Option<serde_json::Value>,
}

pub(super) fn number(v: &Option<serde_json::Value>) -> Option<u64> {
    match v.as_ref()? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// IMDS (Azure VMs); App Service/Functions when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
/// are set; Azure Arc when `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` are. Retries 404/410/429/5xx with exponential back-off, as Microsoft documents for IMDS.
pub(super) async fn managed_identity(
    http: &reqwest::Client,
    user_assigned: Option<&UserAssigned>,
    at: &MiEndpoint,
) -> Result<TokenSet, SourceError> {
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
                return Err(SourceError::Rejected(
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
            SourceError::Transient(format!("cannot reach the {what}: {e} (is this an Azure machine with a managed identity?)"))
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
            // Which identity was asked for: a client id may come from a leftover AZURE_CLIENT_ID.
            let asked = match user_assigned {
                None => "the system-assigned identity".to_string(),
                Some(UserAssigned::Client(c)) => format!(
                    "the user-assigned identity with client_id {c} (client_id in the configuration, else AZURE_CLIENT_ID)"
                ),
                Some(UserAssigned::Object(o)) => {
                    format!("the user-assigned identity with object_id {o}")
                }
                Some(UserAssigned::Resource(r)) => format!("the user-assigned identity {r}"),
            };
            return Err(SourceError::Rejected(format!(
                "the {what} answered {status} for {asked}: {desc}"
            )));
        }
        return mi_token(resp, what).await;
    }
    Err(SourceError::Transient(format!(
        "the {what} stayed busy after 5 tries"
    )))
}
