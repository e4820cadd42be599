//! Recording a run and replaying it.
//!
//! A [`Journal`] holds every input a [`Driver`] was given, with its time, and every output it
//! observed (verdicts, results, the core's outputs), in order. Because the core is
//! deterministic, [`replay`] feeds the inputs to a fresh [`Balancer`] built from the same
//! configuration, keys and role, and gets the same outputs; a difference is a determinism bug
//! (or a journal from another build).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::{Driver, OpenError, Platform};
use crate::balancer::{Balancer, Input, Output, Reload};
use crate::config::{Config, ValidationError};
use crate::flow::{AdminError, BackendVerdict, ClientDatagram, ClientVerdict};
use crate::health::ProbeRequest;
use crate::id::{BackendId, FlowId, ListenerId};
use crate::time::Instant;

/// One input to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    ClientDatagram {
        listener: ListenerId,
        client: SocketAddr,
        local: Option<IpAddr>,
        payload: Vec<u8>,
        headroom: usize,
        truncated: bool,
    },
    BackendDatagram {
        flow: FlowId,
        payload: Vec<u8>,
        truncated: bool,
    },
    Input(Input),
    Reload(Box<Config>),
}

/// One thing the driver saw come out of the core, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The final verdict on a client datagram or a re-send (after its staged open).
    Client(ClientVerdict),
    Backend(BackendVerdict),
    Handled(Result<(), AdminError>),
    Reloaded(Result<Reload, Vec<ValidationError>>),
    Output(Output),
}

/// Inputs and outputs of one driver, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// Every input, with the time it was given.
    pub inputs: Vec<(Instant, Recorded)>,
    /// Whether each upstream open the platform was asked for succeeded, in order.
    pub opens: Vec<bool>,
    /// Everything observed, in order.
    pub observed: Vec<Observed>,
}

impl Journal {
    pub(super) fn input(&mut self, now: Instant, input: Recorded) {
        self.inputs.push((now, input));
    }

    pub(super) fn opened(&mut self, ok: bool) {
        self.opens.push(ok);
    }
}

/// Feeds `journal`'s inputs to `core` (freshly built with the recorded run's configuration,
/// keys and role) and returns the journal of the replay: its `observed` equals the
/// recording's if the core is deterministic. Opens succeed or fail as they did.
pub fn replay(core: Balancer, journal: &Journal) -> Journal {
    let platform = Replayed { opens: journal.opens.iter().copied().collect() };
    let mut driver = Driver::new(core, platform);
    driver.record();
    for (now, input) in &journal.inputs {
        let now = *now;
        match input {
            Recorded::ClientDatagram { listener, client, local, payload, headroom, truncated } => {
                let mut buffer = vec![0; headroom + payload.len()];
                buffer[*headroom..].copy_from_slice(payload);
                let datagram = ClientDatagram {
                    listener: *listener,
                    client: *client,
                    local: *local,
                    buffer: &mut buffer,
                    headroom: *headroom,
                    truncated: *truncated,
                };
                driver.client_datagram(now, datagram);
            }
            Recorded::BackendDatagram { flow, payload, truncated } => {
                driver.backend_datagram(now, *flow, payload, *truncated);
            }
            Recorded::Input(input) => {
                let _ = driver.handle(now, input.clone());
            }
            Recorded::Reload(config) => {
                let _ = driver.reload(now, config);
            }
        }
    }
    driver.journal.unwrap_or_default()
}

/// A platform that answers opens as the recorded run's did and does nothing else.
struct Replayed {
    opens: VecDeque<bool>,
}

impl Platform for Replayed {
    fn open_upstream(&mut self, _: Instant, _: FlowId, _: BackendId, _: SocketAddr) -> Result<(), OpenError> {
        match self.opens.pop_front() {
            Some(true) => Ok(()),
            Some(false) => Err(OpenError("it failed in the recorded run".into())),
            None => Err(OpenError("the recorded run opened fewer upstreams".into())),
        }
    }

    fn close_upstream(&mut self, _: Instant, _: FlowId) {}

    fn send_upstream(&mut self, _: FlowId, _: &[u8]) {}

    fn send_to_client(&mut self, _: ListenerId, _: SocketAddr, _: SocketAddr, _: &[u8]) {}

    fn start_probe(&mut self, _: Instant, _: &ProbeRequest) {}

    fn notify(&mut self, _: &Balancer, _: &Output) {}
}
