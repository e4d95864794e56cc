//! The daemon run inside the test process through its composition root, `daemon::run`: on the
//! world's socket (so the real client, and git through it, use it), with the world's
//! configuration and data directory, and a clock the test holds. Its log goes to the world's
//! daemon log, which the secret scan reads. Dropping it shuts the daemon down.

use super::harness::World;
use git_credential_azdo::config::Config;
use git_credential_azdo::daemon::{self, Settings, Stores, clock::Clock};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct InProcess {
    pub clock: Clock,
    pub shutdown: CancellationToken,
    socket: PathBuf,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl World {
    /// Starts the daemon in this process on `clock`, logging at `level`, and waits until it
    /// accepts connections.
    pub fn daemon_in_process(&self, clock: Clock, level: tracing::Level) -> InProcess {
        let config = Config::load(&self.config_path()).expect("the world's configuration");
        let settings = Settings {
            config,
            service_identity: Default::default(),
        };
        let dir = self.runtime_dir();
        daemon::private_runtime_dir(&dir).expect("the socket directory");
        let socket = dir.join("daemon.sock");
        let data_dir = self.path("data/git-credential-azdo");
        let log_dir = self.path("state/git-credential-azdo");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::File::create(log_dir.join("daemon.log")).unwrap();
        let shutdown = CancellationToken::new();
        let thread = std::thread::spawn({
            let (clock, shutdown, socket) = (clock.clone(), shutdown.clone(), socket.clone());
            move || {
                let subscriber = tracing_subscriber::fmt()
                    .with_max_level(level)
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(log))
                    .finish();
                // One thread runs every task, so every event goes to this daemon's log.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tracing::subscriber::with_default(subscriber, || {
                    rt.block_on(async move {
                        let listener = daemon::bind(&socket).map_err(|e| e.to_string())?;
                        let stores = Stores::open(&settings.config, data_dir)
                            .await
                            .map_err(|e| e.to_string())?;
                        daemon::run(listener, stores, settings, clock, shutdown)
                            .await
                            .map_err(|e| e.to_string())
                    })
                })
            }
        });
        let up = super::harness::wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok() || thread.is_finished()
        });
        assert!(
            up && !thread.is_finished(),
            "the in-process daemon did not start"
        );
        InProcess {
            clock,
            shutdown,
            socket,
            thread: Some(thread),
        }
    }
}

impl InProcess {
    /// Cancels the daemon and waits for it to end; its error, if it failed.
    pub fn stop(&mut self) -> Result<(), String> {
        self.shutdown.cancel();
        let result = match self.thread.take() {
            Some(t) => t.join().expect("the daemon thread panicked"),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.socket);
        result
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
