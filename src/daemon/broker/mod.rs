//! The token broker, the daemon's one service: every network call starts in it, and the server
//! only translates messages. This file holds the broker and its registry: the slots (one per
//! signed-in account, one per machine identity and set of job variables), which slot serves
//! which organization, and logout. The rest is one file per concept: `tokens` (serving and
//! renewing an access token), `erase` (a token git reports refused), `signin` (people's
//! sign-in flows), `report` (`status`, `doctor`) and `devops` (Azure DevOps' REST API).

mod app_signin;
mod devops;
mod erase;
mod registry;
mod report;
mod signin;
mod tokens;

use devops::*;
use erase::*;
use registry::Registry;
pub use signin::LoginRequest;
use signin::*;
use tokens::*;

use super::claims::Claims;
use super::clock::Clock;
use super::crashpoint;
use super::discovery;
use super::endpoint;
use super::loopback::{self, Redirect};
use super::recent::Recent;
use super::schedule;
use super::sources::entra::Entra;
use super::sources::legacy::{self, Vssps};
use super::sources::machine::{IdentityError, MachineIdentity};
use super::sources::{SourceError, TokenSet};
use super::store::{AccountRecord, AppRecord, OrgBinding, Records, StoreHandle};
use crate::config::Config;
use crate::daemon_protocol::{
    AccountView, AppLogin, Check, ErrorKind, OrgStatus, Response, StatusView,
};
use crate::policy;
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

const STORE_LIMIT: Duration = Duration::from_secs(5);
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

fn err(error: ErrorKind, message: impl Into<String>) -> Response {
    Response::error(error, message)
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
    super::store::app_secret_key(account)
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
    /// Removed from the registry, or replaced there: its refresher stops, and nothing it
    /// refreshes reaches the store.
    retired: AtomicBool,
}

impl Slot {
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    fn touch(&self, now: u64) {
        self.last_used_ms.store(now, Ordering::Relaxed);
    }

    fn is_machine(&self) -> bool {
        matches!(self.source, Source::Machine(..))
    }
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
    /// Which slot serves which organization (`registry.rs`).
    registry: Registry,
    flows: Mutex<HashMap<String, watch::Receiver<FlowResult>>>,
    /// Legacy-app sign-ins waiting for the person to paste the redirected address.
    pastes: Mutex<HashMap<String, mpsc::Sender<Redirect>>>,
    vssps: Vssps,
    /// This daemon's random key for machine-identity slot ids (see `identity_slot`).
    slot_key: ring::hmac::Key,
    /// A service's own identity variables, for requests that bring none (see `launch`).
    service_identity: BTreeMap<String, Secret>,
    clock: Clock,
    shutdown: CancellationToken,
}

impl Broker {
    pub fn new(
        settings: super::setup::Settings,
        http: reqwest::Client,
        stores: super::setup::Stores,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Arc<Broker> {
        let super::setup::Settings {
            config,
            service_identity,
        } = settings;
        let super::setup::Stores {
            secrets,
            data_dir,
            records,
        } = stores;
        let store = StoreHandle::new(secrets);
        let entra = Entra::new(http.clone(), &config.authority(), config.client_id());
        let vssps = Vssps::new(http.clone(), &config.legacy_oauth_url());
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
            registry: Registry::new(&records),
            flows: Mutex::default(),
            pastes: Mutex::default(),
            vssps,
            slot_key: ring::hmac::Key::generate(
                ring::hmac::HMAC_SHA256,
                &ring::rand::SystemRandom::new(),
            )
            .expect("the operating system's random generator failed"),
            service_identity,
            clock,
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

    /// Where a person's refresh token is kept, as `login` tells it: with how to keep it on
    /// disk when it is in memory only because no keyring answered.
    fn store_for_sign_in(&self) -> String {
        let store = self.store.describe();
        let fallback = self.store.kind() == "memory"
            && self.config.store != crate::config::StoreSetting::Memory;
        match fallback {
            true => format!(
                "{store}; set store = \"file\" in {} to keep sign-ins on disk",
                crate::paths::config_path().display()
            ),
            false => store,
        }
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
            last_used_ms: AtomicU64::new(self.clock.now_ms()),
            retired: AtomicBool::new(false),
        });
        self.registry.insert(slot.clone());
        tokio::spawn(self.clone().refresher(slot.clone()));
        slot
    }

