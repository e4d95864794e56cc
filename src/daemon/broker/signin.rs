//! People's sign-in through the daemon: the tenant of an organization, the device-code and
//! browser flows with their pages, and recording the account that signed in (a legacy app's
//! flow is in `app_signin.rs`).

use super::*;

pub(super) type FlowOutcome = Result<(String, AccountView), (ErrorKind, String)>;

pub(super) type FlowResult = Option<FlowOutcome>;

/// A sign-in request, as the client sends it.
pub struct LoginRequest {
    pub org: String,
    pub host: String,
    pub tenant: Option<String>,
    pub wwwauth: Vec<String>,
    /// Browser (authorization code + PKCE) rather than device code.
    pub browser: bool,
    /// How long a browser sign-in may take.
    pub timeout: Duration,
    /// A legacy Azure DevOps OAuth app to connect through, instead of Entra ID.
    pub app: Option<AppLogin>,
}

/// Why a redirect gives no authorization code for this sign-in.
#[derive(Debug, thiserror::Error)]
pub(super) enum RedirectError {
    #[error("the sign-in answer did not match this sign-in (state mismatch); run login again")]
    StateMismatch,
    /// The service refused: its error code, and the first line of its description (if any).
    #[error("{service} said {error}{}", said_why(.first))]
    Refused {
        service: &'static str,
        error: String,
        first: String,
    },
    #[error("the redirect carried no authorization code")]
    NoCode,
}

/// The description after a refusal's error code: `": {first}"`, or nothing when empty.
fn said_why(first: &str) -> String {
    match first.is_empty() {
        true => String::new(),
        false => format!(": {first}"),
    }
}

/// The authorization code of a redirect that belongs to this sign-in, or what went wrong.
pub(super) fn redirect_code(
    r: Redirect,
    state: &str,
    service: &'static str,
) -> Result<Secret, RedirectError> {
    if r.state.as_deref() != Some(state) {
        return Err(RedirectError::StateMismatch);
    }
    if let Some(error) = r.error {
        let d = r.error_description.unwrap_or_default();
        let first = d.lines().next().unwrap_or("").trim().to_string();
        return Err(RedirectError::Refused {
            service,
            error,
            first,
        });
    }
    r.code.ok_or(RedirectError::NoCode)
}

/// Azure DevOps has no organization `org`: nobody is asked to sign in for it.
pub(super) fn no_such_org(org: &str, host: &str) -> Response {
    Response::Error {
        error: ErrorKind::BadRequest,
        message: format!(
            "Azure DevOps has no organization '{org}' ({} answered 404)",
            discovery::probe_url(host, org)
        ),
        retry_in: None,
        fix: Some(
            "Check the name: it is the first part of the path in https://dev.azure.com/ORG/PROJECT/_git/REPO"
                .into(),
        ),
    }
}

pub(super) fn failed_page(text: String) -> (FlowOutcome, loopback::Page) {
    (
        Err((ErrorKind::LoginFailed, text.clone())),
        loopback::Page {
            ok: false,
            title: "Sign-in failed".into(),
            text,
        },
    )
}

/// The page that ends a browser sign-in: "Connected" and who, or why not.
pub(super) fn outcome_page(result: FlowOutcome, through: &str) -> (FlowOutcome, loopback::Page) {
    match result {
        Ok((org, view)) => {
            let who = view
                .upn
                .clone()
                .or(view.name.clone())
                .unwrap_or_else(|| "your account".into());
            let page = loopback::Page {
                ok: true,
                title: "Connected".into(),
                text: format!(
                    "{who} is now connected to Azure DevOps organization '{org}'{through}."
                ),
            };
            (Ok((org, view)), page)
        }
        Err((kind, text)) => {
            let (_, page) = failed_page(text.clone());
            (Err((kind, text)), page)
        }
    }
}

/// 128 bits from the operating system's CSPRNG, as hex: sign-in `state` and flow ids.
pub(super) fn random_id() -> String {
    // The OS generator does not fail once the system has booted; if it ever did, an id that
    // cannot be predicted matters more than the sign-in going ahead.
    id_from(&ring::rand::SystemRandom::new())
        .expect("the operating system's random generator failed")
}

