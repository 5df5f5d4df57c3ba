//! The command line: `wxauth serve`, `wxauth keys ...`, `wxauth accounts ...`,
//! `wxauth users ...`, `wxauth admin-tokens ...`, `wxauth store ...`.

use std::path::PathBuf;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::{Parser, Subcommand};

use crate::{
    admin::{self, Command as AdminCommand, Reply, UserView},
    auth::admin_token,
    config::{Mode, Settings, StoreSettings},
    dirs,
    domain::{KeyMode, Password},
    password,
    startup::Application,
    store::{Store, StoreError, export::Record, sealed::Sealer},
    telemetry, token,
    token::Activation,
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
    /// Manage accounts (username and password) that WeChat identities bind to. Talks to
    /// the running server through its admin socket, or opens the store when none runs.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Look users up (through the admin socket, or the store when no server runs).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage admin API tokens: create one (printed once; the store keeps its hash), list
    /// them, revoke one. Through the admin socket, or the store when no server runs.
    #[command(subcommand, name = "admin-tokens")]
    AdminTokens(AdminTokensCommand),
    /// Move a store between backends (WXAUTH_STORE): export it as JSON lines, import them
    /// into an empty store.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// Store subcommands. They open the store the settings name, as `serve` would: run them
/// with the server stopped on sled (it admits one process); on PostgreSQL an export may
/// run while replicas serve. Sealed values (session keys, shared details) move as they
/// are, so the importing side needs the same WXAUTH_KEYS_DIR (its session-keys.secret).
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store the settings name, as the first `serve` would: the data directory
    /// (sled, mode 0700) or the schema (PostgreSQL), and the session-key encryption key in
    /// WXAUTH_KEYS_DIR. A keys or data directory that holds only wxauth's files is made
    /// private (0700); one that holds other files and is open to other users is refused.
    /// Does nothing to a store that exists.
    Init,
    /// Write every record (users, bindings, unionids, accounts, details, tickets, refresh
    /// tokens) to stdout, one JSON object per line. It holds password hashes and sealed
    /// session keys: keep it like the keys directory.
    Export {
        /// Write to FILE instead: created with mode 0600 whatever the umask, and never
        /// over an existing file (a shell's `> FILE` takes the shell's umask, often 0644).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Read an export from stdin into an empty store: all of it, or nothing.
    Import,
}

/// Account subcommands. Passwords are read from a prompt, or from stdin when it is not a
/// terminal (one line); never from the command line.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account with a new user of its own.
    Add {
        /// 1 to 64 letters, digits, '.', '_', '@' or '-'.
        username: String,
        /// The account's phone number: + and a country code (+8613800138000), or 11 digits
        /// of a mainland number. The person binds by proving it with getPhoneNumber.
        #[arg(long)]
        phone: Option<String>,
        /// No password: the account binds by its phone number only (needs --phone).
        #[arg(long, requires = "phone")]
        no_password: bool,
    },
    /// Give an account a phone number (unique across accounts), or take it away.
    SetPhone {
        /// The account.
        username: String,
        /// The number: + and a country code, or 11 digits of a mainland number.
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        phone: Option<String>,
        /// Take the account's number away.
        #[arg(long)]
        clear: bool,
    },
    /// Add the accounts of a CSV file (username,phone[,password_hash]; an optional header
    /// line starting with `username`): all of them, or none when any line is refused.
    Import {
        /// The file; `-` reads stdin.
        file: PathBuf,
    },
    /// Show every account with its user and bound WeChat identities.
    List,
    /// Remove an account, its user and the user's WeChat bindings.
    Remove {
        /// The account to remove.
        username: String,
    },
    /// Change an account's password.
    Passwd {
        /// The account.
        username: String,
    },
}

