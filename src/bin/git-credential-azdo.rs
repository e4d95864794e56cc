//! `git-credential-azdo`: the credential helper git runs, and the user's command line.

use clap::{Parser, Subcommand};
use git_credential_azdo::client;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "git-credential-azdo",
    version,
    about = "Git credential helper for Azure DevOps with Microsoft Entra ID (no PATs)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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

fn main() -> ExitCode {
    // The hot path: git's operations skip argument parsing altogether.
    let op = std::env::args_os().nth(1);
    if let Some(op) = op.as_ref().and_then(|o| o.to_str())
        && matches!(op, "get" | "store" | "erase")
    {
        return client::credential_op(
            op,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
            std::io::stderr(),
        );
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match Cli::parse().command {
        Cmd::Login {
            org,
            tenant,
            host,
            device_code,
            browser,
            timeout,
            app_id,
            client_secret,
            client_secret_file,
            callback,
            scope,
            paste,
        } => {
            let method = if device_code {
                client::Method::DeviceCode
            } else if browser {
                client::Method::Browser
            } else {
                client::Method::Auto
            };
            let app = app_id.map(|app_id| client::AppArgs {
                app_id,
                secret: match (client_secret, client_secret_file) {
                    (Some(s), _) if s == "-" => client::SecretSource::Stdin,
                    (Some(s), _) => client::SecretSource::Value(s),
                    (None, Some(f)) => client::SecretSource::File(f),
                    (None, None) => client::SecretSource::Stdin,
                },
                callback,
                scope,
                paste,
            });
            client::login_command(org, tenant, host, method, timeout, app, &mut err)
        }
        Cmd::Logout { org, all } => client::logout_command(org, all, &mut err),
        Cmd::Status { json } => client::status_command(json, &mut out, &mut err),
        Cmd::Setup {
            local,
            system,
            undo,
        } => {
            let scope = if local {
                "--local"
            } else if system {
                "--system"
            } else {
                "--global"
            };
            client::setup_command(scope, undo, &mut out, &mut err)
        }
        Cmd::Doctor { json } => client::doctor_command(json, &mut out, &mut err),
        Cmd::Stop => client::stop_command(&mut err),
        Cmd::Get | Cmd::Store | Cmd::Erase => unreachable!("handled above"),
    }
}
