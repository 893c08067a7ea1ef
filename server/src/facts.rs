//! Looking a person's facts up, only with their recorded consent, for a
//! named purpose, and on the record.

use chrono::Utc;
use onestop_model::entities::{consent, user};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use sea_orm::DatabaseConnection;

use crate::access_log::{Access, Actor, Recorder};
use crate::error::ApiError;
use crate::registry::{FactRegistry, SharedFacts};

/// The consent to have facts looked up in public records instead of
/// attaching paper proofs.
pub const SHARED_FACTS: &str = "shared_facts";

/// Consent purposes a person can grant.
pub const PURPOSES: [&str; 1] = [SHARED_FACTS];

pub async fn has_consent(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    purpose: &str,
) -> Result<bool, DbErr> {
    Ok(consent::Entity::find()
        .filter(consent::Column::UserId.eq(user_id))
        .filter(consent::Column::Purpose.eq(purpose))
        .filter(consent::Column::RevokedAt.is_null())
        .count(db)
        .await?
        > 0)
}

/// Records consent; granting again keeps the first grant.
pub async fn grant(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    purpose: &str,
) -> Result<consent::Model, DbErr> {
    if let Some(existing) = consent::Entity::find()
        .filter(consent::Column::UserId.eq(user_id))
        .filter(consent::Column::Purpose.eq(purpose))
        .filter(consent::Column::RevokedAt.is_null())
        .one(db)
        .await?
    {
        return Ok(existing);
    }
    consent::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.to_owned()),
        granted_at: Set(Utc::now()),
        revoked_at: Set(None),
    }
    .insert(db)
    .await
}

pub async fn revoke(db: &impl ConnectionTrait, user_id: Uuid, purpose: &str) -> Result<(), DbErr> {
    consent::Entity::update_many()
        .col_expr(consent::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(consent::Column::UserId.eq(user_id))
        .filter(consent::Column::Purpose.eq(purpose))
        .filter(consent::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// What a lookup uses: the database (consent), the writer of access
/// records, and the registry.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub db: &'a DatabaseConnection,
    pub access_records: &'a Recorder,
    pub registry: &'a dyn FactRegistry,
}

/// The person's shared facts, looked up for `purpose`. Refused without
/// consent; `None` when the registry does not know the person.
pub async fn look_up(
    sources: impl Into<Sources<'_>>,
    person: &user::Model,
    purpose: &'static str,
    client_address: String,
) -> Result<Option<SharedFacts>, ApiError> {
    let Sources {
        db,
        access_records,
        registry,
    } = sources.into();
    if !has_consent(db, person.id, SHARED_FACTS).await? {
        return Err(ApiError::ConsentRequired(SHARED_FACTS));
    }
    let Some(rrn_index) = &person.rrn_index else {
        return Ok(None);
    };
    // On the record before the facts are used.
    access_records
        .record(Access {
            subject: person.id,
            actor: Actor::service(),
            client_address,
            action: "facts.looked_up",
            object_id: "registry".to_owned(),
            purpose,
        })
        .await?;
    registry.lookup(rrn_index, purpose).await.map_err(|error| {
        tracing::warn!(%error, "the registry lookup failed");
        ApiError::Unavailable("the public registry cannot be reached; try again shortly")
    })
}
