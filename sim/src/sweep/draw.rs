//! Swarm testing: each seed draws which of the envelope's fault kinds are on, and how hard.
//!
//! For every kind the scenario's `[envelope]` gives a range for, a coin of the seed says
//! whether it is on; an "on" kind gets a value drawn uniformly from its range, an "off" kind
//! the range's gentlest end (its low end: the envelope says where the expectations must hold,
//! so nothing outside it is drawn). One seed therefore runs with loss and jitter but no
//! reordering, the next with reordering alone: faults that mask each other in a fixed mix get
//! runs of their own. The draw comes from a ChaCha stream of its own, seeded by the seed, so it
//! does not shift the run's own random numbers, and every kind takes its coin and its value
//! from the stream whether it is on or not (one kind's coin never moves another's value).

use std::fmt;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::scenario::{Envelope, NetworkSpec, PlatformSpec};

/// A fault kind an envelope can range over, by its `[network]` or `[platform]` key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Loss,
    Duplicate,
    Reorder,
    IcmpLoss,
    Latency,
    Jitter,
    OpenFail,
    UpstreamSendFail,
    UpstreamTooLong,
    UpstreamBufferFull,
    ClientSendFail,
    ClientTooLong,
    ClientBufferFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::IcmpLoss,
        FaultKind::Latency,
        FaultKind::Jitter,
        FaultKind::OpenFail,
        FaultKind::UpstreamSendFail,
        FaultKind::UpstreamTooLong,
        FaultKind::UpstreamBufferFull,
        FaultKind::ClientSendFail,
        FaultKind::ClientTooLong,
        FaultKind::ClientBufferFull,
    ];

    /// The key in `[network]` or `[platform]` (and `[envelope]`).
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::IcmpLoss => "icmp_loss",
            FaultKind::Latency => "latency",
            FaultKind::Jitter => "jitter",
            FaultKind::OpenFail => "open_fail",
            FaultKind::UpstreamSendFail => "upstream_send_fail",
            FaultKind::UpstreamTooLong => "upstream_too_long",
            FaultKind::UpstreamBufferFull => "upstream_buffer_full",
            FaultKind::ClientSendFail => "client_send_fail",
            FaultKind::ClientTooLong => "client_too_long",
            FaultKind::ClientBufferFull => "client_buffer_full",
        }
    }

    /// The section the kind's key lives in: `network` or `platform`.
    pub fn section(self) -> &'static str {
        match self {
            FaultKind::Loss
            | FaultKind::Duplicate
            | FaultKind::Reorder
            | FaultKind::IcmpLoss
            | FaultKind::Latency
            | FaultKind::Jitter => "network",
            _ => "platform",
        }
    }

    /// The envelope's range for this kind, if it has one: (gentlest, hardest).
    fn range(self, envelope: &Envelope) -> Option<(Value, Value)> {
        let fraction =
            |range: Option<(f64, f64)>| range.map(|(a, b)| (Value::Fraction(a), Value::Fraction(b)));
        let time = |range: Option<(crate::scenario::TimeOf, crate::scenario::TimeOf)>| {
            range.map(|(a, b)| (Value::Time(a.0), Value::Time(b.0)))
        };
        match self {
            FaultKind::Loss => fraction(envelope.loss),
            FaultKind::Duplicate => fraction(envelope.duplicate),
            FaultKind::Reorder => fraction(envelope.reorder),
            FaultKind::IcmpLoss => fraction(envelope.icmp_loss),
            FaultKind::Latency => time(envelope.latency),
            FaultKind::Jitter => time(envelope.jitter),
            FaultKind::OpenFail => fraction(envelope.open_fail),
            FaultKind::UpstreamSendFail => fraction(envelope.upstream_send_fail),
            FaultKind::UpstreamTooLong => fraction(envelope.upstream_too_long),
            FaultKind::UpstreamBufferFull => fraction(envelope.upstream_buffer_full),
            FaultKind::ClientSendFail => fraction(envelope.client_send_fail),
            FaultKind::ClientTooLong => fraction(envelope.client_too_long),
            FaultKind::ClientBufferFull => fraction(envelope.client_buffer_full),
        }
    }
}

/// A value of `[network]`: a probability or a duration.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Value {
    Fraction(f64),
    Time(Duration),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Fraction(x) => write!(f, "{x:.4}"),
            Value::Time(t) => write!(f, "{t:?}"),
        }
    }
}

