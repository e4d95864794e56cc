//! Which answer a git gets: the Entra token as Bearer (`authtype`/`credential`) or as a Basic
//! password, and how the helper knows which git is asking.
//!
//! For a request body larger than `http.postBuffer` (a push over 1 MiB, a fetch with a large
//! negotiation) git first sends a 4-byte probe POST. Before git 2.54.0 (commit ed0f7a62f7) that
//! probe carries no `Authorization` header when the credential came as `authtype`/`credential`;
//! Azure DevOps answers it 401 and the transfer fails. A Basic credential sits on the curl
//! handle and goes with the probe. So Bearer only goes to a git known to be 2.54 or newer.
//!
//! git exports its exec path (where `git-remote-https` lives) to the helpers it starts as
//! `GIT_EXEC_PATH`; the client sends it with one `stat` of the `git` there ([`GitInstall`]),
//! and the daemon learns that installation's version once ([`GitVersion`]). Std only: the
//! client links this.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The user's choice (`auth` in the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSetting {
    /// Bearer to a git known to send it on the probe (2.54+), Basic to every other.
    #[default]
    Auto,
    /// Always the token as a Basic password.
    Basic,
    /// Bearer to every git that announces `capability[]=authtype`, whatever its version (large
    /// pushes and fetches then fail with git 2.46 to 2.53).
    Bearer,
}

impl fmt::Display for AuthSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthSetting::Auto => "auto",
            AuthSetting::Basic => "basic",
            AuthSetting::Bearer => "bearer",
        })
    }
}

/// How the token is handed to git.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `username` + `password` (+ `password_expiry_utc`): every git takes it.
    #[default]
    Basic,
    /// `authtype=Bearer` + `credential` (+ `ephemeral`, `password_expiry_utc`).
    Bearer,
}

/// The first git release that sends an `authtype` credential on the probe POST.
pub const BEARER_ON_PROBE: (u32, u32, u32) = (2, 54, 0);

/// A git version, as `git --version` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// A release candidate (`2.54.0.rc1`, `2.54.0-rc1`): older than the release it leads to.
    pub candidate: bool,
}

impl GitVersion {
    /// Reads `git version 2.47.3`, `git version 2.39.5 (Apple Git-154)`,
    /// `git version 2.47.1.windows.1`, `git version 2.54.0.rc2`, `git version 2.53.0.52.gabc`.
    pub fn parse(text: &str) -> Option<GitVersion> {
        let v = text.trim().strip_prefix("git version ")?;
        let v = v.split_whitespace().next()?;
        let mut parts = v.split(['.', '-']);
        let mut number = || -> Option<u32> { parts.next()?.parse().ok() };
        let (major, minor) = (number()?, number()?);
        let patch = number().unwrap_or(0);
        let candidate = v
            .split(['.', '-'])
            .nth(3)
            .is_some_and(|p| p.starts_with("rc"));
        Some(GitVersion {
            major,
            minor,
            patch,
            candidate,
        })
    }

    /// Whether this git sends a Bearer credential on the probe POST too (2.54.0 and newer; a
    /// release candidate of 2.54.0 is not trusted to).
    pub fn sends_bearer_on_the_probe(&self) -> bool {
        let v = (self.major, self.minor, self.patch);
        v > BEARER_ON_PROBE || (v == BEARER_ON_PROBE && !self.candidate)
    }
}

impl fmt::Display for GitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if self.candidate {
            f.write_str(" (release candidate)")?;
        }
        Ok(())
    }
}

/// The answer for one `get`. `announced`: git sent `capability[]=authtype` (without it git
/// cannot take Bearer at all). `version`: the asking git's, when known.
pub fn choose(setting: AuthSetting, announced: bool, version: Option<&GitVersion>) -> Scheme {
    match setting {
        _ if !announced => Scheme::Basic,
        AuthSetting::Basic => Scheme::Basic,
        AuthSetting::Bearer => Scheme::Bearer,
        AuthSetting::Auto if version.is_some_and(GitVersion::sends_bearer_on_the_probe) => {
            Scheme::Bearer
        }
        AuthSetting::Auto => Scheme::Basic,
    }
}

/// One git installation, as the client sees it: its exec path and the identity of the `git`
/// binary there, so the daemon can tell an upgraded (or another machine's) git from the one
/// it ran, and never answer from a stale version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GitInstall {
    /// `GIT_EXEC_PATH`, e.g. `/usr/lib/git-core`.
    pub exec_path: String,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

