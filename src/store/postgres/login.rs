//! A login and the session it starts in as few round trips as the database allows: a
//! returning login is one statement (read the identity's user, bump `last_login_at` when it
//! is old, start the refresh family, keep the event and its webhook deliveries); a first
//! login is that statement and one more that creates the user. Everything else (a first
//! unionid to learn, a racing first login, a user removed meanwhile) goes the long way, in
//! a transaction ([`PgStore::settle`]). A new session key WeChat sent is one more
//! statement: it is sealed for the user, whom only the first statement names.
//!
//! The admission rule (no ban holds, no deletion pending) is
//! [`crate::domain::Controls::admit_login`], stated in SQL here; the conformance suite runs
//! both stores through it.

use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PgStore, events, ns, users, users::USER_COLUMNS};
use crate::{
    domain::{Controls, Identity, User, UserId, WechatSession},
    store::{
        LAST_LOGIN_GRANULARITY, LoggedIn, LoginRecord, SessionStart, StoreError, StoredSessionKey, events::Event,
        outbox::Delivery, refresh::cap, users::returning_changes,
    },
};

/// The session's inserts, shared by both statements: the refresh family of `admitted`'s
/// user (none when the CTE `admitted` is empty), the event, and its deliveries.
/// Parameters from `$6`: family, verifier hash, start, expiry, ip, user agent; from `$12`
/// the event's ([`events::bind_one`]).
static SESSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "started AS (INSERT INTO refresh_families (family, generation, verifier_hash, started_ns, user_id, appid, \
         openid, expires_at_ns, last_refresh_ns, ip, user_agent) \
         SELECT $6, 0, $7, $8, id, $1, $2, $9, $8, $10, $11 FROM admitted RETURNING family), {}",
        events::keeping_one("admitted", "$1", 12)
    )
});

/// A returning login. `$3` unionid sent, `$4` now, `$5` the last login granularity,
/// `$20` families kept beyond the new one, `$21` whether this login trims the user's
/// oldest families ([`crate::store::refresh::TrimSchedule`], counted by the identity: the
/// user is not known before the statement). A first unionid is left to the transaction
/// (`settled` is empty); `last_login_at` is bumped whether or not the user is admitted, as
/// the long way does.
static RETURNING: LazyLock<String> = LazyLock::new(|| {
    let user_columns = USER_COLUMNS.replacen(
        " FROM users u",
        ", (SELECT last_login_at_ns FROM touched) AS touched_ns, EXISTS (SELECT 1 FROM settled) AS settled, \
         EXISTS (SELECT 1 FROM started) AS started FROM users u",
        1,
    );
    format!(
        "WITH found AS (SELECT u.id, u.unionid, u.ban_reason, u.ban_until_ns, u.deletion_requested_at_ns, \
         u.deletion_erase_at_ns FROM identities i JOIN users u ON u.id = i.user_id WHERE i.appid = $1 AND i.openid = $2), \
         settled AS (SELECT * FROM found WHERE $3::text IS NULL OR unionid IS NOT NULL), \
         touched AS (UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $4) \
         WHERE id = (SELECT id FROM settled) AND last_login_at_ns <= $4 - $5 RETURNING last_login_at_ns), \
         admitted AS (SELECT id FROM settled WHERE {admits}), \
         evicted AS (DELETE FROM refresh_families WHERE $21 AND family IN (SELECT family FROM refresh_families \
         WHERE user_id = (SELECT id FROM admitted) ORDER BY family DESC OFFSET $20 FOR UPDATE SKIP LOCKED)), \
         {session} \
         {user_columns} WHERE u.id = (SELECT id FROM found) ORDER BY i.seq",
        admits = users::admits_login_at("$8"),
        session = SESSION.as_str(),
    )
});

/// A first login: the user, its identity, its unionid link, and the session. A racer that
/// bound the openid or linked the unionid first makes it fail on a unique constraint, and
/// nothing is written. `$3` unionid, `$4` now, `$5` the new user's id, `$20` roles, `$21`
/// and `$22` the sealed session key and when it was issued.
static FIRST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH admitted AS (INSERT INTO users (id, unionid, created_at_ns, last_login_at_ns, roles) \
         VALUES ($5, $3, $4, $4, $20) RETURNING id), \
         bound AS (INSERT INTO identities (appid, openid, user_id, session_key, session_key_issued_at_ns) \
         SELECT $1, $2, id, $21, $22 FROM admitted), \
         linked AS (INSERT INTO unionids (unionid, user_id) SELECT $3, id FROM admitted WHERE $3::text IS NOT NULL), \
         {} SELECT 1",
        SESSION.as_str()
    )
});