/// Admin token subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminTokensCommand {
    /// Create a token and print it once: wxauth keeps only its hash, so it cannot be shown
    /// again (revoke it and create another if it is lost).
    Create {
        /// A unique name, 1 to 64 letters, digits, '.', '_' or '-' (it appears in events).
        name: String,
        /// `read` (introspection, reading users and events) or `write` (also changing them).
        #[arg(long, default_value = "read", value_parser = ["read", "write"])]
        role: String,
    },
    /// List the tokens: name, role, id, created, revoked.
    List,
    /// Revoke a token by name: it stops working at once. It stays listed as revoked.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// User subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Show a user: identities, account, unionid, users sharing its unionid, roles, custom
    /// claims and ban.
    Show {
        /// A user id, an openid of any configured app, a unionid, an account's username or
        /// a verified phone number (13800138000 or +8613800138000).
        user: String,
    },
    /// Ban a user: logins, binds and refreshes answer 403 user_banned with the reason, and
    /// every refresh token of the user is revoked at once. Access tokens already issued
    /// stay valid until they expire.
    Ban {
        /// A user id, openid, unionid, username or phone number naming exactly one user.
        user: String,
        /// Why; the person sees it in the 403.
        #[arg(long)]
        reason: String,
        /// When the ban ends (RFC 3339, e.g. 2027-01-01T00:00:00+08:00); without it, until
        /// `wxauth users unban`.
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
    },
    /// Lift a user's ban.
    Unban {
        /// A user id, openid, unionid, username or phone number naming exactly one user.
        user: String,
    },
    /// Replace a user's roles (none: clear them). Access tokens issued from then on carry
    /// them in `roles`.
    SetRoles {
        /// A user id, openid, unionid, username or phone number naming exactly one user.
        user: String,
        /// Roles: 1 to 64 letters, digits, '.', '_', ':' or '-' each, at most 32.
        roles: Vec<String>,
    },
    /// Replace a user's custom claims with a JSON object (`{}` clears them). Access tokens
    /// issued from then on carry them at the top level. At most 1024 bytes; names wxauth or
    /// the JWT standards use are refused.
    SetClaims {
        /// A user id, openid, unionid, username or phone number naming exactly one user.
        user: String,
        /// A JSON object, e.g. '{"tier":"gold"}'.
        claims: String,
    },
    /// Merge two users who are one person (two users found to share a unionid): INTO keeps
    /// its id and gets FROM's identities, unionid, account and its phone number, the phone
    /// number and profile INTO lacks, FROM's roles and the claims INTO lacks, and FROM's
    /// sessions (its refresh tokens keep working, as INTO's) and events. FROM is removed.
    /// Refused when both have an identity of one app, different unionids or an account
    /// each, a deletion is pending, or FROM's ban holds longer than INTO's.
    Merge {
        /// The user that stays: a user id, openid, unionid, username or phone number.
        into: String,
        /// The user merged into it and removed.
        from: String,
    },
}

fn parse_time(raw: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 time such as 2027-01-01T00:00:00+08:00: {e}"))
}

