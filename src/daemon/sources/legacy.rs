//! Legacy Azure DevOps OAuth apps (App ID + client secret, registered at
//! app.vsaex.visualstudio.com; retired by Microsoft in 2026): the authorize address, the
//! Assertion flow's code redemption and refresh at app.vssps.visualstudio.com, and the
//! self-signed certificate the daemon serves an `https://localhost` callback with.
//!
//! The service is not standard OAuth 2.0 (the code and refresh token travel as `assertion`,
//! the client secret as `client_assertion`, `expires_in` is a string, errors use `Error` and
//! `ErrorDescription`), so the requests are built here rather than through the `oauth2` crate.

use super::{SourceError, TokenSet};
use crate::secret::Secret;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// What the daemon needs to redeem codes and refresh tokens for one app.
#[derive(Debug, Clone)]
pub struct App {
    pub app_id: String,
    pub secret: Secret,
    pub callback: String,
}

/// The legacy OAuth service.
#[derive(Clone)]
pub struct Vssps {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<Secret>,
    refresh_token: Option<Secret>,
    /// A string ("3599") from the real service; a number is accepted too.
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(alias = "error")]
    #[serde(rename = "Error")]
    error: Option<String>,
    #[serde(alias = "error_description")]
    #[serde(rename = "ErrorDescription")]
    description: Option<String>,
}

impl Vssps {
    pub fn new(http: reqwest::Client, base: &str) -> Vssps {
        Vssps {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Where the person authorizes the app.
    pub fn authorize_url(&self, app_id: &str, state: &str, scope: &str, callback: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", app_id)
            .append_pair("response_type", "Assertion")
            .append_pair("state", state)
            .append_pair("scope", scope)
            .append_pair("redirect_uri", callback)
            .finish();
        format!("{}/oauth2/authorize?{query}", self.base)
    }

    /// Redeems the authorization code the callback received.
    pub async fn redeem(&self, app: &App, code: &Secret) -> Result<TokenSet, SourceError> {
        self.token(app, CODE_GRANT, code, "the authorization code")
            .await
    }

    /// Redeems a refresh token; the answer carries the next one (rotation).
    pub async fn refresh(
        &self,
        app: &App,
        refresh_token: &Secret,
    ) -> Result<TokenSet, SourceError> {
        self.token(app, "refresh_token", refresh_token, "the refresh token")
            .await
    }

    async fn token(
        &self,
        app: &App,
        grant: &str,
        assertion: &Secret,
        what: &str,
    ) -> Result<TokenSet, SourceError> {
        let url = format!("{}/oauth2/token", self.base);
        let form = [
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", app.secret.expose()),
            ("grant_type", grant),
            ("assertion", assertion.expose()),
            ("redirect_uri", app.callback.as_str()),
        ];
        let resp = self
            .http
            .post(&url)
            .form(&form)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                SourceError::Transient(format!(
                    "cannot reach {url}: {}",
                    crate::daemon::setup::error_chain(&e)
                ))
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| SourceError::Transient(format!("{url} broke off its answer: {e}")))?;
        if status.is_success() {
            let parsed: TokenBody = serde_json::from_slice(&body).map_err(|_| {
                SourceError::Transient(format!(
                    "{url} answered {status} with something other than a token"
                ))
            })?;
            let Some(access) = parsed.access_token else {
                return Err(SourceError::Transient(format!(
                    "{url} answered {status} without an access token"
                )));
            };
            let expires_in = match parsed.expires_in {
                Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                _ => None,
            }
            .unwrap_or(3600);
            return Ok(TokenSet {
                access,
                refresh: parsed.refresh_token,
                expires_in: Duration::from_secs(expires_in),
            });
        }
        let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let code = e.error.unwrap_or_default();
        let desc = e
            .description
            .as_deref()
            .and_then(|d| d.lines().next())
            .unwrap_or("")
            .trim()
            .to_string();
        let said = match (code.is_empty(), desc.is_empty()) {
            (true, _) => format!("{}", status.as_u16()),
            (false, true) => code.clone(),
            (false, false) => format!("{code}: {desc}"),
        };
        Err(
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                SourceError::Transient(format!("Azure DevOps OAuth answered {said}"))
            } else if code.eq_ignore_ascii_case("invalid_client") || status.as_u16() == 401 {
                SourceError::Rejected(format!(
                    "Azure DevOps refused the client secret of app {} ({said}); the app's page at https://app.vsaex.visualstudio.com/me shows its current Client Secret",
                    app.app_id
                ))
            } else if code.eq_ignore_ascii_case("invalid_grant") {
                SourceError::SignInRequired(format!(
                    "Azure DevOps no longer accepts {what} of app {} ({said})",
                    app.app_id
                ))
            } else if code.is_empty() {
                SourceError::Transient(format!("Azure DevOps OAuth answered {said}"))
            } else {
                SourceError::Rejected(format!("Azure DevOps OAuth refused the request ({said})"))
            },
        )
    }
}

