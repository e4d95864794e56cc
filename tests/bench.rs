//! Benchmarks, one `#[ignore]` test per section, each printing a report block:
//!
//! - b1: one `get`, side by side: this helper (daemon warm, token cached) against git's own
//!   `git-credential-cache` holding a stored password, and `/bin/true` as the floor of starting
//!   a process. Rounds alternate A B C A B C on one machine in one run.
//! - b2: `git credential fill` end to end: through this helper as `setup` configures it (A),
//!   through `git-credential-cache` (B), and through this helper configured by absolute path
//!   (C), alternating A B C.
//! - b3: 1000 concurrent `get`s on one warm daemon's socket, all connections open before any
//!   request is sent; then bursts alternating with two floor servers that do none of the
//!   daemon's work (a bare epoll loop, and blocking threads).
//! - b4: 200 client processes started at once.
//! - b5: single flight under load: the token requests Entra sees when 1000 `get`s arrive
//!   while the access token is being refreshed.
//! - b6: memory (daemon idle and under load, one client's peak) and binary sizes.
//! - b7: a simulated day: short-lived tokens, a `get` every 50 ms.
//!
//! Not part of the test suite (it measures, it does not check): run with
//! `cargo test --release --test bench -- --ignored --nocapture --test-threads=1`.
//!
//! Settings (environment): `BENCH_ROUNDS` (b1, b2; default 300), `BENCH_CONNECTIONS` (b3, b5,
//! b6; default 1000), `BENCH_BURSTS` (b3's side-by-side bursts; default 5), `BENCH_PROCESSES` (b4; default 200), `BENCH_DAY_SECS` (b7; default 120),
//! `BENCH_CLIENT=/path/to/git-credential-azdo` to measure another build of the client
//! (same package version: the daemon built with the tests serves it) wherever the bench runs
//! the client to measure it, and `BENCH_BASELINE=/path/to/git-credential-azdo` (b1) to add a
//! side for an earlier build, served by the daemon next to it in a world of its own.

mod common;

use common::Fault;
use common::harness::{CLIENT, DAEMON, World, field, run_with_input, text, token};
use common::load::{self, Burst};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Settings

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The client binary measured: `$BENCH_CLIENT`, else the one built with the tests.
fn client_exe() -> PathBuf {
    match std::env::var_os("BENCH_CLIENT").filter(|v| !v.is_empty()) {
        Some(p) => std::fs::canonicalize(&p)
            .unwrap_or_else(|e| panic!("BENCH_CLIENT={}: {e}", Path::new(&p).display())),
        None => PathBuf::from(CLIENT),
    }
}

/// How long a request of the load sections may take from its release.
const LOAD_LIMIT: Duration = Duration::from_secs(10);
const ORG: &str = "contoso";

// ---------------------------------------------------------------------------------------------
// Statistics

fn time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// Reporting: fixed-width blocks

const NAME_WIDTH: usize = 34;

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The title line of a section.
fn section(title: &str) {
    println!("\n== {title} ==");
}

/// `name` and one right-aligned value, then an optional note.
fn line(name: &str, value: impl std::fmt::Display, note: &str) {
    let value = value.to_string();
    if note.is_empty() {
        println!("{name:<NAME_WIDTH$} {value:>10}");
    } else {
        println!("{name:<NAME_WIDTH$} {value:>10}  {note}");
    }
}

#[derive(Clone, Copy)]
enum Col {
    Median,
    P90,
    P99,
    Max,
}

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Median => "median",
            Col::P90 => "p90",
            Col::P99 => "p99",
            Col::Max => "max",
        }
    }

    fn of(self, v: &mut [Duration]) -> Duration {
        match self {
            Col::Median => median(v),
            Col::P90 => p(v, 0.9),
            Col::P99 => p(v, 0.99),
            Col::Max => p(v, 1.0),
        }
    }
}

/// A table of latencies in milliseconds, one row per side; a side with no samples shows `-`.
fn latency_table(cols: &[Col], rows: &mut [(&str, &mut Vec<Duration>)]) {
    print!("{:<NAME_WIDTH$}", "");
    for c in cols {
        print!(" {:>8}", c.name());
    }
    println!();
    for (name, v) in rows.iter_mut() {
        print!("{name:<NAME_WIDTH$}");
        for c in cols {
            let cell = if v.is_empty() {
                "-".to_string()
            } else {
                ms(c.of(v))
            };
            print!(" {cell:>8}");
        }
        println!();
    }
}

// ---------------------------------------------------------------------------------------------
// Processes, /proc and files

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `Max open files` of a process (`self` or a pid): soft and hard limit.
fn fd_limit(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!("soft {} hard {}", f[3], f[4])
                })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
fn proc_status_bytes(pid: i32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let kib: u64 = l
            .strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    })
}

/// A process's peak memory, measured two ways.
struct Peak {
    /// `VmHWM` of its own image, read at its exit (under ptrace, at `PTRACE_EVENT_EXIT`).
    hwm: u64,
    /// `ru_maxrss` from wait4(2). At exec a child's maxrss starts at the peak of the memory it
    /// replaces: for a child spawned from this (large) test process, that is this process's
    /// peak, not the child's own.
    maxrss: u64,
    stdout: Vec<u8>,
}

