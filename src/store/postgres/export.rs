//! `wxauth store export` and `import` on PostgreSQL. An export reads one snapshot
//! (`REPEATABLE READ`), so replicas may go on serving while it runs; an import is one
//! transaction, all or nothing. Neither is bound by the statement timeout, which is meant
//! for the requests of a serving replica.

use crate::store::codec::{open_account_phone, phone_pseudonym};
use futures_util::TryStreamExt;
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use super::{PgStore, phone_index_column};
use crate::store::{
    StoreError,
    backend::Transfer,
    codec::{DetailsRecord, time},
    export::{FORMAT, IdentityLine, Record, at_line, check_mode, controls_line, hex, line_controls, other_mode, unhex},
    sealed::Sealer,
};

/// A time as stored (Unix nanoseconds).
fn at(row: &PgRow, column: &str) -> Result<time::OffsetDateTime, StoreError> {
    time(row.try_get::<i64, _>(column)?.into())
}

fn ns(t: time::OffsetDateTime) -> Result<i64, StoreError> {
    super::ns(t)
}

/// Rows of `query`, one at a time, to `each`.
async fn each_row(
    tx: &mut PgConnection,
    query: &'static str,
    mut each: impl FnMut(PgRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut rows = sqlx::query(query).fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        each(row)?;
    }
    Ok(())
}

impl Transfer for PgStore {
    async fn export(
        &self,
        out: &mut (dyn FnMut(Record) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
        out(Record::Header { format: FORMAT, sealing_key: self.sealer.key_id().to_owned() })?;
        let mode: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'mode'").fetch_optional(&mut *tx).await?;
        if let Some(mode) = mode {
            out(Record::Mode { mode })?;
        }
        // One row per identity (or one for a user without any), a user's rows together.
        let mut user: Option<Record> = None;
        each_row(
            &mut tx,
            "SELECT u.id, u.unionid, u.unionid_shared_with, u.created_at_ns, u.last_login_at_ns, \
             u.roles, u.claims, u.ban_reason, u.ban_until_ns, u.banned_at_ns, \
             u.deletion_requested_at_ns, u.deletion_erase_at_ns, i.appid, i.openid, i.session_key, i.session_key_issued_at_ns \
             FROM users u LEFT JOIN identities i ON i.user_id = u.id ORDER BY u.id, i.seq",
            |row| {
                let id: Uuid = row.try_get("id")?;
                if !matches!(&user, Some(Record::User { id: current, .. }) if *current == id) {
                    if let Some(done) = user.take() {
                        out(done)?;
                    }
                    let (roles, claims, ban, deletion) = controls_line(super::users::controls(&row)?);
                    user = Some(Record::User {
                        id,
                        unionid: row.try_get("unionid")?,
                        unionid_shared_with: row.try_get("unionid_shared_with")?,
                        created_at: at(&row, "created_at_ns")?,
                        last_login_at: at(&row, "last_login_at_ns")?,
                        identities: Vec::new(),
                        roles,
                        claims,
                        ban,
                        deletion,
                    });
                }
                if let (Some(appid), Some(Record::User { identities, .. })) =
                    (row.try_get::<Option<String>, _>("appid")?, user.as_mut())
                {
                    let key: Option<String> = row.try_get("session_key")?;
                    let issued: Option<i64> = row.try_get("session_key_issued_at_ns")?;
                    let stored = key.zip(issued).map(|(k, t)| (k, i128::from(t)));
                    identities.push(IdentityLine::new(appid, row.try_get("openid")?, stored)?);
                }
                Ok(())
            },
        )
        .await?;
        if let Some(done) = user.take() {
            out(done)?;
        }
        each_row(&mut tx, r#"SELECT unionid, user_id FROM unionids ORDER BY unionid COLLATE "C""#, |row| {
            out(Record::Unionid { unionid: row.try_get("unionid")?, user: row.try_get("user_id")? })
        })
        .await?;
        each_row(
            &mut tx,
            r#"SELECT username, user_id, password_hash, created_at_ns, phone_sealed FROM accounts ORDER BY username COLLATE "C""#,
            |row| {
                out(Record::Account {
                    phone: row.try_get("phone_sealed")?,
                    username: row.try_get("username")?,
                    user: row.try_get("user_id")?,
                    password_hash: row.try_get("password_hash")?,
                    created_at: at(&row, "created_at_ns")?,
                })
            },
        )
        .await?;
        each_row(&mut tx, "SELECT user_id, sealed FROM details ORDER BY user_id", |row| {
            out(Record::Details { user: row.try_get("user_id")?, sealed: row.try_get("sealed")? })
        })
        .await?;
        each_row(
            &mut tx,
            "SELECT id, appid, openid, unionid, session_key, expires_at_ns FROM bind_tickets ORDER BY id",
            |row| {
                out(Record::Ticket {
                    id: hex(row.try_get::<&[u8], _>("id")?),
                    appid: row.try_get("appid")?,
                    openid: row.try_get("openid")?,
                    unionid: row.try_get("unionid")?,
                    session_key: row.try_get("session_key")?,
                    expires_at: at(&row, "expires_at_ns")?,
                })
            },
        )
        .await?;
        each_row(
            &mut tx,
            "SELECT family, generation, verifier_hash, started_ns, user_id, appid, openid, expires_at_ns, revoked, \
             last_refresh_ns, ip, user_agent FROM refresh_families ORDER BY family",
            |row| {
                let generation: i64 = row.try_get("generation")?;
                out(Record::RefreshFamily {
                    family: row.try_get("family")?,
                    generation: u32::try_from(generation)
                        .map_err(|_| StoreError::Corrupt(format!("refresh generation {generation}")))?,
                    verifier_hash: hex(row.try_get::<&[u8], _>("verifier_hash")?),
                    started: at(&row, "started_ns")?,
                    user: row.try_get("user_id")?,
                    appid: row.try_get("appid")?,
                    openid: row.try_get("openid")?,
                    expires_at: at(&row, "expires_at_ns")?,
                    revoked: row.try_get("revoked")?,
                    last_refresh: Some(at(&row, "last_refresh_ns")?),
                    ip: row.try_get("ip")?,
                    user_agent: row.try_get("user_agent")?,
                })
            },
        )
        .await?;
        // The columns of `admin_tokens::COLUMNS`.
        let sql = "SELECT id, name, role, secret_hash, created_at_ns, revoked_at_ns FROM admin_tokens ORDER BY id";
        each_row(&mut tx, sql, |row| out(Record::admin_token(super::admin_tokens::read(&row)?))).await?;
        // The columns of `events::COLUMNS`.
        let sql = "SELECT id, at_ns, kind, user_id, appid, ip, user_agent, actor, details FROM events ORDER BY id";
        each_row(&mut tx, sql, |row| out(Record::event(super::events::read(&row)?))).await?;
        tx.commit().await?;
        // The database keeps no link without its user (foreign keys): nothing is left out.
        Ok(0)
    }

