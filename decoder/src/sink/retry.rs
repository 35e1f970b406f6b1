//! When to retry a failed export and how long to wait first: the OTel Collector's
//! `retry_on_failure` (exponential backoff with jitter, bounded by the total time spent on
//! one batch), overridden by the server's own hint (HTTP `Retry-After`, gRPC `RetryInfo`).
//!
//! Pure: time and randomness come in as arguments, so the schedule is unit-tested exactly.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// How a sink retries an export that failed in a retryable way. The defaults are the
/// OTel Collector exporterhelper's `retry_on_failure` defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Retry at all; when false, a retryable failure drops the batch at once
    /// (counted as `retries_exhausted`).
    pub enabled: bool,
    /// The wait before the first retry, before jitter.
    pub initial_interval: Duration,
    /// The cap on the wait between two attempts, before jitter.
    pub max_interval: Duration,
    /// The longest time spent on one batch, first attempt to last retry; zero means no
    /// limit (as in the Collector).
    pub max_elapsed: Duration,
    /// Each wait is the previous one times this.
    pub multiplier: f64,
    /// Jitter: a wait of `w` becomes a uniform draw from `w * (1 ± randomization)`.
    pub randomization: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            multiplier: 1.5,
            randomization: 0.5,
        }
    }
}

impl RetryConfig {
    /// Checks the numbers make a schedule; the reason if not.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.initial_interval.is_zero() {
            return Err("initial_interval must be more than zero".into());
        }
        if self.max_interval < self.initial_interval {
            return Err(format!(
                "max_interval ({:?}) is less than initial_interval ({:?})",
                self.max_interval, self.initial_interval
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "multiplier must be 1 or more, not {}",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.randomization) {
            return Err(format!(
                "randomization must be between 0 and 1, not {}",
                self.randomization
            ));
        }
        Ok(())
    }
}

/// SplitMix64: enough randomness for jitter, seedable for tests, no dependency.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from the process's hash keys, which std draws from the OS, so
    /// that many decoders restarted together do not retry in step.
    pub(crate) fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self(h.finish())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        // The top 53 bits fill an f64's mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The retry schedule of one batch.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: RetryConfig,
    /// The next wait before jitter.
    interval: Duration,
    rng: Rng,
}

impl Backoff {
    /// A schedule starting at `config.initial_interval`.
    pub(crate) fn new(config: &RetryConfig, rng: Rng) -> Self {
        Self {
            config: config.clone(),
            interval: config.initial_interval,
            rng,
        }
    }

    /// After a retryable failure `elapsed` after the batch's first attempt: how long to wait
    /// before the next attempt, or `None` to give up.
    ///
    /// A server's `hint` replaces the backoff's wait, as the OTLP specification asks. A wait
    /// that would end past `max_elapsed` gives up now rather than sleeping only to give up,
    /// and rather than retrying sooner than the server asked.
    pub(crate) fn next(&mut self, elapsed: Duration, hint: Option<Duration>) -> Option<Duration> {
        if !self.config.enabled {
            return None;
        }
        let interval = self.interval;
        // Advance even when the hint wins, so a server that stops hinting meets a schedule
        // that has kept growing.
        self.interval =
            Duration::try_from_secs_f64(interval.as_secs_f64() * self.config.multiplier)
                .unwrap_or(self.config.max_interval)
                .min(self.config.max_interval);
        let wait = hint.unwrap_or_else(|| self.jitter(interval));
        let unlimited = self.config.max_elapsed.is_zero();
        if unlimited || elapsed.saturating_add(wait) <= self.config.max_elapsed {
            Some(wait)
        } else {
            None
        }
    }

    fn jitter(&mut self, interval: Duration) -> Duration {
        let r = self.config.randomization;
        let factor = 1.0 - r + 2.0 * r * self.rng.unit();
        interval.mul_f64(factor)
    }
}

