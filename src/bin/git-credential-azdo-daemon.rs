//! `git-credential-azdo-daemon`: holds tokens and makes every network call; started on demand
//! by the client, or as a service with `--service` (see `launch`). Logs go to stderr (the client points it at the log file); the level comes
//! from `GIT_CREDENTIAL_AZDO_LOG` (default `info`).

use anyhow::Context;
use git_credential_azdo::{daemon, launch};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let service = match std::env::args().nth(1).as_deref() {
        None => false,
        Some(launch::SERVICE_FLAG) => true,
        Some(other) => {
            eprintln!(
                "git-credential-azdo-daemon: unknown argument {other:?}; the only one is {} (run as a service: its environment is honoured)",
                launch::SERVICE_FLAG
            );
            return ExitCode::from(2);
        }
    };
    if !service {
        // Started on demand: forget what the starter's environment says about where secrets
        // go and whose identity to use (see `launch`).
        for k in launch::spawner_only() {
            // SAFETY: no other thread runs yet.
            unsafe { std::env::remove_var(k) };
        }
    }
    harden();
    daemon::raise_fd_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GIT_CREDENTIAL_AZDO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(service) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("git-credential-azdo-daemon: {e:#}");
            // The client that started it waits on stdout for `ready`: give it the reason
            // instead (one line), so the person sees it, not only the log.
            let reason = format!("{e:#}").replace('\n', " ");
            println!("{}{reason}", launch::FAILED_PREFIX);
            ExitCode::FAILURE
        }
    }
}

fn run(service: bool) -> anyhow::Result<daemon::Exit> {
    let settings = daemon::Settings::from_environment(service)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            on_signal.cancel();
        });
        // On a worker, not the main thread: connections are then accepted and spawned on the
        // thread that runs them, without waking another.
        let server = tokio::spawn(daemon::start(settings, std::io::stdout(), shutdown));
        Ok(server.await.context("the daemon's server task failed")??)
    })
}

/// Private files by default, and no core dumps or ptrace of a process that holds tokens.
fn harden() {
    unsafe {
        libc::umask(0o077);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}
