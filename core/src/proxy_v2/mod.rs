//! PROXY protocol v2 (placeholder: being replaced by the full codec).

use std::net::SocketAddr;

/// TLVs the encoder can add.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlvOptions {
    pub crc32c: bool,
    pub unique_id: Option<u64>,
}

/// Error writing a header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Bytes of a PROXY DGRAM header for these addresses and TLVs.
pub fn proxy_header_len(source: SocketAddr, destination: SocketAddr, tlvs: TlvOptions) -> usize {
    let both_v4 = source.is_ipv4() && destination.is_ipv4();
    16 + if both_v4 { 12 } else { 36 }
        + if tlvs.crc32c { 7 } else { 0 }
        + if tlvs.unique_id.is_some() { 11 } else { 0 }
}

/// Writes the header into `out[..len]`.
pub fn write_proxy_header(
    out: &mut [u8],
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: TlvOptions,
) -> Result<usize, BufferTooSmall> {
    let len = proxy_header_len(source, destination, tlvs);
    if out.len() < len {
        return Err(BufferTooSmall);
    }
    out[..len].fill(0);
    Ok(len)
}

/// Largest header `write_proxy_header` can produce.
pub const MAX_PROXY_HEADER_LEN: usize = 16 + 36 + 7 + 11;
