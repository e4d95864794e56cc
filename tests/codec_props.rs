//! Property tests of the credential codec (`protocol`), the host policy (`policy`) and the
//! fuzz seed corpus (`fuzz/corpus/`): round trips, no panics on any input, and the policy's
//! security invariant. The fuzz targets in `fuzz/` check the same properties at depth.

/// The rule the policy is judged by, written independently of it (`built_in` serves the fuzz
/// target).
#[allow(dead_code)]
#[path = "oracle/hosts.rs"]
mod oracle;

use git_credential_azdo::daemon_protocol::{self, RequestEnvelope, Response};
use git_credential_azdo::git_credential::{Credential, ProtocolError};
use git_credential_azdo::policy::{Decision, decide};
use git_credential_azdo::secret::Secret;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// A value git can carry: no NUL, no newline, no carriage return (git refuses all three).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\\x00\\n\\r]{0,24}",
        "[ -~]{0,40}",
        Just(String::new()),
        Just("https".to_string()),
        Just("Bearer authorization_uri=https://login.microsoftonline.com/t".to_string()),
    ]
}

/// A `[]` list item: an empty one means "clear the list" on the wire, so never empty.
fn list() -> impl Strategy<Value = Vec<String>> {
    vec("[^\\x00\\n\\r]{1,24}", 0..4)
}

fn secret() -> impl Strategy<Value = Option<Secret>> {
    option::of(value().prop_map(Secret::new))
}

prop_compose! {
    fn credential()(
        (protocol, host, path, username, authtype) in (
            option::of(value()),
            option::of(value()),
            option::of(value()),
            option::of(value()),
            option::of(value()),
        ),
        (password, oauth_refresh_token, credential) in (secret(), secret(), secret()),
        password_expiry_utc in option::of(any::<u64>()),
        (wwwauth, capability, state) in (list(), list(), list()),
        (ephemeral, continue_, quit) in (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
    ) -> Credential {
        Credential {
            protocol,
            host,
            path,
            username,
            password,
            password_expiry_utc,
            oauth_refresh_token,
            wwwauth,
            capability,
            authtype,
            credential,
            ephemeral,
            state,
            continue_,
            quit,
        }
    }
}

fn encode(c: &Credential) -> Vec<u8> {
    let mut out = Vec::new();
    c.write_to(&mut out).expect("encodable");
    out
}

/// Whatever `read_from` accepts writes back and reads again to the same description.
fn assert_round_trips(c: &Credential) {
    let wire = encode(c);
    let back = Credential::read_from(&wire[..]).expect("our own encoding reads back");
    assert_eq!(&back, c);
}

/// Lines that look like git's: known keys (and a few unknown), values that may be hostile.
fn protocol_like_input() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "protocol",
            "host",
            "path",
            "username",
            "password",
            "password_expiry_utc",
            "oauth_refresh_token",
            "authtype",
            "credential",
            "ephemeral",
            "continue",
            "quit",
            "wwwauth[]",
            "capability[]",
            "state[]",
            "url",
            "",
        ])
        .prop_map(str::to_string),
        "[a-z_\\[\\]]{0,12}",
    ];
    let value = prop_oneof![
        4 => "[^\\n]{0,20}",
        1 => "[01]|true|false|yes|[0-9]{1,21}|-1",
        1 => vec(any::<u8>(), 0..12).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    let line = prop_oneof![
        8 => (key, value).prop_map(|(k, v)| format!("{k}={v}").into_bytes()),
        1 => vec(any::<u8>(), 0..16),
        1 => Just(Vec::new()),
    ];
    vec(line, 0..12).prop_map(|lines| lines.join(&b'\n'))
}

/// The policy's promise: an answer only for `https` and a built-in or configured host, and
/// only for a valid organization.
fn assert_policy_invariant(cred: &Credential, extra: &[String]) {
    let answered_host = match decide(cred, || extra.to_vec()) {
        Ok(Decision::Serve(t)) => {
            assert!(
                oracle::organization(&t.org),
                "invalid organization {:?}",
                t.org
            );
            t.host
        }
        Ok(Decision::NoOrganization { host }) => host,
        Ok(Decision::NotOurs) | Err(_) => return,
    };
    assert_eq!(cred.protocol.as_deref(), Some("https"));
    let given = cred.host.as_deref().expect("answered without a host");
    assert_eq!(answered_host, given.to_ascii_lowercase());
    assert!(
        oracle::may_answer(&answered_host, extra),
        "answered for {answered_host:?} with extra hosts {extra:?}"
    );
}

