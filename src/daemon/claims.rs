//! Who a token belongs to: the display claims of an Entra access token (or the user id of an
//! Azure DevOps OAuth token).
//!
//! Decoded without verifying the signature, for display and for naming the account only;
//! nothing here decides whether a token is trusted (Azure DevOps does that).

use crate::daemon_protocol::AccountView;
use base64::Engine;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    pub name: Option<String>,
    pub upn: Option<String>,
    pub preferred_username: Option<String>,
    pub unique_name: Option<String>,
    pub oid: Option<String>,
    /// Azure DevOps' own tokens (legacy OAuth apps): the user's id.
    pub nameid: Option<String>,
    pub tid: Option<String>,
    pub exp: Option<u64>,
}

impl Claims {
    /// The claims of a JWT, or empty claims when the token is not a readable JWT.
    pub fn of(token: &str) -> Claims {
        let payload = token.split('.').nth(1).unwrap_or("");
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn view(&self, tenant: &str) -> AccountView {
        AccountView {
            name: self.name.clone(),
            upn: self
                .upn
                .clone()
                .or_else(|| self.preferred_username.clone())
                .or_else(|| self.unique_name.clone()),
            tenant: self.tid.clone().unwrap_or_else(|| tenant.to_string()),
            oid: self.oid.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_display_claims() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"name":"Ada","unique_name":"ada@x","oid":"o","tid":"t","exp":5}"#)
        );
        let c = Claims::of(&t);
        assert_eq!(c.exp, Some(5));
        let v = c.view("fallback");
        assert_eq!(v.upn.as_deref(), Some("ada@x"));
        assert_eq!(v.tenant, "t");
        assert!(Claims::of("not a jwt").oid.is_none());
    }
}
