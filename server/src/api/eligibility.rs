use onestop_model::catalog::pick_localised;
use onestop_model::entities::{service, user};
use onestop_model::Role;
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::QueryOrder;

use super::catalog::DocumentRef;
use super::{reader_locale, NamedRef, Tag};
use crate::auth::BearerAuth;
use crate::eligibility::{assess, Verdict};
use crate::error::ApiError;
use crate::routing::office_for_service;
use crate::state::AppState;
use crate::{facts, problems};

pub struct EligibilityApi;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum VerdictView {
    Eligible,
    NotEligible,
    /// The public registry has no record to decide from: attach documents.
    Unknown,
}

#[derive(Object)]
pub struct ServiceEligibility {
    pub code: String,
    pub name: String,
    pub verdict: VerdictView,
    /// Why not, in the reader's language.
    pub reasons: Vec<String>,
    /// The office the application would go to.
    #[oai(skip_serializing_if_is_none)]
    pub office: Option<NamedRef>,
    /// Documents still to attach.
    pub documents_needed: Vec<DocumentRef>,
    /// Documents the shared facts replace.
    pub documents_skipped: Vec<DocumentRef>,
}

#[derive(Object)]
pub struct EligibilityView {
    /// Whether the public registry had a record of the applicant.
    pub facts_shared: bool,
    pub services: Vec<ServiceEligibility>,
}

#[derive(ApiResponse)]
pub enum EligibilityResponse {
    #[oai(status = 200)]
    Ok(Json<EligibilityView>),
}

problems!(pub EligibilityProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, UnprocessableEntity = 422,
    ServiceUnavailable = 503,
});

#[OpenApi(prefix_path = "/v1", tag = "Tag::Catalog")]
impl EligibilityApi {
    /// Which services apply to me, which do not and why, and which documents
    /// I no longer need to attach. Needs my consent `shared_facts`: my
    /// facts are looked up in public records, and the lookup is recorded in
    /// my access log.
    #[oai(path = "/eligibility", method = "get", operation_id = "getEligibility")]
    async fn eligibility(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        /// Only the services of this bundle.
        bundle: Query<Option<String>>,
    ) -> Result<EligibilityResponse, EligibilityProblems> {
        if auth.0.role != Role::Applicant {
            return Err(ApiError::Forbidden("eligibility is for applicants").into());
        }
        let person = user::Entity::find_by_id(auth.0.user_id)
            .one(&state.db)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        let locale = reader_locale(request, Some(&person.locale));
        let client = state.limits.client_address(request).to_string();
        let shared = facts::look_up(*state, &person, "eligibility", client).await?;
        let region = shared
            .as_ref()
            .and_then(|f| f.region.clone())
            .or(person.region.clone());

        let mut query = service::Entity::find()
            .filter(service::Column::Active.eq(true))
            .order_by_asc(service::Column::Position);
        if let Some(bundle) = &bundle.0 {
            query = query.filter(service::Column::Bundle.eq(bundle.as_str()));
        }
        let document = |code: String| DocumentRef {
            name: state
                .catalog
                .documents
                .get(&code)
                .map(|d| pick_localised(&d.names, locale))
                .unwrap_or_else(|| code.clone()),
            code,
        };
        let mut services = Vec::new();
        for candidate in query.all(&state.db).await? {
            let assessment = assess(&state.catalog, &candidate, shared.as_ref(), locale)?;
            let office = office_for_service(
                &state.db,
                &candidate.agency_kind,
                region.as_deref(),
                &candidate.code,
            )
            .await
            .ok()
            .map(|office| NamedRef::new(&office.id, &office.names, locale));
            services.push(ServiceEligibility {
                name: onestop_model::catalog::localised_name(&candidate.names, locale),
                code: candidate.code,
                verdict: match assessment.verdict {
                    Verdict::Eligible => VerdictView::Eligible,
                    Verdict::NotEligible => VerdictView::NotEligible,
                    Verdict::Unknown => VerdictView::Unknown,
                },
                reasons: assessment.reasons,
                office,
                documents_needed: assessment
                    .documents_needed
                    .into_iter()
                    .map(document)
                    .collect(),
                documents_skipped: assessment
                    .documents_skipped
                    .into_iter()
                    .map(document)
                    .collect(),
            });
        }
        Ok(EligibilityResponse::Ok(Json(EligibilityView {
            facts_shared: shared.is_some(),
            services,
        })))
    }
}
