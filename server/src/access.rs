//! Who may see what, in one place. Every object route asks here; an object
//! the caller may not see is answered as if it did not exist (404), so ids
//! reveal nothing.

use onestop_model::entities::{
    attachment, case, case_attachment, returned_document, returned_document_attachment, submission,
};
use onestop_model::Role;
use sea_orm::prelude::*;
use sea_orm::{JoinType, QuerySelect};

use crate::auth::Principal;
use crate::error::ApiError;

/// A submission of the caller's own.
pub async fn own_submission(
    db: &impl ConnectionTrait,
    principal: &Principal,
    id: Uuid,
) -> Result<submission::Model, ApiError> {
    submission::Entity::find_by_id(id)
        .filter(submission::Column::ApplicantId.eq(principal.user_id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("submission"))
}

/// A case of the caller's own (as its applicant or filer).
pub async fn own_case(
    db: &impl ConnectionTrait,
    principal: &Principal,
    id: Uuid,
) -> Result<case::Model, ApiError> {
    case::Entity::find_by_id(id)
        .filter(case::Column::ApplicantId.eq(principal.user_id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("case"))
}

/// A case of the official's own agency.
pub async fn agency_case(
    db: &impl ConnectionTrait,
    principal: &Principal,
    id: Uuid,
) -> Result<case::Model, ApiError> {
    let agency = principal.official_agency()?;
    case::Entity::find_by_id(id)
        .filter(case::Column::AgencyId.eq(agency))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("case"))
}

/// [`readable_attachment`] for showing its bytes: when someone other than
/// the uploader looks, the access is committed to the uploader's access
/// log before a byte is shown.
pub async fn viewed_attachment(
    db: &impl ConnectionTrait,
    records: &crate::access_log::Recorder,
    client_address: String,
    principal: &Principal,
    id: Uuid,
    what: &'static str,
) -> Result<attachment::Model, ApiError> {
    let found = readable_attachment(db, principal, id).await?;
    if found.owner_id != principal.user_id {
        records
            .record(crate::access_log::Access {
                subject: found.owner_id,
                actor: crate::access_log::Actor::person(principal),
                client_address,
                action: what,
                object_id: found.id.to_string(),
                purpose: if principal.role == Role::Official {
                    "review"
                } else {
                    "correspondence"
                },
            })
            .await?;
    }
    Ok(found)
}

/// An attachment its uploader, an official of an agency with a case that
/// uses it, or the recipient of a document it came with, may read.
pub async fn readable_attachment(
    db: &impl ConnectionTrait,
    principal: &Principal,
    id: Uuid,
) -> Result<attachment::Model, ApiError> {
    let found = attachment::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("attachment"))?;
    if found.owner_id == principal.user_id {
        return Ok(found);
    }
    if principal.role == Role::Official {
        if let Some(agency) = principal.agency_id.as_deref() {
            let used = case_attachment::Entity::find()
                .join(JoinType::InnerJoin, case_attachment::Relation::Case.def())
                .filter(case_attachment::Column::AttachmentId.eq(id))
                .filter(case::Column::AgencyId.eq(agency))
                .count(db)
                .await?;
            if used > 0 {
                return Ok(found);
            }
        }
    }
    let sent_to_caller = returned_document_attachment::Entity::find()
        .join(
            JoinType::InnerJoin,
            returned_document_attachment::Relation::Document.def(),
        )
        .filter(returned_document_attachment::Column::AttachmentId.eq(id))
        .filter(returned_document::Column::RecipientId.eq(principal.user_id))
        .count(db)
        .await?;
    if sent_to_caller > 0 {
        return Ok(found);
    }
    Err(ApiError::NotFound("attachment"))
}
