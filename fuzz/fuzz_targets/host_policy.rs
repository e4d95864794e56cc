//! Fuzz target `host_policy`: the security invariant of `policy::decide`.
//!
//! Input: `\n`-separated fields `protocol`, `host`, `path`, `username`, then the configured
//! extra hosts, one a line (bytes decoded lossily; a missing line or a line of the single byte
//! 0xFF is an absent field). Whenever the decision answers (`Serve`, and also the
//! `NoOrganization` hint), the protocol is exactly `https`, the host is built in or one of the
//! extra hosts (ASCII case-insensitively, as the code compares) and is reported lower-cased;
//! a served organization is `valid_org` and comes from the host, the path or the user name;
//! extra hosts are only loaded for hosts that are not built in. Nothing panics.
#![no_main]

use git_credential_azdo::policy::{Decision, PolicyError, decide};
use git_credential_azdo::git_credential::Credential;
use libfuzzer_sys::fuzz_target;

/// The rule the policy is judged by, written independently of it (shared with the property
/// tests).
#[path = "../../tests/oracle/hosts.rs"]
mod oracle;

fn field(raw: Option<&[u8]>) -> Option<String> {
    raw.filter(|f| *f != [0xFF])
        .map(|f| String::from_utf8_lossy(f).into_owned())
}

/// The organizations `decide` may pick for this request, per the module's rules.
fn org_sources(cred: &Credential, host: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bare = host.strip_suffix(":443").unwrap_or(host);
    if let Some(label) = bare.strip_suffix(".visualstudio.com") {
        out.push(label.to_string());
    }
    if let Some(p) = &cred.path {
        out.push(
            p.trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_string(),
        );
    }
    if let Some(u) = &cred.username {
        out.push(u.clone());
    }
    out
}

fn assert_ours(cred: &Credential, host: &str, extra: &[String]) {
    assert_eq!(
        cred.protocol.as_deref(),
        Some("https"),
        "answered a non-https request"
    );
    let given = cred.host.as_deref().expect("answered without a host");
    assert_eq!(
        host,
        given.to_ascii_lowercase(),
        "reported host is not the given one"
    );
    assert!(
        oracle::may_answer(host, extra),
        "answered for a host that is neither built in nor configured: {host:?} (extra {extra:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let cred = Credential {
        protocol: field(lines.next()),
        host: field(lines.next()),
        path: field(lines.next()),
        username: field(lines.next()),
        ..Default::default()
    };
    let extra: Vec<String> = lines
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();

    let mut loaded = false;
    let decision = decide(&cred, || {
        loaded = true;
        extra.clone()
    });
    match &decision {
        Err(PolicyError::MissingProtocol) => assert!(cred.protocol.is_none()),
        Err(PolicyError::MissingHost) => {
            assert!(cred.host.as_deref().is_none_or(str::is_empty))
        }
        Ok(Decision::NotOurs) => {}
        Ok(Decision::NoOrganization { host }) => assert_ours(&cred, host, &extra),
        Ok(Decision::Serve(t)) => {
            assert_ours(&cred, &t.host, &extra);
            assert!(
                oracle::organization(&t.org),
                "served an invalid organization {:?}",
                t.org
            );
            assert!(
                org_sources(&cred, &t.host).contains(&t.org),
                "organization {:?} comes from neither host, path nor user name",
                t.org
            );
        }
    }
    if loaded {
        let host = cred
            .host
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            !oracle::built_in(&host),
            "loaded the configuration for a built-in host"
        );
        assert_eq!(cred.protocol.as_deref(), Some("https"));
    }
});
