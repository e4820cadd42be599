//! Helpers for a real QUIC test of udplb's QUIC-LB routing (`tests/quic_lb.rs`): quinn
//! servers on loopback that issue QUIC-LB connection IDs ([`QuicLbCidGenerator`]) and name
//! themselves in every reply ([`TestServer`]), quinn clients that trust them
//! ([`client_endpoint`], [`ask`]), and the `udplb` binary in front of them
//! ([`Balancer`]).
//!
//! Everything listens on 127.0.0.1 only, every wait is bounded, and the only process started
//! (`udplb`) is killed when its [`Balancer`] is dropped, a panicking test included.
//!
//! The QUIC parts need a Tokio runtime: call them from inside one (`#[tokio::test]`).

use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use quinn::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use quinn::{ConnectionId, ConnectionIdGenerator, Endpoint, EndpointConfig, TokioRuntime, TransportConfig};
use quinn_proto::InvalidCid;
use udplb_core::quic_lb::{QuicLbConfig, QuicLbError, ServerId};

/// The ALPN protocol the test servers and clients speak: a stream's octets come back
/// followed by ` server=<name>`.
pub const ALPN: &[u8] = b"udplb-test";

/// The name the test certificate is issued for, and the name clients connect to.
pub const SERVER_NAME: &str = "localhost";

/// How long a connection may stay silent before quinn closes it. Longer than any wait in
/// the test, so that a connection only ends because a test ended it, or because its
/// datagrams stopped reaching its server.
const MAX_IDLE: Duration = Duration::from_secs(20);

/// The largest reply or request a test stream carries.
const MAX_MESSAGE: usize = 4096;

// ---------------------------------------------------------------------------------------
// Connection IDs
// ---------------------------------------------------------------------------------------

/// A quinn [`ConnectionIdGenerator`] that issues QUIC-LB connection IDs for one server: every
/// connection ID it makes carries `server_id` under `config`, so a balancer holding the same
/// config routes any datagram of the server's connections back to it, whatever address the
/// client sends from.
///
/// Quinn makes one generator per endpoint (from the factory given to
/// [`EndpointConfig::cid_generator`], see [`QuicLbCidGenerator::factory`]) and asks it for
/// the server's connection IDs: the one the handshake chooses and those sent later in
/// NEW_CONNECTION_ID frames. It also tells quinn how long the connection IDs are (short
/// headers do not say) and which short-header IDs are worth answering ([`validate`]).
///
/// [`validate`] passes every connection ID that decodes under the config, another server's
/// included. Quinn answers a short-header packet for a connection it does not have with a
/// stateless reset only when its ID passes; a server given another server's connection ID
/// (the balancer could not route it, say because that server is down, and fell back to
/// hashing) should answer that way, so that the client starts a new connection at once
/// instead of waiting for its idle timeout. The client takes the reset only if its token is
/// the one the connection's own server promised, so the servers of one cluster should share
/// a reset key ([`endpoint_config`]).
///
/// **Nonces** are deterministic: the `n`-th connection ID uses the nonce `mix(start + n)`,
/// where `mix` is a bijection on 64-bit numbers (SplitMix64's finaliser) written big-endian,
/// zero-padded at the front to the config's nonce length or cut to its last octets. With a
/// nonce of 8 octets or more, no nonce repeats for 2^64 IDs, which is what a keyed config
/// needs (the draft: with a key, nonces must not repeat for one server ID). With a shorter
/// nonce they repeat after 2^(8 × length) IDs, and quinn skips any that is still in use.
/// The mixing only keeps consecutive IDs from looking consecutive; it is no secret. A real
/// server using a plaintext config, where the nonce is what an observer sees, should draw
/// its nonces from a cryptographic random source instead; one using a key may count, but
/// must not start again from the same `start` after a restart.
///
/// The first octet's low five bits carry the length of the rest (the draft's "length
/// self-description"); the top three are the config ID.
///
/// [`validate`]: ConnectionIdGenerator::validate
#[derive(Clone, Debug)]
pub struct QuicLbCidGenerator {
    config: QuicLbConfig,
    server_id: ServerId,
    next: u64,
    lifetime: Option<Duration>,
}

impl QuicLbCidGenerator {
    /// A generator for `server_id` under `config`, whose first nonce is `mix(start)`. An
    /// error if the server ID is not the config's server ID length.
    pub fn new(config: QuicLbConfig, server_id: ServerId, start: u64) -> Result<Self, QuicLbError> {
        // Encoding once checks the server ID's length against the config.
        let nonce = vec![0; config.nonce_len()];
        config.encode(&server_id, &nonce, 0, true)?;
        Ok(QuicLbCidGenerator { config, server_id, next: start, lifetime: None })
    }

