//! The retry slot: a flow's last client datagram, kept until the flow's first reply, so a
//! request that the backend refuses (ICMP port unreachable) can be re-sent once to another
//! backend instead of being lost.
//!
//! Every slot draws on one process-wide byte budget (`process.retry_buffer_bytes`). When the
//! budget is spent, a flow keeps nothing (and is simply not retried); counting capacity rather
//! than length keeps the budget honest about memory. A slot reuses its allocation while it
//! can, so a flow sending same-sized datagrams allocates once.

/// The process-wide budget of retry slots.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    bytes_kept: u64,
    limit: u64,
}

impl RetryBudget {
    pub(crate) fn new(limit: u64) -> Self {
        RetryBudget { bytes_kept: 0, limit }
    }

    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// A snapshot's bytes held (`crate::snapshot`): the slots come back with the flows.
    pub(crate) fn restore_bytes_kept(&mut self, bytes_kept: u64) {
        self.bytes_kept = bytes_kept;
    }

    /// Bytes held by every slot now.
    pub(crate) fn bytes_kept(&self) -> u64 {
        self.bytes_kept
    }

    /// Replaces the slot's content with `payload`, within the budget, and says whether it did.
    /// An over-budget datagram empties the slot, so an older datagram is never re-sent in
    /// place of the newest.
    pub(crate) fn keep(&mut self, slot: &mut Vec<u8>, payload: &[u8]) -> bool {
        let capacity = slot.capacity() as u64;
        if payload.len() as u64 <= capacity {
            slot.clear();
            slot.extend_from_slice(payload);
            return true;
        }
        if self.bytes_kept - capacity + payload.len() as u64 > self.limit {
            self.release(slot);
            return false;
        }
        self.release(slot);
        slot.reserve_exact(payload.len());
        slot.extend_from_slice(payload);
        self.bytes_kept += slot.capacity() as u64;
        true
    }

    /// Empties the slot and returns its memory to the budget.
    pub(crate) fn release(&mut self, slot: &mut Vec<u8>) {
        self.bytes_kept -= slot.capacity() as u64;
        *slot = Vec::new();
    }

    /// Hands the slot's content to the caller (re-sending it) and returns its memory.
    pub(crate) fn take(&mut self, slot: &mut Vec<u8>) -> Vec<u8> {
        self.bytes_kept -= slot.capacity() as u64;
        std::mem::take(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_the_budget_and_reuses_the_allocation() {
        let mut budget = RetryBudget::new(10);
        let mut a = Vec::new();
        let mut b = Vec::new();
        budget.keep(&mut a, b"123456");
        assert_eq!(a, b"123456");
        budget.keep(&mut a, b"abc");
        assert_eq!((a.as_slice(), budget.bytes_kept()), (&b"abc"[..], 6));
        assert!(!budget.keep(&mut b, b"12345"));
        assert!(b.is_empty(), "6 + 5 > 10: not kept");
        budget.release(&mut a);
        budget.keep(&mut b, b"12345");
        assert_eq!((b.as_slice(), budget.bytes_kept()), (&b"12345"[..], 5));
        assert_eq!(budget.take(&mut b), b"12345");
        assert_eq!(budget.bytes_kept(), 0);
    }
}
