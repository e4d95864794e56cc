//! The token broker: which account serves which organization, the access token of each account
//! in memory, refresh ahead of expiry with one refresh in flight per account, rotated refresh
//! tokens persisted before use, erase and back-off, and sign-in (device code, browser, and
//! legacy Azure DevOps OAuth apps).
//!
//! Every network call of the daemon starts here; the server only translates messages.

use super::claims::Claims;
use super::crashpoint;
use super::discovery;
use super::endpoint;
use super::entra::{Entra, EntraError, TokenSet};
use super::identity::MachineIdentity;
use super::legacy::{self, Vssps};
use super::loopback::{self, Redirect};
use super::recent::Recent;
use super::schedule;
use super::store::{AccountRecord, AppRecord, OrgBinding, Records, StoreHandle};
use crate::config::Config;
use crate::ipc::{AccountView, AppLogin, Check, ErrorKind, OrgStatus, Response, StatusView};
use crate::policy;
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, watch};

const STORE_LIMIT: Duration = Duration::from_secs(5);
/// Longest back-off after Azure DevOps refuses fresh tokens again and again.
const MAX_DENIED_BACKOFF: Duration = Duration::from_secs(300);
/// Longest a machine identity may take to produce a token (the client waits 45 s).
const MACHINE_LIMIT: Duration = Duration::from_secs(35);
/// A token with less life than this on arrival is a failed refresh (with its back-off), not a
/// token to hand out.
const MIN_LIFETIME_MS: u64 = 2_000;
/// No slot is refreshed in the background sooner than this after its previous refresh.
const MIN_REFRESH_INTERVAL_MS: u64 = 1_000;
/// Organizations remembered as served by machine identities (the least recently served is
/// forgotten first).
const MAX_MACHINE_ORGS: usize = 256;
/// Machine-identity slots (one per identity and set of job variables) kept at once; past it the
/// least recently used is dropped.
const MAX_MACHINE_SLOTS: usize = 256;
/// A token refused within this time of the previous refusal was its replacement.
const REPLACEMENT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// How long `erase` waits for Azure DevOps to say whether it takes the token.
const VERDICT_LIMIT: Duration = Duration::from_secs(5);
/// The id Azure DevOps gives a request it did not authenticate.
const ANONYMOUS_USER: &str = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";

/// What Azure DevOps says of a token git reported refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Refused,
    Unknown,
}

/// How long a `get` holding a token still valid waits for its successor before serving it.
const STALE_WAIT: Duration = Duration::from_secs(2);
/// The cached token if it has enough life left to serve while its refresh fails
/// ([`schedule::still_valid_ms`]).
fn still_valid(st: &SlotState) -> Option<CachedToken> {
    st.token
        .as_ref()
        .filter(|t| t.expires_ms > now_ms() + schedule::still_valid_ms(t.lifetime_ms()))
        .cloned()
}

/// When the refresher renews `t`: on its schedule, after any back-off, and never within
/// [`MIN_REFRESH_INTERVAL_MS`] of the previous refresh.
fn background_due(t: &CachedToken, st: &SlotState) -> u64 {
    let interval = st.last_refresh_ms.unwrap_or(0) + MIN_REFRESH_INTERVAL_MS;
    t.refresh_due_ms().max(st.retry_at_ms).max(interval)
}

