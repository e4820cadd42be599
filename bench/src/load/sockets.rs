//! Sockets of the generator: one per flow, bound explicitly to a loopback source address so
//! that more flows than one address has ephemeral ports can be opened.

use super::LoadOptions;
use anyhow::{Context, Result};
use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr};

/// Flows per source address when not told: one address has about 28,000 ephemeral ports
/// (`net.ipv4.ip_local_port_range`), and the proxies under test need some too.
const FLOWS_PER_ADDRESS_DEFAULT: u32 = 20_000;

/// The source address of flow `flow`: 127.0.0.F, 127.0.0.F+1, ... in equal blocks, F being
/// `--source-first`.
pub fn source_address(options: &LoadOptions, flow: u32) -> Ipv4Addr {
    let addresses =
        options.source_addresses.unwrap_or(options.flows.div_ceil(FLOWS_PER_ADDRESS_DEFAULT)).max(1);
    let per_address = options.flows.div_ceil(addresses).max(1);
    let octet = options.source_first + flow / per_address;
    Ipv4Addr::new(127, 0, (octet >> 8) as u8, octet as u8)
}

/// A non-blocking UDP socket bound to `source` and an ephemeral port. Large buffers only for
/// small flow counts: with 100,000 sockets the defaults are what a real client has.
pub fn open(source: Ipv4Addr, large_buffers: bool) -> Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    if large_buffers {
        crate::echo::set_buffers(&socket, 4 << 20);
    }
    let local: SocketAddr = (source, 0).into();
    socket.bind(&local.into()).with_context(|| format!("bind {local}"))?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Raises the descriptor limit for the sockets this run opens (flows, or requests in flight).
pub fn raise_nofile_for(options: &LoadOptions) {
    let sockets = if options.new_flow_per_request {
        options.flows as u64 * options.window as u64
    } else {
        options.flows as u64
    };
    crate::process::raise_nofile(sockets + 1024);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flows_spread_over_source_addresses_in_blocks() {
        let options = LoadOptions::parse_from(["udplb-load", "--target", "127.0.0.1:1", "--flows", "100000"]);
        assert_eq!(source_address(&options, 0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_address(&options, 19_999), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_address(&options, 20_000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(&options, 99_999), Ipv4Addr::new(127, 0, 0, 5));
        let small = LoadOptions::parse_from(["udplb-load", "--target", "127.0.0.1:1"]);
        assert_eq!(source_address(&small, 63), Ipv4Addr::new(127, 0, 0, 1));
    }
}
