//! The compact trace: one line per notable event, with exact virtual time. Snapshot-tested,
//! so it holds only what a reader needs and nothing that varies between equal runs.

use udplb_core::Instant;

/// Lines of one run, bounded.
#[derive(Debug, Default)]
pub struct Trace {
    lines: Vec<String>,
    dropped: u64,
}

/// A trace longer than this keeps its first lines and counts the rest.
const MAX_LINES: usize = 400;

impl Trace {
    pub fn line(&mut self, at: Instant, text: String) {
        if self.lines.len() < MAX_LINES {
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
