//! Where sign-ins survive: the OS keyring (a real Secret Service: gnome-keyring on a private
//! D-Bus session), the explicit file store, and memory only when no keyring answers.

mod common;

use common::requires::{Piece, require};

use common::harness::{World, last_refresh_outcome, ok, text, token};
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};

/// gnome-keyring's Secret Service on a private D-Bus session bus, unlocked.
struct SecretService {
    child: Child,
    address: String,
}

impl SecretService {
    fn start(w: &World) -> SecretService {
        let mut child = w
            .command("dbus-run-session")
            .args([
                "--",
                "sh",
                "-c",
                "eval \"$(printf pw | gnome-keyring-daemon --unlock --components=secrets)\"; \
                 echo \"BUS=$DBUS_SESSION_BUS_ADDRESS\"; exec sleep 600",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("dbus-run-session (apt-get install dbus gnome-keyring)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("BUS=")
            .expect("bus address")
            .to_string();
        assert!(!address.is_empty(), "no session bus");
        SecretService { child, address }
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[test]
fn os_keyring_keeps_the_sign_in_across_a_daemon_kill() {
    if !require(
        &[Piece::SecretService],
        "the OS keyring (a real Secret Service)",
    ) {
        return;
    }
    let mut w = World::with_store("auto");
    let ss = SecretService::start(&w);
    w.set_env("DBUS_SESSION_BUS_ADDRESS", &ss.address);
    let url = w.ado.create_repo("contoso", "web", "site");
    let login = w.login("contoso");
    assert!(
        text(&login.stderr).contains("Refresh token kept in: OS keyring"),
        "{}",
        text(&login.stderr)
    );
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    // Nothing on disk but in the keyring.
    assert!(
        !w.path("data/git-credential-azdo/refresh-tokens.json")
            .exists()
    );
    let lookup = || {
        let out = w
            .command("secret-tool")
            .args(["lookup", "service", "git-credential-azdo"])
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert!(
        lookup().starts_with("1.A"),
        "the refresh token is in the keyring"
    );
    w.kill_daemon(libc::SIGKILL);
    ok(
        &w,
        &w.git(&["fetch"], Some(&w.path("a"))),
        "fetch after kill",
    );
    assert_eq!(w.entra.stats().devicecode_requests, 1);
    assert_eq!(w.entra.stats().refresh_refused, 0);
    // logout removes what it stored: the next daemon has nothing to refresh with.
    ok(&w, &w.client(&["logout", "--org", "contoso"], ""), "logout");
    assert_eq!(lookup(), "", "logout removed the keyring entry");
    let out = w.get("contoso", true);
    assert!(out.stdout.is_empty());
}

#[test]
fn without_a_keyring_auto_keeps_tokens_in_memory_and_says_so() {
    let w = World::with_store("auto");
    let login = w.login("contoso");
    let err = text(&login.stderr);
    assert!(err.contains("memory only"), "{err}");
    assert!(
        err.contains("store = \"file\""),
        "says how to keep it: {err}"
    );
    assert!(
        !w.path("data/git-credential-azdo/refresh-tokens.json")
            .exists()
    );
    let status = w.client(&["status", "--json"], "");
    assert!(text(&status.stdout).contains("memory only"));
    assert!(token(&w.get("contoso", true)).is_some());
    // Documented: a memory-only sign-in ends with the daemon.
    w.kill_daemon(libc::SIGKILL);
    let out = w.get("contoso", true);
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("login --org contoso"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_file_store_is_explicit_private_and_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::with_store("file");
    let login = w.login("contoso");
    assert!(text(&login.stderr).contains("mode 0600"));
    let p = w.path("data/git-credential-azdo/refresh-tokens.json");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read_to_string(&p).unwrap();
    w.kill_daemon(libc::SIGTERM);
    assert!(token(&w.get("contoso", true)).is_some());
    // The restart redeemed the refresh token and persisted its rotated successor.
    let after = std::fs::read_to_string(&p).unwrap();
    assert_ne!(before, after);
}

/// The pid of the process owning `org.freedesktop.secrets` on the world's session bus
/// (waiting for the keyring to claim the name).
fn keyring_pid(w: &World) -> i32 {
    let mut last = String::new();
    for _ in 0..100 {
        let out = w
            .command("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
                "string:org.freedesktop.secrets",
            ])
            .output()
            .unwrap();
        if let Some(pid) = text(&out.stdout)
            .split_whitespace()
            .last()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        last = text(&out.stderr);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no keyring pid: {last}")
}

#[test]
fn a_keyring_that_does_not_answer_never_blocks_the_daemon() {
    if !require(&[Piece::SecretService], "a keyring that stops answering") {
        return;
    }
    let mut w = World::with_store("auto");
    let ss = SecretService::start(&w);
    w.set_env("DBUS_SESSION_BUS_ADDRESS", &ss.address);
    // A Secret Service that takes calls and never answers (as a locked collection waiting
    // on a prompt nobody sees).
    let pid = keyring_pid(&w);
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t = std::time::Instant::now();
    let login = w.login("contoso");
    let err = text(&login.stderr);
    assert!(err.contains("memory only"), "{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    assert!(token(&w.get("contoso", true)).is_some());
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

#[test]
fn a_keyring_that_fails_during_a_rotation_is_reported_and_the_sign_in_kept() {
    if !require(
        &[Piece::SecretService],
        "a keyring failing during a rotation",
    ) {
        return;
    }
    use std::time::Duration;
    let mut w = World::with_store("auto");
    let ss = SecretService::start(&w);
    w.set_env("DBUS_SESSION_BUS_ADDRESS", &ss.address);
    // Entra keeps a redeemed refresh token usable: the one in the keyring stays good.
    w.entra.set_strict_rotation(false);
    w.entra.set_token_lifetime(Duration::from_secs(8));
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    let repo = w.path("a");
    // The keyring stops answering before the next rotation (6 s into the token's life).
    let pid = keyring_pid(&w);
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let reported = common::harness::wait_until(Duration::from_secs(40), || {
        last_refresh_outcome(&w, "contoso").contains("could not be saved")
    });
    let outcome = last_refresh_outcome(&w, "contoso");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(reported, "{outcome}");
    assert!(outcome.contains("did not answer"), "{outcome}");
    assert!(w.log().contains("could not save the rotated refresh token"));
    // Served meanwhile from the token the daemon keeps in memory, and after a crash from the
    // one in the keyring, with no new sign-in.
    ok(&w, &w.git(&["fetch"], Some(&repo)), "fetch");
    w.kill_daemon(libc::SIGKILL);
    ok(&w, &w.git(&["fetch"], Some(&repo)), "fetch after a crash");
    assert_eq!(w.entra.stats().devicecode_requests, 1, "no new sign-in");
    assert!(text(&w.client(&["status"], "").stdout).contains("OS keyring"));
}
