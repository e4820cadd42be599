//! When probes run: intervals per state, the first probe's stagger, seeded jitter, and the
//! worst-case detection and recovery times those rules imply.
//!
//! Intervals follow HAProxy's documented `inter` / `fastinter` / `downinter` semantics:
//! `interval` while fully up, `down_interval` while fully down, `fast_interval` for every
//! state in between (including Unknown and up-but-degraded). The next probe is timed from
//! the moment the previous check completed (a result, or its timeout), never from when it
//! started, so a slow backend is never probed more often than the interval says.
//!
//! All randomness comes from ChaCha8 seeded with the selection key, which every instance that
//! must agree shares: the same key and the same inputs give the same schedule on every
//! machine. Each backend draws from its own stream (derived from its identity), so adding or
//! removing one backend does not shift the jitter of the others.

use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use siphasher::sip::SipHasher13;

use super::Health;
use super::hysteresis::Phase;
use crate::config::{HealthConfig, HealthMode};

/// The smallest interval or timeout the scheduler uses. Configuration validation already
/// rejects zero durations; this floor keeps an unvalidated configuration from arming a
/// deadline at `now`, which would break "after `handle_timeout(now)` the next deadline is
/// strictly later than `now`".
const MIN_DURATION: Duration = Duration::from_nanos(1);

/// Jitter above 100% would make intervals negative; validation caps it at 50%.
const JITTER_PERCENT_CEILING: u64 = 100;

/// The golden ratio as a 64-bit fraction. Adding it repeatedly (modulo 2⁶⁴) visits points
/// that stay evenly spread however many there are (a Weyl / Kronecker sequence), so the
/// first probes of a cluster's backends are spread across the interval for any cluster size
/// and never coincide.
const GOLDEN_RATIO_FRACTION: u64 = 0x9E37_79B9_7F4A_7C15;

/// One backend's seeded jitter source.
#[derive(Clone, Debug)]
pub(crate) struct Jitter {
    rng: ChaCha8Rng,
}

impl Jitter {
    /// A generator keyed by the selection key, on the stream `stream` (see [`backend_stream`]).
    pub(crate) fn new(selection_key: &[u8; 32], stream: u64) -> Self {
        let mut rng = ChaCha8Rng::from_seed(*selection_key);
        rng.set_stream(stream);
        Jitter { rng }
    }

    /// `base` moved by a uniformly drawn offset within ±`percent`% of it, exactly (integer
    /// nanoseconds; no floating point, so every platform computes the same value), never
    /// shorter than one nanosecond.
    pub(crate) fn apply(&mut self, base: Duration, percent: u8) -> Duration {
        let base = nanos(base.max(MIN_DURATION));
        let spread = jitter_spread_nanos(base, percent);
        // Lemire's multiply-shift maps a uniform u64 onto [0, 2·spread] without division.
        let choices = u128::from(spread) * 2 + 1;
        let draw = ((u128::from(self.rng.next_u64()) * choices) >> 64) as u64;
        let jittered = (base - spread).saturating_add(draw);
        Duration::from_nanos(jittered.max(1))
    }
}

/// The longest an interval of `base` can become with `percent`% jitter.
pub fn max_jittered(base: Duration, percent: u8) -> Duration {
    let base = nanos(base.max(MIN_DURATION));
    Duration::from_nanos(base.saturating_add(jitter_spread_nanos(base, percent)))
}

/// The shortest an interval of `base` can become with `percent`% jitter.
pub fn min_jittered(base: Duration, percent: u8) -> Duration {
    let base = nanos(base.max(MIN_DURATION));
    Duration::from_nanos((base - jitter_spread_nanos(base, percent)).max(1))
}

/// Half the width of the jitter window: `base · percent / 100`, rounded down.
fn jitter_spread_nanos(base_nanos: u64, percent: u8) -> u64 {
    let percent = u64::from(percent).min(JITTER_PERCENT_CEILING);
    (u128::from(base_nanos) * u128::from(percent) / 100) as u64
}

/// The interval HAProxy's rules give for this phase.
pub(crate) fn interval(config: &HealthConfig, phase: Phase) -> Duration {
    match phase {
        Phase::FullyUp => config.interval,
        Phase::FullyDown => config.down_interval(),
        Phase::Changing => config.fast_interval(),
    }
    .max(MIN_DURATION)
}

