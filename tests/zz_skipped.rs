//! The end of a `cargo test` run: cargo runs the test binaries in name order, so this one comes
//! last and says on one line how many tests were skipped, and for want of which pieces
//! (`tests/common/requires.rs`). It also tests the skip path itself.

mod common;

use common::requires::{self, Piece, require};
use std::io::Write;
use std::process::Command;

/// Set by [`a_missing_piece_is_one_line_and_under_the_strict_variable_a_failure`] for the
/// copy of this binary it runs; elsewhere [`probe`] does nothing.
const PROBE: &str = "AZDO_TEST_SKIP_PROBE";

/// Stands in for any test that needs zsh, when run with `AZDO_TEST_SKIP_PROBE=1`.
#[test]
fn probe() {
    if std::env::var_os(PROBE).is_none() {
        return;
    }
    if !require(&[Piece::Zsh], "the skip path's probe") {
        return;
    }
    println!("probe ran its checks");
}

#[test]
fn a_missing_piece_is_one_line_and_under_the_strict_variable_a_failure() {
    let run = |strict: bool| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "probe", "--nocapture"])
            .env(PROBE, "1")
            .env("AZDO_TEST_PRETEND_MISSING", "fish,zsh")
            .env_remove("AZDO_TEST_REQUIRE_ALL");
        if strict {
            c.env("AZDO_TEST_REQUIRE_ALL", "1");
        }
        c.output().unwrap()
    };
    let said = "skipped: the skip path's probe: needs zsh (apt-get install zsh)";
    let lax = run(false);
    let (out, err) = (
        String::from_utf8_lossy(&lax.stdout),
        String::from_utf8_lossy(&lax.stderr),
    );
    assert!(lax.status.success(), "{out}{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("skipped:"))
            .collect::<Vec<_>>(),
        [said],
        "{err}"
    );
    assert!(!out.contains("probe ran its checks"), "{out}");
    let strict = run(true);
    let all = String::from_utf8_lossy(&strict.stdout).into_owned()
        + &String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{all}");
    assert!(
        all.contains(said) && all.contains("AZDO_TEST_REQUIRE_ALL=1"),
        "{all}"
    );
    // The copies recorded their skip for their own run (named after this process), not ours.
    let theirs = requires::run_dir()
        .parent()
        .unwrap()
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(theirs);
}

#[test]
fn summary() {
    let skips = requires::recorded();
    let line = if skips.is_empty() {
        "skipped: none (every piece the tests use is here)".to_string()
    } else {
        let mut pieces: Vec<(String, usize)> = Vec::new();
        for (names, _) in &skips {
            for name in names.split(',') {
                match pieces.iter_mut().find(|(n, _)| n == name) {
                    Some((_, count)) => *count += 1,
                    None => pieces.push((name.to_string(), 1)),
                }
            }
        }
        let list: Vec<String> = pieces.iter().map(|(n, c)| format!("{n} ({c})")).collect();
        format!(
            "skipped: {} test(s) for want of: {}",
            skips.len(),
            list.join(", ")
        )
    };
    // Past the harness's capture, so that it is the run's last word.
    let _ = writeln!(std::io::stderr(), "{line}");
    let _ = std::fs::remove_dir_all(requires::run_dir());
}
