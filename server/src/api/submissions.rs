use std::collections::BTreeSet;

use chrono::Utc;
use onestop_model::catalog::FormField;
use onestop_model::entities::{
    attachment, case, case_attachment, form, inbox_message, service, submission, user,
};
use onestop_model::{CaseStatus, EventKind, Role, StreamEvent, SubmissionKind};
use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use sea_orm::QuerySelect;
use uuid::Uuid;

use super::{reader_locale, NamedRef, Tag, Text};
use crate::access::own_submission;
use crate::auth::{BearerAuth, Principal};
use crate::cases::{cases_of, etag, newest_first, Names};
use crate::eligibility::{assess, rule_of, Verdict};
use crate::error::ApiError;
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::pagination::{page_size, split_page, Cursor, Order};
use crate::routing::{office_for_form, office_for_service};
use crate::state::AppState;

crate::page_type!(SubmissionPage, SubmissionView);
use crate::{facts, history, outbox, problems};

pub struct SubmissionsApi;

const MAX_REQUESTS: usize = 10;
const MAX_ATTACHMENTS: usize = 30;
const MAX_TEXT_FIELD: usize = 2000;

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

#[derive(Object, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseView {
    pub id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub service: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub form: Option<String>,
    /// The service's or form's name in the reader's language.
    pub title: String,
    pub agency: NamedRef,
    /// `submitted`, `in_review`, `approved`, `rejected`, `info_requested`
    /// or `withdrawn`.
    pub status: String,
    pub attachments: Vec<Uuid>,
    pub etag: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Object, Clone, serde::Serialize, serde::Deserialize)]
