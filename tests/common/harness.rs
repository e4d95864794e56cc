//! A throw-away world for end-to-end tests: mock Entra and Azure DevOps, a private HOME and
//! XDG directories, the real client and daemon binaries on PATH, and helpers to run git and
//! the client in it. Dropping the world stops its daemon.
//!
//! The daemon logs at `trace`, and every world is scanned for leaked secrets when it is
//! dropped (see [`World::scan_for_secrets`]): the secrets its mocks issued or were shown, and
//! those its environment names, must not appear in the daemon's log files, the process title
//! of its daemon, the stderr of any command it ran, or their stdout (where an access token may
//! only be a credential helper's answer). Commands are recorded by [`run_with_input`] when
//! they carry a world's environment, whichever helper built them.

use super::secrets::{Finding, Scanner, SecretKind, SecretRecord, Secrets, Stream};
use super::{MockAdo, MockEntra, TestCa};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub const CLIENT: &str = env!("CARGO_BIN_EXE_git-credential-azdo");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_git-credential-azdo-daemon");

pub struct World {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub entra: MockEntra,
    pub ado: MockAdo,
    extra_env: Vec<(String, String)>,
    /// Files (or, for Arc, a directory of `.key` files) whose content is a secret, from the
    /// environment the test set (see [`SECRET_FILES`]); read again at each scan.
    secret_files: Vec<(SecretKind, PathBuf)>,
    record: Arc<Record>,
}

/// Variables whose value is a secret: [`World::set_env`] records it.
const SECRET_VARIABLES: &[(&str, SecretKind)] = &[
    ("AZURE_CLIENT_SECRET", SecretKind::ClientSecret),
    ("IDENTITY_HEADER", SecretKind::IdentityHeader),
    ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", SecretKind::CiJobToken),
    ("SYSTEM_ACCESSTOKEN", SecretKind::CiJobToken),
];

/// Variables naming a file (a directory for Arc) whose content is a secret.
const SECRET_FILES: &[(&str, SecretKind)] = &[
    ("AZURE_FEDERATED_TOKEN_FILE", SecretKind::FederatedToken),
    ("AZURE_CLIENT_CERTIFICATE_PATH", SecretKind::PrivateKey),
    ("GIT_CREDENTIAL_AZDO_ARC_TOKENS_DIR", SecretKind::ArcKey),
];

/// One command a world ran (through [`run_with_input`]): what it was, and what it wrote.
#[derive(Clone)]
pub struct Recorded {
    /// Program file name and arguments, shortened.
    pub what: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What a world's commands wrote and which daemon process titles were seen.
struct Record {
    dir: PathBuf,
    outputs: Mutex<Vec<Recorded>>,
    /// `(pid, /proc/pid/cmdline)` of each daemon seen running, once per distinct pair.
    titles: Mutex<Vec<(i32, Vec<u8>)>>,
}

impl Record {
    /// Notes the process title of the daemon running now, if any.
    fn capture_title(&self) {
        let pid_file = self.dir.join("run/git-credential-azdo/daemon.pid");
        let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            return;
        };
        if unsafe { libc::kill(pid, 0) } != 0 {
            return;
        }
        let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if title.is_empty() {
            return;
        }
        let mut titles = self.titles.lock().unwrap();
        if !titles.iter().any(|(p, t)| *p == pid && *t == title) {
            titles.push((pid, title));
        }
    }
}

/// Every live world's record, found by the world's directory (commands carry it in `HOME`).
static WORLDS: Mutex<Vec<Weak<Record>>> = Mutex::new(Vec::new());

/// Records `out` for the world whose environment `c` carries, if any.
fn record_output(c: &Command, out: &Output) {
    let home = c
        .get_envs()
        .find(|(k, _)| *k == "HOME")
        .and_then(|(_, v)| v.map(PathBuf::from));
    let Some(home) = home else { return };
    let found = WORLDS
        .lock()
        .unwrap()
        .iter()
        .filter_map(Weak::upgrade)
        .find(|r| home.starts_with(&r.dir));
    let Some(record) = found else { return };
    let short = |s: &std::ffi::OsStr| s.to_string_lossy().chars().take(80).collect::<String>();
    let program = Path::new(c.get_program())
        .file_name()
        .map_or_else(|| short(c.get_program()), short);
    let what = std::iter::once(program)
        .chain(c.get_args().map(short))
        .collect::<Vec<_>>()
        .join(" ");
    record.outputs.lock().unwrap().push(Recorded {
        what: what.chars().take(300).collect(),
        stdout: out.stdout.clone(),
        stderr: out.stderr.clone(),
    });
    record.capture_title();
}

