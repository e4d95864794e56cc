//! git reports a token refused (`erase`): whether Azure DevOps still takes it, dropping it when
//! it does not, and backing an organization off when its fresh tokens are refused too.

use super::*;

/// Longest back-off after Azure DevOps refuses fresh tokens again and again.
pub(super) const MAX_DENIED_BACKOFF: Duration = Duration::from_secs(300);

/// A token refused within this time of the previous refusal was its replacement.
pub(super) const REPLACEMENT_WINDOW_MS: u64 = 5 * 60 * 1000;

/// How long `erase` waits for Azure DevOps to say whether it takes the token.
pub(super) const VERDICT_LIMIT: Duration = Duration::from_secs(5);

/// What Azure DevOps says of a token git reported refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Accepted,
    Refused,
    Unknown,
}

/// Azure DevOps refused a token git used, for good: what git's user is told (whose token, and
/// what would make the organization take one).
pub struct Refusal {
    pub message: String,
    pub fix: String,
}

/// Refusals of this account's tokens by one organization.
#[derive(Default, Clone, Copy)]
pub(super) struct Denied {
    pub(super) last_erase_ms: u64,
    pub(super) streak: u32,
    pub(super) until_ms: u64,
}

impl Broker {
    /// Answers `erase`: git says Azure DevOps refused the token we gave it. A claims challenge
    /// drops it and asks for the claims. Otherwise the daemon asks Azure DevOps itself whether
    /// the organization takes the token ([`Broker::verdict`]):
    /// - it does: the failure was not the token's (a probe sent without it, a proxy, a hiccup),
    ///   so the token stays and nothing backs off;
    /// - it refuses it: the token is dropped, and when its replacement is refused too (no
    ///   access, not expiry), the organization backs off instead of asking Entra again and again;
    /// - no answer: the token is dropped (the next `get` fetches another) and nothing backs off.
    ///
    /// A refusal for good is returned, for git's user to read.
    pub async fn erase(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        token: Option<&Secret>,
        wwwauth: &[String],
    ) -> Option<Refusal> {
        let slot = self.slot_for_org(org)?;
        let held = {
            let mut st = slot.state.lock().unwrap();
            let held = match (&st.token, token) {
                (Some(t), Some(rejected)) if &t.token == rejected => t.clone(),
                (Some(t), None) => t.clone(),
                _ => return None, // not the token we hold: nothing to drop
            };
            if let Some(claims) = wwwauth.iter().find_map(|w| claims_challenge(w)) {
                tracing::info!(org, "Azure DevOps asked for a claims challenge");
                st.token = None;
                st.claims = Some(claims);
                return None;
            }
            held
        };
        let verdict = self.verdict(host, org, &held.token).await;
        let now = self.clock.now_ms();
        let mut st = slot.state.lock().unwrap();
        if verdict == Verdict::Accepted {
            tracing::info!(
                org,
                "git reported a refusal, but Azure DevOps accepts the token: kept (the failure was not the token's)"
            );
            return None;
        }
        if st.token.as_ref().is_some_and(|t| t.token == held.token) {
            st.token = None;
        }
        if verdict == Verdict::Unknown {
            return None;
        }
        // `status` says so, instead of the last refresh that went well.
        st.last_outcome = Some(format!(
            "token refused by Azure DevOps for organization '{org}'"
        ));
        let d = st.denied.entry(org.to_ascii_lowercase()).or_default();
        // Obtained after the previous refusal, and soon after it: that was the replacement.
        let replacement = d.last_erase_ms > 0
            && held.obtained_ms >= d.last_erase_ms
            && held.obtained_ms - d.last_erase_ms < REPLACEMENT_WINDOW_MS;
        d.streak = if replacement { d.streak + 1 } else { 0 };
        d.last_erase_ms = now;
        if d.streak > 0 {
            let backoff = Duration::from_secs(5 << (d.streak - 1).min(10)).min(MAX_DENIED_BACKOFF);
            d.until_ms = now + backoff.as_millis() as u64;
            tracing::warn!(
                org,
                backoff_s = backoff.as_secs(),
                "fresh token refused again; backing off"
            );
        } else {
            tracing::info!(org, "Azure DevOps refuses the token; dropped");
        }
        drop(st);
        Some(self.refusal(&slot, org, &held.token, wwwauth))
    }

    /// Whose token Azure DevOps refused, and what would make `org` take one: the tenant it
    /// names in its challenge when the token is another tenant's, else access to the
    /// organization.
    fn refusal(&self, slot: &Slot, org: &str, token: &Secret, wwwauth: &[String]) -> Refusal {
        let claims = Claims::of(token.expose());
        let token_tenant = claims.tid.clone().unwrap_or_else(|| slot.tenant.clone());
        let machine = match &slot.source {
            Source::Machine(identity, _) => Some(identity.describe()),
            _ => None,
        };
        let view = claims.view(&token_tenant);
        let who = machine
            .clone()
            .or(view.upn)
            .or(view.name)
            .unwrap_or_else(|| format!("account {}", slot.id));
        let message = format!("Azure DevOps refused the token of {who} for organization '{org}'");
        let challenged = wwwauth
            .iter()
            .find_map(|w| discovery::tenant_from_challenge(w));
        let fix = match challenged.filter(|t| !t.eq_ignore_ascii_case(&token_tenant)) {
            Some(org_tenant) => match machine {
                Some(_) => format!(
                    "The organization is in tenant {org_tenant}, the token is from tenant {token_tenant}: use an identity of tenant {org_tenant} (AZURE_TENANT_ID)"
                ),
                None => format!(
                    "The organization is in tenant {org_tenant}, the token is from tenant {token_tenant}: sign in with: git-credential-azdo login --org {org} --tenant {org_tenant}"
                ),
            },
            None => match machine {
                Some(_) => format!(
                    "Add {who} to organization '{org}' (Organization settings > Users) with access to the project"
                ),
                None => format!(
                    "Ask an administrator of '{org}' to add {who} to it (Organization settings > Users), or sign in as a user who has access: git-credential-azdo login --org {org}"
                ),
            },
        };
        Refusal { message, fix }
    }

    /// Whether `org` accepts `token`, asked of its `_apis/connectionData` within
    /// [`VERDICT_LIMIT`]: 200 naming a user is accepted, 401 or 403 refused, anything else (or a
    /// host outside the allowlist, which gets no token) unknown.
    pub(super) async fn verdict(&self, host: &str, org: &str, token: &Secret) -> Verdict {
        let host = host.to_ascii_lowercase();
        let allowed = policy::is_builtin_host(&host)
            || self
                .config
                .hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&host));
        if !allowed {
            return Verdict::Unknown;
        }
        let asked = self.connection_user(&host, org, token);
        let verdict = match tokio::time::timeout(VERDICT_LIMIT, asked).await {
            Ok(Ok(user)) if user.id != ANONYMOUS_USER => Verdict::Accepted,
            Ok(Err(WhoError::Status(_, status)))
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN =>
            {
                Verdict::Refused
            }
            Ok(Ok(_)) => Verdict::Refused,
            Ok(Err(e)) => {
                tracing::info!(org, error = %e.describe(org), "cannot tell whether the token was refused");
                Verdict::Unknown
            }
            Err(_) => Verdict::Unknown,
        };
        tracing::debug!(org, ?verdict, "asked Azure DevOps about a refused token");
        verdict
    }
}
