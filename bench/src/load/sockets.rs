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

/// First port of the fixed ports flows take on a source address other than 127.0.0.1.
const FIXED_PORT_BASE: u32 = 2_000;

/// The port flow `flow` binds: on 127.0.0.1 an ephemeral one (0); on the other loopback
/// addresses a fixed port below the ephemeral range (2000 + the flow's place in its block).
/// The ephemeral range (`ip_local_port_range`, 32768–60999) is one pool for the whole
/// machine as far as wildcard binds go: a generator holding tens of thousands of ephemeral
/// ports, even on 127.0.0.2, leaves none for the proxy's own upstream sockets, which bind
/// 0.0.0.0:0 (seen: udplb's pool failing to open sockets with 36,000 generator flows).
pub fn source_port(options: &LoadOptions, flow: u32) -> u16 {
    let addresses =
        options.source_addresses.unwrap_or(options.flows.div_ceil(FLOWS_PER_ADDRESS_DEFAULT)).max(1);
    let per_address = options.flows.div_ceil(addresses).max(1);
    if source_address(options, flow) == Ipv4Addr::LOCALHOST {
        return 0;
    }
    u16::try_from(FIXED_PORT_BASE + flow % per_address).unwrap_or(0)
}

/// A non-blocking UDP socket bound to `source` and `port` (0: an ephemeral one; a fixed port
/// already taken falls back to an ephemeral one). Large buffers only for small flow counts:
/// with 100,000 sockets the defaults are what a real client has.
pub fn open(source: Ipv4Addr, port: u16, large_buffers: bool) -> Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    if large_buffers {
        crate::echo::set_buffers(&socket, 4 << 20);
    }
    let local: SocketAddr = (source, port).into();
    if port == 0 || socket.bind(&local.into()).is_err() {
        let local: SocketAddr = (source, 0).into();
        socket.bind(&local.into()).with_context(|| format!("bind {local}"))?;
    }
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
