//! `udplb ctl`: the client side of the control socket. It sends one request
//! ([`super::protocol`]), prints the answer as a table for people or, with `--json`, as the
//! server's JSON line for scripts, and exits 0 on success, 1 on a refused command or a
//! connection problem. `watch` prints events until interrupted. `check listener NAME` is the
//! exception: it asks several questions and answers one, whether the listener is serving, in
//! the exit status a BGP speaker's health check reads (0 serving, 1 not, 2 cannot tell); see
//! [`check_listener`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::protocol::{
    BackendAction, BackendView, ClusterView, FlowAction, ListenerAction, ListenerView, Request, Response,
    ShowWhat, TimedEvent, WatchEvent,
};

/// Where `udplb ctl` looks when neither `--socket` nor `-c` is given.
pub const DEFAULT_SOCKET: &str = "/run/udplb/control.sock";
/// How long `ctl` waits for an answer by default (every command is answered within one loop
/// turn, or within a second for a question every worker answers).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A `ctl` command line.
#[derive(Clone, Debug, Subcommand)]
pub enum CtlCommand {
    /// Show listeners, clusters, backends, flows, or one client's flows and why.
    Show {
        #[command(subcommand)]
        what: ShowCommand,
    },
    /// Change a backend: pause, resume, enable, disable, drain, or weight N.
    Backend {
        /// The cluster's name.
        cluster: String,
        /// The backend's id within the cluster.
        id: String,
        #[command(subcommand)]
        action: ActionCommand,
    },
    /// Drain a listener (no new flows; existing ones end by their own teardown) or resume it.
    Listener {
        /// The listener's name.
        name: String,
        #[command(subcommand)]
        action: ListenerActionCommand,
    },
    /// Act on one client's live flows: `close` ends them now (the next datagram starts anew).
    Flow {
        /// The client's address, with a port (one socket) or without (every socket of the host).
        client: String,
        #[command(subcommand)]
        action: FlowActionCommand,
    },
    /// Re-read the configuration file (as SIGHUP does) and report what changed or why not.
    Reload,
    /// Print events (health transitions, admin changes, drains, listener states) as they happen.
    Watch,
    /// Whether a listener is serving, for a health check that announces its VIP (ExaBGP's
    /// healthcheck, a script driving BIRD): exit 0 serving, 1 not, 2 when udplb cannot be
    /// asked; one line on stdout says why.
    Check {
        #[command(subcommand)]
        what: CheckCommand,
    },
}

#[derive(Clone, Debug, Subcommand)]
pub enum CheckCommand {
    /// Exit 0 when the listener is serving, 1 when it is not, 2 when udplb cannot be asked.
    ///
    /// Serving: the listener exists, is not draining, is not withdrawn (--withdraw-file), and
    /// new flows would be forwarded: its cluster has an eligible backend that has passed a
    /// health check (or has no active checks), or fails open over enabled backends.
    Listener {
        /// The listener's name.
        name: String,
        /// Report "not serving" while this file exists, whatever udplb's state: the switch
        /// that withdraws the VIP from the router before a drain, while udplb still takes
        /// every flow the router sends until it has converged.
        #[arg(long, value_name = "FILE")]
        withdraw_file: Option<PathBuf>,
        /// Report "not serving" when no backend is eligible even if the cluster fails open
        /// (by default an instance failing open serves, as it forwards new flows).
        #[arg(long)]
        require_eligible: bool,
    },
}

