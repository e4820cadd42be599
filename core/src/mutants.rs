//! Named mutants: deliberate bugs behind test-only switches, so tests can prove that the
//! scenarios and tests around the core would catch them (`docs/testing.md`, "Mutants").
//!
//! The switches exist only with the `mutants` feature, which no release build enables. With
//! it, this module is public, a mutant is switched on for the calling thread with [`set`]
//! (the core and the simulator run on the caller's thread), and the tests that use mutants
//! run in a test binary of their own (`sim/tests/mutants.rs`), one mutant at a time. Without it, the module is private and
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
    /// A write-off at the back deadline does not retire the flow: the client's next datagram
    /// stays on the backend that lost its reply, so a lossy backend keeps its clients pinned.
    WriteOffKeepsFlow = 64,
    /// A reply byte-for-byte equal to one the flow returned less than 100 ms ago (with
    /// `responses = 1`) is returned and counted instead of dropped as a network copy.
    DuplicateRepliesKept = 128,
    /// A request the network copied is owed a reply of its own: the flow waits for a reply
    /// that never comes and writes it off against a healthy backend.
    CopiedRequestsOwed = 256,
    /// Data-path refusals move the health state (the hysteresis) even though active probes
    /// run and outlier ejection is on, so a refusal or two can take a backend Down that
    /// its probes find healthy.
    RefusalsMoveHealth = 512,
    /// A datagram from a backend's IP address but another port is not blamed on that
    /// backend: replies from the wrong port go uncounted and never eject it.
    StraysNotBlamed = 1024,
    /// A late reply does not take its write-off back: it settles a newer request instead,
    /// which is then written off in turn.
    LateRepliesNotTakenBack = 2048,
    /// Outlier ejection ignores `max_ejected_percent` (every backend but the last eligible
    /// one may be out at once).
    EjectionIgnoresCap = 4096,
    /// `on_backend_down = "reselect"` keeps the flow on its backend after it went out.
    ReselectKeepsFlow = 8192,
    /// `fail_open = true` never opens: with every backend out, new flows are dropped.
    FailOpenNeverOpens = 16384,
    /// Replies leave from the listener's own address, not the one the client sent to: on a
    /// wildcard listener the kernel then picks the source, and a connected client drops them.
    RepliesFromListenerAddress = 32768,
    /// QUIC-LB connection IDs are not read: every new flow of a `quic_lb` cluster is placed
    /// by its algorithm on the 4-tuple, so a client whose NAT rebinds may reach a server
    /// that has no connection for it.
    QuicLbIgnored = 65536,
}

#[cfg(feature = "mutants")]
impl Mutant {
    /// Every mutant, for tests that go through them all.
    pub const ALL: [Mutant; 17] = [
        Mutant::ResponsesPerFlow,
        Mutant::TimerLostOnEarlyFire,
        Mutant::IeeeCrc32,
        Mutant::MaglevUnsorted,
        Mutant::SilenceIsHealthy,
        Mutant::SelectionIgnoresHealth,
        Mutant::WriteOffKeepsFlow,
        Mutant::DuplicateRepliesKept,
        Mutant::CopiedRequestsOwed,
        Mutant::RefusalsMoveHealth,
        Mutant::StraysNotBlamed,
        Mutant::LateRepliesNotTakenBack,
        Mutant::EjectionIgnoresCap,
        Mutant::ReselectKeepsFlow,
        Mutant::FailOpenNeverOpens,
        Mutant::RepliesFromListenerAddress,
        Mutant::QuicLbIgnored,
    ];
}

#[cfg(feature = "mutants")]
std::thread_local! {
    /// Per thread, so that a test binary's other tests, which the harness runs on threads of
    /// their own, never see a mutant another test switched on.
    static ACTIVE: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// A mutant switched on for every thread of the process ([`set_for_process`]): a sweep runs
/// its seeds on worker threads of its own.
#[cfg(feature = "mutants")]
static PROCESS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Whether `mutant` is switched on (in this thread, or for the whole process).
#[cfg(feature = "mutants")]
#[inline(always)]
pub fn active(mutant: Mutant) -> bool {
    let process = PROCESS.load(core::sync::atomic::Ordering::Relaxed);
    ACTIVE.with(|active| (active.get() | process) & mutant as u32 != 0)
}

/// Switches exactly `mutant` on (or off with `None`) for every thread of the process, on top
/// of each thread's own switch. Only for a binary that runs one mutant at a time throughout
/// (`udplb-sim sweep --mutant`, a test binary of one test).
#[cfg(feature = "mutants")]
pub fn set_for_process(mutant: Option<Mutant>) {
    PROCESS.store(mutant.map_or(0, |m| m as u32), core::sync::atomic::Ordering::Relaxed);
}

/// Without the `mutants` feature no mutant is ever on.
#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub(crate) const fn active(_mutant: Mutant) -> bool {
    false
}

/// Switches exactly `mutant` on (or every mutant off with `None`) in the calling thread.
#[cfg(feature = "mutants")]
pub fn set(mutant: Option<Mutant>) {
    ACTIVE.with(|active| active.set(mutant.map_or(0, |m| m as u32)));
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