/// The per-probe timeout, floored like every other duration.
pub(crate) fn probe_timeout(config: &HealthConfig) -> Duration {
    config.timeout.max(MIN_DURATION)
}

/// The offset of a backend's first probe within `[0, interval)`: the `slot`-th point of the
/// golden-ratio sequence starting at the cluster's seeded `phase`. Backends of one cluster
/// take slots 0, 1, 2, … as they are added, so their first probes are spread evenly instead
/// of all firing at start-up (a thundering herd of probes every interval thereafter).
pub(crate) fn stagger(interval: Duration, cluster_phase: u64, slot: u64) -> Duration {
    let fraction = cluster_phase.wrapping_add(slot.wrapping_mul(GOLDEN_RATIO_FRACTION));
    let interval = nanos(interval.max(MIN_DURATION));
    Duration::from_nanos(((u128::from(fraction) * u128::from(interval)) >> 64) as u64)
}

/// The seeded starting point of a cluster's stagger sequence.
pub(crate) fn cluster_phase(selection_key: &[u8; 32], cluster_name: &str) -> u64 {
    keyed_hash(selection_key, b"udplb health stagger", &[cluster_name.as_bytes()])
}

/// The jitter stream of a backend, from its identity (cluster name, id, address), so that it
/// is the same on every instance whatever the order backends were numbered in.
pub(crate) fn backend_stream(
    selection_key: &[u8; 32],
    cluster_name: &str,
    id: &str,
    address: SocketAddr,
) -> u64 {
    let ip = match address {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(v6) => v6.ip().octets(),
    };
    let port = address.port().to_be_bytes();
    keyed_hash(selection_key, b"udplb health jitter", &[cluster_name.as_bytes(), id.as_bytes(), &ip, &port])
}

/// SipHash-1-3 keyed with the first half of the selection key over length-prefixed parts:
/// stable across Rust releases and machines (unlike `std`'s default hasher).
fn keyed_hash(selection_key: &[u8; 32], domain: &[u8], parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut key = [0u8; 16];
    key.copy_from_slice(&selection_key[..16]);
    let mut hasher = SipHasher13::new_with_key(&key);
    for part in std::iter::once(domain).chain(parts.iter().copied()) {
        hasher.write(&(part.len() as u64).to_le_bytes());
        hasher.write(part);
    }
    hasher.finish()
}

/// The longest time from a backend's failure to its Down transition, for an Enabled (or
/// Disabled / Draining) backend that is not paused, computed from the scheduler's own rules.
///
/// From fully Up, the worst case lines up every delay the rules allow:
///
/// 1. a check that started just before the failure can still pass, as late as `timeout`
///    after it (its reply was already on its way);
/// 2. that pass leaves the backend fully up, so the next check starts up to the jittered
///    maximum of `interval` later, and its failure may take the whole `timeout` (silence);
/// 3. each of the remaining `fall − 1` failures comes a jittered `fast_interval` later (the
///    backend is now between the extremes) plus another `timeout`.
///
/// `from = Unknown` also covers a first probe that is up to one `interval` (the stagger) or
/// one jittered `fast_interval` away; one failure is then enough. `from = Down` is zero: the
/// backend is already down. With `mode = "off"` nothing probes, and detection depends on
/// traffic: the bound is `Duration::MAX`.
///
/// Network latency is inside `timeout` (a reply later than that is a Timeout failure), so
/// the bound holds whatever the latency.
pub fn worst_case_detection(config: &HealthConfig, from: Health) -> Duration {
    worst_case(config, from, Health::Down)
}

/// The longest time from a backend's recovery to its Up transition, computed the same way as
/// [`worst_case_detection`]: a failure in flight at the recovery (up to `timeout` later), the
/// jittered maximum of `down_interval` plus a probe, then `rise − 1` jittered
/// `fast_interval`s plus a probe each. With `mode = "off"` the answer is `passive_recovery`
/// (after the last passive failure), since only that timer brings a backend back.
pub fn worst_case_recovery(config: &HealthConfig, from: Health) -> Duration {
    if config.mode == HealthMode::Off {
        return if from == Health::Up { Duration::ZERO } else { config.passive_recovery.max(MIN_DURATION) };
    }
    worst_case(config, from, Health::Up)
}

