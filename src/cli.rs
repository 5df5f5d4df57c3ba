//! The command line: `wxauth serve`, `wxauth keys rotate`, `wxauth keys list`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    config::{Mode, Settings},
    startup::Application,
    telemetry, token,
};

/// Logs WeChat mini-program users in and issues signed JWTs.
#[derive(Debug, Parser)]
#[command(name = "wxauth", version)]
pub struct Cli {
    /// TOML settings file; environment variables (WXAUTH_*) override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Dev mode: a built-in WeChat mock, generated keys, ./data. Never for real users.
        #[arg(long)]
        dev: bool,
    },
    /// Manage the signing key ring (WXAUTH_KEYS_DIR).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Key ring subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key (algorithm: WXAUTH_SIGNING_ALG). It signs after the server
    /// restarts or gets SIGHUP; older keys stay published so their tokens still verify.
    Rotate {
        /// Make a dev-mode key in an empty keys directory (a non-empty one keeps its
        /// mode). Dev and production keys never share a directory.
        #[arg(long)]
        dev: bool,
    },
    /// Show every key: kid, algorithm, creation time, and which one signs.
    List,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve { dev } => {
            let mode = if dev { Mode::Dev } else { Mode::Serve };
            let settings = Settings::load(cli.config.as_deref(), mode)?;
            if dev {
                // Printed whatever RUST_LOG says: dev mode must never start silently.
                eprintln!("wxauth: DEV MODE: WeChat is a local mock and any code logs in. Never expose this server.");
            }
            telemetry::init(settings.log_format);
            Application::build(settings).await?.run_until_stopped().await?;
        }
        Command::Keys(KeysCommand::Rotate { dev }) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let key = token::rotate(&settings.keys_dir, settings.token.signing_alg, dev)?;
            let mode = if key.dev { "dev-mode " } else { "" };
            println!("added {mode}{} key {} to {}", key.alg, key.kid, settings.keys_dir.display());
            println!("restart wxauth or send it SIGHUP to sign with it");
        }
        Command::Keys(KeysCommand::List) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let keys = token::list_keys(&settings.keys_dir)?;
            if keys.is_empty() {
                println!("no keys in {}; create one with `wxauth keys rotate`", settings.keys_dir.display());
            }
            let signer = keys.iter().rposition(|k| k.alg == settings.token.signing_alg);
            println!("{:<43}  {:<5}  {:<20}  {:<10}  signs", "kid", "alg", "created", "mode");
            for (i, key) in keys.iter().enumerate() {
                let created =
                    key.created.replace_nanosecond(0)?.format(&time::format_description::well_known::Rfc3339)?;
                let mark = if Some(i) == signer { "*" } else { "" };
                let mode = if key.dev { "dev" } else { "production" };
                println!("{:<43}  {:<5}  {:<20}  {mode:<10}  {mark}", key.kid, key.alg.to_string(), created);
            }
        }
    }
    Ok(())
}
