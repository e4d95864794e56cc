//! What survives a daemon restart: refresh tokens in a secret store (OS keyring, an explicit
//! 0600 file, or memory only) and the non-secret account records in a JSON file.
//!
//! Writes are atomic (temporary file, fsync, rename) so a crash leaves the old or the new
//! version, never half of one. Stores are synchronous; the daemon calls them off its async
//! runtime with a deadline, because a locked keyring can block.

use crate::config::StoreSetting;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVICE: &str = "git-credential-azdo";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the OS keyring failed: {0}")]
    Keyring(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("the secret store did not answer within {0:?} (is the keyring locked?)")]
    Timeout(Duration),
}

/// A place for refresh tokens, keyed by account id.
pub trait SecretStore: Send + Sync + 'static {
    /// `keyring`, `file` or `memory`.
    fn kind(&self) -> &'static str;
    /// For people: where the refresh tokens are, and what that means.
    fn describe(&self) -> String;
    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError>;
    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError>;
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// The OS credential store through `keyring` (Secret Service, Keychain, Credential Manager).
pub struct KeyringStore;

impl KeyringStore {
    fn entry(key: &str) -> Result<keyring::Entry, StoreError> {
        keyring::Entry::new(SERVICE, key).map_err(|e| StoreError::Keyring(e.to_string()))
    }

    /// A round trip through the keyring; errors when there is none or it is unusable.
    pub fn probe() -> Result<(), StoreError> {
        let e = Self::entry("probe")?;
        e.set_password("probe")
            .map_err(|e| StoreError::Keyring(e.to_string()))?;
        let back = e
            .get_password()
            .map_err(|e| StoreError::Keyring(e.to_string()))?;
        let _ = e.delete_credential();
        if back == "probe" {
            Ok(())
        } else {
            Err(StoreError::Keyring(
                "probe read back a different value".into(),
            ))
        }
    }
}

impl SecretStore for KeyringStore {
    fn kind(&self) -> &'static str {
        "keyring"
    }
    fn describe(&self) -> String {
        "OS keyring".into()
    }
    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        match Self::entry(key)?.get_password() {
            Ok(p) => Ok(Some(Secret::new(p))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(StoreError::Keyring(e.to_string())),
        }
    }
    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError> {
        Self::entry(key)?
            .set_password(value.expose())
            .map_err(|e| StoreError::Keyring(e.to_string()))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match Self::entry(key)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(StoreError::Keyring(e.to_string())),
        }
    }
}

/// Refresh tokens in a 0600 JSON file: the explicit choice for machines with no keyring.
pub struct FileStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        FileStore {
            path,
            lock: Mutex::new(()),
        }
    }

    fn read_map(&self) -> Result<BTreeMap<String, Secret>, StoreError> {
        read_json(&self.path).map(Option::unwrap_or_default)
    }
}

impl SecretStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn describe(&self) -> String {
        format!("file {} (mode 0600, not encrypted)", self.path.display())
    }
    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.read_map()?.remove(key))
    }
    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = self.read_map()?;
        map.insert(key.to_string(), value.clone());
        write_json_atomic(&self.path, &map)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = self.read_map()?;
        if map.remove(key).is_some() {
            write_json_atomic(&self.path, &map)?;
        }
        Ok(())
    }
}

/// Nothing kept past the daemon's life.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Secret>>,
    why: String,
}

impl MemoryStore {
    pub fn new(why: impl Into<String>) -> Self {
        MemoryStore {
            map: Mutex::default(),
            why: why.into(),
        }
    }
}

impl SecretStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn describe(&self) -> String {
        format!("memory only, lost when the daemon stops ({})", self.why)
    }
    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        Ok(self.map.lock().unwrap().get(key).cloned())
    }
    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError> {
        self.map
            .lock()
            .unwrap()
            .insert(key.to_string(), value.clone());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&dyn SecretStore) + Send>;

/// The daemon's way to its secret store: one worker thread runs the calls in the order they
/// were made (a rotated refresh token is never overwritten by an older one finishing late),
/// and every caller waits with a deadline. A hung keyring leaves calls queued behind it, not
/// a growing pile of blocked threads.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<dyn SecretStore>,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl StoreHandle {
    pub fn new(store: Arc<dyn SecretStore>) -> StoreHandle {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let worker = store.clone();
        std::thread::Builder::new()
            .name("secret-store".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&*worker);
                }
            })
            .expect("spawn the secret-store thread");
        StoreHandle { store, jobs }
    }

    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Runs `f` on the store's thread; gives up waiting after `limit`.
    pub async fn call<T, F>(&self, limit: Duration, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn SecretStore) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        if self.jobs.send(job).is_err() {
            return Err(StoreError::Keyring(
                "the secret-store thread has stopped".into(),
            ));
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Keyring(
                "the secret-store call was dropped".into(),
            )),
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }
}

