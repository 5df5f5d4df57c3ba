//! Logging set-up.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Crates whose debug/trace output includes request URIs, and so would print the
/// AppSecret and codes that code2Session carries in its query string. Capped whatever
/// `RUST_LOG` asks for.
const CHATTY_HTTP_CRATES: &[&str] = &["hyper", "hyper_util", "reqwest", "h2", "rustls", "poem"];

/// Installs the global subscriber: `RUST_LOG` (default `info`) filtered, to stderr.
/// Does nothing if one is already installed (tests).
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for krate in CHATTY_HTTP_CRATES {
        if let Ok(directive) = format!("{krate}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