pub struct SubmissionView {
    pub id: Uuid,
    /// `one_stop` or `form`.
    pub kind: String,
    pub created_at: DateTimeUtc,
    pub cases: Vec<CaseView>,
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

/// Closes one open case of its applicant. A case already closed is left
/// as it is; returns whether this call withdrew it.
pub async fn withdraw_case(
    db: &DatabaseConnection,
    principal: &Principal,
    case: &case::Model,
) -> Result<bool, ApiError> {
    if !case.status.is_open() {
        return Ok(false);
    }
    let txn = onestop_model::begin_write(db).await?;
    let changed = case::Entity::update_many()
        .col_expr(
            case::Column::Status,
            Expr::value(CaseStatus::Withdrawn.as_str()),
        )
        .col_expr(
            case::Column::Version,
            Expr::col(case::Column::Version).add(1),
        )
        .col_expr(case::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(case::Column::Id.eq(case.id))
        .filter(case::Column::Status.is_in([
            CaseStatus::Submitted.as_str(),
            CaseStatus::InReview.as_str(),
            CaseStatus::InfoRequested.as_str(),
        ]))
        .exec(&txn)
        .await?;
    if changed.rows_affected == 1 {
        history::record(
            &txn,
            case.id,
            Some(principal),
            "withdrawn",
            serde_json::json!({}),
        )
        .await?;
    }
    txn.commit().await?;
    Ok(changed.rows_affected == 1)
}
problems!(pub ListProblems { BadRequest = 400, Unauthorized = 401, UnprocessableEntity = 422 });
problems!(pub ReadProblems { BadRequest = 400, Unauthorized = 401, NotFound = 404 });
problems!(pub WithdrawProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, LengthRequired = 411, PayloadTooLarge = 413,
    UnsupportedMediaType = 415,
});

/// What a submission will become, checked before anything is written.
struct PlannedCase {
    agency_id: String,
    service_code: Option<String>,
    form_code: Option<String>,
    fields: serde_json::Value,
    attachments: Vec<Uuid>,
}

pub fn case_view(case: &case::Model, attachments: Vec<Uuid>, names: &Names) -> CaseView {
    CaseView {
        id: case.id,
        service: case.service_code.clone(),
        form: case.form_code.clone(),
        title: names.subject(crate::cases::subject_code(case)),
        agency: NamedRef {
            id: case.agency_id.clone(),
            name: names.agency(&case.agency_id),
        },
        status: case.status.as_str().to_owned(),
        attachments,
        etag: etag(case),
        updated_at: case.updated_at,
    }
}

async fn views(
    db: &impl ConnectionTrait,
    submissions: Vec<submission::Model>,
    names: &Names,
) -> Result<Vec<SubmissionView>, ApiError> {
    let ids: Vec<Uuid> = submissions.iter().map(|s| s.id).collect();
    let mut cases = cases_of(db, &ids).await?;
    Ok(submissions
        .into_iter()
        .map(|s| SubmissionView {
            id: s.id,
            kind: match s.kind {
                SubmissionKind::OneStop => "one_stop".into(),
                SubmissionKind::Form => "form".into(),
            },
            created_at: s.created_at,
            cases: cases
                .remove(&s.id)
                .unwrap_or_default()
                .into_iter()
                .map(|(case, attachments)| case_view(&case, attachments, names))
                .collect(),
        })
        .collect())
}

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

fn check_form_fields(
    spec: &[FormField],
    given: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let given = given.as_object().ok_or_else(|| {
        ApiError::Validation("fields must be an object of field names and values".into())
    })?;
    if let Some(unknown) = given
        .keys()
        .find(|name| !spec.iter().any(|f| &f.name == *name))
    {
        return Err(ApiError::Validation(format!(
            "the form has no field {unknown}"
        )));
    }
    for field in spec {
        let value = given.get(&field.name).filter(|v| !v.is_null());
        let Some(value) = value else {
            if field.required {
                return Err(ApiError::Validation(format!(
                    "the field {} is required",
                    field.name
                )));
            }
            continue;
        };
        let ok = match field.kind.as_str() {
            "integer" => value.is_i64() || value.is_u64(),
            "date" => value
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            _ => value
                .as_str()
                .is_some_and(|s| s.chars().count() <= MAX_TEXT_FIELD),
        };
        if !ok {
            return Err(ApiError::Validation(format!(
                "the field {} must be {}",
                field.name,
                match field.kind.as_str() {
                    "integer" => "a whole number".to_owned(),
                    "date" => "a date as YYYY-MM-DD".to_owned(),
                    _ => format!("text of at most {MAX_TEXT_FIELD} characters"),
                }
            )));
        }
    }
    Ok(serde_json::Value::Object(given.clone()))
}

async fn plan(
    state: &AppState,
    principal: &Principal,
    body: &NewSubmission,
    names: &Names,
    client_address: String,
) -> Result<(SubmissionKind, Option<String>, Vec<PlannedCase>), ApiError> {
    let account = user::Entity::find_by_id(principal.user_id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    match (&body.form, body.services.is_empty()) {
        (None, true) => Err(ApiError::Validation(
            "ask for at least one service, or file a form".into(),
        )),
        (Some(_), false) => Err(ApiError::Validation(
            "a submission holds services or a form, not both".into(),
        )),
        (None, false) => {
            if principal.role != Role::Applicant {
                return Err(ApiError::Forbidden("only applicants apply for services"));
            }
            if body.services.len() > MAX_REQUESTS {
                return Err(ApiError::Validation(format!(
                    "at most {MAX_REQUESTS} services at once"
                )));
            }
            let mut seen = BTreeSet::new();
            let mut wanted = Vec::with_capacity(body.services.len());
            for request in &body.services {
                if !seen.insert(request.service.as_str()) {
                    return Err(ApiError::Validation(format!(
                        "the service {} is asked for twice",
                        request.service
                    )));
                }
                let found = service::Entity::find_by_id(request.service.clone())
                    .filter(service::Column::Active.eq(true))
                    .one(&state.db)
                    .await?
                    .ok_or_else(|| {
                        ApiError::Validation(format!("there is no service {}", request.service))
                    })?;
                check_attachments(&state.db, principal.user_id, &request.attachments).await?;
                wanted.push((request, found));
            }

            // Facts are looked up once, with consent, when a rule needs them.
            let mut needs_facts = false;
            for (_, found) in &wanted {
                needs_facts |= rule_of(found)?.needs_facts();
            }
            let shared = if needs_facts {
                let shared = facts::look_up(state, &account, "application", client_address).await?;
                if shared.is_none() {
                    return Err(ApiError::NotEligible(
                        "the public registry has no record of you, so eligibility cannot be checked; \
                         apply at an office with your documents"
                            .into(),
                    ));
                }
                shared
            } else {
                None
            };
            let mut refusals = Vec::new();
            for (_, found) in &wanted {
                let assessment = assess(&state.catalog, found, shared.as_ref(), names.locale)?;
                if assessment.verdict != Verdict::Eligible {
                    refusals.push(format!(
                        "{}: {}",
                        names.subject(&found.code),
                        assessment.reasons.join(" ")
                    ));
                }
            }
            if !refusals.is_empty() {
                return Err(ApiError::NotEligible(refusals.join("; ")));
            }

            let region = shared
                .as_ref()
                .and_then(|f| f.region.clone())
                .or(account.region.clone());
            let mut planned = Vec::with_capacity(wanted.len());
            for (request, found) in wanted {
                let office = office_for_service(
                    &state.db,
                    &found.agency_kind,
                    region.as_deref(),
                    &found.code,
                )
                .await?;
                let fields = match &shared {
                    Some(facts) if rule_of(&found)?.needs_facts() => {
                        serde_json::json!({ "shared_facts": facts.as_json() })
                    }
                    _ => serde_json::json!({}),
                };
                planned.push(PlannedCase {
                    agency_id: office.id,
                    service_code: Some(found.code),
                    form_code: None,
                    fields,
                    attachments: request.attachments.clone(),
                });
            }
            Ok((SubmissionKind::OneStop, None, planned))
        }
        (Some(request), true) => {
            if principal.role != Role::OrganisationMember {
                return Err(ApiError::Forbidden(
                    "only members of an organisation file forms",
                ));
            }
            let found = form::Entity::find_by_id(request.form.clone())
                .filter(form::Column::Active.eq(true))
                .one(&state.db)
                .await?
                .ok_or_else(|| {
                    ApiError::Validation(format!("there is no form {}", request.form))
                })?;
            let spec: Vec<FormField> =
                serde_json::from_value(found.fields.clone()).map_err(|e| {
                    ApiError::Internal(format!("form {} has a broken field list: {e}", found.code))
                })?;
            let fields = check_form_fields(&spec, &request.fields)?;
            check_attachments(&state.db, principal.user_id, &request.attachments).await?;
            if (request.attachments.len() as i32) < found.min_pages {
                return Err(ApiError::Validation(format!(
                    "the form {} needs at least {} attached page(s)",
                    found.code, found.min_pages
                )));
            }
            let office =
                office_for_form(&state.db, &found.agency_kind, &request.office, &found.code)
                    .await?;
            Ok((
                SubmissionKind::Form,
                principal.organisation_id.clone(),
                vec![PlannedCase {
                    agency_id: office.id,
                    service_code: None,
                    form_code: Some(found.code),
                    fields,
                    attachments: request.attachments.clone(),
                }],
            ))
        }
    }
}

/// Writes the submission, its cases, the applicant's inbox entry and the
/// event, in one transaction with the idempotency record.
async fn create(
    state: &AppState,
    principal: &Principal,
    body: &NewSubmission,
    names: &Names,
    key: Option<&IdempotencyKey>,
    client_address: String,
) -> Result<SubmissionView, ApiError> {
    let (kind, organisation_id, planned) =
        plan(state, principal, body, names, client_address).await?;
    let now = Utc::now();
    let submission_id = Uuid::now_v7();
    let txn = onestop_model::begin_write(&state.db).await?;
    let created = submission::ActiveModel {
        id: Set(submission_id),
        applicant_id: Set(principal.user_id),
        kind: Set(kind),
        organisation_id: Set(organisation_id),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let mut codes = Vec::new();
    for (position, planned) in planned.into_iter().enumerate() {
        let case_id = Uuid::now_v7();
        codes.push(
            planned
                .service_code
                .clone()
                .or(planned.form_code.clone())
                .unwrap_or_default(),
        );
        case::ActiveModel {
            id: Set(case_id),
            submission_id: Set(submission_id),
            applicant_id: Set(principal.user_id),
            agency_id: Set(planned.agency_id),
            service_code: Set(planned.service_code),
            form_code: Set(planned.form_code),
            status: Set(CaseStatus::Submitted),
            version: Set(1),
            claimed_by: Set(None),
            claimed_at: Set(None),
            fields: Set(planned.fields),
            // Cases keep the order they were asked for.
            created_at: Set(now + chrono::Duration::microseconds(position as i64)),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        for attachment_id in &planned.attachments {
            case_attachment::ActiveModel {
                case_id: Set(case_id),
                attachment_id: Set(*attachment_id),
            }
            .insert(&txn)
            .await?;
        }
        history::record(
            &txn,
            case_id,
            Some(principal),
            "submitted",
            serde_json::json!({ "attachments": planned.attachments }),
        )
        .await?;
    }
    let event = StreamEvent {
        event_id: Uuid::now_v7(),
        kind: EventKind::SubmissionReceived,
        occurred_at: now,
        recipient_user_id: principal.user_id,
        submission_id,
        case_id: None,
        status: Some(CaseStatus::Submitted.as_str().to_owned()),
    };
    inbox_message::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(principal.user_id),
        kind: Set(EventKind::SubmissionReceived),
        submission_id: Set(Some(submission_id)),
        case_id: Set(None),
        status: Set(Some(CaseStatus::Submitted.as_str().to_owned())),
        subject_code: Set(Some(codes.join(","))),
        reason: Set(None),
        created_at: Set(now),
        read_at: Set(None),
        document_id: Set(None),
    }
    .insert(&txn)
    .await?;
    outbox::record(&txn, &event).await?;
    let view = views(&txn, vec![created], names)
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("a submission vanished inside its transaction".into()))?;
    if let Some(key) = key {
        let stored = serde_json::to_string(&view).map_err(|e| ApiError::Internal(e.to_string()))?;
        idempotency::complete(&txn, principal.user_id, key, 201, &stored).await?;
    }
    txn.commit().await?;
    state.outbox_wakeup.notify_one();
    metrics::counter!("submissions_created_total", "kind" => if body.form.is_some() { "form" } else { "one_stop" })
        .increment(1);
    Ok(view)
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
        let names = state.names.in_locale(reader_locale(request, None));
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
        }
        let client = state.limits.client_address(request).to_string();
        match create(&state, &auth.0, &body.0, &names, key.as_ref(), client).await {
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
        let size = page_size(limit.0, state.settings.max_page_size)?;
        let mut query = newest_first().filter(submission::Column::ApplicantId.eq(auth.0.user_id));
        if let Some(token) = &cursor.0 {
            query = query.filter(Cursor::decode(token)?.rows_after(
                submission::Column::CreatedAt,
                submission::Column::Id,
                Order::NewestFirst,
            ));
        }
        let rows = query.limit(size + 1).all(&state.reads).await?;
        let (shown, next_cursor) = split_page(rows, size, |s| Cursor {
            created_at: s.created_at,
            id: s.id,
        });
        let names = state.names.in_locale(reader_locale(request, None));
        let page = SubmissionPage {
            items: views(&state.reads, shown, &names).await?,
            next_cursor,
        };
        Ok(SubmissionList::Ok(Json(page)))
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
        let view = views(&state.reads, vec![found], &names)
            .await?
            .pop()
            .ok_or(ApiError::NotFound("submission"))?;
        Ok(SubmissionFound::Ok(Json(view)))
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
        let found = own_submission(&state.db, &auth.0, id.0).await?;
        let open: Vec<CaseStatus> = [
            CaseStatus::Submitted,
            CaseStatus::InReview,
            CaseStatus::InfoRequested,
        ]
        .into();
        case::Entity::update_many()
            .col_expr(
                case::Column::Status,
                Expr::value(CaseStatus::Withdrawn.as_str()),
            )
            .col_expr(
                case::Column::Version,
                Expr::col(case::Column::Version).add(1),
            )
            .col_expr(case::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(case::Column::SubmissionId.eq(found.id))
            .filter(case::Column::Status.is_in(open.iter().map(|s| s.as_str())))
            .exec(&state.db)
            .await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let view = views(&state.db, vec![found], &names)
            .await?
            .pop()
            .ok_or(ApiError::NotFound("submission"))?;
        Ok(SubmissionFound::Ok(Json(view)))
    }
}
