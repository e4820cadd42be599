//! The event loop's side of the control socket: accepting connections, executing control
//! commands through the driver (the same inputs the loop's own events use, so a command from
//! `udplb ctl` is handled exactly like SIGHUP or a probe result), streaming events to
//! watchers, and the reload that SIGHUP and `ctl reload` share.
//!
//! Everything runs between two readiness events of the loop, never blocks, and is bounded by
//! the server's own limits ([`super::server`]).

use std::sync::Arc;

use mio::Token;
use udplb_core::{AdminCommand, AdminError, BackendCommand, Config, Input};

use super::protocol::{
    BackendAction, DEFAULT_FLOW_LIMIT, FlowAction, FlowView, ListenerAction, ReloadView, Request, Response,
    ShowWhat, WatchEvent,
};
use super::status;
use crate::event_loop::EventLoop;
use crate::mio_platform::Source;
use crate::workers::{FlowAnswer, FlowQuestion, PendingQuery, ToFollower, worker_config};

/// Largest `limit` a `show flows` request may ask for: one answer stays a few megabytes.
const MAX_FLOW_LIMIT: usize = 10_000;
/// Requests answered per readiness event of one connection before serving the others.
const REQUESTS_PER_EVENT: usize = 16;
/// How long the leader waits for every worker's answer about flows before answering with an
/// error (a worker's loop answers on its next turn: well under a millisecond when it is well).
const QUERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a `ctl reload` waits for every worker to apply the configuration before it is
/// answered anyway, with a warning naming the workers that had not.
const RELOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The workers' answers to one question, as one response: every worker's flows (by worker,
/// then in table order), at most `limit` for `show flows` with the total of all; an error if a
/// worker did not answer in time, or could not.
fn merge_answers(query: PendingQuery) -> Response {
    let mut answers = query.answers;
    answers.sort_by_key(|(worker, _)| *worker);
    let missing: Vec<String> = (0..query.workers)
        .filter(|worker| !answers.iter().any(|(answered, _)| answered == worker))
        .map(|worker| worker.to_string())
        .collect();
    // A reload is applied whatever the followers answer: their failures are warnings.
    let reloaded = matches!(query.question, FlowQuestion::Reloaded(_));
    if !missing.is_empty() && !reloaded {
        return Response::error(format!(
            "worker {} did not answer within {QUERY_DEADLINE:?}, so no flow is listed rather than \
             part of them; ask again",
            missing.join(", ")
        ));
    }
    if let Some(error) = answers.iter().find_map(|(_, answer)| answer.error.clone())
        && !reloaded
    {
        return Response::error(error);
    }
    match query.question {
        FlowQuestion::Reloaded(view) => {
            Response { reload: Some(reload_applied(*view, &answers, &missing)), ..Response::ok() }
        }
        FlowQuestion::Flows { limit } => {
            let total = answers.iter().map(|(_, answer)| answer.total).sum();
            let flows = answers.into_iter().flat_map(|(_, answer)| answer.flows).take(limit).collect();
            Response { flows: Some(flows), flows_total: Some(total), ..Response::ok() }
        }
        FlowQuestion::Client(_) => {
            let mut flows = Vec::new();
            let mut explanations = Vec::new();
            for (_, answer) in answers {
                flows.extend(answer.flows);
                explanations.extend(answer.explanations);
            }
            Response { flows: Some(flows), explanations: Some(explanations), ..Response::ok() }
        }
        FlowQuestion::CloseClient(ref label) | FlowQuestion::CloseBackend { ref label, .. } => {
            let closed: u64 = answers.iter().map(|(_, answer)| answer.total).sum();
            let flows: Vec<FlowView> = answers.into_iter().flat_map(|(_, answer)| answer.flows).collect();
            let noun = if closed == 1 { "flow" } else { "flows" };
            tracing::info!(of = %label, closed, "flows closed by an operator");
            Response { flows: Some(flows), ..Response::message(format!("{label}: closed {closed} {noun}")) }
        }
    }
}

/// The leader's account of a reload completed with the followers' acknowledgements: the flows
/// every worker closed, and a warning for each worker that failed or had not applied it yet.
fn reload_applied(mut view: ReloadView, answers: &[(u32, FlowAnswer)], missing: &[String]) -> ReloadView {
    for (worker, answer) in answers.iter().filter(|(worker, _)| *worker != 0) {
        view.flows_closed += answer.total;
        if let Some(error) = &answer.error {
            view.warnings.push(format!("worker {worker}: {error}"));
        }
    }
    if !missing.is_empty() {
        view.warnings.push(format!(
            "worker {} had not applied the configuration within {RELOAD_DEADLINE:?} (it will on its \
             next turn); until then it serves with the previous one",
            missing.join(", ")
        ));
    }
    tracing::info!(
        event = %"config_reload_applied",
        workers_applied = answers.len(),
        flows_closed = view.flows_closed,
        "the workers applied the configuration (flows_closed counts all of theirs)"
    );
    view
}

impl EventLoop {
    pub(crate) fn accept_control(&mut self) {
        let Some(control) = &mut self.control else { return };
        let platform = self.driver.platform_mut();
        control.accept(|| platform.token(Source::Control));
    }

    pub(crate) fn serve_control(&mut self, token: Token) {
        for _ in 0..REQUESTS_PER_EVENT {
            // A connection's answers go out in the order it asked: nothing more is read from
            // it while a question of its waits for the other workers.
            if self.queries.waits_on(token) || self.handover_request.is_some_and(|(asked, ..)| asked == token)
            {
                break;
            }
            let Some(request) = self.control.as_mut().and_then(|control| control.next_request(token)) else {
                break;
            };
            // `None`: the other workers were asked; `finish_queries` answers.
            if let Some(response) = self.execute(token, request)
                && let Some(control) = &mut self.control
            {
                control.respond(token, &response);
            }
        }
    }

    /// Asks every worker `question` about its own flow table, for control connection
    /// `token`. With one worker the answer is at hand; with followers each is sent the
    /// question and the answer goes out once all have answered (`finish_queries`), never a
    /// part of the flows presented as all of them.
    fn ask_workers(&mut self, token: Token, question: FlowQuestion) -> Option<Response> {
        let own = self.answer_question(&question, 0);
        let followers = self.followers().len() as u32;
        let id = self.queries.next_id;
        let query = PendingQuery {
            id,
            token,
            question,
            answers: vec![(0, own)],
            workers: 1 + followers,
            deadline: std::time::Instant::now() + QUERY_DEADLINE,
        };
        if followers == 0 {
            return Some(merge_answers(query));
        }
        self.queries.next_id += 1;
        for follower in self.followers() {
            follower.send(ToFollower::Query { id, question: query.question.clone() });
        }
        self.queries.pending.push(query);
        None
    }

    /// This worker's answer to `question` (it is worker `worker`): from its own table; a close
    /// question closes the flows it names first (close reason `Aborted`, through the driver,
    /// so their upstreams are released) and answers with what they were.
    pub(crate) fn answer_question(&mut self, question: &FlowQuestion, worker: u32) -> FlowAnswer {
        let now = self.driver.platform().now();
        let mut answer = match status::flows_to_close(self.driver.core(), now, question) {
            None => return status::answer(self.driver.core(), &self.config, now, question, worker),
            Some(Err(error)) => FlowAnswer { error: Some(error), ..FlowAnswer::default() },
            Some(Ok(status::ToClose { ids, views })) => {
                for flow in &ids {
                    // A flow cannot end between the scan and here: both are in this turn.
                    let _ = self.driver.handle(now, Input::Admin(AdminCommand::CloseFlow(*flow)));
                }
                FlowAnswer { total: ids.len() as u64, flows: views, ..FlowAnswer::default() }
            }
        };
        for flow in &mut answer.flows {
            flow.worker = worker;
        }
        answer
    }

    /// A follower's answer to question `id`.
    pub(crate) fn take_answer(&mut self, id: u64, worker: u32, answer: FlowAnswer) {
        if let Some(query) = self.queries.pending.iter_mut().find(|query| query.id == id) {
            query.answers.push((worker, answer));
        }
    }

    /// Answers every question that has all its answers, or has waited past its deadline (an
    /// error then: a partial list would be a wrong answer), then serves what its connection
    /// asked next.
    pub(crate) fn finish_queries(&mut self) {
        let now = std::time::Instant::now();
        let (done, waiting): (Vec<PendingQuery>, Vec<PendingQuery>) =
            std::mem::take(&mut self.queries.pending)
                .into_iter()
                .partition(|query| query.answers.len() as u32 >= query.workers || now >= query.deadline);
        self.queries.pending = waiting;
        for query in done {
            let token = query.token;
            let response = merge_answers(query);
            if let Some(control) = &mut self.control {
                control.respond(token, &response);
            }
            self.serve_control(token);
        }
    }

    /// Executes one command. Changes go through the driver, so their outputs (events,
    /// closed flows) are acted on before the answer is written. `None`: a question about
    /// flows went to the other workers, and is answered when they have answered.
    fn execute(&mut self, token: Token, request: Request) -> Option<Response> {
        match request {
            Request::Show { what: ShowWhat::Flows, limit, .. } => {
                let limit = limit.unwrap_or(DEFAULT_FLOW_LIMIT).min(MAX_FLOW_LIMIT);
                self.ask_workers(token, FlowQuestion::Flows { limit })
            }
            Request::Show { what: ShowWhat::Flow, client: Some(client), .. } => {
                self.ask_workers(token, FlowQuestion::Client(client))
            }
            Request::Flow { client, action: FlowAction::Close } => {
                self.ask_workers(token, FlowQuestion::CloseClient(client))
            }
            Request::Backend { cluster, id, action: BackendAction::CloseFlows, weight: None } => {
                match self.driver.core().flows().backend_id(&cluster, &id) {
                    Some(backend) => self.ask_workers(
                        token,
                        FlowQuestion::CloseBackend { backend, label: format!("{cluster}/{id}") },
                    ),
                    None => Some(Response::error(format!("no backend {id:?} in cluster {cluster:?}"))),
                }
            }
            Request::Reload => self.reload_for(token),
            Request::Handover { pid, protocol } if self.handover_request.is_none() => {
                // Carried out at the end of the turn (`event_loop/handover.rs`): the answer is
                // the handover itself.
                self.handover_request = Some((token, pid, protocol));
                None
            }
            request => Some(self.execute_now(token, request)),
        }
    }

    /// `ctl reload`: applies the file, then answers once every follower has applied it too
    /// (`finish_queries`), so that an operator (or a script) who sends traffic after the
    /// answer finds every worker on the new configuration and its listeners open.
    fn reload_for(&mut self, token: Token) -> Option<Response> {
        let followers = self.followers().len() as u32;
        let id = self.queries.next_id;
        let view = match self.reload((followers > 0).then_some(id)) {
            Ok(view) => view,
            Err(message) => {
                return Some(Response::error(format!(
                    "reload rejected; the running configuration is kept:\n{message}"
                )));
            }
        };
        if followers == 0 {
            return Some(Response { reload: Some(view), ..Response::ok() });
        }
        self.queries.next_id += 1;
        self.queries.pending.push(PendingQuery {
            id,
            token,
            question: FlowQuestion::Reloaded(Box::new(view)),
            answers: vec![(0, FlowAnswer::default())],
            workers: 1 + followers,
            deadline: std::time::Instant::now() + RELOAD_DEADLINE,
        });
        None
    }

    /// Executes a command this worker answers alone.
    fn execute_now(&mut self, token: Token, request: Request) -> Response {
        let now = self.driver.platform().now();
        let totals = self.totals();
        let core = self.driver.core();
        match request {
            Request::Show { what: ShowWhat::Listeners, .. } => {
                Response { listeners: Some(status::listeners(core, &self.config, &totals)), ..Response::ok() }
            }
            Request::Show { what: ShowWhat::Clusters, .. } => {
                Response { clusters: Some(status::clusters(core, &self.config)), ..Response::ok() }
            }
            Request::Show { what: ShowWhat::Backends, .. } => {
                Response { backends: Some(status::backends(core, now, &totals)), ..Response::ok() }
            }
            Request::Show { what: ShowWhat::Flows, .. }
            | Request::Show { what: ShowWhat::Flow, client: Some(_), .. } => {
                Response::error("internal: a question about flows goes to every worker")
            }
            Request::Show { what: ShowWhat::Flow, client: None, .. } => {
                Response::error("show flow needs a \"client\" address")
            }
            Request::Flow { .. } => Response::error("internal: closing flows goes to every worker"),
            Request::Backend { cluster, id, action, weight } => {
                self.backend_command(&cluster, &id, action, weight)
            }
            Request::Listener { name, action } => self.listener_command(&name, action),
            Request::Reload => Response::error("internal: a reload is answered once every worker applied it"),
            Request::Handover { .. } => Response::error("another process is taking over already"),
            Request::Watch => {
                if let Some(control) = &mut self.control {
                    control.watch(token);
                }
                self.driver.platform_mut().notices.set_watching(true);
                Response { watching: Some(true), ..Response::ok() }
            }
        }
    }

    fn backend_command(
        &mut self,
        cluster: &str,
        id: &str,
        action: BackendAction,
        weight: Option<u32>,
    ) -> Response {
        let Some(backend) = self.driver.core().flows().backend_id(cluster, id) else {
            return Response::error(format!("no backend {id:?} in cluster {cluster:?}"));
        };
        let (command, done) = match (action, weight) {
            (BackendAction::Weight, Some(weight)) => {
                (BackendCommand::Weight(weight), format!("weight {weight}"))
            }
            (BackendAction::Weight, None) => return Response::error("action \"weight\" needs a \"weight\""),
            (_, Some(_)) => return Response::error("\"weight\" goes only with action \"weight\""),
            (BackendAction::Pause, None) => (BackendCommand::Pause, "paused".to_owned()),
            (BackendAction::Resume, None) => (BackendCommand::Resume, "resumed".to_owned()),
            (BackendAction::Enable, None) => (BackendCommand::Enable, "enabled".to_owned()),
            (BackendAction::Disable, None) => (BackendCommand::Disable, "disabled".to_owned()),
            (BackendAction::Drain, None) => (BackendCommand::Drain, "draining".to_owned()),
            (BackendAction::CloseFlows, None) => {
                return Response::error("internal: closing flows goes to every worker");
            }
        };
        let now = self.driver.platform().now();
        match self.driver.handle(now, Input::Backend { backend, command }) {
            Ok(()) => {
                // States reach the other workers from the monitor; a weight is theirs to set.
                if let BackendCommand::Weight(_) = command {
                    for follower in self.followers() {
                        follower.send(ToFollower::Input(Input::Backend { backend, command }));
                    }
                }
                tracing::info!(cluster, backend = id, %done, "backend command");
                Response::message(format!("{cluster}/{id}: {done}"))
            }
            // The core names backends by number; the operator named it by cluster and id.
            Err(AdminError::NotPaused { state, .. }) => {
                Response::error(format!("{cluster}/{id} is {state}; only a paused backend can be resumed"))
            }
            Err(error) => Response::error(format!("{cluster}/{id}: {error}")),
        }
    }

    fn listener_command(&mut self, name: &str, action: ListenerAction) -> Response {
        let Some(listener) = self.driver.core().flows().listener_id(name) else {
            return Response::error(format!("no listener {name:?}"));
        };
        let command = match action {
            ListenerAction::Drain => AdminCommand::DrainListener(listener),
            ListenerAction::Resume => AdminCommand::ResumeListener(listener),
        };
        let now = self.driver.platform().now();
        match self.driver.handle(now, Input::Admin(command)) {
            Ok(()) => {
                for follower in self.followers() {
                    follower.send(ToFollower::Input(Input::Admin(command)));
                }
                let remaining = self.driver.core().flows().listener_flows(listener);
                let done = match action {
                    ListenerAction::Drain => format!("draining, {remaining} flows remaining"),
                    ListenerAction::Resume => "taking new flows".to_owned(),
                };
                tracing::info!(listener = name, %done, "listener command");
                Response::message(format!("{name}: {done}"))
            }
            Err(error) => Response::error(format!("{name}: {error}")),
        }
    }

    /// Streams the events queued since the last turn to every watcher.
    pub(crate) fn publish_events(&mut self) {
        let platform = self.driver.platform_mut();
        let Some(control) = &mut self.control else { return };
        let watching = control.has_watchers();
        platform.notices.set_watching(watching);
        if !watching {
            return;
        }
        let (queued, lost) = platform.notices.take_watch_events();
        let now = platform.now();
        if lost > 0 {
            control.broadcast(&WatchEvent::EventsLost { count: lost });
        }
        for output in &queued {
            if let Some(event) = status::watch_event(self.driver.core(), output, now) {
                control.broadcast(&event);
            }
        }
    }

    /// Re-reads the configuration file and applies it: the one path for SIGHUP and
    /// `udplb ctl reload`. An invalid file keeps the running configuration; the error is the
    /// rendered list of problems (file, line, column, field). With `ack`, every follower
    /// acknowledges the reload as question `ack` (see [`ToFollower::Reload`]).
    pub(crate) fn reload(&mut self, ack: Option<u64>) -> Result<ReloadView, String> {
        crate::system::sd_notify("RELOADING=1");
        let result = self.apply_config_file(ack);
        self.reloads.count(result.is_ok());
        match &result {
            Ok(view) => {
                // Names joined with commas: one field per list, readable in either log format.
                let names = |list: &[String]| list.join(",");
                tracing::info!(
                    event = %"config_reloaded",
                    listeners_added = %names(&view.listeners_added),
                    listeners_removed = %names(&view.listeners_removed),
                    listeners_updated = %names(&view.listeners_updated),
                    clusters_added = %names(&view.clusters_added),
                    clusters_removed = %names(&view.clusters_removed),
                    backends_added = %names(&view.backends_added),
                    backends_removed = %names(&view.backends_removed),
                    health_restarted = %names(&view.health_restarted),
                    flows_closed = view.flows_closed,
                    "configuration reloaded"
                );
                for warning in &view.warnings {
                    tracing::warn!(event = %"config_reload_warning", %warning, "reload applied with a warning");
                }
            }
            Err(message) => tracing::error!("reload rejected; keeping the running configuration:\n{message}"),
        }
        crate::system::sd_notify("READY=1");
        result
    }

    fn apply_config_file(&mut self, ack: Option<u64>) -> Result<ReloadView, String> {
        let file = self.config_path.display().to_string();
        let text = std::fs::read_to_string(&self.config_path).map_err(|error| format!("{file}: {error}"))?;
        let config = Config::from_toml_str(&text).map_err(|errors| errors.render(&file))?;
        // The running worker count holds until a restart; each worker gets its share of flows.
        let workers = self.followers().len() as u32 + 1;
        let effective = worker_config(&config, workers, self.default_max_flows);
        let now = self.driver.platform().now();
        let reload = self.driver.reload(now, &effective).map_err(|errors| {
            let lines: Vec<String> =
                errors.iter().map(|e| format!("{file}: field `{}`: {e}", e.path())).collect();
            lines.join("\n")
        })?;
        let mut warnings = Vec::new();
        // The leader binds new listeners before the followers are told: its check that no
        // other process serves a new address must not find a follower's socket.
        {
            let (core, platform) = self.driver.parts_mut();
            if let Err(error) = platform.sync_listeners(core, &effective) {
                warnings.push(format!("a new listener could not be opened: {error:#}"));
            }
        }
        self.running = effective.clone();
        let shared = Arc::new(effective);
        for follower in self.followers() {
            follower.send(ToFollower::Reload { config: shared.clone(), ack });
        }
        let (core, platform) = self.driver.parts_mut();
        platform.notices.counters.retain_backends(|backend| core.flows().backend_cluster(backend).is_some());
        for field in self.started.restart_only_changes(&config.process) {
            warnings.push(format!(
                "{field} differs from the value udplb started with; it takes effect at the next start \
                 (until then the running value holds)"
            ));
        }
        let view = status::reload_view(core, &reload, warnings);
        self.config = config;
        self.config_text = text;
        Ok(view)
    }
}
