//! The memory run: each proxy holds many established flows (100,000 by default), and the
//! growth of its resident memory and of the kernel's UDP sockets is divided by the flows that
//! were established. Process memory and kernel memory are reported separately: a proxy with
//! one socket per flow keeps much of its per-flow cost in the kernel.
//!
//! The generators bind all their sockets first and wait; the baseline is read then, so their
//! own sockets are not counted against the proxy. One generator process holds at most
//! `FLOWS_PER_GENERATOR_MAX` flows (a process's descriptor limit may be as low as 20,000 where
//! the hard limit cannot be raised), each on its own source address.

use super::CompareOptions;
use super::targets::{Environment, Running, TargetKind};
use crate::load::LoadReport;
use crate::process::{Guarded, Watchdog};
use crate::procfs::{self, UdpSockstat};
use crate::proxy_config::Teardown;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Lines, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const FLOWS_PER_GENERATOR_MAX: u32 = 18_000;
/// Seconds a hold may last at most; the driver stops it much earlier.
const HOLD_BOUND_SECONDS: u64 = 240;

/// What /proc says at one moment.
#[derive(Copy, Clone, Debug, Default, serde::Serialize)]
struct Snapshot {
    rss_bytes: u64,
    fds: u64,
    udp: UdpSockstat,
    slab_bytes: u64,
}

impl Snapshot {
    fn take(pid: u32) -> Result<Snapshot> {
        Ok(Snapshot {
            rss_bytes: procfs::rss_bytes(pid)?,
            fds: procfs::fd_count(pid)?,
            udp: UdpSockstat::read()?,
            slab_bytes: procfs::slab_bytes()?,
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
struct MemoryRow {
    target: String,
    flows_asked: u32,
    established: u64,
    failed: u64,
    misdelivered: u64,
    before: Snapshot,
    after: Snapshot,
    note: String,
}

impl MemoryRow {
    /// Growth per established flow of a quantity read before and after.
    fn per_flow(&self, before: u64, after: u64) -> Option<f64> {
        (self.established > 0).then(|| (after as f64 - before as f64) / self.established as f64)
    }

    fn line(&self) -> String {
        let page = procfs::page_size_bytes();
        let show = |value: Option<f64>, decimals: usize| {
            value.map_or("–".to_string(), |v| format!("{v:.decimals$}"))
        };
        let (b, a) = (&self.before, &self.after);
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.target,
            self.flows_asked,
            self.established,
            self.failed,
            show(self.per_flow(b.rss_bytes, a.rss_bytes), 0),
            show(self.per_flow(b.fds, a.fds), 2),
            show(self.per_flow(b.udp.sockets_in_use, a.udp.sockets_in_use), 2),
            show(self.per_flow(b.udp.memory_pages * page, a.udp.memory_pages * page), 0),
            show(self.per_flow(b.slab_bytes, a.slab_bytes), 0),
        )
    }
}

pub fn run(
    options: &CompareOptions,
    environment: &Environment,
    targets: &[TargetKind],
    bin_dir: &Path,
) -> Result<()> {
    let mut rows = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        if matches!(target, TargetKind::Direct) {
            continue;
        }
        let listen = SocketAddr::from(([127, 0, 0, 1], options.base_port + 100 + index as u16));
        let running = target.start(environment, Teardown::Idle, listen)?;
        let row = hold_flows(options.memory_flows, &running, listen, bin_dir);
        running.stop();
        let row = row?;
        println!("  {}: established {} failed {} {}", row.target, row.established, row.failed, row.note);
        rows.push(row);
    }
    println!(
        "\nMemory per established flow ({} flows asked, kept alive every 3 s). Process: the",
        options.memory_flows
    );
    println!("proxy's VmRSS growth (nginx: its worker). Kernel: growth of /proc/net/sockstat's UDP `inuse`");
    println!("and `mem` (buffered data), and of /proc/meminfo `Slab` (socket structures; system-wide).\n");
    println!(
        "| target | flows asked | established | failed | RSS bytes/flow | fds/flow | UDP sockets/flow | UDP buffer bytes/flow | slab bytes/flow |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{}", row.line());
    }
    for row in rows.iter().filter(|row| !row.note.is_empty()) {
        println!("\n{}: {}", row.target, row.note);
    }
    super::write_json(&options.out, &serde_json::json!({ "memory": rows }))?;
    println!("\nraw results: {}", options.out.display());
    let misdelivered: u64 = rows.iter().map(|row| row.misdelivered).sum();
    if misdelivered > 0 {
        bail!("{misdelivered} replies misdelivered during the memory run");
    }
    Ok(())
}

struct Generator {
    process: Guarded,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    _watchdog: Watchdog,
}

impl Generator {
    /// Reads lines until one starts with `prefix`; returns it.
    fn expect(&mut self, prefix: &str) -> Result<String> {
        for line in self.lines.by_ref() {
            let line = line?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
        bail!("a hold generator ended before printing {prefix:?}")
    }
}

fn hold_flows(flows: u32, target: &Running, listen: SocketAddr, bin_dir: &Path) -> Result<MemoryRow> {
    let pid = target.memory_pid().context("the direct path has no memory to measure")?;
    let mut generators = Vec::new();
    let mut remaining = flows;
    let mut source = 10;
    while remaining > 0 {
        let share = remaining.min(FLOWS_PER_GENERATOR_MAX);
        remaining -= share;
        let mut command = Command::new(bin_dir.join("udplb-load"));
        command
            .args(["--target", &listen.to_string(), "--hold", "--sync-stdin", "--json"])
            .args([
                "--flows",
                &share.to_string(),
                "--source-addresses",
                "1",
                "--source-first",
                &source.to_string(),
            ])
            .args(["--duration", &HOLD_BOUND_SECONDS.to_string(), "--keepalive", "3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        source += 1;
        let mut process = Guarded::spawn("udplb-load --hold", &mut command)?;
        let watchdog = Watchdog::arm(process.pid(), Duration::from_secs(HOLD_BOUND_SECONDS + 30));
        let stdin = process.child_mut().stdin.take();
        let stdout = process.child_mut().stdout.take().context("stdout")?;
        generators.push(Generator {
            process,
            stdin,
            lines: BufReader::new(stdout).lines(),
            _watchdog: watchdog,
        });
    }
    for generator in &mut generators {
        generator.expect("#bound")?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = Snapshot::take(pid)?;
    for generator in &mut generators {
        let stdin = generator.stdin.as_mut().context("stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    let (mut established, mut failed) = (0, 0);
    for generator in &mut generators {
        let line = generator.expect("#established")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        established += words.get(1).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        failed += words.get(3).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
    }
    // Let the first keep-alive round pass, so the figures are those of a steady hold.
    std::thread::sleep(Duration::from_secs(4));
    let after = Snapshot::take(pid)?;
    let mut misdelivered = 0;
    for generator in &mut generators {
        generator.stdin = None;
        let report = generator.expect("{")?;
        let report: LoadReport = serde_json::from_str(&report)?;
        misdelivered += report.misdelivered + report.wrong_source;
        generator.process.wait_bounded(Duration::from_secs(10))?;
    }
    let note = if failed > 0 {
        let log = target.log_tail();
        let last = log.lines().last().unwrap_or("(nothing in its log)");
        format!("{failed} of {flows} flows never got a reply; last log line: {last}")
    } else {
        String::new()
    };
    Ok(MemoryRow {
        target: target.name.clone(),
        flows_asked: flows,
        established,
        failed,
        misdelivered,
        before,
        after,
        note,
    })
}
