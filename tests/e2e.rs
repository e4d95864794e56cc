//! End to end: a real git clones, fetches and pushes through `credential.helper=azdo`, the real
//! client and a real daemon, against mock Entra ID and a mock Azure DevOps in front of
//! `git http-backend`.

mod common;

use common::requires::{Piece, require};

use common::Scheme;
use common::gits;
use common::harness::{World, field, ok, text, token};
use std::time::Duration;

/// Clones `url` into `dir/name`, commits a file, pushes, and returns the clone's path.
fn clone_commit_push(w: &World, git: &str, url: &str, name: &str) -> std::path::PathBuf {
    let out = w.git_with(git, &["clone", url, name], None);
    ok(w, &out, "clone");
    let repo = w.path(name);
    std::fs::write(repo.join(format!("{name}.txt")), name).unwrap();
    ok(w, &w.git_with(git, &["add", "."], Some(&repo)), "add");
    ok(
        w,
        &w.git_with(git, &["commit", "-m", name], Some(&repo)),
        "commit",
    );
    ok(
        w,
        &w.git_with(git, &["push", "origin", "HEAD:main"], Some(&repo)),
        "push",
    );
    repo
}

#[test]
fn clone_fetch_push_with_bearer() {
    if !require(
        &[Piece::GitNewest],
        "clone, fetch and push with Bearer through git 2.54+",
    ) {
        return;
    }
    // git 2.54+ sends a Bearer credential on every request, its probe POST included.
    let git = gits::newest();
    let w = World::new();
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    assert_eq!(w.entra.stats().devicecode_requests, 1);
    let a = clone_commit_push(&w, git.path(), &url, "a");
    // A second clone sees the push; a fetch in the first sees the second's push.
    let b = clone_commit_push(&w, git.path(), &url, "b");
    assert!(b.join("a.txt").exists());
    ok(
        &w,
        &w.git_with(
            git.path(),
            &["pull", "--ff-only", "origin", "main"],
            Some(&a),
        ),
        "pull",
    );
    assert!(a.join("b.txt").exists());
    let accepted = w.ado.auth_schemes_accepted();
    assert!(!accepted.is_empty());
    assert!(
        accepted.iter().all(|s| *s == Scheme::Bearer),
        "git {:?} should send Bearer: {accepted:?}",
        git.version
    );
    // Signed in once; no further sign-in was needed.
    assert_eq!(w.entra.stats().devicecode_requests, 1);
}

#[test]
fn clone_with_basic_on_git_without_authtype() {
    if !require(
        &[Piece::GitDebian],
        "clone and push with Basic through git 2.39",
    ) {
        return;
    }
    // Debian's git (2.39) predates capability[]=authtype: the token goes as a Basic password.
    let old_git = gits::debian();
    let w = World::new();
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    clone_commit_push(&w, old_git.path(), &url, "a");
    let accepted = w.ado.auth_schemes_accepted();
    assert!(
        accepted.contains(&Scheme::Basic) && !accepted.contains(&Scheme::Bearer),
        "{accepted:?}"
    );
}

#[test]
fn get_answers_bearer_or_basic_with_expiry() {
    if !require(&[Piece::GitNewest], "the Bearer answer to git 2.54+") {
        return;
    }
    let w = World::new();
    w.login("contoso");
    let bearer = w.get("contoso", true);
    ok(&w, &bearer, "get");
    assert_eq!(field(&bearer, "authtype").as_deref(), Some("Bearer"));
    assert_eq!(field(&bearer, "ephemeral").as_deref(), Some("1"));
    let token = token(&bearer).unwrap();
    assert!(w.entra.validate(&token).is_some());
    let expiry: u64 = field(&bearer, "password_expiry_utc")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expiry, w.entra.validate(&token).unwrap().exp);
    let basic = w.get("contoso", false);
    assert_eq!(field(&basic, "password"), Some(token));
    assert!(field(&basic, "username").is_some_and(|u| !u.is_empty()));
    assert!(field(&basic, "password_expiry_utc").is_some());
}

#[test]
fn fetch_after_the_access_token_expired_needs_no_sign_in() {
    let w = World::new();
    w.entra.set_token_lifetime(Duration::from_secs(3));
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    let repo = clone_commit_push(&w, "git", &url, "a");
    let first = token(&w.get("contoso", true)).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        w.entra.validate(&first).is_none(),
        "the first token has expired"
    );
    ok(&w, &w.git(&["fetch"], Some(&repo)), "fetch after expiry");
    assert!(w.entra.stats().refresh_ok >= 1);
    assert_eq!(w.entra.stats().devicecode_requests, 1);
}

