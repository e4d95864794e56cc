//! Where things live on disk: the socket directory, data, state and configuration files.
//!
//! Follows the XDG base directory variables on every Unix (so tests and containers can move
//! everything with environment variables), with the usual `~/.local/...` defaults. As the XDG
//! specification says, a relative value is ignored: the client (in git's working directory) and
//! the daemon (in `/`) would resolve it to different places.

use std::env;
use std::path::PathBuf;

const APP: &str = "git-credential-azdo";

fn home() -> PathBuf {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `$var` when it is an absolute path; relative or empty values are ignored.
fn absolute(var: &str) -> Option<PathBuf> {
    env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn xdg(var: &str, fallback: &[&str]) -> PathBuf {
    absolute(var).unwrap_or_else(|| fallback.iter().fold(home(), |p, c| p.join(c)))
}

/// The daemon's socket directory (created 0700 by the daemon).
pub fn runtime_dir() -> PathBuf {
    match absolute("XDG_RUNTIME_DIR") {
        Some(v) => v.join(APP),
        None => xdg("XDG_CACHE_HOME", &[".cache"]).join(APP).join("run"),
    }
}

pub fn socket_path() -> PathBuf {
    runtime_dir().join("daemon.sock")
}

pub fn pid_path() -> PathBuf {
    runtime_dir().join("daemon.pid")
}

/// Account records and, with `store = "file"`, the refresh-token file.
pub fn data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", &[".local", "share"]).join(APP)
}

/// The daemon's log.
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", &[".local", "state"]).join(APP)
}

pub fn log_path() -> PathBuf {
    state_dir().join("daemon.log")
}

/// `$GIT_CREDENTIAL_AZDO_CONFIG`, else `$XDG_CONFIG_HOME/git-credential-azdo/config.toml`.
pub fn config_path() -> PathBuf {
    match env::var_os("GIT_CREDENTIAL_AZDO_CONFIG").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => xdg("XDG_CONFIG_HOME", &[".config"])
            .join(APP)
            .join("config.toml"),
    }
}
