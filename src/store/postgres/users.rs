//! Users on PostgreSQL: logins (a returning login outside a transaction, everything else
//! in one), and what a user shared.

use sqlx::{AssertSqlSafe, Executor, PgConnection, Postgres, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, links::Race, ns, phone_index_column, user_id, uuid};
use crate::{
    domain::{Ban, Controls, CustomClaims, Deletion, Details, Identity, User, UserId, WechatSession},
    store::{
        LoginRecord, StoreError, StoredSessionKey,
        backend::Users,
        codec::{DetailsRecord, time},
        users::returning_changes,
    },
};

/// A user as loaded, with each identity's stored (sealed) session key.
pub(super) struct Loaded {
    pub(super) user: User,
    pub(super) keys: Vec<Option<(String, i128)>>,
}

impl Loaded {
    /// The stored key of the identity of `appid`.
    pub(super) fn key(&self, appid: &str) -> Option<&(String, i128)> {
        let i = self.user.identities.iter().position(|i| i.appid == appid)?;
        self.keys[i].as_ref()
    }
}

pub(super) const USER_COLUMNS: &str = "SELECT u.id, u.unionid, u.unionid_shared_with, u.created_at_ns, u.last_login_at_ns, \
     u.roles, u.claims, u.ban_reason, u.ban_until_ns, u.banned_at_ns, \
     u.deletion_requested_at_ns, u.deletion_erase_at_ns, a.username, i.appid, i.openid, i.session_key, i.session_key_issued_at_ns \
     FROM users u LEFT JOIN accounts a ON a.user_id = u.id LEFT JOIN identities i ON i.user_id = u.id";

/// Whether the user of a `users` row may log in at `now` (an SQL expression, or a
/// parameter): [`crate::domain::Controls::admit_login`] stated in SQL, for the statements
/// that start or continue a session in one round trip.
pub(super) fn admits_login_at(now: &str) -> String {
    format!(
        "(ban_reason IS NULL OR ban_until_ns <= {now}) \
         AND (deletion_requested_at_ns IS NULL OR deletion_erase_at_ns IS NULL)"
    )
}

/// The user from the rows of a [`USER_COLUMNS`] query (one per identity), if any.
pub(super) fn loaded(rows: &[PgRow]) -> Result<Option<Loaded>, StoreError> {
    let Some(first) = rows.first() else { return Ok(None) };
    let time = |nanos: i64| time(nanos.into());
    let mut user = User {
        id: user_id(first.try_get("id")?),
        identities: Vec::new(),
        unionid: first.try_get("unionid")?,
        account: first.try_get("username")?,
        unionid_shared_with: first.try_get::<Vec<Uuid>, _>("unionid_shared_with")?.into_iter().map(user_id).collect(),
        created_at: time(first.try_get("created_at_ns")?)?,
        last_login_at: time(first.try_get("last_login_at_ns")?)?,
        controls: controls(first)?,
    };
    let mut keys = Vec::new();
    for row in rows {
        let Some(appid) = row.try_get::<Option<String>, _>("appid")? else { continue };
        user.identities.push(Identity { appid, openid: row.try_get("openid")? });
        let key: Option<String> = row.try_get("session_key")?;
        let issued: Option<i64> = row.try_get("session_key_issued_at_ns")?;
        keys.push(key.zip(issued).map(|(k, at)| (k, at.into())));
    }
    Ok(Some(Loaded { user, keys }))
}

/// The controls in a [`USER_COLUMNS`] row.
pub(super) fn controls(row: &PgRow) -> Result<Controls, StoreError> {
    let time = |nanos: i64| time(nanos.into());
    let claims = match row.try_get::<&str, _>("claims")? {
        "" => CustomClaims::default(),
        text => CustomClaims::parse(text).map_err(|e| StoreError::Corrupt(format!("custom claims: {e}")))?,
    };
    let ban = match row.try_get::<Option<String>, _>("ban_reason")? {
        Some(reason) => Some(Ban {
            reason,
            until: row.try_get::<Option<i64>, _>("ban_until_ns")?.map(time).transpose()?,
            at: time(row.try_get::<Option<i64>, _>("banned_at_ns")?.unwrap_or_default())?,
        }),
        None => None,
    };
    let requested: Option<i64> = row.try_get("deletion_requested_at_ns")?;
    let erase_at: Option<i64> = row.try_get("deletion_erase_at_ns")?;
    let deletion = match requested.zip(erase_at) {
        Some((requested, erase_at)) => Some(Deletion { requested_at: time(requested)?, erase_at: time(erase_at)? }),
        None => None,
    };
    Ok(Controls { roles: row.try_get("roles")?, claims, ban, deletion })
}

