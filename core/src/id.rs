//! Typed identifiers. The core hands these out; callers treat them as opaque handles.

use core::fmt;

/// A listener (a VIP socket), numbered in the configuration's canonical (name) order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(pub u32);

/// A cluster of backends, numbered in the configuration's canonical (name) order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u32);

/// A backend, unique across the whole process (not only within its cluster).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u32);

/// A health probe: one TCP connect or one UDP datagram the health monitor asked for.
///
/// Numbers are handed out in increasing order and never reused, so a result that arrives
/// after its probe timed out (or after its backend was paused, restarted or removed) names a
/// probe the monitor no longer waits for, and is ignored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u64);

/// A flow: a slot in the flow table plus the flow's serial number.
///
/// The serial is unique for the life of the process (it is never reused), so a handle to a
/// closed flow can never reach the flow that later reuses its slot: such a handle is simply
/// unknown. The serial is also what the PPv2 UNIQUE_ID TLV carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId {
    pub(crate) slot: u32,
    pub(crate) serial: u64,
}

impl FlowId {
    /// The flow's process-unique serial number (1 for the first flow).
    pub fn serial(self) -> u64 {
        self.serial
    }

    /// A handle made up by a test of a platform (the simulator's port allocation), which needs
    /// flows without a core; test builds only.
    #[cfg(any(test, feature = "fuzzing", feature = "mutants"))]
    pub fn for_tests(slot: u32, serial: u64) -> FlowId {
        FlowId { slot, serial }
    }
}

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener#{}", self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster#{}", self.0)
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend#{}", self.0)
    }
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe#{}", self.0)
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow#{}", self.serial)
    }
}
