//! Side-by-side timing of one credential `get`: this helper (daemon warm, token cached) against
//! git's own `git-credential-cache` holding a stored password, and `/bin/true` as the floor of
//! starting a process. Rounds alternate A B C A B C on one machine in one run.
//!
//! Not part of the test suite (it measures, it does not check): run with
//! `cargo test --release --test bench -- --ignored --nocapture`.

mod common;

use common::harness::{World, field, run_with_input};
use std::time::{Duration, Instant};

fn time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

#[test]
#[ignore]
fn get_side_by_side_with_git_credential_cache() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let w = World::new();
    w.login("contoso");
    let input = format!(
        "capability[]=authtype\nprotocol=https\nhost={}\npath=contoso/p/_git/r\n\n",
        w.ado.host()
    );
    assert!(field(&w.get("contoso", true), "credential").is_some());

    let cache_dir = w.path("cache");
    std::fs::create_dir_all(&cache_dir).unwrap();
    std::fs::set_permissions(
        &cache_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let sock = cache_dir.join("cache.sock");
    let sock = sock.to_str().unwrap();
    let cache_input = "protocol=https\nhost=dev.azure.com\npath=contoso/p/_git/r\n";
    let stored = format!("{cache_input}username=u\npassword=secret\n");
    let out = run_with_input(
        w.command("git")
            .args(["credential-cache", "--socket", sock, "store"]),
        stored.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = run_with_input(
        w.command("git")
            .args(["credential-cache", "--socket", sock, "get"]),
        cache_input.as_bytes(),
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("password=secret"));

    let (mut azdo, mut cache, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        azdo.push(time(|| {
            let o = run_with_input(
                w.command(common::harness::CLIENT).arg("get"),
                input.as_bytes(),
            );
            assert!(!o.stdout.is_empty());
        }));
        cache.push(time(|| {
            let o = run_with_input(
                w.command("git")
                    .args(["credential-cache", "--socket", sock, "get"]),
                cache_input.as_bytes(),
            );
            assert!(!o.stdout.is_empty());
        }));
        floor.push(time(|| {
            run_with_input(&mut w.command("/bin/true"), input.as_bytes());
        }));
    }
    let _ = run_with_input(
        w.command("git")
            .args(["credential-cache", "--socket", sock, "exit"]),
        b"",
    );
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    println!("\n{rounds} rounds, alternating; milliseconds per get (spawn + answer)");
    println!("{:<34} {:>8} {:>8} {:>8}", "", "median", "p90", "p99");
    for (name, v) in [
        ("git-credential-azdo get", &mut azdo),
        ("git credential-cache get", &mut cache),
        ("/bin/true (process floor)", &mut floor),
    ] {
        println!(
            "{name:<34} {:>8} {:>8} {:>8}",
            ms(median(v)),
            ms(p(v, 0.9)),
            ms(p(v, 0.99))
        );
    }
    println!(
        "ratio azdo/cache (median): {:.2}",
        median(&mut azdo).as_secs_f64() / median(&mut cache).as_secs_f64()
    );
}
