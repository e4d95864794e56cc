//! Packaging, tried on this machine: completions and man pages generated from the command-line
//! definition and exercised in real shells, the systemd unit through `systemd-analyze verify`,
//! the launchd agent through a plist parser, and the Debian package built, installed with
//! `dpkg -i`, used, and removed.

#[allow(dead_code)]
#[path = "../examples/generate.rs"]
mod generate;

mod common;

use common::requires::{Piece, require};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SUBCOMMANDS: [&str; 6] = ["login", "logout", "status", "setup", "doctor", "stop"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn generated() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    generate::generate(dir.path()).expect("generate");
    let p = dir.path().to_path_buf();
    (dir, p)
}

/// What bash completes after `git-credential-azdo <words>` with the generated script.
fn bash_completes(script: &Path, words: &str) -> Vec<String> {
    let probe = format!(
        r#"source "{}"
COMP_WORDS=(git-credential-azdo {words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
f=$(complete -p git-credential-azdo | sed -n 's/.*-F \([^ ]*\).*/\1/p')
"$f" git-credential-azdo "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script.display()
    );
    let out = run(Command::new("bash").args(["--norc", "-c", &probe]));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_commands_and_their_options() {
    let (_d, out) = generated();
    let script = out.join("completions/git-credential-azdo.bash");
    let top = bash_completes(&script, "''");
    for sub in SUBCOMMANDS {
        assert!(top.iter().any(|w| w == sub), "{sub} not offered: {top:?}");
    }
    // git's hidden protocol commands are not offered to people.
    assert!(!top.iter().any(|w| w == "get"), "{top:?}");
    let lo = bash_completes(&script, "lo");
    let mut lo_sorted = lo.clone();
    lo_sorted.sort();
    assert_eq!(lo_sorted, ["login", "logout"], "{lo:?}");
    let login = bash_completes(&script, "login --");
    for opt in [
        "--org",
        "--device-code",
        "--browser",
        "--app-id",
        "--tenant",
    ] {
        assert!(login.iter().any(|w| w == opt), "{opt}: {login:?}");
    }
    let status = bash_completes(&script, "status --");
    assert!(status.iter().any(|w| w == "--json"), "{status:?}");
}

#[test]
fn zsh_fish_and_powershell_completions_name_every_command() {
    if !require(&[Piece::Zsh, Piece::Fish], "the zsh and fish completions") {
        return;
    }
    let (_d, out) = generated();
    let c = out.join("completions");
    let zsh = std::fs::read_to_string(c.join("_git-credential-azdo")).unwrap();
    assert!(zsh.starts_with("#compdef git-credential-azdo"), "{zsh}");
    let fish = std::fs::read_to_string(c.join("git-credential-azdo.fish")).unwrap();
    let ps = std::fs::read_to_string(c.join("_git-credential-azdo.ps1")).unwrap();
    assert!(ps.contains("Register-ArgumentCompleter"));
    for sub in SUBCOMMANDS {
        assert!(zsh.contains(&format!("'{sub}:")), "zsh: {sub}");
        assert!(fish.contains(&format!("-a \"{sub}\"")), "fish: {sub}");
        assert!(ps.contains(&format!("'{sub}'")), "powershell: {sub}");
    }
    // Where the shells are installed (CI installs both), they parse what was generated.
    for (shell, args) in [("zsh", vec!["-n"]), ("fish", vec!["--no-execute"])] {
        if Command::new(shell).arg("--version").output().is_ok() {
            let file = if shell == "zsh" {
                c.join("_git-credential-azdo")
            } else {
                c.join("git-credential-azdo.fish")
            };
            run(Command::new(shell).args(&args).arg(file));
        } else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{shell} is missing; .ci/run installs it"
            );
        }
    }
}

#[test]
fn man_pages_render_for_every_command_and_the_daemon() {
    if !require(&[Piece::Man], "the man pages") {
        return;
    }
    let (_d, out) = generated();
    let man = out.join("man");
    let mut names = vec!["git-credential-azdo".to_string()];
    names.extend(
        SUBCOMMANDS
            .iter()
            .map(|s| format!("git-credential-azdo-{s}")),
    );
    names.push("git-credential-azdo-daemon".into());
    for name in &names {
        let page = man.join(format!("{name}.1"));
        let out = run(Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&page)
            .env("MANWIDTH", "100")
            .env("LANG", "C.UTF-8"));
        let shown = text(&out.stdout);
        assert!(shown.contains("NAME"), "{name}: {shown}");
        assert!(shown.contains(name.as_str()), "{name}: {shown}");
    }
    let main = text(
        &run(Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(man.join("git-credential-azdo.1")))
        .stdout,
    );
    for sub in SUBCOMMANDS {
        assert!(main.contains(sub), "{sub} missing from the main page");
    }
    assert!(main.contains("config.toml"), "the files section: {main}");
    let login = text(
        &run(Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(man.join("git-credential-azdo-login.1")))
        .stdout,
    );
    assert!(login.contains("--device-code"), "{login}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !require(&[Piece::SystemdAnalyze], "the systemd unit") {
        return;
    }
    // The unit for `cargo install`: the daemon in ~/.cargo/bin (%h).
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_git-credential-azdo-daemon"),
        bin.join("git-credential-azdo-daemon"),
    )
    .unwrap();
    let unit = root().join("packaging/systemd/git-credential-azdo.service");
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("HOME", home.path()));
    // And it can fail: without the daemon where the unit says, verify refuses it.
    std::fs::remove_file(bin.join("git-credential-azdo-daemon")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_launchd_agent_is_a_valid_plist_that_runs_the_daemon() {
    if !require(&[Piece::Python3], "the launchd agent (plistlib)") {
        return;
    }
    let plist = root().join("packaging/macos/com.github.git-credential-azdo.plist");
    let check = r#"
import plistlib, sys
d = plistlib.load(open(sys.argv[1], "rb"))
assert d["Label"] == "com.github.git-credential-azdo", d["Label"]
args = d["ProgramArguments"]
assert args[:2] == ["/bin/sh", "-c"], args
assert "exec /usr/local/bin/git-credential-azdo-daemon" in args[2], args
assert d["RunAtLoad"] is True
assert d["KeepAlive"] == {"SuccessfulExit": False}, d["KeepAlive"]
assert d["Umask"] == 0o077
print(args[2])
"#;
    let out = run(Command::new("python3").args(["-c", check]).arg(&plist));
    // Its shell line runs here too: the daemon starts, and the log lands where the client
    // would put it.
    let script = text(&out.stdout).trim().replace(
        "/usr/local/bin/git-credential-azdo-daemon",
        env!("CARGO_BIN_EXE_git-credential-azdo-daemon"),
    );
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(line.starts_with("ready"), "{line}");
    assert!(status.success(), "{status}");
    let log = home
        .path()
        .join(".local/state/git-credential-azdo/daemon.log");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("daemon started"), "{log}");
}

