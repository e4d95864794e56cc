//! The three gits the tests run, each found (or unpacked) once and checked for its version:
//!
//! - [`debian`]: Debian's 2.39 at `/usr/bin/git`, which predates `capability[]=authtype` and
//!   so always gets the Basic answer;
//! - [`machine`]: the 2.47 first on `PATH` (`/usr/local/bin/git`), which announces
//!   `authtype` but sends no credential on the 4-byte probe POST before a large request body
//!   when the credential came as `authtype`/`credential` (fixed in 2.54.0, ed0f7a62f7);
//! - [`newest`]: git 2.55.0 from the project's `../shared/git/` tarball, unpacked under
//!   `target/tmp/` on first use, which sends Bearer on the probe too.
//!
//! A test checks for the one it needs with [`super::requires::require`] first, which skips it
//! (or, in CI, fails it) when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One git installation.
#[derive(Debug, Clone)]
pub struct Git {
    /// The `git` binary to run.
    pub bin: PathBuf,
    /// Its `--exec-path` (where `git-remote-https` lives), which git exports to the helpers it
    /// starts as `GIT_EXEC_PATH`.
    pub exec_path: PathBuf,
    /// `(major, minor, patch)` from `git --version`.
    pub version: (u32, u32, u32),
}

impl Git {
    /// The path of the binary, for [`super::harness::World::git_with`].
    pub fn path(&self) -> &str {
        self.bin.to_str().expect("a UTF-8 path")
    }

    /// Whether it announces `capability[]=authtype` (2.46 and newer).
    pub fn announces_authtype(&self) -> bool {
        self.version >= (2, 46, 0)
    }

    /// Whether it sends an `authtype` credential on the probe POST (2.54 and newer).
    pub fn sends_bearer_on_the_probe(&self) -> bool {
        self.version >= (2, 54, 0)
    }

    fn at(bin: PathBuf) -> Result<Git, String> {
        let run = |arg: &str| -> Result<String, String> {
            let out = Command::new(&bin)
                .arg(arg)
                .env_remove("GIT_EXEC_PATH")
                .output()
                .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            if !out.status.success() {
                return Err(format!("{} {arg} failed: {out:?}", bin.display()));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let text = run("--version")?;
        let version = parse_version(&text)
            .ok_or_else(|| format!("{}: cannot read a version in {text:?}", bin.display()))?;
        let exec_path = PathBuf::from(run("--exec-path")?);
        Ok(Git {
            bin,
            exec_path,
            version,
        })
    }
}

/// `git version 2.47.3` → `(2, 47, 3)`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.strip_prefix("git version ")?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next()?.parse().ok();
    Some((next()?, next()?, next().unwrap_or(0)))
}

/// The git at `bin`, if `fits` its version.
fn installed(bin: &str, fits: fn(&Git) -> bool, needed: &str) -> Result<Git, String> {
    let g = Git::at(bin.into())?;
    match fits(&g) {
        true => Ok(g),
        false => Err(format!("{bin} is {:?}: {needed} is needed", g.version)),
    }
}

/// Debian's git 2.39 (`/usr/bin/git`): no `authtype`, so Basic.
pub fn try_debian() -> Result<Git, String> {
    static GIT: OnceLock<Result<Git, String>> = OnceLock::new();
    let fits = |g: &Git| !g.announces_authtype();
    (GIT.get_or_init(|| installed("/usr/bin/git", fits, "a git older than 2.46"))).clone()
}

/// The machine's git first on `PATH` (`/usr/local/bin/git`, 2.47): announces `authtype`, but
/// drops an `authtype` credential on the probe.
pub fn try_machine() -> Result<Git, String> {
    static GIT: OnceLock<Result<Git, String>> = OnceLock::new();
    let fits = |g: &Git| g.announces_authtype() && !g.sends_bearer_on_the_probe();
    (GIT.get_or_init(|| installed("/usr/local/bin/git", fits, "a git from 2.46 to 2.53"))).clone()
}

/// git 2.55.0, unpacked from the project's `../shared/git/` tarball (or `$AZDO_TEST_GIT_TARBALL`)
/// into `target/tmp/`, or `$AZDO_TEST_GIT_NEWEST` (a `git` binary of 2.54 or newer).
pub fn try_newest() -> Result<Git, String> {
    static GIT: OnceLock<Result<Git, String>> = OnceLock::new();
    (GIT.get_or_init(|| {
        let bin = match std::env::var_os("AZDO_TEST_GIT_NEWEST").filter(|v| !v.is_empty()) {
            Some(bin) => PathBuf::from(bin),
            None => unpacked()?,
        };
        let g = Git::at(bin)?;
        if !g.sends_bearer_on_the_probe() {
            return Err(format!(
                "{} is {:?}, older than 2.54",
                g.bin.display(),
                g.version
            ));
        }
        Ok(g)
    }))
    .clone()
}

/// [`try_debian`], for a test that has checked [`super::requires::Piece::GitDebian`].
pub fn debian() -> Git {
    try_debian().unwrap_or_else(|e| panic!("Debian's git: {e}"))
}

/// [`try_machine`], for a test that has checked [`super::requires::Piece::GitMachine`].
pub fn machine() -> Git {
    try_machine().unwrap_or_else(|e| panic!("the machine's git: {e}"))
}

/// [`try_newest`], for a test that has checked [`super::requires::Piece::GitNewest`].
pub fn newest() -> Git {
    try_newest().unwrap_or_else(|e| panic!("git 2.54 or newer: {e}"))
}

/// The newest git at hand that announces `capability[]=authtype`, else the one on `PATH`: what
/// a `get` "from a git that can take Bearer" is started by when no git 2.54+ is here.
pub fn newest_at_hand() -> Git {
    try_newest()
        .or_else(|_| try_machine())
        .or_else(|_| Git::at("git".into()))
        .unwrap_or_else(|e| panic!("no git at all: {e}"))
}

const TARBALL: &str = "git-2.55.0-debian12-x86_64.tar.gz";
const UNPACKED: &str = "git-2.55.0";

/// Where the tarball is: `$AZDO_TEST_GIT_TARBALL`, else `../shared/git/` beside the checkout,
/// else `/work/shared/git/`.
fn tarball() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("AZDO_TEST_GIT_TARBALL").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        manifest.join("../shared/git").join(TARBALL),
        PathBuf::from("/work/shared/git").join(TARBALL),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "no {TARBALL} in {}; set AZDO_TEST_GIT_TARBALL to it, or AZDO_TEST_GIT_NEWEST to a git 2.54+ binary",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    })
}

/// The unpacked `bin/git`, unpacking it first if no test binary did yet. Each process unpacks
/// into its own directory and renames it into place, so concurrent test binaries never see a
/// half-unpacked tree.
fn unpacked() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let done = root.join(UNPACKED);
    let bin = done.join(UNPACKED).join("bin/git");
    if bin.is_file() {
        return Ok(bin);
    }
    let tarball = tarball()?;
    let mine = root.join(format!("{UNPACKED}.unpacking.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&mine);
    std::fs::create_dir_all(&mine).map_err(|e| format!("cannot create {}: {e}", mine.display()))?;
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&mine)
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tar -xzf {}: {}",
            tarball.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if std::fs::rename(&mine, &done).is_err() {
        // Another test binary got there first.
        let _ = std::fs::remove_dir_all(&mine);
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} has no {UNPACKED}/bin/git", tarball.display()))
    }
}
