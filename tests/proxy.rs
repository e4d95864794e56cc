//! The daemon's proxy, through a real one (`common::proxy::MockProxy`): the configured `proxy`
//! carries every call to Entra ID and Azure DevOps (sign-in, discovery, refresh, the token
//! check of `erase`, `doctor`), never a managed identity's (IMDS is link-local); a service
//! takes `HTTPS_PROXY` from its own environment, a daemon started on demand or by hand from
//! nobody's; `doctor` says which way it went, and names the proxy when it is in the way; a
//! proxy that wants credentials gets them from the proxy URL.
//!
//! Every other test runs with the dead proxy of `World::new` and `no_proxy = "127.0.0.1,…"`,
//! so none of them goes through a proxy: here `no_proxy` is empty.

mod common;

use common::SecretKind;
use common::harness::{CLIENT, DAEMON, World, doctor_check, ok, run_with_input, text, token};
use common::imds::MockImds;
use common::proxy::MockProxy;
use std::io::BufRead;

/// Replaces the configuration's `proxy` and `no_proxy` with `proxy` (none when `None`) and no
/// exemption, and stops the daemon so that the next one reads it.
fn use_proxy(w: &World, proxy: Option<&str>) {
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    let rest: String = cfg
        .lines()
        .filter(|l| !l.starts_with("proxy =") && !l.starts_with("no_proxy ="))
        .map(|l| format!("{l}\n"))
        .collect();
    // Top-level keys first: an identity's table may follow.
    let head = match proxy {
        Some(p) => format!("proxy = \"{p}\"\nno_proxy = \"\"\n"),
        None => String::new(),
    };
    std::fs::write(w.config_path(), format!("{head}{rest}")).unwrap();
    ok(w, &w.client(&["stop"], ""), "stop");
}

/// The mock Entra's `host:port`, as a tunnel names it.
fn entra_target(w: &World) -> String {
    w.entra.url().trim_start_matches("https://").to_string()
}

/// Requests the mocks answered, and bytes the proxy relayed to each, so far.
#[derive(Clone, Copy, Debug)]
struct Seen {
    entra_requests: usize,
    ado_requests: usize,
    to_entra: u64,
    to_ado: u64,
}

fn seen(w: &World, proxy: &MockProxy) -> Seen {
    let s = w.entra.stats();
    Seen {
        entra_requests: s.token_requests.len() + s.devicecode_requests + s.authorize_requests,
        ado_requests: w.ado.requests().len(),
        to_entra: proxy.bytes_to(&entra_target(w)),
        to_ado: proxy.bytes_to(&w.ado.host()),
    }
}

/// Runs `step` and checks that if it made Entra requests, bytes went to Entra through the proxy
/// meanwhile; likewise Azure DevOps when `ado_is_daemon` (nothing but the daemon calls it during
/// `step`: no git). A request that bypassed the proxy reaches its mock all the same, but
/// moves no byte through it. Returns what was seen before and after.
fn step(
    w: &World,
    proxy: &MockProxy,
    what: &str,
    ado_is_daemon: bool,
    step: impl FnOnce(),
) -> (Seen, Seen) {
    let before = seen(w, proxy);
    step();
    let after = seen(w, proxy);
    if after.entra_requests > before.entra_requests {
        assert!(
            after.to_entra > before.to_entra,
            "{what}: Entra got {} request(s), none through the proxy (tunnels: {:?})\n{}",
            after.entra_requests - before.entra_requests,
            proxy.tunnels(),
            w.log()
        );
    }
    if ado_is_daemon && after.ado_requests > before.ado_requests {
        assert!(
            after.to_ado > before.to_ado,
            "{what}: Azure DevOps got {} request(s), none through the proxy (tunnels: {:?})\n{}",
            after.ado_requests - before.ado_requests,
            proxy.tunnels(),
            w.log()
        );
    }
    (before, after)
}

