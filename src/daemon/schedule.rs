//! When a token is renewed, handed to git, or kept while its renewal fails: the refresh-ahead
//! schedule with its jitter, and the back-off after failures.
//!
//! A token is handed to git until the last fifth of its life (at most its last two minutes),
//! so that git finishes its request before the token expires. It is renewed a little before
//! that point: 2.5–5.5 % of its life earlier, the share drawn at random for every token (`Clock::jitter`). That keeps
//! a `get` from ever waiting on Entra ID, costs about 1.07 requests per token lifetime for
//! Entra's 60–90 minute tokens, and spreads the renewals of agents that started together.

use std::time::Duration;

/// Time before expiry from which a token is no longer handed to git.
pub fn usable_margin_ms(lifetime_ms: u64) -> u64 {
    (lifetime_ms / 5).min(120_000)
}

/// When to renew a token obtained at `obtained_ms` that expires at `expires_ms`; `jitter` in
/// `[0, 1)` places it within the 2.5–5.5 % band.
pub fn refresh_at_ms(obtained_ms: u64, expires_ms: u64, jitter: f64) -> u64 {
    let life = expires_ms.saturating_sub(obtained_ms);
    let spread = (life as f64 * (0.025 + 0.03 * jitter.clamp(0.0, 1.0))) as u64;
    expires_ms
        .saturating_sub(usable_margin_ms(life) + spread)
        .max(obtained_ms)
}

/// Life a token must have left to be served while its renewal fails: 5 s, or a tenth of its
/// life if that is less.
pub fn still_valid_ms(lifetime_ms: u64) -> u64 {
    5_000.min(lifetime_ms / 10)
}

/// Wait before the next try after `failures` failures in a row: 2 s, doubling to a minute.
pub fn backoff_ms(failures: u32) -> u64 {
    (1000u64 << failures.min(6)).min(60_000)
}

/// How long a machine identity's slot lives without a `get`: 30 minutes. Then it is dropped
/// with its token and the job variables it came with, and never renewed in the background.
pub const MACHINE_IDLE_MS: u64 = 30 * 60_000;

/// The longest the refresher sleeps, so that a laptop that was suspended (tokio's timers do
/// not count suspended time) renews soon after it resumes.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn entra_tokens_cost_at_most_1_1_requests_per_lifetime_and_never_make_git_wait() {
        for life_min in [60, 75, 90] {
            let life = life_min * MIN;
            for jitter in [0.0, 0.5, 0.999] {
                let at = refresh_at_ms(0, life, jitter);
                let per_lifetime = life as f64 / at as f64;
                assert!(
                    per_lifetime <= 1.1,
                    "{life_min} min, {jitter}: {per_lifetime}"
                );
                // Renewed before git stops getting it, with three quarters of a minute to spare.
                assert!(
                    at + 90_000 <= life - usable_margin_ms(life),
                    "{life_min}, {jitter}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_renewals_over_minutes() {
        let life = 75 * MIN;
        let earliest = refresh_at_ms(0, life, 0.999);
        let latest = refresh_at_ms(0, life, 0.0);
        assert!(latest - earliest >= 2 * MIN, "{}", latest - earliest);
    }

    #[test]
    fn short_tokens_renew_three_quarters_in_and_stay_usable_until_their_last_fifth() {
        let at = refresh_at_ms(0, 4_000, 0.5);
        assert!((2_900..=3_100).contains(&at), "{at}");
        assert_eq!(usable_margin_ms(4_000), 800);
        assert_eq!(usable_margin_ms(3_600_000), 120_000);
        assert_eq!(still_valid_ms(30_000), 3_000);
        assert_eq!(still_valid_ms(3_600_000), 5_000);
    }

    #[test]
    fn back_off_doubles_from_two_seconds_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
    }
}
