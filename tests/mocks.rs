//! Tests of the mock servers in `tests/common` themselves, with real `git` and
//! `curl` processes and no product code.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::entra::{AuthorizeOutcome, pkce_challenge, sha256};
use common::{ADO_RESOURCE, Fault, MockAdo, MockEntra, Scheme, TestCa};
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
    let mut form = vec![
        "grant_type=refresh_token".to_string(),
        format!("client_id={CLIENT_ID}"),
        format!("refresh_token={refresh_token}"),
        format!("scope={ADO_RESOURCE}/.default offline_access"),
    ];
    form.extend(extra.iter().map(|s| s.to_string()));
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    entra_post(env, "organizations", "token", &form)
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
fn expired_access_token_is_refused() {
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

const LOOPBACK: &str = "http://127.0.0.1:8400/callback";

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
    let other_uri = [("redirect_uri", "http://127.0.0.1:8401/callback")];
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
    // gets the parameters appended with `&`.
    let with_query = "http://localhost:5000/cb?x=1";
    let r = authorize_with(
        &env,
        OTHER_TENANT,
        &challenge,
        &[("redirect_uri", with_query)],
    );
    let (loc, query) = location(&r);
    assert!(loc.starts_with(&format!("{with_query}&code=")), "{loc}");
    assert_eq!(query["x"], "1");
    let uri = [("redirect_uri", with_query)];
    let r = redeem(&env, OTHER_TENANT, &query["code"], &verifier, &uri);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        jwt_payload(r.json()["access_token"].as_str().unwrap())["tid"],
        OTHER_TENANT
    );

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
    assert_eq!(stats.authorize_requests, 7 + pages.len() + redirected.len());
    let grants = stats.token_requests.iter().map(|r| r.grant_type.as_str());
    assert_eq!(grants.filter(|g| *g == "authorization_code").count(), 12);
}
