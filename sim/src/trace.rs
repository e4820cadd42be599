//! The compact trace: one line per notable event, with exact virtual time. Snapshot-tested,
//! so it holds only what a reader needs and nothing that varies between equal runs.

use udplb_core::Instant;

/// Lines of one run, bounded.
#[derive(Debug, Default)]
pub struct Trace {
    lines: Vec<String>,
    dropped: u64,
    /// Lines kept at most (0: `MAX_LINES`).
    limit: usize,
}

/// A trace longer than this keeps its first lines and counts the rest.
const MAX_LINES: usize = 400;

/// The bound of a detailed trace (every flow and probe), which is read, not snapshot-tested.
pub const DETAILED_MAX_LINES: usize = 1_000_000;

impl Trace {
    /// A trace that keeps up to `limit` lines.
    pub fn with_limit(limit: usize) -> Trace {
        Trace { limit, ..Trace::default() }
    }

    pub fn line(&mut self, at: Instant, text: String) {
        let limit = if self.limit == 0 { MAX_LINES } else { self.limit };
        if self.lines.len() < limit {
            self.lines.push(format!("{:>16} {text}", at.to_string()));
        } else {
            self.dropped += 1;
        }
    }

    /// The whole trace as text.
    pub fn render(&self) -> String {
        let mut text = self.lines.join("\n");
        if self.dropped > 0 {
            text.push_str(&format!("\n… {} more lines", self.dropped));
        }
        text.push('\n');
        text
    }
}
