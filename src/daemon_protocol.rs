//! The client ↔ daemon exchange: versioned request and response messages, one of each per
//! connection, each one JSON object on one line.
//!
//! Only std and serde here: the client links this, and must stay free of tokio.

use crate::answer::{GitInstall, Scheme};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// The environment variables that configure machine identities, sent with each `get`
/// (`AZURE_AUTHORITY_HOST`: a machine identity's authority, which must be https).
pub const IDENTITY_VARS: [&str; 16] = [
    "AZURE_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "SYSTEM_OIDCREQUESTURI",
    "SYSTEM_ACCESSTOKEN",
    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
];

/// Bumped when a message changes incompatibly. A client and daemon of different *package*
/// versions never talk past the version check: the client replaces the daemon.
pub const PROTOCOL: u32 = 1;
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest message either side accepts.
pub const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub protocol: u32,
    pub version: String,
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A token for `org`.
    Get {
        org: String,
        /// The caller's machine-identity variables (azure-identity's and the CI systems'),
        /// so a daemon started elsewhere uses this job's identity.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        env: std::collections::BTreeMap<String, Secret>,
        /// git announced `capability[]=authtype` (it can take a Bearer answer).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        authtype: bool,
        /// The git asking (from `GIT_EXEC_PATH`), whose version decides Bearer or Basic.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        git: Option<GitInstall>,
    },
    /// git says Azure DevOps refused `token`.
    Erase {
        org: String,
        /// The host git talked to, where the daemon checks whether the token was the reason.
        #[serde(default)]
        host: String,
        token: Option<Secret>,
        #[serde(default)]
        wwwauth: Vec<String>,
    },
    /// Start a device-code sign-in for `org`.
    LoginStart {
        org: String,
        host: String,
        tenant: Option<String>,
        /// Challenges from Azure DevOps' 401, which name the tenant.
        #[serde(default)]
        wwwauth: Vec<String>,
        /// Sign in in a browser (loopback redirect) instead of with a device code.
        #[serde(default)]
        browser: bool,
        /// Seconds a browser sign-in may take (default 300).
        #[serde(default)]
        timeout_secs: Option<u64>,
        /// Connect through a legacy Azure DevOps OAuth app instead of Entra ID.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<AppLogin>,
    },
    /// The address the browser was redirected to, pasted by the person, for the legacy-app
    /// sign-in `flow`; answered like `LoginWait`.
    LoginRedirect {
        flow: String,
        /// Carries the authorization code.
        url: Secret,
    },
    /// Wait for the sign-in started with `flow` to finish.
    LoginWait {
        flow: String,
    },
    Logout {
        org: Option<String>,
    },
    Status,
    /// The daemon's own checks: secret store, reachability, each organization's token
    /// (machine identities' with the caller's variables, as for `Get`).
    Doctor {
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        env: std::collections::BTreeMap<String, Secret>,
        /// The git first on the user's `PATH`, to say which answer it gets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        git: Option<GitInstall>,
    },
    Ping,
    Shutdown,
}

/// A legacy Azure DevOps OAuth app (registered at app.vsaex.visualstudio.com) to connect
/// through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppLogin {
    pub app_id: String,
    pub client_secret: Secret,
    /// The app's registered callback URL, exactly.
    pub callback: String,
    /// Space-separated scopes, such as `vso.code_write`.
    pub scope: String,
    /// The person pastes the redirected address instead of the daemon listening for it.
    #[serde(default)]
    pub paste: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No account is connected to the organization (or its sign-in was revoked).
    NeedsLogin,
    /// Azure DevOps keeps refusing fresh tokens; the daemon is backing off.
    Denied,
    /// Entra ID or the network failed; trying again later may work.
    Unavailable,
    /// The request itself was wrong.
    BadRequest,
    /// A sign-in was declined, expired or abandoned.
    LoginFailed,
    /// A machine identity cannot work as configured; no person can fix it by signing in.
    Misconfigured,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Token {
        token: Secret,
        /// Unix seconds.
        expires_at: u64,
        /// How to hand it to this git.
        #[serde(default)]
        scheme: Scheme,
    },
    DeviceCode {
        flow: String,
        verification_uri: String,
        user_code: String,
        message: String,
        expires_in: u64,
    },
    /// Open `url` in a browser; the daemon listens for the redirect.
    BrowserSignIn {
        flow: String,
        url: String,
        expires_in: u64,
    },
    /// Open `url` to authorize a legacy Azure DevOps OAuth app. With `listening`, the daemon
    /// serves `callback` itself; otherwise the person pastes the address the browser ends on.
    AppSignIn {
        flow: String,
        url: String,
        callback: String,
        listening: bool,
        /// When listening: the certificate the callback serves, for the person to trust.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<String>,
        expires_in: u64,
    },
    LoggedIn {
        org: String,
        account: AccountView,
        store: String,
    },
    Status(StatusView),
    Doctor {
        checks: Vec<Check>,
    },
    Pong {
        version: String,
        pid: u32,
        store: String,
    },
    Done,
    /// The daemon is another version; it exits after sending this.
    VersionMismatch {
        daemon: String,
    },
    /// A request that could not be served. The client decides what to print from `error`,
    /// `retry_in` and `fix`, never from `message`'s text.
    Error {
        error: ErrorKind,
        /// What went wrong, for the person: one sentence, without what to do about it.
        message: String,
        /// Seconds until the daemon tries again by itself (a passing failure it backs off from).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in: Option<u64>,
        /// What the person can do, when the daemon knows better than the kind's default (for
        /// `needs_login`, signing in to the organization with the default client).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fix: Option<String>,
    },
}

