//! Named mutants: deliberate bugs behind test-only switches, so tests can prove that the
//! scenarios and tests around the core would catch them (`docs/testing.md`, "Mutants").
//!
//! The switches exist only with the `mutants` feature, which no release build enables. With
//! it, this module is public, a mutant is switched on for the whole process with [`set`], and
//! tests that use mutants therefore run in a test binary of their own
//! (`sim/tests/mutants.rs`), one mutant at a time. Without it, the module is private and
//! `active` is a `const fn` that returns `false`, so every mutant check in the core is a
//! constant condition and compiles away.

/// Bugs that UDP proxies have shipped, or that would be easy to introduce here; each variant
/// describes its bug.
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

#[cfg(feature = "mutants")]
impl Mutant {
    /// Every mutant, for tests that go through them all.
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
#[cfg(feature = "mutants")]
#[inline(always)]
pub fn active(mutant: Mutant) -> bool {
    ACTIVE.load(core::sync::atomic::Ordering::Relaxed) & mutant as u32 != 0
}

/// Without the `mutants` feature no mutant is ever on.
#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub(crate) const fn active(_mutant: Mutant) -> bool {
    false
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