/// The variable git exports to the helpers it starts.
pub const EXEC_PATH_VAR: &str = "GIT_EXEC_PATH";

impl GitInstall {
    /// The git that started this process, from `GIT_EXEC_PATH`: one `stat`, no process.
    pub fn of_caller() -> Option<GitInstall> {
        let exec_path = std::env::var(EXEC_PATH_VAR).ok()?;
        GitInstall::at(&exec_path)
    }

    /// The installation whose exec path is `exec_path` (`None` without a `git` there).
    pub fn at(exec_path: &str) -> Option<GitInstall> {
        use std::os::unix::fs::MetadataExt;
        if exec_path.is_empty() || !exec_path.starts_with('/') {
            return None;
        }
        let m = std::fs::metadata(std::path::Path::new(exec_path).join("git")).ok()?;
        m.is_file().then(|| GitInstall {
            exec_path: exec_path.to_string(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }

    /// The `git` binary of this installation.
    pub fn git(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.exec_path).join("git")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> GitVersion {
        GitVersion::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn versions_as_gits_print_them() {
        assert_eq!(v("git version 2.47.3\n").to_string(), "2.47.3");
        assert_eq!(
            v("git version 2.39.5 (Apple Git-154)").to_string(),
            "2.39.5"
        );
        assert_eq!(v("git version 2.47.1.windows.1").to_string(), "2.47.1");
        assert!(v("git version 2.54.0.rc2").candidate);
        assert!(v("git version 2.54.0-rc0").candidate);
        assert!(!v("git version 2.53.0.52.gabcdef").candidate);
        assert_eq!(v("git version 3.0").to_string(), "3.0.0");
        for bad in ["", "git version", "version 2.47.3", "git version x.y"] {
            assert_eq!(GitVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bearer_on_the_probe_from_2_54_0() {
        for (text, sends) in [
            ("git version 2.39.5", false),
            ("git version 2.46.0", false),
            ("git version 2.47.3", false),
            ("git version 2.53.9", false),
            ("git version 2.53.0.52.gabcdef", false),
            ("git version 2.54.0.rc2", false),
            ("git version 2.54.0", true),
            ("git version 2.54.0.7.gabcdef", true),
            ("git version 2.55.0-rc1", true),
            ("git version 2.55.0", true),
            ("git version 3.0.0", true),
        ] {
            assert_eq!(v(text).sends_bearer_on_the_probe(), sends, "{text}");
        }
    }

    #[test]
    fn the_choice() {
        use AuthSetting::{Auto, Basic as SetBasic, Bearer as SetBearer};
        use Scheme::{Basic, Bearer};
        let (old, new) = (v("git version 2.47.3"), v("git version 2.55.0"));
        for (setting, announced, version, answer) in [
            (Auto, true, Some(&new), Bearer),
            (Auto, true, Some(&old), Basic),
            // Unknown git: never Bearer, it might drop it.
            (Auto, true, None, Basic),
            // Without the capability git cannot take Bearer, whatever the setting.
            (Auto, false, Some(&new), Basic),
            (SetBearer, false, Some(&new), Basic),
            (SetBearer, true, Some(&old), Bearer),
            (SetBearer, true, None, Bearer),
            (SetBasic, true, Some(&new), Basic),
        ] {
            assert_eq!(
                choose(setting, announced, version),
                answer,
                "{setting} {announced} {version:?}"
            );
        }
    }

    #[test]
    fn an_installation_is_its_git_binary() {
        let dir = std::env::temp_dir().join(format!("azdo-install-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exec = dir.to_str().unwrap().to_string();
        assert_eq!(GitInstall::at(&exec), None, "no git there");
        assert_eq!(GitInstall::at("relative/path"), None);
        std::fs::write(dir.join("git"), "v1").unwrap();
        let first = GitInstall::at(&exec).unwrap();
        assert_eq!(first.git(), dir.join("git"));
        // Replaced (an upgrade): another file, so another installation.
        std::fs::remove_file(dir.join("git")).unwrap();
        std::fs::write(dir.join("git"), "v2 longer").unwrap();
        assert_ne!(GitInstall::at(&exec).unwrap(), first);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
