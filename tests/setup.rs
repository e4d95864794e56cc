//! `git-credential-azdo setup`: configures git for Azure DevOps, is idempotent, leaves other
//! helpers alone, and `--undo` reverses it.

mod common;

use common::harness::{World, ok, text};

fn global_config(w: &World) -> String {
    std::fs::read_to_string(w.path("home/.gitconfig")).unwrap_or_default()
}

#[test]
fn setup_is_idempotent_keeps_other_helpers_and_undoes() {
    let w = World::new(); // runs setup once
    let first = global_config(&w);
    for url in [
        "https://dev.azure.com",
        "https://*.visualstudio.com",
        &format!("https://{}", w.ado.host()),
    ] {
        let out = w.git(
            &[
                "config",
                "--global",
                "--get-all",
                &format!("credential.{url}.helper"),
            ],
            None,
        );
        assert_eq!(text(&out.stdout), "\nazdo\n", "{url}");
    }
    let use_path = w.git(
        &[
            "config",
            "--global",
            "credential.https://dev.azure.com.usehttppath",
        ],
        None,
    );
    assert_eq!(text(&use_path.stdout).trim(), "true");

    ok(
        &w,
        &w.git(&["config", "--global", "credential.helper", "cache"], None),
        "other helper",
    );
    let with_other = global_config(&w);
    let again = w.client(&["setup"], "");
    ok(&w, &again, "setup again");
    assert!(text(&again.stdout).contains("nothing changed"));
    assert_eq!(global_config(&w), with_other);

    let undo = w.client(&["setup", "--undo"], "");
    ok(&w, &undo, "undo");
    let after = global_config(&w);
    assert!(!after.contains("azdo"), "{after}");
    assert!(
        !after.to_ascii_lowercase().contains("usehttppath"),
        "{after}"
    );
    assert!(after.contains("helper = cache"), "{after}");
    assert!(first.contains("azdo"));
}