/// One kind's draw.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Drawn {
    pub kind: FaultKind,
    /// The coin came up "on".
    pub on: bool,
    /// What `[network]` gets: the drawn value when on, the gentlest end of the range when off.
    pub value: Value,
    /// The envelope's gentlest value for the kind (what "off" and shrinking set).
    pub gentlest: Value,
}

/// Everything one seed drew, in [`FaultKind::ALL`] order, for the kinds the envelope ranges
/// over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Draw {
    pub faults: Vec<Drawn>,
}

/// Mixed into the seed so the draw's stream differs from the network's own.
const STREAM: u64 = 0x5357_4152_4d00_0001;

impl Draw {
    /// What `seed` draws from `envelope`.
    pub fn from_seed(envelope: &Envelope, seed: u64) -> Draw {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
        let mut faults = Vec::new();
        for kind in FaultKind::ALL {
            let Some((low, high)) = kind.range(envelope) else { continue };
            let on = rng.next_u64() & 1 == 1;
            let fraction = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let hard = match (low, high) {
                (Value::Fraction(a), Value::Fraction(b)) => Value::Fraction(a + (b - a) * fraction),
                (Value::Time(a), Value::Time(b)) => {
                    let (a, b) = (a.as_nanos() as f64, b.as_nanos() as f64);
                    Value::Time(Duration::from_nanos((a + (b - a) * fraction) as u64))
                }
                _ => low,
            };
            faults.push(Drawn { kind, on, value: if on { hard } else { low }, gentlest: low });
        }
        Draw { faults }
    }

    /// The draw with `kind` turned off (set to its gentlest value), as shrinking does.
    pub fn without(&self, kind: FaultKind) -> Draw {
        let mut draw = self.clone();
        for drawn in draw.faults.iter_mut().filter(|d| d.kind == kind) {
            drawn.on = false;
            drawn.value = drawn.gentlest;
        }
        draw
    }

    /// The kinds that came up on.
    pub fn on(&self) -> impl Iterator<Item = FaultKind> + '_ {
        self.faults.iter().filter(|d| d.on).map(|d| d.kind)
    }

    /// Writes the drawn values into `network` and `platform`.
    pub fn apply(&self, network: &mut NetworkSpec, platform: &mut PlatformSpec) {
        for drawn in &self.faults {
            match (drawn.kind, drawn.value) {
                (FaultKind::OpenFail, Value::Fraction(x)) => platform.open_fail = x,
                (FaultKind::UpstreamSendFail, Value::Fraction(x)) => platform.upstream_send_fail = x,
                (FaultKind::UpstreamTooLong, Value::Fraction(x)) => platform.upstream_too_long = x,
                (FaultKind::UpstreamBufferFull, Value::Fraction(x)) => platform.upstream_buffer_full = x,
                (FaultKind::ClientSendFail, Value::Fraction(x)) => platform.client_send_fail = x,
                (FaultKind::ClientTooLong, Value::Fraction(x)) => platform.client_too_long = x,
                (FaultKind::ClientBufferFull, Value::Fraction(x)) => platform.client_buffer_full = x,
                (FaultKind::Loss, Value::Fraction(x)) => network.loss = x,
                (FaultKind::Duplicate, Value::Fraction(x)) => network.duplicate = x,
                (FaultKind::Reorder, Value::Fraction(x)) => network.reorder = x,
                (FaultKind::IcmpLoss, Value::Fraction(x)) => network.icmp_loss = x,
                (FaultKind::Latency, Value::Time(t)) => network.latency = t,
                (FaultKind::Jitter, Value::Time(t)) => network.jitter = t,
                _ => {}
            }
        }
    }
}

impl fmt::Display for Draw {
    /// `loss 0.0310, reorder off, latency 1.2ms` (an off kind shows its gentlest value when
    /// that is not zero: `latency off (100µs)`); `nothing` for an envelope-less scenario.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.faults.is_empty() {
            return f.write_str("nothing (no [envelope])");
        }
        for (index, drawn) in self.faults.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            let key = drawn.kind.key();
            let zero = matches!(drawn.gentlest, Value::Fraction(x) if x == 0.0)
                || matches!(drawn.gentlest, Value::Time(t) if t.is_zero());
            match (drawn.on, zero) {
                (true, _) => write!(f, "{key} {}", drawn.value)?,
                (false, true) => write!(f, "{key} off")?,
                (false, false) => write!(f, "{key} off ({})", drawn.gentlest)?,
            }
        }
        Ok(())
    }
}
