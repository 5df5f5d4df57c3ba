//! A login and the session it starts, as one store operation: the backend may do it in one
//! step (PostgreSQL: one statement for a returning login, two for a first one).

use time::OffsetDateTime;

use super::{LoginRecord, Origin, RefreshGrant, RefreshId, Store, StoreError, events::Event};
use crate::domain::{Identity, WechatSession};

/// The session a login starts when the user may log in: its refresh family (generation 0)
/// and its `login` event.
#[derive(Debug, Clone)]
pub struct SessionStart {
    /// The new family's id.
    pub family: [u8; 16],
    /// SHA-256 of the first token's secret part.
    pub verifier_hash: [u8; 32],
    /// Where the login came from.
    pub origin: Origin,
    /// The service's clock: the family's start, and what bans are checked against.
    pub now: OffsetDateTime,
    /// When the family expires unless refreshed.
    pub expires_at: OffsetDateTime,
    /// Families a user keeps ([`Store::start_refresh`]).
    pub keep: usize,
    /// The `login` event without its user and `created` detail, which the login decides.
    pub event: Event,
}

impl SessionStart {
    /// The family's id for `record`'s user.
    pub fn refresh_id(&self, record: &LoginRecord) -> RefreshId {
        RefreshId { user: record.user.id, family: self.family, generation: 0, verifier_hash: self.verifier_hash }
    }

    /// The event of the login of `record`.
    pub fn event_of(&self, record: &LoginRecord) -> Event {
        self.event.clone().user(record.user.id).detail("created", record.created)
    }
}

/// A login and whether it started its session.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The user as stored after the login.
    pub record: LoginRecord,
    /// Whether the session started (family and event kept): the user may log in
    /// ([`crate::domain::Controls::admit_login`]). `false`: banned or being deleted,
    /// and nothing but the login itself was written.
    pub started: bool,
}

impl Store {
    /// Records a login of `session` through `appid` as [`Store::record_login_with`]
    /// (`create`: the roles of a user it creates; `None`: only a bound identity logs in)
    /// and, when the user may log in, starts its session: the refresh family of `start`
    /// and its `login` event. `None`: not bound, and not created.
    pub async fn log_in(
        &self,
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
        start: &SessionStart,
    ) -> Result<Option<LoggedIn>, StoreError> {
        if let super::Configured::Postgres(pg) = &self.backend {
            let deliveries = self.subscriptions.deliveries_of(&start.event);
            if let Some(done) = pg.log_in_at_once(appid, session, create, start, &deliveries).await? {
                return Ok(Some(done));
            }
        }
        let record = match create {
            Some(roles) => Some(self.record_login_with(appid, session, roles).await?),
            None => self.login_if_bound(appid, session).await?,
        };
        let Some(record) = record else { return Ok(None) };
        let started = record.user.controls.admit_login(start.now);
        if started {
            let grant = RefreshGrant {
                user: record.user.id,
                identity: Identity { appid: appid.to_owned(), openid: session.openid.clone() },
            };
            let id = start.refresh_id(&record);
            self.start_refresh(&id, &grant, &start.origin, start.now, start.expires_at, start.keep).await?;
            self.record(start.event_of(&record)).await;
        }
        Ok(Some(LoggedIn { record, started }))
    }
}
