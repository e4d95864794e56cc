//! `git-credential-azdo`: the credential helper git runs, and the user's command line.

use clap::Parser;
use git_credential_azdo::cli::{Cli, Cmd};
use git_credential_azdo::client;
use git_credential_azdo::git_credential::Action;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The hot path: git's operations skip argument parsing altogether.
    let op = std::env::args_os().nth(1);
    if let Some(action) = op
        .as_ref()
        .and_then(|o| o.to_str())
        .and_then(|o| Action::try_from(o).ok())
    {
        return client::credential_op(
            action,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
            std::io::stderr(),
        );
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let result = match Cli::parse().command {
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
        Cmd::Status { json } => client::status_command(json, &mut out),
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
            client::setup_command(scope, undo, &mut out)
        }
        Cmd::Doctor { json } => client::doctor_command(json, &mut out),
        Cmd::Stop => client::stop_command(&mut err),
        Cmd::Get | Cmd::Store | Cmd::Erase => unreachable!("handled above"),
    };
    client::report(result, &mut err)
}
