//! Hysteresis: how check results move a backend between Unknown, Up and Down.
//!
//! Two models, chosen per cluster with `health.model`:
//!
//! - **`haproxy`** is HAProxy's single health counter in `[0, rise+fall−1]`, with HAProxy's
//!   documented update rule: a failed check decrements it, and if it falls below `rise` it
//!   snaps to 0 (the server is now down); a passed check increments it, and once it reaches
//!   `rise` it snaps to `rise+fall−1` (the server is now fully up). The backend is Up exactly
//!   while the counter is at least `rise`. The snaps are what give hysteresis: from full health
//!   it takes exactly `fall` failures to go down (`rise+fall−1 − fall = rise−1 < rise`), from 0
//!   it takes exactly `rise` passes to come up, and alternating results park the counter next
//!   to whichever extreme it was at, with no transition. Without the snaps a backend that
//!   had just come up at `rise` would go down again on its very next failure.
//! - **`consecutive`** keeps two streaks: `rise` passes in a row bring a Down backend Up,
//!   `fall` failures in a row take an Up backend Down, and a result of the other kind resets
//!   the streak.
//!
//! Both resolve Unknown on the first result (vpp-maglev's rule): the `haproxy` counter is
//! preloaded at `rise−1`, so one pass reaches `rise` (Up) and any failure drops below it
//! (Down); the `consecutive` model treats a streak of one as enough while Unknown. A restart
//! that kept new backends out until `rise` passes would black-hole traffic meanwhile.

use super::Health;
use crate::config::HysteresisModel;

/// Where a backend stands between its extremes; it picks the probe interval the way
/// HAProxy's `inter`, `fastinter` and `downinter` do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Up with nothing against it: probed every `interval`.
    FullyUp,
    /// Down with nothing for it: probed every `down_interval`.
    FullyDown,
    /// Unknown, or a streak / counter between the extremes: probed every `fast_interval`,
    /// so a change in progress is confirmed (or refuted) quickly.
    Changing,
}

/// The hysteresis counters of one backend, for status displays.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CounterView {
    /// HAProxy's single counter: Up while `health >= rise`; full health is `rise+fall−1`.
    Haproxy { health: u32, rise: u32, fall: u32 },
    /// Separate streaks of passes and failures (at most one of them is non-zero).
    Consecutive { passes: u32, failures: u32, rise: u32, fall: u32 },
}

/// The hysteresis state machine of one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hysteresis {
    /// Passes needed to come up; at least 1 (an unvalidated 0 is read as 1).
    rise: u32,
    /// Failures needed to go down; at least 1.
    fall: u32,
    health: Health,
    counter: Counter,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Counter {
    Haproxy { health: u32 },
    Consecutive { passes: u32, failures: u32 },
}

