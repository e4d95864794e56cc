//! Microsoft Entra ID for people: the device-code flow and refresh-token redemption, through
//! the `oauth2` crate over the daemon's one reqwest client.
//!
//! Owns the mapping from Entra's answers (and its `AADSTS` error codes) to what the daemon
//! does next: retry later, or ask the person to sign in again.

use super::{SourceError, TokenSet};
use crate::secret::Secret;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, StandardErrorResponse, TokenResponse, TokenUrl,
};
use oauth2::{DeviceAuthorizationResponse, ExtraDeviceAuthorizationFields};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Azure DevOps as an Entra resource, with every permission the signed-in user has.
pub const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";

/// Entra's device-code answer carries a ready-made `message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntraDeviceFields {
    pub message: Option<String>,
}
impl ExtraDeviceAuthorizationFields for EntraDeviceFields {}

pub type DeviceDetails = DeviceAuthorizationResponse<EntraDeviceFields>;

/// The longest `Retry-After` honoured; a larger one is taken as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A `Retry-After` header (seconds, or an HTTP date) as a wait from now, at most
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// First line of an Entra `error_description` ("AADSTS70008: The provided ..."), without the
/// trace and correlation ids that follow it.
fn describe<T: oauth2::ErrorResponseType + AsRef<str>>(err: &StandardErrorResponse<T>) -> String {
    let code = err.error().as_ref().to_string();
    match err.error_description() {
        Some(d) => {
            let first = d.lines().next().unwrap_or("").trim();
            format!("{code}: {first}")
        }
        None => code,
    }
}

pub(super) fn classify<RE: std::error::Error + 'static, T>(
    what: &str,
    err: RequestTokenError<RE, StandardErrorResponse<T>>,
) -> SourceError
where
    T: oauth2::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    classify_answer(what, err, None)
}

/// [`classify`], knowing the HTTP status of an answer that was not a success: a server error
/// or throttling whose body is a page, not an OAuth error, is named by its status.
fn classify_answer<RE: std::error::Error + 'static, T>(
    what: &str,
    err: RequestTokenError<RE, StandardErrorResponse<T>>,
    status: Option<u16>,
) -> SourceError
where
    T: oauth2::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    let failed_status = status.filter(|s| *s == 429 || *s >= 500);
    match err {
        RequestTokenError::ServerResponse(resp) => {
            let code = resp.error().as_ref().to_string();
            let text = format!("Entra ID refused the {what}: {}", describe(&resp));
            match code.as_str() {
                "invalid_grant" | "interaction_required" | "consent_required" => {
                    SourceError::SignInRequired(text)
                }
                "authorization_declined" | "expired_token" | "bad_verification_code" => {
                    SourceError::LoginFailed(text)
                }
                "invalid_client"
                | "unauthorized_client"
                | "invalid_scope"
                | "invalid_request"
                | "unsupported_grant_type" => SourceError::Rejected(text),
                _ => SourceError::Transient(text),
            }
        }
        RequestTokenError::Request(e) => {
            // reqwest's message names the URL, never the form body.
            SourceError::Transient(format!(
                "could not reach Entra ID for the {what}: {}",
                crate::daemon::setup::error_chain(&e)
            ))
        }
        RequestTokenError::Parse(_, _) | RequestTokenError::Other(_)
            if let Some(status) = failed_status =>
        {
            SourceError::Transient(format!(
                "Entra ID answered {} to the {what}",
                status_text(status)
            ))
        }
        // Never print the body: it may be a half-readable token response.
        RequestTokenError::Parse(_, _) => {
            SourceError::Transient(format!("Entra ID's answer to the {what} was not readable"))
        }
        // oauth2's own complaint (an answer that is not JSON, say), never a body.
        RequestTokenError::Other(m) => SourceError::Transient(format!(
            "Entra ID's answer to the {what} was not readable ({m})"
        )),
    }
}

/// An Entra tenant endpoint pair for one public client.
pub struct Entra {
    http: reqwest::Client,
    authority: String,
    client_id: String,
}

type DeviceClient =
    BasicClient<EndpointNotSet, EndpointSet, EndpointNotSet, EndpointNotSet, EndpointSet>;
type CodeClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// A browser sign-in in progress: the URL to open, and what the redirect must match.
pub struct BrowserSignIn {
    pub url: String,
    pub state: String,
    pub verifier: PkceCodeVerifier,
    pub redirect_uri: String,
}