pub(super) async fn load<'e>(
    conn: impl Executor<'e, Database = Postgres>,
    id: Uuid,
) -> Result<Option<Loaded>, StoreError> {
    // Only constants are formatted in: values are bound.
    let rows = sqlx::query(AssertSqlSafe(format!("{USER_COLUMNS} WHERE u.id = $1 ORDER BY i.seq")))
        .bind(id)
        .fetch_all(conn)
        .await?;
    loaded(&rows)
}

async fn load_by_binding<'e>(
    conn: impl Executor<'e, Database = Postgres>,
    appid: &str,
    openid: &str,
) -> Result<Option<Loaded>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{USER_COLUMNS} WHERE u.id = (SELECT user_id FROM identities WHERE appid = $1 AND openid = $2) ORDER BY i.seq"
    )))
    .bind(appid)
    .bind(openid)
    .fetch_all(conn)
    .await?;
    loaded(&rows)
}

/// The user `id`, which the transaction just changed; a racer may have removed it since.
pub(super) async fn reload(conn: &mut PgConnection, id: Uuid) -> Result<User, Failure> {
    Ok(load(conn, id).await?.ok_or(Failure::Vanished)?.user)
}

impl Users for PgStore {
    async fn login(
        &self,
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let now = OffsetDateTime::now_utc();
        if let Some(record) = self.returning(appid, session, now).await? {
            return Ok(Some(record));
        }
        transact!(self, tx => self.settle(&mut tx, appid, session, create, now))
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(load(&self.pool, uuid(id)).await?.map(|l| l.user))
    }

    async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        Ok(load_by_binding(&self.pool, appid, openid).await?.map(|l| l.user))
    }

    async fn user_by_unionid(&self, unionid: &str) -> Result<Option<User>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{USER_COLUMNS} WHERE u.id = (SELECT user_id FROM unionids WHERE unionid = $1) ORDER BY i.seq"
        )))
        .bind(unionid)
        .fetch_all(&self.pool)
        .await?;
        Ok(loaded(&rows)?.map(|l| l.user))
    }

    async fn users_by_phone(&self, phone: &[u8; 16]) -> Result<Vec<UserId>, StoreError> {
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT user_id FROM details WHERE phone_index = $1 ORDER BY user_id LIMIT 100")
                .bind(&phone[..])
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(|id| UserId::from_bytes(id.into_bytes())).collect())
    }

    async fn users_after(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<User>, StoreError> {
        // uuid order is byte order, as sled's keys are.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{USER_COLUMNS} WHERE u.id IN (SELECT id FROM users WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2) \
             ORDER BY u.id, i.seq"
        )))
        .bind(after.map(uuid))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut users = Vec::new();
        for group in rows.chunk_by(|a, b| a.try_get::<Uuid, _>("id").ok() == b.try_get::<Uuid, _>("id").ok()) {
            users.extend(loaded(group)?.map(|l| l.user));
        }
        Ok(users)
    }

    async fn session_key(&self, id: &UserId, appid: &str) -> Result<Option<StoredSessionKey>, StoreError> {
        let row = sqlx::query(
            "SELECT session_key, session_key_issued_at_ns FROM identities WHERE user_id = $1 AND appid = $2",
        )
        .bind(uuid(id))
        .bind(appid)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key: Option<String> = row.try_get("session_key")?;
        let issued: Option<i64> = row.try_get("session_key_issued_at_ns")?;
        let stored = key.zip(issued).map(|(k, at)| (k, i128::from(at)));
        self.keys(id.as_bytes()).open(appid, stored.as_ref())
    }

    async fn details(&self, id: &UserId) -> Result<Details, StoreError> {
        let sealed: Option<String> = sqlx::query_scalar("SELECT sealed FROM details WHERE user_id = $1")
            .bind(uuid(id))
            .fetch_optional(&self.pool)
            .await?;
        match sealed {
            Some(sealed) => DetailsRecord::open(sealed.as_bytes(), &self.sealer, id.as_bytes()),
            None => Ok(Details::default()),
        }
    }

    /// Changes a user's details with the user's row locked, so that the user cannot be
    /// removed, nor its details changed by another replica, between the read and the write.
    async fn change_details(
        &self,
        id: &UserId,
        change: impl Fn(&mut Details) + Send + Sync,
    ) -> Result<Details, StoreError> {
        transact!(self, tx => self.change_details_in(&mut tx, id, &change))
    }

    /// Changes a user's controls with its row locked, like [`Users::change_details`].
    async fn change_controls(
        &self,
        id: &UserId,
        change: impl Fn(&mut Controls) + Send + Sync,
    ) -> Result<User, StoreError> {
        transact!(self, tx => self.change_controls_in(&mut tx, id, &change))
    }
}

