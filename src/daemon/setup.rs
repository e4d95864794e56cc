//! What the daemon is put together from: its settings (the configuration file and the
//! environment, read once by the binary), its stores, its one HTTP client, and the errors of
//! putting them together. Nothing here runs; `mod.rs` assembles and `server.rs` serves.

use super::store;
use crate::config::Config;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot open the OS keyring (store = \"keyring\" in the configuration): {0}")]
    Store(store::StoreError),
    #[error("cannot read the account records: {0}")]
    Records(store::StoreError),
}

/// The daemon's settings, read once by its binary (the one place that reads the environment
/// for them): the configuration file, with `AZURE_AUTHORITY_HOST` over its `authority_host`,
/// and the identity variables of a daemon run as a service, used for requests that carry none
/// (empty when started on demand; see `launch`).
#[derive(Clone, Default)]
pub struct Settings {
    pub config: Config,
    pub service_identity: BTreeMap<String, Secret>,
}

impl Settings {
    /// The default configuration file and this process's environment.
    pub fn from_environment(service: bool) -> Result<Settings, DaemonError> {
        let mut config = Config::load_default()?;
        if let Some(host) = std::env::var("AZURE_AUTHORITY_HOST")
            .ok()
            .filter(|s| !s.is_empty())
        {
            config.authority_host = Some(host);
        }
        Ok(Settings {
            config,
            service_identity: match service {
                true => crate::launch::identity_variables(),
                false => BTreeMap::new(),
            },
        })
    }
}

/// Where the daemon keeps what outlives a request: the secret store (refresh tokens, legacy
/// apps' secrets) and the data directory with the account records, read once here.
#[derive(Clone)]
pub struct Stores {
    pub secrets: Arc<dyn store::SecretStore>,
    pub data_dir: PathBuf,
    pub records: store::Records,
}

impl Stores {
    /// The configured secret store (`store` in the configuration), and the records in
    /// `data_dir` (a corrupt file is set aside).
    pub async fn open(config: &Config, data_dir: PathBuf) -> Result<Stores, DaemonError> {
        let secrets = store::choose(config.store, &data_dir)
            .await
            .map_err(DaemonError::Store)?;
        // A changed `store` moves the sign-ins instead of losing them.
        let mut records =
            store::Records::load_or_set_aside(&data_dir).map_err(DaemonError::Records)?;
        let before = records.store.clone();
        store::adopt(&mut records, secrets.as_ref(), &data_dir).await;
        if records.store != before && !records.accounts.is_empty() {
            records.save(&data_dir).map_err(DaemonError::Records)?;
        }
        Ok(Stores {
            secrets,
            data_dir,
            records,
        })
    }
}

/// The daemon's one HTTP client: OS trust store (and `SSL_CERT_FILE` for a service), plus the
/// configuration's `ssl_cert_file`; proxy from the configuration (with its `no_proxy`) or, for a
/// service, the environment; connect and total timeouts, no redirects.
pub(super) fn http_client(config: &Config) -> Result<reqwest::Client, DaemonError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(config.http_timeout()))
        .timeout(config.http_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("git-credential-azdo/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = &config.proxy {
        // Not quoted in the error: a proxy URL may carry a password.
        let no_proxy = match &config.no_proxy {
            Some(list) => reqwest::NoProxy::from_string(list),
            None => reqwest::NoProxy::from_env(),
        };
        let proxy = reqwest::Proxy::all(p)
            .map_err(|_| {
                DaemonError::Setup("the proxy in the configuration is not a valid URL".into())
            })?
            .no_proxy(no_proxy);
        b = b.proxy(proxy);
    }
    if let Some(file) = &config.ssl_cert_file {
        let pem = std::fs::read(file)
            .map_err(|e| DaemonError::Setup(format!("cannot read ssl_cert_file {file}: {e}")))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            DaemonError::Setup(format!(
                "ssl_cert_file {file} holds no PEM certificates: {e}"
            ))
        })?;
        for root in roots {
            b = b.add_root_certificate(root);
        }
    }
    b.build()
        .map_err(|e| DaemonError::Setup(format!("cannot set up HTTPS: {e}")))
}

/// An error and its causes on one line (reqwest's top-level message alone hides the cause).
/// reqwest names URLs in its errors, never request bodies.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
