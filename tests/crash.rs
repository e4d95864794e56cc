//! Crash safety: the daemon is SIGKILLed at each step of a refresh with token rotation, eight
//! daemons start at the same moment, the disk fills up under the file store; in every case the
//! stored state stays whole and the sign-in is kept, with no new sign-in.
//!
//! The daemon is stopped at an exact step with `GIT_CREDENTIAL_AZDO_STOP_AT` (debug builds
//! only; see `src/daemon/crashpoint.rs`).
//!
//! Entra ID does not make a redeemed refresh token unusable: the one the store still holds
//! when the daemon dies between Entra's answer and the end of the write keeps working. The mock
//! is set to that behaviour for those two steps; its stricter default (a redeemed token is
//! refused, AADSTS70008) stays on where the daemon must not redeem one token twice.

mod common;

use common::requires::{Piece, require};

use common::harness::{World, last_refresh_outcome, ok, text, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const STOP_AT: &str = "GIT_CREDENTIAL_AZDO_STOP_AT";

fn data_dir(w: &World) -> PathBuf {
    w.path("data/git-credential-azdo")
}

/// The refresh tokens in the file store, by account; panics unless the file is whole JSON.
fn stored_tokens(w: &World) -> serde_json::Map<String, serde_json::Value> {
    let path = data_dir(w).join("refresh-tokens.json");
    let bytes = std::fs::read(&path).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not whole: {e}", path.display()));
    json.as_object().expect("a map").clone()
}

/// The one stored refresh token.
fn stored_token(w: &World) -> String {
    let map = stored_tokens(w);
    assert_eq!(map.len(), 1, "one account");
    map.values().next().unwrap().as_str().unwrap().to_string()
}

/// Files of unfinished writes (`NAME.tmp.PID`) in the data directory.
fn unfinished_writes(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

fn records_are_whole(w: &World) {
    let path = data_dir(w).join("accounts.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not whole: {e}", path.display()));
    assert_eq!(json["accounts"].as_object().map(|a| a.len()), Some(1));
}

/// Signs in, clones, kills the daemon; starts a new one that stops at `step` of its first
/// refresh, SIGKILLs it there, and has git fetch through a third. Returns the world, the
/// repository, and the refresh token stored before the crash.
fn killed_at(step: &str, strict: bool) -> (World, PathBuf, String) {
    let mut w = World::new();
    w.entra.set_strict_rotation(strict);
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    let repo = w.path("a");
    let before = stored_token(&w);
    w.kill_daemon(libc::SIGKILL);
    // A new daemon's refresher redeems the stored refresh token as soon as it starts.
    w.set_env(STOP_AT, step);
    ok(&w, &w.client(&["status"], ""), "status starts a daemon");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let log = w.log();
            log.contains("stopped at a crash point") && log.contains(step)
        }),
        "the daemon never reached {step}: {}",
        w.log()
    );
    w.kill_daemon(libc::SIGKILL);
    w.set_env(STOP_AT, "");
    (w, repo, before)
}

/// After the crash: the store and the records are whole, git fetches with no new sign-in,
/// and the rotated refresh token is stored.
fn survives(w: &World, repo: &Path, before: &str) {
    records_are_whole(w);
    assert!(!stored_token(w).is_empty());
    ok(w, &w.git(&["fetch"], Some(repo)), "fetch after the crash");
    assert_eq!(w.entra.stats().devicecode_requests, 1, "no new sign-in");
    assert!(
        wait_until(Duration::from_secs(5), || stored_token(w) != before),
        "the rotated refresh token was never stored"
    );
    assert!(
        unfinished_writes(&data_dir(w)).is_empty(),
        "{:?}",
        unfinished_writes(&data_dir(w))
    );
}

#[test]
fn killed_before_the_request_the_stored_refresh_token_is_redeemed_once() {
    let (w, repo, before) = killed_at("refresh-before-request", true);
    assert_eq!(stored_token(&w), before, "nothing was sent");
    survives(&w, &repo, &before);
    // The mock refuses a redeemed refresh token: nothing was redeemed twice.
    assert_eq!(w.entra.stats().refresh_refused, 0);
}

#[test]
fn killed_after_entra_answered_the_stored_refresh_token_still_works() {
    let (w, repo, before) = killed_at("refresh-after-response", false);
    // Entra issued a new refresh token the daemon never kept; the old one is still stored.
    assert!(w.entra.stats().refresh_ok >= 1);
    assert_eq!(stored_token(&w), before);
    survives(&w, &repo, &before);
}

#[test]
fn killed_while_writing_the_store_leaves_the_old_file_whole() {
    let (w, repo, before) = killed_at("store-write", false);
    // Killed with the new file written beside the old one, not yet renamed over it.
    let left = unfinished_writes(&data_dir(&w));
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(stored_token(&w), before, "the old file is untouched");
    survives(&w, &repo, &before);
    assert!(
        w.log()
            .contains("removed an unfinished write of a stopped daemon"),
        "{}",
        w.log()
    );
}