impl Entra {
    pub fn new(http: reqwest::Client, authority: &str, client_id: &str) -> Self {
        Entra {
            http,
            authority: authority.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn client(&self, tenant: &str) -> Result<DeviceClient, SourceError> {
        let base = format!("{}/{}/oauth2/v2.0", self.authority, tenant);
        let bad = |e: url::ParseError| SourceError::Rejected(format!("bad authority URL: {e}"));
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_device_authorization_url(
                DeviceAuthorizationUrl::new(format!("{base}/devicecode")).map_err(bad)?,
            )
            .set_token_uri(TokenUrl::new(format!("{base}/token")).map_err(bad)?)
            .set_auth_type(oauth2::AuthType::RequestBody))
    }

    fn code_client(&self, tenant: &str, redirect_uri: &str) -> Result<CodeClient, SourceError> {
        let base = format!("{}/{}/oauth2/v2.0", self.authority, tenant);
        let bad = |e: url::ParseError| SourceError::Rejected(format!("bad authority URL: {e}"));
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(format!("{base}/authorize")).map_err(bad)?)
            .set_token_uri(TokenUrl::new(format!("{base}/token")).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_string()).map_err(bad)?)
            .set_auth_type(oauth2::AuthType::RequestBody))
    }

    /// The authorization-code + PKCE (S256) request for a browser, redirecting to a loopback
    /// `redirect_uri`.
    pub fn browser_sign_in(
        &self,
        tenant: &str,
        redirect_uri: &str,
    ) -> Result<BrowserSignIn, SourceError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .code_client(tenant, redirect_uri)?
            .authorize_url(CsrfToken::new_random)
            .add_scopes(Self::scopes())
            .add_extra_param("prompt", "select_account")
            .set_pkce_challenge(challenge)
            .url();
        Ok(BrowserSignIn {
            url: url.to_string(),
            state: state.secret().clone(),
            verifier,
            redirect_uri: redirect_uri.to_string(),
        })
    }

    /// Redeems the code the browser brought back.
    pub async fn redeem_code(
        &self,
        tenant: &str,
        sign_in: BrowserSignIn,
        code: &Secret,
    ) -> Result<TokenSet, SourceError> {
        self.code_client(tenant, &sign_in.redirect_uri)?
            .exchange_code(AuthorizationCode::new(code.expose().to_string()))
            .set_pkce_verifier(sign_in.verifier)
            .request_async(&self.http)
            .await
            .map(to_set)
            .map_err(|e| classify("sign-in", e))
    }

    fn scopes() -> [Scope; 2] {
        [
            Scope::new(AZURE_DEVOPS_SCOPE.to_string()),
            Scope::new("offline_access".to_string()),
        ]
    }

    /// Starts a device-code sign-in in `tenant`.
    pub async fn device_code(&self, tenant: &str) -> Result<DeviceDetails, SourceError> {
        self.client(tenant)?
            .exchange_device_code()
            .add_scopes(Self::scopes())
            .request_async(&self.http)
            .await
            .map_err(|e| classify("device-code request", e))
    }

    /// Polls until the person finishes, declines, or the code expires; bounded by the code's
    /// own lifetime even when the network keeps failing.
    pub async fn device_token(
        &self,
        tenant: &str,
        details: &DeviceDetails,
    ) -> Result<TokenSet, SourceError> {
        let client = self.client(tenant)?;
        let limit = details.expires_in() + Duration::from_secs(5);
        let poll = client
            .exchange_device_access_token(details)
            .set_max_backoff_interval(Duration::from_secs(30))
            .request_async(&self.http, tokio::time::sleep, Some(details.expires_in()));
        match tokio::time::timeout(limit, poll).await {
            Err(_) => Err(SourceError::LoginFailed(
                "the sign-in code expired before the sign-in finished".into(),
            )),
            Ok(r) => r.map(to_set).map_err(|e| classify("sign-in", e)),
        }
    }

    /// Redeems a refresh token; Entra answers with a new one that replaces it.
    pub async fn refresh(
        &self,
        tenant: &str,
        refresh_token: &Secret,
        claims: Option<&str>,
    ) -> Result<TokenSet, SourceError> {
        let client = self.client(tenant)?;
        let rt = RefreshToken::new(refresh_token.expose().to_string());
        let mut req = client
            .exchange_refresh_token(&rt)
            .add_scopes(Self::scopes());
        if let Some(c) = claims {
            req = req.add_extra_param("claims", c.to_string());
        }
        // The oauth2 crate hides the headers of an error answer and the kind of a failed
        // request: note the Retry-After and whether the request ran out of time.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let http = {
            let (client, seen) = (self.http.clone(), seen.clone());
            move |request: oauth2::HttpRequest| {
                let (client, seen) = (client.clone(), seen.clone());
                async move {
                    let result = oauth2::AsyncHttpClient::call(&client, request).await;
                    let mut seen = seen.lock().unwrap();
                    match &result {
                        Ok(r) if !r.status().is_success() => {
                            seen.retry_after = retry_after(r.headers());
                            seen.status = Some(r.status().as_u16());
                        }
                        Err(oauth2::HttpClientError::Reqwest(e)) => seen.timed_out = e.is_timeout(),
                        _ => {}
                    }
                    result
                }
            }
        };
        let result = req.request_async(&http).await;
        let seen = *seen.lock().unwrap();
        result.map(to_set).map_err(|e| {
            match (classify_answer("token refresh", e, seen.status), seen) {
                (
                    SourceError::Transient(_),
                    Seen {
                        timed_out: true, ..
                    },
                ) => SourceError::Transient(
                    "Entra ID did not answer the token refresh within the daemon's http_timeout"
                        .into(),
                ),
                // When it asked to wait, the next try is no sooner: the wait the client is
                // told (`retry_in`) already counts it.
                (
                    SourceError::Transient(message),
                    Seen {
                        retry_after: Some(retry_after),
                        ..
                    },
                ) => SourceError::Throttled {
                    message,
                    retry_after,
                },
                (e, _) => e,
            }
        })
    }
}

/// What a token request's HTTP exchange showed that the oauth2 crate does not pass on.
#[derive(Default, Clone, Copy)]
struct Seen {
    retry_after: Option<Duration>,
    timed_out: bool,
    /// The status of an answer that was not a success.
    status: Option<u16>,
}

/// `503 (Service Unavailable)`.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} ({reason})"),
        None => status.to_string(),
    }
}

fn to_set(t: oauth2::basic::BasicTokenResponse) -> TokenSet {
    TokenSet {
        access: Secret::new(t.access_token().secret().clone()),
        refresh: t.refresh_token().map(|r| Secret::new(r.secret().clone())),
        // Entra always sends expires_in; without it assume the shortest documented lifetime.
        expires_in: t.expires_in().unwrap_or(Duration::from_secs(3600)),
    }
}