    /// Retires every connection ID after `lifetime` (quinn then issues new ones). None by
    /// default: connection IDs live as long as their connection.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// The config this generator encodes with.
    pub fn config(&self) -> &QuicLbConfig {
        &self.config
    }

    /// The server ID this generator encodes.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// A factory for [`EndpointConfig::cid_generator`]: each endpoint gets a clone of this
    /// generator. Give each endpoint of one server ID its own `start` (far apart) if a
    /// process runs several.
    pub fn factory(self) -> impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync + 'static {
        move || Box::new(self.clone())
    }

    /// The next nonce, `nonce_len` octets.
    fn next_nonce(&mut self) -> Vec<u8> {
        let value = mix(self.next).to_be_bytes();
        self.next = self.next.wrapping_add(1);
        let len = self.config.nonce_len();
        let mut nonce = vec![0; len.saturating_sub(value.len())];
        nonce.extend_from_slice(&value[value.len().saturating_sub(len)..]);
        nonce
    }
}

/// SplitMix64's output function: a bijection on `u64` that scatters consecutive inputs.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ConnectionIdGenerator for QuicLbCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let nonce = self.next_nonce();
        let cid = self
            .config
            .encode(&self.server_id, &nonce, 0, true)
            .expect("lengths were checked when the generator was built");
        ConnectionId::new(&cid)
    }

    /// A connection ID passes if it decodes under this generator's config (its config ID,
    /// long enough), whichever server ID it holds; see the type's documentation for why
    /// another server's IDs pass too.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        self.config.decode(cid).map(|_| ()).map_err(|_| InvalidCid)
    }

    fn cid_len(&self) -> usize {
        self.config.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

// ---------------------------------------------------------------------------------------
// Certificates, servers, clients
// ---------------------------------------------------------------------------------------

/// A self-signed certificate for [`SERVER_NAME`] and its private key, made fresh (rcgen).
pub struct TestCert {
    pub cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCert {
    pub fn new() -> TestCert {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .expect("generate a self-signed certificate");
        TestCert { cert: certified.cert.der().clone(), key: certified.key_pair.serialize_der() }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

impl Default for TestCert {
    fn default() -> Self {
        TestCert::new()
    }
}

/// The crypto provider both sides use: ring's, TLS 1.3 only (QUIC's).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(MAX_IDLE.try_into().expect("a valid idle timeout")));
    Arc::new(transport)
}

/// A server endpoint's configuration: connection IDs from `cids` (without, quinn's default
/// generator makes them: 8 random-looking octets) and stateless reset tokens from
/// `reset_key`, which the servers of one cluster should share (see [`QuicLbCidGenerator`]).
pub fn endpoint_config(cids: Option<QuicLbCidGenerator>, reset_key: &[u8; 32]) -> EndpointConfig {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    let mut config = EndpointConfig::new(Arc::new(key));
    if let Some(cids) = cids {
        config.cid_generator(cids.factory());
    }
    config
}

/// A quinn server on a fresh 127.0.0.1 port, answering each bidirectional stream with the
/// stream's octets followed by ` server=<name>`. Stopped (its endpoint closed, its task
/// ended) when dropped.
pub struct TestServer {
    pub name: String,
    pub address: SocketAddr,
    endpoint: Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server named `name` with `cert` and `endpoint_config` (see
    /// [`endpoint_config`]).
    pub fn start(
        name: &str,
        cert: &TestCert,
        endpoint_config: EndpointConfig,
    ) -> std::io::Result<TestServer> {
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 with ring")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.clone()], cert.key())
            .expect("the test certificate");
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(crypto).expect("a QUIC server config");
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(transport());
        // Clients may move (a NAT rebinding makes the balancer send from another port).
        server_config.migration(true);

        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let address = socket.local_addr()?;
        let endpoint = Endpoint::new(endpoint_config, Some(server_config), socket, Arc::new(TokioRuntime))?;
        let task = tokio::spawn(serve(endpoint.clone(), name.to_owned()));
        Ok(TestServer { name: name.to_owned(), address, endpoint, task })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
        self.task.abort();
    }
}

/// Accepts connections until the endpoint closes; each connection is served by a task of
/// its own.
async fn serve(endpoint: Endpoint, name: String) {
    while let Some(incoming) = endpoint.accept().await {
        let name = name.clone();
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                serve_connection(connection, name).await;
            }
        });
    }
}

/// Answers each bidirectional stream of `connection` until it closes.
async fn serve_connection(connection: quinn::Connection, name: String) {
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let name = name.clone();
        tokio::spawn(async move {
            let Ok(request) = recv.read_to_end(MAX_MESSAGE).await else { return };
            let mut reply = request;
            reply.extend_from_slice(format!(" server={name}").as_bytes());
            if send.write_all(&reply).await.is_ok() {
                let _ = send.finish();
            }
        });
    }
}

