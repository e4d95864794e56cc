//! What a test needs beyond the Rust toolchain and a git, checked in one place.
//!
//! A test asks for its pieces first: `if !require(&[Piece::Zsh], "zsh parses the completion
//! script") { return; }`. When one is missing, it writes one line to the terminal (past the
//! test harness's capture) saying what it did not check and what to install, records the skip
//! for the run's summary (`tests/zz_skipped.rs`, and `.ci/run`), and the test passes without
//! asserting. With `AZDO_TEST_REQUIRE_ALL=1`, which `.ci/run` sets, a missing piece fails the
//! test instead. `AZDO_TEST_PRETEND_MISSING=zsh,root,…` counts pieces as missing, to test this.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Something a test runs that a machine with only Rust and git may not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Piece {
    /// A Secret Service to run: D-Bus's `dbus-run-session` and `gnome-keyring-daemon`.
    SecretService,
    Zsh,
    Fish,
    Man,
    SystemdAnalyze,
    Dpkg,
    /// python3 with the `kubernetes-validate` module.
    KubernetesValidate,
    Python3,
    Curl,
    Openssl,
    Strace,
    /// `script(1)`, for a real terminal.
    Script,
    /// Root: `setpriv` to another uid, `mount` a tmpfs, `chown`.
    Root,
    /// Debian's git 2.39 at `/usr/bin/git` (no `authtype`).
    GitDebian,
    /// A git 2.46–2.53 first on `PATH` (`/usr/local/bin/git`).
    GitMachine,
    /// git 2.54 or newer (2.55.0 from `../shared/git/`).
    GitNewest,
}

impl Piece {
    pub const ALL: [Piece; 16] = [
        Piece::SecretService,
        Piece::Zsh,
        Piece::Fish,
        Piece::Man,
        Piece::SystemdAnalyze,
        Piece::Dpkg,
        Piece::KubernetesValidate,
        Piece::Python3,
        Piece::Curl,
        Piece::Openssl,
        Piece::Strace,
        Piece::Script,
        Piece::Root,
        Piece::GitDebian,
        Piece::GitMachine,
        Piece::GitNewest,
    ];

