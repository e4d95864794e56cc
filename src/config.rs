//! The configuration file: extra hosts, where refresh tokens are kept, the sign-in client and
//! authority, and per-organization overrides.
//!
//! A missing file is the default configuration. The client reads it only on cold paths (a host
//! that is not built in, or a command other than `get`), never for a plain Azure DevOps `get`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Visual Studio's public client, as Git Credential Manager uses.
pub const DEFAULT_CLIENT_ID: &str = "872cd9fa-d31f-45e0-9eab-6e460a02d1f1";
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The legacy Azure DevOps OAuth service (authorize and token endpoints).
pub const DEFAULT_LEGACY_OAUTH_URL: &str = "https://app.vssps.visualstudio.com";
/// The callback a legacy OAuth app is registered with when none is given: served by the daemon
/// over https with a certificate it generates.
pub const DEFAULT_APP_CALLBACK: &str = "https://localhost:47613/callback";
/// Enough to clone, fetch and push.
pub const DEFAULT_APP_SCOPE: &str = "vso.code_write";

/// Where refresh tokens are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreSetting {
    /// The OS keyring when one answers, else memory only (reported, never a silent file).
    #[default]
    Auto,
    Keyring,
    /// A 0600 file in the data directory; for headless machines, chosen explicitly.
    File,
    /// Nothing kept past the daemon's life.
    Memory,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// Tenant to sign in to for this organization, instead of discovering it.
    pub tenant: Option<String>,
    /// A machine identity (a name under `[identities]`) that serves this organization.
    pub identity: Option<String>,
}

/// A machine identity for build agents. Unset fields come from azure-identity's variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `managed-identity`, `service-principal` or `workload-identity`.
    pub kind: String,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    /// Managed identity: a user-assigned identity by object id or resource id.
    pub object_id: Option<String>,
    pub resource_id: Option<String>,
    /// Service principal: a file holding the secret (else `AZURE_CLIENT_SECRET`).
    pub client_secret_file: Option<String>,
    /// Service principal: a PEM file with the certificate and its RSA private key (else
    /// `AZURE_CLIENT_CERTIFICATE_PATH`), used when there is no secret.
    pub client_certificate_path: Option<String>,
    /// Send the certificate chain (`x5c`) for subject-name/issuer authentication (else
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`).
    #[serde(default)]
    pub send_certificate_chain: bool,
    /// Workload identity: the token file (else `AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<String>,
    /// Workload identity: `file`, `github-actions` or `azure-pipelines` (default: detected).
    pub token_source: Option<String>,
    /// Workload identity in Azure Pipelines: the service connection (else
    /// `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID`).
    pub service_connection_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Extra hosts to answer for (Azure DevOps behind a proxy or a custom domain), `host[:port]`.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub store: StoreSetting,
    /// How git gets the token: Bearer to a git known to send it on every request (2.54+), else
    /// Basic (`auto`); or always `basic`, or `bearer` to every git that announces `authtype`.
    #[serde(default)]
    pub auth: crate::answer::AuthSetting,
    /// Public client used for people's sign-in.
    pub client_id: Option<String>,
    /// Entra authority host; `AZURE_AUTHORITY_HOST` wins over it.
    pub authority_host: Option<String>,
    /// HTTPS proxy for the daemon's requests. A daemon the client starts takes no proxy from
    /// anyone's environment; a service (`--service`) without it uses `HTTPS_PROXY`/`NO_PROXY`.
    pub proxy: Option<String>,
    /// Hosts `proxy` is not used for (`NO_PROXY`'s syntax: `127.0.0.1,.corp.example`).
    pub no_proxy: Option<String>,
    /// A PEM file of root certificates trusted beside the operating system's (a TLS-inspecting
    /// proxy's root, where it is not in the OS store).
    pub ssl_cert_file: Option<String>,
    /// The legacy Azure DevOps OAuth service, for apps registered at app.vsaex.visualstudio.com.
    pub legacy_oauth_url: Option<String>,
    /// Seconds the daemon waits for one answer from Entra ID or Azure DevOps; see
    /// [`Config::http_timeout`].
    pub http_timeout: Option<u64>,
    #[serde(default)]
    pub org: BTreeMap<String, OrgConfig>,
    /// The machine identity for organizations with no signed-in account and none of their own.
    pub identity: Option<String>,
    #[serde(default)]
    pub identities: BTreeMap<String, IdentityConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: String, message: String },
}