fn worst_case(config: &HealthConfig, from: Health, target: Health) -> Duration {
    if from == target {
        return Duration::ZERO;
    }
    if config.mode == HealthMode::Off {
        return Duration::MAX;
    }
    let timeout = probe_timeout(config);
    let fast = max_jittered(interval(config, Phase::Changing), config.jitter);
    let (steady, steps) = match target {
        Health::Down => (Phase::FullyUp, config.fall.max(1)),
        _ => (Phase::FullyDown, config.rise.max(1)),
    };
    let steady = max_jittered(interval(config, steady), config.jitter);
    let from_steady = timeout
        .saturating_add(steady)
        .saturating_add(timeout)
        .saturating_add(fast.saturating_add(timeout).saturating_mul(steps - 1));
    match from {
        Health::Unknown => {
            let first_probe = config.interval.max(MIN_DURATION).max(fast).saturating_add(timeout);
            from_steady.max(first_probe)
        }
        _ => from_steady,
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

impl Jitter {
    /// The generator's position (its key and stream come from the keys and the backend).
    pub(crate) fn word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    pub(crate) fn set_word_pos(&mut self, word_pos: u128) {
        self.rng.set_word_pos(word_pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn jitter_stays_within_bounds_and_reaches_both_sides() {
        let mut jitter = Jitter::new(&KEY, 1);
        let base = Duration::from_secs(2);
        let (low, high) = (min_jittered(base, 10), max_jittered(base, 10));
        assert_eq!((low, high), (Duration::from_millis(1800), Duration::from_millis(2200)));
        let draws: Vec<Duration> = (0..2000).map(|_| jitter.apply(base, 10)).collect();
        assert!(draws.iter().all(|d| (low..=high).contains(d)));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(1820)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(2180)));
        assert_eq!(Jitter::new(&KEY, 1).apply(base, 0), base, "no jitter, exact interval");
    }

    #[test]
    fn jitter_is_a_pure_function_of_key_and_stream() {
        let draw = |key: &[u8; 32], stream| {
            let mut jitter = Jitter::new(key, stream);
            (0..16).map(|_| jitter.apply(Duration::from_secs(1), 50)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&KEY, 3), draw(&KEY, 3));
        assert_ne!(draw(&KEY, 3), draw(&KEY, 4));
        assert_ne!(draw(&KEY, 3), draw(&[8; 32], 3));
    }

    #[test]
    fn stagger_spreads_a_cluster_over_the_interval_without_collisions() {
        let interval = Duration::from_secs(2);
        let phase = cluster_phase(&KEY, "dns");
        let mut offsets: Vec<Duration> = (0..16).map(|slot| stagger(interval, phase, slot)).collect();
        assert!(offsets.iter().all(|o| *o < interval));
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), 16);
        // Evenly spread: no gap between consecutive first probes exceeds a quarter interval.
        let gaps = offsets.windows(2).map(|w| w[1] - w[0]);
        assert!(gaps.max().unwrap() < interval / 4);
        assert_ne!(phase, cluster_phase(&KEY, "syslog"));
    }

    #[test]
    fn worst_case_detection_adds_up_the_rules() {
        let config = HealthConfig {
            mode: HealthMode::Tcp,
            interval: Duration::from_secs(10),
            fast_interval: Some(Duration::from_secs(1)),
            down_interval: Some(Duration::from_secs(30)),
            timeout: Duration::from_millis(500),
            fall: 3,
            rise: 2,
            jitter: 10,
            ..HealthConfig::default()
        };
        // in-flight pass 0.5 + (11 + 0.5) + 2 × (1.1 + 0.5)
        assert_eq!(worst_case_detection(&config, Health::Up), Duration::from_millis(15_200));
        assert_eq!(worst_case_detection(&config, Health::Unknown), Duration::from_millis(15_200));
        assert_eq!(worst_case_detection(&config, Health::Down), Duration::ZERO);
        // in-flight failure 0.5 + (33 + 0.5) + 1 × (1.1 + 0.5)
        assert_eq!(worst_case_recovery(&config, Health::Down), Duration::from_millis(35_600));
        let off = HealthConfig { mode: HealthMode::Off, ..config };
        assert_eq!(worst_case_detection(&off, Health::Up), Duration::MAX);
        assert_eq!(worst_case_recovery(&off, Health::Down), off.passive_recovery);
    }
}