/// A client endpoint on its own fresh 127.0.0.1 port (so its own 4-tuple towards the
/// balancer), trusting `cert` and speaking [`ALPN`].
pub fn client_endpoint(cert: &TestCert) -> std::io::Result<Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone()).expect("the test certificate as a root");
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with ring")
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(crypto).expect("a QUIC client config");
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    client_config.transport_config(transport());
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut endpoint = Endpoint::new(EndpointConfig::default(), None, socket, Arc::new(TokioRuntime))?;
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// Connects `endpoint` to `to` within `limit`.
pub async fn connect(
    endpoint: &Endpoint,
    to: SocketAddr,
    limit: Duration,
) -> Result<quinn::Connection, AskError> {
    let connecting = endpoint.connect(to, SERVER_NAME).map_err(|e| AskError::Failed(e.to_string()))?;
    match tokio::time::timeout(limit, connecting).await {
        Err(_) => Err(AskError::TimedOut),
        Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
        Ok(Ok(connection)) => Ok(connection),
    }
}

/// Why a stream exchange did not get its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AskError {
    /// No reply within the limit.
    TimedOut,
    /// The connection or stream failed (closed, reset, refused…).
    Failed(String),
    /// A reply came that does not name a server.
    Garbled(String),
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::TimedOut => write!(f, "no reply in time"),
            AskError::Failed(why) => write!(f, "failed: {why}"),
            AskError::Garbled(reply) => write!(f, "a reply that names no server: {reply:?}"),
        }
    }
}

/// Opens a bidirectional stream on `connection`, sends `payload`, and reads the reply, all
/// within `limit`; the name of the server that answered.
pub async fn ask(connection: &quinn::Connection, payload: &str, limit: Duration) -> Result<String, AskError> {
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| AskError::Failed(e.to_string()))?;
        send.write_all(payload.as_bytes()).await.map_err(|e| AskError::Failed(e.to_string()))?;
        send.finish().map_err(|e| AskError::Failed(e.to_string()))?;
        let reply = recv.read_to_end(MAX_MESSAGE).await.map_err(|e| AskError::Failed(e.to_string()))?;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        match reply.strip_prefix(payload).and_then(|rest| rest.strip_prefix(" server=")) {
            Some(name) if !name.is_empty() => Ok(name.to_owned()),
            _ => Err(AskError::Garbled(reply)),
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Err(_) => Err(AskError::TimedOut),
        // Say why the connection ended, when it did: a stream error only says "connection lost".
        Ok(Err(AskError::Failed(why))) => match connection.close_reason() {
            Some(reason) => Err(AskError::Failed(format!("{why} ({reason})"))),
            None => Err(AskError::Failed(why)),
        },
        Ok(result) => result,
    }
}

// ---------------------------------------------------------------------------------------
// The balancer
// ---------------------------------------------------------------------------------------

/// The `udplb` binary to test: `udplb` beside the test executable's `deps/` directory
/// (`<target dir>/<profile>/udplb`, where `cargo build -p udplb` and `cargo test
/// --workspace` put it), or else the one the shell's tests build without test-only features
/// (`<target dir>/shipped/<profile>/udplb`). Panics, saying to run `cargo build -p udplb`,
/// when neither exists.
///
/// A binary built before the sources last changed is not noticed: build it again after
/// changing the shell or the core.
pub fn udplb_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<test executable>
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("a test executable under <target>/<profile>/deps");
    let beside = profile_dir.join("udplb");
    if beside.is_file() {
        return beside;
    }
    let profile = profile_dir.file_name().expect("a profile directory");
    let shipped = profile_dir.parent().map(|target| target.join("shipped").join(profile).join("udplb"));
    match shipped {
        Some(shipped) if shipped.is_file() => shipped,
        _ => panic!(
            "no udplb binary at {}: run `cargo build -p udplb` (with the same profile) before \
             `cargo test -p udplb-quic-test`",
            beside.display()
        ),
    }
}

