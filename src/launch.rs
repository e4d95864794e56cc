//! How the daemon is started, and which environment it may take its settings from.
//!
//! - **On demand** (the client starts it, or a person runs it by hand): the daemon is shared by
//!   every later caller, so nothing in the environment of whoever started it may decide where
//!   secrets go or whose identity it uses. The client starts it with [`PASSED_TO_DAEMON`]
//!   only, and the daemon itself forgets [`SERVICE_ONLY`] and the identity variables at start.
//!   Authority, proxy and trust roots then come from the configuration file; a machine
//!   identity from each request's own variables.
//! - **As a service** (`git-credential-azdo-daemon --service`: systemd, launchd, a Kubernetes
//!   sidecar): its environment is the service definition's, so it is honoured, and a request
//!   that carries no identity variables is served with the service's own.
//!
//! Std only: the client links this.

use crate::secret::Secret;
use std::collections::BTreeMap;

/// The daemon's argument for running as a service.
pub const SERVICE_FLAG: &str = "--service";

/// The variables the client hands to a daemon it starts: where the user's files are, the
/// session bus (for the keyring), the locale, the log level, and the debug builds' test knobs.
pub const PASSED_TO_DAEMON: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "GIT_CREDENTIAL_AZDO_LOG",
    "GIT_CREDENTIAL_AZDO_ARC_TOKENS_DIR",
    "GIT_CREDENTIAL_AZDO_STOP_AT",
];

/// What a daemon that cannot start writes on stdout, where its starter waits for `ready`,
/// before the reason.
pub const FAILED_PREFIX: &str = "failed: ";

/// Variables that decide where the daemon sends secrets or whom it trusts: honoured only from
/// a service's own environment (the identity variables, [`crate::daemon_protocol::IDENTITY_VARS`], too).
pub const SERVICE_ONLY: &[&str] = &[
    "AZURE_AUTHORITY_HOST",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "GIT_CREDENTIAL_AZDO_CONFIG",
];

/// Every variable an on-demand daemon must not take from its environment.
pub fn spawner_only() -> impl Iterator<Item = &'static str> {
    SERVICE_ONLY
        .iter()
        .chain(crate::daemon_protocol::IDENTITY_VARS.iter())
        .copied()
}

/// This process's identity variables: what the client sends with a request, and a service's
/// own, for requests that carry none.
pub fn identity_variables() -> BTreeMap<String, Secret> {
    crate::daemon_protocol::IDENTITY_VARS
        .iter()
        .filter_map(|k| {
            let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
            Some((k.to_string(), Secret::new(v)))
        })
        .collect()
}
