//! Build agents: a real git clone through each machine identity (managed identity on IMDS and
//! App Service, service principal with a secret, workload identity with a token file), with
//! no sign-in, and one clear line for each misconfiguration, never a prompt.

mod common;

use common::requires::{Piece, require};

use base64::Engine;
use common::MockEntra;
use common::harness::{World, doctor_check, ok, text};
use common::imds::{IdentityRef, MockImds};
use common::oidc::{federated_jwt, oidc_provider};

const APP: &str = "6a1e3b52-2f0c-4d3e-9a7b-1c2d3e4f5a6b";

fn clone_ok(w: &World) {
    let url = w.ado.create_repo("contoso", "p", "r");
    ok(
        w,
        &w.git(&["clone", &url, "a"], None),
        "clone with a machine identity",
    );
    assert_eq!(w.entra.stats().devicecode_requests, 0, "no sign-in");
}

/// The one line git shows when the identity cannot work.
fn failure(w: &World) -> String {
    let out = w.get("contoso", true);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !err.contains("login"),
        "never suggests a person's sign-in: {err}"
    );
    err
}

#[test]
fn service_principal_with_a_secret() {
    let mut w = World::new();
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    w.set_env("AZURE_CLIENT_SECRET", "s3cret-value");
    clone_ok(&w);
    assert!(w.entra.stats().client_credentials_ok >= 1);
    let status = text(&w.client(&["status"], "").stdout);
    assert!(
        status.contains(&format!("service principal {APP}")),
        "{status}"
    );
    assert!(!w.log().contains("s3cret-value"));
}

#[test]
fn service_principal_misconfigurations_are_one_line() {
    let mut w = World::new();
    w.entra.add_app(APP, Some("right"));
    w.configure_identity("kind = \"service-principal\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    // Missing variable.
    let err = failure(&w);
    assert!(err.contains("AZURE_CLIENT_SECRET"), "{err}");
    // Wrong secret: Entra's code, and no secret in the message. (The running daemon takes
    // the new variable from this request: no restart.)
    w.set_env("AZURE_CLIENT_SECRET", "wrong-secret");
    let err = failure(&w);
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(!err.contains("wrong-secret"));
}

#[test]
fn workload_identity_re_reads_its_token_file() {
    let mut w = World::new();
    w.entra
        .add_federated_app(APP, "system:serviceaccount:ci:agent");
    let file = w.path("federated-token");
    let write_token = |sub: &str| std::fs::write(&file, federated_jwt(sub)).unwrap();
    write_token("system:serviceaccount:ci:agent");
    w.configure_identity("kind = \"workload-identity\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    w.set_env("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap());
    clone_ok(&w);
    // The file is re-read at each exchange: a token with the wrong subject now fails.
    write_token("system:serviceaccount:other:agent");
    w.erase_current();
    let err = failure(&w);
    assert!(err.contains("AADSTS700213"), "{err}");
}

#[test]
fn managed_identity_on_imds_retries_when_busy() {
    let mut w = World::new();
    let imds = MockImds::start(&w.entra);
    w.configure_identity("kind = \"managed-identity\"");
    w.set_env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds.url());
    imds.fail_next(2, 429);
    clone_ok(&w);
    assert!(imds.token_requests() >= 3, "retried after 429s");
    assert_eq!(imds.last_identity(), Some(IdentityRef::SystemAssigned));
    let status = text(&w.client(&["status"], "").stdout);
    assert!(
        status.contains("managed identity (system-assigned)"),
        "{status}"
    );
}

#[test]
fn user_assigned_managed_identity_by_client_id_and_app_service() {
    let mut w = World::new();
    let imds = MockImds::start(&w.entra);
    imds.add_user_assigned(APP, "0b1c2d3e-0000-4000-8000-000000000001", "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent");
    w.configure_identity(&format!(
        "kind = \"managed-identity\"\nclient_id = \"{APP}\""
    ));
    // App Service / Functions: IDENTITY_ENDPOINT + IDENTITY_HEADER.
    w.set_env("IDENTITY_ENDPOINT", &imds.app_service_endpoint());
    w.set_env("IDENTITY_HEADER", imds.header_secret());
    clone_ok(&w);
    assert_eq!(
        imds.last_identity(),
        Some(IdentityRef::ClientId(APP.into()))
    );
    assert!(
        imds.requests()
            .iter()
            .all(|r| r.endpoint == common::imds::MiEndpoint::AppService)
    );
}

