//! The gits that ask: each installation's version, learned once by running its own
//! `git --version`, and so the answer (Bearer or Basic) each `get` gets
//! ([`crate::answer::choose`]).
//!
//! The client names the asking git by its exec path and the identity of the `git` binary there
//! ([`GitInstall`]); the daemon runs that binary only when it sees the same file itself (a
//! client in another container or mount namespace may name a path the daemon sees differently),
//! and remembers the answer per file, so an upgraded git is asked again. An installation it
//! cannot run counts as unknown, and an unknown git gets Basic.

use crate::answer::{self, AuthSetting, GitInstall, GitVersion, Scheme};
use crate::daemon_protocol::Check;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long `git --version` may take.
const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// Installations remembered at once; past it the memory starts over.
const MAX_KNOWN: usize = 64;

type Known = Arc<OnceCell<Option<GitVersion>>>;

pub struct Gits {
    setting: AuthSetting,
    /// Each installation's version (`None`: could not be learned), one probe each: concurrent
    /// first `get`s of a new git share it.
    known: Mutex<HashMap<GitInstall, Known>>,
}

impl Gits {
    pub fn new(setting: AuthSetting) -> Gits {
        Gits {
            setting,
            known: Mutex::default(),
        }
    }

    /// The answer for a `get` from `git`, which did (`announced`) or did not announce
    /// `capability[]=authtype`. Runs the git only the first time it asks.
    pub async fn scheme(&self, announced: bool, git: Option<&GitInstall>) -> Scheme {
        let version = match (self.setting, announced, git) {
            // The version only matters for `auto` and a git that can take Bearer.
            (AuthSetting::Auto, true, Some(git)) => self.version(git).await,
            _ => None,
        };
        answer::choose(self.setting, announced, version.as_ref())
    }

    /// The version of `git`, learned on first use.
    pub async fn version(&self, git: &GitInstall) -> Option<GitVersion> {
        let cell = {
            let mut known = self.known.lock().unwrap();
            if known.len() >= MAX_KNOWN && !known.contains_key(git) {
                known.clear();
            }
            known.entry(git.clone()).or_default().clone()
        };
        *cell.get_or_init(|| probe(git.clone())).await
    }

    /// `doctor`'s finding: the setting, the answer the user's git gets and why, and the other
    /// gits seen so far. Fails where the setting breaks large transfers for that git.
    pub async fn doctor(&self, git: Option<&GitInstall>) -> Check {
        const NAME: &str = "answer to git";
        let seen = self.seen(git);
        let Some(git) = git else {
            return Check::pass(
                NAME,
                format!(
                    "auth = {}: git's exec path is unknown here, so no git version to judge{seen}",
                    self.setting
                ),
            );
        };
        let version = self.version(git).await;
        let scheme = answer::choose(self.setting, true, version.as_ref());
        let which = match &version {
            Some(v) => format!("git {v} ({})", git.exec_path),
            None => format!("the git in {} (its version is unknown)", git.exec_path),
        };
        let takes = version.is_some_and(|v| v.sends_bearer_on_the_probe());
        let why = match (self.setting, scheme, takes) {
            (AuthSetting::Basic, _, _) => "the token always goes as a Basic password",
            (_, Scheme::Bearer, true) => {
                "it sends Bearer on the probe before large pushes and fetches too (git 2.54+)"
            }
            (_, Scheme::Bearer, false) if version.is_some() => {
                "it sends no credential on the probe before a request body over http.postBuffer, so large pushes and fetches fail with HTTP 401"
            }
            (_, Scheme::Bearer, false) => {
                "if it is older than 2.54, large pushes and fetches fail with HTTP 401 (it sends no credential on the probe before them)"
            }
            (_, Scheme::Basic, _) => {
                "Bearer only goes to git 2.54 or newer, which sends it on the probe before a large push or fetch too; Azure DevOps takes the same token as a Basic password"
            }
        };
        let detail = format!(
            "auth = {}: {which} gets {scheme:?}: {why}{seen}",
            self.setting
        );
        if scheme == Scheme::Bearer && !takes {
            Check::fail(
                NAME,
                detail,
                format!(
                    "set auth = \"auto\" in {} (then git-credential-azdo stop), or use git 2.54 or newer",
                    crate::paths::config_path().display()
                ),
            )
        } else {
            Check::pass(NAME, detail)
        }
    }

    /// `; also seen: git 2.55.0 (/opt/git/libexec/git-core) gets Bearer, …` for the gits other
    /// than `except` whose version is known.
    fn seen(&self, except: Option<&GitInstall>) -> String {
        let known = self.known.lock().unwrap();
        let mut others: Vec<String> = known
            .iter()
            .filter(|(g, _)| Some(*g) != except)
            .filter_map(|(g, cell)| {
                let v = (*cell.get()?)?;
                let scheme = answer::choose(self.setting, true, Some(&v));
                Some(format!("git {v} ({}) gets {scheme:?}", g.exec_path))
            })
            .collect();
        others.sort();
        match others.is_empty() {
            true => String::new(),
            false => format!("; also seen: {}", others.join(", ")),
        }
    }
}

