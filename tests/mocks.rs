//! Tests of the mock servers in `tests/common` themselves, with real `git` and
//! `curl` processes and no product code.

mod common;

use common::requires::{Piece, require};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::entra::{
    AuthorizeOutcome, JWT_BEARER_ASSERTION, app_object_id, pkce_challenge, sha256,
};
use common::vssps::JWT_BEARER_GRANT;
use common::{
    ADO_RESOURCE, Fault, IdentityRef, MockAdo, MockEntra, MockImds, MockVssps, Scheme, TestCa,
};
use serde_json::Value;

const CLIENT_ID: &str = "872cd9fa-d31f-45e0-9eab-6e460a02d1f1";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const OTHER_TENANT: &str = "0b8e3f4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

struct Env {
    ca: TestCa,
    entra: MockEntra,
    ado: MockAdo,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn setup() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for sub in ["home", "ado", "work"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    let ca = TestCa::new(&dir);
    let entra = MockEntra::start(&ca);
    let ado = MockAdo::start(&ca, &entra, &dir.join("ado"));
    Env {
        ca,
        entra,
        ado,
        dir,
        _tmp: tmp,
    }
}

/// A parsed `curl -i` answer.
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn headers(&self, name: &str) -> Vec<&str> {
        let named = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        named.map(|(_, v)| v.as_str()).collect()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn curl_output(env: &Env, args: &[&str]) -> Output {
    Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "--cacert",
        ])
        .arg(env.ca.ca_path())
        .args(args)
        .output()
        .unwrap()
}

