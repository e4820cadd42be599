//! Named mutants: deliberate bugs behind test-only switches, so tests can prove that the
//! scenarios and tests around the core would catch them.
//!
//! Compiled in only with the `mutants` feature, which no release build enables; without it
//! [`active`] is a constant `false` and every mutant check folds away. With it, a mutant is
//! switched on for the whole process, so tests that use mutants run in a test binary of their
//! own (`sim/tests/mutants.rs`), one mutant at a time.

/// The bugs that other UDP proxies shipped (see TRAPS.md) or that would be easy to introduce.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Mutant {
    /// `responses` counted per flow even in `per_request` mode: a flow with several requests
    /// in flight closes on its first reply and loses the others.
    ResponsesPerFlow = 1,
    /// A flow timer that fires early is not re-armed (a core that re-arms only when the
    /// earliest deadline changes): the flow never expires.
    TimerLostOnEarlyFire = 2,
    /// The PROXY v2 CRC32C TLV filled with IEEE CRC-32 instead of Castagnoli.
    IeeeCrc32 = 4,
    /// Maglev tables built from backends in input order instead of canonical order.
    MaglevUnsorted = 8,
    /// A probe that times out counts as a pass: silence is healthy.
    SilenceIsHealthy = 16,
    /// Selection ignores health: every enabled backend is eligible.
    SelectionIgnoresHealth = 32,
}

impl Mutant {
    pub const ALL: [Mutant; 6] = [
        Mutant::ResponsesPerFlow,
        Mutant::TimerLostOnEarlyFire,
        Mutant::IeeeCrc32,
        Mutant::MaglevUnsorted,
        Mutant::SilenceIsHealthy,
        Mutant::SelectionIgnoresHealth,
    ];
}

#[cfg(feature = "mutants")]
static ACTIVE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Whether `mutant` is switched on.
#[inline(always)]
pub fn active(mutant: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        ACTIVE.load(core::sync::atomic::Ordering::Relaxed) & mutant as u32 != 0
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = mutant;
        false
    }
}

/// Switches exactly `mutant` on (or every mutant off with `None`).
#[cfg(feature = "mutants")]
pub fn set(mutant: Option<Mutant>) {
    ACTIVE.store(mutant.map_or(0, |m| m as u32), core::sync::atomic::Ordering::Relaxed);
}

/// IEEE 802.3 CRC-32 (the wrong checksum for PPv2), for [`Mutant::IeeeCrc32`].
pub(crate) fn ieee_crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn ieee_check_value() {
        assert_eq!(super::ieee_crc32(b"123456789"), 0xCBF4_3926);
    }
}
