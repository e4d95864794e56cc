//! The daemon's life as a user meets it: a daemon that stops answering (stopped by SIGSTOP, a
//! debugger or a frozen container; or hung) is ended and replaced instead of making every git
//! command wait out the client's deadline, and `stop` ends one that does not answer, once it has
//! checked that the pid file names this user's daemon.

mod common;

use common::harness::{World, ok, text, wait_until};
use std::time::Duration;

fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A fetch used to wait 45 s for the stopped daemon and fail ("did not answer within 45s"), and
/// so did every git command after it. Now the client sees the daemon is stopped, ends it, starts
/// a new one, and git goes on.
#[test]
fn a_stopped_daemon_is_replaced_and_git_goes_on() {
    let w = World::new();
    let url = w.ado.create_repo("contoso", "p", "r");
    w.login("contoso");
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    let old = w.daemon_pid().expect("a daemon");
    assert_eq!(unsafe { libc::kill(old, libc::SIGSTOP) }, 0);
    let fetch = w.git(&["fetch"], Some(&w.path("a")));
    ok(&w, &fetch, "fetch with the daemon stopped");
    let new = w.daemon_pid().expect("a new daemon");
    assert_ne!(new, old);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(old)),
        "the stopped daemon is still there"
    );
}

/// `stop` used to fail with "did not answer within 10s" against a stopped daemon, the very
/// fix troubleshooting.md gave for it.
#[test]
fn stop_ends_a_daemon_that_does_not_answer() {
    let w = World::new();
    ok(&w, &w.client(&["status"], ""), "status starts the daemon");
    let pid = w.daemon_pid().expect("a daemon");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let stop = w.client(&["stop"], "");
    ok(&w, &stop, "stop");
    assert!(
        text(&stop.stderr).contains(&format!(
            "the daemon (pid {pid}) was not answering; ended it"
        )),
        "{}",
        text(&stop.stderr)
    );
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    ok(
        &w,
        &w.client(&["status"], ""),
        "status after stop starts a new daemon",
    );
}

/// The pid file is only a name: `stop` signals nothing that is not this user's daemon. Here a
/// socket nobody answers on, and a pid file naming another process of the user.
#[test]
fn stop_signals_nothing_but_our_daemon() {
    let w = World::new();
    let dir = w.runtime_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let _silent = std::os::unix::net::UnixListener::bind(dir.join("daemon.sock")).unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(dir.join("daemon.pid"), format!("{}\n", other.id())).unwrap();
    let stop = w.client(&["stop"], "");
    assert!(!stop.status.success());
    assert!(
        text(&stop.stderr).contains("did not answer"),
        "{}",
        text(&stop.stderr)
    );
    assert!(
        other.try_wait().unwrap().is_none(),
        "stop signalled a process that is not the daemon"
    );
    let _ = other.kill();
    let _ = other.wait();
}
