//! The control socket: a unix stream socket in the event loop's own `mio::Poll`, speaking
//! JSON lines ([`super::protocol`]).
//!
//! The socket file is created with mode 0600 (only udplb's own user may connect: every
//! command, `reload` included, is an operator's), a stale file from a killed process is
//! removed at start, and the file is removed when the server is dropped. Everything is
//! non-blocking and bounded: [`MAX_CONNECTIONS`] connections, [`MAX_REQUEST_BYTES`] per request
//! line, one request answered at a time per connection (the next line is read only once the
//! previous answer is written, so a client that does not read cannot grow our buffers), and
//! [`MAX_WATCH_BUFFER_BYTES`] of unsent events per watcher: a watcher that falls further
//! behind gets a last `watcher_dropped` line and is closed, so one slow reader never holds
//! events for the others or memory for itself.
//!
//! Commands are executed by the event loop (`commands.rs`), through the
//! driver, exactly as the loop's own inputs are: this module only moves bytes.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use anyhow::Context;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

pub use super::protocol::MAX_REQUEST_BYTES;
use super::protocol::{Request, Response, TimedEvent, WatchEvent};

/// Control connections open at once; one more is told so and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// Unsent bytes a watcher may have queued before it is dropped.
pub const MAX_WATCH_BUFFER_BYTES: usize = 1 << 20;
/// How long a connection being closed may take to read its last lines.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Connections accepted per readiness event before serving the other sockets.
const ACCEPTS_PER_EVENT: usize = 64;

struct Connection {
    stream: UnixStream,
    /// Bytes read and not yet taken as a request line.
    input: Vec<u8>,
    /// Bytes to send; `output[written..]` is still unsent.
    output: Vec<u8>,
    written: usize,
    watching: bool,
    /// The peer closed its side: no more requests will come.
    read_closed: bool,
    /// Close once the output is sent (or [`CLOSE_GRACE`] after this time).
    closing: Option<WallInstant>,
}

impl Connection {
    fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// Sends what the socket takes now. Returns false when the connection is broken.
    fn flush(&mut self) -> bool {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return false,
                Ok(sent) => self.written += sent,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        self.output.clear();
        self.written = 0;
        true
    }

    /// Reads until the socket is empty or the input buffer holds a whole request line's
    /// worth. Returns false when the connection is broken.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        while !self.read_closed && self.input.len() < MAX_REQUEST_BYTES {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.read_closed = true,
                Ok(_) if self.watching => {} // a watcher's input is ignored
                Ok(read) => self.input.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }

    fn queue_line(&mut self, line: &[u8]) {
        self.output.extend_from_slice(line);
        self.output.push(b'\n');
    }

    fn close_after_flush(&mut self) {
        self.closing.get_or_insert_with(WallInstant::now);
    }
}

