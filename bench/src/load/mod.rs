//! The load generator: K flows (one UDP socket and source port each) towards one or more
//! targets, in one of four modes, with every reply checked against the flow that sent it.
//!
//! - closed loop (default): each flow keeps `window` datagrams outstanding;
//! - open loop (`--rate`): a fixed total rate, paced by a timer, spread over the flows;
//! - a fresh flow per request (`--new-flow-per-request`): `flows × window` requests in
//!   flight, each on a new socket closed when its reply arrives (DNS-like clients);
//! - hold (`--hold`): open K flows, then keep them alive, for the memory measurement.
//!
//! Time runs in three phases: a warm-up that is not counted, the measured window, and a grace
//! period in which nothing new is sent and late replies still count. A request counts as
//! measured when it was sent inside the window; `received_in_window` counts the replies that
//! arrived inside it, which is the work a proxy did while the driver watched its CPU time.

mod engine;
mod hold;
mod sockets;

use crate::histogram::Histogram;
use crate::wire::monotonic_ns;
use anyhow::{Result, bail};
use std::io::Write as _;
use std::net::SocketAddr;

pub use sockets::raise_nofile_for;

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "udplb-load",
    about = "UDP load generator: closed or open loop, per-flow reply checks, latency"
)]
pub struct LoadOptions {
    /// Where to send; with several, flow i goes to target i mod N.
    #[arg(long = "target", required = true)]
    pub targets: Vec<SocketAddr>,
    /// Flows, each its own socket and source port.
    #[arg(long, default_value_t = 64)]
    pub flows: u32,
    /// Closed loop: datagrams outstanding per flow. With --new-flow-per-request, requests in
    /// flight are flows × window.
    #[arg(long, default_value_t = 8)]
    pub window: u32,
    /// Open loop: datagrams per second in total, evenly paced (no window).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Datagram size in bytes (at least the 24-byte header).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up before the window, not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds after the window in which late replies still count.
    #[arg(long, default_value_t = 1.0)]
    pub grace: f64,
    /// A request (closed loop) or a flow's window unanswered for this long is given up.
    #[arg(long, default_value_t = 1.0)]
    pub loss_timeout: f64,
    /// Each request on a fresh socket, closed when its reply arrives or it times out.
    #[arg(long, conflicts_with_all = ["rate", "hold"])]
    pub new_flow_per_request: bool,
    /// Open the flows, then keep them alive until --duration ends or stdin closes.
    #[arg(long, conflicts_with = "rate")]
    pub hold: bool,
    /// Hold mode: seconds between keep-alive datagrams on each flow.
    #[arg(long, default_value_t = 3.0)]
    pub keepalive: f64,
    /// Hold mode: after binding, print `#bound` and wait for a line on stdin before sending.
    #[arg(long)]
    pub sync_stdin: bool,
    /// Generator threads; the flows (and the rate) are split between them.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Source addresses 127.0.0.1 .. 127.0.0.N to spread flows over (default: enough for at
    /// most 20,000 flows each, since one address has about 28,000 ephemeral ports).
    #[arg(long)]
    pub source_addresses: Option<u32>,
    /// Last octets of the first source address (127.0.0.N): several generator processes
    /// holding flows side by side each take their own addresses.
    #[arg(long, default_value_t = 1)]
    pub source_first: u32,
    /// Print `#measure-start` / `#measure-end` lines on stdout at the window's edges.
    #[arg(long)]
    pub markers: bool,
    /// Print the report as one JSON object instead of a human line.
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    pub mode: String,
    pub flows: u32,
    pub window: u32,
    pub size: usize,
    pub window_seconds: f64,
    /// Requests sent inside the measured window.
    pub sent: u64,
    /// Replies to those requests, received before the grace period ended.
    pub replies: u64,
    /// Replies that arrived inside the window (whenever their request left).
    pub received_in_window: u64,
    pub replies_per_second: f64,
    /// `sent - replies`.
    pub lost: u64,
    /// Replies whose header names another flow, or a request this flow never sent.
    pub misdelivered: u64,
    /// Replies from an address that is not the flow's target.
    pub wrong_source: u64,
    /// Replies without a valid header.
    pub malformed: u64,
    pub send_errors: u64,
    /// Requests given up after --loss-timeout (fresh-flow mode and closed-loop refills).
    pub timeouts: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// Hold mode: flows that got a reply, and flows that never did.
    pub established: u64,
    pub failed: u64,
}

/// Counters one worker thread keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub sent: u64,
    pub replies: u64,
    pub received_in_window: u64,
    pub misdelivered: u64,
    pub wrong_source: u64,
    pub malformed: u64,
    pub send_errors: u64,
    pub timeouts: u64,
    pub established: u64,
    pub failed: u64,
    pub latency_ns: Histogram,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.replies += other.replies;
        self.received_in_window += other.received_in_window;
        self.misdelivered += other.misdelivered;
        self.wrong_source += other.wrong_source;
        self.malformed += other.malformed;
        self.send_errors += other.send_errors;
        self.timeouts += other.timeouts;
        self.established += other.established;
        self.failed += other.failed;
        self.latency_ns.merge(&other.latency_ns);
    }
}