fn org() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_-]{0,52}", "[a-z]{1,12}", Just("-x".to_string())]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "dev.azure.com",
            "dev.azure.com:443",
            "DEV.Azure.COM",
            "dev.azure.com:8443",
            "dev.azure.com.evil.example",
            "evildev.azure.com",
            "visualstudio.com",
            ".visualstudio.com",
            "a.b.visualstudio.com",
            "",
        ])
        .prop_map(str::to_string),
        org().prop_map(|o| format!("{o}.visualstudio.com")),
        org().prop_map(|o| format!("{o}.VisualStudio.com:443")),
        "[a-zA-Z0-9.:\\[\\]-]{0,30}",
        "\\PC{0,16}",
    ]
}

fn cased(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().chain(std::iter::repeat(&false)))
        .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// Directory of one target's committed fuzz seeds.
fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(corpus(target))
        .expect("the fuzz corpus is committed")
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn credentials_round_trip(c in credential()) {
        let wire = encode(&c);
        // One key=value line per attribute, no blank line that would end the description.
        prop_assert!(wire.is_empty() || wire.ends_with(b"\n"));
        prop_assert!(!wire.windows(2).any(|w| w == b"\n\n"));
        let back = Credential::read_from(&wire[..]);
        prop_assert!(back.is_ok(), "{:?}", back.err());
        prop_assert_eq!(back.unwrap(), c);
    }

    #[test]
    fn values_git_cannot_carry_are_refused(
        c in credential(),
        bad in prop::sample::select(vec!["\n", "\0"]),
        at in 0usize..3,
    ) {
        let mut c = c;
        let poisoned = format!("a{bad}b");
        match at {
            0 => c.host = Some(poisoned),
            1 => c.password = Some(Secret::new(poisoned)),
            _ => c.state.push(poisoned),
        }
        let err = c.write_to(Vec::new()).unwrap_err();
        prop_assert!(matches!(err, ProtocolError::Unencodable { .. }), "{err}");
    }

    #[test]
    fn reading_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..1024)) {
        if let Ok(c) = Credential::read_from(&bytes[..]) {
            assert_round_trips(&c);
        }
    }

    #[test]
    fn reading_protocol_like_input_never_panics(input in protocol_like_input()) {
        match Credential::read_from(&input[..]) {
            Ok(c) => assert_round_trips(&c),
            // A value can be a password: errors name the line and the key only.
            Err(ProtocolError::BadValue { key, .. }) => {
                prop_assert!(!key.is_empty() && !key.contains('='));
            }
            Err(_) => {}
        }
    }

    #[test]
    fn policy_answers_only_https_for_known_hosts(
        protocol in prop_oneof![
            4 => Just("https".to_string()),
            1 => prop::sample::select(vec!["http", "HTTPS", "https ", "ssh", ""])
                .prop_map(str::to_string),
            1 => "\\PC{0,8}",
        ],
        host in host(),
        path in option::of(prop_oneof![
            org().prop_map(|o| format!("{o}/project/_git/repo")),
            org().prop_map(|o| format!("/{o}")),
            "\\PC{0,20}",
        ]),
        username in option::of(org()),
        extra in vec(host(), 0..3),
        reuse_extra in option::of(any::<prop::sample::Index>()),
        flips in vec(any::<bool>(), 0..32),
    ) {
        // Often ask for a configured host, in another letter case.
        let host = match reuse_extra {
            Some(i) if !extra.is_empty() => cased(&extra[i.index(extra.len())], &flips),
            _ => host,
        };
        let cred = Credential {
            protocol: Some(protocol),
            host: Some(host),
            path,
            username,
            ..Default::default()
        };
        assert_policy_invariant(&cred, &extra);
    }
}