/// Removes the package when dropped, so a failed test leaves the machine as it found it.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "git-credential-azdo"])
            .output();
    }
}

#[test]
fn the_debian_package_installs_works_and_removes() {
    if !require(
        &[Piece::Dpkg, Piece::Man, Piece::SystemdAnalyze],
        "the Debian package",
    ) {
        return;
    }
    let (_d, out) = generated();
    let out_dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_git-credential-azdo"))
        .parent()
        .unwrap();
    let built = run(Command::new("bash")
        .arg(root().join("packaging/deb/build.sh"))
        .env("BIN_DIR", bin_dir)
        .env("GEN_DIR", &out)
        .env("OUT_DIR", out_dir.path()));
    let deb = PathBuf::from(text(&built.stdout).trim());
    assert!(deb.exists(), "{}", deb.display());
    let info = text(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)).stdout);
    assert!(info.contains("Package: git-credential-azdo"), "{info}");
    assert!(
        info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    let contents = text(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)).stdout);
    for path in [
        "./usr/bin/git-credential-azdo",
        "./usr/bin/git-credential-azdo-daemon",
        "./usr/lib/systemd/user/git-credential-azdo.service",
        "./usr/share/bash-completion/completions/git-credential-azdo",
        "./usr/share/zsh/vendor-completions/_git-credential-azdo",
        "./usr/share/fish/vendor_completions.d/git-credential-azdo.fish",
        "./usr/share/man/man1/git-credential-azdo.1.gz",
        "./usr/share/man/man1/git-credential-azdo-login.1.gz",
        "./usr/share/man/man1/git-credential-azdo-daemon.1.gz",
        "./usr/share/doc/git-credential-azdo/copyright",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }

    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let version = run(Command::new("/usr/bin/git-credential-azdo").arg("--version"));
    assert!(text(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("/usr/lib/systemd/user/git-credential-azdo.service"));
    let page = run(Command::new("man").args(["-w", "git-credential-azdo-login"]));
    assert!(
        text(&page.stdout).contains("/usr/share/man/man1/git-credential-azdo-login.1.gz"),
        "{}",
        text(&page.stdout)
    );
    // The installed helper sets git up with its installed path, and answers through its
    // installed daemon.
    let home = tempfile::tempdir().unwrap();
    let env = |c: &mut Command| {
        c.env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", home.path().join("run"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_CREDENTIAL_AZDO_CONFIG");
    };
    let mut setup = Command::new("/usr/bin/git-credential-azdo");
    setup.arg("setup");
    env(&mut setup);
    let said = text(&run(&mut setup).stdout);
    assert!(said.contains("/usr/bin/git-credential-azdo"), "{said}");
    let mut status = Command::new("/usr/bin/git-credential-azdo");
    status.args(["status", "--json"]);
    env(&mut status);
    let json: serde_json::Value = serde_json::from_slice(&run(&mut status).stdout).unwrap();
    assert!(
        json["orgs"].as_array().is_some_and(|o| o.is_empty()),
        "{json}"
    );
    let mut stop = Command::new("/usr/bin/git-credential-azdo");
    stop.arg("stop");
    env(&mut stop);
    run(&mut stop);

    run(Command::new("dpkg").args(["--purge", "git-credential-azdo"]));
    assert!(!Path::new("/usr/bin/git-credential-azdo").exists());
    assert!(!Path::new("/usr/share/man/man1/git-credential-azdo.1.gz").exists());
}