fn curl(env: &Env, args: &[&str]) -> Http {
    let out = curl_output(env, args);
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

/// POSTs a form (each `k=v` url-encoded) to the mock Entra.
fn entra_post(env: &Env, tenant: &str, endpoint: &str, form: &[&str]) -> Http {
    let url = format!("{}/{tenant}/oauth2/v2.0/{endpoint}", env.entra.url());
    let mut args: Vec<&str> = form
        .iter()
        .flat_map(|kv| ["--data-urlencode", kv])
        .collect();
    args.push(&url);
    curl(env, &args)
}

fn devicecode(env: &Env, tenant: &str) -> Value {
    let scope = format!("scope={ADO_RESOURCE}/.default offline_access");
    let r = entra_post(
        env,
        tenant,
        "devicecode",
        &[&format!("client_id={CLIENT_ID}"), &scope],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn poll(env: &Env, tenant: &str, device_code: &str) -> Http {
    let form = [
        format!("grant_type={DEVICE_CODE_GRANT}"),
        format!("client_id={CLIENT_ID}"),
        format!("device_code={device_code}"),
    ];
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    entra_post(env, tenant, "token", &form)
}

/// Full device-code flow; returns the token response.
fn sign_in(env: &Env, tenant: &str) -> Value {
    let dc = devicecode(env, tenant);
    let device_code = dc["device_code"].as_str().unwrap();
    for _ in 0..10 {
        let r = poll(env, tenant, device_code);
        if r.status == 200 {
            return r.json();
        }
        assert_eq!(r.json()["error"], "authorization_pending", "{}", r.body);
    }
    panic!("device code never approved");
}

fn refresh(env: &Env, refresh_token: &str, extra: &[&str]) -> Http {
    refresh_at(env, "organizations", refresh_token, extra)
}

/// The refresh-token grant at `tenant`'s token endpoint.
fn refresh_at(env: &Env, tenant: &str, refresh_token: &str, extra: &[&str]) -> Http {
    let mut form = vec![
        "grant_type=refresh_token".to_string(),
        format!("client_id={CLIENT_ID}"),
        format!("refresh_token={refresh_token}"),
        format!("scope={ADO_RESOURCE}/.default offline_access"),
    ];
    form.extend(extra.iter().map(|s| s.to_string()));
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    entra_post(env, tenant, "token", &form)
}

fn jwt_payload(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// `git` in an isolated environment trusting the test CA, no credential helper.
fn git(env: &Env, cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(cwd)
        .env("HOME", env.dir.join("home"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_SSL_CAINFO", env.ca.ca_path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("SSH_ASKPASS")
        .args([
            "-c",
            "user.name=Test User",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(["-c", "credential.helper=", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap()
}

fn git_ok(env: &Env, cwd: &Path, args: &[&str]) -> String {
    let out = git(env, cwd, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn bearer(token: &str) -> String {
    format!("http.extraHeader=Authorization: Bearer {token}")
}

fn basic(token: &str) -> String {
    let pair = STANDARD.encode(format!("ada:{token}"));
    format!("http.extraHeader=Authorization: Basic {pair}")
}

/// Deterministic bytes, big enough to make git push with chunked encoding.
fn blob(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn device_code_flow_then_push_clone_fetch() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    let dc = devicecode(&env, "organizations");
    let user_code = dc["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 8);
    assert!(
        user_code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    );
    assert_eq!(dc["interval"], 1);
    assert_eq!(dc["expires_in"], 900);
    assert_eq!(dc["verification_uri"], "https://microsoft.com/devicelogin");
    assert!(dc["message"].as_str().unwrap().contains(user_code));
    assert!(dc["device_code"].as_str().unwrap().len() > 100);

    let device_code = dc["device_code"].as_str().unwrap();
    let pending = poll(&env, "organizations", device_code);
    assert_eq!(pending.status, 400);
    let pending = pending.json();
    assert_eq!(pending["error"], "authorization_pending");
    assert_eq!(pending["error_codes"], serde_json::json!([70016]));
    assert!(
        pending["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70016:")
    );

    // The next poll keeps the advertised interval (a sooner one is told to slow down).
    std::thread::sleep(Duration::from_secs(1));
    let ok = poll(&env, "organizations", device_code);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ok = ok.json();
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 3600);
    let rt = ok["refresh_token"].as_str().unwrap();
    assert!(rt.starts_with("1.A") && rt.len() > 100, "{rt}");
    let token = ok["access_token"].as_str().unwrap().to_string();
    let claims = jwt_payload(&token);
    assert_eq!(claims["aud"], ADO_RESOURCE);
    assert_eq!(claims["tid"], MockEntra::HOME_TENANT);
    assert_eq!(claims["appid"], CLIENT_ID);
    assert_eq!(claims["upn"], "ada@contoso.example");
    assert_eq!(claims["name"], "Ada Lovelace");
    let info = env.entra.validate(&token).unwrap();
    assert_eq!(info.tid, MockEntra::HOME_TENANT);
    assert_eq!(env.entra.stats().devicecode_requests, 1);
    assert_eq!(env.entra.stats().device_code_polls, 2);
    assert_eq!(
        env.entra.stats().last_tenant.as_deref(),
        Some("organizations")
    );
    assert!(
        env.entra
            .stats()
            .last_scope
            .unwrap()
            .contains("offline_access")
    );
    // A redeemed device code cannot be used twice.
    assert_eq!(
        poll(&env, "organizations", device_code).json()["error_codes"][0],
        54005
    );

    let conn = curl(
        &env,
        &[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{}/contoso/_apis/connectionData", env.ado.url()),
        ],
    );
    assert_eq!(conn.status, 200, "{}", conn.body);
    let conn = conn.json();
    assert_eq!(
        conn["authenticatedUser"]["properties"]["Account"]["$value"],
        "ada@contoso.example"
    );
    assert_eq!(
        conn["authenticatedUser"]["providerDisplayName"],
        "Ada Lovelace"
    );
    assert_eq!(conn["authenticatedUser"]["id"], info.oid.as_str());

    let url = env.ado.create_repo("contoso", "proj", "repo");
    let work = env.dir.join("work");
    let src = work.join("src");
    git_ok(&env, &work, &["init", "-q", "src"]);
    std::fs::write(src.join("README"), "hello\n").unwrap();
    let big = blob(3 << 20);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    git_ok(&env, &src, &["add", "."]);
    git_ok(&env, &src, &["commit", "-q", "-m", "first"]);
    git_ok(
        &env,
        &src,
        &["-c", &bearer(&token), "push", "-q", &url, "main"],
    );

    git_ok(
        &env,
        &work,
        &["-c", &basic(&token), "clone", "-q", &url, "clone"],
    );
    let clone = work.join("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "hello\n"
    );
    assert!(std::fs::read(clone.join("big.bin")).unwrap() == big);

    std::fs::write(src.join("README"), "hello again\n").unwrap();
    git_ok(&env, &src, &["commit", "-q", "-am", "second"]);
    git_ok(
        &env,
        &src,
        &["-c", &bearer(&token), "push", "-q", &url, "main"],
    );
    git_ok(
        &env,
        &clone,
        &["-c", &basic(&token), "fetch", "-q", "origin"],
    );
    assert_eq!(
        git_ok(&env, &clone, &["rev-parse", "origin/main"]),
        git_ok(&env, &src, &["rev-parse", "HEAD"])
    );
    assert_eq!(
        git_ok(&env, &clone, &["show", "origin/main:README"]),
        "hello again\n"
    );

    // git gzips large upload-pack requests; the backend must inflate them.
    let gz = work.join("ls-refs.gz");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '0014command=ls-refs\\n0000' | gzip -c > '{}'",
            gz.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = curl(
        &env,
        &[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/x-git-upload-pack-request",
            "-H",
            "Content-Encoding: gzip",
            "-H",
            "Git-Protocol: version=2",
            "--data-binary",
            &format!("@{}", gz.display()),
            &format!("{url}/git-upload-pack"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("refs/heads/main"), "{}", r.body);

    let log = env.ado.requests();
    assert_eq!(env.ado.auth_schemes_rejected().len(), 0, "{log:#?}");
    let schemes = env.ado.auth_schemes_accepted();
    assert!(schemes.contains(&Scheme::Bearer) && schemes.contains(&Scheme::Basic));
    for path in ["/git-receive-pack", "/git-upload-pack"] {
        assert!(
            log.iter()
                .any(|r| r.method == "POST" && r.path.ends_with(path)),
            "{log:#?}"
        );
    }
}

#[test]
fn missing_or_invalid_token_gets_401_challenge() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    let url = env.ado.create_repo("contoso", "proj", "repo");
    let work = env.dir.join("work");

    let out = git(&env, &work, &["clone", "-q", &url, "a"]);
    assert!(!out.status.success());
    let out = git(
        &env,
        &work,
        &["-c", &bearer("not-a-token"), "clone", "-q", &url, "b"],
    );
    assert!(!out.status.success());
    let rejected = env.ado.auth_schemes_rejected();
    assert!(
        rejected.contains(&Scheme::None) && rejected.contains(&Scheme::Bearer),
        "{rejected:?}"
    );
    assert_eq!(env.ado.auth_schemes_accepted().len(), 0);

    let base = env.ado.url();
    for method in ["-X GET", "-I"] {
        let mut args: Vec<&str> = method.split(' ').collect();
        let org_url = format!("{base}/contoso");
        args.push(&org_url);
        let r = curl(&env, &args);
        assert_eq!(r.status, 401);
        let challenges = r.headers("WWW-Authenticate");
        let home = MockEntra::HOME_TENANT;
        assert!(
            challenges.contains(
                &format!("Bearer authorization_uri=https://login.microsoftonline.com/{home}")
                    .as_str()
            ),
            "{challenges:?}"
        );
        assert!(
            challenges.contains(&format!("Basic realm=\"{base}/\"").as_str()),
            "{challenges:?}"
        );
        assert!(challenges.contains(&"TFS-Federated"));
        assert_eq!(r.headers("X-VSS-ResourceTenant"), [home]);
        assert_eq!(
            r.headers("X-TFS-FedAuthIssuer"),
            [format!("{base}/contoso/")]
        );
        assert_eq!(
            r.headers("X-VSS-AuthorizationEndpoint"),
            [format!("{base}/contoso/")]
        );
    }

    // An organisation in another tenant wants a token from that tenant.
    env.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let r = curl(&env, &[&format!("{base}/fabrikam")]);
    assert_eq!(r.headers("X-VSS-ResourceTenant"), [OTHER_TENANT]);
    env.entra.set_auto_approve_after_polls(0);
    let home_token = sign_in(&env, "organizations")["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let other_token = sign_in(&env, OTHER_TENANT)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let conn = |org: &str, token: &str| {
        let auth = format!("Authorization: Bearer {token}");
        curl(
            &env,
            &["-H", &auth, &format!("{base}/{org}/_apis/connectionData")],
        )
        .status
    };
    assert_eq!(conn("fabrikam", &home_token), 401);
    assert_eq!(conn("fabrikam", &other_token), 200);
    assert_eq!(conn("contoso", &home_token), 200);

    env.ado.reject_all(true);
    assert_eq!(conn("contoso", &home_token), 401);
    env.ado.reject_all(false);
    assert_eq!(conn("contoso", &home_token), 200);
}

#[test]
fn refresh_tokens_rotate_and_can_be_revoked() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    env.entra.set_auto_approve_after_polls(0);
    let first = sign_in(&env, "organizations");
    let rt1 = first["refresh_token"].as_str().unwrap();

    let claims = r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#;
    let r = refresh(&env, rt1, &[&format!("claims={claims}")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.json();
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    assert!(
        env.entra
            .validate(second["access_token"].as_str().unwrap())
            .is_some()
    );
    assert_eq!(env.entra.stats().last_claims.as_deref(), Some(claims));

    let reused = refresh(&env, rt1, &[]);
    assert_eq!(reused.status, 400);
    assert_eq!(reused.json()["error"], "invalid_grant");
    assert_eq!(reused.json()["error_codes"][0], 70008);
    assert!(reused.body.contains("AADSTS70008"));

    let r = refresh(&env, rt2, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let rt3 = r.json()["refresh_token"].as_str().unwrap().to_string();
    env.entra.revoke_all_refresh_tokens();
    let revoked = refresh(&env, &rt3, &[]);
    assert_eq!(revoked.status, 400);
    assert_eq!(revoked.json()["error"], "invalid_grant");
    assert!(revoked.body.contains("AADSTS50173"), "{}", revoked.body);

    let stats = env.entra.stats();
    assert_eq!((stats.refresh_ok, stats.refresh_refused), (2, 2));
    let requests = env.entra.stats().token_requests;
    let grants: Vec<&str> = requests.iter().map(|r| r.grant_type.as_str()).collect();
    assert_eq!(grants[0], DEVICE_CODE_GRANT);
    assert!(grants[1..].iter().all(|g| *g == "refresh_token") && grants.len() == 5);

    // Without strict rotation an old refresh token keeps working.
    env.entra.set_strict_rotation(false);
    let rt = sign_in(&env, "organizations")["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(refresh(&env, &rt, &[]).status, 200);
    assert_eq!(refresh(&env, &rt, &[]).status, 200);
}

#[test]
fn refresh_tokens_are_redeemed_only_in_their_own_tenant() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    env.entra.set_auto_approve_after_polls(0);
    let other = sign_in(&env, OTHER_TENANT);
    let rt = other["refresh_token"].as_str().unwrap();
    // At `organizations` (the user's home tenant) or another tenant: refused, and unused.
    let r = refresh(&env, rt, &[]);
    assert_refused(&r, "invalid_grant", 700005);
    let home = MockEntra::HOME_TENANT;
    assert_refused(&refresh_at(&env, home, rt, &[]), "invalid_grant", 700005);
    // At its own tenant: a token of that tenant.
    let r = refresh_at(&env, OTHER_TENANT, rt, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(env.entra.validate(&token).unwrap().tid, OTHER_TENANT);
    // A home-tenant refresh token works at `organizations` and at the home tenant's GUID.
    let rt = sign_in(&env, "organizations")["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = refresh_at(&env, home, &rt, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(&env, &rt, &[]).status, 200);
    assert_refused(
        &refresh_at(&env, OTHER_TENANT, &rt, &[]),
        "invalid_grant",
        700005,
    );
}

#[test]
fn scopes_are_parsed_as_entra_parses_them() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    let client = format!("client_id={CLIENT_ID}");
    let ado = ADO_RESOURCE;
    const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
    // Granted: which resource the token is for.
    let granted = [
        (format!("{ado}/.default offline_access"), ado),
        (format!("{ado}/user_impersonation openid profile"), ado),
        (
            "https://app.vssps.visualstudio.com/.default".to_string(),
            ado,
        ),
        ("openid offline_access".to_string(), GRAPH),
        ("User.Read offline_access".to_string(), GRAPH),
    ];
    for (scope, aud) in granted {
        let dc = entra_post(
            &env,
            "organizations",
            "devicecode",
            &[&client, &format!("scope={scope}")],
        );
        assert_eq!(dc.status, 200, "{scope}: {}", dc.body);
        let dc = dc.json();
        assert!(env.entra.approve(dc["user_code"].as_str().unwrap()));
        let r = poll(&env, "organizations", dc["device_code"].as_str().unwrap());
        assert_eq!(r.status, 200, "{scope}: {}", r.body);
        let token = r.json()["access_token"].as_str().unwrap().to_string();
        assert_eq!(env.entra.validate(&token).unwrap().aud, aud, "{scope}");
    }
    // Refused, by the devicecode endpoint, at the authorize endpoint and by a refresh grant.
    let refused = [
        // A resource with no permission is a Graph permission that does not exist.
        (ado.to_string(), "invalid_scope", 70011),
        (
            format!("{ado}/.defaults offline_access"),
            "invalid_scope",
            70011,
        ),
        (format!("{ado}/vso.code_write"), "invalid_scope", 70011),
        (format!("x{ado}/.default"), "invalid_resource", 500011),
        (format!("{ado}x/.default"), "invalid_resource", 500011),
        (format!("{ado}/.default User.Read"), "invalid_scope", 28000),
        (
            format!("{ado}/.default {ado}/user_impersonation"),
            "invalid_scope",
            70011,
        ),
    ];
    let rt = {
        env.entra.set_auto_approve_after_polls(0);
        sign_in(&env, "organizations")["refresh_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let challenge = s256(&URL_SAFE_NO_PAD.encode(&blob(48)[16..]));
    for (scope, error, code) in refused {
        let r = entra_post(
            &env,
            "organizations",
            "devicecode",
            &[&client, &format!("scope={scope}")],
        );
        assert_refused(&r, error, code);
        let r = refresh(&env, &rt, &[&format!("scope={scope}")]);
        assert_refused(&r, error, code);
        let r = authorize_with(&env, "organizations", &challenge, &[("scope", &scope)]);
        let (_, query) = location(&r);
        assert_eq!(query["error"], error, "{scope}");
        let prefix = format!("AADSTS{code}: ");
        assert!(
            query["error_description"].starts_with(&prefix),
            "{scope}: {query:?}"
        );
    }
    // A refused refresh grant leaves the refresh token usable.
    assert_eq!(refresh(&env, &rt, &[]).status, 200);
}

#[test]
fn device_code_polls_too_soon_are_told_to_slow_down() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    env.entra
        .set_auto_approve_after_polls(MockEntra::MANUAL_APPROVAL);
    let dc = devicecode(&env, "organizations");
    let code = dc["device_code"].as_str().unwrap();
    assert_eq!(dc["interval"], 1);
    let r = poll(&env, "organizations", code);
    assert_eq!(r.json()["error"], "authorization_pending", "{}", r.body);
    // At once: slow_down, and the interval is now 6 s...
    let r = poll(&env, "organizations", code);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "slow_down", "{}", r.body);
    // ...so a poll after the old interval is still too soon.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        poll(&env, "organizations", code).json()["error"],
        "slow_down"
    );
    assert_eq!(env.entra.stats().slow_downs, 2);
    // Asked for: the next poll is told to slow down whatever its timing, then no more.
    let dc = devicecode(&env, "organizations");
    let code = dc["device_code"].as_str().unwrap();
    env.entra.slow_down_next_polls(1);
    assert_eq!(
        poll(&env, "organizations", code).json()["error"],
        "slow_down"
    );
    assert!(env.entra.approve(dc["user_code"].as_str().unwrap()));
    std::thread::sleep(Duration::from_secs(6));
    let r = poll(&env, "organizations", code);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.entra.stats().slow_downs, 3);
}

#[test]
fn expired_access_token_is_refused() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    env.entra.set_auto_approve_after_polls(0);
    env.entra.set_token_lifetime(Duration::from_secs(2));
    let resp = sign_in(&env, "organizations");
    assert_eq!(resp["expires_in"], 2);
    let token = resp["access_token"].as_str().unwrap();
    let url = env.ado.create_repo("contoso", "proj", "repo");
    let work = env.dir.join("work");
    git_ok(&env, &work, &["-c", &bearer(token), "ls-remote", &url]);
    assert!(env.entra.validate(token).is_some());

    std::thread::sleep(Duration::from_secs(3));
    assert!(env.entra.validate(token).is_none());
    let out = git(&env, &work, &["-c", &bearer(token), "ls-remote", &url]);
    assert!(!out.status.success());
    assert_eq!(
        env.ado.auth_schemes_rejected().first(),
        Some(&Scheme::Bearer)
    );
}

#[test]
fn entra_error_bodies_and_faults() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    let client = format!("client_id={CLIENT_ID}");

    // Declined and expired device codes.
    env.entra
        .set_auto_approve_after_polls(MockEntra::MANUAL_APPROVAL);
    let dc = devicecode(&env, "organizations");
    assert!(env.entra.decline(dc["user_code"].as_str().unwrap()));
    let r = poll(&env, "organizations", dc["device_code"].as_str().unwrap());
    assert_eq!(r.json()["error"], "authorization_declined");
    env.entra.set_device_code_lifetime(Duration::from_secs(1));
    let dc = devicecode(&env, "organizations");
    std::thread::sleep(Duration::from_millis(1100));
    let r = poll(&env, "organizations", dc["device_code"].as_str().unwrap());
    assert_eq!(r.json()["error"], "expired_token");
    assert_eq!(r.json()["error_codes"][0], 70019);
    let r = poll(&env, "organizations", "no-such-code");
    assert_eq!(r.json()["error"], "invalid_grant");

    let r = entra_post(
        &env,
        "organizations",
        "token",
        &[&client, "grant_type=password"],
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let r = entra_post(
        &env,
        "organizations",
        "token",
        &["grant_type=refresh_token"],
    );
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(r.body.contains("AADSTS900144") && r.body.contains("'client_id'"));

    env.entra.set_fault(Fault::Status(429, Some(7)));
    let r = poll(&env, "organizations", "x");
    assert_eq!((r.status, r.headers("Retry-After")), (429, vec!["7"]));
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert_eq!(env.entra.stats().token_requests.last().unwrap().status, 429);

    env.entra.set_fault(Fault::Garbage);
    let r = poll(&env, "organizations", "x");
    assert_eq!((r.status, r.body.as_str()), (200, "<html>not json</html>"));

    env.entra
        .set_fault(Fault::Slow(Duration::from_millis(1500)));
    let start = Instant::now();
    assert_eq!(poll(&env, "organizations", "x").status, 400);
    assert!(start.elapsed() >= Duration::from_millis(1500));

    env.entra.set_fault(Fault::Down);
    let out = curl_output(
        &env,
        &[
            &format!("{}/organizations/oauth2/v2.0/token", env.entra.url()),
            "-d",
            &client,
        ],
    );
    assert!(!out.status.success());
    assert!(env.entra.stats().dropped_connections >= 1);

    env.entra.set_fault(Fault::None);
    assert_eq!(poll(&env, "organizations", "x").status, 400);
}

/// BASE64URL-NOPAD(SHA-256(verifier)) with ring's SHA-256 (through rustls), so the
/// test does not lean on the mock's own implementation.
fn s256(verifier: &str) -> String {
    use tokio_rustls::rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let sha256 = TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap()
        .common
        .hash_provider;
    URL_SAFE_NO_PAD.encode(sha256.hash(verifier.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn mock_sha256_matches_fips_and_rfc7636_vectors_and_ring() {
    let vectors: [(&[u8], &str); 4] = [
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
        ),
    ];
    for (input, digest) in vectors {
        assert_eq!(hex(&sha256(input)), digest, "{input:?}");
    }
    assert_eq!(
        hex(&sha256(&vec![b'a'; 1_000_000])),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    // RFC 7636, appendix B.
    let (verifier, challenge) = (
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    assert_eq!(pkce_challenge(verifier), challenge);
    assert_eq!(s256(verifier), challenge);
    // Every padding case (55/56/63/64 bytes mod 64...) against ring.
    let data = URL_SAFE_NO_PAD.encode(blob(300));
    for len in 0..=data.len() {
        assert_eq!(pkce_challenge(&data[..len]), s256(&data[..len]), "{len}");
    }
}

/// A redirect URI Visual Studio's client has: `http://localhost` is registered, the port is
/// the listener's.
const LOOPBACK: &str = "http://localhost:8400/";
/// A public client of the tests' own, registered with a redirect URI that has a path and a query.
const CUSTOM_CLIENT: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

/// `curl -G -i` on the authorize endpoint: redirects are not followed.
fn authorize(env: &Env, tenant: &str, params: &[(&str, &str)]) -> Http {
    let url = format!("{}/{tenant}/oauth2/v2.0/authorize", env.entra.url());
    let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["-G"];
    args.extend(
        pairs
            .iter()
            .flat_map(|kv| ["--data-urlencode", kv.as_str()]),
    );
    args.push(&url);
    curl(env, &args)
}

/// A complete, valid authorize request; `with` adds or replaces parameters
/// (an empty value removes one).
fn authorize_with(env: &Env, tenant: &str, challenge: &str, with: &[(&str, &str)]) -> Http {
    let scope = format!("{ADO_RESOURCE}/.default offline_access");
    let mut params = vec![
        ("client_id", CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", LOOPBACK),
        ("scope", scope.as_str()),
        ("state", "st 1&x=/é"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in with {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    authorize(env, tenant, &params)
}

/// The `Location` of a 302, and its query parameters.
fn location(r: &Http) -> (String, HashMap<String, String>) {
    assert_eq!(r.status, 302, "{}", r.body);
    let [location] = r.headers("Location")[..] else {
        panic!("{:?}", r.headers)
    };
    let url = url::Url::parse(location).unwrap();
    let query = url.query_pairs().into_owned().collect();
    (location.to_string(), query)
}

/// The authorization-code grant; `with` adds or replaces form fields.
fn redeem(env: &Env, tenant: &str, code: &str, verifier: &str, with: &[(&str, &str)]) -> Http {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT_ID),
        ("code", code),
        ("redirect_uri", LOOPBACK),
        ("code_verifier", verifier),
    ];
    for (k, v) in with {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    let form: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    entra_post(env, tenant, "token", &form)
}

fn assert_refused(r: &Http, error: &str, code: u32) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], error, "{}", r.body);
    assert_eq!(r.json()["error_codes"][0], code, "{}", r.body);
    let description = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
}

#[test]
fn authorization_code_flow_with_pkce() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    let verifier = URL_SAFE_NO_PAD.encode(&blob(48)[16..]); // 43 characters
    assert_eq!(verifier.len(), 43);
    let challenge = s256(&verifier);

    // Approve: 302 to the loopback redirect URI with a code and the same state.
    let hint = [("login_hint", "ada@contoso.example")];
    let r = authorize_with(&env, "organizations", &challenge, &hint);
    assert!(r.headers("Cache-Control")[0].contains("no-store"));
    let (loc, query) = location(&r);
    assert!(loc.starts_with(&format!("{LOOPBACK}?code=")), "{loc}");
    let code = query["code"].clone();
    assert!(code.len() > 100, "{code}");
    assert_eq!(query["state"], "st 1&x=/é");
    assert_eq!(query["session_state"].len(), 36);
    assert!(!query.contains_key("error"));
    let stats = env.entra.stats();
    assert_eq!(stats.authorize_requests, 1);
    let last = stats.last_authorize.unwrap();
    assert_eq!(last["code_challenge"], challenge);
    assert_eq!(last["login_hint"], "ada@contoso.example");
    assert_eq!(last["state"], "st 1&x=/é");
    assert_eq!(stats.last_tenant.as_deref(), Some("organizations"));

    // Wrong or missing verifier, other redirect URI, other client, other tenant:
    // refused, and the code stays usable.
    let wrong = s256("not the verifier"); // well-formed, 43 characters
    assert_refused(
        &redeem(&env, "organizations", &code, &wrong, &[]),
        "invalid_grant",
        501481,
    );
    let r = redeem(&env, "organizations", &code, &verifier[..42], &[]);
    assert_refused(&r, "invalid_grant", 501481);
    let r = redeem(
        &env,
        "organizations",
        &code,
        &verifier,
        &[("code_verifier", "")],
    );
    assert_refused(&r, "invalid_grant", 50148);
    let other_uri = [("redirect_uri", "http://localhost:8401/")];
    let r = redeem(&env, "organizations", &code, &verifier, &other_uri);
    assert_refused(&r, "invalid_grant", 70002);
    assert!(r.body.contains("AADSTS50011"), "{}", r.body);
    let other_client = [("client_id", "11111111-2222-3333-4444-555555555555")];
    let r = redeem(&env, "organizations", &code, &verifier, &other_client);
    assert_refused(&r, "invalid_grant", 70000);
    assert_refused(
        &redeem(&env, OTHER_TENANT, &code, &verifier, &[]),
        "invalid_grant",
        700005,
    );
    let r = redeem(
        &env,
        "organizations",
        &code,
        &verifier,
        &[("redirect_uri", "")],
    );
    assert_refused(&r, "invalid_request", 900144);
    assert!(r.body.contains("'redirect_uri'"), "{}", r.body);
    let r = redeem(&env, "organizations", "0.Anot-a-code", &verifier, &[]);
    assert_eq!(r.json()["error"], "invalid_grant");

    // The right verifier: tokens, with a refresh token (offline_access).
    let r = redeem(&env, "organizations", &code, &verifier, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let ok = r.json();
    assert_eq!(ok["token_type"], "Bearer");
    assert!(ok["refresh_token"].as_str().unwrap().starts_with("1.A"));
    let token = ok["access_token"].as_str().unwrap();
    let info = env.entra.validate(token).unwrap();
    assert_eq!(
        (info.tid.as_str(), info.aud.as_str()),
        (MockEntra::HOME_TENANT, ADO_RESOURCE)
    );
    assert_eq!(jwt_payload(token)["appid"], CLIENT_ID);
    // The refresh token works like any other.
    let rt = ok["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&env, rt, &[]).status, 200);

    // Single use.
    let r = redeem(&env, "organizations", &code, &verifier, &[]);
    assert_refused(&r, "invalid_grant", 54005);
    assert!(
        r.body
            .contains("OAuth2 Authorization code was already redeemed")
    );

    // A tenant GUID in the URL is the token's tid; a redirect URI with a query
    // gets the parameters appended with `&`. The loopback port is not part of the match.
    env.entra
        .register_redirect_uri(CUSTOM_CLIENT, "http://127.0.0.1/cb?x=1");
    let with_query = "http://127.0.0.1:5000/cb?x=1";
    let custom = [("redirect_uri", with_query), ("client_id", CUSTOM_CLIENT)];
    let r = authorize_with(&env, OTHER_TENANT, &challenge, &custom);
    let (loc, query) = location(&r);
    assert!(loc.starts_with(&format!("{with_query}&code=")), "{loc}");
    assert_eq!(query["x"], "1");
    let r = redeem(&env, OTHER_TENANT, &query["code"], &verifier, &custom);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        jwt_payload(r.json()["access_token"].as_str().unwrap())["tid"],
        OTHER_TENANT
    );

    // Any port, and no path: Entra answers at the URI with a `/` added.
    let other_port = [("redirect_uri", "http://localhost:12345")];
    let (loc, _) = location(&authorize_with(
        &env,
        "organizations",
        &challenge,
        &other_port,
    ));
    assert!(loc.starts_with("http://localhost:12345/?code="), "{loc}");

    // Codes expire (10 minutes by default).
    env.entra.set_auth_code_lifetime(Duration::ZERO);
    let (_, query) = location(&authorize_with(&env, "organizations", &challenge, &[]));
    let r = redeem(&env, "organizations", &query["code"], &verifier, &[]);
    assert_refused(&r, "invalid_grant", 70008);
    env.entra.set_auth_code_lifetime(Duration::from_secs(600));

    // Deny: access_denied back at the redirect URI, with the state.
    env.entra.set_authorize_outcome(AuthorizeOutcome::Deny);
    let r = authorize_with(&env, "organizations", &challenge, &[("state", "deny-42")]);
    let (loc, query) = location(&r);
    assert_eq!(
        loc,
        format!(
            "{LOOPBACK}?error=access_denied&error_description=AADSTS65004%3A+User+declined+to+consent+to+access+the+app.&state=deny-42"
        )
    );
    assert!(!query.contains_key("code"));
    let silent = [("prompt", "none")];
    let (_, query) = location(&authorize_with(&env, "organizations", &challenge, &silent));
    assert_eq!(query["error"], "consent_required");

    // Ignore: the login page, and no redirect ever comes.
    env.entra.set_authorize_outcome(AuthorizeOutcome::Ignore);
    let r = authorize_with(&env, "organizations", &challenge, &hint);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers("Location").is_empty());
    assert!(r.headers("Content-Type")[0].starts_with("text/html"));
    assert!(r.body.contains("Sign in") && r.body.contains("ada@contoso.example"));
    let (_, query) = location(&authorize_with(&env, "organizations", &challenge, &silent));
    assert_eq!(query["error"], "login_required");
    assert!(query["error_description"].starts_with("AADSTS50058: "));
    env.entra.set_authorize_outcome(AuthorizeOutcome::Approve);

    // An unusable redirect URI or no client: an error page (400), never a redirect.
    let pages = [
        (
            "redirect_uri",
            "https://evil.example/callback",
            "AADSTS50011: The redirect URI 'https://evil.example/callback' specified in the request does not match the redirect URIs configured for the application",
        ),
        ("redirect_uri", "http://localhost/callback", "AADSTS50011"),
        // Registered for Visual Studio's client: `http://localhost` only, no path, and
        // `127.0.0.1` is another URI.
        (
            "redirect_uri",
            "http://localhost:8400/callback",
            "AADSTS50011",
        ),
        ("redirect_uri", "http://127.0.0.1:8400/", "AADSTS50011"),
        ("redirect_uri", "http://localhost:8400/?x=1", "AADSTS50011"),
        (
            "redirect_uri",
            "http://127.0.0.1:5000/cb?x=1",
            "AADSTS50011",
        ),
        (
            "client_id",
            "11111111-2222-3333-4444-555555555555",
            "AADSTS700016: Application with identifier '11111111-2222-3333-4444-555555555555' was not found",
        ),
        (
            "redirect_uri",
            "http://localhost:8080@evil.example/",
            "AADSTS50011",
        ),
        (
            "redirect_uri",
            "https://localhost:8080/callback",
            "AADSTS50011",
        ),
        ("redirect_uri", "", "'redirect_uri'"),
        ("client_id", "", "'client_id'"),
    ];
    for (name, value, text) in pages {
        let r = authorize_with(&env, "organizations", &challenge, &[(name, value)]);
        assert_eq!(r.status, 400, "{value}: {}", r.body);
        assert!(r.headers("Location").is_empty(), "{value}");
        assert!(r.headers("Content-Type")[0].starts_with("text/html"));
        assert!(r.body.contains(text), "{value}: {}", r.body);
    }

    // Other problems, once the redirect URI is good: invalid_request at the redirect URI.
    let redirected = [
        ("response_type", "token", "AADSTS700054: "),
        ("response_type", "", "AADSTS900144: "),
        ("code_challenge", "", "AADSTS900144: "),
        ("code_challenge_method", "plain", "AADSTS50149: "),
        ("code_challenge_method", "", "AADSTS50149: "),
        ("code_challenge", "too-short", "AADSTS501491: "),
        ("scope", "", "AADSTS900144: "),
    ];
    for (name, value, prefix) in redirected {
        let r = authorize_with(&env, "organizations", &challenge, &[(name, value)]);
        let (loc, query) = location(&r);
        assert!(
            loc.starts_with(&format!("{LOOPBACK}?error=invalid_request&")),
            "{loc}"
        );
        assert!(
            query["error_description"].starts_with(prefix),
            "{name}={value}: {loc}"
        );
        assert_eq!(query["state"], "st 1&x=/é");
        assert!(!query.contains_key("code"));
    }

    let stats = env.entra.stats();
    assert_eq!((stats.auth_code_ok, stats.auth_code_refused), (2, 10));
    assert_eq!(stats.authorize_requests, 8 + pages.len() + redirected.len());
    let grants = stats.token_requests.iter().map(|r| r.grant_type.as_str());
    assert_eq!(grants.filter(|g| *g == "authorization_code").count(), 12);
}

const APP_ID: &str = "6e1f0a2b-3c4d-4e5f-9a0b-1c2d3e4f5a6b";
const APP_SECRET: &str = "Qx8~mock.secret_value-0123456789abcdefGHIJ";
const FED_APP_ID: &str = "7f2a1b3c-4d5e-4f6a-8b7c-9d0e1f2a3b4c";
const FED_SUBJECT: &str = "repo:contoso/app:environment:production";
const UA_CLIENT: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const UA_OBJECT: &str = "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e";
const UA_RES: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/build/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent-id";

/// A client-credentials request; `with` adds or replaces form fields ("" removes one).
fn client_credentials(env: &Env, tenant: &str, client_id: &str, with: &[(&str, &str)]) -> Http {
    let scope = format!("{ADO_RESOURCE}/.default");
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope.as_str()),
    ];
    for (k, v) in with {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    let form: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    entra_post(env, tenant, "token", &form)
}

/// An unsigned JWT client assertion (the mock does not check signatures).
fn assertion(sub: &str, aud: &str, exp: u64) -> String {
    let now = common::tls::unix_now();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let claims = serde_json::json!({
        "iss": "https://token.actions.githubusercontent.com", "sub": sub, "aud": aud,
        "iat": now.saturating_sub(60), "nbf": now.saturating_sub(60), "exp": exp,
    });
    let [h, c] = [header, claims].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(blob(64)))
}

fn with_assertion(jwt: &str) -> [(&str, &str); 2] {
    [
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", jwt),
    ]
}

/// `GET /{org}/_apis/connectionData` on the mock Azure DevOps with a bearer token.
fn connection_data(env: &Env, org: &str, token: &str) -> Http {
    let auth = format!("Authorization: Bearer {token}");
    let url = format!("{}/{org}/_apis/connectionData", env.ado.url());
    curl(env, &["-H", &auth, &url])
}

/// Asserts MockAdo takes `token` for `org` and reports identity `oid`.
fn assert_ado_accepts(env: &Env, org: &str, token: &str, oid: &str) {
    let r = connection_data(env, org, token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authenticatedUser"]["id"], oid, "{}", r.body);
}

fn access_token(r: &Http) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

#[test]
fn client_credentials_grant_with_secret_or_federated_assertion() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    env.entra.add_app(APP_ID, Some(APP_SECRET));
    let secret = [("client_secret", APP_SECRET)];

    // A client secret: an app token for Azure DevOps, no refresh token.
    let r = client_credentials(&env, "organizations", APP_ID, &secret);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "ext_expires_in", "token_type"]
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        (body["expires_in"].as_u64(), body["ext_expires_in"].as_u64()),
        (Some(3600), Some(3600))
    );
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt_payload(token);
    let oid = app_object_id(APP_ID);
    assert_eq!(claims["oid"], oid.as_str());
    assert_eq!(claims["appid"], APP_ID);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["app_displayname"], format!("app {APP_ID}"));
    assert_eq!(claims["tid"], MockEntra::HOME_TENANT);
    assert_eq!(claims["aud"], ADO_RESOURCE);
    assert!(
        claims.get("upn").is_none() && claims.get("name").is_none() && claims.get("scp").is_none()
    );
    let info = env.entra.validate(token).unwrap();
    assert_eq!((info.idtyp.as_str(), info.upn.as_str()), ("app", ""));
    assert_eq!(app_object_id(APP_ID), oid, "stable");
    assert_ne!(oid, APP_ID);
    assert_ado_accepts(&env, "contoso", token, &oid);
    let cd = connection_data(&env, "contoso", token).json();
    assert_eq!(
        cd["authenticatedUser"]["providerDisplayName"],
        format!("app {APP_ID}")
    );

    // client_secret_basic works as well.
    let url = format!("{}/organizations/oauth2/v2.0/token", env.entra.url());
    let user = format!("{APP_ID}:{APP_SECRET}");
    let scope = format!("scope={ADO_RESOURCE}/.default");
    let r = curl(
        &env,
        &[
            "-u",
            &user,
            "-d",
            "grant_type=client_credentials",
            "--data-urlencode",
            &scope,
            &url,
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // A tenant GUID in the URL is the tid: good for that tenant's organisations only.
    env.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let other = access_token(&client_credentials(&env, OTHER_TENANT, APP_ID, &secret));
    assert_eq!(jwt_payload(&other)["tid"], OTHER_TENANT);
    assert_ado_accepts(&env, "fabrikam", &other, &oid);
    assert_eq!(connection_data(&env, "contoso", &other).status, 401);
    assert_eq!(connection_data(&env, "fabrikam", token).status, 401);

    // Another resource: a token, but not one Azure DevOps takes.
    let arm = [
        ("client_secret", APP_SECRET),
        ("scope", "https://management.azure.com/.default"),
    ];
    let arm_token = access_token(&client_credentials(&env, "organizations", APP_ID, &arm));
    assert_eq!(
        jwt_payload(&arm_token)["aud"],
        "https://management.azure.com"
    );
    assert_eq!(connection_data(&env, "contoso", &arm_token).status, 401);

    // Refusals, as Entra words them.
    let r = client_credentials(&env, "organizations", APP_ID, &[("client_secret", "wrong")]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_client");
    assert_eq!(r.json()["error_codes"][0], 7000215);
    let description = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(description.starts_with("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID"), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(r.json()[field].is_string(), "{field}: {}", r.body);
    }

    let unknown = "00000000-1111-2222-3333-444444444444";
    let r = client_credentials(&env, "organizations", unknown, &secret);
    assert_refused(&r, "unauthorized_client", 700016);
    assert!(
        r.body.contains(&format!(
            "AADSTS700016: Application with identifier '{unknown}' was not found in the directory"
        )),
        "{}",
        r.body
    );

    let r = client_credentials(&env, "organizations", APP_ID, &[]);
    assert_refused(&r, "invalid_client", 7000218);
    for scope in [
        ADO_RESOURCE,
        "openid",
        "/.default",
        "user_impersonation offline_access",
    ] {
        let with = [("client_secret", APP_SECRET), ("scope", scope)];
        let r = client_credentials(&env, "organizations", APP_ID, &with);
        assert_refused(&r, "invalid_scope", 1002012);
        assert!(r.body.contains("/.default suffixed"), "{}", r.body);
    }
    let r = client_credentials(
        &env,
        "organizations",
        APP_ID,
        &[("client_secret", APP_SECRET), ("scope", "")],
    );
    assert_refused(&r, "invalid_request", 900144);

    // Federated credentials (workload identity federation).
    env.entra.add_federated_app(FED_APP_ID, FED_SUBJECT);
    let in_an_hour = common::tls::unix_now() + 3600;
    let jwt = assertion(FED_SUBJECT, "api://AzureADTokenExchange", in_an_hour);
    let r = client_credentials(&env, OTHER_TENANT, FED_APP_ID, &with_assertion(&jwt));
    let fed_token = access_token(&r);
    assert!(r.json().get("refresh_token").is_none());
    let claims = jwt_payload(&fed_token);
    assert_eq!(
        (claims["appid"].as_str(), claims["appidacr"].as_str()),
        (Some(FED_APP_ID), Some("2"))
    );
    assert_ado_accepts(&env, "fabrikam", &fed_token, &app_object_id(FED_APP_ID));

    let wrong_sub = assertion(
        "repo:contoso/app:ref:refs/heads/main",
        "api://AzureADTokenExchange",
        in_an_hour,
    );
    let r = client_credentials(&env, OTHER_TENANT, FED_APP_ID, &with_assertion(&wrong_sub));
    assert_refused(&r, "invalid_client", 700213);
    assert!(r.body.contains("No matching federated identity record found for presented assertion subject 'repo:contoso/app:ref:refs/heads/main'"), "{}", r.body);

    let expired = assertion(
        FED_SUBJECT,
        "api://AzureADTokenExchange",
        common::tls::unix_now() - 5,
    );
    let r = client_credentials(&env, OTHER_TENANT, FED_APP_ID, &with_assertion(&expired));
    assert_refused(&r, "invalid_client", 700024);
    assert!(
        r.body
            .contains("AADSTS700024: Client assertion is not within its valid time range"),
        "{}",
        r.body
    );

    let wrong_aud = assertion(FED_SUBJECT, "api://something-else", in_an_hour);
    let r = client_credentials(&env, OTHER_TENANT, FED_APP_ID, &with_assertion(&wrong_aud));
    assert_refused(&r, "invalid_client", 700212);
    let r = client_credentials(
        &env,
        OTHER_TENANT,
        FED_APP_ID,
        &with_assertion("not.a-jwt.at-all"),
    );
    assert_refused(&r, "invalid_request", 50027);
    let bad_type = [
        ("client_assertion_type", "urn:other"),
        ("client_assertion", &jwt),
    ];
    let r = client_credentials(&env, OTHER_TENANT, FED_APP_ID, &bad_type);
    assert_refused(&r, "invalid_request", 90011);
    // The federated app has no secret.
    let r = client_credentials(
        &env,
        OTHER_TENANT,
        FED_APP_ID,
        &[("client_secret", "guess")],
    );
    assert_eq!(
        (r.status, r.json()["error_codes"][0].as_u64()),
        (401, Some(7000215))
    );
    // An app can have a secret and federated credentials.
    env.entra.add_federated_app(APP_ID, FED_SUBJECT);
    access_token(&client_credentials(
        &env,
        "organizations",
        APP_ID,
        &with_assertion(&jwt),
    ));
    access_token(&client_credentials(&env, "organizations", APP_ID, &secret));

    // Tokens expire like user tokens.
    env.entra.set_token_lifetime(Duration::from_secs(1));
    let r = client_credentials(&env, "organizations", APP_ID, &secret);
    assert_eq!(r.json()["expires_in"], 1);
    let short = access_token(&r);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(connection_data(&env, "contoso", &short).status, 401);

    let stats = env.entra.stats();
    assert_eq!(
        (
            stats.client_credentials_ok,
            stats.client_credentials_refused
        ),
        (8, 14)
    );
    assert_eq!(stats.last_client_id.as_deref(), Some(APP_ID));
    let last = stats.token_requests.last().unwrap();
    assert_eq!(
        (
            last.grant_type.as_str(),
            last.client_id.as_str(),
            last.status
        ),
        ("client_credentials", APP_ID, 200)
    );
}

/// `GET` on the managed-identity mock with extra curl arguments (headers).
fn mi_get(env: &Env, imds: &MockImds, path_and_query: &str, args: &[&str]) -> Http {
    let url = format!("{}{path_and_query}", imds.url());
    let mut args = args.to_vec();
    args.push(&url);
    curl(env, &args)
}

fn imds_token(env: &Env, imds: &MockImds, extra: &str) -> Http {
    let q = format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ADO_RESOURCE}{extra}"
    );
    mi_get(env, imds, &q, &["-H", "Metadata: true"])
}

fn app_service_token(env: &Env, imds: &MockImds, extra: &str) -> Http {
    let q = format!("/msi/token?api-version=2019-08-01&resource={ADO_RESOURCE}{extra}");
    let header = format!("X-IDENTITY-HEADER: {}", imds.header_secret());
    mi_get(env, imds, &q, &["-H", &header])
}

#[test]
fn managed_identity_endpoints_imds_and_app_service() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let env = setup();
    let imds = MockImds::start(&env.entra);
    assert!(
        imds.url().starts_with("http://127.0.0.1:"),
        "{}",
        imds.url()
    );
    assert_eq!(
        imds.app_service_endpoint(),
        format!("{}/msi/token", imds.url())
    );
    imds.add_user_assigned(UA_CLIENT, UA_OBJECT, UA_RES);

    // IMDS wants `Metadata: true`, an api-version and a resource.
    let q =
        format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ADO_RESOURCE}");
    let r = mi_get(&env, &imds, &q, &[]);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );
    assert_eq!(
        mi_get(&env, &imds, &q, &["-H", "Metadata: false"]).status,
        400
    );
    let r = mi_get(
        &env,
        &imds,
        "/metadata/identity/oauth2/token?api-version=2018-02-01",
        &["-H", "Metadata: true"],
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = mi_get(
        &env,
        &imds,
        &format!("/metadata/identity/oauth2/token?resource={ADO_RESOURCE}"),
        &["-H", "Metadata: true"],
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        mi_get(&env, &imds, "/metadata/instance", &["-H", "Metadata: true"]).status,
        404
    );

    // System-assigned: numbers as strings, as IMDS sends them.
    let r = imds_token(&env, &imds, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    for field in ["expires_in", "expires_on", "not_before"] {
        assert!(
            body[field].as_str().unwrap().parse::<u64>().is_ok(),
            "{field}: {}",
            r.body
        );
    }
    let num = |f: &str| body[f].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(num("expires_in"), 3600);
    assert!(num("expires_on").abs_diff(num("not_before") + 3600) <= 1);
    assert_eq!(body["refresh_token"], "");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], ADO_RESOURCE);
    assert_eq!(body["client_id"], MockImds::SYSTEM_CLIENT_ID);
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt_payload(token);
    assert_eq!(
        (claims["idtyp"].as_str(), claims["appid"].as_str()),
        (Some("app"), Some(MockImds::SYSTEM_CLIENT_ID))
    );
    assert_eq!(claims["xms_mirid"], MockImds::SYSTEM_RESOURCE_ID);
    assert_eq!(imds.last_identity(), Some(IdentityRef::SystemAssigned));
    assert_ado_accepts(&env, "contoso", token, MockImds::SYSTEM_OBJECT_ID);

    // User-assigned, by each kind of id.
    let by = [
        (
            format!("&client_id={UA_CLIENT}"),
            IdentityRef::ClientId(UA_CLIENT.into()),
        ),
        (
            format!("&object_id={UA_OBJECT}"),
            IdentityRef::ObjectId(UA_OBJECT.into()),
        ),
        (
            format!("&msi_res_id={UA_RES}"),
            IdentityRef::ResourceId(UA_RES.into()),
        ),
    ];
    for (extra, expected) in &by {
        let r = imds_token(&env, &imds, extra);
        assert_eq!(r.status, 200, "{extra}: {}", r.body);
        assert_eq!(r.json()["client_id"], UA_CLIENT);
        assert_eq!(imds.last_identity().as_ref(), Some(expected));
        let token = access_token(&r);
        assert_eq!(jwt_payload(&token)["xms_mirid"], UA_RES);
        assert_eq!(jwt_payload(&token)["app_displayname"], "agent-id");
        assert_ado_accepts(&env, "contoso", &token, UA_OBJECT);
    }
    let not_found =
        serde_json::json!({"error": "invalid_request", "error_description": "Identity not found"});
    let r = imds_token(
        &env,
        &imds,
        "&client_id=99999999-9999-4999-8999-999999999999",
    );
    assert_eq!((r.status, r.json()), (400, not_found.clone()));
    let r = imds_token(
        &env,
        &imds,
        &format!("&client_id={UA_CLIENT}&object_id={UA_OBJECT}"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(imds.last_identity(), None);
    imds.set_system_assigned(false);
    let r = imds_token(&env, &imds, "");
    assert_eq!((r.status, r.json()), (400, not_found));
    imds.set_system_assigned(true);

    // Throttling, then success.
    let (before_requests, before_served) = (imds.token_requests(), imds.served());
    imds.fail_next(2, 429);
    for _ in 0..2 {
        let r = imds_token(&env, &imds, "");
        assert_eq!(r.status, 429);
        assert_eq!(r.headers("Retry-After"), ["1"]);
    }
    access_token(&imds_token(&env, &imds, ""));
    imds.fail_next(1, 503);
    assert_eq!(imds_token(&env, &imds, "").status, 503);
    access_token(&imds_token(&env, &imds, ""));
    assert_eq!(imds.token_requests() - before_requests, 5);
    assert_eq!(imds.served() - before_served, 2);

    // App Service / Functions.
    let q = format!("/msi/token?api-version=2019-08-01&resource={ADO_RESOURCE}");
    assert_eq!(mi_get(&env, &imds, &q, &[]).status, 400);
    let r = mi_get(&env, &imds, &q, &["-H", "X-IDENTITY-HEADER: wrong"]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["statusCode"], 400);
    let r = app_service_token(&env, &imds, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_on",
            "resource",
            "token_type"
        ]
    );
    assert!(body["expires_on"].as_str().unwrap().parse::<u64>().unwrap() > common::tls::unix_now());
    assert_eq!(
        (body["client_id"].as_str(), body["resource"].as_str()),
        (Some(MockImds::SYSTEM_CLIENT_ID), Some(ADO_RESOURCE))
    );
    assert_ado_accepts(
        &env,
        "contoso",
        body["access_token"].as_str().unwrap(),
        MockImds::SYSTEM_OBJECT_ID,
    );
    for extra in [
        format!("&client_id={UA_CLIENT}"),
        format!("&principal_id={UA_OBJECT}"),
        format!("&mi_res_id={UA_RES}"),
    ] {
        let r = app_service_token(&env, &imds, &extra);
        assert_eq!(r.json()["client_id"], UA_CLIENT, "{extra}: {}", r.body);
        assert_ado_accepts(&env, "contoso", &access_token(&r), UA_OBJECT);
    }
    let r = app_service_token(
        &env,
        &imds,
        "&client_id=99999999-9999-4999-8999-999999999999",
    );
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (400, Some("Unable to load the proper Managed Identity."))
    );
    imds.fail_next(1, 429);
    let r = app_service_token(&env, &imds, "");
    assert_eq!((r.status, r.headers("Retry-After")), (429, vec!["1"]));
    access_token(&app_service_token(&env, &imds, ""));

    // The identities' tenant decides which organisations take their tokens.
    env.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    imds.set_tenant(OTHER_TENANT);
    let token = access_token(&imds_token(&env, &imds, ""));
    assert_ado_accepts(&env, "fabrikam", &token, MockImds::SYSTEM_OBJECT_ID);
    assert_eq!(connection_data(&env, "contoso", &token).status, 401);

    let log = imds.requests();
    assert_eq!(log.len(), imds.token_requests());
    assert_eq!(
        log.iter().filter(|r| r.status == 200).count(),
        imds.served()
    );
    assert!(
        log.iter()
            .any(|r| r.endpoint == common::MiEndpoint::AppService)
    );
}

// ---- Legacy Azure DevOps OAuth (app.vssps.visualstudio.com) ----

const LEGACY_APP: &str = "5f0a1b2c-3d4e-4f50-8a61-7b8c9d0e1f2a";
const LEGACY_CALLBACK: &str = "https://app.fabrikam.example/oauth/callback";

/// `GET /oauth2/authorize` on the mock; `with` adds or replaces parameters (an
/// empty value removes one). Redirects are not followed.
fn legacy_authorize(env: &Env, vssps: &MockVssps, with: &[(&str, &str)]) -> Http {
    let mut params = vec![
        ("client_id", LEGACY_APP),
        ("response_type", "Assertion"),
        ("state", "st 1&x=/é"),
        ("scope", "vso.code_write"),
        ("redirect_uri", LEGACY_CALLBACK),
    ];
    for (k, v) in with {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["-G"];
    args.extend(
        pairs
            .iter()
            .flat_map(|kv| ["--data-urlencode", kv.as_str()]),
    );
    let url = vssps.authorize_url();
    args.push(&url);
    curl(env, &args)
}

/// An approved authorize request's code.
fn legacy_code(env: &Env, vssps: &MockVssps, with: &[(&str, &str)]) -> String {
    let (_, query) = location(&legacy_authorize(env, vssps, with));
    query["code"].clone()
}

/// `POST /oauth2/token` with the fields the real service expects; `with` adds or
/// replaces fields (an empty value removes one).
fn legacy_token(env: &Env, vssps: &MockVssps, fields: &[(&str, &str)]) -> Http {
    let form: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args: Vec<&str> = form
        .iter()
        .flat_map(|kv| ["--data-urlencode", kv.as_str()])
        .collect();
    let url = vssps.token_url();
    args.push(&url);
    curl(env, &args)
}

fn legacy_fields<'a>(
    secret: &'a str,
    grant: &'a str,
    assertion: &'a str,
    with: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", secret),
        ("grant_type", grant),
        ("assertion", assertion),
        ("redirect_uri", LEGACY_CALLBACK),
    ];
    for (k, v) in with {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    form
}

fn legacy_redeem(
    env: &Env,
    v: &MockVssps,
    secret: &str,
    code: &str,
    with: &[(&str, &str)],
) -> Http {
    legacy_token(env, v, &legacy_fields(secret, JWT_BEARER_GRANT, code, with))
}

fn legacy_refresh(env: &Env, v: &MockVssps, secret: &str, rt: &str) -> Http {
    legacy_token(env, v, &legacy_fields(secret, "refresh_token", rt, &[]))
}

fn assert_legacy_error(r: &Http, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.json()["Error"], error, "{}", r.body);
    assert!(r.json()["ErrorDescription"].is_string(), "{}", r.body);
}

fn is_jwt_shaped(s: &str) -> bool {
    let b64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| b64url(p))
}

fn legacy_setup() -> (Env, MockVssps, String) {
    let env = setup();
    let vssps = MockVssps::start(&env.ca);
    let secret = vssps.add_app(LEGACY_APP, LEGACY_CALLBACK, &["vso.code_write", "vso.code"]);
    (env, vssps, secret)
}

#[test]
fn legacy_authorize_redirects_to_the_exact_callback_only() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let (env, vssps, secret) = legacy_setup();
    assert!(is_jwt_shaped(&secret), "{secret}");

    let r = legacy_authorize(&env, &vssps, &[]);
    let (loc, query) = location(&r);
    assert!(
        loc.starts_with(&format!("{LEGACY_CALLBACK}?code=")),
        "{loc}"
    );
    assert_eq!(query["state"], "st 1&x=/é");
    assert_eq!(query.len(), 2, "{query:?}");
    assert!(is_jwt_shaped(&query["code"]), "{}", query["code"]);
    let claims = jwt_payload(&query["code"]);
    assert_eq!(claims["nameid"], vssps.user_id().as_str());
    let stats = vssps.stats();
    assert_eq!(stats.authorize_requests, 1);
    let last = stats.last_authorize.unwrap();
    assert_eq!(last["response_type"], "Assertion");
    assert_eq!(last["redirect_uri"], LEGACY_CALLBACK);

    // A callback with a query gets `&`.
    let with_query = "https://app.fabrikam.example/cb?tenant=1";
    vssps.add_app("other-app", with_query, &["vso.code"]);
    let r = legacy_authorize(
        &env,
        &vssps,
        &[
            ("client_id", "other-app"),
            ("redirect_uri", with_query),
            ("scope", "vso.code"),
        ],
    );
    let (loc, _) = location(&r);
    assert!(loc.starts_with(&format!("{with_query}&code=")), "{loc}");

    // Errors are HTML pages, never redirects.
    let refused = [
        (
            (
                "redirect_uri",
                "https://app.fabrikam.example/oauth/callback/",
            ),
            "Invalid redirect_uri",
        ),
        (
            (
                "redirect_uri",
                "https://APP.fabrikam.example/oauth/callback",
            ),
            "Invalid redirect_uri",
        ),
        (
            ("redirect_uri", "http://127.0.0.1:8400/callback"),
            "Invalid redirect_uri",
        ),
        (("redirect_uri", ""), "Invalid redirect_uri"),
        (("scope", "vso.code_write vso.build"), "Invalid scope"),
        (("scope", ""), "Invalid scope"),
        (("client_id", "not-registered"), "Invalid client_id"),
        (("client_id", ""), "Invalid client_id"),
        (("response_type", "code"), "Invalid response_type"),
    ];
    for ((k, v), message) in refused {
        let r = legacy_authorize(&env, &vssps, &[(k, v)]);
        assert_eq!(r.status, 400, "{k}={v}: {}", r.body);
        assert!(r.headers("Location").is_empty(), "{k}={v}: {:?}", r.headers);
        assert!(r.body.contains(message), "{k}={v}: {}", r.body);
        assert!(r.headers("Content-Type")[0].starts_with("text/html"));
    }

    // A subset of the registered scopes is fine.
    location(&legacy_authorize(&env, &vssps, &[("scope", "vso.code")]));

    vssps.set_authorize_outcome(AuthorizeOutcome::Deny);
    let (loc, query) = location(&legacy_authorize(&env, &vssps, &[]));
    assert!(
        loc.starts_with(&format!("{LEGACY_CALLBACK}?error=access_denied")),
        "{loc}"
    );
    assert_eq!(query["state"], "st 1&x=/é");
    assert!(!query.contains_key("code"));

    vssps.set_authorize_outcome(AuthorizeOutcome::Ignore);
    let r = legacy_authorize(&env, &vssps, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers("Location").is_empty());
    assert!(r.body.contains("Sign in"));
    assert_eq!(vssps.stats().authorize_requests, 5 + refused.len());
}

#[test]
fn legacy_code_redeems_once_for_string_expires_in() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let (env, vssps, secret) = legacy_setup();
    let code = legacy_code(&env, &vssps, &[]);

    // Refusals that do not use the code up.
    let r = legacy_redeem(&env, &vssps, "wrong.secret.value", &code, &[]);
    assert_legacy_error(&r, 401, "invalid_client");
    assert_eq!(r.json()["ErrorDescription"], "Invalid client auth token.");
    let r = legacy_redeem(
        &env,
        &vssps,
        &secret,
        &code,
        &[("redirect_uri", "https://app.fabrikam.example/")],
    );
    assert_legacy_error(&r, 400, "invalid_request");
    let r = legacy_redeem(&env, &vssps, &secret, &code, &[("redirect_uri", "")]);
    assert_legacy_error(&r, 400, "invalid_request");
    let r = legacy_redeem(
        &env,
        &vssps,
        &secret,
        &code,
        &[("client_assertion_type", "x")],
    );
    assert_legacy_error(&r, 400, "invalid_request");
    let r = legacy_redeem(
        &env,
        &vssps,
        &secret,
        &code,
        &[("grant_type", "authorization_code")],
    );
    assert_legacy_error(&r, 400, "unsupported_grant_type");
    assert_eq!(
        vssps.stats().last_error.as_deref(),
        Some("unsupported_grant_type")
    );
    let r = legacy_redeem(&env, &vssps, &secret, "not-a-code", &[]);
    assert_legacy_error(&r, 400, "invalid_grant");
    // Another app's secret cannot redeem this app's code.
    let other = vssps.add_app("other-app", LEGACY_CALLBACK, &["vso.code_write"]);
    let r = legacy_redeem(&env, &vssps, &other, &code, &[]);
    assert_legacy_error(&r, 400, "invalid_grant");
    // JSON bodies are refused: the service takes a form.
    let fields = legacy_fields(&secret, JWT_BEARER_GRANT, &code, &[]);
    let json: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    let url = vssps.token_url();
    let body = Value::Object(json).to_string();
    let r = curl(
        &env,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
            &url,
        ],
    );
    assert_legacy_error(&r, 400, "invalid_request");

    let r = legacy_redeem(&env, &vssps, &secret, &code, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers("Content-Type")[0].starts_with("application/json"));
    let body = r.json();
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["token_type"], "jwt-bearer");
    assert_eq!(body["scope"], "vso.code_write vso.authorization_grant");
    let token = body["access_token"].as_str().unwrap();
    assert!(is_jwt_shaped(token), "{token}");
    let claims = jwt_payload(token);
    assert_eq!(claims["nameid"], vssps.user_id().as_str());
    assert_eq!(claims["appid"], LEGACY_APP);
    assert_eq!(claims["scp"], "vso.code_write");
    assert_eq!(claims["iss"], "app.vstoken.visualstudio.com");
    assert_eq!(claims["aud"], "app.vstoken.visualstudio.com");
    assert!(claims["aui"].as_str().is_some_and(|a| a.len() == 36));
    assert!(claims["exp"].as_u64().unwrap() > claims["nbf"].as_u64().unwrap());
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let info = vssps.validate(token).unwrap();
    assert_eq!(
        (
            info.name.as_str(),
            info.email.as_str(),
            info.app_id.as_str()
        ),
        ("Grace Hopper", "grace@fabrikam.example", LEGACY_APP)
    );
    assert_eq!(info.scopes, vec!["vso.code_write"]);
    assert_eq!(info.user_id, vssps.user_id());
    assert!(vssps.validate("garbage").is_none());

    let stats = vssps.stats();
    let form = stats.last_token_form.unwrap();
    let expected: Vec<(&str, &str)> = legacy_fields(&secret, JWT_BEARER_GRANT, &code, &[]);
    let expected: std::collections::BTreeMap<String, String> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(form, expected);
    assert_eq!((stats.code_ok, stats.code_refused), (1, 6));
    assert_eq!(stats.token_requests, 9);

    // Single use.
    let r = legacy_redeem(&env, &vssps, &secret, &code, &[]);
    assert_legacy_error(&r, 400, "invalid_grant");
    assert_eq!(vssps.stats().last_error.as_deref(), Some("invalid_grant"));

    // Expired codes; configured lifetimes.
    vssps.set_code_lifetime(Duration::ZERO);
    let code = legacy_code(&env, &vssps, &[]);
    assert_legacy_error(
        &legacy_redeem(&env, &vssps, &secret, &code, &[]),
        400,
        "invalid_grant",
    );
    vssps.set_code_lifetime(Duration::from_secs(60));
    vssps.set_token_lifetime(Duration::from_secs(120));
    vssps.set_user("Alan Turing", "alan@fabrikam.example");
    let code = legacy_code(&env, &vssps, &[("scope", "vso.code vso.code_write")]);
    let r = legacy_redeem(&env, &vssps, &secret, &code, &[]);
    assert_eq!(r.json()["expires_in"], "120", "{}", r.body);
    assert_eq!(
        r.json()["scope"],
        "vso.code vso.code_write vso.authorization_grant"
    );
    let info = vssps
        .validate(r.json()["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(info.email, "alan@fabrikam.example");
    vssps.set_token_lifetime(Duration::ZERO);
    let code = legacy_code(&env, &vssps, &[]);
    let r = legacy_redeem(&env, &vssps, &secret, &code, &[]);
    assert!(
        vssps
            .validate(r.json()["access_token"].as_str().unwrap())
            .is_none()
    );
}

#[test]
fn legacy_refresh_rotates_and_faults() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let (env, vssps, secret) = legacy_setup();
    let code = legacy_code(&env, &vssps, &[]);
    let first = legacy_redeem(&env, &vssps, &secret, &code, &[]).json();
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();

    let r = legacy_refresh(&env, &vssps, &secret, &rt1);
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.json();
    assert_eq!(second["expires_in"], "3599");
    assert_eq!(second["scope"], "vso.code_write vso.authorization_grant");
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    assert_ne!(first["access_token"], second["access_token"]);
    assert!(
        vssps
            .validate(second["access_token"].as_str().unwrap())
            .is_some()
    );
    let form = vssps.stats().last_token_form.unwrap();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["assertion"], rt1);

    // Strict rotation: the old refresh token is spent.
    assert_legacy_error(
        &legacy_refresh(&env, &vssps, &secret, &rt1),
        400,
        "invalid_grant",
    );
    assert_legacy_error(
        &legacy_refresh(&env, &vssps, "x.y.z", &rt2),
        401,
        "invalid_client",
    );
    let r = legacy_token(
        &env,
        &vssps,
        &legacy_fields(
            &secret,
            "refresh_token",
            &rt2,
            &[("redirect_uri", "https://x.example/")],
        ),
    );
    assert_legacy_error(&r, 400, "invalid_request");
    let r = legacy_refresh(&env, &vssps, &secret, &rt2);
    assert_eq!(r.status, 200, "{}", r.body);
    let rt3 = r.json()["refresh_token"].as_str().unwrap().to_string();

    vssps.set_strict_rotation(false);
    assert_eq!(legacy_refresh(&env, &vssps, &secret, &rt2).status, 200);
    vssps.revoke_all_refresh_tokens();
    assert_legacy_error(
        &legacy_refresh(&env, &vssps, &secret, &rt3),
        400,
        "invalid_grant",
    );
    let stats = vssps.stats();
    assert_eq!((stats.refresh_ok, stats.refresh_refused), (3, 4));

    // Faults.
    vssps.set_fault(Fault::Status(503, Some(7)));
    let r = legacy_refresh(&env, &vssps, &secret, &rt3);
    assert_eq!((r.status, r.headers("Retry-After")), (503, vec!["7"]));
    vssps.set_fault(Fault::Garbage);
    let r = legacy_refresh(&env, &vssps, &secret, &rt3);
    assert_eq!((r.status, r.body.as_str()), (200, "<html>not json</html>"));
    vssps.set_fault(Fault::Slow(Duration::from_millis(1200)));
    let start = Instant::now();
    assert_eq!(legacy_refresh(&env, &vssps, &secret, &rt3).status, 400);
    assert!(start.elapsed() >= Duration::from_millis(1200));
    vssps.set_fault(Fault::Down);
    let out = curl_output(
        &env,
        &[&vssps.token_url(), "-d", "grant_type=refresh_token"],
    );
    assert!(!out.status.success());
    let out = curl_output(&env, &[&vssps.authorize_url()]);
    assert!(!out.status.success());
    assert!(vssps.stats().dropped_connections >= 2);
    vssps.set_fault(Fault::None);
    let before = vssps.stats().token_requests;
    assert_eq!(legacy_refresh(&env, &vssps, &secret, &rt3).status, 400);
    assert_eq!(vssps.stats().token_requests, before + 1);
}

#[test]
fn mock_ado_accepts_legacy_tokens() {
    if !require(&[Piece::Curl], "the mocks, driven with curl") {
        return;
    }
    let (env, vssps, secret) = legacy_setup();
    let token_for = |scope: &str| {
        let code = legacy_code(&env, &vssps, &[("scope", scope)]);
        access_token(&legacy_redeem(&env, &vssps, &secret, &code, &[]))
    };
    let write = token_for("vso.code_write");
    let read = token_for("vso.code");

    // Not accepted until MockAdo is told about the service.
    assert_eq!(connection_data(&env, "contoso", &write).status, 401);
    env.ado.accept_legacy(vssps.validator());
    env.ado.set_org_tenant("elsewhere", OTHER_TENANT);
    for org in ["contoso", "elsewhere"] {
        let r = connection_data(&env, org, &write);
        assert_eq!(r.status, 200, "{}", r.body);
        let user = &r.json()["authenticatedUser"];
        assert_eq!(user["providerDisplayName"], "Grace Hopper");
        assert_eq!(
            user["properties"]["Account"]["$value"],
            "grace@fabrikam.example"
        );
        assert_eq!(user["id"], vssps.user_id().as_str());
    }
    let pair = STANDARD.encode(format!("anyone:{read}"));
    let url = format!("{}/contoso/_apis/connectionData", env.ado.url());
    let r = curl(&env, &["-H", &format!("Authorization: Basic {pair}"), &url]);
    assert_eq!(r.status, 200, "{}", r.body);
    for garbage in ["garbage", "a.b.c", &secret] {
        assert_eq!(connection_data(&env, "contoso", garbage).status, 401);
    }
    let log = env.ado.requests();
    assert!(
        log.iter().filter(|r| r.accepted).all(|r| r.legacy),
        "{log:#?}"
    );

    // Git: read scopes clone, only write scopes push.
    let url = env.ado.create_repo("contoso", "proj", "repo");
    let work = env.dir.join("work");
    let src = work.join("src");
    git_ok(&env, &work, &["init", "-q", "src"]);
    std::fs::write(src.join("README"), "hello\n").unwrap();
    git_ok(&env, &src, &["add", "."]);
    git_ok(&env, &src, &["commit", "-q", "-m", "first"]);
    let out = git(
        &env,
        &src,
        &["-c", &bearer(&read), "push", "-q", &url, "main"],
    );
    assert!(!out.status.success());
    let refused = env
        .ado
        .requests()
        .into_iter()
        .rfind(|r| !r.accepted)
        .unwrap();
    assert!(refused.path.ends_with("/info/refs"), "{refused:?}");
    // The backend runs as the legacy user (REMOTE_USER = email), as the reflog shows.
    let bare = env.ado.root().join("contoso/proj/_git/repo");
    git_ok(&env, &bare, &["config", "core.logAllRefUpdates", "true"]);
    git_ok(
        &env,
        &src,
        &["-c", &bearer(&write), "push", "-q", &url, "main"],
    );
    let reflog = std::fs::read_to_string(bare.join("logs/refs/heads/main")).unwrap();
    assert!(reflog.contains("grace@fabrikam.example"), "{reflog}");
    git_ok(
        &env,
        &work,
        &["-c", &basic(&read), "clone", "-q", &url, "clone"],
    );
    assert_eq!(
        std::fs::read_to_string(work.join("clone/README")).unwrap(),
        "hello\n"
    );
    let vso_build = vssps.add_app("build-app", LEGACY_CALLBACK, &["vso.build"]);
    let code = legacy_code(
        &env,
        &vssps,
        &[("client_id", "build-app"), ("scope", "vso.build")],
    );
    let build = access_token(&legacy_redeem(&env, &vssps, &vso_build, &code, &[]));
    assert_eq!(connection_data(&env, "contoso", &build).status, 200);
    let out = git(&env, &work, &["-c", &bearer(&build), "ls-remote", &url]);
    assert!(!out.status.success());

    // Entra tokens still work next to legacy ones.
    env.entra.set_auto_approve_after_polls(0);
    let entra = sign_in(&env, "organizations");
    let r = connection_data(&env, "contoso", entra["access_token"].as_str().unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["authenticatedUser"]["providerDisplayName"],
        "Ada Lovelace"
    );
    assert!(!env.ado.requests().last().unwrap().legacy);
}