#[test]
fn the_configured_proxy_carries_every_entra_and_azure_devops_call() {
    let w = World::new();
    let proxy = MockProxy::start();
    use_proxy(&w, Some(&proxy.url()));
    let (entra, ado) = (entra_target(&w), w.ado.host());
    let url = w.ado.create_repo("contoso", "p", "r");

    // Sign-in: device code and token at Entra, tenant discovery at Azure DevOps.
    let (before, after) = step(&w, &proxy, "login", true, || {
        w.login("contoso");
    });
    assert!(after.entra_requests > before.entra_requests, "{after:?}");
    assert!(after.ado_requests > before.ado_requests, "{after:?}");
    assert!(proxy.tunnels_to(&entra) >= 1, "{:?}", proxy.tunnels());
    assert!(proxy.tunnels_to(&ado) >= 1, "{:?}", proxy.tunnels());

    step(&w, &proxy, "get", true, || {
        assert!(token(&w.get("contoso", true)).is_some(), "{}", w.log());
    });
    // git reports the token refused: the daemon's check at Azure DevOps goes through the proxy.
    let (before, after) = step(&w, &proxy, "erase", true, || w.erase_current());
    assert!(after.ado_requests > before.ado_requests, "{after:?}");
    // The next get redeems the refresh token at Entra, through the proxy.
    let refreshed = w.entra.stats().refresh_ok;
    step(&w, &proxy, "refresh", true, || {
        assert!(token(&w.get("contoso", true)).is_some(), "{}", w.log());
    });
    assert!(w.entra.stats().refresh_ok > refreshed, "{}", w.log());

    // A real clone with the token (git itself goes straight to the mock: NO_PROXY).
    step(&w, &proxy, "clone", false, || {
        ok(&w, &w.git(&["clone", &url, "c"], None), "clone");
    });
    assert!(w.path("c/.git").exists());

    // doctor: Entra's discovery document and the organization's connectionData.
    let (before, after) = step(&w, &proxy, "doctor", true, || {
        ok(&w, &w.client(&["doctor", "--json"], ""), "doctor");
    });
    assert!(after.to_entra > before.to_entra, "doctor's Entra check");
    assert!(after.to_ado > before.to_ado, "doctor's organization check");

    // Nothing else went through it: no plain requests, no other host.
    assert_eq!(proxy.plain(), Vec::<String>::new());
    let tunnels = proxy.tunnels();
    assert!(
        tunnels.iter().all(|t| *t == entra || *t == ado),
        "{tunnels:?}"
    );
}

#[test]
fn managed_identity_never_goes_through_the_proxy() {
    let mut w = World::new();
    let proxy = MockProxy::start();
    use_proxy(&w, Some(&proxy.url()));
    let imds = MockImds::start(&w.entra);
    w.configure_identity("kind = \"managed-identity\"");
    w.set_env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds.url());
    // doctor asks the identity for a token, and Entra and Azure DevOps through the proxy.
    let report = w.client(&["doctor", "--json"], "");
    let out = w.get("contoso", true);
    let at = imds.url().trim_start_matches("http://").to_string();
    let via_proxy: Vec<String> = proxy
        .plain()
        .into_iter()
        .chain(proxy.tunnels())
        .filter(|r| r.contains(&at))
        .collect();
    assert_eq!(
        via_proxy,
        Vec::<String>::new(),
        "the managed identity's endpoint was asked through the proxy"
    );
    assert!(token(&out).is_some(), "{}\n{}", text(&out.stderr), w.log());
    assert!(imds.token_requests() >= 1);
    ok(&w, &report, "doctor");
    let identity = doctor_check(&report, "identity ci");
    assert_eq!(identity["ok"], true, "{identity}");
    // The same daemon's other calls went through the proxy.
    for (what, target) in [
        ("Entra ID", entra_target(&w)),
        ("Azure DevOps", w.ado.host()),
    ] {
        assert_eq!(doctor_check(&report, what)["ok"], true);
        assert!(proxy.tunnels_to(&target) >= 1, "{:?}", proxy.tunnels());
    }
    let url = w.ado.create_repo("contoso", "p", "r");
    ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
}

/// A daemon started by hand in the world, as a service or not, with the world's environment and
/// `vars`; stopped when dropped (before its world: declare it after).
struct Daemon(std::process::Child);

