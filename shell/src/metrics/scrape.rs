//! The event loop's side of the metrics endpoint: accepting connections and answering each
//! scrape with the text [`super::render`] makes of every worker's counters. Like the control
//! socket, it is served between two readiness events of the loop, never blocks, and is
//! bounded by the server's own limits ([`super::http`]).

use mio::Token;

use super::http::{CONTENT_TYPE, Request as HttpRequest};
use crate::event_loop::EventLoop;
use crate::mio_platform::Source;

impl EventLoop {
    pub(crate) fn accept_metrics(&mut self) {
        let Some(metrics) = &mut self.metrics else { return };
        let platform = self.driver.platform_mut();
        metrics.accept(|| platform.token(Source::Metrics));
    }

    pub(crate) fn serve_metrics(&mut self, token: Token) {
        let Some(request) = self.metrics.as_mut().and_then(|metrics| metrics.ready(token)) else { return };
        let (status, content_type, body) = match request {
            HttpRequest::Get(path) if path == "/metrics" => {
                let totals = self.totals();
                let counters = &self.driver.platform().notices.counters;
                let text = super::render(self.driver.core(), counters, &totals, &self.reloads);
                ("200 OK", CONTENT_TYPE, text)
            }
            HttpRequest::Get(_) => {
                ("404 Not Found", "text/plain", "not found; metrics are at /metrics\n".to_owned())
            }
            HttpRequest::Invalid(status) => (status, "text/plain", String::new()),
        };
        if let Some(metrics) = &mut self.metrics {
            metrics.answer(token, status, content_type, body.as_bytes());
        }
    }
}