/// The phases of a run, in CLOCK_MONOTONIC nanoseconds.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Phases {
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub grace_end_ns: u64,
}

impl Phases {
    pub fn in_window(&self, at_ns: u64) -> bool {
        at_ns >= self.window_start_ns && at_ns < self.window_end_ns
    }
}

pub(crate) fn seconds_to_ns(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1e9) as u64
}

impl LoadOptions {
    fn mode(&self) -> &'static str {
        if self.hold {
            "hold"
        } else if self.new_flow_per_request {
            "new_flow_per_request"
        } else if self.rate.is_some() {
            "open_loop"
        } else {
            "closed_loop"
        }
    }

    fn check(&self) -> Result<()> {
        if self.size < crate::wire::HEADER_LEN || self.size > 65_507 {
            bail!("--size must be between {} and 65507", crate::wire::HEADER_LEN);
        }
        if self.flows == 0 || self.window == 0 || self.threads == 0 || self.threads > self.flows {
            bail!("--flows, --window and --threads must be at least 1, and threads at most flows");
        }
        if self.rate.is_some_and(|rate| !(rate > 0.0 && rate <= 10_000_000.0)) {
            bail!("--rate must be in (0, 10M]");
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds: every run is bounded");
        }
        for target in &self.targets {
            if !target.ip().is_loopback() {
                bail!("target {target} is not a loopback address: this benchmark only runs on loopback");
            }
        }
        Ok(())
    }
}

/// Runs the generator as the options say and returns its report.
pub fn run(options: &LoadOptions) -> Result<LoadReport> {
    options.check()?;
    sockets::raise_nofile_for(options);
    let tally = if options.hold { hold::run(options)? } else { run_threads(options)? };
    Ok(report(options, &tally))
}

fn run_threads(options: &LoadOptions) -> Result<Tally> {
    let start_ns = monotonic_ns();
    let window_start_ns = start_ns + seconds_to_ns(options.warmup);
    let window_end_ns = window_start_ns + seconds_to_ns(options.duration);
    let phases =
        Phases { window_start_ns, window_end_ns, grace_end_ns: window_end_ns + seconds_to_ns(options.grace) };
    let threads = options.threads;
    let mut handles = Vec::new();
    for thread in 0..threads {
        let first = options.flows as u64 * thread as u64 / threads as u64;
        let end = options.flows as u64 * (thread as u64 + 1) / threads as u64;
        let options = options.clone();
        handles.push(std::thread::spawn(move || {
            engine::run_worker(&options, first as u32..end as u32, threads, phases)
        }));
    }
    if options.markers {
        sleep_until(window_start_ns);
        println!("#measure-start");
        let _ = std::io::stdout().flush();
        sleep_until(window_end_ns);
        println!("#measure-end");
        let _ = std::io::stdout().flush();
    }
    let mut tally = Tally::default();
    for handle in handles {
        let worker = handle.join().map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        tally.merge(&worker);
    }
    Ok(tally)
}

pub(crate) fn sleep_until(deadline_ns: u64) {
    let now = monotonic_ns();
    if deadline_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
    }
}

fn report(options: &LoadOptions, tally: &Tally) -> LoadReport {
    let micros = |q: f64| tally.latency_ns.quantile(q).map(|ns| ns as f64 / 1000.0);
    LoadReport {
        mode: options.mode().to_string(),
        flows: options.flows,
        window: options.window,
        size: options.size,
        window_seconds: options.duration,
        sent: tally.sent,
        replies: tally.replies,
        received_in_window: tally.received_in_window,
        replies_per_second: tally.received_in_window as f64 / options.duration,
        lost: tally.sent.saturating_sub(tally.replies),
        misdelivered: tally.misdelivered,
        wrong_source: tally.wrong_source,
        malformed: tally.malformed,
        send_errors: tally.send_errors,
        timeouts: tally.timeouts,
        p50_us: micros(0.5),
        p99_us: micros(0.99),
        p999_us: micros(0.999),
        established: tally.established,
        failed: tally.failed,
    }
}

impl LoadReport {
    pub fn human_line(&self) -> String {
        let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        format!(
            "{}: {:.0} replies/s, sent {} replies {} lost {} misdelivered {} wrong-source {} malformed {} \
             send-errors {} timeouts {}, latency p50 {} us p99 {} us p999 {} us{}",
            self.mode,
            self.replies_per_second,
            self.sent,
            self.replies,
            self.lost,
            self.misdelivered,
            self.wrong_source,
            self.malformed,
            self.send_errors,
            self.timeouts,
            us(self.p50_us),
            us(self.p99_us),
            us(self.p999_us),
            if self.mode == "hold" {
                format!(", established {} failed {}", self.established, self.failed)
            } else {
                String::new()
            }
        )
    }
}