/// Parses an HTTP `Retry-After` value, delta-seconds or an HTTP-date (any of the three
/// formats RFC 9110 has recipients accept), into a wait from `now`. A date in the past
/// means retry now; anything else unparseable is no hint.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(randomization: f64) -> RetryConfig {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            max_elapsed: Duration::from_secs(2),
            multiplier: 2.0,
            randomization,
        }
    }

    #[test]
    fn defaults_are_the_collectors() {
        let c = RetryConfig::default();
        assert!(c.enabled);
        assert_eq!(c.initial_interval, Duration::from_secs(5));
        assert_eq!(c.max_interval, Duration::from_secs(30));
        assert_eq!(c.max_elapsed, Duration::from_secs(300));
        assert_eq!(c.multiplier, 1.5);
        assert_eq!(c.randomization, 0.5);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn without_jitter_the_schedule_grows_then_caps() {
        let mut b = Backoff::new(&fast(0.0), Rng::seeded(1));
        let waits: Vec<_> = (0..5)
            .map(|_| b.next(Duration::ZERO, None).unwrap().as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 400, 400]);
    }

    #[test]
    fn default_schedule_without_jitter() {
        let config = RetryConfig {
            randomization: 0.0,
            ..RetryConfig::default()
        };
        let mut b = Backoff::new(&config, Rng::seeded(1));
        let waits: Vec<_> = (0..7)
            .map(|_| b.next(Duration::ZERO, None).unwrap().as_millis())
            .collect();
        assert_eq!(waits, [5000, 7500, 11250, 16875, 25312, 30000, 30000]);
    }

    #[test]
    fn jitter_stays_within_the_band_and_is_seeded() {
        let mut a = Backoff::new(&fast(0.5), Rng::seeded(42));
        let mut b = Backoff::new(&fast(0.5), Rng::seeded(42));
        let mut seen = Vec::new();
        for base in [100u64, 200, 400, 400, 400, 400] {
            let wait = a.next(Duration::ZERO, None).unwrap();
            assert_eq!(
                Some(wait),
                b.next(Duration::ZERO, None),
                "same seed, same schedule"
            );
            let ms = wait.as_secs_f64() * 1000.0;
            assert!(
                ms >= base as f64 * 0.5 && ms <= base as f64 * 1.5,
                "{ms} outside {base}±50%"
            );
            seen.push(wait);
        }
        seen.dedup();
        assert!(seen.len() > 3, "jitter varies the waits: {seen:?}");
    }

    #[test]
    fn jitter_is_spread_over_the_band() {
        let mut rng = Rng::seeded(7);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        let low = draws.iter().filter(|&&u| u < 0.1).count();
        assert!((800..1200).contains(&low), "{low} of 10000 under 0.1");
    }

    #[test]
    fn gives_up_when_the_wait_would_pass_max_elapsed() {
        let mut b = Backoff::new(&fast(0.0), Rng::seeded(1));
        assert_eq!(
            b.next(Duration::from_millis(1800), None),
            Some(Duration::from_millis(100))
        );
        // 1.9 s + 200 ms > 2 s.
        assert_eq!(b.next(Duration::from_millis(1900), None), None);
        // Exactly at the limit still retries.
        let mut b = Backoff::new(&fast(0.0), Rng::seeded(1));
        assert!(b.next(Duration::from_millis(1900), None).is_some());
    }

    #[test]
    fn zero_max_elapsed_never_gives_up() {
        let config = RetryConfig {
            max_elapsed: Duration::ZERO,
            ..fast(0.0)
        };
        let mut b = Backoff::new(&config, Rng::seeded(1));
        assert_eq!(
            b.next(Duration::from_secs(1_000_000), None),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn disabled_never_retries() {
        let config = RetryConfig {
            enabled: false,
            ..fast(0.0)
        };
        let mut b = Backoff::new(&config, Rng::seeded(1));
        assert_eq!(b.next(Duration::ZERO, None), None);
        assert_eq!(b.next(Duration::ZERO, Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn a_hint_replaces_the_wait_but_the_schedule_still_grows() {
        let mut b = Backoff::new(&fast(0.0), Rng::seeded(1));
        assert_eq!(
            b.next(Duration::ZERO, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            b.next(Duration::ZERO, Some(Duration::ZERO)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            b.next(Duration::ZERO, None),
            Some(Duration::from_millis(400))
        );
    }

    #[test]
    fn a_hint_past_max_elapsed_gives_up() {
        let mut b = Backoff::new(&fast(0.0), Rng::seeded(1));
        assert_eq!(b.next(Duration::ZERO, Some(Duration::from_secs(3))), None);
        let mut b = Backoff::new(&fast(0.0), Rng::seeded(1));
        assert_eq!(
            b.next(Duration::from_secs(1), Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn huge_multiplier_caps_instead_of_overflowing() {
        let config = RetryConfig {
            multiplier: 1e300,
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::ZERO,
            ..fast(0.0)
        };
        let mut b = Backoff::new(&config, Rng::seeded(1));
        b.next(Duration::ZERO, None);
        assert_eq!(b.next(Duration::ZERO, None), Some(Duration::from_secs(30)));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = |c: RetryConfig| c.validate().unwrap_err();
        assert!(
            bad(RetryConfig {
                initial_interval: Duration::ZERO,
                ..fast(0.0)
            })
            .contains("initial_interval")
        );
        assert!(
            bad(RetryConfig {
                max_interval: Duration::from_millis(1),
                ..fast(0.0)
            })
            .contains("max_interval")
        );
        assert!(
            bad(RetryConfig {
                multiplier: 0.5,
                ..fast(0.0)
            })
            .contains("multiplier")
        );
        assert!(
            bad(RetryConfig {
                multiplier: f64::NAN,
                ..fast(0.0)
            })
            .contains("multiplier")
        );
        assert!(
            bad(RetryConfig {
                randomization: 1.5,
                ..fast(0.0)
            })
            .contains("randomization")
        );
        // Disabled retries need no schedule.
        assert_eq!(
            RetryConfig {
                enabled: false,
                initial_interval: Duration::ZERO,
                ..fast(0.0)
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_http_dates() {
        // 1994-11-06T08:49:37Z, RFC 9110's example, in its three formats.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = at - Duration::from_secs(90);
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(v, now),
                Some(Duration::from_secs(90)),
                "{v}"
            );
        }
        // A date already past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 32 Nov 1994 08:49:37 GMT", now),
            None
        );
    }
}