/// A failure as the client is told it: a passing one (`Unavailable`) with when the daemon
/// tries again on its own.
fn failure(kind: ErrorKind, message: &str, wait_ms: u64) -> Response {
    Response::Error {
        error: kind,
        message: message.to_string(),
        retry_in: (kind == ErrorKind::Unavailable).then(|| wait_ms.div_ceil(1000).max(1)),
        fix: None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn err(error: ErrorKind, message: impl Into<String>) -> Response {
    Response::error(error, message)
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    obtained_ms: u64,
    expires_ms: u64,
    /// When the refresher replaces it ([`schedule::refresh_at_ms`], jittered per token).
    refresh_at_ms: u64,
}

impl CachedToken {
    /// Expiry from `expires_in` against the local receive time. The token's own `exp` claim
    /// only shortens it, and only while it is still ahead of our clock: a clock ahead of
    /// Entra's by more than the token's life sees every `exp` in the past.
    fn new(token: Secret, expires_in: Duration, now: u64) -> CachedToken {
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
            refresh_at_ms: schedule::refresh_at_ms(now, expires_ms, schedule::jitter()),
        }
    }

    fn lifetime_ms(&self) -> u64 {
        self.expires_ms.saturating_sub(self.obtained_ms)
    }
    /// Good to hand to git: not within the last fifth of its life (at most two minutes).
    fn usable(&self, now: u64) -> bool {
        let margin = schedule::usable_margin_ms(self.lifetime_ms());
        self.expires_ms > now + margin
    }
    /// When the background refresh should replace it.
    fn refresh_due_ms(&self) -> u64 {
        self.refresh_at_ms
    }
}

/// Refusals of this account's tokens by one organization.
#[derive(Default, Clone, Copy)]
struct Denied {
    last_erase_ms: u64,
    streak: u32,
    until_ms: u64,
}

#[derive(Default)]
struct SlotState {
    token: Option<CachedToken>,
    refresh_token: Option<Secret>,
    /// Claims challenge from Azure DevOps to send with the next refresh.
    claims: Option<String>,
    /// Set when the refresh token no longer works: sign in again.
    needs_login: Option<String>,
    last_refresh_ms: Option<u64>,
    last_outcome: Option<String>,
    /// The last failed attempt, shared with callers that waited for it.
    last_error: Option<(ErrorKind, String)>,
    /// Earliest time to try again after a failure.
    retry_at_ms: u64,
    failures: u32,
    /// Per organization: Azure DevOps refusing fresh tokens (no access).
    denied: HashMap<String, Denied>,
}

/// Where an account's tokens come from.
enum Source {
    /// A person: a refresh token in the secret store, redeemed where it was issued.
    User(SignedIn),
    /// A build agent's own identity: ask again, no refresh token.
    Machine(MachineIdentity, Authority),
    /// A person through a legacy Azure DevOps OAuth app: a refresh token and the app's client
    /// secret, both in the secret store.
    App(AppSource),
}

/// The Entra authority (https) a machine identity asks.
type Authority = String;

/// Where, and through which public client, a person signed in: the account is always refreshed
/// there, whatever the configuration or environment says later.
struct SignedIn {
    authority: String,
    client_id: String,
}

struct AppSource {
    record: AppRecord,
    /// The legacy OAuth service the app was connected through.
    authority: String,
    /// Loaded from the store on first use after a restart.
    secret: Mutex<Option<Secret>>,
}

/// The secret-store key of an app account's client secret.
fn app_secret_key(account: &str) -> String {
    format!("{account}.client-secret")
}

/// One account's tokens.
struct Slot {
    id: String,
    tenant: String,
    source: Source,
    state: Mutex<SlotState>,
    refresh_lock: tokio::sync::Mutex<()>,
    wake: Notify,
    /// When a `get` last used it (machine identities: idle ones are dropped).
    last_used_ms: AtomicU64,
}

impl Slot {
    fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn is_machine(&self) -> bool {
        matches!(self.source, Source::Machine(..))
    }
}

type FlowOutcome = Result<(String, AccountView), (ErrorKind, String)>;
type FlowResult = Option<FlowOutcome>;

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

pub struct Broker {
    entra: Entra,
    http: reqwest::Client,
    /// For link-local managed-identity endpoints, which must not go through a proxy.
    direct: reqwest::Client,
    store: StoreHandle,
    data_dir: PathBuf,
    config: Config,
    /// Persistent records; held only by writers (sign-in, logout, discovery).
    records: tokio::sync::Mutex<Records>,
    /// Organization → account id of the signed-in accounts, for the hot path.
    index: RwLock<HashMap<String, String>>,
    /// Organization → machine-identity slot id, for the organizations machine identities
    /// served lately (`erase`, `status`); any caller can name an organization, so it is bounded.
    machine_orgs: Mutex<Recent<String, String>>,
    /// Account id → its tokens. Every account in the records has a slot.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    flows: Mutex<HashMap<String, watch::Receiver<FlowResult>>>,
    /// Legacy-app sign-ins waiting for the person to paste the redirected address.
    pastes: Mutex<HashMap<String, mpsc::Sender<Redirect>>>,
    vssps: Vssps,
    /// This daemon's random key for machine-identity slot ids (see `identity_slot`).
    slot_key: ring::hmac::Key,
    /// A service's own identity variables, for requests that bring none (see `launch`).
    service_identity: BTreeMap<String, Secret>,
    shutdown: watch::Receiver<bool>,
}

impl Broker {
    pub fn new(
        config: Config,
        http: reqwest::Client,
        store: StoreHandle,
        data_dir: PathBuf,
        records: Records,
        service_identity: BTreeMap<String, Secret>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Broker> {
        let entra = Entra::new(http.clone(), &config.authority(), config.client_id());
        let vssps = Vssps::new(http.clone(), &config.legacy_oauth_url());
        let index = records
            .orgs
            .iter()
            .map(|(org, b)| (org.clone(), b.account.clone()))
            .collect();
        let direct = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.http_timeout())
            .build()
            .unwrap_or_else(|_| http.clone());
        let broker = Arc::new(Broker {
            entra,
            http,
            direct,
            store,
            data_dir,
            config,
            records: tokio::sync::Mutex::new(records.clone()),
            index: RwLock::new(index),
            machine_orgs: Mutex::new(Recent::new(MAX_MACHINE_ORGS)),
            slots: Mutex::default(),
            flows: Mutex::default(),
            pastes: Mutex::default(),
            vssps,
            slot_key: ring::hmac::Key::generate(
                ring::hmac::HMAC_SHA256,
                &ring::rand::SystemRandom::new(),
            )
            .expect("the operating system's random generator failed"),
            service_identity,
            shutdown,
        });
        // A slot for every account; each refresher fetches a token at once, so the first
        // `get` after a restart finds one.
        for (id, acct) in &records.accounts {
            let source = match &acct.app {
                Some(app) => Source::App(AppSource {
                    record: app.clone(),
                    authority: acct.authority.clone(),
                    secret: Mutex::new(None),
                }),
                None => Source::User(SignedIn {
                    authority: acct.authority.clone(),
                    client_id: acct.client_id.clone(),
                }),
            };
            broker.new_slot(id, &acct.tenant, SlotState::default(), source);
        }
        broker
    }

    pub fn store_description(&self) -> String {
        self.store.describe()
    }

    /// Installs a slot for an account (replacing any) and starts its refresher.
    fn new_slot(
        self: &Arc<Self>,
        id: &str,
        tenant: &str,
        state: SlotState,
        source: Source,
    ) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            id: id.to_string(),
            tenant: tenant.to_string(),
            source,
            state: Mutex::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            last_used_ms: AtomicU64::new(now_ms()),
        });
        if let Some(old) = self
            .slots
            .lock()
            .unwrap()
            .insert(id.to_string(), slot.clone())
        {
            old.wake.notify_one();
        }
        tokio::spawn(self.clone().refresher(slot.clone()));
        slot
    }

    /// Retires an account's slot and waits for a refresh it has in flight, so nothing it
    /// does afterwards can reach the store.
    async fn retire_slot(&self, id: &str) {
        let old = self.slots.lock().unwrap().remove(id);
        if let Some(old) = old {
            old.wake.notify_one();
            let _flight = old.refresh_lock.lock().await;
        }
    }

    fn is_current(&self, slot: &Arc<Slot>) -> bool {
        self.slots
            .lock()
            .unwrap()
            .get(&slot.id)
            .is_some_and(|c| Arc::ptr_eq(c, slot))
    }

    /// The slot of the account signed in for `org`, else of the machine identity that served
    /// it last.
    fn slot_for_org(&self, org: &str) -> Option<Arc<Slot>> {
        let org = org.to_ascii_lowercase();
        let id = self.index.read().unwrap().get(&org).cloned();
        let id = id.or_else(|| self.machine_orgs.lock().unwrap().get(&org).cloned())?;
        self.slots.lock().unwrap().get(&id).cloned()
    }

    /// Drops a machine identity's slot (idle, or the least recently used past the limit): its
    /// token and the variables it came with are gone, and its refresher stops.
    fn drop_machine_slot(&self, slot: &Arc<Slot>, why: &str) {
        let mut slots = self.slots.lock().unwrap();
        if slots.get(&slot.id).is_some_and(|c| Arc::ptr_eq(c, slot)) {
            slots.remove(&slot.id);
        }
        drop(slots);
        self.machine_orgs
            .lock()
            .unwrap()
            .retain(|id| *id != slot.id);
        slot.wake.notify_one();
        tracing::info!(account = %slot.id, why, "machine identity dropped");
    }

    /// Keeps one account's token fresh: refresh on its schedule (`schedule.rs`), retry failures
    /// with back-off while the old token is still valid.
    async fn refresher(self: Arc<Self>, slot: Arc<Slot>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            // A machine identity nobody asked for lately is dropped, never renewed: its job
            // (and its variables) may be long gone.
            let idle_until = slot
                .is_machine()
                .then(|| slot.last_used_ms.load(Ordering::Relaxed) + schedule::machine_idle_ms());
            if idle_until.is_some_and(|t| t <= now_ms()) {
                self.drop_machine_slot(&slot, "idle");
                return;
            }
            let due = {
                let st = slot.state.lock().unwrap();
                if st.needs_login.is_some() {
                    None
                } else {
                    match &st.token {
                        Some(t) => Some(background_due(t, &st)),
                        // No token yet: fetch one now (first start, or after a restart).
                        None if st.failures == 0 => Some(0),
                        None => Some(st.retry_at_ms),
                    }
                }
            };
            let wake_at = match (due, idle_until) {
                (Some(d), Some(i)) => Some(d.min(i)),
                (d, i) => d.or(i),
            };
            let sleep = match wake_at {
                Some(d) => {
                    Duration::from_millis(d.saturating_sub(now_ms())).min(schedule::max_sleep())
                }
                None => schedule::max_sleep(),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {
                    if due.is_some_and(|d| d <= now_ms()) {
                        let _ = self.refresh(&slot, true).await;
                    }
                }
                _ = slot.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            if !self.is_current(&slot) {
                return; // logged out, or replaced by a new sign-in
            }
        }
    }

    /// Refreshes the account's access token, sharing one request among all callers. With
    /// `background`, refreshes even when the current token is still usable.
    async fn refresh(&self, slot: &Arc<Slot>, background: bool) -> Result<CachedToken, Response> {
        let asked = now_ms();
        let _flight = slot.refresh_lock.lock().await;
        let now = now_ms();
        let refresh_token = {
            let st = slot.state.lock().unwrap();
            if let Some(t) = &st.token {
                let fresh_enough = if background {
                    now < background_due(t, &st)
                } else {
                    t.usable(now)
                };
                if fresh_enough {
                    return Ok(t.clone());
                }
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
                    Err(EntraError::Transient(format!(
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
                        let e = EntraError::Transient(e.to_string());
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
                Err(e) => Err(EntraError::SignInRequired(e)),
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
                Err(e) => Err(EntraError::SignInRequired(e)),
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
            Err(EntraError::SignInRequired(m)) => {
                tracing::warn!(account = %slot.id, reason = %m, "sign-in required");
                let mut st = slot.state.lock().unwrap();
                st.needs_login = Some(m.clone());
                st.last_outcome = Some(format!("failed: {m}"));
                st.last_error = Some((ErrorKind::NeedsLogin, m.clone()));
                st.last_refresh_ms = Some(now_ms());
                Err(err(ErrorKind::NeedsLogin, m))
            }
            // A legacy app's client secret refused: signing in again with the same secret
            // cannot help.
            Err(e @ EntraError::Rejected(_)) if matches!(slot.source, Source::App(_)) => {
                Err(self.failed(slot, ErrorKind::Misconfigured, &e))
            }
            Err(e) => Err(self.failed(slot, ErrorKind::Unavailable, &e)),
        }
    }

    /// The legacy app of an account, its client secret loaded from the store when needed.
    async fn app_of(&self, slot: &Slot, app: &AppSource) -> Result<legacy::App, EntraError> {
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
                        return Err(EntraError::SignInRequired(format!(
                            "the client secret of app {} is not in the secret store (store: {})",
                            app.record.app_id,
                            self.store.kind()
                        )));
                    }
                    Err(e) => return Err(EntraError::Transient(e.to_string())),
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
    fn failed(&self, slot: &Slot, kind: ErrorKind, e: &EntraError) -> Response {
        let message = e.to_string();
        tracing::warn!(account = %slot.id, error = %message, "refresh failed");
        let mut st = slot.state.lock().unwrap();
        st.failures += 1;
        let backoff = schedule::backoff_ms(st.failures);
        let asked = e.retry_after().map_or(0, |d| d.as_millis() as u64);
        st.retry_at_ms = now_ms() + backoff.max(asked);
        st.last_refresh_ms = Some(now_ms());
        st.last_outcome = Some(format!("failed: {message}"));
        st.last_error = Some((kind, message.clone()));
        let wait = st
            .retry_at_ms
            .saturating_sub(st.last_refresh_ms.unwrap_or_default());
        failure(kind, &message, wait)
    }

    /// Persists the rotated refresh token, then publishes the new access token, unless it is
    /// useless on arrival ([`MIN_LIFETIME_MS`]): that is a failure, backed off as any other.
    async fn install(
        &self,
        slot: &Arc<Slot>,
        set: TokenSet,
        used_claims: bool,
    ) -> Result<CachedToken, Response> {
        let now = now_ms();
        let mut outcome = "ok".to_string();
        // A retired slot (logged out, or replaced by a new sign-in) must not write to the
        // store: that would resurrect a forgotten refresh token or overwrite the new one.
        if let Some(rt) = set.refresh.as_ref().filter(|_| self.is_current(slot)) {
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
        let cached = CachedToken::new(set.access, set.expires_in, now);
        let mut st = slot.state.lock().unwrap();
        if let Some(rt) = set.refresh {
            st.refresh_token = Some(rt);
        }
        if used_claims {
            st.claims = None;
        }
        if cached.lifetime_ms() < MIN_LIFETIME_MS {
            drop(st);
            let e = EntraError::Transient(format!(
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
                Some(Err(message)) => return err(ErrorKind::Misconfigured, message),
                None => {
                    return err(
                        ErrorKind::NeedsLogin,
                        format!("no account is connected to organization '{org}'"),
                    );
                }
            },
        };
        let now = now_ms();
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
            if let Some(t) = &st.token
                && t.usable(now)
            {
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
        let current = still_valid(&slot.state.lock().unwrap());
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
        if let Some(t) = still_valid(&slot.state.lock().unwrap()) {
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

    /// The machine identity configured for an organization with no signed-in account, with
    /// its slot created on first use. `None` when none is configured.
    fn machine_slot(
        self: &Arc<Self>,
        org: &str,
        env: &BTreeMap<String, Secret>,
    ) -> Option<Result<Arc<Slot>, String>> {
        let name = self.config.identity_for(org)?.to_string();
        let slot = self.identity_slot(&name, org, env);
        if let Ok(s) = &slot {
            s.touch();
            self.machine_orgs
                .lock()
                .unwrap()
                .put(org.to_ascii_lowercase(), s.id.clone());
        }
        Some(slot)
    }

    /// The slot of machine identity `name` with the caller's variables, created on first use.
    fn identity_slot(
        self: &Arc<Self>,
        name: &str,
        org: &str,
        env: &BTreeMap<String, Secret>,
    ) -> Result<Arc<Slot>, String> {
        // A request that brings variables is served with those alone; one that brings none,
        // with a service's own (none for a daemon started on demand: see `launch`).
        let env = match env.is_empty() {
            true => &self.service_identity,
            false => env,
        };
        // One slot per identity and per set of variables: a job with other credentials (a new
        // SYSTEM_ACCESSTOKEN, say) gets tokens of its own. The id is logged, so it is keyed
        // with this daemon's random key: no fingerprint of a secret.
        let mut mac = ring::hmac::Context::with_key(&self.slot_key);
        for (k, v) in env {
            for part in [k.as_bytes(), v.expose().as_bytes()] {
                mac.update(&(part.len() as u64).to_le_bytes());
                mac.update(part);
            }
        }
        let tag = mac.sign();
        let short: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = format!("identity:{name}:{short}");
        let existing = self.slots.lock().unwrap().get(&id).cloned();
        let slot = match existing {
            Some(s) => s,
            None => {
                let Some(cfg) = self.config.identities.get(name) else {
                    return Err(format!(
                        "identity '{name}' (for organization '{org}') is not defined under [identities] in {}",
                        crate::paths::config_path().display()
                    ));
                };
                let lookup = |k: &str| env.get(k).map(|v| v.expose().to_string());
                let identity = MachineIdentity::resolve(name, cfg, &lookup)?;
                // The identity's own authority (AKS's webhook sets it), else the configured one.
                let authority = match lookup("AZURE_AUTHORITY_HOST").filter(|a| !a.is_empty()) {
                    Some(a) => {
                        endpoint::require_https("AZURE_AUTHORITY_HOST", &a)
                            .map_err(|e| format!("identity '{name}': {e}"))?;
                        a.trim_end_matches('/').to_string()
                    }
                    None => self.entra.authority().to_string(),
                };
                // Another first `get` may have made it meanwhile: keep that one.
                let raced = self.slots.lock().unwrap().get(&id).cloned();
                match raced {
                    Some(s) => s,
                    None => {
                        self.make_room_for_a_machine_slot();
                        tracing::info!(org, identity = %identity.describe(), "using a machine identity");
                        let tenant = identity.tenant().to_string();
                        self.new_slot(
                            &id,
                            &tenant,
                            SlotState::default(),
                            Source::Machine(identity, authority),
                        )
                    }
                }
            }
        };
        Ok(slot)
    }

    /// Drops the least recently used machine-identity slots while there are
    /// [`MAX_MACHINE_SLOTS`] or more.
    fn make_room_for_a_machine_slot(&self) {
        loop {
            let machines: Vec<Arc<Slot>> = self
                .slots
                .lock()
                .unwrap()
                .values()
                .filter(|s| s.is_machine())
                .cloned()
                .collect();
            if machines.len() < MAX_MACHINE_SLOTS {
                return;
            }
            let oldest = machines
                .iter()
                .min_by_key(|s| s.last_used_ms.load(Ordering::Relaxed))
                .expect("at least one");
            self.drop_machine_slot(oldest, "the least recently used of too many");
        }
    }

    /// Answers `erase`: git says Azure DevOps refused the token we gave it. A claims challenge
    /// drops it and asks for the claims. Otherwise the daemon asks Azure DevOps itself whether
    /// the organization takes the token ([`Broker::verdict`]):
    /// - it does: the failure was not the token's (a probe sent without it, a proxy, a hiccup),
    ///   so the token stays and nothing backs off;
    /// - it refuses it: the token is dropped, and when its replacement is refused too (no
    ///   access, not expiry), the organization backs off instead of asking Entra again and again;
    /// - no answer: the token is dropped (the next `get` fetches another) and nothing backs off.
    pub async fn erase(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        token: Option<&Secret>,
        wwwauth: &[String],
    ) {
        let Some(slot) = self.slot_for_org(org) else {
            return;
        };
        let held = {
            let mut st = slot.state.lock().unwrap();
            let held = match (&st.token, token) {
                (Some(t), Some(rejected)) if &t.token == rejected => t.clone(),
                (Some(t), None) => t.clone(),
                _ => return, // not the token we hold: nothing to drop
            };
            if let Some(claims) = wwwauth.iter().find_map(|w| claims_challenge(w)) {
                tracing::info!(org, "Azure DevOps asked for a claims challenge");
                st.token = None;
                st.claims = Some(claims);
                return;
            }
            held
        };
        let verdict = self.verdict(host, org, &held.token).await;
        let now = now_ms();
        let mut st = slot.state.lock().unwrap();
        if verdict == Verdict::Accepted {
            tracing::info!(
                org,
                "git reported a refusal, but Azure DevOps accepts the token: kept (the failure was not the token's)"
            );
            return;
        }
        if st.token.as_ref().is_some_and(|t| t.token == held.token) {
            st.token = None;
        }
        if verdict == Verdict::Unknown {
            return;
        }
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
    }

    /// Whether `org` accepts `token`, asked of its `_apis/connectionData` within
    /// [`VERDICT_LIMIT`]: 200 naming a user is accepted, 401 or 403 refused, anything else (or a
    /// host outside the allowlist, which gets no token) unknown.
    async fn verdict(&self, host: &str, org: &str, token: &Secret) -> Verdict {
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

    /// Discovers (or recalls) the tenant of an organization.
    async fn tenant_of(&self, org: &str, host: &str, wwwauth: &[String]) -> String {
        if let Some(t) = self.config.tenant_override(org) {
            return t.to_string();
        }
        let key = org.to_ascii_lowercase();
        if let Some(t) = self.records.lock().await.tenants.get(&key) {
            return t.clone();
        }
        let found = match wwwauth
            .iter()
            .find_map(|w| discovery::tenant_from_challenge(w))
        {
            Some(t) => Some(t),
            None => discovery::discover(&self.http, host, org).await,
        };
        match found {
            Some(t) => {
                let mut records = self.records.lock().await;
                records.tenants.insert(key, t.clone());
                if let Err(e) = records.save(&self.data_dir) {
                    tracing::warn!(error = %e, "could not save the tenant cache");
                }
                t
            }
            None => "organizations".to_string(),
        }
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
            Some(t) if discovery::valid_tenant(&t) => t,
            Some(t) => {
                return err(
                    ErrorKind::BadRequest,
                    format!("'{t}' is not a valid tenant"),
                );
            }
            None => self.tenant_of(&org, &host, &wwwauth).await,
        };
        let failed = |e: EntraError| {
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
    fn publisher(
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
    async fn complete_browser(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        tenant: &str,
        sign_in: super::entra::BrowserSignIn,
        r: Redirect,
    ) -> (FlowOutcome, loopback::Page) {
        let code = match redirect_code(r, &sign_in.state, "Entra ID") {
            Ok(c) => c,
            Err(text) => return failed_page(text),
        };
        let set = match self.entra.redeem_code(tenant, sign_in, &code).await {
            Ok(set) => set,
            Err(e) => return failed_page(e.to_string()),
        };
        let result = self.finish_login(org, host, tenant, set, None).await;
        outcome_page(result, "")
    }

    /// Starts a sign-in through a legacy Azure DevOps OAuth app (the Assertion flow): the
    /// daemon serves an `https://localhost` callback itself, or the person pastes the address
    /// the browser was sent to.
    async fn app_login_start(
        self: &Arc<Self>,
        org: String,
        host: String,
        app: AppLogin,
        timeout: Duration,
    ) -> Response {
        let AppLogin {
            app_id,
            client_secret,
            callback,
            scope,
            paste,
        } = app;
        if app_id.trim().is_empty() || client_secret.expose().trim().is_empty() {
            return err(
                ErrorKind::BadRequest,
                "a legacy OAuth app needs its App ID and client secret",
            );
        }
        if !url::Url::parse(&callback).is_ok_and(|u| u.scheme() == "https") {
            return err(
                ErrorKind::BadRequest,
                format!(
                    "the callback URL must be https, exactly as registered for app {app_id} (got '{callback}')"
                ),
            );
        }
        let scope = if scope.trim().is_empty() {
            crate::config::DEFAULT_APP_SCOPE.to_string()
        } else {
            scope
        };
        let mut certificate = None;
        let listener = match legacy::loopback_callback(&callback).filter(|_| !paste) {
            Some((port, path)) => {
                let (tls, cert) = match legacy::callback_tls(&self.data_dir) {
                    Ok(t) => t,
                    Err(e) => return err(ErrorKind::Internal, e),
                };
                let listener = match loopback::bind_port(port).await {
                    Ok(l) => l,
                    Err(e) => {
                        return err(
                            ErrorKind::Internal,
                            format!(
                                "cannot listen on localhost:{port} (127.0.0.1 and ::1) for the callback {callback}: {e}; free the port, or use --paste"
                            ),
                        );
                    }
                };
                certificate = Some(cert.display().to_string());
                let tls = Some(tokio_rustls::TlsAcceptor::from(tls));
                Some((listener, loopback::Endpoint { path, tls }))
            }
            None => None,
        };
        let state = random_id();
        let url = self.vssps.authorize_url(&app_id, &state, &scope, &callback);
        let flow = random_id();
        let (tx, rx) = watch::channel(None);
        let finish = self.clone().publisher(flow.clone(), tx);
        let (paste_tx, mut pasted) = mpsc::channel::<Redirect>(1);
        let listening = listener.is_some();
        let app = legacy::App {
            app_id,
            secret: client_secret,
            callback: callback.clone(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut outcome = None;
            let complete = |r| this.complete_app(&org, &host, &app, &scope, &state, r);
            let done = match listener {
                Some((listener, endpoint)) => {
                    loopback::wait_for_redirect(listener, endpoint, timeout, &state, |r| async {
                        let (result, page) = complete(r).await;
                        outcome = Some(result);
                        page
                    })
                    .await
                }
                None => match tokio::time::timeout(timeout, pasted.recv()).await {
                    Ok(Some(r)) => {
                        outcome = Some(complete(r).await.0);
                        Some(())
                    }
                    _ => None,
                },
            };
            let outcome = match (done, outcome) {
                (Some(()), Some(o)) => o,
                _ => Err((
                    ErrorKind::LoginFailed,
                    format!(
                        "the app was not authorized within {} seconds; run login again",
                        timeout.as_secs()
                    ),
                )),
            };
            finish(outcome).await;
        });
        if !listening {
            self.pastes.lock().unwrap().insert(flow.clone(), paste_tx);
        }
        self.flows.lock().unwrap().insert(flow.clone(), rx);
        Response::AppSignIn {
            flow,
            url,
            callback,
            listening,
            certificate,
            expires_in: timeout.as_secs(),
        }
    }

    /// Checks a legacy app's callback, redeems its code, and says what happened on the page.
    async fn complete_app(
        self: &Arc<Self>,
        org: &str,
        host: &str,
        app: &legacy::App,
        scope: &str,
        state: &str,
        r: Redirect,
    ) -> (FlowOutcome, loopback::Page) {
        let code = match redirect_code(r, state, "Azure DevOps") {
            Ok(c) => c,
            Err(text) => return failed_page(text),
        };
        let set = match self.vssps.redeem(app, &code).await {
            Ok(set) => set,
            Err(e) => return failed_page(e.to_string()),
        };
        let record = AppRecord {
            app_id: app.app_id.clone(),
            callback: app.callback.clone(),
            scope: scope.to_string(),
        };
        let result = self
            .finish_login(org, host, "", set, Some((record, app.secret.clone())))
            .await;
        outcome_page(result, &format!(" through app {}", app.app_id))
    }

    /// A legacy-app sign-in's redirected address, pasted by the person.
    pub async fn login_redirect(self: &Arc<Self>, flow: &str, url: &Secret) -> Response {
        let redirect = match loopback::parse_url(url.expose()) {
            Some(r) if r.code.is_some() || r.error.is_some() => r,
            _ => {
                return err(
                    ErrorKind::BadRequest,
                    "that is not the address the browser was sent to: paste the whole address from the address bar (it starts with https:// and contains code=)",
                );
            }
        };
        let sender = self.pastes.lock().unwrap().get(flow).cloned();
        let Some(sender) = sender else {
            return err(
                ErrorKind::BadRequest,
                "no sign-in is waiting for an address (it may have expired); run login again",
            );
        };
        if sender.send(redirect).await.is_err() {
            return err(ErrorKind::BadRequest, "this sign-in is already over");
        }
        self.login_wait(flow).await
    }

    pub async fn login_wait(self: &Arc<Self>, flow: &str) -> Response {
        let rx = self.flows.lock().unwrap().get(flow).cloned();
        let Some(mut rx) = rx else {
            return err(
                ErrorKind::BadRequest,
                "no such sign-in in progress (it may have expired)",
            );
        };
        let result = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().expect("waited for Some"),
            Err(_) => {
                return err(
                    ErrorKind::Internal,
                    "the sign-in task ended without a result",
                );
            }
        };
        match result {
            Ok((org, account)) => Response::LoggedIn {
                org,
                account,
                store: self.store.describe(),
            },
            Err((kind, message)) => err(kind, message),
        }
    }

    async fn finish_login(
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
                connected_at: now_ms() / 1000,
                connected_by: view.upn.clone().or(view.name.clone()),
                app: app.as_ref().map(|(r, _)| r.clone()),
            },
        );
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
        let now = now_ms();
        let state = SlotState {
            token: Some(CachedToken::new(set.access, set.expires_in, now)),
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
        self.index
            .write()
            .unwrap()
            .insert(org.to_ascii_lowercase(), id.clone());
        drop(records);
        // Failures are logged; the sign-in itself succeeded.
        let _ = self.forget_accounts(unused).await;
        tracing::info!(org, account = %id, "signed in");
        Ok((org.to_string(), view))
    }

    /// Retires accounts and removes their refresh tokens from the store.
    async fn forget_accounts(&self, ids: Vec<String>) -> Result<(), String> {
        let mut failed = Vec::new();
        for id in ids {
            self.retire_slot(&id).await;
            let key = id.clone();
            let forget = move |s: &dyn super::store::SecretStore| {
                s.delete(&app_secret_key(&key))?;
                s.delete(&key)
            };
            if let Err(e) = self.store.call(STORE_LIMIT, forget).await {
                tracing::error!(account = %id, error = %e, "could not remove a refresh token");
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Disconnects one organization, or all; forgets refresh tokens no organization uses.
    pub async fn logout(self: &Arc<Self>, org: Option<&str>) -> Response {
        let mut records = self.records.lock().await;
        let mut next = records.clone();
        let removed: Vec<String> = match org {
            Some(o) => next
                .orgs
                .remove_entry(&o.to_ascii_lowercase())
                .map(|(k, _)| vec![k])
                .unwrap_or_default(),
            None => std::mem::take(&mut next.orgs).into_keys().collect(),
        };
        if removed.is_empty() {
            return err(
                ErrorKind::BadRequest,
                match org {
                    Some(o) => format!("organization '{o}' is not connected"),
                    None => "no organization is connected".into(),
                },
            );
        }
        let unused = next.remove_unused_accounts();
        if let Err(e) = next.save(&self.data_dir) {
            return err(ErrorKind::Internal, e.to_string());
        }
        *records = next;
        {
            let mut index = self.index.write().unwrap();
            for o in &removed {
                index.remove(o);
            }
        }
        drop(records);
        match self.forget_accounts(unused).await {
            Ok(()) => Response::Done,
            Err(e) => err(
                ErrorKind::Internal,
                format!("disconnected, but could not remove the refresh token: {e}"),
            ),
        }
    }

    pub async fn status(self: &Arc<Self>) -> Response {
        let records = self.records.lock().await.clone();
        let mut orgs = Vec::new();
        for (org, binding) in &records.orgs {
            let Some(acct) = records.accounts.get(&binding.account) else {
                continue;
            };
            let slot = self.slots.lock().unwrap().get(&binding.account).cloned();
            let (expires, last, outcome) = match slot {
                Some(s) => {
                    let st = s.state.lock().unwrap();
                    (
                        st.token.as_ref().map(|t| t.expires_ms / 1000),
                        st.last_refresh_ms.map(|m| m / 1000),
                        st.needs_login
                            .as_ref()
                            .map(|w| format!("sign-in required: {w}"))
                            .or_else(|| st.last_outcome.clone()),
                    )
                }
                None => (None, None, None),
            };
            orgs.push(OrgStatus {
                org: org.clone(),
                account: AccountView {
                    name: acct.name.clone(),
                    upn: acct.upn.clone(),
                    tenant: acct.tenant.clone(),
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
            .machine_orgs
            .lock()
            .unwrap()
            .entries()
            .filter(|(org, _)| !records.orgs.contains_key(*org))
            .map(|(o, id)| (o.clone(), id.clone()))
            .collect();
        machine.sort();
        for (org, id) in machine {
            let Some(slot) = self.slots.lock().unwrap().get(&id).cloned() else {
                continue;
            };
            let Source::Machine(identity, _) = &slot.source else {
                continue;
            };
            let st = slot.state.lock().unwrap();
            orgs.push(OrgStatus {
                org,
                account: AccountView {
                    name: Some(identity.describe()),
                    upn: None,
                    tenant: slot.tenant.clone(),
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
        let machine_identities = self
            .slots
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.is_machine())
            .count();
        Response::Status(StatusView {
            daemon_version: crate::ipc::PACKAGE_VERSION.into(),
            pid: std::process::id(),
            store: self.store.describe(),
            orgs,
            machine_identities,
        })
    }
}

impl Broker {
    /// The daemon's half of `doctor`: the secret store answers, Entra and Azure DevOps are
    /// reachable through the configured proxy, and each organization accepts its token.
    pub async fn doctor(self: &Arc<Self>, env: &BTreeMap<String, Secret>) -> Vec<Check> {
        let mut checks = Vec::new();
        let store = self.store.describe();
        checks.push(
            match self
                .store
                .call(STORE_LIMIT, |s| s.load("doctor-probe"))
                .await
            {
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
        let served: Vec<String> = {
            let machine = self.machine_orgs.lock().unwrap();
            machine.entries().map(|(org, _)| org.clone()).collect()
        };
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
                Err(e) => Err(e),
            };
            checks.push(match result {
                Ok(t) => Check::pass(
                    what,
                    format!(
                        "gives Azure DevOps tokens (this one expires in {} minutes)",
                        t.expires_ms.saturating_sub(now_ms()) / 60_000
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

    /// Asks Azure DevOps who `token` belongs to, in `org`.
    async fn connection_user(
        &self,
        host: &str,
        org: &str,
        token: &Secret,
    ) -> Result<ConnectionUser, WhoError> {
        let url = format!("{}/_apis/connectionData", discovery::probe_url(host, org));
        let resp = self.http.get(&url).bearer_auth(token.expose()).send().await;
        let r = resp.map_err(|e| WhoError::Network(url.clone(), super::error_chain(&e)))?;
        if r.status() != reqwest::StatusCode::OK {
            return Err(WhoError::Status(url, r.status()));
        }
        let v = r
            .json::<serde_json::Value>()
            .await
            .map_err(|_| WhoError::NotUser(url.clone()))?;
        let user = &v["authenticatedUser"];
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let id = text(&user["id"]).ok_or(WhoError::NotUser(url))?;
        Ok(ConnectionUser {
            id,
            name: text(&user["providerDisplayName"]),
            email: text(&user["properties"]["Account"]["$value"]),
        })
    }

    /// Any HTTP answer proves the host is reachable with working TLS.
    async fn reachable(&self, what: &str, url: &str, via: &str) -> Check {
        match self.http.get(url).send().await {
            Ok(r) => Check::pass(
                what,
                format!("{url} answered {} {via}", r.status().as_u16()),
            ),
            Err(e) => {
                let msg = super::error_chain(&e);
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
    fn network_fix(&self) -> String {
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

/// The authorization code of a redirect that belongs to this sign-in, or what went wrong.
fn redirect_code(r: Redirect, state: &str, service: &str) -> Result<Secret, String> {
    if r.state.as_deref() != Some(state) {
        return Err(
            "the sign-in answer did not match this sign-in (state mismatch); run login again"
                .into(),
        );
    }
    if let Some(e) = r.error {
        let d = r.error_description.unwrap_or_default();
        let first = d.lines().next().unwrap_or("").trim();
        return Err(if first.is_empty() {
            format!("{service} said {e}")
        } else {
            format!("{service} said {e}: {first}")
        });
    }
    r.code
        .ok_or_else(|| "the redirect carried no authorization code".into())
}

fn failed_page(text: String) -> (FlowOutcome, loopback::Page) {
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
fn outcome_page(result: FlowOutcome, through: &str) -> (FlowOutcome, loopback::Page) {
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

/// Who Azure DevOps says a token belongs to (`_apis/connectionData`).
struct ConnectionUser {
    id: String,
    name: Option<String>,
    email: Option<String>,
}

/// Why `connectionData` did not name the user.
enum WhoError {
    /// 200 but not the expected JSON: a sign-in page, or a proxy's.
    NotUser(String),
    Status(String, reqwest::StatusCode),
    Network(String, String),
}

impl WhoError {
    fn describe(&self, org: &str) -> String {
        match self {
            WhoError::NotUser(url) => format!(
                "{url} did not answer with the signed-in user (a sign-in page, or a proxy's page?)"
            ),
            WhoError::Status(url, status) => format!(
                "Azure DevOps answered {status} to {url}: the account may have no access to '{org}'"
            ),
            WhoError::Network(url, e) => format!("cannot reach {url}: {e}"),
        }
    }
}

fn token_response(t: &CachedToken) -> Response {
    Response::Token {
        token: t.token.clone(),
        // Rounded up: never a second in the past.
        expires_at: t.expires_ms.div_ceil(1000),
        // The server chooses the answer for the git asking (`gits.rs`).
        scheme: Default::default(),
    }
}

/// The decoded `claims` of a `Bearer error="insufficient_claims", claims="<base64>"` challenge.
fn claims_challenge(challenge: &str) -> Option<String> {
    use base64::Engine;
    if !challenge.contains("insufficient_claims") {
        return None;
    }
    let start = challenge.find("claims=\"")? + "claims=\"".len();
    let b64 = &challenge[start..];
    let b64 = &b64[..b64.find('"')?];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim_end_matches('='))
        })
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// 128 bits from the operating system's CSPRNG, as hex: sign-in `state` and flow ids.
fn random_id() -> String {
    // The OS generator does not fail once the system has booted; if it ever did, an id that
    // cannot be predicted matters more than the sign-in going ahead.
    id_from(&ring::rand::SystemRandom::new())
        .expect("the operating system's random generator failed")
}

/// 16 bytes of `rng`, as hex, and nothing else (no clock, no counter).
fn id_from(rng: &dyn ring::rand::SecureRandom) -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_timing() {
        let t = CachedToken::new(Secret::new("x"), Duration::from_secs(3600), 0);
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