#[test]
fn fetch_after_sigkill_and_restart_needs_no_sign_in() {
    let w = World::new();
    let url = w.ado.create_repo("contoso", "web", "site");
    w.login("contoso");
    let repo = clone_commit_push(&w, "git", &url, "a");
    let old = w.kill_daemon(libc::SIGKILL);
    // The killed daemon left its socket behind.
    assert!(w.runtime_dir().join("daemon.sock").exists());
    ok(&w, &w.git(&["fetch"], Some(&repo)), "fetch after restart");
    let new = w.daemon_pid().expect("a new daemon");
    assert_ne!(old, new);
    assert_eq!(w.entra.stats().devicecode_requests, 1);
    // The restarted daemon redeemed the refresh token the old one had rotated and saved:
    // the mock refuses a spent refresh token.
    assert_eq!(w.entra.stats().refresh_refused, 0);
    assert!(w.log().contains("removed a stale socket"));
}

#[test]
fn hosts_outside_the_allowlist_get_nothing_and_the_daemon_is_not_contacted() {
    let w = World::new();
    for input in [
        "protocol=https\nhost=github.com\npath=o/r\n",
        "protocol=http\nhost=dev.azure.com\npath=o/p/_git/r\n",
        "protocol=http\nhost=contoso.visualstudio.com\n",
        &format!("protocol=http\nhost={}\npath=o/p/_git/r\n", w.ado.host()),
        "protocol=https\nhost=dev.azure.com.evil.example\npath=o/p\n",
        "protocol=https\nhost=evil.example\nusername=contoso\n",
    ] {
        let out = w.client(&["get"], input);
        assert!(out.status.success(), "{input}");
        assert!(out.stdout.is_empty(), "{input}");
        assert!(out.stderr.is_empty(), "{input}: {}", text(&out.stderr));
    }
    assert!(w.daemon_pid().is_none());
    assert!(!w.runtime_dir().join("daemon.sock").exists());
}

