//! The store conformance suite: the behaviour every store backend must share, written once
//! in `conformance.rs` and run against each backend by `conformance_suite!`.

mod conformance;
mod migrations;
#[path = "../support/postgres.rs"]
mod postgres;

use std::any::Any;

use wxauth::{
    config::{DatabaseUrl, PostgresSettings, SledSettings, StoreSettings},
    store::{SCHEMA_VERSION, Store},
};

/// A backend under test: makes empty stores and can fake a newer layout.
pub trait Backend {
    /// Settings for a new, empty store, and whatever must live as long as it (a directory).
    fn fresh(&self) -> (StoreSettings, Box<dyn Any + Send>);
    /// Marks the (closed) store as written by a newer build; returns the version written.
    fn set_newer_schema(&self, settings: &StoreSettings) -> u32;
}

/// The embedded sled backend.
pub struct SledBackend;

impl Backend for SledBackend {
    fn fresh(&self) -> (StoreSettings, Box<dyn Any + Send>) {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings::Sled(SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 });
        (settings, Box::new(dir))
    }

    fn set_newer_schema(&self, settings: &StoreSettings) -> u32 {
        let StoreSettings::Sled(s) = settings else { unreachable!() };
        let version = SCHEMA_VERSION + 1;
        // The store's lock goes a moment after its last handle.
        let db = (0..100)
            .find_map(|_| {
                let db = sled::open(&s.data_dir).ok();
                if db.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                db
            })
            .expect("the closed store kept its lock");
        db.open_tree("meta").unwrap().insert("schema_version", &version.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
        version
    }
}

/// PostgreSQL: a new database per store, on the server `WXAUTH_TEST_DATABASE_URL` names.
pub struct PgBackend;

impl PgBackend {
    /// `None` (the tests skip, or fail under CI) without a test server.
    pub fn from_env() -> Option<Self> {
        postgres::server_url().map(|_| Self)
    }
}

impl Backend for PgBackend {
    fn fresh(&self) -> (StoreSettings, Box<dyn Any + Send>) {
        let url = postgres::fresh_database().expect("no test server");
        let settings = StoreSettings::Postgres(PostgresSettings {
            url: DatabaseUrl::parse(&url).unwrap(),
            pool_size: 8,
            statement_timeout: std::time::Duration::from_secs(10),
        });
        (settings, Box::new(()))
    }

    fn set_newer_schema(&self, settings: &StoreSettings) -> u32 {
        let StoreSettings::Postgres(s) = settings else { unreachable!() };
        let url = s.url.expose().to_owned();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                let newest: i64 =
                    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations").fetch_one(&mut conn).await.unwrap();
                sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES ($1, 'from a newer wxauth', true, '\\x00', 0)",
                )
                .bind(newest + 1)
                .execute(&mut conn)
                .await
                .unwrap();
                (newest + 1) as u32
            })
        })
        .join()
        .unwrap()
    }
}

/// The sealing key of the suite's stores: one per test process, so that reopening works.
fn sealer() -> wxauth::store::sealed::Sealer {
    static SEALER: std::sync::OnceLock<wxauth::store::sealed::Sealer> = std::sync::OnceLock::new();
    SEALER.get_or_init(|| wxauth::store::sealed::Sealer::ephemeral().unwrap()).clone()
}

