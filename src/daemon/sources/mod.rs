//! Where tokens come from, one module per source: people through Entra ID (`entra`: device
//! code, browser, refresh tokens), people through a legacy Azure DevOps OAuth app (`legacy`),
//! and build agents' own identities (`machine`: managed identity, service principal, workload
//! identity federation). Each turns its credentials into an Azure DevOps access token; the
//! broker decides when to ask.

pub mod entra;
pub mod legacy;
pub mod machine;

use crate::secret::Secret;
use std::time::Duration;

/// What a successful token request gives.
#[derive(Debug)]
pub struct TokenSet {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub expires_in: Duration,
}

/// Why a source gave no token, classified for what the broker does next (sign-in, back-off,
/// a configuration fix). Every source uses it: Entra ID, app.vssps, IMDS and the other
/// managed-identity endpoints, the CI systems' OIDC endpoints, and the secret store.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The grant is gone (revoked, expired, password changed, policy): sign in again.
    #[error("{0}")]
    SignInRequired(String),
    /// The person declined, or the code expired.
    #[error("{0}")]
    LoginFailed(String),
    /// Entra or the network failed; the same request may work later.
    #[error("{0}")]
    Transient(String),
    /// Entra answered 429 or 5xx with `Retry-After`: the same request, no sooner than that.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Duration,
    },
    /// The request is wrong for this tenant or client (configuration).
    #[error("{0}")]
    Rejected(String),
}

impl SourceError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Transient(_) | SourceError::Throttled { .. }
        )
    }

    /// How long the server asked us to wait before the next try, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
