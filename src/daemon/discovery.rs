//! Tenant discovery: which Entra tenant an Azure DevOps organization belongs to.
//!
//! In order: the `authorization_uri` git passed from Azure DevOps' 401 (`wwwauth[]`); else an
//! unauthenticated `HEAD https://dev.azure.com/{org}` and its `WWW-Authenticate: Bearer
//! authorization_uri=…` or `X-VSS-ResourceTenant` (an all-zero GUID is a Microsoft-account
//! organization: `organizations`); else `organizations`. The caller caches the answer.

use crate::policy::is_builtin_host;

/// The tenant named by one `Bearer authorization_uri=https://login…/{tenant}` challenge.
pub fn tenant_from_challenge(challenge: &str) -> Option<String> {
    let params = super::challenge::bearer_params(challenge)?;
    let url = url::Url::parse(params.get("authorization_uri")?).ok()?;
    let tenant = url.path_segments()?.find(|s| !s.is_empty())?.to_string();
    valid_tenant(&tenant).then_some(tenant)
}

/// Tenants are GUIDs or domain names; refuse anything that could bend a URL.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// The first non-empty GUID of an `X-VSS-ResourceTenant` value.
pub fn tenant_from_resource_header(value: &str) -> Option<String> {
    let guids: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(g) = guids
        .iter()
        .find(|g| g.chars().any(|c| c != '0' && c != '-') && valid_tenant(g))
    {
        return Some(g.to_string());
    }
    // Only all-zero GUIDs: an organization backed by Microsoft accounts.
    (!guids.is_empty()).then(|| "organizations".to_string())
}

/// The URL whose unauthenticated answer names the tenant.
pub fn probe_url(host: &str, org: &str) -> String {
    if is_builtin_host(host) {
        format!("https://dev.azure.com/{org}")
    } else {
        format!("https://{host}/{org}")
    }
}

/// What Azure DevOps says of an organization, asked without credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// The tenant that owns it.
    Tenant(String),
    /// No such organization (404).
    Missing,
    /// It did not say (no answer, or no tenant in it).
    Unknown,
}

/// Asks Azure DevOps which tenant owns `org`, and whether it exists.
pub async fn discover(http: &reqwest::Client, host: &str, org: &str) -> Probe {
    let url = probe_url(host, org);
    let resp = match http.head(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%url, error = %e, "tenant discovery failed");
            return Probe::Unknown;
        }
    };
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        tracing::info!(%url, "no such organization");
        return Probe::Missing;
    }
    let headers = resp.headers();
    let from_challenge = headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(tenant_from_challenge);
    let found = from_challenge.or_else(|| {
        headers
            .get_all("x-vss-resourcetenant")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(tenant_from_resource_header)
    });
    tracing::debug!(%url, tenant = ?found, "tenant discovery");
    found.map_or(Probe::Unknown, Probe::Tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        assert_eq!(
            tenant_from_challenge(
                "Bearer authorization_uri=https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47"
            )
            .as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(
            tenant_from_challenge(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/contoso.com/\", error=\"insufficient_claims\""
            )
            .as_deref(),
            Some("contoso.com")
        );
        assert_eq!(tenant_from_challenge("Basic realm=\"x\""), None);
        assert_eq!(
            tenant_from_challenge("Bearer authorization_uri=https://h/%2e%2e%2fx"),
            None
        );
    }

    #[test]
    fn resource_tenant_header() {
        assert_eq!(
            tenant_from_resource_header(
                "00000000-0000-0000-0000-000000000000, 72f988bf-86f1-41af-91ab-2d7cd011db47"
            )
            .as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(
            tenant_from_resource_header("00000000-0000-0000-0000-000000000000").as_deref(),
            Some("organizations")
        );
        assert_eq!(tenant_from_resource_header(""), None);
    }

    #[test]
    fn probe_urls() {
        assert_eq!(
            probe_url("contoso.visualstudio.com", "contoso"),
            "https://dev.azure.com/contoso"
        );
        assert_eq!(probe_url("127.0.0.1:4443", "o"), "https://127.0.0.1:4443/o");
    }
}