    /// Imports `records` (the header already checked) in one transaction, into a database
    /// that holds no data (a mode aside).
    async fn import(
        &self,
        records: &mut (dyn Iterator<Item = Result<Record, StoreError>> + Send),
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
        // Serving replicas wait rather than write into a half-imported store, and none can
        // write between the check that the store is empty and the import.
        sqlx::query(
            "LOCK TABLE users, identities, unionids, accounts, details, bind_tickets, refresh_families, \
             admin_tokens, events IN EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await?;
        // Every other table hangs off `users`.
        let holds_data: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM bind_tickets) \
                 OR EXISTS (SELECT 1 FROM admin_tokens) OR EXISTS (SELECT 1 FROM events)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if holds_data {
            return Err(StoreError::NotEmpty);
        }
        // The header was line 1.
        let mut count = 1;
        for record in records {
            count += 1;
            let line = |e| at_line(count, e);
            import_one(&mut tx, &self.sealer, record.map_err(line)?).await.map_err(line)?;
        }
        tx.commit().await?;
        Ok(count)
    }
}

async fn import_one(tx: &mut PgConnection, sealer: &Sealer, record: Record) -> Result<(), StoreError> {
    match record {
        Record::Header { .. } | Record::End { .. } => {
            return Err(StoreError::Corrupt("a first or last line in the middle".into()));
        }
        Record::Mode { mode } => {
            check_mode(&mode)?;
            sqlx::query("INSERT INTO meta (key, value) VALUES ('mode', $1) ON CONFLICT DO NOTHING")
                .bind(&mode)
                .execute(&mut *tx)
                .await?;
            let recorded: String =
                sqlx::query_scalar("SELECT value FROM meta WHERE key = 'mode'").fetch_one(&mut *tx).await?;
            if recorded != mode {
                return Err(other_mode(&mode));
            }
        }
        Record::User {
            id,
            unionid,
            unionid_shared_with,
            created_at,
            last_login_at,
            identities,
            roles,
            claims,
            ban,
            deletion,
        } => {
            let controls = line_controls((roles, claims, ban, deletion))?;
            let ban = controls.ban.as_ref();
            sqlx::query(
                "INSERT INTO users (id, unionid, unionid_shared_with, created_at_ns, last_login_at_ns, roles, claims, \
                 ban_reason, ban_until_ns, banned_at_ns, deletion_requested_at_ns, deletion_erase_at_ns) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(id)
            .bind(unionid)
            .bind(unionid_shared_with)
            .bind(ns(created_at)?)
            .bind(ns(last_login_at)?)
            .bind(&controls.roles)
            .bind(if controls.claims.is_empty() { String::new() } else { controls.claims.to_json() })
            .bind(ban.map(|b| b.reason.clone()))
            .bind(ban.and_then(|b| b.until).map(ns).transpose()?)
            .bind(ban.map(|b| ns(b.at)).transpose()?)
            .bind(controls.deletion.map(|d| ns(d.requested_at)).transpose()?)
            .bind(controls.deletion.map(|d| ns(d.erase_at)).transpose()?)
            .execute(&mut *tx)
            .await?;
            // In binding order: `seq` keeps it.
            for line in identities {
                let key = line.stored_key()?;
                let issued = key.as_ref().map(|(_, t)| i64::try_from(*t)).transpose();
                let issued = issued.map_err(|_| StoreError::Corrupt("session_key_issued_at out of range".into()))?;
                sqlx::query(
                    "INSERT INTO identities (appid, openid, user_id, session_key, session_key_issued_at_ns) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&line.appid)
                .bind(&line.openid)
                .bind(id)
                .bind(key.map(|(k, _)| k))
                .bind(issued)
                .execute(&mut *tx)
                .await?;
            }
        }
        Record::Unionid { unionid, user } => {
            sqlx::query("INSERT INTO unionids (unionid, user_id) VALUES ($1, $2)")
                .bind(unionid)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        Record::Account { username, user, password_hash, created_at, phone } => {
            let index = match &phone {
                Some(sealed) => Some(
                    open_account_phone(sealer, &username, sealed)
                        .map(|p| phone_pseudonym(sealer, &p).to_vec())
                        .ok_or_else(|| StoreError::Corrupt(format!("account {username}: its phone does not open")))?,
                ),
                None => None,
            };
            sqlx::query(
                "INSERT INTO accounts (username, user_id, password_hash, created_at_ns, phone_sealed, phone_index) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(username)
            .bind(user)
            .bind(password_hash)
            .bind(ns(created_at)?)
            .bind(phone)
            .bind(index)
            .execute(&mut *tx)
            .await?;
        }
        Record::Details { user, sealed } => {
            let details = DetailsRecord::open(sealed.as_bytes(), sealer, user.as_bytes())?;
            sqlx::query("INSERT INTO details (user_id, sealed, phone_index) VALUES ($1, $2, $3)")
                .bind(user)
                .bind(sealed)
                .bind(phone_index_column(sealer, &details))
                .execute(&mut *tx)
                .await?;
        }
        Record::Ticket { id, appid, openid, unionid, session_key, expires_at } => {
            sqlx::query(
                "INSERT INTO bind_tickets (id, appid, openid, unionid, session_key, expires_at_ns) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&unhex::<32>(&id, "a ticket id")?[..])
            .bind(appid)
            .bind(openid)
            .bind(unionid)
            .bind(session_key)
            .bind(ns(expires_at)?)
            .execute(&mut *tx)
            .await?;
        }
        Record::RefreshFamily {
            family,
            generation,
            verifier_hash,
            started,
            user,
            appid,
            openid,
            expires_at,
            revoked,
            last_refresh,
            ip,
            user_agent,
        } => {
            sqlx::query(
                "INSERT INTO refresh_families (family, generation, verifier_hash, started_ns, user_id, appid, openid, \
                 expires_at_ns, revoked, last_refresh_ns, ip, user_agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(family)
            .bind(i64::from(generation))
            .bind(&unhex::<32>(&verifier_hash, "a verifier hash")?[..])
            .bind(ns(started)?)
            .bind(user)
            .bind(appid)
            .bind(openid)
            .bind(ns(expires_at)?)
            .bind(revoked)
            .bind(ns(last_refresh.unwrap_or(started))?)
            .bind(ip)
            .bind(user_agent)
            .execute(&mut *tx)
            .await?;
        }
        record @ Record::Event { .. } => {
            let event = record.into_event()?;
            // An event twice fails on the primary key, naming its line.
            super::events::insert(&mut *tx, std::slice::from_ref(&event), &[], true).await?;
        }
        record @ Record::AdminToken { .. } => {
            let token = record.into_admin_token()?;
            let added = super::admin_tokens::insert(&mut *tx, &token).await;
            if let Err(StoreError::AdminTokenExists) = added {
                return Err(StoreError::Corrupt(format!("admin token {:?} appears twice", token.name)));
            }
            added?;
        }
    }
    Ok(())
}