/// Key ring subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key (algorithm: WXAUTH_SIGNING_ALG). It is published at once and
    /// signs after WXAUTH_KEY_ACTIVATION_SECS (the first key of an empty ring signs at
    /// once); older keys stay published while their tokens may be alive. Also creates the
    /// session-key encryption key (session-keys.secret) when the directory has none.
    Rotate {
        /// Make a dev-mode key in an empty keys directory (a non-empty one keeps its
        /// mode). Dev and production keys never share a directory.
        #[arg(long)]
        dev: bool,
        /// Sign with the new key at once, for a compromised key. Verifiers that cached the
        /// JWKS refuse its tokens until they refetch it (up to 5 minutes).
        #[arg(long)]
        now: bool,
    },
    /// Show every key: kid, algorithm, creation and activation times, and its state (next,
    /// active, retired).
    List,
    /// Remove retired keys whose tokens have all expired.
    Prune,
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
            // Held until `serve` returns: dropping it writes out the buffered log lines.
            let _log = telemetry::init(settings.log_format);
            for name in crate::config::unknown_env_vars() {
                tracing::warn!(variable = %name, "ignoring an environment variable that names no setting (a typo?)");
            }
            Application::build(settings).await?.run_until_stopped().await?;
        }
        Command::Keys(KeysCommand::Rotate { dev, now }) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let activation = if now { Activation::Now } else { Activation::After(settings.token.key_activation) };
            // A private key is about to be written: the directory gets `serve`'s rule (and
            // a fresh clone's `keys/`, 0755 only because git keeps no directory modes, is
            // made private instead of refused).
            dirs::check(&settings.keys_dir, "WXAUTH_KEYS_DIR", dirs::Exposure::TightenOrRefuse)?;
            let (key, bad) =
                token::rotate(&settings.keys_dir, settings.token.signing_alg, KeyMode::of(dev), activation)?;
            report_bad_files(&bad);
            let mode = if key.mode == KeyMode::Dev { "dev-mode " } else { "" };
            println!("added {mode}{} key {} to {}", key.alg, key.kid, settings.keys_dir.display());
            // Made here, before any server starts, it is in the directory every replica is
            // given, rather than made by each replica on its own.
            if Sealer::load(&settings.keys_dir)?.is_none() {
                Sealer::load_or_create(&settings.keys_dir)?;
                println!("created the session-key encryption key {}", crate::store::sealed::KEY_FILE);
            }
            let staged = AdminCommand::KeyChanged {
                kind: "key_staged".into(),
                kid: key.kid.clone(),
                alg: key.alg.to_string(),
                activates_at: Some(key.activates),
            };
            record_key_change(&settings, staged).await;
            if key.activates <= key.created {
                println!("it signs now: running servers switch to it within a minute (or at once on SIGHUP)");
            } else {
                println!(
                    "it is published at once and signs from {} (WXAUTH_KEY_ACTIVATION_SECS), when verifiers \
                     that cache the JWKS hold it",
                    rfc3339(key.activates)
                );
            }
        }
        Command::Keys(KeysCommand::List) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let listing =
                token::list_keys(&settings.keys_dir, settings.token.signing_alg, settings.token.access_token_ttl)?;
            report_bad_files(&listing.bad);
            if listing.keys.is_empty() {
                println!("no keys in {}; create one with `wxauth keys rotate`", settings.keys_dir.display());
            }
            println!("{:<43}  {:<5}  {:<20}  {:<20}  {:<10}  state", "kid", "alg", "created", "activates", "mode");
            for (key, state) in &listing.keys {
                println!(
                    "{:<43}  {:<5}  {:<20}  {:<20}  {:<10}  {state}",
                    key.kid,
                    key.alg.to_string(),
                    rfc3339(key.created),
                    rfc3339(key.activates),
                    key.mode.as_str()
                );
            }
        }
        Command::Keys(KeysCommand::Prune) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let (removed, bad) =
                token::prune(&settings.keys_dir, settings.token.signing_alg, settings.token.access_token_ttl)?;
            report_bad_files(&bad);
            if removed.is_empty() {
                println!("nothing to prune: every retired key may still have live tokens");
            }
            for key in removed {
                println!("removed retired key {} ({})", key.kid, key.alg);
                let pruned = AdminCommand::KeyChanged {
                    kind: "key_pruned".into(),
                    kid: key.kid.clone(),
                    alg: key.alg.to_string(),
                    activates_at: None,
                };
                record_key_change(&settings, pruned).await;
            }
        }
        Command::Accounts(command) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let command = match command {
                AccountsCommand::Add { username, phone, no_password } => {
                    let password_hash = if no_password { String::new() } else { new_password_hash(&username)? };
                    AdminCommand::AddAccount { username, password_hash, phone }
                }
                AccountsCommand::SetPhone { username, phone, clear: _ } => {
                    AdminCommand::SetAccountPhone { username, phone }
                }
                AccountsCommand::Import { file } => AdminCommand::ImportAccounts { rows: import_rows(&file)? },
                AccountsCommand::List => AdminCommand::ListAccounts,
                AccountsCommand::Remove { username } => AdminCommand::RemoveAccount { username },
                AccountsCommand::Passwd { username } => {
                    let password_hash = new_password_hash(&username)?;
                    AdminCommand::SetPassword { username, password_hash }
                }
            };
            print_reply(&command, administer(&settings, command.clone()).await?);
        }
        Command::AdminTokens(command) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let (command, minted) = match command {
                AdminTokensCommand::Create { name, role } => {
                    let parsed = crate::store::AdminRole::parse(&role).ok_or("--role is read or write")?;
                    let minted = admin_token::mint(&name, parsed, time::OffsetDateTime::now_utc())?;
                    let secret_hash = URL_SAFE_NO_PAD.encode(minted.token.secret_hash);
                    let id = uuid::Uuid::from_bytes(minted.token.id);
                    (AdminCommand::AddAdminToken { id, name, role, secret_hash }, Some(minted))
                }
                AdminTokensCommand::List => (AdminCommand::ListAdminTokens, None),
                AdminTokensCommand::Revoke { name } => (AdminCommand::RevokeAdminToken { name }, None),
            };
            let reply = administer(&settings, command.clone()).await?;
            match minted {
                Some(minted) => {
                    use secrecy::ExposeSecret;
                    eprintln!(
                        "wxauth: created admin token {:?}. It is printed once, below; wxauth keeps only its hash",
                        minted.token.name
                    );
                    println!("{}", minted.text.expose_secret());
                }
                None => print_reply(&command, reply),
            }
        }
        Command::Store(command) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            match command {
                StoreCommand::Export { output: None } => export(&settings, std::io::stdout(), "stdout").await?,
                StoreCommand::Export { output: Some(path) } => export_to_file(&settings, &path).await?,
                StoreCommand::Import => import(&settings).await?,
                StoreCommand::Init => init(&settings).await?,
            }
        }
        Command::Users(command) => {
            let settings = Settings::load(cli.config.as_deref(), Mode::Offline)?;
            let command = match command {
                UsersCommand::Show { user } => AdminCommand::ShowUser { query: user },
                UsersCommand::Ban { user, reason, until } => AdminCommand::BanUser { query: user, reason, until },
                UsersCommand::Unban { user } => AdminCommand::UnbanUser { query: user },
                UsersCommand::SetRoles { user, roles } => AdminCommand::SetRoles { query: user, roles },
                UsersCommand::SetClaims { user, claims } => AdminCommand::SetClaims { query: user, claims },
                UsersCommand::Merge { into, from } => AdminCommand::MergeUsers { into, from },
            };
            print_reply(&command, administer(&settings, command.clone()).await?);
        }
    }
    Ok(())
}