/// The listening socket and its connections.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode, so that dropping the server never removes a file that
    /// another process has put in its place since.
    inode: u64,
    registry: Registry,
    connections: BTreeMap<Token, Connection>,
    /// Tokens of connections closed since the caller last asked ([`Self::take_closed`]).
    closed: Vec<Token>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl ControlServer {
    /// Creates the socket file (mode 0600) and registers it under `token`.
    pub fn bind(path: &Path, registry: &Registry, token: Token) -> anyhow::Result<ControlServer> {
        remove_stale(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // The umask makes the file 0600 from its creation, so no other user can connect in
        // the moment before the chmod below; the chmod covers a umask we could not narrow.
        // SAFETY: umask only swaps the process's file creation mask; nothing else runs yet.
        let previous = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the mask we replaced.
        unsafe { libc::umask(previous) };
        let mut listener =
            bound.with_context(|| format!("cannot create the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let inode = std::fs::symlink_metadata(path)?.ino();
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            inode,
            registry: registry.try_clone()?,
            connections: BTreeMap::new(),
            closed: Vec::new(),
        })
    }

    /// A control server on a listening socket handed over by the process that bound it at
    /// `path` (`crate::handover`): the file stays as it is, and stays the old process's (a
    /// drop leaves it) until [`ControlServer::claim_file`].
    pub fn adopt(
        path: &Path,
        listener: std::os::fd::OwnedFd,
        registry: &Registry,
        token: Token,
    ) -> anyhow::Result<ControlServer> {
        let listener = std::os::unix::net::UnixListener::from(listener);
        listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(listener);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            inode: u64::MAX,
            registry: registry.try_clone()?,
            connections: BTreeMap::new(),
            closed: Vec::new(),
        })
    }

    /// The socket file is this process's now (it serves): dropping the server removes it.
    pub fn claim_file(&mut self) {
        if let Ok(metadata) = std::fs::symlink_metadata(&self.path) {
            self.inode = metadata.ino();
        }
    }

    /// A copy of the listening socket, for a handover.
    pub fn listener_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// The socket file now belongs to the process this one handed over to: dropping the
    /// server leaves it in place.
    pub fn leave_file(&mut self) {
        self.inode = u64::MAX;
    }

    /// Takes connection `token` out of the server (a handover carries on it by itself).
    pub fn take_stream(&mut self, token: Token) -> Option<UnixStream> {
        let mut connection = self.connections.remove(&token)?;
        let _ = self.registry.deregister(&mut connection.stream);
        self.closed.push(token);
        Some(connection.stream)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether any connection is watching: the loop collects events only then.
    pub fn has_watchers(&self) -> bool {
        self.connections.values().any(|c| c.watching && c.closing.is_none())
    }

    /// Whether a connection waits for something time-based (its close grace).
    pub fn has_closing(&self) -> bool {
        self.connections.values().any(|c| c.closing.is_some())
    }

    /// Accepts pending connections; `token` names a new one (the caller records what it is).
    pub fn accept(&mut self, mut token: impl FnMut() -> Token) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "control socket: accept failed");
                    break;
                }
            };
            if self.connections.len() >= MAX_CONNECTIONS {
                // Best effort: a new socket's send buffer takes one short line.
                let mut line = serde_json::to_vec(&Response::error(format!(
                    "too many control connections (at most {MAX_CONNECTIONS}); try again later"
                )))
                .unwrap_or_default();
                line.push(b'\n');
                let _ = stream.write(&line);
                continue;
            }
            let token = token();
            if self.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_err() {
                self.closed.push(token);
                continue;
            }
            let connection = Connection {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                watching: false,
                read_closed: false,
                closing: None,
            };
            self.connections.insert(token, connection);
        }
    }

    /// Moves bytes on a ready connection and returns its next complete request, if it may
    /// take one now (its previous answer is fully sent). Call again after answering until it
    /// returns `None`. A request line that does not parse is answered here.
    pub fn next_request(&mut self, token: Token) -> Option<Request> {
        // A bounded loop: each pass either returns, answers a malformed line (consuming it),
        // or stops because nothing more can move.
        for _ in 0..64 {
            let connection = self.connections.get_mut(&token)?;
            if !connection.flush() || !connection.fill() {
                self.close(token);
                return None;
            }
            if connection.pending() > 0 || connection.watching || connection.closing.is_some() {
                return None;
            }
            let Some(end) = connection.input.iter().position(|b| *b == b'\n') else {
                if connection.input.len() >= MAX_REQUEST_BYTES {
                    let error =
                        Response::error(format!("request line longer than {MAX_REQUEST_BYTES} bytes"));
                    self.respond(token, &error);
                    self.connections.get_mut(&token)?.close_after_flush();
                } else if connection.read_closed {
                    connection.close_after_flush();
                }
                return None;
            };
            let line: Vec<u8> = connection.input.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Request>(text.trim()) {
                Ok(request) => return Some(request),
                Err(error) => self.respond(token, &Response::error(format!("bad request: {error}"))),
            }
        }
        None
    }

    /// Queues one answer and sends what the socket takes now.
    pub fn respond(&mut self, token: Token, response: &Response) {
        let Some(connection) = self.connections.get_mut(&token) else { return };
        match serde_json::to_vec(response) {
            Ok(line) => connection.queue_line(&line),
            Err(error) => connection.queue_line(format!("{{\"ok\":false,\"error\":\"{error}\"}}").as_bytes()),
        }
        if !connection.flush() {
            self.close(token);
        }
    }

    /// Turns the connection into a watcher: it gets every event from now on.
    pub fn watch(&mut self, token: Token) {
        if let Some(connection) = self.connections.get_mut(&token) {
            connection.watching = true;
            connection.input.clear();
        }
    }

    /// Sends one event to every watcher; drops a watcher whose queue is over its bound.
    pub fn broadcast(&mut self, event: &WatchEvent) {
        let timed = TimedEvent {
            time: Some(crate::system::iso8601_utc(std::time::SystemTime::now())),
            event: event.clone(),
        };
        let Ok(line) = serde_json::to_vec(&timed) else { return };
        let mut broken = Vec::new();
        for (token, connection) in &mut self.connections {
            if !connection.watching || connection.closing.is_some() {
                continue;
            }
            if connection.pending() + line.len() + 1 > MAX_WATCH_BUFFER_BYTES {
                drop_slow_watcher(connection);
            } else {
                connection.queue_line(&line);
            }
            if !connection.flush() {
                broken.push(*token);
            }
        }
        for token in broken {
            self.close(token);
        }
    }

    /// Closes connections that are done: closing ones that have sent everything (or ran out
    /// of grace), and watchers whose peer went away.
    pub fn sweep(&mut self) {
        let done: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| match c.closing {
                Some(since) => c.pending() == 0 || since.elapsed() > CLOSE_GRACE,
                None => c.watching && c.read_closed,
            })
            .map(|(token, _)| *token)
            .collect();
        for token in done {
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

/// Replaces a slow watcher's backlog by its last line: what it has partly received is
/// finished (so it never sees half a line), everything after is dropped, and it is closed.
fn drop_slow_watcher(connection: &mut Connection) {
    let unsent = &connection.output[connection.written..];
    let line_end = if connection.written == 0 || connection.output[connection.written - 1] == b'\n' {
        connection.written
    } else {
        connection.written + unsent.iter().position(|b| *b == b'\n').map_or(unsent.len(), |i| i + 1)
    };
    connection.output.truncate(line_end);
    let reason = format!("more than {MAX_WATCH_BUFFER_BYTES} bytes of events unread");
    if let Ok(line) = serde_json::to_vec(&WatchEvent::WatcherDropped { reason }) {
        connection.queue_line(&line);
    }
    connection.watching = false;
    connection.close_after_flush();
    tracing::warn!("control socket: dropped a watcher that read too slowly");
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuses (before anything is bound) to run beside the process that owns the control socket
/// at `path`: a socket file there that accepts a connection belongs to a running udplb.
pub fn refuse_if_in_use(path: &Path) -> anyhow::Result<()> {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "the control socket {} is in use by a running process (another udplb?); stop it \
             first, or give this one another process.control_socket",
            path.display()
        );
    }
    Ok(())
}

