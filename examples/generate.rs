//! Writes shell completions (bash, zsh, fish, PowerShell) and man pages, generated from the
//! command-line definition in `src/cli.rs`, to a directory:
//!
//! ```sh
//! cargo run --locked --example generate -- OUT
//! ```
//!
//! `OUT/completions/` gets `git-credential-azdo.bash`, `_git-credential-azdo` (zsh),
//! `git-credential-azdo.fish` and `_git-credential-azdo.ps1`; `OUT/man/` gets
//! `git-credential-azdo.1`, one page per command (`git-credential-azdo-login.1`, ...) and
//! `git-credential-azdo-daemon.1`. The packages (packaging/) install them.

use clap_complete::Shell;
use std::path::Path;

/// The command line without git's protocol commands (`get`, `store`, `erase`), which are
/// hidden from `--help` and not offered to people either.
fn visible() -> clap::Command {
    let cli = git_credential_azdo::cli::command();
    let subs: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let top = clap::Command::new("git-credential-azdo")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .after_long_help(cli.get_after_long_help().cloned().unwrap_or_default())
        .args(cli.get_arguments().filter(|a| !a.is_positional()).cloned());
    top.subcommands(subs)
}

/// Generates everything into `out`; returns the files written.
pub fn generate(out: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
        let mut cmd = visible();
        let path =
            clap_complete::generate_to(shell, &mut cmd, "git-credential-azdo", &completions)?;
        if shell == Shell::Bash {
            // clap_complete 4.6 escapes a hyphenated name one way where it tracks the
            // subcommand (git__credential__azdo__subcmd__login) and another where it matches
            // it (git__subcmd__credential__subcmd__azdo__subcmd__login), so no subcommand's
            // options complete. One spelling for both; tests/packaging.rs catches a regression.
            let script = std::fs::read_to_string(&path)?;
            let fixed = script.replace(
                "git__subcmd__credential__subcmd__azdo",
                "git__credential__azdo",
            );
            std::fs::write(&path, fixed)?;
        }
        written.push(path);
    }
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let mut page = |cmd: clap::Command, name: &str| -> std::io::Result<()> {
        let path = man.join(format!("{name}.1"));
        let mut bytes = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut bytes)?;
        std::fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    let cli = visible();
    for sub in cli.get_subcommands() {
        let name = format!("git-credential-azdo-{}", sub.get_name());
        // The page's title and synopsis name the whole command, as git's own pages do.
        // (clap's `string` feature stays off to keep the client small: a leaked &str.)
        let title: &'static str = Box::leak(name.clone().into_boxed_str());
        let sub = sub.clone().name(title).version(env!("CARGO_PKG_VERSION"));
        page(sub, &name)?;
    }
    page(cli, "git-credential-azdo")?;
    page(
        git_credential_azdo::cli::daemon_command(),
        "git-credential-azdo-daemon",
    )?;
    Ok(written)
}

#[allow(dead_code)]
fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example generate -- OUT_DIR");
        std::process::exit(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!("generate: {e}");
            std::process::exit(1);
        }
    }
}