/// The address a callback URL asks the daemon to listen on: `https` to `localhost` or a
/// loopback address, with its port (443 when none) and path.
pub fn loopback_callback(callback: &str) -> Option<(u16, String)> {
    let u = url::Url::parse(callback).ok()?;
    if u.scheme() != "https" {
        return None;
    }
    let local = match u.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
    };
    local.then(|| {
        (
            u.port_or_known_default().unwrap_or(443),
            u.path().to_string(),
        )
    })
}

/// Why the callback listener has no TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum CallbackTlsError {
    #[error("cannot generate the callback certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read back the callback certificate")]
    ReadBack,
    #[error("{0}")]
    Tls(tokio_rustls::rustls::Error),
    #[error("the callback certificate is unusable: {0}")]
    Unusable(#[source] tokio_rustls::rustls::Error),
}

/// The callback listener's TLS configuration: a self-signed certificate for `localhost`,
/// `127.0.0.1` and `::1`, generated once and kept (key 0600) in `dir`, so a person who
/// trusts it in the browser does so once. Returns the configuration and the certificate's
/// path.
pub fn callback_tls(
    dir: &Path,
) -> Result<(Arc<tokio_rustls::rustls::ServerConfig>, std::path::PathBuf), CallbackTlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = dir.join("callback-cert.pem");
    let key_path = dir.join("callback-key.pem");
    let load = || -> Option<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
        let cert = CertificateDer::from_pem_file(&cert_path).ok()?;
        let key = PrivateKeyDer::from_pem_file(&key_path).ok()?;
        Some((cert, key))
    };
    let (cert, key) = match load() {
        Some(pair) => pair,
        None => {
            let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            let made =
                rcgen::generate_simple_self_signed(names).map_err(CallbackTlsError::Generate)?;
            let save = |path: &Path, text: &str| {
                crate::daemon::store::write_private_file(path, text.as_bytes(), None).map_err(
                    |source| CallbackTlsError::Write {
                        path: path.to_path_buf(),
                        source,
                    },
                )
            };
            save(&key_path, &made.signing_key.serialize_pem())?;
            save(&cert_path, &made.cert.pem())?;
            load().ok_or(CallbackTlsError::ReadBack)?
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CallbackTlsError::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(CallbackTlsError::Unusable)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_callbacks_are_https_to_this_machine() {
        assert_eq!(
            loopback_callback("https://localhost:47613/callback"),
            Some((47613, "/callback".into()))
        );
        assert_eq!(
            loopback_callback("https://127.0.0.1/"),
            Some((443, "/".into()))
        );
        assert_eq!(loopback_callback("http://localhost:8080/"), None);
        assert_eq!(loopback_callback("https://app.fabrikam.example/cb"), None);
        assert_eq!(loopback_callback("not a url"), None);
    }

    #[test]
    fn authorize_url_carries_the_assertion_flow() {
        let v = Vssps::new(
            reqwest::Client::new(),
            "https://app.vssps.visualstudio.com/",
        );
        let u = v.authorize_url("APP", "st", "vso.code_write", "https://localhost:1/cb");
        assert_eq!(
            u,
            "https://app.vssps.visualstudio.com/oauth2/authorize?client_id=APP&response_type=Assertion&state=st&scope=vso.code_write&redirect_uri=https%3A%2F%2Flocalhost%3A1%2Fcb"
        );
    }

    #[test]
    fn error_bodies_of_either_case_parse() {
        let e: ErrorBody =
            serde_json::from_str(r#"{"Error":"invalid_client","ErrorDescription":"x"}"#).unwrap();
        assert_eq!(e.error.as_deref(), Some("invalid_client"));
        let e: ErrorBody =
            serde_json::from_str(r#"{"error":"invalid_grant","error_description":"y"}"#).unwrap();
        assert_eq!(e.description.as_deref(), Some("y"));
    }
}