/// Runs `cmd` fed `input`, stops it at its exit to read its `VmHWM`, then reaps it with
/// wait4(2) for `ru_maxrss`.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std does not know of
fn peak_memory(cmd: &mut Command, input: &[u8]) -> Peak {
    use std::os::unix::process::CommandExt;
    use std::ptr::null_mut;
    // SAFETY: PTRACE_TRACEME is one system call, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, null_mut::<libc::c_void>(), 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    // Smaller than a pipe's buffer: the write cannot block, nor can the child's answer.
    child.stdin.take().unwrap().write_all(input).unwrap();
    let (mut status, mut hwm) = (0, None);
    // SAFETY: ptrace requests on our own stopped tracee, from the thread that spawned it;
    // plain out-parameters.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        // Stopped by the SIGTRAP of its exec.
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFSTOPPED(status), "status {status:#x}");
        let options = (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL) as usize;
        libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0usize, options);
        libc::ptrace(libc::PTRACE_CONT, pid, 0usize, 0usize);
        loop {
            assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid);
            if !libc::WIFSTOPPED(status) {
                break; // exited
            }
            let exit_event = libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8);
            let signal = if status >> 8 == exit_event {
                hwm = proc_status_bytes(pid, "VmHWM");
                0
            } else {
                libc::WSTOPSIG(status) // a signal for the child: deliver it
            };
            libc::ptrace(libc::PTRACE_CONT, pid, 0usize, signal as usize);
        }
    }
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    Peak {
        hwm: hwm.expect("VmHWM at exit"),
        maxrss: usage.ru_maxrss as u64 * 1024,
        stdout,
    }
}

/// The daemon log's lines since byte `from`, other than DEBUG and TRACE, at most `max`.
fn log_since(w: &World, from: usize, max: usize) -> Vec<String> {
    let log = w.log();
    let lines: Vec<String> = log
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
        .map(str::to_string)
        .collect();
    let skip = lines.len().saturating_sub(max);
    lines.into_iter().skip(skip).collect()
}

fn count_in_log(w: &World, from: usize, needle: &str) -> usize {
    w.log()
        .get(from..)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// The `get` input git sends for the bench's organization.
fn get_input(w: &World, bearer: bool) -> String {
    let cap = if bearer {
        "capability[]=authtype\n"
    } else {
        ""
    };
    format!(
        "{cap}protocol=https\nhost={}\npath={ORG}/p/_git/r\n\n",
        w.ado.host()
    )
}

/// A world signed in to the bench's organization, its daemon warm with a token cached.
fn warm_world() -> World {
    let mut w = World::new();
    // The daemon's default log level, as users run it (the test harness uses debug).
    w.set_env("GIT_CREDENTIAL_AZDO_LOG", "info");
    w.login(ORG);
    let out = w.get(ORG, true);
    assert!(
        token(&out).is_some(),
        "no token: {}\n{}",
        text(&out.stderr),
        w.log()
    );
    w
}

fn socket(w: &World) -> PathBuf {
    w.runtime_dir().join("daemon.sock")
}

// ---------------------------------------------------------------------------------------------
// git's own credential cache, holding a stored password

/// A `git credential-cache` daemon on a socket inside the world, holding a password for
/// `https://dev.azure.com/contoso/p/_git/r`. Told to exit when dropped.
struct CredCache<'a> {
    w: &'a World,
    sock: String,
}

impl<'a> CredCache<'a> {
    const INPUT: &'static str = "protocol=https\nhost=dev.azure.com\npath=contoso/p/_git/r\n";

    fn start(w: &'a World) -> CredCache<'a> {
        let dir = w.path("cache");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let sock = dir.join("cache.sock").to_str().unwrap().to_string();
        let cache = CredCache { w, sock };
        let stored = format!("{}username=u\npassword=secret\n", Self::INPUT);
        let out = run_with_input(&mut cache.command("store"), stored.as_bytes());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let check = run_with_input(&mut cache.get(), Self::INPUT.as_bytes());
        assert!(text(&check.stdout).contains("password=secret"));
        cache
    }

    fn command(&self, action: &str) -> Command {
        let mut c = self.w.command("git");
        c.args(["credential-cache", "--socket", &self.sock, action]);
        c
    }

    /// `git credential-cache get`, to be fed [`Self::INPUT`].
    fn get(&self) -> Command {
        self.command("get")
    }
}

impl Drop for CredCache<'_> {
    fn drop(&mut self) {
        let _ = run_with_input(&mut self.command("exit"), b"");
    }
}

// ---------------------------------------------------------------------------------------------
// b1: one get

