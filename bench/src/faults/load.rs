//! The fault suite's client: `sockets` long-lived UDP sockets sending `rate` requests per second
//! in total, open loop (request k leaves at start + k / rate, on socket k mod `sockets`, whatever
//! happened to the ones before). Each request carries its socket, its sequence number and its
//! send time; each reply names the backend that wrote it. A request is answered if a reply
//! arrives within `loss_timeout`; otherwise it is lost (a later reply is counted as late).
//!
//! Beside the load, a thread scrapes udplb's Prometheus endpoint every `scrape_interval` and
//! records, per backend, the datagrams udplb sent to it and received from it, and whether it
//! was eligible: the share of new requests each backend got, as udplb saw it.
//!
//! Output: `records` (CSV, one line per request: `sequence,socket,sent_us,backend,rtt_us,
//! replies,late`, backend `-` when unanswered in time) and `scrapes` (JSON lines).

use super::{HEADER_LEN, Request, realtime_us};
use anyhow::{Context, Result};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Options {
    pub target: SocketAddr,
    pub sockets: usize,
    pub rate: u64,
    pub seconds: u64,
    pub size: usize,
    pub loss_timeout: Duration,
    pub metrics: Option<SocketAddr>,
    pub scrape_interval: Duration,
    pub records: PathBuf,
    pub scrapes: PathBuf,
}

struct Record {
    sent_us: u64,
    backend: Option<String>,
    rtt_us: u64,
    replies: u32,
    late: bool,
}

