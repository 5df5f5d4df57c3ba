//! Errors of the store, one enum for every backend.

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, lock held by another process).
    #[error("database error: {0}")]
    Database(String),
    /// The data was written by a newer wxauth.
    #[error("the store has schema version {found}; this build understands up to {supported}")]
    SchemaTooNew {
        /// Version found.
        found: u32,
        /// The newest version this build understands (per backend).
        supported: u32,
    },
    /// A record could not be decoded, or a binding points at a missing user.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The openid is bound to another user.
    #[error("this WeChat identity is already bound to another user")]
    AlreadyBound,
    /// The account already has another openid of the same app.
    #[error("this account is already bound to another WeChat identity of this mini-program")]
    AccountAlreadyBound,
    /// An admin token with the name exists.
    #[error("an admin token with this name already exists")]
    AdminTokenExists,
    /// No admin token has the name.
    #[error("no admin token has this name")]
    NoSuchAdminToken,
    /// No account has the username.
    #[error("no account has this username")]
    NoSuchAccount,
    /// An account with this username exists.
    #[error("an account with this username already exists")]
    AccountExists,
    /// Another account has this phone number.
    #[error("another account has this phone number")]
    PhoneTaken,
    /// The bind ticket is unknown, spent or expired.
    #[error("the bind ticket is unknown, already used or expired")]
    TicketNotFound,
    /// The store was created by a server in the other mode (dev or production).
    #[error(
        "this store was created in {recorded} mode and this server runs in {running} mode; dev mode logs \
         anyone in as anyone, so the two never share users: use another {setting}"
    )]
    WrongMode {
        /// The mode the store was created in.
        recorded: &'static str,
        /// The mode of this server.
        running: &'static str,
        /// The setting that names the store (`WXAUTH_DATA_DIR`, `WXAUTH_DATABASE_URL`).
        setting: &'static str,
    },
    /// The database holds values sealed with another `session-keys.secret` than this
    /// process's: replicas would not read each other's, and this one none of the others'.
    #[error(
        "this database was sealed with session-key encryption key {recorded}, and the session-keys.secret \
         in WXAUTH_KEYS_DIR is key {found}: its session keys, phone numbers and profiles would not open here. \
         Every replica needs the same file: copy session-keys.secret from the keys directory of the replica \
         that first served this database into this one's WXAUTH_KEYS_DIR"
    )]
    WrongSealingKey {
        /// The id of the key the database records ([`super::sealed::Sealer::key_id`]).
        recorded: String,
        /// The id of this process's key.
        found: String,
    },
    /// No user has this id (it was removed meanwhile).
    #[error("no such user")]
    NoSuchUser,
    /// `wxauth store import` was given a store that holds data.
    #[error("the store already holds data: import only into an empty store (a new WXAUTH_DATA_DIR or database)")]
    NotEmpty,
    /// `wxauth users merge` refused: the reason ([`super::merge::refusal`]).
    #[error("{0}")]
    MergeRefused(String),
    /// A login that may create users did not create one (a backend bug).
    #[error("the store did not create a user for a first login")]
    NotCreated,
}
