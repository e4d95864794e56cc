//! What the daemon tells about itself: `status` (accounts, tokens, stores) and `doctor` (each
//! check with its fix).

use super::*;

/// The tenant as `status` shows it: the tenant id from the held token's `tid` claim, after
/// the name it was recorded or configured by when that is a domain (`contoso.com (72f9…)`);
/// what was recorded when there is no token to tell.
fn tenant_shown(recorded: &str, token: Option<&CachedToken>) -> String {
    let tid = token.and_then(|t| Claims::of(t.token.expose()).tid);
    match tid {
        None => recorded.to_string(),
        Some(tid) if recorded.eq_ignore_ascii_case(&tid) => tid,
        Some(tid) if recorded.contains('.') => format!("{recorded} ({tid})"),
        Some(tid) => tid,
    }
}

impl Broker {
    pub async fn status(self: &Arc<Self>) -> Response {
        let records = self.records.lock().await.clone();
        let mut orgs = Vec::new();
        for (org, binding) in &records.orgs {
            let Some(acct) = records.accounts.get(&binding.account) else {
                continue;
            };
            let slot = self.registry.get(&binding.account);
            let (expires, last, outcome, tenant) = match slot {
                Some(s) => {
                    let st = s.state.lock().unwrap();
                    (
                        st.token.as_ref().map(|t| t.expires_ms / 1000),
                        st.last_refresh_ms.map(|m| m / 1000),
                        st.needs_login
                            .as_ref()
                            .map(|w| format!("sign-in required: {w}"))
                            .or_else(|| st.last_outcome.clone()),
                        tenant_shown(&acct.tenant, st.token.as_ref()),
                    )
                }
                None => (None, None, None, acct.tenant.clone()),
            };
            orgs.push(OrgStatus {
                org: org.clone(),
                account: AccountView {
                    name: acct.name.clone(),
                    upn: acct.upn.clone(),
                    tenant,
                    oid: acct.oid.clone(),
                },
                identity: match &acct.app {
                    Some(app) => format!("legacy Azure DevOps OAuth app {}", app.app_id),
                    None => acct.identity.clone(),
                },
                connected_at: acct.connected_at,
                connected_by: acct.connected_by.clone(),
                app_id: acct.app.as_ref().map(|a| a.app_id.clone()),
                access_token_expires_at: expires,
                last_refresh_at: last,
                last_refresh_outcome: outcome,
                refresh_token_store: self.store.describe(),
            });
        }
        // Organizations served lately by a machine identity (from the configuration, not
        // records).
        let mut machine: Vec<(String, String)> = self
            .registry
            .machine_orgs()
            .into_iter()
            .filter(|(org, _)| !records.orgs.contains_key(org))
            .collect();
        machine.sort();
        for (org, id) in machine {
            let Some(slot) = self.registry.get(&id) else {
                continue;
            };
            let Source::Machine(identity, _) = &slot.source else {
                continue;
            };
            let st = slot.state.lock().unwrap();
            orgs.push(OrgStatus {
                org,
                // The identity line names it; the account would only repeat it.
                account: AccountView {
                    name: None,
                    upn: None,
                    tenant: tenant_shown(&slot.tenant, st.token.as_ref()),
                    oid: None,
                },
                identity: identity.describe(),
                connected_at: 0,
                connected_by: None,
                app_id: None,
                access_token_expires_at: st.token.as_ref().map(|t| t.expires_ms / 1000),
                last_refresh_at: st.last_refresh_ms.map(|m| m / 1000),
                last_refresh_outcome: st.last_outcome.clone(),
                refresh_token_store: "none (machine identity: no refresh token)".into(),
            });
        }
        let machine_identities = self.registry.machines().len();
        Response::Status(StatusView {
            daemon_version: crate::daemon_protocol::PACKAGE_VERSION.into(),
            pid: std::process::id(),
            store: self.store.describe(),
            orgs,
            machine_identities,
        })
    }