/// Picks the secret store for a setting. `auto` probes the OS keyring with a bounded round
/// trip and otherwise keeps tokens in memory, saying so: never a silent plaintext file.
pub async fn choose(
    setting: StoreSetting,
    data_dir: &Path,
) -> Result<Arc<dyn SecretStore>, StoreError> {
    let limit = Duration::from_secs(5);
    let probe = || async move {
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(KeyringStore::probe)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(StoreError::Keyring(e.to_string())),
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    };
    Ok(match setting {
        StoreSetting::File => Arc::new(FileStore::new(data_dir.join("refresh-tokens.json"))),
        StoreSetting::Memory => Arc::new(MemoryStore::new("store = \"memory\"")),
        StoreSetting::Keyring => {
            probe().await?;
            Arc::new(KeyringStore)
        }
        StoreSetting::Auto => match probe().await {
            Ok(()) => Arc::new(KeyringStore),
            Err(e) => {
                tracing::warn!(error = %e, "no usable OS keyring; keeping refresh tokens in memory only");
                // The keyring crate's own words are for the log, not for people.
                Arc::new(MemoryStore::new(match e {
                    StoreError::Timeout(limit) => {
                        format!("the OS keyring did not answer within {limit:?}")
                    }
                    _ => "no OS keyring answered".to_string(),
                }))
            }
        },
    })
}

/// One account: an Entra identity that can get tokens for Azure DevOps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountRecord {
    pub tenant: String,
    pub client_id: String,
    pub authority: String,
    pub name: Option<String>,
    pub upn: Option<String>,
    pub oid: Option<String>,
    /// `user` for people; later: managed identity, service principal, ...
    pub identity: String,
    pub connected_at: u64,
    /// Who connected it.
    #[serde(default)]
    pub connected_by: Option<String>,
    /// A legacy Azure DevOps OAuth app: its App ID and registered callback URL (its client
    /// secret is in the secret store, beside the refresh token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppRecord>,
}

/// The non-secret half of a legacy Azure DevOps OAuth app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRecord {
    pub app_id: String,
    pub callback: String,
    pub scope: String,
}

/// Which account serves an organization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrgBinding {
    pub account: String,
    pub host: String,
}

/// Everything non-secret the daemon remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Records {
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountRecord>,
    #[serde(default)]
    pub orgs: BTreeMap<String, OrgBinding>,
    /// Discovered tenant per organization.
    #[serde(default)]
    pub tenants: BTreeMap<String, String>,
    /// The kind of secret store (`keyring`, `file`, `memory`) the accounts' secrets are in, so
    /// that a change of `store` moves them instead of losing the sign-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// The secret-store keys of an account: its refresh token, and a legacy app's client secret.
pub fn account_keys(account: &str) -> [String; 2] {
    [account.to_string(), app_secret_key(account)]
}

/// Where a legacy app's client secret is kept, beside the account's refresh token.
pub fn app_secret_key(account: &str) -> String {
    format!("{account}.client-secret")
}

/// After `store` changed: the accounts' secrets are moved from the store they were kept in
/// (`records.store`) to `to`, and the records say so. Secrets that were in memory are gone (the
/// sign-ins are reported as needing a sign-in); a previous store that cannot be opened (the
/// keyring on a machine without one) leaves them where they are, and the records unchanged, so
/// that switching back finds them.
pub async fn adopt(records: &mut Records, to: &dyn SecretStore, data_dir: &Path) {
    let current = to.kind();
    let previous = records.store.clone();
    match previous.as_deref() {
        Some(old) if old != current && !records.accounts.is_empty() => {
            let setting = match old {
                "file" => StoreSetting::File,
                "keyring" => StoreSetting::Keyring,
                _ => {
                    tracing::warn!(
                        store = old,
                        "the sign-ins were kept in memory only: sign in again"
                    );
                    records.store = Some(current.to_string());
                    return;
                }
            };
            let from = match choose(setting, data_dir).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, store = old, "the previous store does not answer: the sign-ins were not moved");
                    return;
                }
            };
            let mut moved = 0;
            for id in records.accounts.keys() {
                for key in account_keys(id) {
                    let copied = from.load(&key).and_then(|v| match v {
                        Some(v) => to
                            .save(&key, &v)
                            .and_then(|()| from.delete(&key))
                            .map(|()| 1),
                        None => Ok(0),
                    });
                    match copied {
                        Ok(n) => moved += n,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot move the sign-ins to the new store; left where they were");
                            return;
                        }
                    }
                }
            }
            tracing::info!(
                from = old,
                to = current,
                secrets = moved,
                "moved the sign-ins to the configured store"
            );
        }
        _ => {}
    }
    records.store = Some(current.to_string());
}