/// Binds `$6`..`$19` of [`SESSION`] (the first five are the caller's) to `query`.
fn bind_session<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    start: &'q SessionStart,
    event: &'q Event,
    deliveries: &[Delivery],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let query = query
        .bind(Uuid::from_bytes(start.family))
        .bind(&start.verifier_hash[..])
        .bind(ns(start.now)?)
        .bind(ns(start.expires_at)?)
        .bind(start.origin.ip.as_deref())
        .bind(start.origin.user_agent.as_deref());
    events::bind_one(query, event, deliveries)
}

/// A unique constraint or foreign key a racer got to first: the long way settles it.
fn raced(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("23505" | "23503")))
}

impl PgStore {
    /// [`crate::store::Store::log_in`] in one statement (returning login) or two (first
    /// login). `None`: this login takes the long way.
    pub(crate) async fn log_in_at_once(
        &self,
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
        start: &SessionStart,
        deliveries: &[Delivery],
    ) -> Result<Option<LoggedIn>, StoreError> {
        let now = OffsetDateTime::now_utc();
        // The event's details: a returning login's; a first login's are written below.
        let returning_event = start.event.clone().detail("created", false);
        let query = sqlx::query(AssertSqlSafe(RETURNING.as_str()))
            .bind(appid)
            .bind(&session.openid)
            .bind(session.unionid.as_deref())
            .bind(ns(now)?)
            .bind(i64::try_from(LAST_LOGIN_GRANULARITY.whole_nanoseconds()).unwrap_or(i64::MAX));
        let query = bind_session(query, start, &returning_event, deliveries)?
            .bind(i64::try_from(cap(start.keep) - 1).unwrap_or(i64::MAX))
            .bind(self.trim.due((appid, &session.openid), start.keep));
        let rows = match query.fetch_all(&self.pool).await {
            Ok(rows) => rows,
            Err(e) if raced(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(first) = rows.first() else {
            return match create {
                Some(roles) => self.first_login(appid, session, roles, start, deliveries, now).await,
                None => Ok(None),
            };
        };
        if !first.try_get::<bool, _>("settled")? {
            return Ok(None);
        }
        let touched: Option<i64> = first.try_get("touched_ns")?;
        let started: bool = first.try_get("started")?;
        let Some(loaded) = super::users::loaded(&rows)? else { return Ok(None) };
        self.keep_new_session_key(&loaded, appid, session, now).await?;
        let mut user = loaded.user;
        if let Some(at) = touched {
            user.last_login_at = crate::store::codec::time(at.into())?;
        }
        Ok(Some(LoggedIn { record: LoginRecord { user, created: false }, started }))
    }

    /// Writes the session key WeChat sent when it differs from the stored one.
    async fn keep_new_session_key(
        &self,
        loaded: &super::users::Loaded,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let keys = self.keys(loaded.user.id.as_bytes());
        let stored = keys.open(appid, loaded.key(appid))?;
        // Only the key matters here: the statement wrote the rest.
        let changes = returning_changes(now, None, stored.as_ref(), session, now);
        let Some(key) = changes.session_key else { return Ok(()) };
        // An identity unbound or merged meanwhile keeps the login's session, as a login
        // that finished just before the unbind would.
        self.write_session_key(&self.pool, &loaded.user.id, appid, &session.openid, &key).await?;
        Ok(())
    }

    /// A first login in one statement; `None` when a racer bound the openid or linked the
    /// unionid first.
    async fn first_login(
        &self,
        appid: &str,
        session: &WechatSession,
        roles: &[String],
        start: &SessionStart,
        deliveries: &[Delivery],
        now: OffsetDateTime,
    ) -> Result<Option<LoggedIn>, StoreError> {
        let id = UserId::new();
        let key = StoredSessionKey::of(session, now);
        let (sealed, issued) = key.as_ref().map(|key| self.keys(id.as_bytes()).seal(appid, key)).transpose()?.unzip();
        let issued = issued.map(|i| i64::try_from(i).map_err(|_| StoreError::Corrupt("time out of range".into())));
        let event = start.event.clone().detail("created", true);
        let query = sqlx::query(AssertSqlSafe(FIRST.as_str()))
            .bind(appid)
            .bind(&session.openid)
            .bind(session.unionid.as_deref())
            .bind(ns(now)?)
            .bind(super::uuid(&id));
        let query = bind_session(query, start, &event, deliveries)?.bind(roles).bind(sealed).bind(issued.transpose()?);
        match query.execute(&self.pool).await {
            Ok(_) => {}
            Err(e) if raced(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let user = User {
            id,
            identities: vec![Identity { appid: appid.to_owned(), openid: session.openid.clone() }],
            unionid: session.unionid.clone(),
            account: None,
            unionid_shared_with: Vec::new(),
            created_at: now,
            last_login_at: now,
            controls: Controls { roles: roles.to_vec(), ..Controls::default() },
        };
        tracing::debug!(user_id = %user.id, "first login in one statement");
        Ok(Some(LoggedIn { record: LoginRecord { user, created: true }, started: true }))
    }
}
