//! The programs behind `ci/netns`, the real-fault suite: a backend whose replies say who sent
//! them, an open-loop client that records the fate of every request, and the analysis that
//! turns those records, udplb's metrics and its log into one row per fault and checks the
//! targets (`docs/faults.md`).
//!
//! Every timestamp here is CLOCK_REALTIME in microseconds since the epoch, so that the client
//! (in one network namespace), udplb's log (in another) and the script that injects the faults
//! share one clock.

pub mod analyze;
pub mod backend;
pub mod load;

/// "UFLT" read as little-endian bytes: the first word of every request.
pub const MAGIC: u32 = 0x544c_4655;
/// magic u32, socket index u32, sequence u64, send time u64 (µs, realtime); then the backend's
/// name (8 bytes, zero-padded) in a reply, or zeros in a request; then padding.
pub const HEADER_LEN: usize = 32;
/// Where the backend writes its name.
pub const NAME_AT: std::ops::Range<usize> = 24..32;

/// Microseconds of CLOCK_REALTIME.
pub fn realtime_us() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// A request's header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub socket: u32,
    pub sequence: u64,
    pub sent_us: u64,
}

impl Request {
    pub fn emit(&self, buffer: &mut [u8]) {
        buffer[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buffer[4..8].copy_from_slice(&self.socket.to_le_bytes());
        buffer[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        buffer[16..24].copy_from_slice(&self.sent_us.to_le_bytes());
        buffer[NAME_AT].fill(0);
    }

    /// The request a reply answers and the backend that wrote it (`None` for a datagram that
    /// is not a reply of this suite).
    pub fn parse_reply(datagram: &[u8]) -> Option<(Request, String)> {
        if datagram.len() < HEADER_LEN || datagram[0..4] != MAGIC.to_le_bytes() {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(datagram[at..at + 8].try_into().unwrap());
        let request = Request {
            socket: u32::from_le_bytes(datagram[4..8].try_into().unwrap()),
            sequence: u64_at(8),
            sent_us: u64_at(16),
        };
        let name = &datagram[NAME_AT];
        let end = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
        Some((request, String::from_utf8_lossy(&name[..end]).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_names_its_request_and_backend() {
        let request = Request { socket: 59, sequence: 1 << 33, sent_us: 1_700_000_000_000_000 };
        let mut buffer = [0u8; 64];
        request.emit(&mut buffer);
        assert_eq!(Request::parse_reply(&buffer), Some((request, String::new())));
        buffer[NAME_AT][..2].copy_from_slice(b"b2");
        assert_eq!(Request::parse_reply(&buffer), Some((request, "b2".to_string())));
        assert_eq!(Request::parse_reply(&buffer[..31]), None);
        buffer[0] ^= 1;
        assert_eq!(Request::parse_reply(&buffer), None);
    }
}
