//! The daemon's time, passed in at start-up ([`super::run`]): the wall clock that token
//! expiry is measured against, the sleeps of the refresher, and the draw that spreads renewals.
//!
//! The daemon runs on [`Clock::system`]. Tests drive a [`Clock::manual`] (time moves only when
//! the test calls [`Clock::advance`]) to cross a token's expiry or a slot's idle time without
//! waiting; the fleet simulation runs a [`Clock::fast`] that moves N times faster than real
//! time, with the renewal draw fixed or random. Network timeouts stay in real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Clock {
    kind: Kind,
    /// A fixed draw for [`Clock::jitter`] (simulations comparing runs); random when `None`.
    fixed_jitter: Option<f64>,
}

#[derive(Clone)]
enum Kind {
    System,
    /// Unix milliseconds, moved by [`Clock::advance`]; sleepers watch it.
    Manual(Arc<watch::Sender<u64>>),
    /// `origin_ms` plus `speed` times the real time since `origin`.
    Fast {
        origin_ms: u64,
        origin: std::time::Instant,
        speed: u32,
    },
}

impl Clock {
    /// The wall clock, and tokio's timers for sleeps.
    pub fn system() -> Clock {
        Clock {
            kind: Kind::System,
            fixed_jitter: None,
        }
    }

    /// A clock that starts at the wall clock's time and moves only by [`Clock::advance`].
    pub fn manual() -> Clock {
        let (tx, _) = watch::channel(crate::clock::unix_ms());
        Clock {
            kind: Kind::Manual(Arc::new(tx)),
            fixed_jitter: None,
        }
    }

    /// A clock that starts at the wall clock's time and runs `speed` times faster.
    pub fn fast(speed: u32) -> Clock {
        Clock {
            kind: Kind::Fast {
                origin_ms: crate::clock::unix_ms(),
                origin: std::time::Instant::now(),
                speed: speed.max(1),
            },
            fixed_jitter: None,
        }
    }

    /// The same clock, with every renewal drawn at `jitter` (in `[0, 1)`) instead of at random.
    pub fn with_fixed_jitter(mut self, jitter: f64) -> Clock {
        self.fixed_jitter = Some(jitter.clamp(0.0, 0.999));
        self
    }

    /// Moves a manual clock forward, waking the sleeps that end within `by`. Other clocks
    /// ignore it.
    pub fn advance(&self, by: Duration) {
        if let Kind::Manual(now) = &self.kind {
            now.send_modify(|ms| *ms += by.as_millis() as u64);
        }
    }

    /// Milliseconds since the Unix epoch, in this clock's time.
    pub fn now_ms(&self) -> u64 {
        match &self.kind {
            Kind::System => crate::clock::unix_ms(),
            Kind::Manual(now) => *now.borrow(),
            Kind::Fast {
                origin_ms,
                origin,
                speed,
            } => origin_ms + origin.elapsed().as_millis() as u64 * u64::from(*speed),
        }
    }

    /// Waits `d` of this clock's time.
    pub async fn sleep(&self, d: Duration) {
        match &self.kind {
            Kind::System => tokio::time::sleep(d).await,
            Kind::Manual(now) => {
                let until = *now.borrow() + d.as_millis() as u64;
                let mut rx = now.subscribe();
                // The sender lives as long as the clock; a dropped one never wakes.
                if rx.wait_for(|ms| *ms >= until).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Kind::Fast { speed, .. } => tokio::time::sleep(d / *speed).await,
        }
    }

    /// A draw in `[0, 1)` that places a token's renewal in its band
    /// ([`super::schedule::refresh_at_ms`]); not for anything secret.
    pub fn jitter(&self) -> f64 {
        if let Some(j) = self.fixed_jitter {
            return j;
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        (h.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_advanced_and_wakes_its_sleepers() {
        let clock = Clock::manual();
        let start = clock.now_ms();
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(3600)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(clock.now_ms(), start);
        clock.advance(Duration::from_secs(1800));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "woke half-way");
        clock.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("an hour passed")
            .unwrap();
        assert_eq!(clock.now_ms(), start + 3_600_000);
    }

    #[tokio::test]
    async fn a_fast_clock_runs_its_speed_times_faster() {
        let clock = Clock::fast(1000);
        let start = clock.now_ms();
        let real = std::time::Instant::now();
        clock.sleep(Duration::from_secs(60)).await;
        assert!(
            real.elapsed() < Duration::from_secs(5),
            "{:?}",
            real.elapsed()
        );
        assert!(clock.now_ms() - start >= 60_000);
    }

    #[test]
    fn draws_spread_over_the_band_unless_fixed() {
        let clock = Clock::system();
        let draws: Vec<f64> = (0..1000).map(|_| clock.jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        let low = draws.iter().filter(|j| **j < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below one half");
        assert_eq!(Clock::system().with_fixed_jitter(0.5).jitter(), 0.5);
    }
}
