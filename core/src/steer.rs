//! Which worker serves a client: the listener's affinity key, hashed, modulo the number of
//! workers.
//!
//! With `process.workers = N` every worker has its own socket in each listener's SO_REUSEPORT
//! group and its own flow table. Left to itself the kernel picks a socket by a hash of the
//! datagram's 4-tuple, so the sockets of one client host (other source ports) land on
//! different workers, each of which opens a flow of its own — and `affinity =
//! "client_address"`, which promises one flow and one backend per client host, breaks. So the
//! shell attaches [`program`] to each group: a classic BPF program the kernel runs on every
//! datagram for the group, returning the index of the socket to wake. It hashes exactly the
//! affinity key — the source address, plus the source port for `client_address_port` — so a
//! client always reaches the same worker. The simulator models the same choice with
//! [`worker_of`]; the tests run [`program`] in an interpreter of their own and compare the two
//! over many addresses, and a loopback test checks the kernel's answer.
//!
//! An index names a socket in the order the group's sockets were bound, not a worker number:
//! which worker has index 0 does not matter, only that a key always maps to the same socket.
//! While the group has fewer sockets than the program's `N` (workers still starting), an
//! index past the last makes the kernel fall back to its own hash.
//!
//! The key, from the IP header the program reads at the kernel's network-header offset:
//! - IPv4: the source address as a big-endian `u32` (an IPv4 client of a dual-stack `[::]`
//!   listener is read from its IPv4 header, as [`worker_of`] reads an IPv4-mapped address);
//! - IPv6: the exclusive or of the source address's four 32-bit words;
//! - with the port: that, exclusive-or the UDP source port (found after the IPv4 header's
//!   own length, or right after the 40-byte IPv6 header: a datagram with IPv6 extension
//!   headers is steered by whatever two bytes sit there, still the same for every datagram
//!   of a client that sends the same headers).
//!
//! The mix is two multiply-xorshift rounds in 32-bit arithmetic (all the program has).

use std::net::{IpAddr, SocketAddr};

/// One classic BPF instruction, as `struct sock_filter` lays it out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Classic BPF opcodes (linux/filter.h), those the program uses.
pub mod op {
    pub const LD_W_ABS: u16 = 0x20;
    pub const LD_H_ABS: u16 = 0x28;
    pub const LD_B_ABS: u16 = 0x30;
    pub const LD_H_IND: u16 = 0x48;
    pub const LD_MEM: u16 = 0x60;
    pub const LDX_B_MSH: u16 = 0xb1;
    pub const ST: u16 = 0x02;
    pub const ALU_MUL_K: u16 = 0x24;
    pub const ALU_RSH_K: u16 = 0x74;
    pub const ALU_MOD_K: u16 = 0x94;
    pub const ALU_XOR_X: u16 = 0xac;
    pub const JMP_JA: u16 = 0x05;
    pub const JMP_JEQ_K: u16 = 0x15;
    pub const RET_A: u16 = 0x16;
    pub const MISC_TAX: u16 = 0x07;
    /// `SKF_NET_OFF`: offsets from here on are from the network (IP) header.
    pub const NET: u32 = 0xfff0_0000;
}

const MIX_1: u32 = 0x9e37_79b1;
const MIX_2: u32 = 0x85eb_ca6b;

/// The affinity key of a datagram from `source`: its address (an IPv4-mapped IPv6 address as
/// the IPv4 one), and its port when `with_port`.
pub fn key(source: SocketAddr, with_port: bool) -> u32 {
    let address = match source.ip().to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let words = u128::from(v6);
            (words >> 96) as u32 ^ (words >> 64) as u32 ^ (words >> 32) as u32 ^ words as u32
        }
    };
    if with_port { address ^ u32::from(source.port()) } else { address }
}

/// Whether a listener with this affinity is steered by port too: unless it keys flows by
/// the client's address alone.
pub fn by_port(affinity: crate::config::Affinity) -> bool {
    affinity != crate::config::Affinity::ClientAddress
}