    /// The name `AZDO_TEST_PRETEND_MISSING` and the messages use.
    pub fn name(self) -> &'static str {
        match self {
            Piece::SecretService => "secret-service",
            Piece::Zsh => "zsh",
            Piece::Fish => "fish",
            Piece::Man => "man",
            Piece::SystemdAnalyze => "systemd-analyze",
            Piece::Dpkg => "dpkg",
            Piece::KubernetesValidate => "kubernetes-validate",
            Piece::Python3 => "python3",
            Piece::Curl => "curl",
            Piece::Openssl => "openssl",
            Piece::Strace => "strace",
            Piece::Script => "script",
            Piece::Root => "root",
            Piece::GitDebian => "git-2.39",
            Piece::GitMachine => "git-2.47",
            Piece::GitNewest => "git-2.55",
        }
    }

    /// What to do to have it.
    pub fn install(self) -> &'static str {
        match self {
            Piece::SecretService => "apt-get install dbus dbus-user-session gnome-keyring",
            Piece::Zsh => "apt-get install zsh",
            Piece::Fish => "apt-get install fish",
            Piece::Man => "apt-get install man-db groff-base",
            Piece::SystemdAnalyze => "apt-get install systemd",
            Piece::Dpkg => "apt-get install dpkg binutils (and run as root)",
            Piece::KubernetesValidate => "python3 -m pip install kubernetes-validate",
            Piece::Python3 => "apt-get install python3",
            Piece::Curl => "apt-get install curl",
            Piece::Openssl => "apt-get install openssl",
            Piece::Strace => "apt-get install strace",
            Piece::Script => "apt-get install bsdutils",
            Piece::Root => {
                "run the tests as root on a machine you can spare (apt-get install util-linux)"
            }
            Piece::GitDebian => "apt-get install git (Debian 12's 2.39 at /usr/bin/git)",
            Piece::GitMachine => "a git from 2.46 to 2.53 at /usr/local/bin/git",
            Piece::GitNewest => {
                "put git-2.55.0-debian12-x86_64.tar.gz in ../shared/git/ (or set AZDO_TEST_GIT_TARBALL)"
            }
        }
    }

    /// Whether this machine has it (asked once per process).
    pub fn present(self) -> bool {
        if pretended_missing().contains(&self) {
            return false;
        }
        static FOUND: OnceLock<Vec<(Piece, bool)>> = OnceLock::new();
        let found = FOUND.get_or_init(|| Piece::ALL.iter().map(|p| (*p, p.probe())).collect());
        found.iter().any(|(p, ok)| *p == self && *ok)
    }

    fn probe(self) -> bool {
        let runs = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match self {
            Piece::SecretService => {
                runs("dbus-run-session", &["--version"])
                    && runs("gnome-keyring-daemon", &["--version"])
            }
            Piece::Zsh => runs("zsh", &["-c", "true"]),
            Piece::Fish => runs("fish", &["--version"]),
            Piece::Man => runs("man", &["--version"]),
            Piece::SystemdAnalyze => runs("systemd-analyze", &["--version"]),
            Piece::Dpkg => {
                runs("dpkg-deb", &["--version"]) && runs("strip", &["--version"]) && is_root()
            }
            Piece::KubernetesValidate => runs("python3", &["-c", "import kubernetes_validate"]),
            Piece::Python3 => runs("python3", &["--version"]),
            Piece::Curl => runs("curl", &["--version"]),
            Piece::Openssl => runs("openssl", &["version"]),
            Piece::Strace => runs("strace", &["-V"]),
            Piece::Script => runs("script", &["--version"]),
            Piece::Root => is_root() && runs("setpriv", &["--version"]),
            Piece::GitDebian => super::gits::try_debian().is_ok(),
            Piece::GitMachine => super::gits::try_machine().is_ok(),
            Piece::GitNewest => super::gits::try_newest().is_ok(),
        }
    }
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn pretended_missing() -> Vec<Piece> {
    let names = std::env::var("AZDO_TEST_PRETEND_MISSING").unwrap_or_default();
    Piece::ALL
        .into_iter()
        .filter(|p| names.split(',').any(|n| n.trim() == p.name()))
        .collect()
}

/// Whether a missing piece fails the test (`AZDO_TEST_REQUIRE_ALL=1`, as in CI).
pub fn strict() -> bool {
    std::env::var("AZDO_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// True when every piece is here. Otherwise: one line on the terminal naming `what` was not
/// checked and what to install, the skip recorded, and false; or, under
/// `AZDO_TEST_REQUIRE_ALL=1`, a panic.
pub fn require(pieces: &[Piece], what: &str) -> bool {
    let missing: Vec<Piece> = pieces.iter().copied().filter(|p| !p.present()).collect();
    if missing.is_empty() {
        return true;
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name()).collect();
    let install: Vec<&str> = missing.iter().map(|p| p.install()).collect();
    let line = format!(
        "skipped: {what}: needs {} ({})",
        names.join(", "),
        install.join("; ")
    );
    if strict() {
        panic!("{line}; AZDO_TEST_REQUIRE_ALL=1 makes a missing piece a failure");
    }
    // Straight to the terminal: libtest captures what the print macros write, not this.
    let _ = writeln!(std::io::stderr(), "{line}");
    record(&names, what);
    false
}

/// Where the skips of this `cargo test` run are recorded: one directory per run, named after
/// the process that started every test binary (cargo).
pub fn run_dir() -> PathBuf {
    let cargo = unsafe { libc::getppid() };
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("skipped")
        .join(cargo.to_string())
}

fn record(names: &[&str], what: &str) {
    let dir = run_dir();
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(std::process::id().to_string());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        // One write of the whole line: tests of one binary skip at the same time.
        let _ = f.write_all(format!("{}\t{what}\n", names.join(",")).as_bytes());
    }
}

/// The skips recorded in this run so far: `(pieces, what)`.
pub fn recorded() -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(run_dir()) else {
        return Vec::new();
    };
    let mut skips = Vec::new();
    for e in entries.flatten() {
        for line in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            if let Some((pieces, what)) = line.split_once('\t') {
                skips.push((pieces.to_string(), what.to_string()));
            }
        }
    }
    skips.sort();
    skips
}