/// Opens a store, retrying briefly: a closed store's backend may release its lock a moment
/// after the last handle is dropped.
pub async fn open(settings: &StoreSettings) -> Result<Store, wxauth::store::StoreError> {
    let mut last = None;
    for _ in 0..100 {
        match Store::open(settings, sealer()).await {
            Ok(store) => return Ok(store),
            Err(e @ wxauth::store::StoreError::SchemaTooNew { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(last.unwrap())
}

/// One `#[tokio::test]` per conformance case, for each backend (an `Option`: `None`
/// skips).
macro_rules! conformance_suite {
    ([$($module:ident: $backend:expr),*], $cases:tt) => {
        $(conformance_suite!(@one $module, $backend, $cases);)*
    };
    (@one $module:ident, $backend:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = $backend else { return };
                    crate::conformance::$case(&backend).await;
                }
            )*
        }
    };
}

conformance_suite!(
    [sled_store: Some(crate::SledBackend), postgres_store: crate::PgBackend::from_env()],
    [
        racing_first_logins_create_exactly_one_user,
        a_returning_login_finds_the_same_user_and_is_not_created,
        a_returning_login_within_the_granularity_keeps_last_login_at,
        a_user_is_found_by_id_and_an_unknown_id_is_none,
        a_new_session_key_replaces_the_old_one_at_once,
        the_same_session_key_keeps_its_issue_time,
        a_unionid_is_learned_and_then_kept,
        the_same_openid_in_two_apps_is_two_users,
        acknowledged_logins_are_there_after_reopening,
        a_store_written_by_a_newer_schema_is_refused,
        the_health_check_passes_on_a_working_store,
        a_login_whose_unionid_is_known_from_another_app_joins_that_user,
        racing_first_logins_of_one_person_in_two_apps_create_one_user,
        two_existing_users_that_turn_out_to_share_a_unionid_are_reported_not_merged,
        a_login_that_may_not_create_finds_nothing_and_stores_nothing,
        a_login_starts_its_session_and_keeps_its_event_for_a_new_and_a_returning_user,
        a_banned_or_leaving_user_logs_in_without_a_session_until_the_ban_ends,
        a_login_keeps_a_new_session_key_and_learns_a_first_unionid,
        a_login_that_may_not_create_starts_nothing,
        racing_first_logins_create_one_user_and_each_starts_its_session,
        accounts_are_added_listed_changed_and_removed,
        account_phone_numbers_are_unique_found_by_number_moved_and_added_all_or_none,
        a_bind_attaches_the_identity_to_the_account_and_refuses_conflicts,
        racing_binds_of_one_account_bind_exactly_one_openid,
        a_ticket_works_until_it_is_spent_or_expires_on_the_clock_it_is_given,
        an_identity_from_a_surface_without_session_keys_has_none_in_its_record_and_its_ticket,
        a_grant_is_found_as_its_kind_changed_only_from_what_was_read_and_taken_once,
        a_merge_moves_identities_unionid_account_details_roles_and_sessions_and_removes_the_other,
        a_merge_that_would_mix_up_two_people_is_refused_and_changes_nothing,
        unbinding_removes_the_identities_and_the_unionid_link_but_keeps_the_account,
        a_phone_number_and_a_profile_are_kept_apart_and_survive_logins_and_reopening,
        users_are_found_by_the_phone_number_they_hold_now_and_no_other,
        details_are_refused_for_a_missing_user_and_removed_with_its_account,
        controls_are_kept_changed_given_to_new_users_and_refused_for_a_missing_user,
        a_refresh_token_rotates_once_and_a_reuse_revokes_its_family,
        a_rotation_that_reads_the_user_judges_as_a_rotation_and_reads_the_user_only_when_rotated,
        a_refresh_keeps_its_event_only_when_the_session_goes_on_and_a_logout_only_when_it_revoked,
        refresh_families_are_revoked_by_token_by_user_and_by_account_changes,
        sessions_are_the_live_families_with_their_origin_and_last_refresh_and_end_one_by_one,
        a_user_keeps_at_most_the_newest_families,
        a_user_logging_in_without_end_holds_at_most_twice_the_cap_and_always_the_newest,
        racing_logins_of_one_user_all_start_their_family_and_the_next_one_trims_to_the_cap,
        the_purge_removes_expired_families_and_those_of_removed_users_in_batches,
        refresh_tokens_revoked_by_logout_all_stay_refused_after_the_ttl_is_lowered_and_a_purge_runs,
        admin_tokens_are_kept_by_id_unique_by_name_and_stay_revoked,
        users_are_listed_in_id_order_page_by_page_and_found_by_unionid,
        a_deletion_waits_until_due_can_be_cancelled_and_then_erases_the_person_but_not_an_account,
        deliveries_are_kept_with_their_events_claimed_under_a_lease_and_retried_or_removed,
        racing_senders_never_claim_the_same_delivery,
        an_event_recorded_twice_under_one_id_is_kept_and_delivered_once,
        events_are_listed_newest_first_by_user_kind_and_time_page_by_page_and_purged_oldest_first,
    ]
);
