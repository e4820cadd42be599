//! The smallest HTTP server Prometheus can scrape: in the event loop's `mio::Poll`, one
//! request per connection, `GET /metrics` answered, everything else 404, then close.
//!
//! It is bounded like every other input: at most [`MAX_CONNECTIONS`] connections (a new one
//! beyond that evicts the oldest, so idle connections cannot lock scrapers out), at most
//! [`MAX_REQUEST_HEAD_BYTES`] of request head, and [`CONNECTION_TIMEOUT`] for the whole
//! exchange. The body is built by the caller only once a complete request has arrived.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallInstant};

use anyhow::Context;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// Scrape connections open at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest request head (request line and headers) read; a longer one gets 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192;
/// Longest time a connection may stay open, request and answer together.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// OpenMetrics text, which `prometheus-client` writes and Prometheus asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections accepted per readiness event before serving the other sockets.
const ACCEPTS_PER_EVENT: usize = 64;

/// What a complete request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET` of this path (without any query string).
    Get(String),
    /// Anything else: the answer is this status line, with no body.
    Invalid(&'static str),
}

struct Connection {
    stream: TcpStream,
    head: Vec<u8>,
    response: Vec<u8>,
    written: usize,
    opened: WallInstant,
    /// The request was handed to the caller (once only).
    taken: bool,
}

impl Connection {
    /// Reads what has arrived. Returns false when the connection is broken or closed early.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        while !self.taken && self.head.len() < MAX_REQUEST_HEAD_BYTES {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(read) => self.head.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }

    /// Sends what the socket takes. Returns true once everything is sent (or it broke).
    fn flush(&mut self) -> bool {
        while self.written < self.response.len() {
            match self.stream.write(&self.response[self.written..]) {
                Ok(0) => return true,
                Ok(sent) => self.written += sent,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        true
    }
}

/// Parses a request head once it is complete; `None` while more is needed.
pub fn parse_head(head: &[u8]) -> Option<Request> {
    let complete = head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
    if !complete {
        return (head.len() >= MAX_REQUEST_HEAD_BYTES)
            .then_some(Request::Invalid("431 Request Header Fields Too Large"));
    }
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(version)) if version.starts_with("HTTP/") => {
            let path = target.split('?').next().unwrap_or(target);
            Some(Request::Get(path.to_owned()))
        }
        (Some(_), Some(_), Some(version)) if version.starts_with("HTTP/") => {
            Some(Request::Invalid("405 Method Not Allowed"))
        }
        _ => Some(Request::Invalid("400 Bad Request")),
    }
}

/// The listening socket and its connections.
pub struct MetricsServer {
    listener: TcpListener,
    registry: Registry,
    connections: BTreeMap<Token, Connection>,
    /// Tokens of connections closed since the caller last asked ([`Self::take_closed`]).
    closed: Vec<Token>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("connections", &self.connections.len()).finish()
    }
}

impl MetricsServer {
    pub fn bind(address: SocketAddr, registry: &Registry, token: Token) -> anyhow::Result<MetricsServer> {
        let mut listener =
            TcpListener::bind(address).with_context(|| format!("cannot serve metrics on {address}"))?;
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(MetricsServer {
            listener,
            registry: registry.try_clone()?,
            connections: BTreeMap::new(),
            closed: Vec::new(),
        })
    }

    /// A metrics endpoint on a listening socket handed over by another process.
    pub fn adopt(
        listener: std::os::fd::OwnedFd,
        registry: &Registry,
        token: Token,
    ) -> anyhow::Result<MetricsServer> {
        let listener = std::net::TcpListener::from(listener);
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(MetricsServer {
            listener,
            registry: registry.try_clone()?,
            connections: BTreeMap::new(),
            closed: Vec::new(),
        })
    }

    /// A copy of the listening socket, for a handover.
    pub fn listener_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn has_connections(&self) -> bool {
        !self.connections.is_empty()
    }

    /// Accepts pending connections, each named by a token from `token`.
    pub fn accept(&mut self, mut token: impl FnMut() -> Token) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "metrics: accept failed");
                    break;
                }
            };
            if self.connections.len() >= MAX_CONNECTIONS
                && let Some(oldest) = self.connections.iter().min_by_key(|(_, c)| c.opened).map(|(t, _)| *t)
            {
                self.close(oldest);
            }
            let token = token();
            if self.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_err() {
                self.closed.push(token);
                continue;
            }
            let connection = Connection {
                stream,
                head: Vec::new(),
                response: Vec::new(),
                written: 0,
                opened: WallInstant::now(),
                taken: false,
            };
            self.connections.insert(token, connection);
        }
    }

    /// Moves bytes on a ready connection; returns its request once complete (once).
    pub fn ready(&mut self, token: Token) -> Option<Request> {
        let connection = self.connections.get_mut(&token)?;
        if connection.taken {
            if connection.flush() {
                self.close(token);
            }
            return None;
        }
        if !connection.fill() {
            self.close(token);
            return None;
        }
        let request = parse_head(&connection.head)?;
        connection.taken = true;
        Some(request)
    }

    /// Answers the connection's request and closes it once the answer is sent.
    pub fn answer(&mut self, token: Token, status: &str, content_type: &str, body: &[u8]) {
        let Some(connection) = self.connections.get_mut(&token) else { return };
        let head = format!(
            "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        connection.response = [head.as_bytes(), body].concat();
        if connection.flush() {
            self.close(token);
        }
    }

    /// Closes connections past [`CONNECTION_TIMEOUT`].
    pub fn sweep(&mut self) {
        let expired: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.opened.elapsed() > CONNECTION_TIMEOUT)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            self.close(token);
        }
    }

    /// The tokens of connections closed since the last call: the caller forgets them.
    pub fn take_closed(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.closed)
    }

    fn close(&mut self, token: Token) {
        if let Some(mut connection) = self.connections.remove(&token) {
            let _ = self.registry.deregister(&mut connection.stream);
            self.closed.push(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once_its_head_is_complete() {
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Get("/metrics".into()))
        );
        assert_eq!(parse_head(b"GET /metrics?x=1 HTTP/1.0\n\n"), Some(Request::Get("/metrics".into())));
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::Invalid("405 Method Not Allowed"))
        );
        assert_eq!(parse_head(b"hello\r\n\r\n"), Some(Request::Invalid("400 Bad Request")));
        let endless = vec![b'a'; MAX_REQUEST_HEAD_BYTES];
        assert_eq!(parse_head(&endless), Some(Request::Invalid("431 Request Header Fields Too Large")));
    }
}
