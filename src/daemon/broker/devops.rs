//! Azure DevOps' REST API as the daemon uses it: who a token belongs to (`connectionData`).

use super::*;

/// The id Azure DevOps gives a request it did not authenticate.
pub(super) const ANONYMOUS_USER: &str = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";

/// Who Azure DevOps says a token belongs to (`_apis/connectionData`).
pub(super) struct ConnectionUser {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) email: Option<String>,
}

/// Why `connectionData` did not name the user.
pub(super) enum WhoError {
    /// 200 but not the expected JSON: a sign-in page, or a proxy's.
    NotUser(String),
    Status(String, reqwest::StatusCode),
    Network(String, String),
}

impl WhoError {
    pub(super) fn describe(&self, org: &str) -> String {
        match self {
            WhoError::NotUser(url) => format!(
                "{url} did not answer with the signed-in user (a sign-in page, or a proxy's page?)"
            ),
            WhoError::Status(url, status) => format!(
                "Azure DevOps answered {status} to {url}: the account may have no access to '{org}'"
            ),
            WhoError::Network(url, e) => format!("cannot reach {url}: {e}"),
        }
    }
}

impl Broker {
    /// Asks Azure DevOps who `token` belongs to, in `org`.
    pub(super) async fn connection_user(
        &self,
        host: &str,
        org: &str,
        token: &Secret,
    ) -> Result<ConnectionUser, WhoError> {
        let url = format!("{}/_apis/connectionData", discovery::probe_url(host, org));
        let resp = self.http.get(&url).bearer_auth(token.expose()).send().await;
        let r = resp
            .map_err(|e| WhoError::Network(url.clone(), crate::daemon::setup::error_chain(&e)))?;
        if r.status() != reqwest::StatusCode::OK {
            return Err(WhoError::Status(url, r.status()));
        }
        let v = r
            .json::<serde_json::Value>()
            .await
            .map_err(|_| WhoError::NotUser(url.clone()))?;
        let user = &v["authenticatedUser"];
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let id = text(&user["id"]).ok_or(WhoError::NotUser(url))?;
        Ok(ConnectionUser {
            id,
            name: text(&user["providerDisplayName"]),
            email: text(&user["properties"]["Account"]["$value"]),
        })
    }
}