#[derive(Clone, Debug, Subcommand)]
pub enum ShowCommand {
    Listeners,
    Clusters,
    Backends,
    Flows {
        /// Most flows to list.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One client's live flows: which backend, and why.
    Flow {
        /// The client's address, with a port (one socket) or without (every socket of the host).
        client: String,
    },
}

#[derive(Copy, Clone, Debug, Subcommand)]
pub enum ActionCommand {
    /// Stop probing and take no new flows; the last health state is kept as it was.
    Pause,
    /// Undo pause.
    Resume,
    /// Take new flows again.
    Enable,
    /// Take no new flows; existing flows continue.
    Disable,
    /// Take no new flows; existing flows end by their own teardown.
    Drain,
    /// Set the weight until the next reload.
    Weight {
        /// The new weight: new flows' share relative to the other backends' (0 takes none).
        weight: u32,
    },
    /// Close every live flow on the backend now (new flows may still come: disable or drain
    /// it first to keep them away).
    CloseFlows,
}

#[derive(Copy, Clone, Debug, Subcommand)]
pub enum FlowActionCommand {
    /// Close the flows now (close reason `aborted`); the client's next datagram starts a new
    /// flow, placed as any new flow is.
    Close,
}

#[derive(Copy, Clone, Debug, Subcommand)]
pub enum ListenerActionCommand {
    /// Take no new flows; existing flows end by their own teardown or at `drain_timeout`.
    Drain,
    /// Take new flows again.
    Resume,
}

impl CtlCommand {
    /// The one request this command sends; `None` for `check`, which asks several.
    pub fn to_request(&self) -> Option<Request> {
        Some(match self {
            CtlCommand::Show { what } => {
                let (what, client, limit) = match what {
                    ShowCommand::Listeners => (ShowWhat::Listeners, None, None),
                    ShowCommand::Clusters => (ShowWhat::Clusters, None, None),
                    ShowCommand::Backends => (ShowWhat::Backends, None, None),
                    ShowCommand::Flows { limit } => (ShowWhat::Flows, None, *limit),
                    ShowCommand::Flow { client } => (ShowWhat::Flow, Some(client.clone()), None),
                };
                Request::Show { what, client, limit }
            }
            CtlCommand::Backend { cluster, id, action } => {
                let (action, weight) = match action {
                    ActionCommand::Pause => (BackendAction::Pause, None),
                    ActionCommand::Resume => (BackendAction::Resume, None),
                    ActionCommand::Enable => (BackendAction::Enable, None),
                    ActionCommand::Disable => (BackendAction::Disable, None),
                    ActionCommand::Drain => (BackendAction::Drain, None),
                    ActionCommand::Weight { weight } => (BackendAction::Weight, Some(*weight)),
                    ActionCommand::CloseFlows => (BackendAction::CloseFlows, None),
                };
                Request::Backend { cluster: cluster.clone(), id: id.clone(), action, weight }
            }
            CtlCommand::Listener { name, action } => Request::Listener {
                name: name.clone(),
                action: match action {
                    ListenerActionCommand::Drain => ListenerAction::Drain,
                    ListenerActionCommand::Resume => ListenerAction::Resume,
                },
            },
            CtlCommand::Flow { client, action: FlowActionCommand::Close } => {
                Request::Flow { client: client.clone(), action: FlowAction::Close }
            }
            CtlCommand::Reload => Request::Reload,
            CtlCommand::Watch => Request::Watch,
            CtlCommand::Check { .. } => return None,
        })
    }

