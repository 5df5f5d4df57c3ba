//! PostgreSQL's migrations applied to a database holding data of the previous schema.

use std::path::Path;

use sqlx::{Connection, PgConnection, migrate::Migrator};
use time::OffsetDateTime;
use wxauth::{
    config::{DatabaseUrl, PostgresSettings, StoreSettings},
    domain::UserId,
    store::Origin,
};

/// A database migrated up to and including `version` only.
async fn migrated_to(url: &str, version: i64) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut migrator = Migrator::new(Path::new("src/store/postgres/migrations")).await.unwrap();
    migrator.migrations.to_mut().retain(|m| m.version <= version);
    migrator.run(&mut conn).await.unwrap();
    conn
}

#[tokio::test]
async fn refresh_families_of_schema_2_become_sessions_started_and_last_refreshed_at_their_start() {
    let Some(url) = crate::postgres::fresh_database() else { return };
    let mut conn = migrated_to(&url, 2).await;
    let (user, family) = (UserId::new(), uuid::Uuid::now_v7());
    let started = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let ns = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos()).unwrap();
    sqlx::query("INSERT INTO users (id, created_at_ns, last_login_at_ns) VALUES ($1, $2, $2)")
        .bind(uuid::Uuid::from_bytes(*user.as_bytes()))
        .bind(ns(started))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO refresh_families (family, generation, verifier_hash, started_ns, user_id, appid, openid, \
         expires_at_ns) VALUES ($1, 0, $2, $3, $4, 'wx1', 'o1', $5)",
    )
    .bind(family)
    .bind(&[0u8; 32][..])
    .bind(ns(started))
    .bind(uuid::Uuid::from_bytes(*user.as_bytes()))
    .bind(ns(started + time::Duration::days(1)))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let settings = StoreSettings::Postgres(PostgresSettings {
        url: DatabaseUrl::parse(&url).unwrap(),
        pool_size: 2,
        statement_timeout: std::time::Duration::from_secs(10),
    });

    let store = crate::open(&settings).await.unwrap();

    let sessions = store.sessions(&user, started).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].family, family.into_bytes());
    assert_eq!((sessions[0].created_at, sessions[0].last_refresh_at), (started, started));
    assert_eq!(sessions[0].origin, Origin::default());
}

#[tokio::test]
async fn details_kept_before_the_phone_index_get_indexed_when_the_server_starts() {
    let Some(url) = crate::postgres::fresh_database() else { return };
    let settings = StoreSettings::Postgres(PostgresSettings {
        url: DatabaseUrl::parse(&url).unwrap(),
        pool_size: 2,
        statement_timeout: std::time::Duration::from_secs(10),
    });
    let store = crate::open(&settings).await.unwrap();
    let user = store.add_account(crate::conformance::account("ann", crate::conformance::HASH)).await.unwrap().id;
    let number = wxauth::domain::PhoneNumber {
        phone_number: "+8613800138000".into(),
        pure_phone_number: "13800138000".into(),
        country_code: "86".into(),
    };
    store.set_phone(&user, wxauth::domain::Dated { value: number, at: OffsetDateTime::now_utc() }).await.unwrap();
    drop(store);
    // As migration 0007 leaves a row written before it.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE details SET phone_index = NULL").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let store = crate::open(&settings).await.unwrap();

    let found = store.users_by_phone("+8613800138000").await.unwrap();
    assert_eq!(found.into_iter().map(|u| u.id).collect::<Vec<_>>(), [user], "the number kept before is not found");
}
