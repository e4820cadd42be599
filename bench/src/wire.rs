//! The header every benchmark datagram starts with. The echo backend returns it unchanged, so
//! the generator learns from each reply which flow sent the request, which request it was and
//! when it left.
//!
//! Layout (little-endian): magic `u32`, flow index `u32`, sequence number `u64`, send time
//! `u64` (nanoseconds of CLOCK_MONOTONIC). The rest of the datagram is padding up to the size.

pub const MAGIC: u32 = 0x424c_4455; // "UDLB" read as little-endian bytes
pub const HEADER_LEN: usize = 24;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub flow: u32,
    pub sequence: u64,
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header at the start of `buffer`, which must hold at least [`HEADER_LEN`].
    pub fn emit(&self, buffer: &mut [u8]) {
        buffer[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buffer[4..8].copy_from_slice(&self.flow.to_le_bytes());
        buffer[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        buffer[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a header; `None` for a datagram that is too short or lacks the magic.
    pub fn parse(datagram: &[u8]) -> Option<Header> {
        if datagram.len() < HEADER_LEN {
            return None;
        }
        let word = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&datagram[range]);
            u64::from_le_bytes(bytes)
        };
        if word(0..4) as u32 != MAGIC {
            return None;
        }
        Some(Header { flow: word(4..8) as u32, sequence: word(8..16), sent_ns: word(16..24) })
    }
}

/// Nanoseconds of CLOCK_MONOTONIC, the clock every timestamp of the benchmark uses.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = Header { flow: 7, sequence: 1 << 40, sent_ns: 123_456_789 };
        let mut buffer = [0u8; 64];
        header.emit(&mut buffer);
        assert_eq!(Header::parse(&buffer), Some(header));
    }

    #[test]
    fn short_or_foreign_datagrams_are_rejected() {
        assert_eq!(Header::parse(&[0u8; 10]), None);
        assert_eq!(Header::parse(&[0u8; 64]), None);
    }
}
