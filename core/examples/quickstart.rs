//! Pushes a short, scripted conversation through the core and prints every decision it makes,
//! with the virtual time. No sockets: this is the sans-io core on its own.
//!
//! Run: `cargo run --release -p udplb-core --example quickstart`

use std::net::SocketAddr;
use std::time::Duration;

use udplb_core::proxy_v2::Header;
use udplb_core::{
    AdminCommand, ClientDatagram, ClientVerdict, Config, DATAGRAM_HEADROOM, FlowManager, Instant, Keys,
    Output,
};

const CONFIG: &str = r#"
[listeners.dns]
address = "192.0.2.53:53"
cluster = "resolvers"
drain_timeout = "1s"

[clusters.resolvers]
responses = 1                                   # a DNS query gets one answer
idle_timeout = { front = "30s", back = "2s" }   # an unanswered query gives up after 2s
proxy_protocol = { mode = "first", crc32c = true }
backends = [
  { id = "r1", address = "10.0.0.1:53" },
  { id = "r2", address = "10.0.0.2:53", weight = 2 },
]
"#;

struct Demo {
    core: FlowManager,
    now: Instant,
}

impl Demo {
    fn outputs(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::CloseUpstream { flow, reason, .. } => {
                    println!("{:>14}   close {flow}: {reason}", self.now)
                }
                Output::Event(event) => println!("{:>14}   event {event:?}", self.now),
                Output::Resend { incoming, datagram } => {
                    println!("{:>14}   re-send {} bytes on {}", self.now, datagram.len(), incoming.flow());
                    let _ = self.core.accept(self.now, incoming, &datagram);
                }
                Output::PassiveFailure { backend, failure } => {
                    let (name, _) = self.core.backend(backend).expect("backend");
                    println!("{:>14}   passive health: {name} {failure}", self.now)
                }
                Output::PassiveSuccess { backend, answered } => {
                    let (name, _) = self.core.backend(backend).expect("backend");
                    println!("{:>14}   passive health: {name} answered {answered}", self.now)
                }
            }
        }
    }

    fn query(&mut self, client: &str, payload: &[u8]) -> Option<udplb_core::FlowId> {
        let client: SocketAddr = client.parse().expect("address");
        let mut buffer = vec![0u8; DATAGRAM_HEADROOM + payload.len()];
        buffer[DATAGRAM_HEADROOM..].copy_from_slice(payload);
        let listener = self.core.listener_id("dns").expect("listener");
        let verdict = self.core.handle_client_datagram(
            self.now,
            ClientDatagram {
                listener,
                client,
                local: None,
                buffer: &mut buffer,
                headroom: DATAGRAM_HEADROOM,
                truncated: false,
            },
        );
        println!("{:>14} client {client} sends {} bytes", self.now, payload.len());
        // A new flow is staged: a shell opens its upstream, then confirms it.
        let verdict = match verdict {
            ClientVerdict::Open(incoming) => {
                let (name, _) = self.core.backend(incoming.backend()).expect("backend");
                let (flow, address) = (incoming.flow(), incoming.address());
                println!("{:>14}   open upstream for {flow} to {name} ({address})", self.now);
                let start = DATAGRAM_HEADROOM - incoming.prefix_len();
                self.core.accept(self.now, incoming, &buffer[start..])
            }
            verdict => verdict,
        };
        let forwarded = match verdict {
            ClientVerdict::Forward { flow, prefix_len, .. } => {
                let sent = &buffer[DATAGRAM_HEADROOM - prefix_len..];
                let header = if prefix_len > 0 {
                    let (header, _) = Header::parse(sent).expect("our own header decodes");
                    format!(" with a {prefix_len}-byte PROXY v2 header ({:?})", header.addresses)
                } else {
                    String::new()
                };
                println!("{:>14}   forward on {flow}{header}", self.now);
                Some(flow)
            }
            ClientVerdict::Drop(reason) => {
                println!("{:>14}   drop: {reason}", self.now);
                None
            }
            ClientVerdict::Open(_) => unreachable!("confirmed above"),
        };
        self.outputs();
        forwarded
    }

    fn answer(&mut self, flow: udplb_core::FlowId) {
        let verdict = self.core.handle_backend_datagram(self.now, flow, b"answer", false);
        println!("{:>14} backend answers on {flow}", self.now);
        self.outputs();
        println!("{:>14}   {verdict:?}", self.now);
    }

    fn wait(&mut self, duration: Duration) {
        let until = self.now + duration;
        while let Some(deadline) = self.core.poll_timeout().filter(|d| *d <= until) {
            self.now = deadline;
            self.core.handle_timeout(self.now);
            self.outputs();
        }
        self.now = until;
    }
}

fn main() {
    let config = Config::from_toml_str(CONFIG).expect("the demo configuration is valid");
    let core = FlowManager::new(&config, Keys::from_seed(2024)).expect("valid");
    let mut demo = Demo { core, now: Instant::ZERO };

    println!("-- two clients query; answers close their flows (responses = 1)");
    let a = demo.query("198.51.100.7:33000", b"query A").expect("forwarded");
    let b = demo.query("198.51.100.8:41000", b"query B").expect("forwarded");
    demo.wait(Duration::from_millis(3));
    demo.answer(a);
    demo.answer(b);

    println!("-- a query nobody answers: the back idle deadline closes its flow");
    demo.wait(Duration::from_secs(1));
    demo.query("198.51.100.9:5353", b"query C");
    demo.wait(Duration::from_secs(3));

    println!("-- an empty datagram is a counted drop");
    demo.query("198.51.100.9:5353", b"");

    println!("-- drain: no new flows; what is left closes after drain_timeout");
    demo.query("198.51.100.10:7000", b"query D");
    let listener = demo.core.listener_id("dns").expect("listener");
    demo.core.handle_admin(demo.now, AdminCommand::DrainListener(listener)).expect("drain");
    demo.outputs();
    demo.query("198.51.100.11:7000", b"query E");
    demo.wait(Duration::from_secs(11));

    let stats = demo.core.stats();
    let client = &stats.listeners[0].client;
    println!(
        "-- totals: {} client datagrams, {} forwarded, {} dropped; {} flows created, {} still open",
        client.received,
        client.passed,
        client.dropped_total(),
        stats.flows.created,
        stats.flows.active
    );
    demo.core.check_invariants().expect("invariants hold");
}
