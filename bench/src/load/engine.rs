//! One generator thread: closed loop, open loop, or a fresh flow per request, over its share
//! of the flows, on one epoll set (mio). Replies are checked here: the header must name this
//! flow and a request it sent, and the source must be the flow's target.

use super::{Phases, Tally, seconds_to_ns, sockets};
use crate::wire::{Header, monotonic_ns};
use anyhow::{Context, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::LoadOptions;

const TIMER: Token = Token(usize::MAX - 1);
/// How often timeouts are looked for.
const SCAN_INTERVAL_NS: u64 = 100_000_000;
/// Flows up to this many get large socket buffers.
const LARGE_BUFFER_FLOWS_MAX: u32 = 4096;

/// A persistent flow of the closed- and open-loop modes.
pub(super) struct Flow {
    socket: mio::net::UdpSocket,
    index: u32,
    target: SocketAddr,
    next_sequence: u64,
    pub(super) outstanding: u32,
    last_progress_ns: u64,
}

/// One request in flight on its own socket (fresh-flow mode).
struct Slot {
    socket: Option<mio::net::UdpSocket>,
    index: u32,
    target: SocketAddr,
    sequence: u64,
    sent_ns: u64,
}

/// What a received datagram turned out to be.
enum Verdict {
    Reply { sent_ns: u64 },
    Misdelivered,
    WrongSource,
    Malformed,
}

pub(super) struct Worker<'a> {
    options: &'a LoadOptions,
    phases: Phases,
    pub(super) tally: Tally,
    payload: Vec<u8>,
    receive: Vec<u8>,
    /// Requests sent and neither answered nor given up, so the grace period can end early.
    in_flight: i64,
    pub(super) poll: Poll,
}

pub(super) fn run_worker(
    options: &LoadOptions,
    flows: Range<u32>,
    threads: u32,
    phases: Phases,
) -> Result<Tally> {
    let mut worker = Worker::new(options, phases)?;
    if options.new_flow_per_request {
        worker.run_fresh_flows(flows)?;
    } else {
        let rate_per_thread = options.rate.map(|rate| rate / threads as f64);
        worker.run_flows(flows, rate_per_thread)?;
    }
    Ok(worker.tally)
}