#[test]
fn no_managed_identity_endpoint_fails_fast_with_one_line() {
    let mut w = World::new();
    w.configure_identity("kind = \"managed-identity\"");
    // Nothing listens there.
    w.set_env("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9");
    let t = std::time::Instant::now();
    let err = failure(&w);
    assert!(err.contains("Instance Metadata Service"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn an_app_service_refusal_is_reported_with_its_message() {
    let mut w = World::new();
    let imds = MockImds::start(&w.entra);
    imds.set_system_assigned(false);
    w.configure_identity("kind = \"managed-identity\"");
    w.set_env("IDENTITY_ENDPOINT", &imds.app_service_endpoint());
    w.set_env("IDENTITY_HEADER", imds.header_secret());
    let err = failure(&w);
    assert!(err.contains("App Service"), "{err}");
    assert!(!err.contains("no details"), "{err}");
}

/// A federated token (JWT) as an OIDC provider would issue it for `sub`.
#[test]
fn workload_identity_in_github_actions() {
    let mut w = World::new();
    let sub = "repo:contoso/web:ref:refs/heads/main";
    w.entra.add_federated_app(APP, sub);
    let (gh, seen) = oidc_provider(
        &w,
        "gh-request-token",
        "repo:contoso/web:ref:refs/heads/main",
        |jwt| format!(r#"{{"count":1,"value":"{jwt}"}}"#),
    );
    w.configure_identity("kind = \"workload-identity\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    w.set_env(
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        &format!("https://{}/_apis/oidctoken?api-version=2.0", gh.addr()),
    );
    w.set_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "gh-request-token");
    clone_ok(&w);
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET "), "{req}");
    assert!(
        req.contains("audience=api%3A%2F%2FAzureADTokenExchange"),
        "{req}"
    );
    let status = text(&w.client(&["status"], "").stdout);
    assert!(status.contains("GitHub Actions OIDC"), "{status}");
}

#[test]
fn workload_identity_in_azure_pipelines() {
    let mut w = World::new();
    let sub = "sc://contoso/web/agent-connection";
    w.entra.add_federated_app(APP, sub);
    let (ado_oidc, seen) = oidc_provider(
        &w,
        "system-access-token",
        "sc://contoso/web/agent-connection",
        |jwt| format!(r#"{{"oidcToken":"{jwt}"}}"#),
    );
    w.configure_identity("kind = \"workload-identity\"\nservice_connection_id = \"c0ffee00-0000-4000-8000-000000000001\"",
    );
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    w.set_env(
        "SYSTEM_OIDCREQUESTURI",
        &format!(
            "https://{}/contoso/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken",
            ado_oidc.addr()
        ),
    );
    // Without the job's access token: one line naming the variable.
    let err = failure(&w);
    assert!(err.contains("SYSTEM_ACCESSTOKEN"), "{err}");
    // The next step maps it: the same daemon serves it with that step's variables.
    let pid = w.daemon_pid();
    w.set_env("SYSTEM_ACCESSTOKEN", "system-access-token");
    clone_ok(&w);
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("POST "), "{req}");
    assert!(
        req.contains("serviceConnectionId=c0ffee00-0000-4000-8000-000000000001"),
        "{req}"
    );
    assert!(req.contains("api-version=7.1"), "{req}");
    assert_eq!(w.daemon_pid(), pid, "no daemon restart was needed");
}

/// A local Azure Arc identity endpoint (plain HTTP): refuses with the key file's path, then
/// hands out `token` to a request that proves it read that file.
fn arc_endpoint(key_file: std::path::PathBuf, key: &'static str, token: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let ok_query = head.contains("api-version=2020-06-01")
                && head.contains("resource=499b84ac-1321-427f-aa17-267ca6975798")
                && head.contains("metadata: true");
            let answer = if !ok_query {
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
                    .to_string()
            } else if head.contains(&format!(
                "authorization: basic {}",
                key.to_ascii_lowercase()
            )) {
                let body = format!(
                    r#"{{"access_token":"{token}","expires_in":"3599","expires_on":"0","resource":"499b84ac-1321-427f-aa17-267ca6975798","token_type":"Bearer"}}"#
                );
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm={}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                    key_file.display()
                )
            };
            let _ = s.write_all(answer.as_bytes());
        }
    });
    format!(
        "http://127.0.0.1:{}/metadata/identity/oauth2/token",
        addr.port()
    )
}

#[test]
fn managed_identity_on_azure_arc_proves_itself_with_the_key_file() {
    let mut w = World::new();
    let tokens = w.path("azcmagent-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let key_file = tokens.join("3f2e.key");
    std::fs::write(&key_file, "arc-secret-key").unwrap();
    w.set_env(
        "GIT_CREDENTIAL_AZDO_ARC_TOKENS_DIR",
        tokens.to_str().unwrap(),
    );
    let (token, _) = w.entra.mint_app_token(APP, MockEntra::HOME_TENANT);
    let endpoint = arc_endpoint(key_file, "arc-secret-key", token);
    w.configure_identity("kind = \"managed-identity\"");
    w.set_env("IDENTITY_ENDPOINT", &endpoint);
    w.set_env(
        "IMDS_ENDPOINT",
        endpoint.trim_end_matches("/metadata/identity/oauth2/token"),
    );
    clone_ok(&w);
    assert!(!w.log().contains("arc-secret-key"));
}

/// An RSA certificate and key made with openssl: (PEM with both, x5t#S256, PKCS#1 public key).
fn certificate(w: &World) -> (std::path::PathBuf, String, Vec<u8>) {
    let (key, cert) = (w.path("sp-key.pem"), w.path("sp-cert.pem"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=agent",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let der = run(&["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"]);
    let public = run(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
    ]);
    let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, &der).as_ref());
    let both = w.path("sp.pem");
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap()
    );
    std::fs::write(&both, pem).unwrap();
    (both, thumb, public)
}