    /// The exit status for a failure before udplb could be asked (a bad `--timeout`, a
    /// configuration file without the socket): 1, or [`CHECK_UNKNOWN`] for `check`, whose 1
    /// means "not serving".
    pub fn failure_code(&self) -> ExitCode {
        match self {
            CtlCommand::Check { .. } => ExitCode::from(CHECK_UNKNOWN),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Connects, explaining the usual failures in words.
pub fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path).map_err(|error| {
        let why = match error.kind() {
            std::io::ErrorKind::NotFound => {
                "no such socket: is udplb running, with process.control_socket set to this path?"
            }
            std::io::ErrorKind::ConnectionRefused => {
                "nothing is listening (a socket left by a stopped udplb?)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: the socket is mode 0600; run as udplb's user"
            }
            _ => "cannot connect",
        };
        anyhow::anyhow!("{}: {why} ({error})", path.display())
    })
}

/// Runs one `ctl` command against the socket at `path`.
pub fn run(path: &Path, json: bool, timeout: Duration, command: &CtlCommand) -> ExitCode {
    if let CtlCommand::Check { what: CheckCommand::Listener { name, withdraw_file, require_eligible } } =
        command
    {
        let options =
            CheckOptions { withdraw_file: withdraw_file.clone(), require_eligible: *require_eligible };
        let verdict = check_listener(path, timeout, name, &options);
        println!("{}", if json { verdict.to_json() } else { verdict.line() });
        return verdict.exit_code();
    }
    match exchange(path, json, timeout, command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("udplb ctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn exchange(path: &Path, json: bool, timeout: Duration, command: &CtlCommand) -> anyhow::Result<ExitCode> {
    let Some(request) = command.to_request() else {
        anyhow::bail!("this command is not one request");
    };
    let stream = connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let answer = ask(path, timeout, &stream, &mut reader, &request)?;
    let response: Response = serde_json::from_str(&answer).context("reading the answer")?;
    if json {
        println!("{answer}");
    } else if response.ok {
        print!("{}", render(&response));
    }
    if !response.ok {
        if !json {
            eprintln!("udplb ctl: {}", response.error.as_deref().unwrap_or("refused"));
        }
        return Ok(ExitCode::FAILURE);
    }
    if matches!(command, CtlCommand::Watch) {
        stream.set_read_timeout(None)?;
        while let Some(line) = read_line(&mut reader)? {
            if json {
                println!("{line}");
            } else if let Ok(timed) = serde_json::from_str::<TimedEvent>(&line) {
                println!("{}", render_timed_event(&timed));
            }
            std::io::stdout().flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one request on `stream` and reads its answer line from `reader` (the same
/// connection), explaining a timeout or a closed connection in words.
fn ask(
    path: &Path,
    timeout: Duration,
    mut stream: &UnixStream,
    reader: &mut impl BufRead,
    request: &Request,
) -> anyhow::Result<String> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).context("sending the request")?;
    match read_line(reader) {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => anyhow::bail!("{}: udplb closed the connection without answering", path.display()),
        Err(error) if is_timeout(&error) => anyhow::bail!(
            "{}: no answer within {:?}. Something accepted the connection but did not answer: a \
             udplb that is stuck, or another program on this socket. Check `systemctl status udplb` \
             (or the process) and the log; --timeout waits longer",
            path.display(),
            timeout
        ),
        Err(error) => Err(error),
    }
}

/// `check`'s exit status when udplb could not be asked (no socket, no answer, an answer it
/// could not read): the health check cannot tell, and a BGP speaker withdraws as it would for 1.
pub const CHECK_UNKNOWN: u8 = 2;

/// How `check listener` judges.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Not serving while this file exists.
    pub withdraw_file: Option<PathBuf>,
    /// Not serving when no backend is eligible, even while the cluster fails open.
    pub require_eligible: bool,
}

/// What `check listener` found: serving or not, and why, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckVerdict {
    pub listener: String,
    /// `Some(true)` serving, `Some(false)` not, `None` udplb could not be asked.
    pub serving: Option<bool>,
    pub reason: String,
}

impl CheckVerdict {
    fn serving(listener: &str, reason: String) -> CheckVerdict {
        CheckVerdict { listener: listener.to_owned(), serving: Some(true), reason }
    }

    fn not_serving(listener: &str, reason: String) -> CheckVerdict {
        CheckVerdict { listener: listener.to_owned(), serving: Some(false), reason }
    }

    /// 0 serving, 1 not serving, [`CHECK_UNKNOWN`] cannot tell.
    pub fn exit_code(&self) -> ExitCode {
        match self.serving {
            Some(true) => ExitCode::SUCCESS,
            Some(false) => ExitCode::FAILURE,
            None => ExitCode::from(CHECK_UNKNOWN),
        }
    }

    /// `vip: serving (…)`, `vip: not serving: …`, `vip: unknown: …`.
    pub fn line(&self) -> String {
        match self.serving {
            Some(true) => format!("{}: serving ({})", self.listener, self.reason),
            Some(false) => format!("{}: not serving: {}", self.listener, self.reason),
            None => format!("{}: unknown: {}", self.listener, self.reason),
        }
    }

    /// `{"listener":"vip","serving":true,"reason":"…"}` (`serving` null when unknown).
    pub fn to_json(&self) -> String {
        serde_json::json!({ "listener": self.listener, "serving": self.serving, "reason": self.reason })
            .to_string()
    }
}

/// Whether listener `name` of the udplb at `path` is serving — whether a router should send
/// it clients. Serving means all of:
///
/// - `options.withdraw_file`, if given, does not exist (looked at first: an operator who
///   withdrew the VIP is obeyed whatever udplb says, and even when it cannot be asked);
/// - the listener exists and is not draining (a draining listener refuses new flows);
/// - new flows would be forwarded: the listener is `up` (an eligible backend has passed its
///   health check, or the cluster has no active checks), or it is `down` and the cluster
///   fails open over at least one administratively enabled backend (unless
///   `options.require_eligible`). `unknown` — active checks have not yet reported on any
///   eligible backend, right after a start or a reload — is not serving: a speaker announces
///   once the first check has passed.
///
/// The answers come from `show listeners`, `show clusters` and `show backends` on one
/// connection. A refused or unreadable answer, or no answer, is "cannot tell".
pub fn check_listener(path: &Path, timeout: Duration, name: &str, options: &CheckOptions) -> CheckVerdict {
    if let Some(file) = &options.withdraw_file
        && file.exists()
    {
        return CheckVerdict::not_serving(name, format!("withdrawn ({} exists)", file.display()));
    }
    match ask_check_questions(path, timeout) {
        Ok((listeners, clusters, backends)) => {
            judge_listener(name, &listeners, &clusters, &backends, options.require_eligible)
        }
        Err(error) => CheckVerdict { listener: name.to_owned(), serving: None, reason: format!("{error:#}") },
    }
}

type CheckAnswers = (Vec<ListenerView>, Vec<ClusterView>, Vec<BackendView>);

fn ask_check_questions(path: &Path, timeout: Duration) -> anyhow::Result<CheckAnswers> {
    let stream = connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut show = |what: ShowWhat| -> anyhow::Result<Response> {
        let request = Request::Show { what, client: None, limit: None };
        let answer = ask(path, timeout, &stream, &mut reader, &request)?;
        let response: Response = serde_json::from_str(&answer).context("reading the answer")?;
        if !response.ok {
            anyhow::bail!("udplb refused `show`: {}", response.error.as_deref().unwrap_or("no reason given"));
        }
        Ok(response)
    };
    let listeners = show(ShowWhat::Listeners)?.listeners.context("`show listeners` listed no listeners")?;
    let clusters = show(ShowWhat::Clusters)?.clusters.context("`show clusters` listed no clusters")?;
    let backends = show(ShowWhat::Backends)?.backends.context("`show backends` listed no backends")?;
    Ok((listeners, clusters, backends))
}

/// The verdict from the three answers (see [`check_listener`]).
pub fn judge_listener(
    name: &str,
    listeners: &[ListenerView],
    clusters: &[ClusterView],
    backends: &[BackendView],
    require_eligible: bool,
) -> CheckVerdict {
    let Some(listener) = listeners.iter().find(|l| l.name == name) else {
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        let known = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        return CheckVerdict::not_serving(name, format!("no listener named {name} (listeners: {known})"));
    };
    if listener.draining {
        return CheckVerdict::not_serving(name, format!("draining ({} flows remaining)", listener.flows));
    }
    let cluster_name = &listener.cluster;
    let cluster = clusters.iter().find(|c| &c.name == cluster_name);
    let members: Vec<&BackendView> = backends.iter().filter(|b| &b.cluster == cluster_name).collect();
    let eligible = members.iter().filter(|b| b.eligible).count();
    let enabled = members.iter().filter(|b| b.admin == "enabled").count();
    let total = members.len();
    match listener.state.as_str() {
        "up" => CheckVerdict::serving(
            name,
            format!("cluster {cluster_name}: {eligible} of {total} backends eligible"),
        ),
        "unknown" => CheckVerdict::not_serving(
            name,
            format!("cluster {cluster_name}: no health check result yet (state unknown)"),
        ),
        _ => {
            let fail_open = cluster.is_some_and(|c| c.fail_open);
            if !fail_open {
                CheckVerdict::not_serving(
                    name,
                    format!("cluster {cluster_name}: no backend eligible, and fail_open is off"),
                )
            } else if enabled == 0 {
                CheckVerdict::not_serving(
                    name,
                    format!("cluster {cluster_name}: no backend eligible, and none enabled to fail open to"),
                )
            } else if require_eligible {
                CheckVerdict::not_serving(
                    name,
                    format!(
                        "cluster {cluster_name}: no backend eligible (failing open over {enabled}, \
                         which --require-eligible does not count)"
                    ),
                )
            } else {
                CheckVerdict::serving(
                    name,
                    format!(
                        "cluster {cluster_name}: no backend eligible, failing open over {enabled} enabled"
                    ),
                )
            }
        }
    }
}

/// Whether reading failed because the answer timeout ran out (a socket read timeout shows as
/// `WouldBlock` on Linux, `TimedOut` elsewhere).
fn is_timeout(error: &anyhow::Error) -> bool {
    error.downcast_ref::<std::io::Error>().is_some_and(|error| {
        matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    })
}

fn read_line(reader: &mut impl BufRead) -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    let read = reader.read_line(&mut line).context("reading from udplb")?;
    Ok((read > 0).then(|| line.trim_end().to_owned()))
}

/// The socket path from a configuration file's `process.control_socket`. Only that key is
/// read: `ctl -c FILE reload` must still find the socket when the rest of the file has just
/// been broken (the reload then reports what is wrong). A file that is not valid TOML — the
/// most common way to break one — is read line by line for the key (see
/// [`scan_control_socket`]); when even that fails, the error says why and what to do.
pub fn socket_from_config(config: &Path) -> anyhow::Result<PathBuf> {
    let file = config.display().to_string();
    let text = std::fs::read_to_string(config).with_context(|| file.clone())?;
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(error) => {
            return scan_control_socket(&text).ok_or_else(|| {
                let line = error
                    .span()
                    .map_or(1, |span| text.get(..span.start).unwrap_or(&text).matches('\n').count() + 1);
                anyhow::anyhow!(
                    "{file} is not valid TOML (line {line}: {}), and no line `control_socket = \"…\"` \
                     was found in its [process] table; name the socket with --socket PATH",
                    error.message()
                )
            });
        }
    };
    let path = table.get("process").and_then(|process| process.get("control_socket"));
    match path {
        Some(toml::Value::String(path)) => Ok(PathBuf::from(path)),
        Some(_) => anyhow::bail!("{file}: process.control_socket is not a string"),
        None => anyhow::bail!("{file} sets no process.control_socket"),
    }
}

/// Finds `control_socket` in a text that does not parse as a whole: a line `control_socket =
/// "…"` under a `[process]` header, or `process.control_socket = "…"` before any header. The
/// value is read by the TOML parser on its own, so quoting and escapes mean what they mean
/// in the file. `None` when there is no such line, or more than one (which is meant is not
/// for `ctl` to guess).
pub fn scan_control_socket(text: &str) -> Option<PathBuf> {
    let mut section: Option<String> = None;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            // `[process]  # comment`; `[[array]]` is never `process`.
            section = header.split(']').next().map(|name| name.trim().to_owned());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key: String = key.split('.').map(str::trim).collect::<Vec<_>>().join(".");
        let wanted = match section.as_deref() {
            None => "process.control_socket",
            Some("process") => "control_socket",
            Some(_) => continue,
        };
        if key != wanted {
            continue;
        }
        let single: toml::Table = format!("value = {}", value.trim()).parse().ok()?;
        found.push(single.get("value")?.as_str()?.to_owned());
    }
    match found.as_slice() {
        [only] => Some(PathBuf::from(only)),
        _ => None,
    }
}

/// A duration for people: `0.4s`, `12.0s`, `3m05s`, `2h07m`.
pub fn age(milliseconds: u64) -> String {
    let seconds = milliseconds / 1000;
    match seconds {
        0..60 => format!("{}.{}s", seconds, (milliseconds % 1000) / 100),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A successful answer for people.
pub fn render(response: &Response) -> String {
    if let Some(listeners) = &response.listeners {
        let rows: Vec<Vec<String>> = listeners
            .iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    l.address.clone(),
                    l.cluster.clone(),
                    l.state.clone(),
                    yes_no(l.draining),
                    l.flows.to_string(),
                    l.flows_retired.to_string(),
                    l.affinity.clone(),
                ]
            })
            .collect();
        let headers = ["LISTENER", "ADDRESS", "CLUSTER", "STATE", "DRAINING", "FLOWS", "RETIRED", "AFFINITY"];
        return table(&headers, &rows);
    }
    if let Some(clusters) = &response.clusters {
        let rows: Vec<Vec<String>> = clusters
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.algorithm.clone(),
                    c.fingerprint.clone(),
                    format!("{}/{}", c.eligible, c.backends),
                    yes_no(c.all_down),
                    yes_no(c.fail_open),
                    c.listeners.join(","),
                ]
            })
            .collect();
        let headers =
            ["CLUSTER", "ALGORITHM", "FINGERPRINT", "ELIGIBLE", "ALL-DOWN", "FAIL-OPEN", "LISTENERS"];
        return table(&headers, &rows);
    }
    if let Some(backends) = &response.backends {
        let rows: Vec<Vec<String>> = backends
            .iter()
            .map(|b| {
                let last = match (&b.last_code, b.last_check_ms_ago) {
                    (Some(code), Some(ago)) => format!("{code} {} ago", age(ago)),
                    (Some(code), None) => code.clone(),
                    (None, _) => "-".to_owned(),
                };
                vec![
                    b.cluster.clone(),
                    b.id.clone(),
                    b.address.clone(),
                    b.health.clone(),
                    b.admin.clone(),
                    yes_no(b.eligible),
                    b.weight.to_string(),
                    b.flows.to_string(),
                    b.counter.clone(),
                    last,
                ]
            })
            .collect();
        let headers = [
            "CLUSTER",
            "BACKEND",
            "ADDRESS",
            "HEALTH",
            "ADMIN",
            "ELIGIBLE",
            "WEIGHT",
            "FLOWS",
            "COUNTER",
            "LAST CHECK",
        ];
        return table(&headers, &rows);
    }
    if let Some(explanations) = &response.explanations {
        return render_explanations(response, explanations);
    }
    // `flow CLIENT close`, `backend … close-flows`: what was done, then the flows it closed.
    if let (Some(message), Some(flows)) = (&response.message, &response.flows) {
        let listed = Response { message: None, ..response.clone() };
        return if flows.is_empty() {
            format!("{message}\n")
        } else {
            format!("{message}\n{}", render(&listed))
        };
    }
    if let Some(flows) = &response.flows {
        // With several workers each flow is named by its worker too (serials are per worker).
        let workers = flows.iter().any(|f| f.worker > 0);
        let rows: Vec<Vec<String>> = flows
            .iter()
            .map(|f| {
                let flow = if workers { format!("{}/{}", f.worker, f.flow) } else { f.flow.to_string() };
                vec![
                    flow,
                    f.listener.clone(),
                    f.vip.clone(),
                    f.via.as_ref().map_or_else(|| f.client.clone(), |via| format!("{} via {via}", f.client)),
                    format!("{}/{}", f.cluster, f.backend),
                    age(f.age_ms),
                    f.requests.to_string(),
                    f.responses.to_string(),
                    yes_no(f.retired),
                ]
            })
            .collect();
        let first = if workers { "WORKER/FLOW" } else { "FLOW" };
        let headers =
            [first, "LISTENER", "VIP", "CLIENT", "BACKEND", "AGE", "REQUESTS", "RESPONSES", "RETIRED"];
        let mut text = table(&headers, &rows);
        if let Some(total) = response.flows_total.filter(|total| *total > flows.len() as u64) {
            text.push_str(&format!("({} of {total} flows shown; --limit shows more)\n", flows.len()));
        }
        return text;
    }
    if let Some(reload) = &response.reload {
        let mut lines = vec!["configuration reloaded".to_owned()];
        for (what, names) in [
            ("listeners added", &reload.listeners_added),
            ("listeners removed", &reload.listeners_removed),
            ("listeners updated", &reload.listeners_updated),
            ("clusters added", &reload.clusters_added),
            ("clusters removed", &reload.clusters_removed),
            ("backends added", &reload.backends_added),
            ("backends removed", &reload.backends_removed),
            ("health restarted", &reload.health_restarted),
        ] {
            if !names.is_empty() {
                lines.push(format!("  {what}: {}", names.join(", ")));
            }
        }
        if reload.flows_closed > 0 {
            lines.push(format!("  flows closed: {}", reload.flows_closed));
        }
        lines.extend(reload.warnings.iter().map(|w| format!("  warning: {w}")));
        return lines.join("\n") + "\n";
    }
    if response.watching == Some(true) {
        return "watching; events follow (interrupt to stop)\n".to_owned();
    }
    response.message.as_ref().map_or_else(String::new, |m| format!("{m}\n"))
}