/// Sends an admin command to the running server, or runs it on the store when no server
/// answers on the admin socket. Says on stderr which one it did.
async fn administer(settings: &Settings, command: AdminCommand) -> Result<Reply, Box<dyn std::error::Error>> {
    let socket = &settings.admin_socket;
    if let Some(reply) = admin::send(socket, &command).await? {
        eprintln!("wxauth: done by the running server (admin socket {})", socket.display());
        return Ok(reply);
    }
    let store = open_store(settings, Purpose::Administer).await.map_err(|e| {
        format!(
            "no server answers on the admin socket {} (WXAUTH_ADMIN_SOCKET), and {e}. If a server is running, \
             give this command the same WXAUTH_ADMIN_SOCKET and store settings",
            socket.display()
        )
    })?;
    let appids: Vec<String> = settings.wechat.apps.iter().map(|a| a.appid.clone()).collect();
    // The command's events reach the webhooks once a server runs and sends them.
    let store = store.with_webhooks(crate::webhooks::subscriptions(&settings.webhooks));
    let reply = admin::execute(&store, &appids, command).await;
    store.close().await?;
    eprintln!("wxauth: no server running (no answer on {}); changed the store directly", socket.display());
    Ok(reply?)
}

/// Records a change of the key ring as an event, through the running server. Without one
/// it says so and goes on: the keys changed, and opening the store here would set it up
/// (a new PostgreSQL database, its sealing key) as a side effect of a key command.
async fn record_key_change(settings: &Settings, command: AdminCommand) {
    match admin::send(&settings.admin_socket, &command).await {
        Ok(Some(_)) => {}
        Ok(None) => eprintln!("wxauth: no server running: this key change is not in the event log"),
        Err(e) => eprintln!("wxauth: the key change was not recorded as an event: {e}"),
    }
}