impl PgStore {
    /// A returning login outside a transaction: one read, and a write only when something
    /// other than a first unionid changed. `None`: not bound, or a unionid to link (which
    /// takes [`PgStore::settle`]).
    async fn returning(
        &self,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let Some(Loaded { mut user, keys }) = load_by_binding(&self.pool, appid, &session.openid).await? else {
            return Ok(None);
        };
        let stored = user.identities.iter().position(|i| i.appid == appid).and_then(|i| keys[i].as_ref());
        let key = self.keys(user.id.as_bytes()).open(appid, stored)?;
        let changes = returning_changes(user.last_login_at, user.unionid.as_deref(), key.as_ref(), session, now);
        if changes.unionid.is_some() {
            return Ok(None);
        }
        if let Some(key) = &changes.session_key
            && !self.write_session_key(&self.pool, &user.id, appid, &session.openid, key).await?
        {
            // Unbound meanwhile: settle it as a login of an unbound openid.
            return Ok(None);
        }
        if let Some(at) = changes.last_login_at {
            sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                .bind(uuid(&user.id))
                .bind(ns(at)?)
                .execute(&self.pool)
                .await?;
            user.last_login_at = at;
        }
        Ok(Some(LoginRecord { user, created: false }))
    }

    /// A login in a transaction: the identity is bound already (a racer got there first,
    /// or a first unionid arrives), joins the user its unionid belongs to, or (when
    /// `create`) gets a new user. `Done(None)`: not bound and not created.
    pub(super) async fn settle(
        &self,
        tx: &mut PgConnection,
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
        now: OffsetDateTime,
    ) -> Result<Step<Option<LoginRecord>>, Failure> {
        let key = StoredSessionKey::of(session, now);
        if let Some(loaded) = load_by_binding(&mut *tx, appid, &session.openid).await? {
            let user = self.touch(tx, &loaded, appid, session, now).await?;
            return match self.learn_unionid(tx, user, session.unionid.as_deref(), Race::Share).await? {
                Step::Done(user) => Ok(Step::Done(Some(LoginRecord { user, created: false }))),
                Step::Retry => Ok(Step::Retry),
            };
        }
        let mut owner_seen = false;
        if let Some(unionid) = &session.unionid {
            let owner: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM unionids WHERE unionid = $1")
                .bind(unionid)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(owner) = owner {
                owner_seen = true;
                if self.insert_identity(tx, owner, appid, &session.openid, key.as_ref()).await? {
                    sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                        .bind(owner)
                        .bind(ns(now)?)
                        .execute(&mut *tx)
                        .await?;
                    let user = reload(tx, owner).await?;
                    tracing::info!(user_id = %user.id, appid, "a login joined the user of its unionid");
                    return Ok(Step::Done(Some(LoginRecord { user, created: false })));
                }
                if self.bound(tx, appid, &session.openid).await? {
                    return Ok(Step::Retry);
                }
                tracing::warn!(
                    user_id = %user_id(owner),
                    appid,
                    "a unionid names a user that has another openid of this app; not joining"
                );
            }
        }
        let Some(roles) = create else { return Ok(Step::Done(None)) };
        let id = UserId::new();
        sqlx::query("INSERT INTO users (id, created_at_ns, last_login_at_ns, roles) VALUES ($1, $2, $2, $3)")
            .bind(uuid(&id))
            .bind(ns(now)?)
            .bind(roles)
            .execute(&mut *tx)
            .await?;
        if !self.insert_identity(tx, uuid(&id), appid, &session.openid, key.as_ref()).await? {
            return Ok(Step::Retry);
        }
        let user = reload(tx, uuid(&id)).await?;
        // Unless the unionid's owner refused this openid above, a unionid linked meanwhile
        // is another first login of this person (in another app): run again to join it.
        let race = if owner_seen { Race::Share } else { Race::Retry };
        Ok(match self.learn_unionid(tx, user, session.unionid.as_deref(), race).await? {
            Step::Done(user) => Step::Done(Some(LoginRecord { user, created: true })),
            Step::Retry => Step::Retry,
        })
    }

