//! Semantic checks on a parsed `Config`. (Placeholder: being replaced.)

use super::Config;

/// A configuration that parses but cannot run.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl Config {
    /// Checks cross-references and ranges.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut errors = Vec::new();
        for (name, listener) in &self.listeners {
            if !self.clusters.contains_key(&listener.cluster) {
                errors.push(ValidationError {
                    path: format!("listeners.{name}.cluster"),
                    message: format!("unknown cluster {:?}", listener.cluster),
                });
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