/// Runs `<exec path>/git --version` with an empty environment, if the daemon sees the same
/// file the client saw.
async fn probe(git: GitInstall) -> Option<GitVersion> {
    let here = GitInstall::at(&git.exec_path);
    if here.as_ref() != Some(&git) {
        tracing::info!(exec_path = %git.exec_path, "the asking git is not the file the daemon sees there; answering Basic");
        return None;
    }
    let run = tokio::process::Command::new(git.git())
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let version = match tokio::time::timeout(PROBE_LIMIT, run).await {
        Ok(Ok(out)) if out.status.success() => {
            GitVersion::parse(&String::from_utf8_lossy(&out.stdout))
        }
        Ok(Ok(out)) => {
            tracing::warn!(exec_path = %git.exec_path, status = %out.status, "git --version failed");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(exec_path = %git.exec_path, error = %e, "cannot run git --version");
            None
        }
        Err(_) => {
            tracing::warn!(exec_path = %git.exec_path, "git --version did not finish in time");
            None
        }
    };
    match &version {
        Some(v) => {
            tracing::info!(exec_path = %git.exec_path, version = %v, bearer = v.sends_bearer_on_the_probe(), "learned a git's version")
        }
        None => tracing::info!(exec_path = %git.exec_path, "unknown git version; answering Basic"),
    }
    version
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An exec path whose `git` is a script printing `version` and counting its runs.
    ///
    /// Returned once it can be run: while another test of this process forks, the child holds
    /// the script's write descriptor until it execs, and running the script meanwhile fails
    /// with ETXTBSY ("text file busy"), which would read as an unknown git.
    fn fake_git(dir: &std::path::Path, version: &str) -> GitInstall {
        std::fs::create_dir_all(dir).unwrap();
        let script = format!(
            "#!/bin/sh\n[ -n \"$READY\" ] && exit 0\necho run >> {}/runs\necho 'git version {version}'\n",
            dir.display()
        );
        let path = dir.join("git");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ran =
            (0..500).any(
                |_| match std::process::Command::new(&path).env("READY", "1").status() {
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        false
                    }
                    other => other.unwrap().success(),
                },
            );
        assert!(ran, "the fake git at {} never ran", path.display());
        GitInstall::at(dir.to_str().unwrap()).unwrap()
    }

    fn runs(dir: &std::path::Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[tokio::test]
    async fn each_git_is_run_once_and_answered_by_its_version() {
        let root = tempfile::tempdir().unwrap();
        let (old_dir, new_dir) = (root.path().join("old"), root.path().join("new"));
        let (old, new) = (fake_git(&old_dir, "2.47.3"), fake_git(&new_dir, "2.55.0"));
        let gits = Gits::new(AuthSetting::Auto);
        for _ in 0..3 {
            assert_eq!(gits.scheme(true, Some(&old)).await, Scheme::Basic);
            assert_eq!(gits.scheme(true, Some(&new)).await, Scheme::Bearer);
        }
        assert_eq!((runs(&old_dir), runs(&new_dir)), (1, 1));
        // No capability, or no git known: Basic, and nothing run.
        assert_eq!(gits.scheme(false, Some(&new)).await, Scheme::Basic);
        assert_eq!(gits.scheme(true, None).await, Scheme::Basic);
        assert_eq!(runs(&new_dir), 1);
        // Upgraded in place: another file, asked again.
        std::fs::remove_file(old_dir.join("git")).unwrap();
        let upgraded = fake_git(&old_dir, "2.54.0");
        assert_ne!(upgraded, old);
        assert_eq!(gits.scheme(true, Some(&upgraded)).await, Scheme::Bearer);
        assert_eq!(runs(&old_dir), 2);
    }

    #[tokio::test]
    async fn a_git_the_daemon_sees_differently_is_not_run() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("g");
        let mut seen_elsewhere = fake_git(&dir, "2.55.0");
        seen_elsewhere.ino += 1;
        let gits = Gits::new(AuthSetting::Auto);
        assert_eq!(
            gits.scheme(true, Some(&seen_elsewhere)).await,
            Scheme::Basic
        );
        assert_eq!(runs(&dir), 0);
    }

    #[tokio::test]
    async fn the_setting_wins_and_bearer_is_reported_when_it_breaks_large_pushes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("old");
        let old = fake_git(&dir, "2.47.3");
        let basic = Gits::new(AuthSetting::Basic);
        let bearer = Gits::new(AuthSetting::Bearer);
        assert_eq!(basic.scheme(true, Some(&old)).await, Scheme::Basic);
        assert_eq!(bearer.scheme(true, Some(&old)).await, Scheme::Bearer);
        assert_eq!(runs(&dir), 0, "no version needed");
        let check = bearer.doctor(Some(&old)).await;
        assert!(!check.ok && check.detail.contains("2.47.3"), "{check:?}");
        assert!(check.fix.unwrap().contains("auth = \"auto\""));
        let check = Gits::new(AuthSetting::Auto).doctor(Some(&old)).await;
        assert!(check.ok && check.detail.contains("gets Basic"), "{check:?}");
    }

    #[tokio::test]
    async fn memory_stays_bounded() {
        let root = tempfile::tempdir().unwrap();
        let gits = Gits::new(AuthSetting::Auto);
        for i in 0..(MAX_KNOWN * 2) {
            let g = fake_git(&root.path().join(i.to_string()), "2.55.0");
            assert_eq!(gits.scheme(true, Some(&g)).await, Scheme::Bearer);
            assert!(gits.known.lock().unwrap().len() <= MAX_KNOWN);
        }
    }
}