impl Records {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("accounts.json")
    }

    pub fn load(data_dir: &Path) -> Result<Records, StoreError> {
        read_json(&Self::path(data_dir)).map(Option::unwrap_or_default)
    }

    /// Loads the records; a file that is not valid JSON is set aside (kept for recovery,
    /// reported in the log) and the daemon starts with none, rather than failing every start.
    pub fn load_or_set_aside(data_dir: &Path) -> Result<Records, StoreError> {
        let path = Self::path(data_dir);
        match read_json::<Records>(&path) {
            Ok(r) => Ok(r.unwrap_or_default()),
            Err(StoreError::Read { message, .. }) if message.starts_with("not valid JSON") => {
                let aside =
                    path.with_extension(format!("json.corrupt-{}", crate::clock::unix_secs()));
                fs::rename(&path, &aside).map_err(|source| StoreError::Write {
                    path: aside.display().to_string(),
                    source,
                })?;
                tracing::error!(path = %path.display(), moved_to = %aside.display(), %message, "account records were corrupt; starting without them");
                Ok(Records::default())
            }
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), StoreError> {
        write_json_atomic(&Self::path(data_dir), self)
    }

    /// Drops accounts no organization is bound to; returns their ids.
    pub fn remove_unused_accounts(&mut self) -> Vec<String> {
        let unused: Vec<String> = self
            .accounts
            .keys()
            .filter(|id| !self.orgs.values().any(|b| &b.account == *id))
            .cloned()
            .collect();
        for id in &unused {
            self.accounts.remove(id);
        }
        unused
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Read {
            path: path.display().to_string(),
            // Position only: the file may hold refresh tokens.
            message: format!("not valid JSON at line {} column {}", e.line(), e.column()),
        })
}

/// Removes the temporary files of writes that never finished (`NAME.tmp.PID`, left by a daemon
/// killed half-way); call only while holding the daemon lock.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let unfinished = name
            .rsplit_once(".tmp.")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if unfinished && fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %name, "removed an unfinished write of a stopped daemon");
        }
    }
}

/// Creates `dir` (and parents) with mode 0700 for the last component.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).expect("records serialize");
    write_private_file(path, &bytes, Some(super::crashpoint::STORE_WRITE)).map_err(|source| {
        StoreError::Write {
            path: path.display().to_string(),
            source,
        }
    })
}

/// Replaces `path` with `bytes` whole or not at all, readable by the owner only: written to a
/// 0600 file beside it (in a 0700 directory), synced, renamed over it, the directory synced.
/// `crash` names the crash point between the write and the sync, for the crash tests.
pub fn write_private_file(
    path: &Path,
    bytes: &[u8],
    crash: Option<&'static str>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_private_dir(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if let Some(step) = crash {
            super::crashpoint::reached(step);
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().join("sub").join("rt.json"));
        assert_eq!(s.load("a").unwrap(), None);
        s.save("a", &Secret::new("one")).unwrap();
        s.save("b", &Secret::new("two")).unwrap();
        s.save("a", &Secret::new("three")).unwrap();
        assert_eq!(s.load("a").unwrap().unwrap().expose(), "three");
        let mode = fs::metadata(dir.path().join("sub").join("rt.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        s.delete("a").unwrap();
        assert_eq!(s.load("a").unwrap(), None);
        assert_eq!(s.load("b").unwrap().unwrap().expose(), "two");
    }

    #[test]
    fn corrupt_file_error_does_not_echo_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt.json");
        fs::write(&p, "{\"a\": \"SECRET-RT\" garbage").unwrap();
        let e = FileStore::new(p).load("a").unwrap_err().to_string();
        assert!(!e.contains("SECRET-RT"), "{e}");
    }

    #[test]
    fn corrupt_records_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Records::path(dir.path()), "{ not json").unwrap();
        assert_eq!(
            Records::load_or_set_aside(dir.path()).unwrap(),
            Records::default()
        );
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("accounts.json.corrupt-")),
            "{names:?}"
        );
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Records::default();
        r.tenants.insert("o".into(), "t".into());
        r.save(dir.path()).unwrap();
        assert_eq!(Records::load(dir.path()).unwrap(), r);
    }
}
