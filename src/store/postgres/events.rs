//! The event log on PostgreSQL: one row per event in `events`, listed newest first by id.

use sqlx::{Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PgStore, ns};
use crate::{
    domain::UserId,
    store::{
        PurgeBatch, StoreError,
        backend::Events,
        codec::time,
        events::{Event, EventFilter, EventKind, first_id_at},
        outbox::Delivery,
    },
};

/// The columns [`read`] reads.
pub(super) const COLUMNS: &str = "id, at_ns, kind, user_id, appid, ip, user_agent, actor, details";

/// The event in a row of [`COLUMNS`].
pub(super) fn read(row: &PgRow) -> Result<Event, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("event: {what}"));
    let ip: Option<String> = row.try_get("ip")?;
    Ok(Event {
        id: row.try_get("id")?,
        at: time(row.try_get::<i64, _>("at_ns")?.into())?,
        kind: EventKind::parse(row.try_get("kind")?).ok_or_else(|| corrupt("kind"))?,
        user: row.try_get::<Option<Uuid>, _>("user_id")?.map(|u| UserId::from_bytes(u.into_bytes())),
        appid: row.try_get("appid")?,
        ip: ip.map(|ip| ip.parse()).transpose().map_err(|_| corrupt("ip"))?,
        user_agent: row.try_get("user_agent")?,
        actor: row.try_get("actor")?,
        details: Event::parse_details(row.try_get("details")?)?,
    })
}

/// Inserts `events`, and the webhook `deliveries` they need, in one statement. An event
/// already kept is kept once (`Event::once`), except by an import (`strict`), where an
/// event twice fails on the primary key as on sled.
pub(super) async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    events: &[Event],
    deliveries: &[Delivery],
    strict: bool,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let details = events.iter().map(Event::details_json).collect::<Result<Vec<_>, _>>()?;
    let at = events.iter().map(|e| ns(e.at)).collect::<Result<Vec<_>, _>>()?;
    let text = |f: fn(&Event) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    // The events' insert, as written by every statement below.
    macro_rules! insert_events {
        () => {
            "INSERT INTO events (id, at_ns, kind, user_id, appid, ip, user_agent, actor, details) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[])"
        };
    }
    const STRICT: &str = insert_events!();
    const EVENTS: &str = concat!(insert_events!(), " ON CONFLICT (id) DO NOTHING");
    // One statement for both: the deliveries exist exactly when their events do. An event
    // already kept (one recorded by each replica, `Event::once`) is kept once, and so are
    // its deliveries.
    const WITH_DELIVERIES: &str = concat!(
        "WITH kept AS (",
        insert_events!(),
        " ON CONFLICT (id) DO NOTHING RETURNING id) \
         INSERT INTO outbox (event_id, hook, due_at_ns) SELECT d.event_id, d.hook, d.due_at_ns \
         FROM UNNEST($10::uuid[], $11::bytea[], $12::bigint[]) AS d (event_id, hook, due_at_ns) \
         WHERE d.event_id IN (SELECT id FROM kept)"
    );
    let statement = match (strict, deliveries.is_empty()) {
        (true, _) => STRICT,
        (false, true) => EVENTS,
        (false, false) => WITH_DELIVERIES,
    };
    let query = sqlx::query(statement)
        .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(at)
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.user.map(|u| Uuid::from_bytes(*u.as_bytes()))).collect::<Vec<_>>())
        .bind(text(|e| e.appid.as_deref()))
        .bind(events.iter().map(|e| e.ip.map(|ip| ip.to_string())).collect::<Vec<_>>())
        .bind(text(|e| e.user_agent.as_deref()))
        .bind(text(|e| e.actor.as_deref()))
        .bind(details);
    let query = if deliveries.is_empty() || strict {
        query
    } else {
        let due = deliveries.iter().map(|d| ns(d.due_at)).collect::<Result<Vec<_>, _>>()?;
        query
            .bind(deliveries.iter().map(|d| d.event).collect::<Vec<_>>())
            .bind(deliveries.iter().map(|d| d.hook.to_vec()).collect::<Vec<_>>())
            .bind(due)
    };
    query.execute(executor).await?;
    Ok(())
}

/// The CTEs `kept` and `delivered` of a statement that keeps one event, and its webhook
/// deliveries, for the row of CTE `source` (none when it has none): the event's user is
/// `source`'s `id`, its app the SQL expression `appid`, the rest the eight parameters from
/// `$first` that [`bind_one`] binds. An event already kept is kept once, as by [`insert`].
pub(super) fn keeping_one(source: &str, appid: &str, first: u32) -> String {
    let p = |i: u32| format!("${}", first + i);
    let (id, at, kind, ip, user_agent, actor, details, hooks) = (p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7));
    format!(
        "kept AS (INSERT INTO events (id, at_ns, kind, user_id, appid, ip, user_agent, actor, details) \
         SELECT {id}, {at}, {kind}, id, {appid}, {ip}, {user_agent}, {actor}, {details} FROM {source} \
         ON CONFLICT (id) DO NOTHING RETURNING id), \
         delivered AS (INSERT INTO outbox (event_id, hook, due_at_ns) \
         SELECT kept.id, hook, {at} FROM kept, UNNEST({hooks}::bytea[]) AS hook)"
    )
}

/// Binds the parameters of [`keeping_one`]: `event`'s id, time, kind, ip, user agent, actor
/// and details, and the webhooks of `deliveries` that are `event`'s.
pub(super) fn bind_one<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    event: &'q Event,
    deliveries: &[Delivery],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    Ok(query
        .bind(event.id)
        .bind(ns(event.at)?)
        .bind(event.kind.as_str())
        .bind(event.ip.map(|ip| ip.to_string()))
        .bind(event.user_agent.as_deref())
        .bind(event.actor.as_deref())
        .bind(event.details_json()?)
        .bind(deliveries.iter().filter(|d| d.event == event.id).map(|d| d.hook.to_vec()).collect::<Vec<_>>()))
}

impl Events for PgStore {
    async fn append_events(&self, events: &[Event], deliveries: &[Delivery]) -> Result<(), StoreError> {
        insert(&self.pool, events, deliveries, false).await
    }

    async fn event(&self, id: &Uuid) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM events WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(read).transpose()
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let (upper, lower) = filter.id_bounds();
        let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM events \
             WHERE ($1::uuid IS NULL OR user_id = $1) AND (cardinality($2::text[]) = 0 OR kind = ANY($2)) \
             AND ($3::uuid IS NULL OR id < $3) AND ($4::uuid IS NULL OR id >= $4) \
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(filter.user.map(|u| Uuid::from_bytes(*u.as_bytes())))
        .bind(kinds)
        .bind(upper)
        .bind(lower)
        .bind(i64::try_from(filter.page_size()).unwrap_or(1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read).collect()
    }

    async fn purge_events(&self, before: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let removed =
            sqlx::query("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < $1 ORDER BY id LIMIT $2)")
                .bind(first_id_at(before))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .execute(&self.pool)
                .await?
                .rows_affected();
        let removed = usize::try_from(removed).unwrap_or(usize::MAX);
        Ok(PurgeBatch { removed, done: removed < limit })
    }
}
