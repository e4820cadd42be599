//! `udplb-echo`: UDP echo backends, every `--listen` address served by one thread (or split
//! over `--threads`). Runs until killed, or until `--max-seconds` as a bound.

use anyhow::Result;
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "udplb-echo", about = "UDP echo backends: every datagram goes back to its sender")]
struct Options {
    /// An address to echo on; repeat for several backends in one process.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// Socket buffer size in bytes (forced past the sysctl caps when root).
    #[arg(long, default_value_t = 8 << 20)]
    buffer_bytes: usize,
    /// Threads; the addresses are dealt out to them in turn.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Exit after this many seconds in any case.
    #[arg(long, default_value_t = 7200)]
    max_seconds: u64,
}

fn main() -> Result<()> {
    let options = Options::parse();
    let threads = options.threads.clamp(1, options.listen.len());
    let mut shares: Vec<Vec<std::net::UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, address) in options.listen.iter().enumerate() {
        shares[index % threads].push(udplb_bench::echo::bind_udp(*address, options.buffer_bytes)?);
    }
    for sockets in shares {
        std::thread::spawn(move || {
            if let Err(error) = udplb_bench::echo::serve(sockets) {
                eprintln!("udplb-echo: {error:#}");
                std::process::exit(1);
            }
        });
    }
    eprintln!("udplb-echo: echoing on {:?}", options.listen);
    std::thread::sleep(Duration::from_secs(options.max_seconds));
    eprintln!("udplb-echo: {} s bound reached, exiting", options.max_seconds);
    Ok(())
}