fn render_explanations(response: &Response, explanations: &[super::protocol::FlowExplanation]) -> String {
    let flows = response.flows.as_deref().unwrap_or_default();
    if flows.is_empty() {
        return "no live flow for this client\n".to_owned();
    }
    let mut text = String::new();
    for (flow, why) in flows.iter().zip(explanations) {
        let worker = if flow.worker > 0 { format!(" (worker {})", flow.worker) } else { String::new() };
        let table = if why.fingerprint.starts_with(&why.fingerprint_at_admission) {
            format!("table fingerprint {} (unchanged since admission)", why.fingerprint)
        } else {
            format!(
                "table fingerprint at admission {}…, now {}",
                why.fingerprint_at_admission, why.fingerprint
            )
        };
        let algorithm_now = why
            .algorithm_now
            .as_ref()
            .map(|now| format!(" (the cluster uses {now} now)"))
            .unwrap_or_default();
        text.push_str(&format!(
            "flow {}{worker} on listener {} at {}: client {} -> backend {}/{} ({})\n\
             \x20 admitted {} ({} ago), {} requests, {} responses, retired: {}\n\
             \x20 chosen by {}{algorithm_now} (affinity {})\n\
             \x20 {table}\n\
             \x20 backend now: health {}, admin {}, eligible: {}\n",
            flow.flow,
            flow.listener,
            flow.vip,
            match &flow.via {
                Some(via) => format!("{} (via {via})", flow.client),
                None => flow.client.clone(),
            },
            flow.cluster,
            flow.backend,
            flow.backend_address,
            why.admitted_at,
            age(flow.age_ms),
            flow.requests,
            flow.responses,
            yes_no(flow.retired),
            why.rule,
            why.affinity,
            why.backend_health_now,
            why.backend_admin_now,
            yes_no(why.backend_eligible_now),
        ));
    }
    text
}