/// What a command opens the store for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Accounts and users: the store and its key must exist (`wxauth store init` or the
    /// first `serve` makes them).
    Administer,
    /// Reading every record: the store and its key must exist.
    Export,
    /// Filling a new store: it may not exist yet, but its key must (the exporter's).
    Import,
}

/// Opens the store the settings name, as the server would, for a command run without a
/// server, with the same rule for its directories as production `serve`. Refuses what is
/// most likely a mistake in the settings: a sled directory that holds no store, or a store
/// with data but no session-key encryption key.
async fn open_store(settings: &Settings, purpose: Purpose) -> Result<Store, String> {
    if let StoreSettings::Sled(sled) = &settings.store
        && purpose != Purpose::Import
    {
        // Run from the wrong directory, the default `./data` would silently be a new,
        // empty store: only an existing one is opened; `store init` makes one on purpose.
        let empty = std::fs::read_dir(&sled.data_dir).map(|mut d| d.next().is_none()).unwrap_or(true);
        if empty {
            return Err(format!(
                "there is no store in {} (WXAUTH_DATA_DIR). Give this command the server's settings; to \
                 start a new store, run `wxauth store init`",
                sled.data_dir.display()
            ));
        }
    }
    private_dirs(settings, dirs::Exposure::Refuse)?;
    // The server's key seals session keys (and migrates plaintext ones at open): a key made
    // here by mistake, in the wrong keys directory, would make every stored key unreadable.
    // Only a brand-new, empty store may get a new key.
    let loaded = Sealer::load(&settings.keys_dir).map_err(|e| e.to_string())?;
    let sealer = match loaded {
        Some(sealer) => sealer,
        None if purpose == Purpose::Import => {
            return Err(format!(
                "there is no session-key encryption key ({}) in {} (WXAUTH_KEYS_DIR): an import needs the \
                 exporting server's, so that the session keys and details it holds open here. Copy it from the \
                 exporting server's keys directory",
                crate::store::sealed::KEY_FILE,
                settings.keys_dir.display()
            ));
        }
        None => {
            return Err(format!(
                "there is no session-key encryption key ({}) in {} (WXAUTH_KEYS_DIR): give this command the \
                 server's settings",
                crate::store::sealed::KEY_FILE,
                settings.keys_dir.display()
            ));
        }
    };
    let store = Store::open(&settings.store, sealer).await.map_err(|e| format!("the store cannot be opened: {e}"))?;
    // Like every replica: an export with another key would name a key that did not seal
    // its values, and an account added with it would be made next to data it cannot open.
    store.claim_sealing_key().await.map_err(|e| format!("the store cannot be opened: {e}"))?;
    Ok(store)
}

