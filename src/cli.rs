//! The client's command line: its commands, options and help text, in one place, so that the
//! client parses it and the completion and man-page generator (`examples/generate.rs`)
//! describes exactly the same thing.

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Git runs `git-credential-azdo get`, `store` and `erase` (its credential protocol) once `setup`
has configured it for Azure DevOps hosts.

Files:
  ~/.config/git-credential-azdo/config.toml  configuration ($GIT_CREDENTIAL_AZDO_CONFIG)
  ~/.local/share/git-credential-azdo/        account records; refresh tokens with store = \"file\"
  ~/.local/state/git-credential-azdo/        the daemon's log (never tokens)
  $XDG_RUNTIME_DIR/git-credential-azdo/      the daemon's socket (owner only)

Guides: docs/user-guide.md, docs/configuration.md, docs/build-agents.md, docs/security.md";

#[derive(Parser)]
#[command(
    name = "git-credential-azdo",
    version,
    about = "Git credential helper for Azure DevOps with Microsoft Entra ID (no PATs)",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Connect an organization: sign in in a browser, or with a device code.
    Login {
        /// Organization name (https://dev.azure.com/ORG); default: from this repository's origin.
        #[arg(long)]
        org: Option<String>,
        /// Entra tenant to sign in to, instead of discovering it.
        #[arg(long)]
        tenant: Option<String>,
        /// Host serving the organization, when not dev.azure.com (one listed in `hosts`).
        #[arg(long)]
        host: Option<String>,
        /// Sign in with a device code (any device's browser), even where a browser could open.
        #[arg(long, conflicts_with = "browser")]
        device_code: bool,
        /// Sign in in this machine's browser ($BROWSER, or the system's), or fail.
        #[arg(long)]
        browser: bool,
        /// Seconds to wait for a browser sign-in before giving up (default 300).
        #[arg(long)]
        timeout: Option<u64>,
        /// Connect through a legacy Azure DevOps OAuth app (registered at
        /// app.vsaex.visualstudio.com) with this App ID, instead of Entra ID.
        #[arg(long, requires = "secret", conflicts_with_all = ["tenant", "device_code", "browser"])]
        app_id: Option<String>,
        /// The app's client secret; `-` reads it from stdin (it is visible to other users
        /// of this machine in the process list otherwise).
        #[arg(long, group = "secret", requires = "app_id")]
        client_secret: Option<String>,
        /// A file holding the app's client secret.
        #[arg(long, group = "secret", requires = "app_id")]
        client_secret_file: Option<std::path::PathBuf>,
        /// The app's registered callback URL, exactly (default https://localhost:47613/callback,
        /// served by the daemon).
        #[arg(long, requires = "app_id")]
        callback: Option<String>,
        /// Scopes to ask for, space-separated (default vso.code_write).
        #[arg(long, requires = "app_id")]
        scope: Option<String>,
        /// Paste the address the browser is sent to, instead of the daemon serving the callback.
        #[arg(long, requires = "app_id")]
        paste: bool,
    },
    /// Disconnect an organization (or all) and forget its refresh token.
    Logout {
        #[arg(long, conflicts_with = "all")]
        org: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Show connected organizations and their tokens' state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Configure git to use this helper for Azure DevOps.
    Setup {
        #[arg(long, conflicts_with = "system")]
        local: bool,
        #[arg(long)]
        system: bool,
        /// Remove what setup added.
        #[arg(long)]
        undo: bool,
    },
    /// Check git, the configuration, the daemon, the keyring, the network and each
    /// organization's token; print the fix for anything that fails.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon (it starts again on the next use).
    Stop,
    /// git's credential protocol (run by git).
    #[command(hide = true)]
    Get,
    #[command(hide = true)]
    Store,
    #[command(hide = true)]
    Erase,
}

/// The command line as a `clap::Command`, for generators.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The daemon takes no arguments; this describes it for its man page.
pub fn daemon_command() -> clap::Command {
    clap::Command::new("git-credential-azdo-daemon")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "The per-user daemon of git-credential-azdo: holds tokens and makes every network call",
        )
        .long_about(
            "The per-user daemon of git-credential-azdo. The client starts it on demand (or \
             systemd, launchd or a Kubernetes sidecar does, with --service); it holds access \
             tokens in memory and refresh tokens in the OS keyring or the file store, refreshes \
             them ahead of expiry, and makes every network call. Started on demand, it takes its \
             settings from the configuration file only, and a machine identity from each \
             request's variables; as a service, its own environment (AZURE_AUTHORITY_HOST, \
             HTTPS_PROXY, SSL_CERT_FILE, the AZURE_* identity variables, \
             GIT_CREDENTIAL_AZDO_CONFIG) is honoured too.",
        )
        .arg(
            clap::Arg::new("service")
                .long("service")
                .action(clap::ArgAction::SetTrue)
                .help("Run as a service: honour this process's environment (see above)"),
        )
}