    /// Retires an account's slot and waits for a refresh it has in flight, so nothing it
    /// does afterwards can reach the store.
    async fn retire_slot(&self, id: &str) {
        if let Some(old) = self.registry.remove(id) {
            let _flight = old.refresh_lock.lock().await;
        }
    }

    /// The slot of the account signed in for `org`, else of the machine identity that served
    /// it last.
    fn slot_for_org(&self, org: &str) -> Option<Arc<Slot>> {
        self.registry.for_org(org)
    }

    /// Drops a machine identity's slot (idle, or the least recently used past the limit): its
    /// token and the variables it came with are gone, and its refresher stops.
    fn drop_machine_slot(&self, slot: &Arc<Slot>, why: &str) {
        self.registry.remove_machine(slot);
        tracing::info!(account = %slot.id, why, "machine identity dropped");
    }

    /// The machine identity configured for an organization with no signed-in account, with
    /// its slot created on first use. `None` when none is configured.
    fn machine_slot(
        self: &Arc<Self>,
        org: &str,
        env: &BTreeMap<String, Secret>,
    ) -> Option<Result<Arc<Slot>, IdentityError>> {
        let name = self.config.identity_for(org)?.to_string();
        let slot = self.identity_slot(&name, org, env);
        if let Ok(s) = &slot {
            s.touch(self.clock.now_ms());
            self.registry.served_by_machine(org, &s.id);
        }
        Some(slot)
    }

    /// The slot of machine identity `name` with the caller's variables, created on first use.
    fn identity_slot(
        self: &Arc<Self>,
        name: &str,
        org: &str,
        env: &BTreeMap<String, Secret>,
    ) -> Result<Arc<Slot>, IdentityError> {
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
        let existing = self.registry.get(&id);
        let slot = match existing {
            Some(s) => s,
            None => {
                let Some(cfg) = self.config.identities.get(name) else {
                    return Err(IdentityError::Undefined {
                        name: name.to_string(),
                        org: org.to_string(),
                        config: crate::paths::config_path(),
                    });
                };
                let lookup = |k: &str| env.get(k).map(|v| v.expose().to_string());
                let identity = MachineIdentity::resolve(name, cfg, &lookup)?;
                // The identity's own authority (AKS's webhook sets it), else the configured one.
                let authority = match lookup("AZURE_AUTHORITY_HOST").filter(|a| !a.is_empty()) {
                    Some(a) => {
                        endpoint::require_https("AZURE_AUTHORITY_HOST", &a).map_err(|source| {
                            IdentityError::Endpoint {
                                name: name.to_string(),
                                source,
                            }
                        })?;
                        a.trim_end_matches('/').to_string()
                    }
                    None => self.entra.authority().to_string(),
                };
                // Another first `get` may have made it meanwhile: keep that one.
                let raced = self.registry.get(&id);
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
            let machines = self.registry.machines();
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

    /// Retires accounts and removes their refresh tokens from the store; `Err` holds each
    /// removal that failed.
    async fn forget_accounts(&self, ids: Vec<String>) -> Result<(), Vec<super::store::StoreError>> {
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
                failed.push(e);
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(failed),
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
        self.registry.unbind(&removed);
        drop(records);
        match self.forget_accounts(unused).await {
            Ok(()) => Response::Done,
            Err(failed) => {
                let why: Vec<String> = failed.iter().map(ToString::to_string).collect();
                err(
                    ErrorKind::Internal,
                    format!(
                        "disconnected, but could not remove the refresh token: {}",
                        why.join("; ")
                    ),
                )
            }
        }
    }
}
