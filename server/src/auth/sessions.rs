//! Refresh tokens: opaque, stored only as SHA-256, rotated on every use.
//! A token used twice means it was stolen: the whole family (every token
//! descended from the same sign-in) is revoked.

use chrono::{Duration as ChronoDuration, Utc};
use onestop_model::entities::{refresh_token, user};
use rand::RngCore;
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use sea_orm::QuerySelect;
use sha2::{Digest, Sha256};

use super::TokenKeys;
use crate::error::ApiError;
use crate::settings::Settings;

/// Sign-ins: issuing, rotating and ending them, and checking the access
/// token of every request. Holds the database (and the connections for
/// plain reads), the keys that sign access tokens and the lifetimes of
/// refresh tokens.
#[derive(Clone)]
pub struct Sessions {
    db: DatabaseConnection,
    reads: DatabaseConnection,
    tokens: TokenKeys,
    refresh_ttl: ChronoDuration,
    family_ttl: ChronoDuration,
}

pub struct TokenPair {
    pub access_token: String,
    pub access_expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

impl Sessions {
    pub fn new(
        db: DatabaseConnection,
        reads: DatabaseConnection,
        tokens: TokenKeys,
        settings: &Settings,
    ) -> Self {
        Sessions {
            db,
            reads,
            tokens,
            refresh_ttl: ChronoDuration::seconds(settings.refresh_token_ttl_secs as i64),
            family_ttl: ChronoDuration::seconds(settings.refresh_family_ttl_secs as i64),
        }
    }

    /// The caller an access token names, if the token is good and its
    /// sign-in still on: signing out and disabling an account end its
    /// tokens at once, not when they expire.
    pub async fn check(&self, token: &str) -> Result<super::Principal, ApiError> {
        let principal = self.tokens.verify(token).ok_or(ApiError::Unauthenticated)?;
        if session_is_live(&self.reads, principal.user_id, principal.session_id).await? {
            Ok(principal)
        } else {
            Err(ApiError::Unauthenticated)
        }
    }

    /// A new sign-in: a new token family.
    pub async fn issue(&self, account: &user::Model) -> Result<TokenPair, ApiError> {
        let family_expires_at = Utc::now() + self.family_ttl;
        self.issue_in_family(&self.db, account, Uuid::new_v4(), family_expires_at)
            .await
    }

    /// Inserts a refresh token of `family_id` and returns it with the pair.
    async fn issue_in_family(
        &self,
        db: &impl ConnectionTrait,
        account: &user::Model,
        family_id: Uuid,
        family_expires_at: DateTimeUtc,
    ) -> Result<TokenPair, ApiError> {
        let now = Utc::now();
        let expires_at = (now + self.refresh_ttl).min(family_expires_at);
        let secret = new_secret();
        refresh_token::ActiveModel {
            id: Set(Uuid::new_v4()),
            user_id: Set(account.id),
            family_id: Set(family_id),
            token_hash: Set(digest(&secret)),
            expires_at: Set(expires_at),
            family_expires_at: Set(family_expires_at),
            used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(now),
        }
        .insert(db)
        .await?;
        let (access_token, access_ttl) = self.tokens.issue(account, family_id);
        Ok(TokenPair {
            access_token,
            access_expires_in: access_ttl.as_secs(),
            refresh_token: secret,
            refresh_expires_in: (expires_at - now).num_seconds().max(0) as u64,
        })
    }

    /// Trades a refresh token for a new pair.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, ApiError> {
        let now = Utc::now();
        let Some(stored) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(digest(presented)))
            .one(&self.db)
            .await?
        else {
            return Err(ApiError::InvalidRefreshToken);
        };
        if stored.revoked_at.is_some()
            || stored.expires_at <= now
            || stored.family_expires_at <= now
        {
            return Err(ApiError::InvalidRefreshToken);
        }
        let txn = onestop_model::begin_write(&self.db).await?;
        // Marking it used only if nobody did before makes two racing uses of
        // one token detectable: the loser sees zero rows.
        let marked = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::Id.eq(stored.id))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if marked.rows_affected == 0 {
            revoke_family(&txn, stored.family_id).await?;
            txn.commit().await?;
            tracing::warn!(user_id = %stored.user_id, family_id = %stored.family_id,
            "a refresh token was used twice; its family is revoked");
            return Err(ApiError::InvalidRefreshToken);
        }
        let account = user::Entity::find_by_id(stored.user_id)
            .one(&txn)
            .await?
            .filter(|account| !account.disabled)
            .ok_or(ApiError::InvalidRefreshToken)?;
        let pair = self
            .issue_in_family(&txn, &account, stored.family_id, stored.family_expires_at)
            .await?;
        txn.commit().await?;
        Ok(pair)
    }

    /// Ends the sign-in a refresh token belongs to, or every sign-in of its
    /// account. Access tokens of an ended sign-in stop working at once.
    /// Unknown tokens are ignored: signing out twice is not an error.
    pub async fn end(&self, presented: &str, everywhere: bool) -> Result<(), ApiError> {
        if let Some(stored) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(digest(presented)))
            .one(&self.db)
            .await?
        {
            if everywhere {
                end_all_sessions(&self.db, stored.user_id).await?;
            } else {
                revoke_family(&self.db, stored.family_id).await?;
            }
        }
        Ok(())
    }
}

async fn revoke_family(db: &impl ConnectionTrait, family_id: Uuid) -> Result<(), ApiError> {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::FamilyId.eq(family_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes every sign-in of an account.
pub async fn end_all_sessions(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), ApiError> {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Whether a sign-in is still on: its family has a token nobody revoked.
/// Disabling an account revokes every token of it in the same
/// transaction, so this one indexed lookup also ends a disabled account's
/// access; every authenticated request asks it.
pub async fn session_is_live(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<bool, ApiError> {
    let live = refresh_token::Entity::find()
        .filter(refresh_token::Column::FamilyId.eq(session_id))
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .select_only()
        .column(refresh_token::Column::Id)
        .limit(1)
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    Ok(live.is_some())
}

/// Disables an account and ends its sign-ins; its tokens stop at once.
pub async fn disable_account(db: &DatabaseConnection, username: &str) -> Result<bool, ApiError> {
    let txn = onestop_model::begin_write(db).await?;
    let Some(account) = user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(&txn)
        .await?
    else {
        return Ok(false);
    };
    user::Entity::update_many()
        .col_expr(user::Column::Disabled, Expr::value(true))
        .filter(user::Column::Id.eq(account.id))
        .exec(&txn)
        .await?;
    end_all_sessions(&txn, account.id).await?;
    txn.commit().await?;
    Ok(true)
}
