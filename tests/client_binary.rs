//! The client git runs for every request links no async runtime, HTTP stack or TLS: those
//! live in the daemon only. Checked on the built binaries' symbol tables.

use std::process::Command;

fn text_symbols(bin: &str) -> String {
    let out = Command::new("nm")
        .args(["-C", "--defined-only", bin])
        .output()
        .expect("nm (binutils) is installed with the toolchain's linker");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" t ") || l.contains(" T "))
        .map(|l| format!("{l}\n"))
        .collect()
}

const DAEMON_ONLY: [&str; 7] = [
    "tokio", "reqwest", "rustls", "hyper", "ring", "oauth2", "zbus",
];

/// Whether a demangled symbol names an item of crate `krate` (`ring::x`, not `string::x`).
fn mentions(symbol: &str, krate: &str) -> bool {
    let prefix = format!("{krate}::");
    symbol
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .any(|t| t.starts_with(&prefix))
}

#[test]
fn the_client_links_no_tokio_reqwest_or_tls() {
    let client = text_symbols(env!("CARGO_BIN_EXE_git-credential-azdo"));
    assert!(
        client.contains("git_credential_azdo::git_credential"),
        "symbols are readable"
    );
    for c in DAEMON_ONLY {
        let hits: Vec<&str> = client.lines().filter(|l| mentions(l, c)).take(3).collect();
        assert!(hits.is_empty(), "{c} in the client: {hits:?}");
    }
    // The same check finds them in the daemon, so it can fail.
    let daemon = text_symbols(env!("CARGO_BIN_EXE_git-credential-azdo-daemon"));
    for c in ["tokio", "reqwest", "rustls", "oauth2"] {
        assert!(
            daemon.lines().any(|l| mentions(l, c)),
            "{c} expected in the daemon"
        );
    }
}