impl Hysteresis {
    /// A backend nothing is known about yet: the first result decides.
    pub(crate) fn unknown(model: HysteresisModel, rise: u32, fall: u32) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        let counter = match model {
            HysteresisModel::Haproxy => Counter::Haproxy { health: rise - 1 },
            HysteresisModel::Consecutive => Counter::Consecutive { passes: 0, failures: 0 },
        };
        Hysteresis { rise, fall, health: Health::Unknown, counter }
    }

    /// A backend at full health. With `mode = "off"` nothing can ever pass a check, so a
    /// backend starts (and passive recovery returns it) here, as HAProxy considers a server
    /// without `check` always up; it then takes `fall` passive failures to go down.
    pub(crate) fn fully_up(model: HysteresisModel, rise: u32, fall: u32) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        let counter = match model {
            HysteresisModel::Haproxy => Counter::Haproxy { health: rise + fall - 1 },
            HysteresisModel::Consecutive => Counter::Consecutive { passes: 0, failures: 0 },
        };
        Hysteresis { rise, fall, health: Health::Up, counter }
    }

    pub(crate) fn health(&self) -> Health {
        self.health
    }

    /// Which interval applies now.
    pub(crate) fn phase(&self) -> Phase {
        match (self.health, self.counter) {
            (Health::Unknown, _) => Phase::Changing,
            (Health::Up, Counter::Haproxy { health }) if health == self.full() => Phase::FullyUp,
            (Health::Down, Counter::Haproxy { health: 0 }) => Phase::FullyDown,
            (Health::Up, Counter::Consecutive { failures: 0, .. }) => Phase::FullyUp,
            (Health::Down, Counter::Consecutive { passes: 0, .. }) => Phase::FullyDown,
            _ => Phase::Changing,
        }
    }

    /// Feeds one check result (or passive failure). Returns `(from, to)` when the health
    /// state changed.
    pub(crate) fn record(&mut self, passed: bool) -> Option<(Health, Health)> {
        let from = self.health;
        let (rise, full) = (self.rise, self.full());
        let to = match &mut self.counter {
            Counter::Haproxy { health } => {
                // HAProxy's rule, applied literally; Unknown needs nothing special because
                // the counter was preloaded at rise − 1.
                if passed && *health < full {
                    *health += 1;
                    if *health >= rise {
                        *health = full;
                    }
                } else if !passed && *health > 0 {
                    *health -= 1;
                    if *health < rise {
                        *health = 0;
                    }
                }
                if *health >= rise { Health::Up } else { Health::Down }
            }
            Counter::Consecutive { passes, failures } => {
                if passed {
                    *passes = (*passes + 1).min(rise);
                    *failures = 0;
                } else {
                    *failures = (*failures + 1).min(self.fall);
                    *passes = 0;
                }
                match from {
                    Health::Unknown if passed => Health::Up,
                    Health::Unknown => Health::Down,
                    Health::Down if *passes >= rise => Health::Up,
                    Health::Up if *failures >= self.fall => Health::Down,
                    unchanged => unchanged,
                }
            }
        };
        self.health = to;
        (from != to).then_some((from, to))
    }

    pub(crate) fn view(&self) -> CounterView {
        let (rise, fall) = (self.rise, self.fall);
        match self.counter {
            Counter::Haproxy { health } => CounterView::Haproxy { health, rise, fall },
            Counter::Consecutive { passes, failures } => {
                CounterView::Consecutive { passes, failures, rise, fall }
            }
        }
    }

    /// Checks that the counters are within bounds and agree with the health state.
    pub(crate) fn check(&self) -> Result<(), String> {
        let (rise, fall, full) = (self.rise, self.fall, self.full());
        let consistent = match (self.health, self.counter) {
            (_, Counter::Haproxy { health }) if health > full => false,
            (Health::Unknown, Counter::Haproxy { health }) => health == rise - 1,
            (Health::Up, Counter::Haproxy { health }) => health >= rise,
            (Health::Down, Counter::Haproxy { health }) => health < rise,
            (_, Counter::Consecutive { passes, failures })
                if passes > rise || failures > fall || (passes > 0 && failures > 0) =>
            {
                false
            }
            (Health::Unknown, Counter::Consecutive { passes, failures }) => passes == 0 && failures == 0,
            (Health::Up, Counter::Consecutive { failures, .. }) => failures < fall,
            (Health::Down, Counter::Consecutive { passes, .. }) => passes < rise,
        };
        if consistent {
            Ok(())
        } else {
            Err(format!("{:?} with counters {:?} is inconsistent", self.health, self.view()))
        }
    }

    /// HAProxy's full health, `rise + fall − 1`.
    fn full(&self) -> u32 {
        self.rise + self.fall - 1
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_struct!(Hysteresis { rise, fall, health, counter });

impl crate::snapshot::Codec for Counter {
    fn put(&self, w: &mut crate::snapshot::Writer) {
        match self {
            Counter::Haproxy { health } => {
                0u8.put(w);
                health.put(w);
            }
            Counter::Consecutive { passes, failures } => {
                1u8.put(w);
                passes.put(w);
                failures.put(w);
            }
        }
    }
    fn get(r: &mut crate::snapshot::Reader<'_>) -> Result<Self, crate::snapshot::SnapshotError> {
        use crate::snapshot::Codec;
        match r.u8("hysteresis counter")? {
            0 => Ok(Counter::Haproxy { health: Codec::get(r)? }),
            1 => Ok(Counter::Consecutive { passes: Codec::get(r)?, failures: Codec::get(r)? }),
            _ => Err(r.invalid("hysteresis counter")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_CHANGE: Option<(Health, Health)> = None;

    fn haproxy(rise: u32, fall: u32) -> Hysteresis {
        Hysteresis::unknown(HysteresisModel::Haproxy, rise, fall)
    }

    fn consecutive(rise: u32, fall: u32) -> Hysteresis {
        Hysteresis::unknown(HysteresisModel::Consecutive, rise, fall)
    }

    fn counter(hysteresis: &Hysteresis) -> u32 {
        match hysteresis.view() {
            CounterView::Haproxy { health, .. } => health,
            CounterView::Consecutive { .. } => unreachable!("haproxy model expected"),
        }
    }

    #[test]
    fn haproxy_takes_exactly_fall_failures_from_full_health() {
        let mut h = Hysteresis::fully_up(HysteresisModel::Haproxy, 2, 3);
        assert_eq!((counter(&h), h.phase()), (4, Phase::FullyUp));
        assert_eq!(h.record(false), NO_CHANGE);
        assert_eq!((counter(&h), h.phase()), (3, Phase::Changing));
        assert_eq!(h.record(false), NO_CHANGE);
        assert_eq!(counter(&h), 2);
        assert_eq!(h.record(false), Some((Health::Up, Health::Down)));
        assert_eq!((counter(&h), h.phase()), (0, Phase::FullyDown));
        assert_eq!(h.record(false), None, "further failures keep it at 0");
        assert_eq!(counter(&h), 0);
        h.check().unwrap();
    }

    #[test]
    fn haproxy_takes_exactly_rise_passes_from_zero() {
        let mut h = haproxy(2, 3);
        assert_eq!(h.record(false), Some((Health::Unknown, Health::Down)));
        assert_eq!(counter(&h), 0);
        assert_eq!(h.record(true), None);
        assert_eq!((counter(&h), h.phase()), (1, Phase::Changing));
        assert_eq!(h.record(true), Some((Health::Down, Health::Up)));
        assert_eq!((counter(&h), h.phase()), (4, Phase::FullyUp), "coming up snaps to full health");
        h.check().unwrap();
    }

    #[test]
    fn haproxy_alternating_results_park_the_counter_without_a_transition() {
        let mut h = Hysteresis::fully_up(HysteresisModel::Haproxy, 2, 3);
        for _ in 0..50 {
            assert_eq!(h.record(false), None);
            assert_eq!(counter(&h), 3);
            assert_eq!(h.record(true), None);
            assert_eq!(counter(&h), 4);
        }
        assert_eq!(h.health(), Health::Up);
        let mut h = haproxy(2, 3);
        h.record(false);
        for _ in 0..50 {
            assert_eq!(h.record(true), None);
            assert_eq!(counter(&h), 1);
            assert_eq!(h.record(false), None);
            assert_eq!(counter(&h), 0);
        }
        assert_eq!(h.health(), Health::Down);
    }

    #[test]
    fn haproxy_unknown_resolves_on_the_first_result() {
        for (rise, fall) in [(1, 1), (2, 3), (5, 1), (1, 7)] {
            let mut h = haproxy(rise, fall);
            assert_eq!(counter(&h), rise - 1, "preloaded at rise - 1");
            assert_eq!(h.phase(), Phase::Changing);
            h.check().unwrap();
            assert_eq!(h.clone().record(true), Some((Health::Unknown, Health::Up)));
            assert_eq!(h.record(false), Some((Health::Unknown, Health::Down)));
        }
    }

    #[test]
    fn consecutive_streaks_reset_on_a_result_of_the_other_kind() {
        let mut h = Hysteresis::fully_up(HysteresisModel::Consecutive, 2, 3);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.phase(), Phase::Changing);
        assert_eq!(h.record(true), None, "a pass resets the failure streak");
        assert_eq!(h.phase(), Phase::FullyUp);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some((Health::Up, Health::Down)));
        assert_eq!(h.phase(), Phase::FullyDown);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None, "a failure resets the pass streak");
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some((Health::Down, Health::Up)));
        assert_eq!(h.view(), CounterView::Consecutive { passes: 2, failures: 0, rise: 2, fall: 3 });
        h.check().unwrap();
    }

    #[test]
    fn consecutive_unknown_resolves_on_the_first_result() {
        assert_eq!(consecutive(3, 3).record(true), Some((Health::Unknown, Health::Up)));
        assert_eq!(consecutive(3, 3).record(false), Some((Health::Unknown, Health::Down)));
    }

    #[test]
    fn zero_rise_or_fall_is_read_as_one() {
        let mut h = haproxy(0, 0);
        h.check().unwrap();
        assert_eq!(h.record(true), Some((Health::Unknown, Health::Up)));
        assert_eq!(h.record(false), Some((Health::Up, Health::Down)));
        h.check().unwrap();
    }
}