#[test]
fn malformed_input_gets_a_clear_error_and_no_output() {
    let w = World::new();
    let long = format!("protocol=https\npath={}\n", "a".repeat(70_000));
    for (input, expect) in [
        ("protocol=https\nhost dev.azure.com\n", "no '='"),
        ("protocol=https\nhost=dev.azure.com\0x\n", "NUL"),
        (long.as_str(), "longer than 65535"),
        ("protocol=https\npath=o/p/_git/r\n", "no 'host'"),
        ("protocol=https\r\nhost=dev.azure.com\n", "carriage return"),
    ] {
        let out = w.client(&["get"], input);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = text(&out.stderr);
        assert!(err.contains(expect), "{expect}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(w.daemon_pid().is_none());
}

#[test]
fn no_account_without_a_terminal_names_the_command_to_run() {
    let w = World::new();
    let out = w.get("fabrikam", true);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("git-credential-azdo login --org fabrikam"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // And git itself fails fast instead of waiting for a person.
    let url = w.ado.create_repo("fabrikam", "p", "r");
    let t = std::time::Instant::now();
    let out = w.git(&["clone", &url, "x"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("login --org fabrikam"));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(w.entra.stats().devicecode_requests, 0);
}

#[test]
fn credential_interactive_false_never_prompts() {
    let mut w = World::new();
    w.set_env("GIT_TERMINAL_PROMPT", "1");
    ok(
        &w,
        &w.git(
            &["config", "--global", "credential.interactive", "false"],
            None,
        ),
        "config",
    );
    let out = w.get("fabrikam", true);
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("login --org fabrikam"));
    assert_eq!(w.entra.stats().devicecode_requests, 0);
}

#[test]
fn without_an_organization_the_error_says_to_run_setup() {
    let w = World::new();
    let out = w.client(&["get"], "protocol=https\nhost=dev.azure.com\n");
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("git-credential-azdo setup"));
    assert!(w.daemon_pid().is_none());
}

/// `erase` as git sends it after a 401, with the token it was given.
fn erase(w: &World, token: &str) {
    let input = format!(
        "capability[]=authtype\nprotocol=https\nhost={}\npath=contoso/p/_git/r\nauthtype=Bearer\ncredential={token}\nwwwauth[]=Bearer authorization_uri=https://login.microsoftonline.com/x\n",
        w.ado.host()
    );
    let out = w.client(&["erase"], &input);
    ok(w, &out, "erase");
    assert!(out.stdout.is_empty());
}

#[test]
fn erase_drops_the_token_and_backs_off_when_fresh_ones_are_refused() {
    let w = World::new();
    w.login("contoso");
    let t1 = token(&w.get("contoso", true)).unwrap();
    // The account loses access: Azure DevOps refuses its tokens.
    w.ado.reject_all(true);
    erase(&w, &t1);
    let t2 = token(&w.get("contoso", true)).expect("a new token after erase");
    assert_ne!(t1, t2);
    // The fresh token is refused too: no access, not expiry. Back off instead of hammering.
    erase(&w, &t2);
    let out = w.get("contoso", true);
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("refused fresh tokens"),
        "{}",
        text(&out.stderr)
    );
    let refreshes = w.entra.stats().refresh_ok;
    let _ = w.get("contoso", true);
    assert_eq!(w.entra.stats().refresh_ok, refreshes);
    // Erasing a token we no longer hold changes nothing.
    erase(&w, "not-the-current-token");
}

/// git erases the token after any 401 in a transfer, also when the token was not the reason
/// (a probe POST sent without it, a proxy that dropped the header). Azure DevOps still takes
/// it: the daemon keeps it, and nothing backs off.
#[test]
fn erase_keeps_a_token_azure_devops_accepts() {
    let w = World::new();
    w.login("contoso");
    let t1 = token(&w.get("contoso", true)).unwrap();
    let tokens = w.entra.stats().token_requests.len();
    for round in 1..=3 {
        erase(&w, &t1);
        let out = w.get("contoso", true);
        assert_eq!(
            token(&out).as_deref(),
            Some(t1.as_str()),
            "round {round}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(w.entra.stats().token_requests.len(), tokens, "no new token");
    assert!(w.log().contains("accepts the token: kept"), "{}", w.log());
}

/// `erase` names the host git talked to, and the daemon asks that host whether it takes the
/// token; a host outside the allowlist is never asked (it would be handed the token). The
/// client never sends one, so a raw request does: nothing reaches the listener there, the token
/// is dropped as unjudged, and nothing backs off.
#[test]
fn erase_never_sends_the_token_to_a_host_outside_the_allowlist() {
    use git_credential_azdo::daemon_protocol::{self, Request, RequestEnvelope};
    use std::io::BufRead;
    let w = World::new();
    w.login("contoso");
    let t1 = token(&w.get("contoso", true)).unwrap();
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let env = RequestEnvelope {
        protocol: daemon_protocol::PROTOCOL,
        version: daemon_protocol::PACKAGE_VERSION.into(),
        request: Request::Erase {
            org: "contoso".into(),
            host: elsewhere.local_addr().unwrap().to_string(),
            token: Some(git_credential_azdo::secret::Secret::new(t1.clone())),
            wwwauth: Vec::new(),
        },
    };
    let mut s =
        std::os::unix::net::UnixStream::connect(w.runtime_dir().join("daemon.sock")).unwrap();
    daemon_protocol::write_message(&mut s, &env).unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"kind\":\"done\""), "{answer}");
    assert!(
        matches!(elsewhere.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the daemon connected to a host outside the allowlist"
    );
    let t2 = token(&w.get("contoso", true)).expect("a new token, no back-off");
    assert_ne!(t1, t2);
}

#[test]
fn a_second_daemon_exits_cleanly_and_many_clients_are_served_at_once() {
    let w = World::new();
    w.login("contoso");
    let out = common::harness::run_with_input(&mut w.command(common::harness::DAEMON), b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("busy"));
    let before = w.entra.stats().refresh_ok;
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..40)
            .map(|_| s.spawn(|| w.get("contoso", true)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let tokens: std::collections::HashSet<_> =
        outs.iter().map(|o| token(o).expect("answered")).collect();
    assert_eq!(tokens.len(), 1);
    assert_eq!(w.entra.stats().refresh_ok, before, "served from memory");
}

/// A build farm's burst can exceed the usual soft limit of 1024 open files: the daemon raises
/// its soft limit to the hard one, so more clients than the inherited soft limit are served.
#[test]
fn the_daemon_raises_its_open_file_limit_and_serves_past_the_inherited_one() {
    use std::os::unix::process::CommandExt as _;
    const SOFT: u64 = 64;
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    if hard.rlim_max < 4 * SOFT {
        eprintln!(
            "skipped: the hard open-files limit here is {}",
            hard.rlim_max
        );
        return;
    }
    let w = World::new();
    w.login("contoso");
    w.kill_daemon(libc::SIGTERM);
    assert!(common::harness::wait_until(Duration::from_secs(5), || w
        .daemon_pid()
        .is_none()));
    // The next client starts the daemon, which inherits this soft limit.
    let mut c = w.command(common::harness::CLIENT);
    c.args(["get"]);
    unsafe {
        c.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = SOFT;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let input = format!(
        "protocol=https\nhost={}\npath=contoso/p/_git/r\n\n",
        w.ado.host()
    );
    let out = common::harness::run_with_input(&mut c, input.as_bytes());
    assert!(field(&out, "password").is_some(), "{}", text(&out.stderr));
    let pid = w.daemon_pid().expect("the client started a daemon");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[3], row[4],
        "soft limit raised to the hard one: {limits}"
    );
    // More connections held open at once than the inherited soft limit, all answered.
    let socket = w.runtime_dir().join("daemon.sock");
    let held: Vec<_> = (0..2 * SOFT)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| w.get("contoso", true))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(token(o).is_some(), "{}", text(&o.stderr));
    }
    drop(held);
}

#[test]
fn concurrent_gets_after_a_restart_share_one_refresh() {
    let w = World::new();
    w.login("contoso");
    w.kill_daemon(libc::SIGKILL);
    let before = w.entra.stats().refresh_ok;
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|_| s.spawn(|| w.get("contoso", true)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(token(o).is_some(), "{}", text(&o.stderr));
    }
    assert_eq!(
        w.entra.stats().refresh_ok,
        before + 1,
        "one refresh for all"
    );
    assert_eq!(w.entra.stats().refresh_refused, 0);
}

#[test]
fn socket_directory_is_private_and_logs_hold_no_tokens() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    w.login("contoso");
    let token = token(&w.get("contoso", true)).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.runtime_dir()), 0o700);
    assert_eq!(mode(&w.runtime_dir().join("daemon.sock")) & 0o077, 0);
    let status = w.client(&["status", "--json"], "");
    ok(&w, &status, "status");
    let log = w.log();
    assert!(
        log.contains("signed in") && log.contains("DEBUG"),
        "debug log is on: {log}"
    );
    let store =
        std::fs::read_to_string(w.path("data/git-credential-azdo/refresh-tokens.json")).unwrap();
    let rt = store
        .split('"')
        .find(|s| s.starts_with("1.A"))
        .expect("a refresh token on file");
    for (what, hay) in [("log", log.as_str()), ("status", &text(&status.stdout))] {
        assert!(!hay.contains(&token), "access token in {what}");
        assert!(!hay.contains(rt), "refresh token in {what}");
    }
}

