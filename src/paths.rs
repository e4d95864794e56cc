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

/// A path from the configuration file: a leading `~/` is the home directory, as in a shell.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(path),
    }
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

/// What is wrong with a directory that should be private to this user (the socket directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPrivate {
    /// Not a directory, or owned by someone else.
    NotOurs,
    /// Ours, but other users may enter or read it: its mode.
    OpenToOthers(u32),
}

/// Whether `dir` is a directory of ours that no one else can use; `Err` when it cannot be
/// inspected (it may not exist yet). The client's `doctor` and the daemon's start-up both judge
/// the socket directory by this.
pub fn check_private_dir(dir: &std::path::Path) -> std::io::Result<Result<(), NotPrivate>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Ok(if !meta.is_dir() || meta.uid() != uid {
        Err(NotPrivate::NotOurs)
    } else if meta.mode() & 0o077 != 0 {
        Err(NotPrivate::OpenToOthers(meta.mode() & 0o777))
    } else {
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_is_ours_and_closed_to_others() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        assert!(check_private_dir(&dir).is_err(), "missing");
        std::fs::create_dir(&dir).unwrap();
        let set = |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
        set(0o700).unwrap();
        assert_eq!(check_private_dir(&dir).unwrap(), Ok(()));
        set(0o711).unwrap();
        assert_eq!(
            check_private_dir(&dir).unwrap(),
            Err(NotPrivate::OpenToOthers(0o711))
        );
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(check_private_dir(&file).unwrap(), Err(NotPrivate::NotOurs));
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(check_private_dir(&link).unwrap(), Err(NotPrivate::NotOurs));
    }
}
