//! Which office a case goes to: for a service, the agency of the service's
//! kind that serves the applicant's registered region, or the national one
//! of that kind; for a form, the office the filer chose, if it takes that
//! form.

use onestop_model::entities::agency;
use sea_orm::prelude::*;
use sea_orm::{Condition, QueryOrder};

use crate::error::ApiError;

pub async fn office_for_service(
    db: &impl ConnectionTrait,
    agency_kind: &str,
    region: Option<&str>,
    service_code: &str,
) -> Result<agency::Model, ApiError> {
    let mut serves = Condition::any().add(agency::Column::Region.is_null());
    if let Some(region) = region {
        serves = serves.add(agency::Column::Region.eq(region));
    }
    let candidates = agency::Entity::find()
        .filter(agency::Column::Kind.eq(agency_kind))
        .filter(serves)
        .order_by_asc(agency::Column::Id)
        .all(db)
        .await?;
    // A local office of the region comes before a national body.
    candidates
        .iter()
        .find(|a| a.region.is_some())
        .or(candidates.first())
        .cloned()
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "no office serves your registered region for the service {service_code}"
            ))
        })
}

pub async fn office_for_form(
    db: &impl ConnectionTrait,
    agency_kind: &str,
    office_id: &str,
    form_code: &str,
) -> Result<agency::Model, ApiError> {
    agency::Entity::find_by_id(office_id.to_owned())
        .one(db)
        .await?
        .filter(|office| office.kind == agency_kind)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "office {office_id} does not take the form {form_code}"
            ))
        })
}
