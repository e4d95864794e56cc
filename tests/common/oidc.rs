//! A CI system's OIDC token endpoint (GitHub Actions, Azure Pipelines) and the federated
//! JWTs it hands out, for workload identity tests. The provider records the job token it
//! expects and every JWT it hands out in the world's secret ledger (as `"oidc"`).

use super::harness::World;
use super::secrets::SecretKind;
use base64::Engine;

/// A JWT-shaped federated token for `sub`, audience `api://AzureADTokenExchange`.
pub fn federated_jwt(sub: &str) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#.into()),
        b64(format!(
            r#"{{"sub":"{sub}","aud":"api://AzureADTokenExchange","iss":"https://oidc.example","exp":{exp}}}"#
        ))
    )
}

/// A CI system's OIDC token endpoint: checks the bearer token and answers with `body(jwt)`.
pub fn oidc_provider(
    w: &World,
    bearer: &'static str,
    sub: &'static str,
    body: fn(String) -> String,
) -> (
    super::tls::HttpsServer,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let secrets = w.ca.secrets();
    secrets.record(SecretKind::CiJobToken, "oidc", bearer);
    let server = super::tls::HttpsServer::start(
        w.ca.server_config(),
        || true,
        move |_| {
            move |req: hyper::Request<hyper::body::Incoming>| {
                let log = log.clone();
                let secrets = secrets.clone();
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    log.lock()
                        .unwrap()
                        .push(format!("{} {}", req.method(), req.uri()));
                    Some(if auth.eq_ignore_ascii_case(&format!("bearer {bearer}")) {
                        let jwt = federated_jwt(sub);
                        secrets.record(SecretKind::FederatedToken, "oidc", &jwt);
                        super::tls::response(200, "application/json", body(jwt))
                    } else {
                        super::tls::response(401, "application/json", "{\"message\":\"no\"}")
                    })
                }
            }
        },
    );
    (server, seen)
}
