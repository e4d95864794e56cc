//! `git-credential-azdo setup`: configures git for Azure DevOps, is idempotent, leaves other
//! helpers alone, and `--undo` reverses it.

mod common;

use common::harness::{CLIENT, World, ok, text};

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
        // The client's absolute path: git starts it directly, one process per request.
        assert_eq!(text(&out.stdout), format!("\n{CLIENT}\n"), "{url}");
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

#[test]
fn setup_points_an_older_configuration_at_this_executable_and_local_scope_works() {
    let w = World::new();
    let key = "credential.https://dev.azure.com.helper";
    // As an earlier version wrote it: by name.
    ok(
        &w,
        &w.git(
            &[
                "config",
                "--global",
                "--replace-all",
                key,
                "azdo",
                "git-credential-azdo",
            ],
            None,
        ),
        "old value",
    );
    let out = w.client(&["setup"], "");
    ok(&w, &out, "setup");
    assert!(text(&out.stdout).contains(CLIENT), "{}", text(&out.stdout));
    let now = w.git(&["config", "--global", "--get-all", key], None);
    assert_eq!(text(&now.stdout), format!("\n{CLIENT}\n"));
    // A repository of its own: --local writes there and leaves the global file alone.
    let repo = w.workdir("local-repo");
    ok(&w, &w.git(&["init", "-q"], Some(&repo)), "init");
    let before = global_config(&w);
    let mut c = w.command(CLIENT);
    c.args(["setup", "--local"]).current_dir(&repo);
    let out = common::harness::run_with_input(&mut c, b"");
    ok(&w, &out, "setup --local");
    let local = std::fs::read_to_string(repo.join(".git/config")).unwrap();
    assert!(
        local.contains(CLIENT) && local.contains("useHttpPath = true"),
        "{local}"
    );
    assert_eq!(global_config(&w), before);
}
