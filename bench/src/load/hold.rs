//! Hold mode, for the memory measurement: open K flows, send one datagram on each and wait for
//! its reply, then keep every flow alive with a datagram every `--keepalive` seconds (shorter
//! than the proxies' idle timeout) until `--duration` ends or stdin closes.
//!
//! Protocol with the driver, on stdout: `#bound K` once the sockets exist (then, with
//! `--sync-stdin`, it waits for a line on stdin, so the driver can read /proc with the
//! generator's own sockets already counted), and `#established N failed M` once every flow has
//! its first reply or has given up after three tries.

use super::engine::{Flow, Worker};
use super::{LoadOptions, Phases, Tally, seconds_to_ns};
use crate::wire::monotonic_ns;
use anyhow::Result;
use mio::Events;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// First datagrams in flight at once while establishing, so a proxy's receive buffer is not
/// flooded by 100,000 datagrams at once.
const ESTABLISH_IN_FLIGHT_MAX: usize = 1024;
const ESTABLISH_TRIES_MAX: u8 = 3;
const TICK: Duration = Duration::from_millis(10);

pub(super) fn run(options: &LoadOptions) -> Result<Tally> {
    let start_ns = monotonic_ns();
    let end_ns = start_ns + seconds_to_ns(options.duration);
    // Everything counts: the hold has no warm-up and no measured window of its own.
    let phases = Phases { window_start_ns: 0, window_end_ns: u64::MAX, grace_end_ns: u64::MAX };
    let mut worker = Worker::new(options, phases)?;
    let mut flows = Vec::with_capacity(options.flows as usize);
    for index in 0..options.flows {
        flows.push(worker.open_flow(index, index as usize, false)?);
    }
    say(&format!("#bound {}", flows.len()));
    let stop = Arc::new(AtomicBool::new(false));
    if options.sync_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Any further line, or the end of stdin, stops the hold.
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            stop.store(true, Ordering::Relaxed);
        });
    }
    establish(&mut worker, &mut flows, end_ns, &stop)?;
    say(&format!("#established {} failed {}", worker.tally.established, worker.tally.failed));
    keep_alive(&mut worker, &mut flows, end_ns, &stop, options.keepalive)?;
    Ok(std::mem::take(&mut worker.tally))
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn establish(worker: &mut Worker<'_>, flows: &mut [Flow], end_ns: u64, stop: &AtomicBool) -> Result<()> {
    let mut tries = vec![0u8; flows.len()];
    let mut sent_at_ns = vec![0u64; flows.len()];
    let mut waiting: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut events = Events::with_capacity(1024);
    while next < flows.len() || !waiting.is_empty() {
        if monotonic_ns() >= end_ns || stop.load(Ordering::Relaxed) {
            break;
        }
        while waiting.len() < ESTABLISH_IN_FLIGHT_MAX && next < flows.len() {
            worker.send_on(&mut flows[next]);
            tries[next] = 1;
            sent_at_ns[next] = monotonic_ns();
            waiting.push(next);
            next += 1;
        }
        worker.poll.poll(&mut events, Some(TICK))?;
        for event in events.iter() {
            let flow = event.token().0;
            let first_reply = flows[flow].outstanding > 0;
            if worker.drain_flow(&mut flows[flow], false) > 0 && first_reply && tries[flow] > 0 {
                tries[flow] = 0;
                flows[flow].outstanding = 0;
                worker.tally.established += 1;
            }
        }
        let now_ns = monotonic_ns();
        waiting.retain(|&flow| {
            if tries[flow] == 0 {
                return false;
            }
            if now_ns - sent_at_ns[flow] < 1_000_000_000 {
                return true;
            }
            if tries[flow] >= ESTABLISH_TRIES_MAX {
                worker.tally.failed += 1;
                tries[flow] = 0;
                return false;
            }
            tries[flow] += 1;
            sent_at_ns[flow] = now_ns;
            worker.send_on(&mut flows[flow]);
            true
        });
    }
    worker.tally.failed += (flows.len() - next) as u64 + waiting.len() as u64;
    Ok(())
}

fn keep_alive(
    worker: &mut Worker<'_>,
    flows: &mut [Flow],
    end_ns: u64,
    stop: &AtomicBool,
    keepalive_seconds: f64,
) -> Result<()> {
    let mut events = Events::with_capacity(1024);
    let per_tick =
        ((flows.len() as f64 * TICK.as_secs_f64() / keepalive_seconds.max(0.1)).ceil() as usize).max(1);
    let mut cursor = 0;
    while monotonic_ns() < end_ns && !stop.load(Ordering::Relaxed) {
        for _ in 0..per_tick.min(flows.len()) {
            worker.send_on(&mut flows[cursor]);
            cursor = (cursor + 1) % flows.len();
        }
        worker.poll.poll(&mut events, Some(TICK))?;
        for event in events.iter() {
            worker.drain_flow(&mut flows[event.token().0], false);
        }
    }
    Ok(())
}
