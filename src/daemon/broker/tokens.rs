//! An account's access token in memory: when it is served, when it is renewed (one renewal in
//! flight per account), what a failed renewal does (back-off, sign-in required), and the rotated
//! refresh token stored before the new access token is published.

use super::*;

/// How long a `get` holding a token still valid waits for its successor before serving it.
pub(super) const STALE_WAIT: Duration = Duration::from_secs(2);

/// The cached token if it has enough life left to serve while its refresh fails
/// ([`schedule::still_valid_ms`]).
pub(super) fn still_valid(st: &SlotState, now: u64) -> Option<CachedToken> {
    st.token
        .as_ref()
        .filter(|t| t.expires_ms > now + schedule::still_valid_ms(t.lifetime_ms()))
        .cloned()
}

/// When the refresher renews `t`: on its schedule, after any back-off, and never within
/// [`MIN_REFRESH_INTERVAL_MS`] of the previous refresh.
pub(super) fn background_due(t: &CachedToken, st: &SlotState) -> u64 {
    let interval = st.last_refresh_ms.unwrap_or(0) + MIN_REFRESH_INTERVAL_MS;
    t.refresh_due_ms().max(st.retry_at_ms).max(interval)
}

/// A failure as the client is told it: a passing one (`Unavailable`) with when the daemon
/// tries again on its own.
pub(super) fn failure(kind: ErrorKind, message: &str, wait_ms: u64) -> Response {
    Response::Error {
        error: kind,
        message: message.to_string(),
        retry_in: (kind == ErrorKind::Unavailable).then(|| wait_ms.div_ceil(1000).max(1)),
        fix: None,
    }
}

#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) token: Secret,
    pub(super) obtained_ms: u64,
    pub(super) expires_ms: u64,
    /// When the refresher replaces it ([`schedule::refresh_at_ms`], jittered per token).
    pub(super) refresh_at_ms: u64,
}

impl CachedToken {
    /// Expiry from `expires_in` against the local receive time. The token's own `exp` claim
    /// only shortens it, and only while it is still ahead of our clock: a clock ahead of
    /// Entra's by more than the token's life sees every `exp` in the past.
    /// `jitter` in `[0, 1)` places its renewal in the band ([`schedule::refresh_at_ms`]).
    pub(super) fn new(token: Secret, expires_in: Duration, now: u64, jitter: f64) -> CachedToken {
        let by_lifetime = now + expires_in.as_millis() as u64;
        let expires_ms = match Claims::of(token.expose())
            .exp
            .map(|e| e.saturating_mul(1000))
        {
            Some(exp) if exp > now => by_lifetime.min(exp),
            _ => by_lifetime,
        };
        CachedToken {
            token,
            obtained_ms: now,
            expires_ms,
            refresh_at_ms: schedule::refresh_at_ms(now, expires_ms, jitter),
        }
    }

    pub(super) fn lifetime_ms(&self) -> u64 {
        self.expires_ms.saturating_sub(self.obtained_ms)
    }
    /// Good to hand to git: not within the last fifth of its life (at most two minutes).
    pub(super) fn usable(&self, now: u64) -> bool {
        let margin = schedule::usable_margin_ms(self.lifetime_ms());
        self.expires_ms > now + margin
    }
    /// When the background refresh should replace it.
    pub(super) fn refresh_due_ms(&self) -> u64 {
        self.refresh_at_ms
    }
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) token: Option<CachedToken>,
    pub(super) refresh_token: Option<Secret>,
    /// Claims challenge from Azure DevOps to send with the next refresh.
    pub(super) claims: Option<String>,
    /// Set when the refresh token no longer works: sign in again.
    pub(super) needs_login: Option<String>,
    pub(super) last_refresh_ms: Option<u64>,
    pub(super) last_outcome: Option<String>,
    /// The last failed attempt, shared with callers that waited for it.
    pub(super) last_error: Option<(ErrorKind, String)>,
    /// Earliest time to try again after a failure.
    pub(super) retry_at_ms: u64,
    pub(super) failures: u32,
    /// Per organization: Azure DevOps refusing fresh tokens (no access).
    pub(super) denied: HashMap<String, Denied>,
}