#[test]
fn eight_daemons_started_at_once_leave_one_that_redeems_the_refresh_token_once() {
    let w = World::new();
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    let repo = w.path("a");
    let before = stored_token(&w);
    // Killed: its socket and pid file are left behind, as after a crash.
    w.kill_daemon(libc::SIGKILL);
    let refreshed = w.entra.stats().refresh_ok;
    let exe = env!("CARGO_BIN_EXE_git-credential-azdo-daemon");
    let start = std::sync::Barrier::new(8);
    let lines: Vec<(String, std::process::ExitStatus)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut c: Command = w.command(exe);
                    c.stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null());
                    start.wait();
                    let mut child = c.spawn().unwrap();
                    let mut line = String::new();
                    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
                    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
                    if line.starts_with("ready") {
                        // The survivor: leave it running, reap it later.
                        std::mem::forget(child);
                        return (line, std::process::ExitStatus::default());
                    }
                    (line, child.wait().unwrap())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ready = lines.iter().filter(|(l, _)| l.starts_with("ready")).count();
    let busy: Vec<_> = lines
        .iter()
        .filter(|(l, _)| l.starts_with("busy"))
        .collect();
    assert_eq!(ready, 1, "{lines:?}");
    assert_eq!(busy.len(), 7, "{lines:?}");
    assert!(busy.iter().all(|(_, s)| s.success()), "{lines:?}");
    ok(
        &w,
        &w.git(&["fetch"], Some(&repo)),
        "fetch through the survivor",
    );
    assert_eq!(w.entra.stats().refresh_ok, refreshed + 1, "one redemption");
    assert_eq!(w.entra.stats().refresh_refused, 0, "none redeemed twice");
    assert_eq!(w.entra.stats().devicecode_requests, 1, "no new sign-in");
    records_are_whole(&w);
    assert_ne!(stored_token(&w), before, "the rotated token is stored");
    assert!(unfinished_writes(&data_dir(&w)).is_empty());
}

/// A small tmpfs mounted over a directory, unmounted (lazily) when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root with CAP_SYS_ADMIN (CI runs as root): {}",
            text(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        let out = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.0.join("filler").display()))
            .output()
            .unwrap();
        assert!(
            text(&out.stderr).contains("No space left"),
            "{}",
            text(&out.stderr)
        );
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_reported_and_the_stored_refresh_token_stays_usable() {
    if !require(
        &[Piece::Root],
        "a full disk during a rotation (a small tmpfs)",
    ) {
        return;
    }
    let w = World::new();
    // The daemon's data directory on a disk of 256 KiB (dropped before the world).
    let disk = SmallDisk::mount(&w.path("data"), "256k");
    w.entra.set_strict_rotation(false);
    w.entra.set_token_lifetime(Duration::from_secs(8));
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    let repo = w.path("a");
    let before = stored_token(&w);
    disk.fill();
    // The next rotation (three quarters into the token's 8 s) cannot be written.
    assert!(
        wait_until(Duration::from_secs(30), || last_refresh_outcome(
            &w, "contoso"
        )
        .contains("could not be saved")),
        "{}",
        last_refresh_outcome(&w, "contoso")
    );
    let outcome = last_refresh_outcome(&w, "contoso");
    assert!(outcome.contains("No space left on device"), "{outcome}");
    assert!(
        w.log().contains("could not save the rotated refresh token"),
        "{}",
        w.log()
    );
    // Git is still served, from the new token the daemon keeps in memory.
    ok(&w, &w.git(&["fetch"], Some(&repo)), "fetch on a full disk");
    // The stored one is untouched and whole, with no half-written file beside it.
    assert_eq!(stored_token(&w), before);
    assert!(unfinished_writes(&data_dir(&w)).is_empty());
    // A crash now loses nothing: the next daemon redeems the stored token.
    w.kill_daemon(libc::SIGKILL);
    ok(
        &w,
        &w.git(&["fetch"], Some(&repo)),
        "fetch after a crash on a full disk",
    );
    assert_eq!(w.entra.stats().devicecode_requests, 1, "no new sign-in");
    // Space again: the next rotation is stored.
    disk.free();
    assert!(
        wait_until(Duration::from_secs(30), || stored_token(&w) != before),
        "{}",
        last_refresh_outcome(&w, "contoso")
    );
    drop(disk);
}

/// A rotated refresh token is written before the new access token is handed out. With the
/// daemon held in the middle of that write, a `get` that arrives meanwhile gets nothing yet
/// (it waits for the refresh in flight); once the write is done, it gets the new token, and
/// the store already holds the new refresh token. (Publishing the token before the write, by
/// hand, hands it out while the write is held, and this test fails.)
#[test]
fn no_get_sees_a_new_token_before_its_refresh_token_is_stored() {
    let mut w = World::new();
    w.login("contoso");
    let before = stored_token(&w);
    ok(&w, &w.client(&["stop"], ""), "stop");
    w.set_env(STOP_AT, "store-write");
    ok(&w, &w.client(&["status"], ""), "status starts a daemon");
    assert!(
        wait_until(Duration::from_secs(20), || w
            .log()
            .contains("stopped at a crash point")),
        "{}",
        w.log()
    );
    let answered = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let get = s.spawn(|| {
            let out = w.get("contoso", true);
            answered.store(true, std::sync::atomic::Ordering::SeqCst);
            out
        });
        // Held: once the get has reached the daemon, it waits, and the store still holds the
        // old refresh token.
        let arrived = wait_until(Duration::from_secs(30), || {
            answered.load(std::sync::atomic::Ordering::SeqCst)
                || w.log().contains("get waits for a refresh")
        });
        assert!(arrived, "{}", w.log());
        assert!(
            !answered.load(std::sync::atomic::Ordering::SeqCst),
            "a get was answered while the rotated refresh token was not stored yet"
        );
        assert_eq!(stored_token(&w), before);
        std::fs::write(w.runtime_dir().join("crash-point-release"), "").unwrap();
        let out = get.join().unwrap();
        let token = common::harness::token(&out).expect("a token once the write is done");
        assert!(w.entra.validate(&token).is_some());
        assert_ne!(
            stored_token(&w),
            before,
            "answered before the new refresh token was stored"
        );
    });
    w.set_env(STOP_AT, "");
}
