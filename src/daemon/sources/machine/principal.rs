//! Service principal: the client-credentials grant, with a client secret or a certificate's
//! signed assertion.

use super::*;

/// Why a certificate gives no client assertion; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read the certificate {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a PEM certificate file: {source}", .path.display())]
    NotPem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no certificate", .path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{} holds no private key (PEM with the certificate and its key)",
        .path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("the key in {} is not an RSA key", .path.display())]
    NotRsa { path: PathBuf },
    #[error("the key in {} is not a usable RSA key: {reason}", .path.display())]
    UnusableRsa {
        path: PathBuf,
        reason: ring::error::KeyRejected,
    },
    #[error("no randomness")]
    NoRandomness,
    #[error("signing with the key in {} failed", .path.display())]
    Signing { path: PathBuf },
}

/// A client assertion signed with the certificate's RSA key (RS256): header with the
/// certificate's `x5t#S256` and `x5t` thumbprints (and `x5c` chain on request); `aud` is the
/// token endpoint, `iss` = `sub` = the client id, valid for ten minutes.
pub(super) fn certificate_assertion(
    path: &std::path::Path,
    client_id: &str,
    aud: &str,
    send_chain: bool,
) -> Result<Secret, CertificateError> {
    use base64::Engine;
    use ring::{digest, rand, signature};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let owned = || path.to_path_buf();
    let pem = std::fs::read(path).map_err(|source| CertificateError::Read {
        path: owned(),
        source,
    })?;
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| CertificateError::NotPem {
            path: owned(),
            source,
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| CertificateError::NoCertificate { path: owned() })?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| CertificateError::NoPrivateKey { path: owned() })?;
    let key_pair = match &key {
        PrivateKeyDer::Pkcs8(k) => signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(CertificateError::NotRsa { path: owned() }),
    }
    .map_err(|reason| CertificateError::UnusableRsa {
        path: owned(),
        reason,
    })?;
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
    let now = crate::clock::unix_secs();
    let rng = rand::SystemRandom::new();
    let mut jti = [0u8; 16];
    rand::SecureRandom::fill(&rng, &mut jti).map_err(|_| CertificateError::NoRandomness)?;
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
        .map_err(|_| CertificateError::Signing { path: owned() })?;
    Ok(Secret::new(format!("{input}.{}", b64url(&sig))))
}

/// Entra's client-credentials grant with a secret or a client assertion.
pub(super) async fn client_credentials(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    client_id: &str,
    secret: Option<&Secret>,
    assertion: Option<&Secret>,
) -> Result<TokenSet, SourceError> {
    let token_url = TokenUrl::new(format!("{authority}/{tenant}/oauth2/v2.0/token"))
        .map_err(|e| SourceError::Rejected(format!("bad authority URL: {e}")))?;
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
        .map_err(|e| crate::daemon::sources::entra::classify("client-credentials request", e))?;
    Ok(TokenSet {
        access: Secret::new(t.access_token().secret().clone()),
        refresh: None,
        expires_in: t.expires_in().unwrap_or(Duration::from_secs(3600)),
    })
}