/// 16 bytes of `rng`, as hex, and nothing else (no clock, no counter).
pub(super) fn id_from(
    rng: &dyn ring::rand::SecureRandom,
) -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Broker {
    /// Discovers (or recalls) the tenant of an organization.
    ///
    /// An organization Azure DevOps says does not exist is an error, before anyone signs in.
    pub(super) async fn tenant_of(
        &self,
        org: &str,
        host: &str,
        wwwauth: &[String],
    ) -> Result<String, Response> {
        if let Some(t) = self.config.tenant_override(org) {
            // It goes into the authority's URL path: checked as `--tenant` is.
            if !discovery::valid_tenant(t) {
                return Err(err(
                    ErrorKind::Misconfigured,
                    format!(
                        "the tenant '{t}' under [org.{org}] in the configuration is not a tenant id or domain"
                    ),
                ));
            }
            return Ok(t.to_string());
        }
        let key = org.to_ascii_lowercase();
        if let Some(t) = self.records.lock().await.tenants.get(&key) {
            return Ok(t.clone());
        }
        let found = match wwwauth
            .iter()
            .find_map(|w| discovery::tenant_from_challenge(w))
        {
            Some(t) => Some(t),
            None => match discovery::discover(&self.http, host, org).await {
                discovery::Probe::Tenant(t) => Some(t),
                discovery::Probe::Missing => return Err(no_such_org(org, host)),
                discovery::Probe::Unknown => None,
            },
        };
        Ok(match found {
            Some(t) => {
                let mut records = self.records.lock().await;
                records.tenants.insert(key, t.clone());
                if let Err(e) = records.save(&self.data_dir) {
                    tracing::warn!(error = %e, "could not save the tenant cache");
                }
                t
            }
            None => "organizations".to_string(),
        })
    }

    /// Starts a device-code sign-in; the flow finishes in the background.
    /// Starts a sign-in: in the browser (authorization code + PKCE, redirected to a loopback
    /// listener) or with a device code. The flow finishes in the background; `login_wait`
    /// gives its outcome.
    pub async fn login_start(self: &Arc<Self>, req: LoginRequest) -> Response {
        let LoginRequest {
            org,
            host,
            tenant,
            wwwauth,
            browser,
            timeout,
            app,
        } = req;
        if !crate::policy::valid_org(&org) {
            return err(
                ErrorKind::BadRequest,
                format!("'{org}' is not a valid organization name"),
            );
        }
        if let Some(app) = app {
            return self.app_login_start(org, host, app, timeout).await;
        }
        let tenant = match tenant {
            // A tenant given is used as it is: nothing is asked of Azure DevOps before the
            // sign-in (the existence check rides on discovery's request).
            Some(t) if discovery::valid_tenant(&t) => t,
            Some(t) => {
                return err(
                    ErrorKind::BadRequest,
                    format!("'{t}' is not a valid tenant"),
                );
            }
            None => match self.tenant_of(&org, &host, &wwwauth).await {
                Ok(t) => t,
                Err(refused) => return refused,
            },
        };
        let failed = |e: SourceError| {
            let kind = if e.is_transient() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::LoginFailed
            };
            err(kind, e.to_string())
        };
        let flow = random_id();
        let (tx, rx) = watch::channel(None);
        let finish = self.clone().publisher(flow.clone(), tx);
        let this = self.clone();
        let response = if browser {
            let listener = match loopback::bind().await {
                Ok(l) => l,
                Err(e) => {
                    return err(
                        ErrorKind::Internal,
                        format!("cannot listen on localhost for the sign-in redirect: {e}"),
                    );
                }
            };
            let redirect_uri = format!("http://localhost:{}/", listener.port);
            let sign_in = match self.entra.browser_sign_in(&tenant, &redirect_uri) {
                Ok(s) => s,
                Err(e) => return failed(e),
            };
            let response = Response::BrowserSignIn {
                flow: flow.clone(),
                url: sign_in.url.clone(),
                expires_in: timeout.as_secs(),
            };
            tokio::spawn(async move {
                let mut outcome = None;
                let state = sign_in.state.clone();
                let endpoint = loopback::Endpoint::plain();
                let done =
                    loopback::wait_for_redirect(listener, endpoint, timeout, &state, |r| async {
                        let (result, page) = this
                            .complete_browser(&org, &host, &tenant, sign_in, r)
                            .await;
                        outcome = Some(result);
                        page
                    })
                    .await;
                let outcome = match (done, outcome) {
                    (Some(()), Some(o)) => o,
                    _ => Err((
                        ErrorKind::LoginFailed,
                        format!(
                            "the browser sign-in was not completed within {} seconds; run login again (or use --device-code)",
                            timeout.as_secs()
                        ),
                    )),
                };
                finish(outcome).await;
            });
            response
        } else {
            let details = match self.entra.device_code(&tenant).await {
                Ok(d) => d,
                Err(e) => return failed(e),
            };
            let response = Response::DeviceCode {
                flow: flow.clone(),
                verification_uri: details.verification_uri().to_string(),
                user_code: details.user_code().secret().clone(),
                message: details.extra_fields().message.clone().unwrap_or_default(),
                expires_in: details.expires_in().as_secs(),
            };
            tokio::spawn(async move {
                let outcome = match this.entra.device_token(&tenant, &details).await {
                    Ok(set) => this.finish_login(&org, &host, &tenant, set, None).await,
                    Err(e) => Err((ErrorKind::LoginFailed, e.to_string())),
                };
                finish(outcome).await;
            });
            response
        };
        self.flows.lock().unwrap().insert(flow, rx);
        response
    }

    /// Publishes a sign-in's outcome to `login_wait`, keeps it for a late one, then forgets
    /// the flow.
    pub(super) fn publisher(
        self: Arc<Self>,
        flow: String,
        tx: watch::Sender<FlowResult>,
    ) -> impl FnOnce(FlowOutcome) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        move |outcome| {
            Box::pin(async move {
                let _ = tx.send(Some(outcome));
                self.pastes.lock().unwrap().remove(&flow);
                tokio::time::sleep(Duration::from_secs(60)).await;
                self.flows.lock().unwrap().remove(&flow);
            })
        }
    }

    /// Checks the browser's redirect, redeems its code, and says what happened on the page.
    pub(super) async fn complete_browser(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        tenant: &str,
        sign_in: crate::daemon::sources::entra::BrowserSignIn,
        r: Redirect,
    ) -> (FlowOutcome, loopback::Page) {
        let code = match redirect_code(r, &sign_in.state, "Entra ID") {
            Ok(c) => c,
            Err(e) => return failed_page(e.to_string()),
        };
        let set = match self.entra.redeem_code(tenant, sign_in, &code).await {
            Ok(set) => set,
            Err(e) => return failed_page(e.to_string()),
        };
        let result = self.finish_login(org, host, tenant, set, None).await;
        outcome_page(result, "")
    }

    pub(super) async fn finish_login(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        tenant: &str,
        set: TokenSet,
        app: Option<(AppRecord, Secret)>,
    ) -> Result<(String, AccountView), (ErrorKind, String)> {
        let claims = Claims::of(set.access.expose());
        let (view, id) = match &app {
            None => {
                let view = claims.view(tenant);
                let id = match &claims.oid {
                    Some(oid) => format!("{}.{}", view.tenant, oid),
                    None => format!("{}.{}", tenant, org.to_ascii_lowercase()),
                };
                (view, id)
            }
            // An Azure DevOps token names no one readable: ask Azure DevOps, which also
            // proves the token works for this organization.
            Some((record, _)) => {
                let who = self
                    .connection_user(host, org, &set.access)
                    .await
                    .map_err(|e| {
                        (
                            ErrorKind::LoginFailed,
                            format!("the app was authorized, but {}", e.describe(org)),
                        )
                    })?;
                let user = claims.nameid.clone().unwrap_or(who.id.clone());
                let view = AccountView {
                    name: who.name,
                    upn: who.email,
                    tenant: String::new(),
                    oid: Some(who.id),
                };
                (view, format!("app.{}.{}", record.app_id, user))
            }
        };
        let Some(rt) = set.refresh.clone() else {
            return Err((
                ErrorKind::LoginFailed,
                "Entra ID returned no refresh token".into(),
            ));
        };
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            (
                ErrorKind::Internal,
                format!("signed in, but could not save {what}: {e}"),
            )
        };
        // Writers hold the records lock for the whole change; `get` reads the index.
        let mut records = self.records.lock().await;
        // The account's previous slot (an earlier sign-in) finishes any refresh in flight and
        // is retired before the new refresh token is written.
        self.retire_slot(&id).await;
        if let Some((_, secret)) = &app {
            let (key, secret) = (app_secret_key(&id), secret.clone());
            self.store
                .call(STORE_LIMIT, move |s| s.save(&key, &secret))
                .await
                .map_err(|e| internal("the app's client secret", &e))?;
        }
        let (sid, srt) = (id.clone(), rt.clone());
        self.store
            .call(STORE_LIMIT, move |s| s.save(&sid, &srt))
            .await
            .map_err(|e| internal("the refresh token", &e))?;
        let mut next = records.clone();
        next.accounts.insert(
            id.clone(),
            AccountRecord {
                tenant: tenant.to_string(),
                client_id: match &app {
                    Some((r, _)) => r.app_id.clone(),
                    None => self.config.client_id().to_string(),
                },
                authority: match &app {
                    Some(_) => self.vssps.base().to_string(),
                    None => self.entra.authority().to_string(),
                },
                name: view.name.clone(),
                upn: view.upn.clone(),
                oid: view.oid.clone(),
                identity: if app.is_some() { "legacy-app" } else { "user" }.into(),
                connected_at: self.clock.now_ms() / 1000,
                connected_by: view.upn.clone().or(view.name.clone()),
                app: app.as_ref().map(|(r, _)| r.clone()),
            },
        );
        next.store = Some(self.store.kind().to_string());
        next.orgs.insert(
            org.to_ascii_lowercase(),
            OrgBinding {
                account: id.clone(),
                host: host.to_string(),
            },
        );
        // An organization moved to this account may leave its old account unused.
        let unused = next.remove_unused_accounts();
        next.save(&self.data_dir)
            .map_err(|e| internal("the account record", &e))?;
        *records = next;
        let now = self.clock.now_ms();
        let state = SlotState {
            token: Some(CachedToken::new(
                set.access,
                set.expires_in,
                now,
                self.clock.jitter(),
            )),
            refresh_token: Some(rt),
            last_refresh_ms: Some(now),
            last_outcome: Some("ok (signed in)".into()),
            ..SlotState::default()
        };
        let source = match app {
            Some((record, secret)) => Source::App(AppSource {
                record,
                authority: self.vssps.base().to_string(),
                secret: Mutex::new(Some(secret)),
            }),
            None => Source::User(SignedIn {
                authority: self.entra.authority().to_string(),
                client_id: self.config.client_id().to_string(),
            }),
        };
        self.new_slot(&id, tenant, state, source);
        self.registry.bind(org, &id);
        drop(records);
        // Failures are logged; the sign-in itself succeeded.
        let _ = self.forget_accounts(unused).await;
        tracing::info!(org, account = %id, "signed in");
        Ok((org.to_string(), view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)] // ring's fixed generators live in its deprecated `test` module
    fn ids_are_the_csprngs_bytes_and_nothing_else() {
        // Before: SipHash of the clock under std's HashMap keys, which are not a CSPRNG's
        // output per id and are shared with every HashMap of the thread.
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &[0xa5; 16] };
        assert_eq!(id_from(&fixed).unwrap(), "a5".repeat(16));
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