#[test]
fn first_clone_in_a_terminal_signs_in_inline() {
    if !require(
        &[Piece::Script],
        "the first clone in a terminal signing in inline",
    ) {
        return;
    }
    let mut w = World::new();
    w.set_env("GIT_TERMINAL_PROMPT", "1");
    let url = w.ado.create_repo("contoso", "web", "site");
    // script(1) gives git and the helper a real terminal.
    let out = common::harness::run_with_input(
        w.command("script")
            .args(["-qec", &format!("git clone {url} inline"), "/dev/null"])
            .current_dir(w.dir.path()),
        b"",
    );
    let screen = text(&out.stdout);
    ok(&w, &out, "clone in a terminal");
    assert!(screen.contains("enter the code"), "{screen}");
    assert!(
        screen.contains("Connected organization 'contoso'"),
        "{screen}"
    );
    assert!(w.path("inline/.git").exists());
    assert_eq!(w.entra.stats().devicecode_requests, 1);
}

#[test]
fn a_stuck_client_is_dropped_at_its_deadline_and_does_not_hold_up_others() {
    use std::io::Read;
    let w = World::new();
    w.login("contoso");
    let mut stuck =
        std::os::unix::net::UnixStream::connect(w.runtime_dir().join("daemon.sock")).unwrap();
    let t = std::time::Instant::now();
    ok(&w, &w.get("contoso", true), "get beside a stuck client");
    // Served while the stuck connection is still open: the get did not wait for it to go.
    stuck.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    let open =
        matches!(stuck.read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        open,
        "the stuck connection was closed before the get was served"
    );
    stuck.set_nonblocking(false).unwrap();
    // The daemon closes the silent connection after its read deadline (5 s).
    stuck
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(stuck.read(&mut buf).unwrap(), 0, "closed without an answer");
    assert!(t.elapsed() >= Duration::from_secs(4));
}

