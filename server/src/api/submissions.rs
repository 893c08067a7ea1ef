use std::time::Instant;

use onestop_model::entities::submission;
use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;
use uuid::Uuid;

use super::{reader_locale, SubmissionView, Tag, Text};
use crate::access::own_submission;
use crate::auth::BearerAuth;
use crate::cases::filing::time_stage;
use crate::cases::reading::submissions_with_cases;
use crate::cases::NewFiling;
use crate::error::ApiError;
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::pagination::{Order, PageRequest};
use crate::state::AppState;
use crate::{facts, problems};

crate::page_type!(SubmissionPage, SubmissionView);

pub struct SubmissionsApi;

#[derive(Object, Clone)]
pub struct ServiceRequest {
    /// A service code from `GET /v1/catalog/services`.
    #[oai(validator(max_length = 64))]
    pub service: Text,
    /// Attachments (uploaded first) for this service.
    #[oai(default, nullable)]
    pub attachments: Vec<Uuid>,
}

#[derive(Object, Clone)]
pub struct FormRequest {
    /// A form code from `GET /v1/catalog/forms`.
    #[oai(validator(max_length = 64))]
    pub form: Text,
    /// The office to file to, one of the form's `offices`.
    #[oai(validator(max_length = 64))]
    pub office: Text,
    /// The form's fields by name (a JSON object).
    pub fields: serde_json::Value,
    /// Pages of the report: photos or PDFs uploaded first.
    #[oai(default, nullable)]
    pub attachments: Vec<Uuid>,
}

/// One submission: several services of a bundle (an applicant), or one
/// standard form to one office (an organisation member).
#[derive(Object, Clone)]
pub struct NewSubmission {
    #[oai(default, nullable)]
    pub services: Vec<ServiceRequest>,
    #[oai(nullable)]
    pub form: Option<FormRequest>,
}

#[derive(ApiResponse)]
pub enum SubmissionCreated {
    /// Received; every case is on its way to its office.
    #[oai(status = 201)]
    Created(Json<SubmissionView>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum SubmissionFound {
    #[oai(status = 200)]
    Ok(Json<SubmissionView>),
}

#[derive(ApiResponse)]
pub enum SubmissionList {
    #[oai(status = 200)]
    Ok(Json<SubmissionPage>),
}

problems!(pub CreateProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, Conflict = 409, LengthRequired = 411,
    PayloadTooLarge = 413, UnsupportedMediaType = 415, UnprocessableEntity = 422,
    ServiceUnavailable = 503,
});

problems!(pub ListProblems { BadRequest = 400, Unauthorized = 401, UnprocessableEntity = 422 });
problems!(pub ReadProblems { BadRequest = 400, Unauthorized = 401, NotFound = 404 });
problems!(pub WithdrawProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, LengthRequired = 411, PayloadTooLarge = 413,
    UnsupportedMediaType = 415,
});

impl NewSubmission {
    /// What is asked for: services or a form, never both nor neither.
    fn filing(&self) -> Result<NewFiling, ApiError> {
        match (&self.form, self.services.is_empty()) {
            (None, true) => Err(ApiError::Validation(
                "ask for at least one service, or file a form".into(),
            )),
            (Some(_), false) => Err(ApiError::Validation(
                "a submission holds services or a form, not both".into(),
            )),
            (None, false) => Ok(NewFiling::Services(
                self.services
                    .iter()
                    .map(|request| (request.service.0.clone(), request.attachments.clone()))
                    .collect(),
            )),
            (Some(form), true) => Ok(NewFiling::Form {
                code: form.form.0.clone(),
                office: form.office.0.clone(),
                fields: form.fields.clone(),
                attachments: form.attachments.clone(),
            }),
        }
    }
}