impl Daemon {
    fn start(w: &World, service: bool, vars: &[(&str, &str)]) -> Daemon {
        let log_dir = w.path("state/git-credential-azdo");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("daemon.log"))
            .unwrap();
        let mut c = w.command(DAEMON);
        if service {
            c.arg("--service");
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        let mut child = c.spawn().expect("daemon");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "{line}\n{}", w.log());
        assert_eq!(w.daemon_pid(), Some(child.id() as i32));
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A daemon run as a service takes `HTTPS_PROXY` from its environment (the service
/// definition's) when the configuration names no proxy. One the client starts, or one a person
/// starts by hand without `--service`, takes it from nobody's: it would decide where a shared
/// daemon sends refresh tokens.
#[test]
fn a_daemon_takes_https_proxy_from_its_environment_only_as_a_service() {
    let w = World::new();
    let proxy = MockProxy::start();
    use_proxy(&w, None);
    let url = proxy.url();
    let vars = [
        ("HTTPS_PROXY", url.as_str()),
        ("https_proxy", url.as_str()),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    let entra = entra_target(&w);
    // The client, with the variables, starts the daemon.
    let mut login = w.command(CLIENT);
    for (k, v) in vars {
        login.env(k, v);
    }
    login.args(["login", "--org", "contoso", "--host", &w.ado.host()]);
    let out = run_with_input(&mut login, b"");
    ok(&w, &out, "login through a daemon the client started");
    assert_eq!(proxy.tunnels(), Vec::<String>::new(), "on demand");
    ok(&w, &w.client(&["stop"], ""), "stop");
    // By hand, without --service.
    let by_hand = Daemon::start(&w, false, &vars);
    w.login("fabrikam");
    assert_eq!(proxy.tunnels(), Vec::<String>::new(), "by hand");
    drop(by_hand);
    // As a service.
    let _service = Daemon::start(&w, true, &vars);
    let entra_requests = w.entra.stats().devicecode_requests;
    w.login("tailspin");
    assert!(w.entra.stats().devicecode_requests > entra_requests);
    assert!(
        proxy.tunnels_to(&entra) >= 1 && proxy.bytes_to(&entra) > 0,
        "the service did not use HTTPS_PROXY: {:?}\n{}",
        proxy.tunnels(),
        w.log()
    );
    assert!(
        proxy.tunnels_to(&w.ado.host()) >= 1,
        "{:?}",
        proxy.tunnels()
    );
    assert!(token(&w.get("tailspin", true)).is_some(), "{}", w.log());
}

#[test]
fn doctor_says_it_went_through_the_proxy_and_names_it_when_it_is_in_the_way() {
    let w = World::new();
    let proxy = MockProxy::start();
    use_proxy(&w, Some(&proxy.url()));
    w.login("contoso");
    ok(&w, &w.client(&["stop"], ""), "stop");
    // A fresh daemon: it must open new tunnels for doctor's checks.
    let entra = entra_target(&w);
    let (to_entra, to_ado) = (proxy.tunnels_to(&entra), proxy.tunnels_to(&w.ado.host()));
    let out = w.client(&["doctor", "--json"], "");
    ok(&w, &out, "doctor");
    let check = doctor_check(&out, "Entra ID");
    assert_eq!(check["ok"], true, "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("through the configured proxy"), "{detail}");
    assert!(
        proxy.tunnels_to(&entra) > to_entra,
        "doctor's Entra check did not go through the proxy: {:?}",
        proxy.tunnels()
    );
    let org = doctor_check(&out, "organization contoso");
    assert_eq!(org["ok"], true, "{org}");
    assert!(proxy.tunnels_to(&w.ado.host()) > to_ado);

    // The configured proxy is down: the Entra check fails and says where to look.
    use_proxy(&w, Some("http://127.0.0.1:9"));
    let tunnels = proxy.tunnels().len();
    let out = w.client(&["doctor", "--json"], "");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let check = doctor_check(&out, "Entra ID");
    assert_eq!(check["ok"], false, "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains("cannot reach") && detail.contains("through the configured proxy"),
        "{detail}"
    );
    // The fix is about the proxy that is configured, not about setting one.
    let fix = check["fix"].as_str().unwrap();
    let config = w.config_path().display().to_string();
    assert!(
        fix.contains(&format!("the proxy named in {config}")) && !fix.contains("set proxy"),
        "{fix}"
    );
    assert_eq!(proxy.tunnels().len(), tunnels, "the old proxy was used");
}

/// The proxy URL's credentials are sent to a proxy that wants them (and never written
/// anywhere: the secret scan); without them, `doctor`'s detail says the proxy wants
/// authorization, and its fix how to give them (an https request's 407 is a tunnel error to
/// reqwest, not an answer).
#[test]
fn a_proxy_that_wants_credentials_gets_them_from_the_proxy_url() {
    const PASSWORD: &str = "pr0xy-passw0rd-corp";
    let w = World::new();
    w.secret(SecretKind::ClientSecret, PASSWORD);
    let proxy = MockProxy::start_with_auth("builder", PASSWORD);
    use_proxy(&w, Some(&proxy.url_with("builder", PASSWORD)));
    w.login("contoso");
    let entra = entra_target(&w);
    assert!(proxy.tunnels_to(&entra) >= 1, "{:?}", proxy.tunnels());
    assert_eq!(proxy.refused(), Vec::<String>::new());
    assert!(token(&w.get("contoso", true)).is_some());
    ok(&w, &w.client(&["doctor", "--json"], ""), "doctor");

    // Without them: refused, and doctor's detail says so.
    use_proxy(&w, Some(&proxy.url()));
    let out = w.client(&["doctor", "--json"], "");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        proxy.refused().contains(&format!("CONNECT {entra}")),
        "{:?}",
        proxy.refused()
    );
    let check = doctor_check(&out, "Entra ID");
    assert_eq!(check["ok"], false, "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains("through the configured proxy")
            && detail.contains("proxy authorization required"),
        "{detail}"
    );
    let fix = check["fix"].as_str().unwrap();
    assert!(fix.contains("http://user:password@host:port"), "{fix}");
}