/// Sends one raw request line as a client of `version` would, and returns the answer line.
fn raw_request(w: &World, version: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(w.runtime_dir().join("daemon.sock")).unwrap();
    // Carries a field this version does not know: the version check comes first.
    let req = format!(
        "{{\"protocol\":1,\"version\":\"{version}\",\"request\":{{\"op\":\"frobnicate\"}}}}\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&s).read_line(&mut line).unwrap();
    line
}

#[test]
fn a_newer_client_replaces_the_daemon_and_an_older_one_does_not() {
    let w = World::new();
    w.login("contoso");
    let old = w.daemon_pid().unwrap();
    // An older client is told, and the daemon stays.
    assert!(raw_request(&w, "0.0.1").contains("version_mismatch"));
    // The next request is answered by the same daemon (one that was leaving would have been
    // told to stop before it wrote that answer).
    let status = w.client(&["status", "--json"], "");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pid"], old, "{status}");
    assert_eq!(w.daemon_pid(), Some(old));
    // A newer one makes it exit...
    assert!(raw_request(&w, "99.0.0").contains("version_mismatch"));
    assert!(common::harness::wait_until(Duration::from_secs(5), || w
        .daemon_pid()
        .is_none()));
    // ...and the next client starts a daemon of its own version; the sign-in is kept.
    let out = w.get("contoso", true);
    assert!(token(&out).is_some(), "{}", text(&out.stderr));
    assert_ne!(w.daemon_pid().unwrap(), old);
    assert_eq!(w.entra.stats().devicecode_requests, 1);
}

#[test]
fn the_daemon_refuses_another_user() {
    if !require(&[Piece::Root], "the daemon refusing another uid") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    w.login("contoso");
    // Loosen every permission on the way to the socket, so only the daemon's own peer-uid
    // check stands between another user and the tokens.
    for p in [w.dir.path().to_path_buf(), w.path("run"), w.runtime_dir()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let sock = w.runtime_dir().join("daemon.sock");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A raw connection as uid 65534 that sends a well-formed `get` and prints whatever comes
    // back: the daemon must close it without a byte.
    let line = String::from_utf8(raw_get_line("contoso")).unwrap();
    let out = common::harness::run_with_input(
        w.command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["perl", "-MIO::Socket::UNIX", "-e"])
            .arg(
                r#"$SIG{PIPE} = "IGNORE"; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!";
                   print $s $ARGV[1]; my $n = 0; while (my $l = <$s>) { $n += length $l; print $l }
                   print STDERR "answered $n bytes\n";"#,
            )
            .arg(&sock)
            .arg(&line),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "another user got an answer");
    assert!(text(&out.stderr).contains("answered 0 bytes"));
    assert!(common::harness::wait_until(Duration::from_secs(5), || w
        .log()
        .contains("refused a connection from another user")));
    // The real client, run as that user, refuses the daemon first: it is not theirs.
    let out = common::harness::run_with_input(
        w.command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(common::harness::CLIENT)
            .arg("get"),
        format!(
            "capability[]=authtype\nprotocol=https\nhost={}\npath=contoso/p/_git/r\n",
            w.ado.host()
        )
        .as_bytes(),
    );
    assert!(out.stdout.is_empty(), "another user got an answer");
    assert!(
        text(&out.stderr).contains("is served by uid 0, not by you (uid 65534)"),
        "{}",
        text(&out.stderr)
    );
}

/// The request line the client sends for a `get`.
fn raw_get_line(org: &str) -> Vec<u8> {
    let env = git_credential_azdo::daemon_protocol::RequestEnvelope {
        protocol: git_credential_azdo::daemon_protocol::PROTOCOL,
        version: git_credential_azdo::daemon_protocol::PACKAGE_VERSION.into(),
        request: git_credential_azdo::daemon_protocol::Request::Get {
            org: org.into(),
            env: Default::default(),
            authtype: false,
            git: None,
        },
    };
    let mut line = Vec::new();
    git_credential_azdo::daemon_protocol::write_message(&mut line, &env).unwrap();
    line
}

/// Starts a real daemon as uid 65534 whose socket is in `shared/git-credential-azdo`, a
/// runtime directory that user created first in a world-writable place. Returns it and the
/// shared directory.
fn daemon_of_another_user(w: &World) -> (std::process::Child, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let shared = w.path("shared-run");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let theirs = w.path("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("config.toml"), "store = \"memory\"\n").unwrap();
    assert!(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&theirs)
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = w.command("setpriv");
    daemon
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::harness::DAEMON)
        .env("HOME", &theirs)
        .env("XDG_RUNTIME_DIR", &shared)
        .env("XDG_DATA_HOME", theirs.join("data"))
        .env("XDG_STATE_HOME", theirs.join("state"))
        .env("XDG_CACHE_HOME", theirs.join("cache"))
        .env("GIT_CREDENTIAL_AZDO_CONFIG", theirs.join("config.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let daemon = daemon.spawn().unwrap();
    let sock = shared.join("git-credential-azdo").join("daemon.sock");
    assert!(
        common::harness::wait_until(Duration::from_secs(10), || sock.exists()),
        "the other user's daemon did not start"
    );
    (daemon, shared)
}

#[test]
fn a_socket_planted_by_another_user_gets_nothing() {
    if !require(&[Piece::Root], "a socket planted by another uid") {
        return;
    }
    let w = World::new();
    // Another user's daemon listens where ours would. It is a real daemon, so it would
    // answer if asked.
    let (daemon, shared) = daemon_of_another_user(&w);
    // Our client, pointed at the same runtime directory, with a machine identity's secret in
    // its environment: it must send nothing and say what is wrong and what to do.
    let mut c = w.command(common::harness::CLIENT);
    c.arg("get")
        .env("XDG_RUNTIME_DIR", &shared)
        .env("AZURE_CLIENT_SECRET", "planted-socket-must-not-see-this");
    let out = common::harness::run_with_input(
        &mut c,
        format!(
            "protocol=https\nhost={}\npath=contoso/p/_git/r\n\n",
            w.ado.host()
        )
        .as_bytes(),
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait_with_output();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("is served by uid 65534, not by you (uid 0)"),
        "{err}"
    );
    // The client raises this error between connect and its first write, so the other
    // daemon was sent nothing.
    assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
}

/// `PR_SET_DUMPABLE 0`: no core dumps and no ptrace by other processes of the same user. The
/// kernel shows it by handing the process's /proc files to root, whoever runs it.
#[test]
fn the_daemon_cannot_be_traced_or_dumped() {
    if !require(&[Piece::Root], "the daemon not dumpable by its own uid") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let (daemon, _) = daemon_of_another_user(&w);
    let pid = daemon.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("65534"), "runs as 65534: {uid_line}");
    let environ = std::fs::metadata(format!("/proc/{pid}/environ")).unwrap();
    // A dumpable process's /proc files belong to its own uid.
    assert_eq!(
        environ.uid(),
        0,
        "/proc/{pid}/environ is owned by uid {}",
        environ.uid()
    );
    // And that same user is held to the ptrace access rule: it cannot read the daemon's
    // environment.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["cat", &format!("/proc/{pid}/environ")])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the same user read the daemon's environment"
    );
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = daemon.wait_with_output();
}

#[test]
fn steady_state_gets_never_wait_for_a_refresh() {
    let w = World::new();
    // 20 s tokens: each renewal starts at least 0.5 s (2.5 % of the life) before the token
    // stops being handed out, room enough for a renewal on a busy 2-core machine; two
    // renewals fit in 34 s.
    w.entra.set_token_lifetime(Duration::from_secs(20));
    w.login("contoso");
    let start = std::time::Instant::now();
    let mut tokens = std::collections::HashSet::new();
    while start.elapsed() < Duration::from_secs(34) {
        let out = w.get("contoso", true);
        let t = token(&out).expect("answered");
        assert!(w.entra.validate(&t).is_some(), "a valid token");
        tokens.insert(t);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Refreshed ahead of expiry at least twice, and no get had to wait for it.
    assert!(
        w.entra.stats().refresh_ok >= 2,
        "{:?}",
        w.entra.stats().refresh_ok
    );
    assert!(tokens.len() >= 3);
    let log = w.log();
    assert!(log.contains("ahead=true"), "{log}");
    assert!(!log.contains("get waits for a refresh"), "{log}");
}
