//! The daemon's process, as its pid file names it: whether that process is this user's
//! `git-credential-azdo-daemon` (checked before anything is signalled), whether it is stopped
//! (SIGSTOP, a debugger, a frozen container), and ending one that no longer answers.
//! Linux reads `/proc`; elsewhere nothing is found, and nothing is ever signalled.

use crate::paths;
use std::time::{Duration, Instant};

/// The daemon the pid file names, when that process runs as this user and is the daemon.
pub fn running() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(paths::pid_path())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (pid > 1 && is_our_daemon(pid)).then_some(pid)
}

#[cfg(target_os = "linux")]
fn is_our_daemon(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if euid != Some(unsafe { libc::geteuid() }) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
    name == b"git-credential-azdo-daemon"
}

#[cfg(not(target_os = "linux"))]
fn is_our_daemon(_pid: i32) -> bool {
    false
}

/// Whether the process is stopped (state `T` or `t`): it will not answer until continued.
#[cfg(target_os = "linux")]
pub fn is_stopped(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')', since comm may hold one.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "T" || s == "t")
}

#[cfg(not(target_os = "linux"))]
pub fn is_stopped(_pid: i32) -> bool {
    false
}

fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Ends this user's daemon `pid`, checked again just before: asks it to stop (SIGTERM, and
/// SIGCONT so that a stopped one can act on it), then kills it when it has not gone within
/// two seconds. True when it is gone.
pub fn end(pid: i32) -> bool {
    if !is_our_daemon(pid) {
        return false;
    }
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) && is_our_daemon(pid) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && alive(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    !alive(pid)
}
