//! Named steps of a refresh where the crash-safety tests kill the daemon.
//!
//! In debug builds only, `GIT_CREDENTIAL_AZDO_STOP_AT=<step>` makes the daemon log
//! `stopped at a crash point` and hold the thread at that step for a minute, so that a test
//! can SIGKILL it exactly there. Release builds compile [`reached`] to nothing: the variable
//! has no effect on an installed daemon.

/// The refresh token is read; the request to Entra ID has not been sent.
pub const BEFORE_REQUEST: &str = "refresh-before-request";
/// Entra ID has answered with a new refresh token; nothing is persisted yet.
pub const AFTER_RESPONSE: &str = "refresh-after-response";
/// The new store file is written beside the old one and not yet renamed over it.
pub const STORE_WRITE: &str = "store-write";

/// Marks `step`; see the module documentation.
#[inline]
pub fn reached(step: &'static str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("GIT_CREDENTIAL_AZDO_STOP_AT").is_some_and(|v| v == step) {
        tracing::warn!(step, "stopped at a crash point");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}