impl Config {
    /// Loads the file at `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })
    }

    pub fn load_default() -> Result<Config, ConfigError> {
        Self::load(&crate::paths::config_path())
    }

    /// Only `hosts`, for the client: the rest of the file is the daemon's to read (and to
    /// report on), and parsing it all would put the whole schema into the binary git starts.
    pub fn load_hosts(path: &Path) -> Result<Vec<String>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let invalid = |message: String| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
        match table.get("hosts") {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid("`hosts` must be a list of strings".into())),
                })
                .collect(),
            Some(_) => Err(invalid("`hosts` must be a list of strings".into())),
        }
    }

    pub fn hosts_default() -> Result<Vec<String>, ConfigError> {
        Self::load_hosts(&crate::paths::config_path())
    }

    /// How long one HTTP request of the daemon may take: `http_timeout`, 30 s by default,
    /// kept within 1–40 s so that a `get` waiting on it ends before the client's own deadline.
    pub fn http_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.http_timeout.unwrap_or(30).clamp(1, 40))
    }

    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(DEFAULT_CLIENT_ID)
    }

    /// `authority_host` (the daemon's settings put `AZURE_AUTHORITY_HOST` there, which a daemon
    /// started on demand forgets: see `launch`), else the public cloud. People's sign-ins are
    /// recorded with it and always refreshed there.
    pub fn authority(&self) -> String {
        self.authority_host
            .clone()
            .unwrap_or_else(|| DEFAULT_AUTHORITY.to_string())
            .trim_end_matches('/')
            .to_string()
    }

    pub fn legacy_oauth_url(&self) -> String {
        self.legacy_oauth_url
            .as_deref()
            .unwrap_or(DEFAULT_LEGACY_OAUTH_URL)
            .trim_end_matches('/')
            .to_string()
    }

    /// The machine identity configured for `org` (its own, else the default), by name.
    pub fn identity_for(&self, org: &str) -> Option<&str> {
        self.org
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(org))
            .and_then(|(_, o)| o.identity.as_deref())
            .or(self.identity.as_deref())
    }

    /// For an organization with no identity configured, when the caller has identity variables
    /// set (`set`: their names): the configuration that would use them, naming the variables.
    /// The variables alone never choose an identity (see docs/build-agents.md): a person's
    /// shell that exports them for another tool must not turn their git into that identity.
    pub fn identity_fix(&self, org: &str, set: &[&str]) -> Option<String> {
        if self.identity_for(org).is_some() {
            return None;
        }
        // The variables that say who, not how (the authority, the chain flag).
        let seen: Vec<&str> = set
            .iter()
            .copied()
            .filter(|v| {
                !matches!(
                    *v,
                    "AZURE_AUTHORITY_HOST" | "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"
                )
            })
            .collect();
        if seen.is_empty() {
            return None;
        }
        let has = |v: &str| seen.contains(&v);
        let kind = if has("AZURE_FEDERATED_TOKEN_FILE")
            || has("ACTIONS_ID_TOKEN_REQUEST_URL")
            || has("SYSTEM_OIDCREQUESTURI")
        {
            "workload-identity"
        } else if has("AZURE_CLIENT_SECRET")
            || has("AZURE_CLIENT_CERTIFICATE_PATH")
            || has("AZURE_TENANT_ID")
        {
            "service-principal"
        } else {
            "managed-identity"
        };
        let path = crate::paths::config_path();
        let vars = seen.join(", ");
        Some(match self.identities.keys().next() {
            Some(name) => format!(
                "{vars} are set, but no identity is chosen for organization '{org}': add identity = \"{name}\" at the top of {}",
                path.display()
            ),
            None => format!(
                "{vars} are set, but no machine identity is configured to use them: add to {}: identity = \"ci\", then [identities.ci] with kind = \"{kind}\" (see docs/build-agents.md)",
                path.display()
            ),
        })
    }

    pub fn tenant_override(&self, org: &str) -> Option<&str> {
        self.org
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(org))
            .and_then(|(_, o)| o.tenant.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file_and_defaults() {
        let c: Config = toml::from_str(
            r#"
hosts = ["ado.corp.example:8443"]
store = "file"
auth = "basic"
client_id = "abc"
authority_host = "https://login.microsoftonline.us/"
proxy = "http://proxy.corp.example:8080"
http_timeout = 90
[org.Contoso]
tenant = "t1"
"#,
        )
        .unwrap();
        assert_eq!(c.hosts, vec!["ado.corp.example:8443"]);
        assert_eq!(c.store, StoreSetting::File);
        assert_eq!(c.auth, crate::answer::AuthSetting::Basic);
        assert_eq!(c.client_id(), "abc");
        assert_eq!(c.tenant_override("contoso"), Some("t1"));
        assert_eq!(c.proxy.as_deref(), Some("http://proxy.corp.example:8080"));
        assert_eq!(
            c.http_timeout(),
            std::time::Duration::from_secs(40),
            "clamped"
        );
        let d = Config::default();
        assert_eq!(d.http_timeout(), std::time::Duration::from_secs(30));
        assert_eq!(d.store, StoreSetting::Auto);
        assert_eq!(d.auth, crate::answer::AuthSetting::Auto);
        assert_eq!(d.client_id(), DEFAULT_CLIENT_ID);
    }

    #[test]
    fn the_client_reads_hosts_alone() {
        let dir = std::env::temp_dir().join(format!("azdo-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.toml");
        std::fs::write(&p, "store = \"file\"\nhosts = [\"a.example\", \"b.example:8443\"]\n[org.x]\ntenant = \"t\"\n").unwrap();
        assert_eq!(
            Config::load_hosts(&p).unwrap(),
            vec!["a.example", "b.example:8443"]
        );
        std::fs::write(&p, "hosts = \"a.example\"\n").unwrap();
        let e = Config::load_hosts(&p).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("hosts"), "{e}");
        std::fs::write(&p, "hosts = [\n").unwrap();
        assert!(Config::load_hosts(&p).is_err());
        assert!(
            Config::load_hosts(&dir.join("missing.toml"))
                .unwrap()
                .is_empty()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_file() {
        let dir = std::env::temp_dir().join(format!("azdo-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.toml");
        std::fs::write(&p, "stor = \"file\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("stor"), "{e}");
        assert!(Config::load(&dir.join("missing.toml")).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