    /// The daemon's half of `doctor`: the secret store answers, Entra and Azure DevOps are
    /// reachable through the configured proxy, and each organization accepts its token.
    pub async fn doctor(self: &Arc<Self>, env: &BTreeMap<String, Secret>) -> Vec<Check> {
        let mut checks = Vec::new();
        let store = self.store.describe();
        // Memory is enough where nothing needs keeping (machine identities hold no refresh
        // token); a person's sign-in in memory is lost at the next restart, unless chosen.
        let people = !self.records.lock().await.accounts.is_empty();
        let chosen = self.config.store == crate::config::StoreSetting::Memory;
        checks.push(
            match self
                .store
                .call(STORE_LIMIT, |s| s.load("doctor-probe"))
                .await
            {
                Ok(_) if self.store.kind() == "memory" && people && !chosen => Check::fail(
                    "secret store",
                    format!("{store}: the sign-ins here are lost when the daemon stops"),
                    format!(
                        "start or unlock the OS keyring, or set store = \"file\" in {} (then sign in again)",
                        crate::paths::config_path().display()
                    ),
                ),
                Ok(_) if self.store.kind() == "memory" && !people => Check::pass(
                    "secret store",
                    format!(
                        "{store}; nothing to keep: no person is signed in, and machine identities keep no refresh token"
                    ),
                ),
                Ok(_) => Check::pass("secret store", store),
                Err(e) => Check::fail(
                    "secret store",
                    format!("{store}: {e}"),
                    "unlock the keyring, or set store = \"file\" in the configuration",
                ),
            },
        );
        let via = match &self.config.proxy {
            Some(_) => "through the configured proxy".to_string(),
            None => "directly or through HTTPS_PROXY".to_string(),
        };
        let authority = format!(
            "{}/organizations/v2.0/.well-known/openid-configuration",
            self.entra.authority()
        );
        checks.push(self.reachable("Entra ID", &authority, &via).await);
        let (mut bindings, signed_in): (Vec<(String, String)>, Vec<String>) = {
            let records = self.records.lock().await;
            let b = records
                .orgs
                .iter()
                .map(|(o, b)| (o.clone(), b.host.clone()))
                .collect();
            (b, records.orgs.keys().cloned().collect())
        };
        // Organizations a machine identity serves: named in the configuration, or served
        // since the daemon started. Checked at the first configured host, else dev.azure.com.
        let host = self
            .config
            .hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "dev.azure.com".into());
        let mut machine_orgs: Vec<String> = self
            .config
            .org
            .iter()
            .filter(|(_, o)| o.identity.is_some())
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect();
        let served = self.registry.machine_orgs().into_iter().map(|(org, _)| org);
        for org in served {
            if self.config.identity_for(&org).is_some() {
                machine_orgs.push(org);
            }
        }
        machine_orgs.sort();
        machine_orgs.dedup();
        machine_orgs.retain(|o| !signed_in.contains(o));
        // The default identity with no organization to try: does it give a token at all?
        if let Some(name) = self.config.identity.clone()
            && machine_orgs.is_empty()
        {
            let what = format!("identity {name}");
            let result = match self.identity_slot(&name, "", env) {
                Ok(slot) => self.refresh(&slot, false).await.map_err(|r| match r {
                    Response::Error { message, .. } => message,
                    _ => "no token".into(),
                }),
                Err(e) => Err(e.to_string()),
            };
            checks.push(match result {
                Ok(t) => Check::pass(
                    what,
                    format!(
                        "gives Azure DevOps tokens (this one expires in {} minutes)",
                        t.expires_ms.saturating_sub(self.clock.now_ms()) / 60_000
                    ),
                ),
                Err(message) => Check::fail(
                    what,
                    message,
                    "fix the identity's configuration or variables (see docs/build-agents.md)",
                ),
            });
        }
        let machine: Vec<String> = machine_orgs.clone();
        bindings.extend(machine_orgs.into_iter().map(|o| (o, host.clone())));
        if bindings.is_empty() {
            let url = format!("https://{host}/");
            checks.push(self.reachable("Azure DevOps", &url, &via).await);
        }
        for (org, host) in bindings {
            let name = format!("organization {org}");
            let by_machine = machine.contains(&org);
            let fix = if by_machine {
                "fix the identity's configuration or variables (see docs/build-agents.md)".into()
            } else {
                format!("git-credential-azdo login --org {org}")
            };
            let token = match self.get(&org, env).await {
                Response::Token { token, .. } => token,
                Response::Error { message, .. } => {
                    checks.push(Check::fail(name, message, fix));
                    continue;
                }
                _ => continue,
            };
            checks.push(match self.connection_user(&host, &org, &token).await {
                Ok(who) => Check::pass(
                    name,
                    format!(
                        "Azure DevOps accepts the token (as {})",
                        who.name.as_deref().unwrap_or("?")
                    ),
                ),
                Err(e @ WhoError::NotUser(_)) => Check::fail(
                    name,
                    e.describe(&org),
                    format!("git-credential-azdo login --org {org}, and check the proxy"),
                ),
                Err(e @ WhoError::Status(..)) if by_machine => Check::fail(
                    name,
                    e.describe(&org),
                    format!(
                        "add the identity to {org} (Organization settings, Users) with access to its projects"
                    ),
                ),
                Err(e @ WhoError::Status(..)) => Check::fail(
                    name,
                    e.describe(&org),
                    format!(
                        "check the account's access to {org}, or sign in with another: git-credential-azdo login --org {org}"
                    ),
                ),
                Err(WhoError::Network(url, e)) => Check::fail(
                    name,
                    format!("cannot reach {url} {via}: {e}"),
                    self.network_fix(),
                ),
            });
        }
        checks
    }

    /// Any HTTP answer proves the host is reachable with working TLS.
    pub(super) async fn reachable(&self, what: &str, url: &str, via: &str) -> Check {
        match self.http.get(url).send().await {
            Ok(r) => Check::pass(
                what,
                format!("{url} answered {} {via}", r.status().as_u16()),
            ),
            Err(e) => {
                let msg = crate::daemon::setup::error_chain(&e);
                Check::fail(
                    what,
                    format!("cannot reach {url} {via}: {msg}"),
                    self.network_fix(),
                )
            }
        }
    }

    /// What to do when a host cannot be reached: about the configured proxy, when there is one
    /// (a proxy that refuses the tunnel with 407 surfaces as an error, not as a response).
    pub(super) fn network_fix(&self) -> String {
        let config = crate::paths::config_path().display().to_string();
        match &self.config.proxy {
            Some(_) => format!(
                "check that the proxy named in {config} is running and lets this host through; one that wants credentials takes them in its URL (http://user:password@host:port); then git-credential-azdo stop"
            ),
            None => format!(
                "check the network; if this machine needs a proxy, set proxy in {config} (a daemon git starts does not take HTTPS_PROXY from your shell), then git-credential-azdo stop"
            ),
        }
    }
}
