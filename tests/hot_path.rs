//! What a `get` does when the daemon holds a token: the client's system calls, traced with
//! strace(1). The hot path reads no configuration file, starts no process (no git, no
//! daemon), and makes one connection to the daemon's socket; the daemon learns the asking
//! git's version once, not per `get`.

mod common;

use common::requires::{Piece, require};

use common::gits;
use common::harness::{CLIENT, World, text, token};

#[test]
fn a_cached_get_opens_no_configuration_and_starts_no_process() {
    if !require(
        &[Piece::Strace, Piece::GitNewest],
        "the hot path traced with strace",
    ) {
        return;
    }
    let w = World::new();
    w.login("contoso");
    // Warm: the daemon runs and holds the token.
    assert!(token(&w.get("contoso", true)).is_some());
    let trace = w.path("strace.out");
    // A built-in host, so nothing legitimately needs the configuration file.
    let input =
        "capability[]=authtype\nprotocol=https\nhost=dev.azure.com\npath=contoso/p/_git/r\n\n";
    let mut cmd = w.command("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=execve,clone,clone3,fork,vfork,openat,open,connect",
        "-o",
    ])
    .arg(&trace)
    .arg(CLIENT)
    .arg("get")
    // As git 2.55 starts it: the client names the asking git (one stat, no process).
    .env("GIT_EXEC_PATH", gits::newest().exec_path);
    let out = common::harness::run_with_input(&mut cmd, input.as_bytes());
    assert!(
        out.status.success(),
        "strace: {}\n{}",
        text(&out.stderr),
        w.log()
    );
    assert!(
        text(&out.stdout).contains("credential="),
        "answered from the cache: {}",
        text(&out.stdout)
    );
    let calls = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("execve("), 1, "only the client itself:\n{calls}");
    for spawn in ["clone(", "clone3(", "fork(", "vfork("] {
        assert_eq!(count(spawn), 0, "no process or thread started:\n{calls}");
    }
    assert_eq!(count("config.toml"), 0, "no configuration read:\n{calls}");
    assert_eq!(
        count("connect("),
        1,
        "one connection, to the daemon:\n{calls}"
    );
    assert!(calls.contains("daemon.sock"), "{calls}");
    // Opened files: the loader's libraries, and /proc/self/maps, which glibc reads when Rust's
    // runtime asks where the main thread's stack is (before `main`).
    let opened: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("open") && !l.contains("ENOENT"))
        .filter(|l| !l.contains(".so") && !l.contains("\"/proc/self/maps\""))
        .collect();
    assert!(
        opened.is_empty(),
        "files opened on the hot path: {opened:#?}"
    );
    // Bearer, because the daemon knows this git; it ran its `git --version` once, for the
    // warming get, and not for any get since.
    assert!(text(&out.stdout).contains("authtype=Bearer"));
    for _ in 0..3 {
        assert!(token(&w.get("contoso", true)).is_some());
    }
    let log = w.log();
    assert_eq!(log.matches("learned a git's version").count(), 1, "{log}");
}
