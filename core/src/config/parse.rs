//! Text → `Config`, with errors that carry line, column and field path.
//! (Placeholder: being replaced by the full implementation.)

use super::Config;
use super::validate::ValidationError;

/// 1-based line and column of an error in the configuration text.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigErrorKind {
    Syntax(String),
    Invalid(ValidationError),
}

/// One error: what, where (field path and location).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    pub path: String,
    pub location: Option<Location>,
}

/// Every error found in one configuration text.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl Config {
    /// Parses and validates a TOML configuration.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|error| {
            ConfigErrors(vec![ConfigError {
                kind: ConfigErrorKind::Syntax(error.message().to_string()),
                path: String::new(),
                location: None,
            }])
        })?;
        config.validate().map_err(|errors| {
            ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| ConfigError {
                        path: e.path.clone(),
                        kind: ConfigErrorKind::Invalid(e),
                        location: None,
                    })
                    .collect(),
            )
        })?;
        Ok(config)
    }
}