/// The two rounds of mixing the program applies to a key.
pub fn mix(key: u32) -> u32 {
    let mut h = key.wrapping_mul(MIX_1);
    h ^= h >> 16;
    h = h.wrapping_mul(MIX_2);
    h ^ (h >> 13)
}

/// The socket index (of `workers`) the program picks for a datagram from `source`.
pub fn worker_of(source: SocketAddr, with_port: bool, workers: u32) -> u32 {
    mix(key(source, with_port)) % workers.max(1)
}

/// The program for a group of `workers` sockets whose listener keys flows by address alone
/// (`with_port = false`) or by address and port.
pub fn program(with_port: bool, workers: u32) -> Vec<Instruction> {
    let i = |code: u16, k: u32| Instruction { code, jt: 0, jf: 0, k };
    let mut v4 = vec![i(op::LD_W_ABS, op::NET + 12)];
    if with_port {
        v4.extend([
            i(op::ST, 0),
            // X = the IPv4 header's length: 4 * (first byte & 0xf).
            i(op::LDX_B_MSH, op::NET),
            // The UDP source port, the first half-word after the IPv4 header.
            i(op::LD_H_IND, op::NET),
            i(op::MISC_TAX, 0),
            i(op::LD_MEM, 0),
            i(op::ALU_XOR_X, 0),
        ]);
    }
    let mut v6 = vec![i(op::LD_W_ABS, op::NET + 8)];
    for word in [12, 16, 20] {
        v6.extend([i(op::MISC_TAX, 0), i(op::LD_W_ABS, op::NET + word), i(op::ALU_XOR_X, 0)]);
    }
    if with_port {
        v6.extend([
            i(op::ST, 0),
            i(op::LD_H_ABS, op::NET + 40),
            i(op::MISC_TAX, 0),
            i(op::LD_MEM, 0),
            i(op::ALU_XOR_X, 0),
        ]);
    }
    // The IPv4 path jumps over the IPv6 one to the mix.
    v4.push(i(op::JMP_JA, v6.len() as u32));
    let mut program = vec![
        i(op::LD_B_ABS, op::NET),
        i(op::ALU_RSH_K, 4),
        // Version 6: skip the IPv4 path.
        Instruction { code: op::JMP_JEQ_K, jt: v4.len() as u8, jf: 0, k: 6 },
    ];
    program.extend(v4);
    program.extend(v6);
    program.extend([
        i(op::ALU_MUL_K, MIX_1),
        i(op::MISC_TAX, 0),
        i(op::ALU_RSH_K, 16),
        i(op::ALU_XOR_X, 0),
        i(op::ALU_MUL_K, MIX_2),
        i(op::MISC_TAX, 0),
        i(op::ALU_RSH_K, 13),
        i(op::ALU_XOR_X, 0),
        i(op::ALU_MOD_K, workers.max(1)),
        i(op::RET_A, 0),
    ]);
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program as the kernel would over a datagram whose IP header (and what follows)
    /// is `packet`: only the instructions [`program`] uses, offsets from `op::NET` only.
    fn run(program: &[Instruction], packet: &[u8]) -> u32 {
        let (mut a, mut x, mut memory, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
        let at = |offset: u32, width: usize| -> u32 {
            let start = offset.checked_sub(op::NET).expect("an offset from the network header") as usize;
            packet[start..start + width].iter().fold(0, |value, byte| value << 8 | u32::from(*byte))
        };
        loop {
            let Instruction { code, jt, jf, k } = program[pc];
            pc += 1;
            match code {
                op::LD_W_ABS => a = at(k, 4),
                op::LD_H_ABS => a = at(k, 2),
                op::LD_B_ABS => a = at(k, 1),
                op::LD_H_IND => a = at(k.wrapping_add(x), 2),
                op::LD_MEM => a = memory[k as usize],
                op::LDX_B_MSH => x = 4 * (at(k, 1) & 0xf),
                op::ST => memory[k as usize] = a,
                op::ALU_MUL_K => a = a.wrapping_mul(k),
                op::ALU_RSH_K => a >>= k,
                op::ALU_MOD_K => a %= k,
                op::ALU_XOR_X => a ^= x,
                op::JMP_JA => pc += k as usize,
                op::JMP_JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                op::MISC_TAX => x = a,
                op::RET_A => return a,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// An IPv4 header (with `options` words of options) and a UDP header from `source`.
    fn ipv4(source: SocketAddr, options: usize) -> Vec<u8> {
        let IpAddr::V4(v4) = source.ip() else { unreachable!() };
        let mut packet = vec![0x45 + options as u8, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        packet.extend(v4.octets());
        packet.extend([127, 0, 0, 1]);
        packet.extend(std::iter::repeat_n(1u8, 4 * options));
        packet.extend(source.port().to_be_bytes());
        packet.extend([0, 53, 0, 8, 0, 0]);
        packet
    }

    fn ipv6(source: SocketAddr) -> Vec<u8> {
        let IpAddr::V6(v6) = source.ip() else { unreachable!() };
        let mut packet = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        packet.extend(v6.octets());
        packet.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        packet.extend(source.port().to_be_bytes());
        packet.extend([0, 53, 0, 8, 0, 0]);
        packet
    }

    /// SplitMix64, for addresses spread over the whole space.
    fn sources(count: usize) -> impl Iterator<Item = u64> {
        let mut state = 7u64;
        (0..count).map(move |_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ (z >> 27)
        })
    }

    #[test]
    fn the_program_picks_the_worker_worker_of_picks() {
        for workers in [1, 2, 3, 4, 7] {
            for with_port in [false, true] {
                let program = program(with_port, workers);
                for bits in sources(2_000) {
                    let port = (bits >> 48) as u16;
                    let v4 = SocketAddr::new(IpAddr::from((bits as u32).to_be_bytes()), port);
                    let expected = worker_of(v4, with_port, workers);
                    assert_eq!(run(&program, &ipv4(v4, 0)), expected, "{v4} of {workers}");
                    assert_eq!(run(&program, &ipv4(v4, 2)), expected, "{v4} with options");
                    let wide = u128::from(bits) << 64 | u128::from(bits.rotate_left(17));
                    let v6 = SocketAddr::new(IpAddr::from(wide.to_be_bytes()), port);
                    assert_eq!(run(&program, &ipv6(v6)), worker_of(v6, with_port, workers), "{v6}");
                }
            }
        }
    }

    #[test]
    fn one_host_is_one_worker_by_address_and_its_sockets_spread_by_port() {
        let host = |port| SocketAddr::from(([127, 0, 0, 9], port));
        let by_address: std::collections::BTreeSet<u32> =
            (1024..2048).map(|port| worker_of(host(port), false, 4)).collect();
        assert_eq!(by_address.len(), 1);
        let by_port: std::collections::BTreeSet<u32> =
            (1024..2048).map(|port| worker_of(host(port), true, 4)).collect();
        assert_eq!(by_port.len(), 4);
        // An IPv4-mapped source is its IPv4 host.
        let mapped = SocketAddr::new(IpAddr::V6(std::net::Ipv4Addr::new(127, 0, 0, 9).to_ipv6_mapped()), 5);
        assert_eq!(worker_of(mapped, true, 4), worker_of(host(5), true, 4));
    }

    #[test]
    fn hosts_spread_evenly_over_workers() {
        // 127.0.0.1-254 over 2 and 4 workers: no worker gets more than 1.5 times its share.
        for workers in [2u32, 4] {
            let mut counts = vec![0u32; workers as usize];
            for last in 1..=254u8 {
                counts[worker_of(SocketAddr::from(([127, 0, 0, last], 1)), false, workers) as usize] += 1;
            }
            let fair = 254 / workers;
            assert!(counts.iter().all(|c| *c * 2 <= fair * 3), "{counts:?}");
        }
    }
}