    /// Writes what a returning login changes (a new session key, `last_login_at`) in the
    /// transaction, and answers the user as changed. The unionid is left to the caller.
    pub(super) async fn touch(
        &self,
        tx: &mut PgConnection,
        loaded: &Loaded,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<User, Failure> {
        let keys = self.keys(loaded.user.id.as_bytes());
        let stored = keys.open(appid, loaded.key(appid))?;
        let changes =
            returning_changes(loaded.user.last_login_at, loaded.user.unionid.as_deref(), stored.as_ref(), session, now);
        let mut user = loaded.user.clone();
        // A merge may have moved the identity meanwhile; the transaction then starts again.
        if let Some(key) = &changes.session_key
            && !self.write_session_key(&mut *tx, &user.id, appid, &session.openid, key).await?
        {
            return Err(Failure::Vanished);
        }
        if let Some(at) = changes.last_login_at {
            sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                .bind(uuid(&user.id))
                .bind(ns(at)?)
                .execute(&mut *tx)
                .await?;
            user.last_login_at = at;
        }
        Ok(user)
    }

    /// Writes `key`, sealed for `user`, as the session key of `openid` of `appid`, only
    /// while the identity is still `user`'s (a key sealed for one user must never land in
    /// another's identity). Whether it was.
    pub(super) async fn write_session_key<'e>(
        &self,
        conn: impl Executor<'e, Database = Postgres>,
        user: &UserId,
        appid: &str,
        openid: &str,
        key: &StoredSessionKey,
    ) -> Result<bool, StoreError> {
        let (sealed, _) = self.keys(user.as_bytes()).seal(appid, key)?;
        let updated = sqlx::query(
            "UPDATE identities SET session_key = $3, session_key_issued_at_ns = $4 \
             WHERE appid = $1 AND openid = $2 AND user_id = $5",
        )
        .bind(appid)
        .bind(openid)
        .bind(sealed)
        .bind(ns(key.issued_at)?)
        .bind(uuid(user))
        .execute(conn)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Binds `openid` of `appid` to user `owner` with its session key. `false`: the openid
    /// is bound already, or `owner` has another openid of this app (the constraints).
    pub(super) async fn insert_identity(
        &self,
        tx: &mut PgConnection,
        owner: Uuid,
        appid: &str,
        openid: &str,
        key: Option<&StoredSessionKey>,
    ) -> Result<bool, Failure> {
        let (sealed, issued) = key.map(|key| self.keys(owner.as_bytes()).seal(appid, key)).transpose()?.unzip();
        let issued = issued.map(|i| i64::try_from(i).map_err(|_| StoreError::Corrupt("time out of range".into())));
        let inserted = sqlx::query(
            "INSERT INTO identities (appid, openid, user_id, session_key, session_key_issued_at_ns) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(appid)
        .bind(openid)
        .bind(owner)
        .bind(sealed)
        .bind(issued.transpose()?)
        .execute(&mut *tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn bound(&self, tx: &mut PgConnection, appid: &str, openid: &str) -> Result<bool, Failure> {
        Ok(sqlx::query_scalar::<_, i32>("SELECT 1 FROM identities WHERE appid = $1 AND openid = $2")
            .bind(appid)
            .bind(openid)
            .fetch_optional(&mut *tx)
            .await?
            .is_some())
    }

    async fn change_controls_in(
        &self,
        tx: &mut PgConnection,
        id: &UserId,
        change: &impl Fn(&mut Controls),
    ) -> Result<Step<User>, Failure> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(uuid(id))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NoSuchUser.into());
        }
        let mut controls = reload(tx, uuid(id)).await?.controls;
        change(&mut controls);
        let ban = controls.ban.as_ref();
        sqlx::query(
            "UPDATE users SET roles = $2, claims = $3, ban_reason = $4, ban_until_ns = $5, banned_at_ns = $6, \
             deletion_requested_at_ns = $7, deletion_erase_at_ns = $8 WHERE id = $1",
        )
        .bind(uuid(id))
        .bind(&controls.roles)
        .bind(if controls.claims.is_empty() { String::new() } else { controls.claims.to_json() })
        .bind(ban.map(|b| b.reason.as_str()))
        .bind(ban.and_then(|b| b.until).map(ns).transpose()?)
        .bind(ban.map(|b| ns(b.at)).transpose()?)
        .bind(controls.deletion.map(|d| ns(d.requested_at)).transpose()?)
        .bind(controls.deletion.map(|d| ns(d.erase_at)).transpose()?)
        .execute(&mut *tx)
        .await?;
        Ok(Step::Done(reload(tx, uuid(id)).await?))
    }

    async fn change_details_in(
        &self,
        tx: &mut PgConnection,
        id: &UserId,
        change: &impl Fn(&mut Details),
    ) -> Result<Step<Details>, Failure> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(uuid(id))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NoSuchUser.into());
        }
        let sealed: Option<String> = sqlx::query_scalar("SELECT sealed FROM details WHERE user_id = $1")
            .bind(uuid(id))
            .fetch_optional(&mut *tx)
            .await?;
        let mut details = match sealed {
            Some(sealed) => DetailsRecord::open(sealed.as_bytes(), &self.sealer, id.as_bytes())?,
            None => Details::default(),
        };
        change(&mut details);
        let sealed = DetailsRecord::seal(&details, &self.sealer, id.as_bytes())?;
        let sealed = String::from_utf8(sealed).map_err(|_| StoreError::Corrupt("sealed details".into()))?;
        sqlx::query(
            "INSERT INTO details (user_id, sealed, phone_index) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET sealed = $2, phone_index = $3",
        )
        .bind(uuid(id))
        .bind(sealed)
        .bind(phone_index_column(&self.sealer, &details))
        .execute(&mut *tx)
        .await?;
        Ok(Step::Done(details))
    }
}
