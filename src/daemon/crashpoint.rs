//! Named steps of a refresh where the crash-safety tests kill the daemon.
//!
//! In debug builds only, `GIT_CREDENTIAL_AZDO_STOP_AT=<step>` makes the daemon log
//! `stopped at a crash point` and hold the thread at that step for a minute (or until a test
//! creates [`RELEASE_FILE`] in the socket directory), so that a test can SIGKILL it exactly
//! there, or see what it answers meanwhile. Release builds compile [`reached`] to nothing: the variable
//! has no effect on an installed daemon.

/// The refresh token is read; the request to Entra ID has not been sent.
pub const BEFORE_REQUEST: &str = "refresh-before-request";
/// Entra ID has answered with a new refresh token; nothing is persisted yet.
pub const AFTER_RESPONSE: &str = "refresh-after-response";
/// The new store file is written beside the old one and not yet renamed over it.
pub const STORE_WRITE: &str = "store-write";

/// Created in the socket directory, it lets a held daemon go on (a test that checks what the
/// daemon answers while it is held there, rather than killing it).
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const RELEASE_FILE: &str = "crash-point-release";

/// Marks `step`; see the module documentation.
#[inline]
pub fn reached(step: &'static str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("GIT_CREDENTIAL_AZDO_STOP_AT").is_some_and(|v| v == step) {
        tracing::warn!(step, "stopped at a crash point");
        let release = crate::paths::runtime_dir().join(RELEASE_FILE);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < until && !release.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::warn!(step, "went on from the crash point");
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}