/// The keys directory, and the sled data directory: private, under `exposure`'s rule.
fn private_dirs(settings: &Settings, exposure: dirs::Exposure) -> Result<(), String> {
    dirs::check(&settings.keys_dir, "WXAUTH_KEYS_DIR", exposure).map_err(|e| e.to_string())?;
    if let StoreSettings::Sled(sled) = &settings.store {
        dirs::check(&sled.data_dir, "WXAUTH_DATA_DIR", exposure).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `wxauth store init`: what the first `serve` does to the store, and nothing else.
async fn init(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    private_dirs(settings, dirs::Exposure::TightenOrRefuse)?;
    let location = match &settings.store {
        StoreSettings::Sled(sled) => {
            dirs::create_private(&sled.data_dir)
                .map_err(|e| format!("cannot create {} (WXAUTH_DATA_DIR): {e}", sled.data_dir.display()))?;
            format!("{} (WXAUTH_DATA_DIR)", sled.data_dir.display())
        }
        StoreSettings::Postgres(pg) => format!("{} (WXAUTH_DATABASE_URL)", pg.url),
    };
    let had_key = Sealer::load(&settings.keys_dir)?.is_some();
    let sealer = Sealer::load_or_create(&settings.keys_dir)?;
    let store = Store::open(&settings.store, sealer).await.map_err(|e| format!("the store cannot be opened: {e}"))?;
    // A store sealed with another key is refused here, as `serve` would refuse it.
    store.claim_sealing_key().await.map_err(|e| format!("the store cannot be opened: {e}"))?;
    store.close().await?;
    let key = crate::store::sealed::KEY_FILE;
    let key_note = if had_key { "kept the existing" } else { "created the" };
    println!(
        "store ready at {location}; {key_note} session-key encryption key {key} in {}",
        settings.keys_dir.display()
    );
    Ok(())
}

/// `wxauth store export --output FILE`: a new file, private from its creation (not from a
/// chmod after it), removed again when the export fails.
async fn export_to_file(settings: &Settings, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AlreadyExists => "it exists, and an export never replaces a file".to_owned(),
            _ => e.to_string(),
        };
        format!("--output {}: {why}", path.display())
    })?;
    let written = match export(settings, &file, &path.display().to_string()).await {
        Ok(()) => file.sync_all().map_err(Into::into),
        Err(e) => Err(e),
    };
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// `wxauth store export`: the store, as JSON lines on `out` (named `name` in errors).
async fn export(
    settings: &Settings,
    out: impl std::io::Write + Send,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let store = open_store(settings, Purpose::Export).await?;
    let mut out = std::io::BufWriter::new(out);
    let mut write = |record: Record| -> Result<(), StoreError> {
        let line = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| StoreError::Database(format!("writing to {name}: {e}")))
    };
    let exported = store.export(&mut write).await;
    store.close().await?;
    let exported = exported?;
    out.flush()?;
    eprintln!("wxauth: exported {} records", exported.records);
    if exported.skipped > 0 {
        eprintln!(
            "wxauth: left out {} unionid links, accounts or details of users that are gone (left behind by a \
             crash during a removal; nothing used them)",
            exported.skipped
        );
    }
    Ok(())
}

/// `wxauth store import`: JSON lines from stdin into an empty store.
async fn import(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::BufRead;
    let store = open_store(settings, Purpose::Import).await?;
    let mut records = std::io::BufReader::new(std::io::stdin()).lines().map(|line| {
        let line = line.map_err(|e| StoreError::Database(format!("reading stdin: {e}")))?;
        serde_json::from_str::<Record>(&line).map_err(|e| StoreError::Corrupt(format!("not a record: {e}")))
    });
    let imported = store.import(&mut records).await;
    store.close().await?;
    eprintln!("wxauth: imported {} records", imported?);
    Ok(())
}