/// Every file under `dir`, recursively, in a stable order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        match p.is_dir() {
            true => files.extend(files_under(&p)),
            false => files.push(p),
        }
    }
    files
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
        let record = Arc::new(Record {
            dir: dir.path().to_path_buf(),
            outputs: Mutex::new(Vec::new()),
            titles: Mutex::new(Vec::new()),
        });
        let mut worlds = WORLDS.lock().unwrap();
        worlds.retain(|r| r.strong_count() > 0);
        worlds.push(Arc::downgrade(&record));
        drop(worlds);
        let w = World {
            dir,
            ca,
            entra,
            ado,
            extra_env: Vec::new(),
            secret_files: Vec::new(),
            record,
        };
        for d in ["home", "run", "config/git-credential-azdo", "data", "state"] {
            std::fs::create_dir_all(w.path(d)).unwrap();
        }
        std::fs::write(
            w.config_path(),
            // The mocks' authority and CA, and the dead proxy that keeps the daemon off real
            // hosts: from the configuration, as a daemon started on demand takes them from
            // nowhere else.
            format!(
                "hosts = [\"{}\"]\nstore = \"{store}\"\nauthority_host = \"{}\"\nssl_cert_file = \"{}\"\nproxy = \"http://127.0.0.1:9\"\nno_proxy = \"127.0.0.1,localhost\"\n",
                w.ado.host(),
                w.entra.url(),
                w.ca.ca_path().display()
            ),
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

    /// Sets a variable for every command from now on. A variable that holds a secret (see
    /// [`SECRET_VARIABLES`]) or names a secret file ([`SECRET_FILES`]) is recorded for the scan.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.extra_env.push((k.into(), v.into()));
        if let Some((_, kind)) = SECRET_VARIABLES.iter().find(|(name, _)| *name == k) {
            self.secret(*kind, v);
        }
        if let Some((_, kind)) = SECRET_FILES.iter().find(|(name, _)| *name == k) {
            self.secret_files.push((*kind, PathBuf::from(v)));
            self.record_secret_files();
        }
    }

    /// Records a secret a test configures itself, for the scan (see [`World::scan_for_secrets`]).
    pub fn secret(&self, kind: SecretKind, value: &str) {
        self.ca.secrets().record(kind, "world", value)
    }

    /// Every secret known so far: what the mocks issued or were shown, and what the test
    /// configured (variables, files, [`World::secret`]).
    pub fn secrets(&self) -> Vec<SecretRecord> {
        self.record_secret_files();
        self.ca.secrets().all()
    }

    /// Records the current content of the secret files the environment names.
    fn record_secret_files(&self) {
        let ledger: Secrets = self.ca.secrets();
        for (kind, path) in &self.secret_files {
            match kind {
                SecretKind::PrivateKey => {
                    let pem = std::fs::read_to_string(path).unwrap_or_default();
                    for line in super::secrets::private_key_lines(&pem) {
                        ledger.record(*kind, "world", &line);
                    }
                }
                SecretKind::ArcKey => {
                    for f in files_under(path) {
                        if f.extension().is_some_and(|e| e == "key") {
                            let key = std::fs::read_to_string(&f).unwrap_or_default();
                            ledger.record(*kind, "world", key.trim());
                        }
                    }
                }
                _ => {
                    let content = std::fs::read_to_string(path).unwrap_or_default();
                    ledger.record(*kind, "world", content.trim());
                }
            }
        }
    }

    /// Every command this world ran through [`run_with_input`] so far, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.record.outputs.lock().unwrap().clone()
    }

    /// Looks for every known secret (see [`World::secrets`]) in: the process titles of the
    /// daemons seen running (checked after each command, and now); every file under the
    /// world's state directory (the daemon's logs, where its stderr and so its panics go);
    /// the stderr of every command run; and their stdout, where only an access token alone on
    /// a `password=` or `credential=` line (a credential helper's answer) is allowed.
    /// Secrets shorter than [`super::secrets::MIN_LEN`] are not looked for. The arguments of
    /// the commands are not scanned: the test chose them (and a secret given on a command line
    /// is visible to `ps` by design, as the docs say); where a finding names a command, known
    /// secrets in its arguments are shown as `<kind>`.
    pub fn scan_for_secrets(&self) -> Vec<Finding> {
        self.record.capture_title();
        let scanner = Scanner::new(&self.secrets());
        let mut found = Vec::new();
        for (pid, title) in self.record.titles.lock().unwrap().iter() {
            let title: Vec<u8> = title
                .iter()
                .map(|&b| if b == 0 { b' ' } else { b })
                .collect();
            let place = format!("the daemon's process title (/proc/{pid}/cmdline)");
            found.extend(scanner.scan(&title, &place, Stream::Other));
        }
        for file in files_under(&self.path("state")) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            let place = format!("file {}", file.display());
            found.extend(scanner.scan(&bytes, &place, Stream::Other));
        }
        for (i, r) in self.recorded().iter().enumerate() {
            let what = scanner.redact(&r.what);
            let place = |stream| format!("{stream} of command #{} `{what}`", i + 1);
            found.extend(scanner.scan(&r.stderr, &place("stderr"), Stream::Other));
            found.extend(scanner.scan(&r.stdout, &place("stdout"), Stream::Stdout));
        }
        found
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
            // Everything, dependencies included: the secret scan reads it all.
            .env("GIT_CREDENTIAL_AZDO_LOG", "trace")
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

    /// Adds machine identity `ci` (`identity` holds its settings) to the configuration and
    /// makes it the default, before the daemon starts.
    pub fn configure_identity(&self, identity: &str) {
        let cfg = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(
            self.config_path(),
            format!("identity = \"ci\"\n{cfg}\n[identities.ci]\n{identity}\n"),
        )
        .unwrap();
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

    /// A `get` for `org` as git sends it: with `bearer`, as the newest git at hand does (it
    /// announces `capability[]=authtype` and exports its `GIT_EXEC_PATH`: git 2.55 is answered
    /// Bearer, an older one Basic; [`token`] reads either); else as git 2.39 does (no
    /// capability: Basic).
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
        let mut c = self.command(CLIENT);
        if bearer {
            c.env("GIT_EXEC_PATH", super::gits::newest_at_hand().exec_path);
        }
        run_with_input(c.arg("get"), input.as_bytes())
    }

    /// Has Azure DevOps refuse the current token of `contoso` and git report it (`erase`): the
    /// daemon asks Azure DevOps whether it takes the token and, refused, drops it, so the next
    /// `get` needs a new one.
    pub fn erase_current(&self) {
        let input = format!(
            "capability[]=authtype\nprotocol=https\nhost={}\npath=contoso/p/_git/r\nauthtype=Bearer\ncredential={}\n",
            self.ado.host(),
            token(&self.get("contoso", true)).unwrap()
        );
        self.ado.reject_all(true);
        ok(self, &self.client(&["erase"], &input), "erase");
        self.ado.reject_all(false);
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
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
        let gone = wait_until(
            Duration::from_secs(30),
            || unsafe { libc::kill(pid, 0) } != 0,
        );
        assert!(
            gone,
            "the daemon (pid {pid}) is still running after signal {signal}"
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
    /// Stops the daemon (its title noted first), then scans for leaked secrets and panics
    /// on any finding, unless the test is already panicking.
    fn drop(&mut self) {
        self.record.capture_title();
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if !wait_until(
                Duration::from_secs(3),
                || unsafe { libc::kill(pid, 0) } != 0,
            ) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        WORLDS
            .lock()
            .unwrap()
            .retain(|r| r.strong_count() > 0 && !Weak::ptr_eq(r, &Arc::downgrade(&self.record)));
        if std::thread::panicking() {
            return;
        }
        let found = self.scan_for_secrets();
        if !found.is_empty() {
            let list: Vec<String> = found.iter().take(20).map(|f| format!("  - {f}")).collect();
            panic!(
                "secret scan: {} leak(s) of secrets (shown by kind, length and first 4 characters \
                 only; the line with known secrets replaced by <kind>):\n{}{}",
                found.len(),
                list.join("\n"),
                if found.len() > 20 { "\n  ..." } else { "" }
            );
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
    record_output(c, &out);
    out
}

/// A `get` for contoso through the real client, as a build step with these variables (and no
/// others from the world) runs it (no terminal: `GIT_TERMINAL_PROMPT=0`).
pub fn step_get(w: &World, vars: &[(&str, &str)]) -> Output {
    let mut c = w.command(CLIENT);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.arg("get");
    let input = format!(
        "protocol=https\nhost={}\npath=contoso/p/_git/r\n\n",
        w.ado.host()
    );
    run_with_input(&mut c, input.as_bytes())
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The daemon's last refresh outcome for `org`, from `status --json` ("" when none).
pub fn last_refresh_outcome(w: &World, org: &str) -> String {
    let out = w.client(&["status", "--json"], "");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let orgs = json["orgs"].as_array().cloned().unwrap_or_default();
    orgs.iter()
        .find(|o| o["org"] == org)
        .and_then(|o| o["last_refresh_outcome"].as_str().map(str::to_string))
        .unwrap_or_default()
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

/// The token of a credential answer, Bearer (`credential=`) or Basic (`password=`).
pub fn token(out: &Output) -> Option<String> {
    field(out, "credential").or_else(|| field(out, "password"))
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
