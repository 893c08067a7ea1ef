//! Attachments named by a filing, a supplement or a letter.

use std::collections::BTreeSet;

use onestop_model::entities::attachment;
use sea_orm::prelude::*;

use crate::error::ApiError;

/// Attachments one request may name.
pub const MAX_ATTACHMENTS: usize = 30;

/// Checks that every attachment exists and belongs to the caller.
pub async fn check_attachments(
    db: &impl ConnectionTrait,
    owner: Uuid,
    ids: &[Uuid],
) -> Result<(), ApiError> {
    let distinct: BTreeSet<Uuid> = ids.iter().copied().collect();
    if distinct.len() != ids.len() {
        return Err(ApiError::Validation("an attachment is listed twice".into()));
    }
    if ids.len() > MAX_ATTACHMENTS {
        return Err(ApiError::Validation(format!(
            "at most {MAX_ATTACHMENTS} attachments per request"
        )));
    }
    if ids.is_empty() {
        return Ok(());
    }
    let found = attachment::Entity::find()
        .filter(attachment::Column::Id.is_in(distinct.iter().copied()))
        .filter(attachment::Column::OwnerId.eq(owner))
        .count(db)
        .await?;
    if found as usize != distinct.len() {
        return Err(ApiError::Validation(
            "an attachment is unknown; upload it first with POST /v1/attachments".into(),
        ));
    }
    Ok(())
}