/// A world signed in and warmed by `client`, a build other than the one under test, served by
/// the daemon next to it: the "before" side of a comparison (`BENCH_BASELINE`).
fn warm_world_for(client: &Path) -> World {
    let mut w = World::new();
    w.set_env("GIT_CREDENTIAL_AZDO_LOG", "info");
    let daemon = client.with_file_name("git-credential-azdo-daemon");
    w.set_env("GIT_CREDENTIAL_AZDO_DAEMON", daemon.to_str().unwrap());
    let host = w.ado.host();
    let login = run_with_input(
        w.command(client)
            .args(["login", "--org", ORG, "--host", &host]),
        b"",
    );
    assert!(login.status.success(), "{}", text(&login.stderr));
    w
}

/// `rounds` rounds of one `get` through each `(world, client)` side in turn, then
/// `git credential-cache get` and `/bin/true` fed the same input in the first side's world:
/// each side's times, the cache's and the floor's. Each `get` is started as git 2.47 (the
/// machine's) starts the helper, with its `GIT_EXEC_PATH`, so the client names the asking git
/// and the daemon answers from the version it learned on the warming `get`.
fn get_rounds(
    sides: &[(&World, &Path)],
    rounds: usize,
) -> (Vec<Vec<Duration>>, Vec<Duration>, Vec<Duration>) {
    let w = sides[0].0;
    let exec_path = common::gits::machine().exec_path;
    let cache = CredCache::start(w);
    let mut times = vec![Vec::with_capacity(rounds); sides.len()];
    let (mut cached, mut floor) = (Vec::new(), Vec::new());
    let get = |world: &World, client: &Path| {
        let mut c = world.command(client);
        c.arg("get").env("GIT_EXEC_PATH", &exec_path);
        (c, get_input(world, true))
    };
    for &(world, client) in sides {
        let (mut c, input) = get(world, client);
        let o = run_with_input(&mut c, input.as_bytes());
        assert!(!o.stdout.is_empty(), "{}", text(&o.stderr));
    }
    for _ in 0..rounds {
        for (&(world, client), t) in sides.iter().zip(times.iter_mut()) {
            let (mut c, input) = get(world, client);
            t.push(time(|| {
                let o = run_with_input(&mut c, input.as_bytes());
                assert!(!o.stdout.is_empty(), "{}", text(&o.stderr));
            }));
        }
        cached.push(time(|| {
            let o = run_with_input(&mut cache.get(), CredCache::INPUT.as_bytes());
            assert!(!o.stdout.is_empty());
        }));
        let input = get_input(w, true);
        floor.push(time(|| {
            run_with_input(&mut w.command("/bin/true"), input.as_bytes());
        }));
    }
    (times, cached, floor)
}

