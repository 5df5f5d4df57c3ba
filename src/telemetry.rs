//! Logging set-up.

use std::sync::OnceLock;

use tracing::{Level, Metadata, level_filters::LevelFilter};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
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

/// Log lines waiting for stderr at most. Past it, lines are dropped and counted
/// ([`dropped_lines`]) rather than making a request wait for a slow stderr (a full pipe, a
/// stalled log collector): about 3 MB of access-log lines, a few seconds of a busy server.
pub const LOG_BUFFER_LINES: usize = 16 * 1024;

/// What counts the lines the full buffer dropped, once [`init`] has run.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped because stderr did not keep up (`wxauth_log_lines_dropped_total`).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filtered, to stderr through
/// a thread of its own (see [`LOG_BUFFER_LINES`]). Keep the guard until the process ends:
/// dropping it writes out the lines still buffered. Installs nothing if a subscriber is
/// installed already (tests).
pub fn init(format: LogFormat) -> Option<WorkerGuard> {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The cap never lets more through than the environment's filter, so it claims that
    // filter's level. Claiming more (or nothing, which counts as "anything") would let
    // `log` records through the `log` crate's level check for every `trace!` of libraries
    // using it (sled logs on every write), to be dropped only after being converted to
    // tracing events: 5 % of a login's CPU.
    let cap = filter_fn(allowed).with_max_level_hint(env.max_level_hint().unwrap_or(LevelFilter::TRACE));
    if tracing::dispatcher::has_been_set() {
        return None;
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("wxauth-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let layer = fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
        LogFormat::Text => layer.boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(env).with_filter(cap)).try_init().ok()?;
    Some(guard)
}