/// Checks, routes and writes a submission, storing its answer under the
/// idempotency key in the same transaction.
async fn file(
    state: &AppState,
    request: &Request,
    auth: &BearerAuth,
    body: &NewSubmission,
    key: Option<&IdempotencyKey>,
) -> Result<SubmissionView, ApiError> {
    let names = state.names.in_locale(reader_locale(request, None));
    let filing = body.filing()?;
    let client_address = state.limits.client_address(request).to_string();
    let plan = state
        .cases
        .plan(
            &auth.0,
            &filing,
            &state.catalog,
            &names,
            |account| async move {
                facts::look_up(state, &account, "application", client_address).await
            },
        )
        .await?;
    state
        .cases
        .file(&auth.0, plan, key, |filed| {
            SubmissionView::new(filed, &names)
        })
        .await
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Submissions")]
impl SubmissionsApi {
    /// Apply for several services at once, or file a form. Each request
    /// becomes a case routed to its office. Send an `Idempotency-Key` so a
    /// retry on a bad network never applies twice.
    #[oai(
        path = "/submissions",
        method = "post",
        operation_id = "createSubmission"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
        body: Json<NewSubmission>,
    ) -> Result<SubmissionCreated, CreateProblems> {
        auth.0.require_citizen()?;
        let started = Instant::now();
        let key = idempotency_key
            .0
            .as_deref()
            .map(IdempotencyKey::parse)
            .transpose()?;
        if let Some(key) = &key {
            let fingerprint =
                idempotency::fingerprint("createSubmission", &body.0.to_json().unwrap_or_default());
            if let Claim::Replay { body, .. } =
                idempotency::claim(&state.db, auth.0.user_id, key, &fingerprint).await?
            {
                let view: SubmissionView = serde_json::from_str(&body).map_err(|e| {
                    ApiError::Internal(format!("a stored response is unreadable: {e}"))
                })?;
                let location = format!("/v1/submissions/{}", view.id);
                return Ok(SubmissionCreated::Created(Json(view), location));
            }
            time_stage("idempotency", started);
        }
        match file(&state, request, &auth, &body.0, key.as_ref()).await {
            Ok(view) => {
                let location = format!("/v1/submissions/{}", view.id);
                Ok(SubmissionCreated::Created(Json(view), location))
            }
            Err(error) => {
                if let Some(key) = &key {
                    idempotency::release(&state.db, auth.0.user_id, key).await;
                }
                Err(error.into())
            }
        }
    }

    /// My submissions, newest first.
    #[oai(
        path = "/submissions",
        method = "get",
        operation_id = "listSubmissions"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Items per page, at most the server's cap (100 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> Result<SubmissionList, ListProblems> {
        let page = PageRequest::new(
            cursor.0.as_deref(),
            limit.0,
            state.settings.max_page_size,
            Order::NewestFirst,
        )?;
        let query =
            submission::Entity::find().filter(submission::Column::ApplicantId.eq(auth.0.user_id));
        let (shown, next_cursor) = page
            .fetch(
                &state.reads,
                query,
                submission::Column::CreatedAt,
                submission::Column::Id,
            )
            .await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let items = submissions_with_cases(&state.reads, shown)
            .await?
            .into_iter()
            .map(|record| SubmissionView::new(record, &names))
            .collect();
        Ok(SubmissionList::Ok(Json(SubmissionPage {
            items,
            next_cursor,
        })))
    }

    /// One of my submissions with every case and its status.
    #[oai(
        path = "/submissions/:id",
        method = "get",
        operation_id = "getSubmission"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<SubmissionFound, ReadProblems> {
        let found = own_submission(&state.reads, &auth.0, id.0).await?;
        let names = state.names.in_locale(reader_locale(request, None));
        Ok(SubmissionFound::Ok(Json(
            submission_view(&state.reads, found, &names).await?,
        )))
    }

    /// Withdraw a submission: every case still open closes. Withdrawing
    /// again changes nothing.
    #[oai(
        path = "/submissions/:id/withdraw",
        method = "post",
        operation_id = "withdrawSubmission"
    )]
    async fn withdraw(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<SubmissionFound, WithdrawProblems> {
        let withdrawn = state.cases.withdraw_submission(&auth.0, id.0).await?;
        let names = state.names.in_locale(reader_locale(request, None));
        Ok(SubmissionFound::Ok(Json(
            submission_view(&state.db, withdrawn, &names).await?,
        )))
    }
}

/// One submission as its applicant sees it.
async fn submission_view(
    db: &impl ConnectionTrait,
    found: submission::Model,
    names: &crate::cases::Names,
) -> Result<SubmissionView, ApiError> {
    let record = submissions_with_cases(db, vec![found])
        .await?
        .pop()
        .ok_or(ApiError::NotFound("submission"))?;
    Ok(SubmissionView::new(record, names))
}