#[test]
#[ignore]
fn b1_get_side_by_side_with_git_credential_cache() {
    let rounds: usize = setting("BENCH_ROUNDS", 300);
    let client = client_exe();
    let w = warm_world();
    let baseline = std::env::var_os("BENCH_BASELINE")
        .filter(|v| !v.is_empty())
        .map(|p| std::fs::canonicalize(&p).expect("BENCH_BASELINE"));
    let before = baseline.as_deref().map(warm_world_for);
    let mut sides = vec![(&w, client.as_path())];
    if let (Some(world), Some(path)) = (&before, &baseline) {
        sides.push((world, path.as_path()));
    }
    let (mut times, mut cached, mut floor) = get_rounds(&sides, rounds);
    println!(
        "\nclient: {} ({} bytes, {})",
        client.display(),
        file_size(&client),
        mib(file_size(&client))
    );
    if let Some(path) = &baseline {
        println!("baseline: {} with its own daemon", path.display());
    }
    println!("{rounds} rounds, alternating; milliseconds per get (spawn + answer)");
    let (azdo, rest) = times.split_first_mut().unwrap();
    let mut rows: Vec<(&str, &mut Vec<Duration>)> = vec![("git-credential-azdo get", azdo)];
    if let Some(before) = rest.first_mut() {
        rows.push(("baseline get", before));
    }
    rows.push(("git credential-cache get", &mut cached));
    rows.push(("/bin/true (process floor)", &mut floor));
    latency_table(&[Col::Median, Col::P90, Col::P99], &mut rows);
    let cache_median = median(&mut cached).as_secs_f64();
    println!(
        "ratio azdo/cache (median): {:.2}",
        median(&mut times[0]).as_secs_f64() / cache_median
    );
    if times.len() > 1 {
        println!(
            "ratio baseline/cache (median): {:.2}",
            median(&mut times[1]).as_secs_f64() / cache_median
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b2: git credential fill, end to end

#[test]
#[ignore]
fn b2_fill_side_by_side_with_git_credential_cache() {
    let rounds: usize = setting("BENCH_ROUNDS", 300);
    let client = client_exe();
    let w = warm_world();
    let host = w.ado.host();
    // What git asks for an https remote of the organization (useHttpPath is on for the host).
    let input = format!("protocol=https\nhost={host}\npath={ORG}/p/_git/r\n\n");

    // A: git configured as `setup` configures it: the empty helper, then the client's
    // absolute path, and useHttpPath. (With BENCH_CLIENT, that client's path.)
    let config = w.git(
        &["config", "--global", "--get-regexp", "^credential\\."],
        None,
    );
    let config = text(&config.stdout);
    let helper_key = format!("credential.https://{host}.helper {CLIENT}");
    assert!(config.contains(&helper_key), "setup wrote:\n{config}");
    let config_with = |name: &str, helper: &str| {
        let file = w.path(name);
        std::fs::write(
            &file,
            format!(
                "[credential \"https://{host}\"]\n\thelper =\n\thelper = {helper}\n\tuseHttpPath = true\n"
            ),
        )
        .unwrap();
        file
    };
    let a_config = config_with("setup.gitconfig", &client.display().to_string());
    let fill_a = || {
        let mut c = w.command("git");
        c.env("GIT_CONFIG_GLOBAL", &a_config)
            .args(["credential", "fill"]);
        c
    };
    // C: the helper by name (`azdo`), as setup wrote it before: git starts a second git
    // (`git credential-azdo`) to find the client on PATH.
    let path = std::env::var_os("BENCH_CLIENT").map(|_| {
        let dir = w.path("bench-client");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&client, dir.join("git-credential-azdo")).unwrap();
        let bin_dir = Path::new(CLIENT).parent().unwrap();
        format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            dir.display(),
            bin_dir.display()
        )
    });
    let c_config = config_with("by-name.gitconfig", "azdo");
    let fill_c = || {
        let mut c = w.command("git");
        c.env("GIT_CONFIG_GLOBAL", &c_config)
            .args(["credential", "fill"]);
        if let Some(p) = &path {
            c.env("PATH", p);
        }
        c
    };

    // B: a separate global configuration with git-credential-cache as the only helper, the
    // same host and path, and the password stored through `git credential approve`.
    let cache = CredCache::start(&w);
    let b_config = w.path("cache.gitconfig");
    std::fs::write(
        &b_config,
        format!(
            "[credential]\n\thelper = cache --socket {}\n\tuseHttpPath = true\n",
            cache.sock
        ),
    )
    .unwrap();
    let fill_b = |action: &str| {
        let mut c = w.command("git");
        c.env("GIT_CONFIG_GLOBAL", &b_config)
            .args(["credential", action]);
        c
    };
    let stored = format!(
        "protocol=https\nhost={host}\npath={ORG}/p/_git/r\nusername=u\npassword=secret\n\n"
    );
    let out = run_with_input(&mut fill_b("approve"), stored.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Each side once under GIT_TRACE: A runs this helper and answers a token from the mock
    // Entra; B answers the stored password and never runs this helper.
    let a = run_with_input(fill_a().env("GIT_TRACE", "1"), input.as_bytes());
    let token = field(&a, "password").expect("A answers a password");
    assert!(
        w.entra.validate(&token).is_some(),
        "A's password is a token"
    );
    assert!(
        text(&a.stderr).contains("credential-azdo"),
        "{}",
        text(&a.stderr)
    );
    if std::env::var_os("BENCH_TRACE").is_some() {
        for (name, mut cmd) in [("A", fill_a()), ("B", fill_b("fill")), ("C", fill_c())] {
            let o = run_with_input(cmd.env("GIT_TRACE2_PERF", "1"), input.as_bytes());
            println!("--- {name} ---\n{}", text(&o.stderr));
        }
    }
    let b = run_with_input(fill_b("fill").env("GIT_TRACE", "1"), input.as_bytes());
    assert_eq!(field(&b, "password").as_deref(), Some("secret"));
    let trace = text(&b.stderr);
    assert!(
        trace.contains("credential-cache") && !trace.contains("credential-azdo"),
        "{trace}"
    );
    let c = run_with_input(fill_c().env("GIT_TRACE", "1"), input.as_bytes());
    let token = field(&c, "password").expect("C answers a password");
    assert!(
        w.entra.validate(&token).is_some(),
        "C's password is a token"
    );
    // Processes started per fill: git itself, and one per `run_command` it traces.
    let processes = |o: &std::process::Output| 1 + text(&o.stderr).matches("run_command:").count();
    let (pa, pb, pc) = (processes(&a), processes(&b), processes(&c));

    let (mut azdo, mut cached, mut absolute) = (Vec::new(), Vec::new(), Vec::new());
    let fill = |mut cmd: Command| {
        time(|| {
            let o = run_with_input(&mut cmd, input.as_bytes());
            assert!(field(&o, "password").is_some(), "{}", text(&o.stderr));
        })
    };
    for _ in 0..rounds {
        azdo.push(fill(fill_a()));
        cached.push(fill(fill_b("fill")));
        absolute.push(fill(fill_c()));
    }
    drop(cache);
    section("git credential fill, end to end");
    println!("client: {}", client.display());
    println!("input: protocol=https host=<mock Azure DevOps> path={ORG}/p/_git/r");
    println!(
        "A: git configured as `setup` does it (credential.https://HOST.helper = <client path>)"
    );
    println!("B: git-credential-cache only (separate config), password stored by `approve`");
    println!("C: as A, but helper = azdo, by name (git starts `git credential-azdo` to find it)");
    println!("checked once with GIT_TRACE=1: A and C answer a token from the mock Entra through");
    println!("git-credential-azdo; B answers the stored password and does not run it");
    println!("processes per fill (GIT_TRACE run_command + 1): A {pa}, B {pb}, C {pc}");
    println!("{rounds} rounds, alternating A B C; milliseconds per `git credential fill`");
    latency_table(
        &[Col::Median, Col::P90, Col::P99, Col::Max],
        &mut [
            ("A: fill via this helper (setup)", &mut azdo),
            ("B: fill via git credential-cache", &mut cached),
            ("C: fill via helper by name", &mut absolute),
        ],
    );
    let b = median(&mut cached).as_secs_f64();
    println!(
        "ratio A/B (median): {:.2}   ratio C/B (median): {:.2}",
        median(&mut azdo).as_secs_f64() / b,
        median(&mut absolute).as_secs_f64() / b
    );
}

// ---------------------------------------------------------------------------------------------
// b3: many connections on one daemon

/// Prints a burst's outcome; with errors, the daemon's log lines since `log_from`.
fn report_burst(w: &World, b: &mut Burst, log_from: usize) {
    line("connections", b.connections, "");
    line(
        "opened before the release",
        b.opened,
        &format!("in {} ms", ms(b.open_time)),
    );
    line("answered with a token", b.answered.len(), "");
    line("errors", b.error_count(), &b.error_summary());
    line("wall time, ms", ms(b.wall), "release to last answer");
    println!("latency, ms");
    latency_table(
        &[Col::Median, Col::P99, Col::Max],
        &mut [
            ("  from the release", &mut b.answered),
            ("  from each request's own send", &mut b.answered_from_send),
        ],
    );
    if b.error_count() > 0 {
        println!("daemon log since the burst (not DEBUG; last 30 lines):");
        for l in log_since(w, log_from, 30) {
            println!("  {l}");
        }
    }
}

fn print_fd_limits(w: &World) {
    line("open files limit, this process", "", &fd_limit("self"));
    let daemon = w
        .daemon_pid()
        .map(|pid| fd_limit(&pid.to_string()))
        .unwrap_or_else(|| "no daemon".into());
    line("open files limit, daemon", "", &daemon);
}

#[test]
#[ignore]
fn b3_load_concurrent_gets_on_one_daemon() {
    let n: usize = setting("BENCH_CONNECTIONS", 1000);
    let w = warm_world();
    let log_from = w.log().len();
    let mut b = load::burst(&socket(&w), n, &load::get_line(ORG), LOAD_LIMIT, || {});
    section(&format!(
        "load: {n} concurrent gets on one warm daemon's socket"
    ));
    println!("all connections open first, then released together; one request line each;");
    println!(
        "an error is any answer but a token, a connection error, or no answer within {} s",
        LOAD_LIMIT.as_secs()
    );
    print_fd_limits(&w);
    report_burst(&w, &mut b, log_from);
    let alive = w.daemon_pid().is_some();
    line(
        "daemon alive afterwards",
        if alive { "yes" } else { "NO" },
        "",
    );
    floors_beside_the_daemon(&w, n);
}

/// The same burst, alternating with servers that do none of the daemon's work: what the
/// kernel and the I/O model cost on this machine, apart from everything the daemon adds.
fn floors_beside_the_daemon(w: &World, n: usize) {
    let rounds: usize = setting("BENCH_BURSTS", 5);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let floor_socket = dir.path().join("floor.sock");
    let line_bytes = load::get_line(ORG);
    let sides = [
        "the daemon",
        "epoll floor (mio, 1 thread)",
        "blocking floor (1 thread/core)",
    ];
    let mut p99s: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut errors = vec![0; sides.len()];
    for _ in 0..rounds {
        for (i, p99s) in p99s.iter_mut().enumerate() {
            let mut b = match i {
                0 => load::burst(&socket(w), n, &line_bytes, LOAD_LIMIT, || {}),
                _ => {
                    let kind = if i == 1 {
                        load::Floor::Epoll
                    } else {
                        load::Floor::BlockingThreads
                    };
                    let server = load::floor_server(kind, &floor_socket, n);
                    load::burst(&server.socket, n, &line_bytes, LOAD_LIMIT, || {})
                }
            };
            errors[i] += b.error_count();
            if !b.answered.is_empty() {
                p99s.push(p(&mut b.answered, 0.99));
            }
            walls[i].push(b.wall);
        }
    }
    println!();
    println!("beside it, {rounds} bursts of {n} per side, alternating; the same generator");
    println!(
        "{:<34} {:>12} {:>14} {:>8}",
        "", "median p99", "median wall", "errors"
    );
    for (i, side) in sides.iter().enumerate() {
        println!(
            "{:<34} {:>12} {:>14} {:>8}",
            side,
            ms(median(&mut p99s[i])),
            ms(median(&mut walls[i])),
            errors[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b4: many client processes at once

#[test]
#[ignore]
fn b4_load_client_processes_at_once() {
    let n: usize = setting("BENCH_PROCESSES", 200);
    let client = client_exe();
    let w = warm_world();
    let input = get_input(&w, true);
    let log_from = w.log().len();
    // Spawn them all first; each waits for its request on stdin, so none asks the daemon
    // before the release, when every one gets its stdin at once.
    let start = Instant::now();
    let mut procs = Vec::with_capacity(n);
    let mut spawn_errors = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let spawned = w
            .command(&client)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(_) => {
                spawn_errors += 1;
                continue;
            }
        };
        let stdin = child.stdin.take().unwrap();
        let waiter = std::thread::spawn(move || {
            let out = child.wait_with_output();
            (Instant::now(), out)
        });
        procs.push((t0, stdin, waiter));
    }
    let spawned_in = start.elapsed();
    let released = Instant::now();
    let waiters: Vec<_> = procs
        .into_iter()
        .map(|(t0, mut stdin, waiter)| {
            // Smaller than a pipe's buffer: the write cannot block. Dropping stdin ends it.
            let _ = stdin.write_all(input.as_bytes());
            (t0, waiter)
        })
        .collect();
    let (mut from_release, mut from_spawn) = (Vec::new(), Vec::new());
    let mut errors = std::collections::BTreeMap::new();
    let mut last = released;
    for (t0, waiter) in waiters {
        let (ended, out) = waiter.join().unwrap();
        last = last.max(ended);
        let out = out.expect("wait");
        let stdout = text(&out.stdout);
        if stdout.contains("credential=") || stdout.contains("password=") {
            from_release.push(ended - released);
            from_spawn.push(ended - t0);
        } else {
            let why = text(&out.stderr).lines().next().unwrap_or("").to_string();
            let why = format!(
                "{} {}",
                out.status,
                why.chars().take(100).collect::<String>()
            );
            *errors.entry(why).or_insert(0usize) += 1;
        }
    }
    section(&format!("load: {n} client processes started at once"));
    println!("client: {}", client.display());
    println!("all spawned first, each blocked reading stdin; then stdin written to all at once");
    line("processes", n, &format!("spawned in {} ms", ms(spawned_in)));
    line("answered (credential=/password=)", from_release.len(), "");
    let error_count = errors.values().sum::<usize>() + spawn_errors;
    let summary = if error_count == 0 {
        "none".to_string()
    } else {
        let mut s: Vec<String> = errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        if spawn_errors > 0 {
            s.push(format!("spawn failed x{spawn_errors}"));
        }
        s.join(", ")
    };
    line("errors", error_count, &summary);
    line("wall time, ms", ms(last - released), "release to last exit");
    println!("per process, ms");
    latency_table(
        &[Col::Median, Col::P99, Col::Max],
        &mut [
            ("  release (stdin) to exit", &mut from_release),
            ("  spawn to exit", &mut from_spawn),
        ],
    );
    if error_count > 0 {
        println!("daemon log since the burst (not DEBUG; last 30 lines):");
        for l in log_since(&w, log_from, 30) {
            println!("  {l}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// b5: single flight under load

#[test]
#[ignore]
fn b5_single_flight_under_load() {
    let n: usize = setting("BENCH_CONNECTIONS", 1000);
    // Entra answers each request this late: the refresh is in flight while the burst arrives.
    let slow = Duration::from_secs(2);
    let w = warm_world();
    // A restarted daemon has no access token in memory, only the stored refresh token.
    w.kill_daemon(libc::SIGKILL);
    w.entra.set_fault(Fault::Slow(slow));
    let before = w.entra.stats();
    let log_from = w.log().len();
    // Any request starts the daemon; its refresher asks Entra for a token at once.
    let started = Instant::now();
    let out = w.client(&["status"], "");
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), w.log());
    let mut b = load::burst(&socket(&w), n, &load::get_line(ORG), LOAD_LIMIT, || {});
    let released_after = b.released_at - started;
    // Let anything still in flight land before counting.
    std::thread::sleep(slow + Duration::from_millis(500));
    w.entra.set_fault(Fault::None);
    let after = w.entra.stats();
    let refresh_grants = after.token_requests[before.token_requests.len()..]
        .iter()
        .filter(|r| r.grant_type == "refresh_token")
        .count();
    let waited = count_in_log(&w, log_from, "get waits for a refresh");

    section(&format!(
        "single flight: {n} gets while the access token is refreshed"
    ));
    println!(
        "daemon restarted (SIGKILL) so it holds no access token; Entra answers after {} ms",
        slow.as_millis()
    );
    line(
        "burst released after daemon start",
        format!("{} ms", released_after.as_millis()),
        if released_after < slow {
            "inside the refresh"
        } else {
            "AFTER the refresh could have finished: not a valid run"
        },
    );
    line(
        "token requests during the burst",
        refresh_grants,
        "target 1 (grant refresh_token, all statuses)",
    );
    line(
        "refresh_ok (mock) delta",
        after.refresh_ok - before.refresh_ok,
        "",
    );
    line("gets that logged a wait", waited, "");
    report_burst(&w, &mut b, log_from);
}

// ---------------------------------------------------------------------------------------------
// b6: memory and size

#[test]
#[ignore]
fn b6_memory_and_size() {
    let n: usize = setting("BENCH_CONNECTIONS", 1000);
    let runs = 21;
    let client = client_exe();
    let w = warm_world();
    for _ in 0..5 {
        assert!(token(&w.get(ORG, true)).is_some());
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = w.daemon_pid().expect("daemon running");
    let idle = proc_status_bytes(pid, "VmRSS").expect("VmRSS");
    let hwm_idle = proc_status_bytes(pid, "VmHWM").expect("VmHWM");

    let log_from = w.log().len();
    let b = load::burst(&socket(&w), n, &load::get_line(ORG), LOAD_LIMIT, || {});
    let hwm = proc_status_bytes(pid, "VmHWM").expect("VmHWM");
    let after = proc_status_bytes(pid, "VmRSS").expect("VmRSS");
    std::thread::sleep(Duration::from_secs(2));
    let later = proc_status_bytes(pid, "VmRSS").expect("VmRSS");

    let input = get_input(&w, true);
    let measure = |what: &str, cmd: &dyn Fn() -> Command, input: &[u8], expect: &str| {
        let peaks: Vec<Peak> = (0..runs)
            .map(|_| {
                let peak = peak_memory(&mut cmd(), input);
                assert!(text(&peak.stdout).contains(expect), "{what}");
                peak
            })
            .collect();
        (
            median_u64(peaks.iter().map(|p| p.hwm).collect()),
            median_u64(peaks.iter().map(|p| p.maxrss).collect()),
        )
    };
    let client_peak = measure(
        "client get",
        &|| {
            let mut c = w.command(&client);
            c.arg("get");
            c
        },
        input.as_bytes(),
        "credential=",
    );
    let cache = CredCache::start(&w);
    let cache_peak = measure(
        "git credential-cache get",
        &|| cache.get(),
        CredCache::INPUT.as_bytes(),
        "password=secret",
    );
    drop(cache);
    let floor_peak = measure(
        "/bin/true",
        &|| w.command("/bin/true"),
        input.as_bytes(),
        "",
    );

    let verdict = |value: u64, target_mib: u64| {
        if value < target_mib * 1024 * 1024 {
            format!("< {target_mib} MiB  ok")
        } else {
            format!("< {target_mib} MiB  MISSED")
        }
    };
    section("memory and size");
    println!("{:<NAME_WIDTH$} {:>10}  target", "", "value");
    line("daemon RSS idle (VmRSS)", mib(idle), &verdict(idle, 12));
    line("daemon peak before the burst", mib(hwm_idle), "(VmHWM)");
    line(
        &format!("daemon peak, {n} gets (VmHWM)"),
        mib(hwm),
        &verdict(hwm, 24),
    );
    line("daemon RSS right after the burst", mib(after), "(VmRSS)");
    line("daemon RSS 2 s after the burst", mib(later), "(VmRSS)");
    line(
        "  burst: answered / errors",
        format!("{}/{}", b.answered.len(), b.error_count()),
        &b.error_summary(),
    );
    println!("peak memory of one process, median of {runs} runs: VmHWM at exit (ru_maxrss)");
    for (name, (hwm, maxrss)) in [
        ("  git-credential-azdo get", client_peak),
        ("  git credential-cache get", cache_peak),
        ("  /bin/true", floor_peak),
    ] {
        line(name, mib(hwm), &format!("({})", mib(maxrss)));
    }
    let client_size = file_size(&client);
    line("client binary", mib(client_size), &verdict(client_size, 1));
    line("daemon binary", mib(file_size(Path::new(DAEMON))), "");
    println!("client: {}", client.display());
    println!("daemon: {DAEMON}");
    if b.error_count() > 0 {
        println!("daemon log since the burst (not DEBUG; last 30 lines):");
        for l in log_since(&w, log_from, 30) {
            println!("  {l}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// b7: a simulated day

#[test]
#[ignore]
fn b7_simulated_day() {
    let day = Duration::from_secs(setting("BENCH_DAY_SECS", 120));
    let every = Duration::from_millis(50);
    // 1/720: a 72-minute token lives 6 s, a day passes in 120 s.
    let lifetime = Duration::from_secs(6);
    let client = client_exe();
    let w = World::new();
    w.entra.set_token_lifetime(lifetime);
    w.login(ORG);
    let input = get_input(&w, true);
    let log_from = w.log().len();
    let before = w.entra.stats();

    let (mut latencies, mut errors) = (Vec::new(), 0usize);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < day {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += every;
        let t = Instant::now();
        let o = run_with_input(w.command(&client).arg("get"), input.as_bytes());
        latencies.push(t.elapsed());
        if token(&o).is_none() {
            errors += 1;
        }
    }
    let wall = start.elapsed();
    let after = w.entra.stats();
    let refreshes = after.refresh_ok - before.refresh_ok;
    let refused = after.refresh_refused - before.refresh_refused;
    let waited = count_in_log(&w, log_from, "get waits for a refresh");
    let failed = count_in_log(&w, log_from, "refresh failed");
    let lifetimes = wall.as_secs_f64() / lifetime.as_secs_f64();

    section("a simulated day at 1/720: a token lives 6 s (72 min), a day 120 s");
    println!("client: {}", client.display());
    println!(
        "a get every {} ms for {:.1} s ({:.1} simulated hours)",
        every.as_millis(),
        wall.as_secs_f64(),
        wall.as_secs_f64() * 720.0 / 3600.0
    );
    line("gets", latencies.len(), "");
    line("  without a credential", errors, "");
    line("refreshes (Entra refresh_ok)", refreshes, "");
    line(
        "  refused / failed (daemon log)",
        format!("{refused}/{failed}"),
        "",
    );
    line(
        "refreshes per token lifetime",
        format!("{:.2}", refreshes as f64 / lifetimes),
        &format!("{lifetimes:.1} lifetimes"),
    );
    line("gets that waited on a refresh", waited, "target 0");
    println!("get latency, ms");
    latency_table(
        &[Col::Median, Col::P99, Col::Max],
        &mut [("  git-credential-azdo get", &mut latencies)],
    );
}

// ---------------------------------------------------------------------------------------------
// b8: release profiles side by side

/// `get` through client binaries built with different release profiles, alternating, with
/// git-credential-cache and the process floor beside them: `BENCH_VARIANTS=name=path,...`
/// (docs/benchmarks.md shows how the variants are built). Skipped without it.
#[test]
#[ignore]
fn b8_release_profiles() {
    let Ok(spec) = std::env::var("BENCH_VARIANTS") else {
        println!("\nb8: set BENCH_VARIANTS=name=path,... to compare release profiles");
        return;
    };
    let variants: Vec<(String, std::path::PathBuf)> = spec
        .split(',')
        .filter_map(|v| v.split_once('='))
        .map(|(n, p)| (n.to_string(), std::path::PathBuf::from(p)))
        .collect();
    let rounds: usize = setting("BENCH_ROUNDS", 300);
    let w = warm_world();
    let sides: Vec<_> = variants.iter().map(|(_, p)| (&w, p.as_path())).collect();
    let (mut times, mut cached, mut floor) = get_rounds(&sides, rounds);
    section("release profiles: one get, alternating");
    for (name, path) in &variants {
        println!("{name:<36} {:>9}  {}", mib(file_size(path)), path.display());
    }
    println!("{rounds} rounds; milliseconds per get (spawn + answer)");
    let mut rows: Vec<(&str, &mut Vec<Duration>)> = variants
        .iter()
        .zip(times.iter_mut())
        .map(|((n, _), t)| (n.as_str(), t))
        .collect();
    rows.push(("git credential-cache get", &mut cached));
    rows.push(("/bin/true (process floor)", &mut floor));
    latency_table(&[Col::Median, Col::P90, Col::P99], &mut rows);
}

// ---------------------------------------------------------------------------------------------
// b9: the hot path, profiled

/// What one cached `get` costs inside the client: heap allocations (valgrind) and system calls
/// (strace -c), for a built-in host so no configuration is needed. Skipped where valgrind or
/// strace is missing.
#[test]
#[ignore]
fn b9_hot_path_profile() {
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !have("valgrind") || !have("strace") {
        println!("\nb9: needs valgrind and strace");
        return;
    }
    let client = client_exe();
    let w = warm_world();
    let input = format!(
        "capability[]=authtype\nprotocol=https\nhost=dev.azure.com\npath={ORG}/p/_git/r\n\n"
    );
    let exec_path = common::gits::machine().exec_path;
    let mut vg = w.command("valgrind");
    vg.arg(&client).arg("get").env("GIT_EXEC_PATH", &exec_path);
    let out = run_with_input(&mut vg, input.as_bytes());
    assert!(
        text(&out.stdout).contains("password="),
        "{}",
        text(&out.stderr)
    );
    let report = text(&out.stderr);
    let usage = report
        .lines()
        .find(|l| l.contains("total heap usage"))
        .map(|l| {
            l.split("total heap usage:")
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "?".into());
    let mut st = w.command("strace");
    st.args(["-c", "-f"])
        .arg(&client)
        .arg("get")
        .env("GIT_EXEC_PATH", &exec_path);
    let out = run_with_input(&mut st, input.as_bytes());
    assert!(
        text(&out.stdout).contains("password="),
        "{}",
        text(&out.stderr)
    );
    let summary = text(&out.stderr);
    let total = summary
        .lines()
        .find(|l| l.trim_end().ends_with("total"))
        .unwrap_or("")
        .to_string();
    section("the hot path: one cached get, inside the client");
    println!("client: {}", client.display());
    line("heap (valgrind)", "", &usage);
    println!("system calls (strace -c -f), the total line and the busiest:");
    println!("  {}", total.trim());
    for l in summary
        .lines()
        .skip_while(|l| !l.starts_with("------"))
        .skip(1)
        .take(8)
    {
        println!("  {}", l.trim_end());
    }
}
