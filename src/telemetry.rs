//! Logging set-up.

use tracing::{Level, Metadata, level_filters::LevelFilter};
use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Crates whose debug/trace output includes request URIs, and so would print the
/// AppSecret and codes that code2Session carries in its query string. Capped at WARN
/// whatever `RUST_LOG` asks for, including more specific targets such as
/// `reqwest::connect=trace`.
/// poem is capped too: its request log prints the query string, where a client might put
/// a code or a token; [`crate::api`] writes its own path-only access log instead.
const CHATTY_HTTP_CRATES: &[&str] = &["hyper", "hyper_util", "reqwest", "h2", "rustls", "poem"];

fn allowed(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let chatty = CHATTY_HTTP_CRATES
        .iter()
        .any(|krate| target.strip_prefix(krate).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")));
    // Levels order by verbosity: TRACE > DEBUG > INFO > WARN > ERROR.
    !chatty || *meta.level() <= Level::WARN
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filtered, to stderr.
/// Does nothing if one is already installed (tests).
pub fn init(format: LogFormat) {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The cap never lets more through than it is handed, so it claims no level of its own:
    // without a hint the combined hint is "anything", `log` records are then built for
    // every `trace!` of libraries using the `log` crate (sled logs on every write), and
    // are dropped only after being converted to tracing events.
    let cap = filter_fn(allowed).with_max_level_hint(LevelFilter::TRACE);
    let layer = fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
        LogFormat::Text => layer.boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer.with_filter(env).with_filter(cap)).try_init();
}