/// A running `udplb run -c <file>`, whose configuration file is written with a `[process]`
/// table naming a fresh control socket; killed when dropped (a panicking test included), and
/// its files removed.
pub struct Balancer {
    child: Child,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Balancer {
    /// Writes `body` (listeners and clusters) under a `[process]` table, starts udplb on it
    /// and waits (at most 10 s) until its control socket exists, which the shell creates
    /// after binding its listeners. Panics with udplb's log if it exits first (a rejected
    /// configuration, say).
    pub fn start(body: &str) -> Balancer {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("udplb-quic-test-{}-{n}", std::process::id()));
        let (config, socket, log) =
            (base.with_extension("toml"), base.with_extension("sock"), base.with_extension("log"));
        std::fs::write(&config, format!("[process]\ncontrol_socket = \"{}\"\n\n{body}", socket.display()))
            .expect("write the configuration file");
        let log_file = std::fs::File::create(&log).expect("create the log file");
        let child = Command::new(udplb_binary())
            .args(["run", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start udplb");
        let mut balancer = Balancer { child, config, socket, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !balancer.socket.exists() {
            if let Ok(Some(status)) = balancer.child.try_wait() {
                panic!("udplb exited ({status}) before it was ready:\n{}", balancer.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "udplb made no control socket within 10 s:\n{}",
                balancer.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        balancer
    }

    /// `udplb run -c <same file> --takeover`: a new process takes this one's sockets and
    /// flows and the old one exits; from then on this `Balancer` is the new process (its log
    /// appended to the same file). `fresh` adds `--fresh` (the fallback). An error says why,
    /// with the new process's log.
    pub fn take_over(&mut self, fresh: bool) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).map_err(|e| e.to_string())?;
        let mut command = Command::new(udplb_binary());
        command.args(["run", "-c"]).arg(&self.config).arg("--takeover");
        if fresh {
            command.arg("--fresh");
        }
        let new = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let old = std::mem::replace(&mut self.child, new);
        self.wait_for_exit(old, "the old process")
    }

    /// The same without a handover: the running process is stopped (SIGKILL: its flows are
    /// gone either way) and a new one started on the same file, as a plain restart does.
    pub fn restart_plainly(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).map_err(|e| e.to_string())?;
        self.child = Command::new(udplb_binary())
            .args(["run", "-c"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            if Instant::now() >= deadline {
                return Err(format!("no control socket 10 s after the restart:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits (at most 10 s) for `old` to exit with status 0.
    fn wait_for_exit(&self, mut old: Child, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match old.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("{what} exited with {status}:\n{}", self.log_text())),
                _ if Instant::now() >= deadline => {
                    let _ = old.kill();
                    let _ = old.wait();
                    return Err(format!(
                        "{what} still ran 10 s after the takeover started:\n{}",
                        self.log_text()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// What udplb has written to stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Runs `udplb ctl --socket <socket> ARGS` (bounded by ctl's own timeout); its stdout,
    /// or its stderr as the error.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(udplb_binary())
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A free 127.0.0.1 UDP port (bound, read, released).
pub fn free_udp_address() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_id_decodes_to_the_server_and_none_repeats() {
        for key in [None, Some([0x5a; 16])] {
            for nonce_len in [4, 8, 15] {
                let config = QuicLbConfig::new(2, 1, nonce_len, key).unwrap();
                let server = ServerId::from_hex("07").unwrap();
                let mut generator = QuicLbCidGenerator::new(config.clone(), server, 0).unwrap();
                let mut seen = std::collections::HashSet::new();
                for _ in 0..1000 {
                    let cid = generator.generate_cid();
                    assert_eq!(cid.len(), config.cid_len());
                    assert_eq!(cid[0] >> 5, 2, "config rotation bits");
                    assert_eq!(config.decode(&cid), Ok(server));
                    assert!(generator.validate(&cid).is_ok());
                    assert!(seen.insert(cid.to_vec()), "a repeated connection ID");
                }
            }
        }
    }

    #[test]
    fn any_connection_id_of_the_config_validates_and_nothing_else() {
        let config = QuicLbConfig::new(0, 1, 8, None).unwrap();
        let mine = QuicLbCidGenerator::new(config.clone(), ServerId::from_hex("01").unwrap(), 0).unwrap();
        let mut theirs = QuicLbCidGenerator::new(config, ServerId::from_hex("02").unwrap(), 0).unwrap();
        assert!(mine.validate(&theirs.generate_cid()).is_ok(), "another server's ID, same config");
        assert!(mine.validate(&ConnectionId::new(&[0x00; 9])).is_err(), "too short");
        assert!(mine.validate(&ConnectionId::new(&[0xff; 10])).is_err(), "config 7");
    }

    #[test]
    fn a_server_id_of_the_wrong_length_is_refused() {
        let config = QuicLbConfig::new(0, 2, 8, None).unwrap();
        assert!(QuicLbCidGenerator::new(config, ServerId::from_hex("01").unwrap(), 0).is_err());
    }
}