#[test]
fn service_principal_with_a_certificate() {
    if !require(
        &[Piece::Openssl],
        "a service principal with a certificate (openssl makes it)",
    ) {
        return;
    }
    let mut w = World::new();
    let (pem, thumb, public) = certificate(&w);
    w.entra.add_certificate_app(APP, &thumb, &public);
    w.configure_identity("kind = \"service-principal\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    w.set_env("AZURE_CLIENT_CERTIFICATE_PATH", pem.to_str().unwrap());
    clone_ok(&w);
    assert!(w.entra.stats().client_credentials_ok >= 1);
    let status = text(&w.client(&["status"], "").stdout);
    assert!(status.contains("(certificate "), "{status}");
    // Another certificate (not registered) is refused with Entra's signature error.
    let (other, _, _) = {
        let w2 = World::new();
        let c = certificate(&w2);
        let p = w.path("other.pem");
        std::fs::copy(&c.0, &p).unwrap();
        (p, c.1, c.2)
    };
    std::fs::copy(&other, &pem).unwrap();
    w.erase_current();
    let err = failure(&w);
    assert!(err.contains("AADSTS700027"), "{err}");
}

#[test]
fn an_arc_challenge_naming_a_file_outside_the_token_directory_is_refused() {
    let mut w = World::new();
    let tokens = w.path("azcmagent-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    w.set_env(
        "GIT_CREDENTIAL_AZDO_ARC_TOKENS_DIR",
        tokens.to_str().unwrap(),
    );
    // A stand-in on the Arc port names some other file that happens to end in .key.
    let elsewhere = w.path("home/server.key");
    std::fs::write(&elsewhere, "private").unwrap();
    let endpoint = arc_endpoint(elsewhere, "private", "unused".into());
    w.configure_identity("kind = \"managed-identity\"");
    w.set_env("IDENTITY_ENDPOINT", &endpoint);
    w.set_env(
        "IMDS_ENDPOINT",
        endpoint.trim_end_matches("/metadata/identity/oauth2/token"),
    );
    let err = failure(&w);
    assert!(err.contains("not an Arc key file"), "{err}");
}

#[test]
fn doctor_checks_machine_identities_with_the_callers_variables() {
    let mut w = World::new();
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    // The default identity, no organization known yet: does it give a token at all?
    let out = w.client(&["doctor"], "");
    let report = text(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("✗ identity ci"), "{report}");
    assert!(report.contains("AZURE_CLIENT_SECRET"), "{report}");
    assert!(report.contains("docs/build-agents.md"), "{report}");
    // With the secret in the caller's environment (the daemon never saw it).
    w.set_env("AZURE_CLIENT_SECRET", "s3cret-value");
    let out = w.client(&["doctor"], "");
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    assert!(
        report.contains("✓ identity ci: gives Azure DevOps tokens"),
        "{report}"
    );
    // Once an organization has been served, doctor asks Azure DevOps about it.
    clone_ok(&w);
    let report = text(&w.client(&["doctor"], "").stdout);
    assert!(
        report.contains("✓ organization contoso: Azure DevOps accepts the token"),
        "{report}"
    );
    w.ado.reject_all(true);
    let out = w.client(&["doctor", "--json"], "");
    assert!(!out.status.success());
    let org = doctor_check(&out, "organization contoso");
    assert!(
        org["fix"].as_str().unwrap().contains("add the identity"),
        "{org}"
    );
    assert!(!w.log().contains("s3cret-value"));
}

#[test]
fn unreadable_secret_certificate_and_token_files_are_one_line_each() {
    // (identity, variable naming the file or none, the message)
    let cases = [
        (
            "kind = \"service-principal\"\nclient_secret_file = \"{missing}\"",
            None,
            "cannot read client_secret_file",
        ),
        (
            "kind = \"service-principal\"",
            Some("AZURE_CLIENT_CERTIFICATE_PATH"),
            "cannot read the certificate",
        ),
        (
            "kind = \"workload-identity\"",
            Some("AZURE_FEDERATED_TOKEN_FILE"),
            "cannot read the federated token file",
        ),
    ];
    for (identity, var, message) in cases {
        let mut w = World::new();
        let missing = w.path("no-such-file").display().to_string();
        w.configure_identity(&identity.replace("{missing}", &missing));
        w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
        w.set_env("AZURE_CLIENT_ID", APP);
        if let Some(var) = var {
            w.set_env(var, &missing);
        }
        let err = failure(&w);
        assert!(
            err.contains(message) && err.contains("no-such-file"),
            "{err}"
        );
    }
}
