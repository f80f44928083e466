//! Accounts: registration, the current user, password change.

use serde::Serialize;
use time::OffsetDateTime;

use super::audit::{AuditKind, Meta};
use super::SessionService;
use crate::domain::{Email, Password, RevokeReason, SessionId, UserId};
use crate::error::{Error, Result};
use crate::store::UserRecord;

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            created_at: u.created_at,
        }
    }
}

impl SessionService {
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, email: &str, password: String, meta: &Meta) -> Result<UserView> {
        let email = Email::parse(email)?;
        let password = Password::new_checked(password)?;
        let password_hash = self.hasher.hash(password).await?;
        let user = UserRecord {
            id: UserId::new(),
            email: email.as_str().to_string(),
            password_hash,
            created_at: self.clock.now(),
        };
        if !self.store.create_user(&user, &email.normalized()).await? {
            return Err(Error::EmailTaken);
        }
        self.audit(AuditKind::UserRegistered, Some(user.id), None, None, meta)
            .await;
        Ok(user.into())
    }

    /// The public view of a user. Its fields never change (there is no email
    /// change), so it is remembered in-process for a few minutes.
    pub async fn user(&self, id: UserId) -> Result<UserView> {
        if let Some(view) = self.users.get(&id).await {
            return Ok(view);
        }
        let user = self
            .store
            .get_user(id)
            .await?
            .ok_or(Error::InvalidToken("the user of this token no longer exists"))?;
        let view = UserView::from(user);
        self.users.insert(id, view.clone()).await;
        Ok(view)
    }

    /// `NotFound` unless the user exists (for the admin API).
    pub(crate) async fn require_user(&self, id: UserId) -> Result<()> {
        match self.store.get_user(id).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound("user")),
        }
    }

    /// Changes the password and revokes every other session of the user.
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn change_password(
        &self,
        user: UserId,
        current_session: SessionId,
        current: String,
        new: String,
        meta: &Meta,
    ) -> Result<()> {
        let current = Password::presented(current).ok_or(Error::WrongPassword)?;
        let new = Password::new_checked(new)?;
        let record = self
            .store
            .get_user(user)
            .await?
            .ok_or(Error::InvalidToken("the user of this token no longer exists"))?;
        // A stolen access token must not buy unlimited password guesses: the
        // attempt is counted (atomically, before verifying) against the
        // user's own limit, the pair limit of logins.
        let attempt = self.begin_password_check(user).await?;
        let verified = match self.hasher.verify(current, Some(record.password_hash)).await {
            Ok(v) => v,
            Err(e) => {
                self.give_back_password_check(attempt).await;
                return Err(e);
            }
        };
        if !verified {
            self.audit(
                AuditKind::PasswordChangeFailed,
                Some(user),
                Some(current_session),
                None,
                meta,
            )
            .await;
            return Err(Error::WrongPassword);
        }
        self.give_back_password_check(attempt).await;
        let new_hash = self.hasher.hash(new).await?;
        let revocation = self.revocation(RevokeReason::PasswordChanged, meta, self.clock.now());
        let revoked = self
            .store
            .change_password(user, &new_hash, current_session, &revocation)
            .await?;
        self.spread_revocations(&revoked).await;
        self.audit(
            AuditKind::PasswordChanged,
            Some(user),
            Some(current_session),
            None,
            meta,
        )
        .await;
        for r in &revoked {
            let reason = Some(RevokeReason::PasswordChanged.as_str());
            self.audit(AuditKind::SessionRevoked, Some(user), Some(r.session_id), reason, meta)
                .await;
        }
        Ok(())
    }
}