impl<'a> Worker<'a> {
    pub(super) fn new(options: &'a LoadOptions, phases: Phases) -> Result<Worker<'a>> {
        Ok(Worker {
            options,
            phases,
            tally: Tally::default(),
            payload: vec![0x5a; options.size],
            receive: vec![0; 65_536],
            in_flight: 0,
            poll: Poll::new()?,
        })
    }

    pub(super) fn open_flow(&mut self, index: u32, token: usize, large_buffers: bool) -> Result<Flow> {
        let mut socket = sockets::open(
            sockets::source_address(self.options, index),
            sockets::source_port(self.options, index),
            large_buffers,
        )?;
        self.poll.registry().register(&mut socket, Token(token), Interest::READABLE)?;
        let target = self.target_of(index);
        Ok(Flow { socket, index, target, next_sequence: 0, outstanding: 0, last_progress_ns: 0 })
    }

    fn target_of(&self, index: u32) -> SocketAddr {
        self.options.targets[index as usize % self.options.targets.len()]
    }

    fn check(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        target: SocketAddr,
        index: u32,
        sent: impl Fn(u64) -> bool,
    ) -> Verdict {
        match Header::parse(datagram) {
            None => Verdict::Malformed,
            Some(_) if from != target => Verdict::WrongSource,
            Some(header) if header.flow != index || !sent(header.sequence) => Verdict::Misdelivered,
            Some(header) => Verdict::Reply { sent_ns: header.sent_ns },
        }
    }

    /// Counts a verdict; returns the reply's send time when it was a valid reply.
    fn count(&mut self, verdict: Verdict, now_ns: u64) -> Option<u64> {
        match verdict {
            Verdict::Reply { sent_ns } => {
                self.in_flight -= 1;
                if self.phases.in_window(sent_ns) {
                    self.tally.replies += 1;
                    self.tally.latency_ns.record(now_ns.saturating_sub(sent_ns));
                }
                if self.phases.in_window(now_ns) {
                    self.tally.received_in_window += 1;
                }
                Some(sent_ns)
            }
            Verdict::Misdelivered => {
                self.tally.misdelivered += 1;
                None
            }
            Verdict::WrongSource => {
                self.tally.wrong_source += 1;
                None
            }
            Verdict::Malformed => {
                self.tally.malformed += 1;
                None
            }
        }
    }

    /// Sends request `sequence` of flow `index`; true when the kernel took it.
    fn send(
        &mut self,
        socket: &mio::net::UdpSocket,
        target: SocketAddr,
        index: u32,
        sequence: u64,
    ) -> (bool, u64) {
        let now_ns = monotonic_ns();
        Header { flow: index, sequence, sent_ns: now_ns }.emit(&mut self.payload);
        match socket.send_to(&self.payload, target) {
            Ok(_) => {
                self.in_flight += 1;
                if self.phases.in_window(now_ns) {
                    self.tally.sent += 1;
                }
                (true, now_ns)
            }
            Err(_) => {
                self.tally.send_errors += 1;
                (false, now_ns)
            }
        }
    }

    fn finished(&self, now_ns: u64) -> bool {
        now_ns >= self.phases.grace_end_ns || (now_ns >= self.phases.window_end_ns && self.in_flight <= 0)
    }

    fn run_flows(&mut self, range: Range<u32>, rate_per_second: Option<f64>) -> Result<()> {
        let large = self.options.flows <= LARGE_BUFFER_FLOWS_MAX;
        let mut flows = Vec::with_capacity(range.len());
        for index in range {
            let flow = self.open_flow(index, flows.len(), large)?;
            flows.push(flow);
        }
        let mut pacer = match rate_per_second {
            Some(rate) => Some(Pacer::new(&self.poll, rate)?),
            None => {
                for flow in flows.iter_mut() {
                    self.refill(flow);
                }
                None
            }
        };
        let mut events = Events::with_capacity(1024);
        let mut next_scan_ns = monotonic_ns() + SCAN_INTERVAL_NS;
        let loss_timeout_ns = seconds_to_ns(self.options.loss_timeout);
        loop {
            let now_ns = monotonic_ns();
            if self.finished(now_ns) {
                return Ok(());
            }
            self.poll.poll(&mut events, Some(Duration::from_millis(20))).or_else(ignore_interrupted)?;
            for event in events.iter() {
                if event.token() == TIMER {
                    if let Some(pacer) = pacer.as_mut() {
                        pacer.fire(self, &mut flows)?;
                    }
                } else {
                    self.drain_flow(&mut flows[event.token().0], pacer.is_none());
                }
            }
            let now_ns = monotonic_ns();
            if pacer.is_none() && now_ns >= next_scan_ns {
                next_scan_ns = now_ns + SCAN_INTERVAL_NS;
                for flow in flows.iter_mut() {
                    if flow.outstanding > 0 && now_ns - flow.last_progress_ns > loss_timeout_ns {
                        // The whole window went unanswered: give it up and send a new one, so a
                        // loss does not shrink the window for the rest of the run.
                        self.tally.timeouts += flow.outstanding as u64;
                        self.in_flight -= flow.outstanding as i64;
                        flow.outstanding = 0;
                        self.refill(flow);
                    }
                }
            }
        }
    }

    fn refill(&mut self, flow: &mut Flow) {
        let now_ns = monotonic_ns();
        flow.last_progress_ns = now_ns;
        if now_ns >= self.phases.window_end_ns {
            return;
        }
        while flow.outstanding < self.options.window {
            if !self.send_on(flow) {
                break;
            }
        }
    }

    pub(super) fn send_on(&mut self, flow: &mut Flow) -> bool {
        let (ok, _) = self.send(&flow.socket, flow.target, flow.index, flow.next_sequence);
        if ok {
            flow.next_sequence += 1;
            flow.outstanding += 1;
        }
        ok
    }

    /// Reads every datagram waiting on a flow's socket; returns how many were valid replies.
    pub(super) fn drain_flow(&mut self, flow: &mut Flow, closed_loop: bool) -> u32 {
        let mut replies = 0;
        loop {
            let (length, from) = match flow.socket.recv_from(&mut self.receive) {
                Ok(received) => received,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return replies,
            };
            let now_ns = monotonic_ns();
            let next = flow.next_sequence;
            let verdict = self.check(&self.receive[..length], from, flow.target, flow.index, |s| s < next);
            if self.count(verdict, now_ns).is_none() {
                continue;
            }
            replies += 1;
            flow.outstanding = flow.outstanding.saturating_sub(1);
            flow.last_progress_ns = now_ns;
            if closed_loop && now_ns < self.phases.window_end_ns && flow.outstanding < self.options.window {
                self.send_on(flow);
            }
        }
    }

    fn run_fresh_flows(&mut self, flows: Range<u32>) -> Result<()> {
        let window = self.options.window;
        let mut slots: Vec<Slot> = Vec::with_capacity(flows.len() * window as usize);
        for flow in flows {
            for request in 0..window {
                let index = flow * window + request;
                let target = self.target_of(index);
                slots.push(Slot { socket: None, index, target, sequence: 0, sent_ns: 0 });
            }
        }
        for (token, slot) in slots.iter_mut().enumerate() {
            self.open_and_send(slot, token);
        }
        let mut events = Events::with_capacity(1024);
        let mut next_scan_ns = monotonic_ns() + SCAN_INTERVAL_NS;
        let loss_timeout_ns = seconds_to_ns(self.options.loss_timeout);
        loop {
            let now_ns = monotonic_ns();
            if self.finished(now_ns) {
                return Ok(());
            }
            self.poll.poll(&mut events, Some(Duration::from_millis(20))).or_else(ignore_interrupted)?;
            for event in events.iter() {
                let token = event.token().0;
                if self.drain_slot(&mut slots[token]) {
                    self.close(&mut slots[token]);
                    if monotonic_ns() < self.phases.window_end_ns {
                        self.open_and_send(&mut slots[token], token);
                    }
                }
            }
            let now_ns = monotonic_ns();
            if now_ns >= next_scan_ns {
                next_scan_ns = now_ns + SCAN_INTERVAL_NS;
                for (token, slot) in slots.iter_mut().enumerate() {
                    if slot.socket.is_some() && now_ns - slot.sent_ns > loss_timeout_ns {
                        self.tally.timeouts += 1;
                        self.in_flight -= 1;
                        self.close(slot);
                    }
                    if slot.socket.is_none() && now_ns < self.phases.window_end_ns {
                        self.open_and_send(slot, token);
                    }
                }
            }
        }
    }

    /// Reads what arrived on a slot's socket; true once its reply is in.
    fn drain_slot(&mut self, slot: &mut Slot) -> bool {
        let Some(socket) = slot.socket.as_ref() else { return false };
        loop {
            let (length, from) = match socket.recv_from(&mut self.receive) {
                Ok(received) => received,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            let now_ns = monotonic_ns();
            let sequence = slot.sequence;
            let verdict =
                self.check(&self.receive[..length], from, slot.target, slot.index, |s| s == sequence);
            if self.count(verdict, now_ns).is_some() {
                return true;
            }
        }
    }

    fn close(&mut self, slot: &mut Slot) {
        if let Some(mut socket) = slot.socket.take() {
            let _ = self.poll.registry().deregister(&mut socket);
        }
    }

    fn open_and_send(&mut self, slot: &mut Slot, token: usize) {
        let socket = sockets::open(Ipv4Addr::LOCALHOST, 0, false).and_then(|mut socket| {
            self.poll.registry().register(&mut socket, Token(token), Interest::READABLE)?;
            Ok(socket)
        });
        let Ok(socket) = socket else {
            // Out of descriptors or ports: counted, and the scan tries again.
            self.tally.send_errors += 1;
            return;
        };
        slot.sequence += 1;
        let (ok, sent_ns) = self.send(&socket, slot.target, slot.index, slot.sequence);
        slot.sent_ns = sent_ns;
        slot.socket = Some(socket);
        if !ok {
            // Given up by the timeout scan like a lost request, but not counted in flight.
            self.in_flight += 1;
        }
    }
}

fn ignore_interrupted(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == ErrorKind::Interrupted { Ok(()) } else { Err(error) }
}

/// Open-loop pacing: a timerfd armed at each next send time, so that datagrams leave one by
/// one at the set rate instead of in bursts at each millisecond tick of epoll's timeout.
struct Pacer {
    timer: OwnedFd,
    interval_ns: f64,
    /// Sends done since the start, so the schedule never drifts: send n is due at
    /// start + n × interval.
    sends: u64,
    start_ns: u64,
    cursor: usize,
}

impl Pacer {
    fn new(poll: &Poll, rate_per_second: f64) -> Result<Pacer> {
        // Timer slack (50 µs by default) would delay every wake-up; pacing at 100 µs needs
        // better.
        // SAFETY: prctl and timerfd_create have no memory effects on our side.
        let timer = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1);
            let fd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("timerfd_create");
            }
            OwnedFd::from_raw_fd(fd)
        };
        poll.registry().register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
        let pacer = Pacer {
            timer,
            interval_ns: 1e9 / rate_per_second,
            sends: 0,
            start_ns: monotonic_ns(),
            cursor: 0,
        };
        pacer.arm(pacer.start_ns + 1000)?;
        Ok(pacer)
    }

    fn due_ns(&self) -> u64 {
        self.start_ns + (self.sends as f64 * self.interval_ns) as u64
    }

    fn arm(&self, at_ns: u64) -> Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as i64,
                tv_nsec: (at_ns % 1_000_000_000) as i64,
            },
        };
        // SAFETY: timerfd_settime reads `spec`; the old value is not asked for.
        let result = unsafe {
            libc::timerfd_settime(
                self.timer.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error()).context("timerfd_settime");
        }
        Ok(())
    }

    /// Sends everything now due (one datagram, unless the thread fell behind) and re-arms.
    fn fire(&mut self, worker: &mut Worker<'_>, flows: &mut [Flow]) -> Result<()> {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into the array; EAGAIN on a spurious wake is fine.
        unsafe { libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        let now_ns = monotonic_ns();
        while self.due_ns() <= now_ns && self.due_ns() < worker.phases.window_end_ns {
            let flow = &mut flows[self.cursor];
            worker.send_on(flow);
            self.cursor = (self.cursor + 1) % flows.len();
            self.sends += 1;
        }
        if self.due_ns() < worker.phases.window_end_ns {
            self.arm(self.due_ns())?;
        }
        Ok(())
    }
}
