//! PostgreSQL for the tests: a server named by `WXAUTH_TEST_DATABASE_URL` (`bash .ci/postgres`
//! starts a throwaway one), and a fresh database in it per test.
//!
//! Without the variable the PostgreSQL tests skip, saying which variable to set; under CI
//! (`CI` set) they fail instead, so that a broken setup cannot pass as green.

use std::str::FromStr;

use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};

/// The variable naming the test server.
pub const VARIABLE: &str = "WXAUTH_TEST_DATABASE_URL";

/// The password put in test URLs that have none (a trusting server ignores it).
pub const TEST_PASSWORD: &str = "db-password-0f1e2d3c";

/// The server's URL, or `None` (after saying why) when the tests should skip.
pub fn server_url() -> Option<String> {
    match std::env::var(VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but {VARIABLE} is not: the PostgreSQL tests must run in CI (.ci/run starts a server)")
        }
        _ => {
            eprintln!(
                "skipped: set {VARIABLE}=postgres://USER@HOST:PORT/DATABASE to run the PostgreSQL tests \
                 (`export {VARIABLE}=$(bash .ci/postgres /tmp/wxauth-pg)` starts a throwaway server)"
            );
            None
        }
    }
}

/// Creates an empty database on the test server and returns its URL; `None` to skip.
/// Blocking (its own thread and runtime), so that it works inside and outside async code.
pub fn fresh_database() -> Option<String> {
    let server = server_url()?;
    let name = format!("wxauth_test_{}", uuid::Uuid::new_v4().simple());
    let url = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let options = PgConnectOptions::from_str(&server).expect("WXAUTH_TEST_DATABASE_URL is not a postgres URL");
            let mut admin = options.connect().await.expect("cannot connect to WXAUTH_TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("CREATE DATABASE failed");
            admin.close().await.unwrap();
            let mut url = url::Url::parse(&server).unwrap();
            url.set_path(&format!("/{name}"));
            // A server that trusts loopback ignores it; the tests check it is never logged.
            if url.password().is_none() {
                url.set_password(Some(TEST_PASSWORD)).unwrap();
            }
            url.to_string()
        })
    })
    .join()
    .unwrap();
    Some(url)
}