pub fn run(options: Options) -> Result<()> {
    anyhow::ensure!(options.size >= HEADER_LEN, "--size is at least {HEADER_LEN}");
    anyhow::ensure!(options.sockets > 0 && options.rate > 0, "--sockets and --rate are positive");
    anyhow::ensure!(options.seconds <= 3600, "--seconds is at most 3600");
    let total = (options.rate * options.seconds) as usize;
    let unspecified: SocketAddr = match options.target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    };
    let mut poll = Poll::new()?;
    let mut sockets = Vec::with_capacity(options.sockets);
    for index in 0..options.sockets {
        let mut socket = UdpSocket::bind(unspecified)?;
        // Connected: the kernel passes only datagrams from the listener's address.
        socket.connect(options.target).with_context(|| format!("connect {}", options.target))?;
        poll.registry().register(&mut socket, Token(index), Interest::READABLE)?;
        sockets.push(socket);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let scraper = options.metrics.map(|address| {
        let stop = stop.clone();
        let path = options.scrapes.clone();
        let interval = options.scrape_interval;
        std::thread::spawn(move || scrape_loop(address, interval, &path, &stop))
    });

    let mut records: Vec<Record> = Vec::with_capacity(total);
    let mut buffer = vec![0u8; options.size.max(65_536)];
    let mut events = Events::with_capacity(128);
    let period_ns = 1_000_000_000 / options.rate;
    let started = Instant::now();
    let send_end = started + Duration::from_secs(options.seconds);
    let receive_end = send_end + options.loss_timeout + Duration::from_millis(200);
    eprintln!("faults-load: start_us={} requests={total}", realtime_us());
    loop {
        let now = Instant::now();
        // Send everything due (open loop: a late wake-up sends the backlog at once).
        while records.len() < total {
            let due = started + Duration::from_nanos(records.len() as u64 * period_ns);
            if due > now {
                break;
            }
            let sequence = records.len() as u64;
            let socket = (sequence % options.sockets as u64) as u32;
            let sent_us = realtime_us();
            Request { socket, sequence, sent_us }.emit(&mut buffer[..options.size]);
            // A failed send is a lost request like any other.
            let _ = sockets[socket as usize].send(&buffer[..options.size]);
            records.push(Record { sent_us, backend: None, rtt_us: 0, replies: 0, late: false });
        }
        let now = Instant::now();
        if now >= receive_end {
            break;
        }
        let wake = if records.len() < total {
            started + Duration::from_nanos(records.len() as u64 * period_ns)
        } else {
            receive_end
        };
        let timeout = wake.saturating_duration_since(now);
        if let Err(error) = poll.poll(&mut events, Some(timeout)) {
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error).context("poll");
            }
        }
        for event in events.iter() {
            let socket = &sockets[event.token().0];
            // Bounded: a socket that keeps returning errors cannot hold the loop.
            for _ in 0..1024 {
                let length = match socket.recv(&mut buffer) {
                    Ok(length) => length,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ECONNREFUSED from an ICMP error on the connected socket, and the like.
                    Err(_) => continue,
                };
                let arrived_us = realtime_us();
                let Some((request, backend)) = Request::parse_reply(&buffer[..length]) else {
                    continue;
                };
                let Some(record) = records.get_mut(request.sequence as usize) else { continue };
                if record.sent_us != request.sent_us || request.socket as usize != event.token().0 {
                    continue; // not ours (misdelivered): never counts as an answer
                }
                record.replies += 1;
                let rtt_us = arrived_us.saturating_sub(record.sent_us);
                if record.backend.is_none() && !record.late {
                    if rtt_us <= options.loss_timeout.as_micros() as u64 {
                        record.backend = Some(backend);
                        record.rtt_us = rtt_us;
                    } else {
                        record.late = true;
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        scraper.join().expect("scraper thread")?;
    }

    let mut out = std::io::BufWriter::new(std::fs::File::create(&options.records)?);
    writeln!(out, "sequence,socket,sent_us,backend,rtt_us,replies,late")?;
    let (mut answered, mut by) = (0usize, BTreeMap::<&str, usize>::new());
    for (sequence, record) in records.iter().enumerate() {
        let backend = record.backend.as_deref().unwrap_or("-");
        if record.backend.is_some() {
            answered += 1;
            *by.entry(backend).or_default() += 1;
        }
        writeln!(
            out,
            "{sequence},{},{},{backend},{},{},{}",
            sequence % options.sockets,
            record.sent_us,
            record.rtt_us,
            record.replies,
            u8::from(record.late)
        )?;
    }
    out.flush()?;
    eprintln!(
        "faults-load: sent {} answered {answered} lost {} by {by:?}",
        records.len(),
        records.len() - answered
    );
    Ok(())
}

/// Scrapes until `stop`, one JSON line per scrape:
/// `{"t_us":…,"to":{"b1":N,…},"from":{…},"eligible":{…}}`.
fn scrape_loop(address: SocketAddr, interval: Duration, path: &PathBuf, stop: &AtomicBool) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match scrape(address) {
            Ok(text) => {
                let t_us = realtime_us();
                let line = serde_json::json!({
                    "t_us": t_us,
                    "to": backend_metric(&text, "udplb_backend_datagrams_total", Some("to_backend")),
                    "from": backend_metric(&text, "udplb_backend_datagrams_total", Some("from_backend")),
                    "eligible": backend_metric(&text, "udplb_backend_eligible", None),
                });
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            Err(error) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("faults-load: scrape {address}: {error:#}");
                }
            }
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
    Ok(())
}

fn scrape(address: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(1000)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: udplb\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    anyhow::ensure!(response.starts_with("HTTP/1.") && response.contains(" 200 "), "not a 200");
    Ok(body.to_string())
}

/// `backend -> value` for one metric, summed over clusters, with `direction` when given.
pub fn backend_metric(text: &str, name: &str, direction: Option<&str>) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some(rest) = rest.strip_prefix('{') else { continue };
        let Some((labels, value)) = rest.split_once("} ") else { continue };
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_string())
            })
        };
        if direction.is_some() && label("direction").as_deref() != direction {
            continue;
        }
        let (Some(backend), Ok(value)) = (label("backend"), value.trim().parse::<f64>()) else { continue };
        *values.entry(backend).or_insert(0.0) += value;
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_backend_metric_by_direction() {
        let text = "udplb_backend_datagrams_total{cluster=\"c\",backend=\"b1\",direction=\"to_backend\"} 7\n\
                    udplb_backend_datagrams_total{cluster=\"c\",backend=\"b1\",direction=\"from_backend\"} 5\n\
                    udplb_backend_datagrams_total{cluster=\"c\",backend=\"b2\",direction=\"to_backend\"} 3\n\
                    udplb_backend_eligible{cluster=\"c\",backend=\"b2\"} 0\n";
        let to = backend_metric(text, "udplb_backend_datagrams_total", Some("to_backend"));
        assert_eq!(to.get("b1"), Some(&7.0));
        assert_eq!(to.get("b2"), Some(&3.0));
        let eligible = backend_metric(text, "udplb_backend_eligible", None);
        assert_eq!(eligible.get("b2"), Some(&0.0));
        assert_eq!(eligible.len(), 1);
    }
}