/// One event for people, stamped with the time udplb sent it (ISO 8601, UTC), or with
/// udplb's uptime from a server too old to send the time.
pub fn render_timed_event(timed: &TimedEvent) -> String {
    let text = render_event(&timed.event);
    match &timed.time {
        // `[    12.3s] backend …`: the uptime stamp is replaced by the time of day.
        Some(time) => match text.split_once("] ") {
            Some((_, rest)) => format!("{time} {rest}"),
            None => format!("{time} {text}"),
        },
        None => text,
    }
}

/// One event for people.
pub fn render_event(event: &WatchEvent) -> String {
    let at = |uptime_ms: &u64| format!("[{:>10}]", age(*uptime_ms));
    match event {
        WatchEvent::BackendHealth { cluster, backend, from, to, code, uptime_ms } => {
            format!("{} backend {cluster}/{backend} health {from} -> {to} ({code})", at(uptime_ms))
        }
        WatchEvent::BackendAdmin { cluster, backend, from, to, uptime_ms } => {
            format!("{} backend {cluster}/{backend} admin {from} -> {to}", at(uptime_ms))
        }
        WatchEvent::BackendDrained { cluster, backend, uptime_ms } => {
            format!("{} backend {cluster}/{backend} drained", at(uptime_ms))
        }
        WatchEvent::BackendEjected { cluster, backend, for_ms, uptime_ms } => {
            format!("{} backend {cluster}/{backend} ejected for {}", at(uptime_ms), age(*for_ms))
        }
        WatchEvent::BackendReadmitted { cluster, backend, uptime_ms } => {
            format!("{} backend {cluster}/{backend} readmitted", at(uptime_ms))
        }
        WatchEvent::BackendFault { cluster, backend, fault, count, uptime_ms } => {
            format!("{} backend {cluster}/{backend} {fault} x{count}", at(uptime_ms))
        }
        WatchEvent::ClusterAllDown { cluster, uptime_ms } => {
            format!("{} cluster {cluster}: every backend down", at(uptime_ms))
        }
        WatchEvent::ClusterRecovered { cluster, uptime_ms } => {
            format!("{} cluster {cluster} recovered", at(uptime_ms))
        }
        WatchEvent::ListenerState { listener, state, uptime_ms } => {
            format!("{} listener {listener} {state}", at(uptime_ms))
        }
        WatchEvent::ListenerDraining { listener, flows_remaining, uptime_ms } => {
            format!("{} listener {listener} draining, {flows_remaining} flows remaining", at(uptime_ms))
        }
        WatchEvent::ListenerDrained { listener, uptime_ms } => {
            format!("{} listener {listener} drained", at(uptime_ms))
        }
        WatchEvent::ListenerResumed { listener, uptime_ms } => {
            format!("{} listener {listener} resumed", at(uptime_ms))
        }
        WatchEvent::EventsLost { count } => format!("({count} events lost)"),
        WatchEvent::WatcherDropped { reason } => format!("(dropped by udplb: {reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_socket_is_found_in_a_file_that_does_not_parse() {
        let broken = "[process]  # the usual place\ncontrol_socket = '/run/udplb/a.sock'  # mine\n\n[listeners.dns\naddress = \n";
        assert_eq!(scan_control_socket(broken), Some(PathBuf::from("/run/udplb/a.sock")));
        let dotted = "process . control_socket = \"/tmp/b \\u00e9.sock\"\n[clusters.x]\nbackends = [\n";
        assert_eq!(scan_control_socket(dotted), Some(PathBuf::from("/tmp/b é.sock")));
        // In another table, twice, or not a string: not guessed.
        assert_eq!(scan_control_socket("[listeners.x]\ncontrol_socket = \"/a\"\n"), None);
        assert_eq!(
            scan_control_socket("[process]\ncontrol_socket = \"/a\"\ncontrol_socket = \"/b\"\n"),
            None
        );
        assert_eq!(scan_control_socket("[process]\ncontrol_socket = 5\n"), None);
        assert_eq!(scan_control_socket("[[process]]\ncontrol_socket = \"/a\"\n"), None);
    }

    #[test]
    fn a_file_without_the_key_says_why_and_what_to_do() {
        let dir = std::env::temp_dir().join(format!("udplb-ctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broken.toml");
        std::fs::write(&file, "[listeners.dns\naddress = 1\n").unwrap();
        let error = format!("{:#}", socket_from_config(&file).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(error.contains("is not valid TOML (line 1:") && error.contains("--socket PATH"), "{error}");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0.0s");
        assert_eq!(age(430), "0.4s");
        assert_eq!(age(59_999), "59.9s");
        assert_eq!(age(185_000), "3m05s");
        assert_eq!(age(7_650_000), "2h07m");
    }

    #[test]
    fn requests_have_the_documented_shape() {
        let weight = CtlCommand::Backend {
            cluster: "dns".into(),
            id: "a".into(),
            action: ActionCommand::Weight { weight: 5 },
        };
        assert_eq!(
            serde_json::to_string(&weight.to_request().unwrap()).unwrap(),
            r#"{"command":"backend","cluster":"dns","id":"a","action":"weight","weight":5}"#
        );
        let show = CtlCommand::Show { what: ShowCommand::Backends };
        assert_eq!(
            serde_json::to_string(&show.to_request().unwrap()).unwrap(),
            r#"{"command":"show","what":"backends"}"#
        );
        let unknown = serde_json::from_str::<Request>(r#"{"command":"show","what":"backends","colour":1}"#);
        assert!(unknown.is_err(), "unknown fields are refused");
    }
}