impl Response {
    /// An error with neither a retry time nor a fix of its own.
    pub fn error(error: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            error,
            message: message.into(),
            retry_in: None,
            fix: None,
        }
    }
}

/// Who is signed in, for display (from the token's claims; never the token).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountView {
    pub name: Option<String>,
    pub upn: Option<String>,
    pub tenant: String,
    pub oid: Option<String>,
}

/// One `doctor` finding: what was checked, whether it passed, and the fix when it did not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub daemon_version: String,
    pub pid: u32,
    pub store: String,
    pub orgs: Vec<OrgStatus>,
    /// Machine identities (one per identity and set of job variables) held in memory now.
    #[serde(default)]
    pub machine_identities: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgStatus {
    pub org: String,
    pub account: AccountView,
    pub identity: String,
    pub connected_at: u64,
    /// Who connected it (the signed-in user).
    pub connected_by: Option<String>,
    /// Legacy Azure DevOps OAuth app: its App ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    pub access_token_expires_at: Option<u64>,
    pub last_refresh_at: Option<u64>,
    pub last_refresh_outcome: Option<String>,
    pub refresh_token_store: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("the daemon closed the connection without answering (is the socket another user's?)")]
    Closed,
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whether dotted version `a` is newer than `b` (numeric parts; anything else counts as 0).
pub fn is_newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a) > parts(b)
}

/// Writes one message as a JSON line.
pub fn write_message<T: Serialize>(mut out: impl Write, msg: &T) -> Result<(), IpcError> {
    let mut buf = serde_json::to_vec(msg).map_err(|e| IpcError::Malformed(e.to_string()))?;
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()?;
    Ok(())
}

/// Reads one JSON-line message, refusing more than [`MAX_MESSAGE`] bytes.
pub fn read_message<T: for<'de> Deserialize<'de>>(input: impl BufRead) -> Result<T, IpcError> {
    let mut buf = Vec::with_capacity(512);
    input
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    decode(&buf)
}

/// Decodes one line read by either side.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, IpcError> {
    if line.is_empty() {
        return Err(IpcError::Closed);
    }
    if line.len() > MAX_MESSAGE {
        return Err(IpcError::TooLarge);
    }
    // serde_json's own messages can quote a value (`invalid type: string "..."`), and a value
    // may be a token: keep only the category and position.
    serde_json::from_slice(line).map_err(|e| {
        IpcError::Malformed(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        assert!(is_newer("0.2.0", "0.1.9"));
        assert!(is_newer("0.10.0", "0.9.0"));
        assert!(!is_newer("0.1.0", "0.1.0"));
        assert!(!is_newer("0.0.0-old", "0.1.0"));
    }

    #[test]
    fn request_round_trip() {
        let env = RequestEnvelope {
            protocol: PROTOCOL,
            version: PACKAGE_VERSION.into(),
            request: Request::Get {
                org: "o".into(),
                env: [("SYSTEM_ACCESSTOKEN".to_string(), Secret::new("job-token"))].into(),
                authtype: true,
                git: None,
            },
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &env).unwrap();
        assert!(buf.ends_with(b"\n"));
        let back: RequestEnvelope = read_message(&buf[..]).unwrap();
        assert!(matches!(back.request, Request::Get { ref org, .. } if org == "o"));
        assert!(
            !format!("{back:?}").contains("job-token"),
            "Debug redacts the variables"
        );
    }

    #[test]
    fn malformed_and_oversized_are_refused() {
        assert!(matches!(
            read_message::<Response>(&b""[..]),
            Err(IpcError::Closed)
        ));
        assert!(matches!(
            read_message::<Response>(&b"{\"kind\":\"nope\"}\n"[..]),
            Err(IpcError::Malformed(_))
        ));
        let big = vec![b' '; MAX_MESSAGE + 10];
        assert!(matches!(
            read_message::<Response>(&big[..]),
            Err(IpcError::TooLarge)
        ));
    }

    #[test]
    fn decode_errors_do_not_echo_secrets() {
        let e = decode::<Response>(br#"{"kind":"token","token":5,"expires_at":"SECRETVALUE"}"#)
            .unwrap_err();
        assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
    }
}