/// Where a slot stands, as the refresher and `get` read it: the two decisions every path shares,
/// pure functions of the state and the time.
impl SlotState {
    /// When the refresher renews this slot: the token's own time (after any back-off, never
    /// within [`MIN_REFRESH_INTERVAL_MS`] of the last refresh); with no token, at once, or
    /// after the back-off once an attempt failed; `None` when only a sign-in can help.
    pub(super) fn due(&self) -> Option<u64> {
        if self.needs_login.is_some() {
            return None;
        }
        Some(match &self.token {
            Some(t) => background_due(t, self),
            None if self.failures == 0 => 0,
            None => self.retry_at_ms,
        })
    }

    /// The token handed to git at `now` without waiting: one not yet in the last part of its
    /// life ([`CachedToken::usable`]).
    pub(super) fn serve(&self, now: u64) -> Option<&CachedToken> {
        self.token.as_ref().filter(|t| t.usable(now))
    }
}

pub(super) fn token_response(t: &CachedToken) -> Response {
    Response::Token {
        token: t.token.clone(),
        // Rounded up: never a second in the past.
        expires_at: t.expires_ms.div_ceil(1000),
        // The server chooses the answer for the git asking (`gits.rs`).
        scheme: Default::default(),
    }
}

/// The decoded `claims` of a `Bearer error="insufficient_claims", claims="<base64>"` challenge.
pub(super) fn claims_challenge(challenge: &str) -> Option<String> {
    use base64::Engine;
    let params = crate::daemon::challenge::bearer_params(challenge)?;
    if params.get("error").map(String::as_str) != Some("insufficient_claims") {
        return None;
    }
    let b64 = params.get("claims")?.as_str();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim_end_matches('='))
        })
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl Broker {
    /// Keeps one account's token fresh: refresh on its schedule (`schedule.rs`), retry failures
    /// with back-off while the old token is still valid.
    pub(super) async fn refresher(self: Arc<Self>, slot: Arc<Slot>) {
        loop {
            let now = self.clock.now_ms();
            // A machine identity nobody asked for lately is dropped, never renewed: its job
            // (and its variables) may be long gone. Checked before any renewal, so that waking
            // late (a suspended machine, a clock moved on) never renews a slot that went idle.
            let idle_until = slot
                .is_machine()
                .then(|| slot.last_used_ms.load(Ordering::Relaxed) + schedule::MACHINE_IDLE_MS);
            if idle_until.is_some_and(|t| t <= now) {
                self.drop_machine_slot(&slot, "idle");
                return;
            }
            let due = slot.state.lock().unwrap().due();
            if due.is_some_and(|d| d <= now) {
                let _ = self.refresh(&slot, true).await;
            } else {
                let wake_at = match (due, idle_until) {
                    (Some(d), Some(i)) => Some(d.min(i)),
                    (d, i) => d.or(i),
                };
                let sleep = wake_at.map_or(schedule::MAX_SLEEP, |at| {
                    Duration::from_millis(at - now).min(schedule::MAX_SLEEP)
                });
                tokio::select! {
                    _ = self.clock.sleep(sleep) => {}
                    _ = slot.wake.notified() => {}
                    _ = self.shutdown.cancelled() => return,
                }
            }
            if slot.is_retired() {
                return; // logged out, or replaced by a new sign-in
            }
        }
    }

    /// Refreshes the account's access token, sharing one request among all callers. With
    /// `background`, refreshes even when the current token is still usable.
    pub(super) async fn refresh(
        &self,
        slot: &Arc<Slot>,
        background: bool,
    ) -> Result<CachedToken, Response> {
        let asked = self.clock.now_ms();
        let _flight = slot.refresh_lock.lock().await;
        let now = self.clock.now_ms();
        let refresh_token = {
            let st = slot.state.lock().unwrap();
            // Renewed meanwhile by the caller whose flight this one waited for?
            let fresh = match background {
                true => st
                    .token
                    .as_ref()
                    .filter(|_| st.due().is_some_and(|d| now < d)),
                false => st.serve(now),
            };
            if let Some(t) = fresh {
                return Ok(t.clone());
            }
            if let Some(why) = &st.needs_login {
                return Err(err(ErrorKind::NeedsLogin, why.clone()));
            }
            if !background && let Some((kind, message)) = &st.last_error {
                // Another caller's attempt failed while we waited for it, or we are backing
                // off after failures: share that outcome instead of asking Entra again.
                let tried_meanwhile = st.last_refresh_ms.is_some_and(|t| t >= asked);
                if tried_meanwhile || now < st.retry_at_ms {
                    let wait = st.retry_at_ms.saturating_sub(now);
                    return Err(failure(*kind, message, wait));
                }
            }
            st.refresh_token.clone()
        };
        if let Source::Machine(identity, authority) = &slot.source {
            tracing::debug!(account = %slot.id, ahead = background, "acquiring a machine-identity token");
            // Bounded well below the client's deadline, retries included.
            let acquire = identity.acquire(&self.http, &self.direct, authority);
            let result = tokio::time::timeout(MACHINE_LIMIT, acquire)
                .await
                .unwrap_or_else(|_| {
                    Err(SourceError::Transient(format!(
                        "{} did not give a token within {} seconds",
                        identity.describe(),
                        MACHINE_LIMIT.as_secs()
                    )))
                });
            return match result {
                Ok(set) => self.install(slot, set, false).await,
                Err(e) if e.is_transient() => Err(self.failed(slot, ErrorKind::Unavailable, &e)),
                Err(e) => Err(self.failed(slot, ErrorKind::Misconfigured, &e)),
            };
        }
        let refresh_token = match refresh_token {
            Some(rt) => rt,
            None => {
                let id = slot.id.clone();
                match self.store.call(STORE_LIMIT, move |s| s.load(&id)).await {
                    Ok(Some(rt)) => rt,
                    Ok(None) => {
                        let why = format!(
                            "no refresh token is stored for this account (store: {})",
                            self.store.kind()
                        );
                        slot.state.lock().unwrap().needs_login = Some(why.clone());
                        return Err(err(ErrorKind::NeedsLogin, why));
                    }
                    Err(e) => {
                        let e = SourceError::Transient(e.to_string());
                        return Err(self.failed(slot, ErrorKind::Unavailable, &e));
                    }
                }
            }
        };
        let claims = slot.state.lock().unwrap().claims.clone();
        tracing::debug!(account = %slot.id, ahead = background, "refreshing access token");
        crashpoint::reached(crashpoint::BEFORE_REQUEST);
        // Redeemed only where it was issued, and only over https.
        let result = match &slot.source {
            Source::App(app) => match endpoint::require_https(
                "the legacy OAuth service this app was connected through",
                &app.authority,
            ) {
                Err(e) => Err(SourceError::SignInRequired(e.to_string())),
                Ok(()) => match self.app_of(slot, app).await {
                    Ok(a) => {
                        Vssps::new(self.http.clone(), &app.authority)
                            .refresh(&a, &refresh_token)
                            .await
                    }
                    Err(e) => Err(e),
                },
            },
            Source::User(at) => match endpoint::require_https(
                "the authority this account signed in at",
                &at.authority,
            ) {
                Err(e) => Err(SourceError::SignInRequired(e.to_string())),
                Ok(()) => {
                    Entra::new(self.http.clone(), &at.authority, &at.client_id)
                        .refresh(&slot.tenant, &refresh_token, claims.as_deref())
                        .await
                }
            },
            Source::Machine(..) => unreachable!("machine identities returned above"),
        };
        match result {
            Ok(set) => {
                crashpoint::reached(crashpoint::AFTER_RESPONSE);
                self.install(slot, set, claims.is_some()).await
            }
            Err(SourceError::SignInRequired(m)) => {
                tracing::warn!(account = %slot.id, reason = %m, "sign-in required");
                let mut st = slot.state.lock().unwrap();
                st.needs_login = Some(m.clone());
                st.last_outcome = Some(format!("failed: {m}"));
                st.last_error = Some((ErrorKind::NeedsLogin, m.clone()));
                st.last_refresh_ms = Some(self.clock.now_ms());
                Err(err(ErrorKind::NeedsLogin, m))
            }
            // A legacy app's client secret refused: signing in again with the same secret
            // cannot help.
            Err(e @ SourceError::Rejected(_)) if matches!(slot.source, Source::App(_)) => {
                Err(self.failed(slot, ErrorKind::Misconfigured, &e))
            }
            // Entra refusing the request itself (invalid_client, invalid_scope, …): the
            // configuration, not a passing failure; no "tries again by itself" for it.
            Err(e @ SourceError::Rejected(_)) => {
                Err(self.failed(slot, ErrorKind::Misconfigured, &e))
            }
            Err(e) => Err(self.failed(slot, ErrorKind::Unavailable, &e)),
        }
    }

    /// The legacy app of an account, its client secret loaded from the store when needed.
    pub(super) async fn app_of(
        &self,
        slot: &Slot,
        app: &AppSource,
    ) -> Result<legacy::App, SourceError> {
        let known = app.secret.lock().unwrap().clone();
        let secret = match known {
            Some(s) => s,
            None => {
                let key = app_secret_key(&slot.id);
                match self.store.call(STORE_LIMIT, move |s| s.load(&key)).await {
                    Ok(Some(s)) => {
                        *app.secret.lock().unwrap() = Some(s.clone());
                        s
                    }
                    Ok(None) => {
                        return Err(SourceError::SignInRequired(format!(
                            "the client secret of app {} is not in the secret store (store: {})",
                            app.record.app_id,
                            self.store.kind()
                        )));
                    }
                    Err(e) => return Err(SourceError::Transient(e.to_string())),
                }
            }
        };
        Ok(legacy::App {
            app_id: app.record.app_id.clone(),
            secret,
            callback: app.record.callback.clone(),
        })
    }

    /// Records a failed refresh and schedules the next try: exponential back-off from 2 s to
    /// a minute, and never sooner than the server's `Retry-After`.
    pub(super) fn failed(&self, slot: &Slot, kind: ErrorKind, e: &SourceError) -> Response {
        let message = e.to_string();
        tracing::warn!(account = %slot.id, error = %message, "refresh failed");
        let mut st = slot.state.lock().unwrap();
        st.failures += 1;
        let backoff = schedule::backoff_ms(st.failures);
        let asked = e.retry_after().map_or(0, |d| d.as_millis() as u64);
        st.retry_at_ms = self.clock.now_ms() + backoff.max(asked);
        st.last_refresh_ms = Some(self.clock.now_ms());
        st.last_outcome = Some(format!("failed: {message}"));
        st.last_error = Some((kind, message.clone()));
        let wait = st
            .retry_at_ms
            .saturating_sub(st.last_refresh_ms.unwrap_or_default());
        failure(kind, &message, wait)
    }

    /// Persists the rotated refresh token, then publishes the new access token, unless it is
    /// useless on arrival ([`MIN_LIFETIME_MS`]): that is a failure, backed off as any other.
    pub(super) async fn install(
        &self,
        slot: &Arc<Slot>,
        set: TokenSet,
        used_claims: bool,
    ) -> Result<CachedToken, Response> {
        let now = self.clock.now_ms();
        let mut outcome = "ok".to_string();
        // A retired slot (logged out, or replaced by a new sign-in) must not write to the
        // store: that would resurrect a forgotten refresh token or overwrite the new one.
        if let Some(rt) = set.refresh.as_ref().filter(|_| !slot.is_retired()) {
            let (id, rt2) = (slot.id.clone(), rt.clone());
            if let Err(e) = self
                .store
                .call(STORE_LIMIT, move |s| s.save(&id, &rt2))
                .await
            {
                // Keep the new one in memory: the old one may already be spent.
                tracing::error!(account = %slot.id, error = %e, "could not save the rotated refresh token");
                outcome = format!("ok, but the new refresh token could not be saved: {e}");
            }
        }
        let cached = CachedToken::new(set.access, set.expires_in, now, self.clock.jitter());
        let mut st = slot.state.lock().unwrap();
        if let Some(rt) = set.refresh {
            st.refresh_token = Some(rt);
        }
        if used_claims {
            st.claims = None;
        }
        if cached.lifetime_ms() < MIN_LIFETIME_MS {
            drop(st);
            let e = SourceError::Transient(format!(
                "the new access token expires {} ms after it arrived, too soon to use",
                cached.lifetime_ms()
            ));
            return Err(self.failed(slot, ErrorKind::Unavailable, &e));
        }
        st.token = Some(cached.clone());
        st.needs_login = None;
        st.last_error = None;
        st.failures = 0;
        st.retry_at_ms = 0;
        st.last_refresh_ms = Some(now);
        st.last_outcome = Some(outcome);
        drop(st);
        slot.wake.notify_one();
        tracing::info!(account = %slot.id, expires_in_s = (cached.lifetime_ms() / 1000), "access token ready");
        Ok(cached)
    }

    /// Answers `get`: the cached token when usable, else one shared refresh.
    pub async fn get(self: &Arc<Self>, org: &str, env: &BTreeMap<String, Secret>) -> Response {
        let slot = match self.slot_for_org(org).filter(|s| !s.is_machine()) {
            Some(s) => s,
            None => match self.machine_slot(org, env) {
                Some(Ok(s)) => s,
                Some(Err(e)) => return err(ErrorKind::Misconfigured, e.to_string()),
                None => {
                    let set: Vec<&str> = env.keys().map(String::as_str).collect();
                    return Response::Error {
                        error: ErrorKind::NeedsLogin,
                        message: format!("no account is connected to organization '{org}'"),
                        retry_in: None,
                        // A job's identity variables that no configuration uses: say how.
                        fix: self.config.identity_fix(org, &set),
                    };
                }
            },
        };
        let now = self.clock.now_ms();
        {
            let st = slot.state.lock().unwrap();
            if let Some(d) = st.denied.get(&org.to_ascii_lowercase())
                && d.until_ms > now
            {
                return err(
                    ErrorKind::Denied,
                    format!(
                        "Azure DevOps refused fresh tokens for organization '{org}' again (does the account have access?); not asking for {} more seconds",
                        (d.until_ms - now).div_ceil(1000)
                    ),
                );
            }
            if let Some(t) = st.serve(now) {
                return token_response(t);
            }
        }
        tracing::info!(org, "get waits for a refresh");
        // On its own task: a refresh is never cancelled half-way (a refresh token spent at
        // Entra whose successor never arrived), even when this caller stops waiting.
        let refresh = tokio::spawn({
            let (broker, slot) = (self.clone(), slot.clone());
            async move { broker.refresh(&slot, false).await }
        });
        // A token in the last part of its life is still good: wait only briefly for its
        // successor, and serve it when Entra is slow or failing.
        let current = still_valid(&slot.state.lock().unwrap(), self.clock.now_ms());
        let outcome = match &current {
            Some(t) => match tokio::time::timeout(STALE_WAIT, refresh).await {
                Ok(joined) => joined,
                Err(_) => return token_response(t),
            },
            None => refresh.await,
        };
        let e = match outcome {
            Ok(Ok(t)) => return token_response(&t),
            Ok(Err(e)) => e,
            Err(joined) => {
                tracing::error!(error = %joined, "the refresh task failed");
                let m = "the token refresh failed inside the daemon; see its log";
                err(ErrorKind::Unavailable, m.to_string())
            }
        };
        // Failing, or even refused for good: a token that is still valid is better than
        // none, and Azure DevOps accepts it until it expires.
        if let Some(t) = still_valid(&slot.state.lock().unwrap(), self.clock.now_ms()) {
            tracing::info!(org, "serving the current token while its refresh fails");
            return token_response(&t);
        }
        match (&slot.source, e) {
            // Name the way back for an app account: the app again, or Entra ID.
            (
                Source::App(app),
                Response::Error {
                    error: error @ (ErrorKind::NeedsLogin | ErrorKind::Misconfigured),
                    message,
                    retry_in,
                    ..
                },
            ) => Response::Error {
                error,
                message,
                retry_in,
                fix: Some(format!(
                    "Connect it again with: git-credential-azdo login --org {org} --app-id {} --client-secret-file FILE, or move to Entra ID: git-credential-azdo login --org {org}",
                    app.record.app_id
                )),
            },
            (_, e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(obtained_ms: u64, expires_ms: u64, refresh_at_ms: u64) -> CachedToken {
        CachedToken {
            token: Secret::new("x"),
            obtained_ms,
            expires_ms,
            refresh_at_ms,
        }
    }

    /// The refresher's one decision, for each state a slot can be in.
    #[test]
    fn due_follows_the_state() {
        // No token: at once, or after the back-off once an attempt failed.
        let mut st = SlotState::default();
        assert_eq!(st.due(), Some(0));
        st.failures = 2;
        st.retry_at_ms = 9_000;
        assert_eq!(st.due(), Some(9_000));
        // Healthy: the token's own time.
        let mut st = SlotState {
            token: Some(token(0, 100_000, 80_000)),
            ..SlotState::default()
        };
        assert_eq!(st.due(), Some(80_000));
        // Failing: not before the back-off ends, nor within a second of the last refresh.
        st.retry_at_ms = 85_000;
        assert_eq!(st.due(), Some(85_000));
        st.last_refresh_ms = Some(85_500);
        assert_eq!(st.due(), Some(86_500));
        // Needs a sign-in: never, token or not.
        st.needs_login = Some("revoked".into());
        assert_eq!(st.due(), None);
        st.token = None;
        assert_eq!(st.due(), None);
    }

    /// `get`'s one decision: a token is served until the last fifth of its life.
    #[test]
    fn serve_stops_at_the_last_fifth_of_the_life() {
        let st = SlotState {
            token: Some(token(0, 100_000, 78_000)),
            ..SlotState::default()
        };
        assert!(st.serve(79_999).is_some());
        assert!(st.serve(80_000).is_none());
        assert!(SlotState::default().serve(0).is_none());
        // A sign-in required does not take a still-valid token away from git.
        let st = SlotState {
            needs_login: Some("revoked".into()),
            ..st
        };
        assert!(st.serve(1_000).is_some());
    }

    #[test]
    fn token_timing() {
        let t = CachedToken::new(Secret::new("x"), Duration::from_secs(3600), 0, 0.5);
        let due = t.refresh_due_ms();
        // 2.5–5.5 % of the hour before its last two minutes.
        assert!((3_282_000..=3_390_000).contains(&due), "{due}");
        assert!(t.usable(3_400_000));
        assert!(!t.usable(3_500_000));
        let short = CachedToken {
            token: Secret::new("x"),
            obtained_ms: 0,
            expires_ms: 4_000,
            refresh_at_ms: 3_000,
        };
        assert!(short.usable(3_000));
        assert!(!short.usable(3_300));
    }

    #[test]
    fn claims_challenge_is_decoded() {
        use base64::Engine;
        let c = r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#;
        let w = format!(
            "Bearer realm=\"\", error=\"insufficient_claims\", claims=\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(c)
        );
        assert_eq!(claims_challenge(&w).as_deref(), Some(c));
        assert_eq!(claims_challenge("Bearer authorization_uri=x"), None);
    }
}
