//! Workload identity federation: the external OIDC token a client assertion carries (a token
//! file, GitHub Actions' or Azure Pipelines' OIDC endpoint).

use super::*;

/// Audience Entra expects in federated tokens.
pub(super) const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A fresh federated token from its source.
pub(super) async fn federated_token(
    http: &reqwest::Client,
    source: &AssertionSource,
) -> Result<Secret, SourceError> {
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
        |what: &str| SourceError::Transient(format!("{what}'s answer was not readable"));
    let check = |what: &str, r: reqwest::Response| {
        if r.status().is_success() {
            Ok(r)
        } else {
            let msg = format!("{what} answered {}", r.status());
            Err(if r.status().is_server_error() {
                SourceError::Transient(msg)
            } else {
                SourceError::Rejected(msg)
            })
        }
    };
    let net =
        |what: &str, e: reqwest::Error| SourceError::Transient(format!("cannot reach {what}: {e}"));
    match source {
        // Re-read on every exchange: the platform rotates the file.
        AssertionSource::File(f) => std::fs::read_to_string(f)
            .map(|t| Secret::new(t.trim().to_string()))
            .map_err(|e| {
                SourceError::Rejected(format!(
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