#[test]
fn lines_round_trip_up_to_the_length_limit() {
    use git_credential_azdo::git_credential::MAX_LINE;
    for (key, set) in [
        (
            "path",
            (|c, v| c.path = Some(v)) as fn(&mut Credential, String),
        ),
        ("password", |c, v| c.password = Some(Secret::new(v))),
        ("wwwauth[]", |c, v| c.wwwauth = vec![v]),
    ] {
        for line_len in MAX_LINE - 2..=MAX_LINE + 2 {
            let mut c = Credential::default();
            set(&mut c, "v".repeat(line_len - key.len() - 1));
            let wire = encode(&c);
            match Credential::read_from(&wire[..]) {
                Ok(back) => {
                    assert!(line_len <= MAX_LINE, "{key}: {line_len} bytes accepted");
                    assert_eq!(back, c);
                }
                Err(ProtocolError::TooLong { line: 1 }) => {
                    assert!(line_len > MAX_LINE, "{key}: {line_len} bytes refused")
                }
                Err(e) => panic!("{key}: {line_len} bytes: {e}"),
            }
        }
    }
}

#[test]
fn credential_seeds_parse_and_round_trip() {
    for (path, bytes) in seeds("credential_codec") {
        let c =
            Credential::read_from(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_round_trips(&c);
    }
}

#[test]
fn ipc_seeds_decode() {
    for (path, bytes) in seeds("ipc_decode") {
        let req = daemon_protocol::read_message::<RequestEnvelope>(&bytes[..]);
        let resp = daemon_protocol::read_message::<Response>(&bytes[..]);
        assert!(req.is_ok() || resp.is_ok(), "{}", path.display());
    }
}

#[test]
fn host_policy_seeds_hold_the_invariant() {
    // The fuzz target's input: protocol, host, path, user name, then extra hosts, one a line;
    // a line of the single byte 0xFF is an absent field.
    for (_, bytes) in seeds("host_policy") {
        let mut lines = bytes.split(|&b| b == b'\n');
        let mut field = || {
            lines
                .next()
                .filter(|f| *f != [0xFF])
                .map(|f| String::from_utf8_lossy(f).into_owned())
        };
        let cred = Credential {
            protocol: field(),
            host: field(),
            path: field(),
            username: field(),
            ..Default::default()
        };
        let extra: Vec<String> = lines
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_policy_invariant(&cred, &extra);
    }
}

/// Regenerates `fuzz/corpus/ipc_decode/` with the library's own serializer, after a change
/// to the messages: `cargo test --test codec_props -- --ignored write_ipc_seeds`.
#[test]
#[ignore = "writes into the source tree"]
fn write_ipc_seeds() {
    use git_credential_azdo::daemon_protocol::{
        AccountView, AppLogin, Check, ErrorKind, OrgStatus, PACKAGE_VERSION, PROTOCOL, Request,
        StatusView,
    };
    let dir = corpus("ipc_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, line: Vec<u8>| std::fs::write(dir.join(name), line).unwrap();
    let request = |name: &str, request: Request| {
        let mut line = Vec::new();
        let env = RequestEnvelope {
            protocol: PROTOCOL,
            version: PACKAGE_VERSION.into(),
            request,
        };
        daemon_protocol::write_message(&mut line, &env).unwrap();
        write(name, line);
    };
    let response = |name: &str, response: Response| {
        let mut line = Vec::new();
        daemon_protocol::write_message(&mut line, &response).unwrap();
        write(name, line);
    };
    let wwwauth = || {
        vec![
            "Bearer authorization_uri=https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47".to_string(),
            "Basic realm=\"https://tfsprodweu2.app.visualstudio.com/\"".to_string(),
        ]
    };
    let account = AccountView {
        name: Some("Ada Lovelace".into()),
        upn: Some("ada@contoso.com".into()),
        tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        oid: Some("00000000-0000-0000-0000-00000000a11c".into()),
    };

    request(
        "req_get",
        Request::Get {
            org: "contoso".into(),
            env: Default::default(),
            authtype: true,
            git: Some(git_credential_azdo::answer::GitInstall {
                exec_path: "/usr/lib/git-core".into(),
                dev: 2049,
                ino: 1_311_204,
                size: 3_713_416,
                mtime_ns: 1_759_795_200_000_000_000,
            }),
        },
    );
    request(
        "req_get_env",
        Request::Get {
            org: "fabrikam".into(),
            env: [
                (
                    "SYSTEM_ACCESSTOKEN",
                    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig",
                ),
                (
                    "SYSTEM_OIDCREQUESTURI",
                    "https://dev.azure.com/fabrikam/_apis/oidc",
                ),
                ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Secret::new(v)))
            .collect(),
            authtype: false,
            git: None,
        },
    );
    request(
        "req_erase",
        Request::Erase {
            org: "contoso".into(),
            host: "dev.azure.com".into(),
            token: Some(Secret::new("eyJ0eXAiOiJKV1QiLCJub25jZSI6IngifQ.e30.c2ln")),
            wwwauth: wwwauth(),
        },
    );
    request(
        "req_login_start_app",
        Request::LoginStart {
            org: "contoso".into(),
            host: "contoso.visualstudio.com".into(),
            tenant: Some("contoso.onmicrosoft.com".into()),
            wwwauth: wwwauth(),
            browser: true,
            timeout_secs: Some(300),
            app: Some(AppLogin {
                app_id: "0AB1C2D3-E4F5-4A6B-8C9D-0E1F2A3B4C5D".into(),
                client_secret: Secret::new("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.app"),
                callback: "https://localhost:8443/callback".into(),
                scope: "vso.code_write vso.identity".into(),
                paste: false,
            }),
        },
    );
    request(
        "req_login_redirect",
        Request::LoginRedirect {
            flow: "f-3".into(),
            url: Secret::new("https://localhost:8443/callback?code=abc123&state=xyz"),
        },
    );
    request("req_logout", Request::Logout { org: None });
    request("req_ping", Request::Ping);

    response(
        "resp_token",
        Response::Token {
            token: Secret::new("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiI0OTlifQ.sig"),
            expires_at: 1_767_225_600,
            scheme: git_credential_azdo::answer::Scheme::Bearer,
        },
    );
    response(
        "resp_device_code",
        Response::DeviceCode {
            flow: "f-1".into(),
            verification_uri: "https://microsoft.com/devicelogin".into(),
            user_code: "ABCD-EFGH".into(),
            message: "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate.".into(),
            expires_in: 900,
        },
    );
    response(
        "resp_app_sign_in",
        Response::AppSignIn {
            flow: "f-2".into(),
            url: "https://app.vssps.visualstudio.com/oauth2/authorize?client_id=x&response_type=Assertion&state=s&scope=vso.code&redirect_uri=https://localhost:8443/callback".into(),
            callback: "https://localhost:8443/callback".into(),
            listening: true,
            certificate: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            expires_in: 300,
        },
    );
    response(
        "resp_logged_in",
        Response::LoggedIn {
            org: "contoso".into(),
            account: account.clone(),
            store: "secret-service".into(),
        },
    );
    response(
        "resp_status",
        Response::Status(StatusView {
            daemon_version: PACKAGE_VERSION.into(),
            pid: 4242,
            store: "file".into(),
            orgs: vec![OrgStatus {
                org: "contoso".into(),
                account,
                identity: "user".into(),
                connected_at: 1_760_000_000,
                connected_by: Some("ada@contoso.com".into()),
                app_id: None,
                access_token_expires_at: Some(1_760_003_600),
                last_refresh_at: Some(1_760_000_100),
                last_refresh_outcome: Some("ok".into()),
                refresh_token_store: "secret-service".into(),
            }],
            machine_identities: 2,
        }),
    );
    response(
        "resp_doctor",
        Response::Doctor {
            checks: vec![
                Check::pass("secret store", "secret-service is unlocked"),
                Check::fail(
                    "login.microsoftonline.com",
                    "connection refused",
                    "check the proxy settings",
                ),
            ],
        },
    );
    response(
        "resp_pong",
        Response::Pong {
            version: PACKAGE_VERSION.into(),
            pid: 4242,
            store: "secret-service".into(),
        },
    );
    response(
        "resp_error",
        Response::Error {
            error: ErrorKind::NeedsLogin,
            message: "no account is connected to organization 'contoso'".into(),
            retry_in: None,
            fix: None,
        },
    );
    response(
        "resp_error_retry_fix",
        Response::Error {
            error: ErrorKind::Unavailable,
            message: "Entra ID answered 503".into(),
            retry_in: Some(5),
            fix: Some("check the proxy".into()),
        },
    );
}