/// Removes a socket file left by a process that died without cleaning up. A socket that
/// still answers belongs to a running udplb, and anything that is not a socket is not ours:
/// both are errors rather than something to delete.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !metadata.file_type().is_socket() {
        anyhow::bail!("{} exists and is not a socket; not replacing it", path.display());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("{} is in use by a running process (another udplb?)", path.display());
    }
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    tracing::info!(path = %path.display(), "removed a stale control socket");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream as StdUnixStream;

    use mio::Poll;

    use super::*;

    fn server(name: &str) -> (Poll, ControlServer, PathBuf) {
        let path =
            std::env::temp_dir().join(format!("udplb-control-unit-{}-{name}.sock", std::process::id()));
        let poll = Poll::new().unwrap();
        let server = ControlServer::bind(&path, poll.registry(), Token(1)).unwrap();
        (poll, server, path)
    }

    fn tokens() -> impl FnMut() -> Token {
        let mut next = 100;
        move || {
            next += 1;
            Token(next)
        }
    }

    fn event() -> WatchEvent {
        let cluster = "pool".to_owned();
        WatchEvent::BackendAdmin {
            cluster,
            backend: "b0".into(),
            from: "enabled".into(),
            to: "paused".into(),
            uptime_ms: 1,
        }
    }

    #[test]
    fn a_watcher_that_does_not_read_is_dropped_with_a_last_line() {
        let (_poll, mut server, _path) = server("slow");
        let client = StdUnixStream::connect(server.path()).unwrap();
        server.accept(tokens());
        server.watch(Token(101));
        assert!(server.has_watchers());
        // Far more than the bound and the kernel's socket buffers together.
        for _ in 0..(4 * MAX_WATCH_BUFFER_BYTES / 100) {
            server.broadcast(&event());
        }
        assert!(!server.has_watchers(), "the slow watcher is no longer fed");
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(client);
        let mut line = String::new();
        // Reading drains the socket; the server sends the rest as room appears.
        while lines.len() < 100_000 {
            line.clear();
            server.next_request(Token(101));
            server.sweep();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => lines.push(line.trim_end().to_owned()),
            }
        }
        let last = lines.last().expect("some lines");
        assert!(last.contains("watcher_dropped"), "{last}");
        assert!(lines[..lines.len() - 1].iter().all(|l| l.contains("backend_admin")), "whole lines only");
        assert!(lines.len() < 4 * MAX_WATCH_BUFFER_BYTES / 100, "the backlog was cut");
    }

    #[test]
    fn connections_beyond_the_bound_are_told_and_closed() {
        let (_poll, mut server, _path) = server("many");
        let clients: Vec<StdUnixStream> =
            (0..=MAX_CONNECTIONS).map(|_| StdUnixStream::connect(server.path()).unwrap()).collect();
        server.accept(tokens());
        let extra = clients.last().unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        BufReader::new(extra).read_line(&mut answer).unwrap();
        assert!(answer.contains("too many control connections"), "{answer}");
    }

    #[test]
    fn the_socket_file_is_private_and_removed_with_the_server() {
        let (_poll, server, path) = server("mode");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(server);
        assert!(!path.exists());
    }
}
