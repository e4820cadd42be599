//! The fault suite's backend: a UDP server that answers every datagram of the suite with the
//! same bytes and its own name written in (`NAME_AT`), and a companion TCP port that accepts
//! and closes connections (what `health.mode = "tcp"` probes).
//!
//! SIGUSR1 makes it answer from another local port (`alt_port`), SIGUSR2 from the data port
//! again: a server that replies from another source port than the one it was sent to.

use super::{HEADER_LEN, MAGIC, NAME_AT};
use anyhow::{Context, Result};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The command line of `udplb-faults backend`.
#[derive(clap::Args)]
pub struct Options {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub udp: SocketAddr,
    #[arg(long)]
    pub tcp_port: u16,
    #[arg(long)]
    pub alt_port: u16,
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
}

pub fn run(options: Options) -> Result<()> {
    anyhow::ensure!(options.name.len() <= NAME_AT.len(), "a name is at most 8 bytes");
    let socket = UdpSocket::bind(options.udp).with_context(|| format!("bind udp {}", options.udp))?;
    let alternate_address = SocketAddr::new(options.udp.ip(), options.alt_port);
    let alternate =
        UdpSocket::bind(alternate_address).with_context(|| format!("bind udp {alternate_address}"))?;
    let tcp_address = SocketAddr::new(options.udp.ip(), options.tcp_port);
    let listener = TcpListener::bind(tcp_address).with_context(|| format!("bind tcp {tcp_address}"))?;
    let other_port = Arc::new(AtomicBool::new(false));
    let to_other = Arc::new(AtomicBool::new(false));
    let to_own = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, to_other.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGUSR2, to_own.clone())?;

    std::thread::spawn(move || {
        // Accept and close: a connect that completes is all a TCP probe asks.
        for stream in listener.incoming() {
            drop(stream);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(options.max_seconds);
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut name = [0u8; 8];
    name[..options.name.len()].copy_from_slice(options.name.as_bytes());
    let mut buffer = vec![0u8; 65_536];
    eprintln!(
        "faults-backend {}: udp {} (alternate source port {}), tcp {}: ready",
        options.name, options.udp, options.alt_port, tcp_address
    );
    while Instant::now() < deadline {
        if to_other.swap(false, Ordering::Relaxed) {
            other_port.store(true, Ordering::Relaxed);
            eprintln!("faults-backend {}: answering from port {}", options.name, options.alt_port);
        }
        if to_own.swap(false, Ordering::Relaxed) {
            other_port.store(false, Ordering::Relaxed);
            eprintln!("faults-backend {}: answering from port {}", options.name, options.udp.port());
        }
        let (length, peer) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => return Err(error).context("recv_from"),
        };
        let datagram = &mut buffer[..length];
        if length < HEADER_LEN || datagram[0..4] != MAGIC.to_le_bytes() {
            continue; // not the suite's: no answer
        }
        datagram[NAME_AT].copy_from_slice(&name);
        let from = if other_port.load(Ordering::Relaxed) { &alternate } else { &socket };
        // A reply that cannot be sent is dropped, as a real server would.
        let _ = from.send_to(datagram, peer);
    }
    eprintln!("faults-backend {}: {} s bound reached, exiting", options.name, options.max_seconds);
    Ok(())
}
