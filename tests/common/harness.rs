//! A throw-away world for end-to-end tests: mock Entra and Azure DevOps, a private HOME and
//! XDG directories, the real client and daemon binaries on PATH, and helpers to run git and
//! the client in it. Dropping the world stops its daemon.

use super::{MockAdo, MockEntra, TestCa};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CLIENT: &str = env!("CARGO_BIN_EXE_git-credential-azdo");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_git-credential-azdo-daemon");

pub struct World {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub entra: MockEntra,
    pub ado: MockAdo,
    extra_env: Vec<(String, String)>,
}

impl World {
    /// Mocks started, config written (`hosts` = the mock Azure DevOps, `store = "file"`), and
    /// git set up through `git-credential-azdo setup`.
    pub fn new() -> World {
        Self::with_store("file")
    }

    pub fn with_store(store: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("azdo")
            .tempdir_in("/tmp")
            .unwrap();
        let ca = TestCa::new(dir.path());
        let entra = MockEntra::start(&ca);
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&repos).unwrap();
        let ado = MockAdo::start(&ca, &entra, &repos);
        let w = World {
            dir,
            ca,
            entra,
            ado,
            extra_env: Vec::new(),
        };
        for d in ["home", "run", "config/git-credential-azdo", "data", "state"] {
            std::fs::create_dir_all(w.path(d)).unwrap();
        }
        std::fs::write(
            w.config_path(),
            format!("hosts = [\"{}\"]\nstore = \"{store}\"\n", w.ado.host()),
        )
        .unwrap();
        let out = w.client(&["setup"], "");
        assert!(out.status.success(), "setup failed: {}", text(&out.stderr));
        let out = w.git(&["config", "--global", "user.name", "Test"], None);
        assert!(out.status.success());
        w.git(&["config", "--global", "user.email", "t@example.com"], None);
        w.git(&["config", "--global", "init.defaultBranch", "main"], None);
        w
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config/git-credential-azdo/config.toml")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.path("run/git-credential-azdo")
    }

    pub fn set_env(&mut self, k: &str, v: &str) {
        self.extra_env.push((k.into(), v.into()));
    }

    /// A command with this world's environment only.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let bin_dir = Path::new(CLIENT).parent().unwrap();
        let mut c = Command::new(program);
        c.env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
            )
            .env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_SSL_CAINFO", self.ca.ca_path())
            .env("SSL_CERT_FILE", self.ca.ca_path())
            .env("AZURE_AUTHORITY_HOST", self.entra.url())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CREDENTIAL_AZDO_LOG", "debug")
            .env("LANG", "C.UTF-8")
            // Nothing in a test may reach a real host: anything not on loopback goes to a
            // dead proxy and fails at once.
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Runs the client with `args`, feeding `stdin`.
    pub fn client(&self, args: &[&str], stdin: &str) -> Output {
        run_with_input(self.command(CLIENT).args(args), stdin.as_bytes())
    }

    /// Runs `git` (the one first on PATH) in `cwd`.
    pub fn git(&self, args: &[&str], cwd: Option<&Path>) -> Output {
        self.git_with("git", args, cwd)
    }

    pub fn git_with(&self, git: &str, args: &[&str], cwd: Option<&Path>) -> Output {
        let mut c = self.command(git);
        c.args(args);
        c.current_dir(cwd.unwrap_or(self.dir.path()));
        run_with_input(&mut c, b"")
    }

    /// `git-credential-azdo login --org ORG`, approved by the mock.
    pub fn login(&self, org: &str) -> Output {
        let out = self.client(&["login", "--org", org, "--host", &self.ado.host()], "");
        assert!(
            out.status.success(),
            "login failed: {}\n{}",
            text(&out.stderr),
            self.log()
        );
        out
    }

    /// A `get` as git would send it for `url`'s org.
    pub fn get(&self, org: &str, bearer: bool) -> Output {
        let cap = if bearer {
            "capability[]=authtype\n"
        } else {
            ""
        };
        let input = format!(
            "{cap}protocol=https\nhost={}\npath={org}/p/_git/r\n\n",
            self.ado.host()
        );
        self.client(&["get"], &input)
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.runtime_dir().join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    /// Kills the daemon with `signal` and waits until it is gone.
    pub fn kill_daemon(&self, signal: i32) -> i32 {
        let pid = self.daemon_pid().expect("a daemon is running");
        unsafe { libc::kill(pid, signal) };
        wait_until(
            Duration::from_secs(5),
            || unsafe { libc::kill(pid, 0) } != 0,
        );
        pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("state/git-credential-azdo/daemon.log"))
            .unwrap_or_default()
    }

    /// A fresh working directory inside the world.
    pub fn workdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if !wait_until(
                Duration::from_secs(3),
                || unsafe { libc::kill(pid, 0) } != 0,
            ) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub fn run_with_input(c: &mut Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = feeder.join();
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The value of `key=` in a credential answer.
pub fn field(out: &Output, key: &str) -> Option<String> {
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// Asserts a git command succeeded, showing its stderr and the daemon log otherwise.
/// The check named `name` in `doctor --json`'s output.
pub fn doctor_check(out: &Output, name: &str) -> serde_json::Value {
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let found = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name));
    found
        .cloned()
        .unwrap_or_else(|| panic!("no check {name:?} in {checks}"))
}

pub fn ok(w: &World, out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n--- daemon log ---\n{}",
        out.status,
        text(&out.stderr),
        w.log()
    );
}