/// Reads a new password (prompt twice on a terminal, else one line of stdin) and hashes it.
fn new_password_hash(username: &str) -> Result<String, Box<dyn std::error::Error>> {
    use std::io::IsTerminal;
    let raw = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {username}: "))?;
        if rpassword::prompt_password("Repeat it: ")? != first {
            return Err("the passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    };
    Ok(password::hash(&Password::new_for_account(&raw)?)?)
}

/// The rows of an import file: CSV, `username,phone[,password_hash]`, an optional header
/// line whose first field is `username`, blank lines skipped. No field holds a line break,
/// so each line is one record, parsed on its own: errors name the file's own line numbers.
fn import_rows(path: &std::path::Path) -> Result<Vec<crate::admin::ImportRow>, Box<dyn std::error::Error>> {
    use std::io::Read;
    let mut text = String::new();
    let read = if path == std::path::Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new().has_headers(false).trim(csv::Trim::All).from_reader(raw.as_bytes());
        let record = match reader.records().next() {
            Some(Ok(record)) => record,
            Some(Err(e)) => return Err(format!("{} line {line}: {e}", path.display()).into()),
            None => continue,
        };
        if rows.is_empty() && record.get(0) == Some("username") {
            continue;
        }
        if !(2..=3).contains(&record.len()) {
            return Err(format!(
                "{} line {line}: expected username,phone[,password_hash], got {} fields",
                path.display(),
                record.len()
            )
            .into());
        }
        rows.push(crate::admin::ImportRow {
            line,
            username: record[0].to_owned(),
            phone: record[1].to_owned(),
            password_hash: record.get(2).unwrap_or_default().to_owned(),
        });
    }
    Ok(rows)
}

fn print_reply(command: &AdminCommand, reply: Reply) {
    match (command, reply) {
        (AdminCommand::AddAccount { username, .. }, Reply::User { user }) => {
            println!("added account {username} (user {})", user.id);
        }
        (AdminCommand::SetAccountPhone { username, phone }, _) => match phone {
            Some(_) => println!("set the phone number of {username}"),
            None => println!("took the phone number of {username} away"),
        },
        (_, Reply::Imported { accounts }) => println!("imported {accounts} accounts"),
        (AdminCommand::RemoveAccount { username, .. }, Reply::User { user }) => {
            println!("removed account {username}, user {} and its bindings: {}", user.id, identities(&user));
        }
        (AdminCommand::SetPassword { username, .. }, _) => println!("changed the password of {username}"),
        (AdminCommand::ListAccounts, Reply::Users { users }) => {
            if users.is_empty() {
                println!("no accounts; add one with `wxauth accounts add <username>`");
                return;
            }
            println!("{:<24}  {:<36}  {:<20}  {:<16}  identities", "username", "user id", "created", "phone");
            for user in users {
                let name = user.username.clone().unwrap_or_default();
                let phone = user.account_phone.as_deref().unwrap_or("-");
                let created = rfc3339(user.created_at);
                println!("{name:<24}  {:<36}  {created:<20}  {phone:<16}  {}", user.id, identities(&user));
            }
        }
        (_, Reply::Users { users }) => {
            for (i, user) in users.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                show_user(user);
            }
        }
        (_, Reply::User { user }) => show_user(&user),
        (_, Reply::AdminTokens { tokens }) => {
            if tokens.is_empty() {
                println!("no admin tokens; create one with `wxauth admin-tokens create <name> --role read|write`");
                return;
            }
            println!("{:<24}  {:<5}  {:<36}  {:<20}  revoked", "name", "role", "id", "created");
            for t in tokens {
                let revoked = t.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into());
                println!("{:<24}  {:<5}  {:<36}  {:<20}  {revoked}", t.name, t.role, t.id, rfc3339(t.created_at));
            }
        }
        (_, Reply::Done) => println!("done"),
    }
}

fn show_user(user: &UserView) {
    println!("user        {}", user.id);
    println!("account     {}", user.username.as_deref().unwrap_or("-"));
    if let Some(phone) = &user.account_phone {
        println!("acct phone  {phone}");
    }
    println!("unionid     {}", user.unionid.as_deref().unwrap_or("-"));
    println!("identities  {}", identities(user));
    println!("phone       {}", user.phone_number.as_deref().unwrap_or("-"));
    println!("nickname    {}", user.nickname.as_deref().unwrap_or("-"));
    for other in &user.unionid_shared_with {
        println!("shared      user {other} has the same unionid (reported, not merged)");
    }
    println!("created     {}", rfc3339(user.created_at));
    println!("last login  {}", rfc3339(user.last_login_at));
    println!("roles       {}", if user.roles.is_empty() { "-".into() } else { user.roles.join(", ") });
    println!("claims      {}", user.claims);
    match (&user.ban_reason, user.ban_until) {
        (Some(reason), Some(until)) => println!("banned      until {}: {reason}", rfc3339(until)),
        (Some(reason), None) => println!("banned      until unbanned: {reason}"),
        (None, _) => println!("banned      no"),
    }
}

fn identities(user: &UserView) -> String {
    if user.identities.is_empty() {
        return "-".into();
    }
    user.identities.iter().map(|i| format!("{}:{}", i.appid, i.openid)).collect::<Vec<_>>().join(", ")
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Files in the keys directory that are not usable keys: reported, and the command goes on.
fn report_bad_files(bad: &[token::TokenError]) {
    for e in bad {
        eprintln!("wxauth: skipping {e}");
    }
}
