use chrono::Utc;
use onestop_model::entities::{
    attachment, case, case_event, decision, inbox_message, returned_document,
    returned_document_attachment, supplement, user,
};
use onestop_model::{CaseStatus, EventKind, StreamEvent};
use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use sea_orm::{Condition, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::attachments::AttachmentView;
use super::my_cases::SupplementView;
use super::submissions::check_attachments;
use super::{reader_locale, NamedRef, Tag, Text};
use crate::access::agency_case;
use crate::auth::BearerAuth;
use crate::cases::{etag, if_match_holds, subject_code, Names};
use crate::error::ApiError;
use crate::notification::{notification_of, NotificationView};
use crate::pagination::{page_size, split_page, Cursor, Order};
use crate::state::AppState;

crate::page_type!(ReviewCasePage, ReviewCaseSummary);
use crate::access_log::{self, Access, Actor};
use crate::auth::Principal;
use crate::{history, outbox, problems};

pub struct ReviewApi;

const MAX_REASON: usize = 2000;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum Outcome {
    Approved,
    Rejected,
    InfoRequested,
}

impl From<Outcome> for CaseStatus {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Approved => CaseStatus::Approved,
            Outcome::Rejected => CaseStatus::Rejected,
            Outcome::InfoRequested => CaseStatus::InfoRequested,
        }
    }
}

#[derive(Object)]
pub struct DecisionRequest {
    pub outcome: Outcome,
    /// Why; required to reject or to ask for more. The applicant reads it.
    #[oai(default, nullable)]
    pub reason: Text,
}

#[derive(Object)]
pub struct ReviewCaseSummary {
    pub id: Uuid,
    pub submission_id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub service: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub form: Option<String>,
    pub title: String,
    pub agency: NamedRef,
    pub status: String,
    /// Whether an official has claimed the case, and whether it is me.
    pub claimed: bool,
    pub claimed_by_me: bool,
    pub etag: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Object)]
pub struct DecisionView {
    pub outcome: String,
    pub reason: String,
    pub decided_at: DateTimeUtc,
}

#[derive(Object)]
pub struct CaseEventView {
    /// `submitted`, `claimed`, `decided`, `supplemented`, `document_sent`, `withdrawn`.
    pub action: String,
    /// `applicant`, `organisation_member`, `official` or `service`.
    pub actor_role: String,
    #[oai(skip_serializing_if_is_none)]
    pub actor_id: Option<Uuid>,
    pub detail: serde_json::Value,
    pub at: DateTimeUtc,
}

#[derive(Object)]
pub struct DocumentView {
    pub id: Uuid,
    pub case_id: Uuid,
    pub title: String,
    pub body: String,
    pub attachments: Vec<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Object)]
pub struct NewDocument {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub title: Text,
    #[oai(default, nullable, validator(max_length = 5000))]
    pub body: Text,
    /// The letter or notice itself: photos or PDFs the official uploaded.
    #[oai(default, nullable)]
    pub attachments: Vec<Uuid>,
}

#[derive(Object)]
pub struct ReviewCaseDetail {
    pub case: ReviewCaseSummary,
    /// The applicant's name as registered.
    pub applicant_name: String,
    /// Form fields of a filed form; the facts shared from public records for
    /// a service (`shared_facts`).
    pub fields: serde_json::Value,
    pub attachments: Vec<AttachmentView>,
    pub decisions: Vec<DecisionView>,
    /// The applicant's answers to requests for more information.
    pub supplements: Vec<SupplementView>,
    /// Documents the office sent back.
    pub documents: Vec<DocumentView>,
    /// Everything that happened to the case, oldest first.
    pub history: Vec<CaseEventView>,
    /// Whether the applicant's phones were told of the case's events.
    pub notification: NotificationView,
}

#[derive(ApiResponse)]
pub enum ReviewList {
    #[oai(status = 200)]
    Ok(Json<ReviewCasePage>),
}

#[derive(ApiResponse)]
pub enum ReviewCase {
    /// The case; send its `ETag` back in `If-Match` to decide.
    #[oai(status = 200)]
    Ok(Json<ReviewCaseDetail>, #[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
pub enum DocumentSent {
    /// The document is in the recipient's inbox, and their phones are told.
    #[oai(status = 201)]
    Created(Json<DocumentView>),
}

problems!(pub DocumentProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, NotFound = 404, LengthRequired = 411,
    PayloadTooLarge = 413, UnsupportedMediaType = 415, UnprocessableEntity = 422,
});
problems!(pub ReviewListProblems { BadRequest = 400, Unauthorized = 401, Forbidden = 403, UnprocessableEntity = 422 });
problems!(pub ReviewReadProblems { BadRequest = 400, Unauthorized = 401, Forbidden = 403, NotFound = 404 });
problems!(pub ClaimProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, NotFound = 404, Conflict = 409,
    LengthRequired = 411, PayloadTooLarge = 413,
});
problems!(pub DecideProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, NotFound = 404, Conflict = 409,
    LengthRequired = 411, PreconditionFailed = 412, PayloadTooLarge = 413, UnsupportedMediaType = 415,
    UnprocessableEntity = 422, PreconditionRequired = 428,
});

fn summary(case: &case::Model, me: Uuid, names: &Names) -> ReviewCaseSummary {
    ReviewCaseSummary {
        id: case.id,
        submission_id: case.submission_id,
        service: case.service_code.clone(),
        form: case.form_code.clone(),
        title: names.subject(subject_code(case)),
        agency: NamedRef {
            id: case.agency_id.clone(),
            name: names.agency(&case.agency_id),
        },
        status: case.status.as_str().to_owned(),
        claimed: case.claimed_by.is_some(),
        claimed_by_me: case.claimed_by == Some(me),
        etag: etag(case),
        created_at: case.created_at,
        updated_at: case.updated_at,
    }
}

async fn detail(
    db: &impl ConnectionTrait,
    case: case::Model,
    me: Uuid,
    names: &Names,
) -> Result<ReviewCase, ApiError> {
    let applicant_name = user::Entity::find_by_id(case.applicant_id)
        .one(db)
        .await?
        .map(|u| u.display_name)
        .unwrap_or_default();
    let attachment_ids = crate::cases::attachments_of(db, [case.id].into())
        .await?
        .remove(&case.id)
        .unwrap_or_default();
    let attachments = attachment::Entity::find()
        .filter(attachment::Column::Id.is_in(attachment_ids))
        .order_by_asc(attachment::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(AttachmentView::from)
        .collect();
    let decisions = decision::Entity::find()
        .filter(decision::Column::CaseId.eq(case.id))
        .order_by_asc(decision::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(|d| DecisionView {
            outcome: d.outcome.as_str().to_owned(),
            reason: d.reason,
            decided_at: d.created_at,
        })
        .collect();
    let supplements = supplement::Entity::find()
        .filter(supplement::Column::CaseId.eq(case.id))
        .order_by_asc(supplement::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(SupplementView::from)
        .collect();
    let mut documents = Vec::new();
    for document in returned_document::Entity::find()
        .filter(returned_document::Column::CaseId.eq(case.id))
        .order_by_asc(returned_document::Column::CreatedAt)
        .all(db)
        .await?
    {
        documents.push(document_view(db, document).await?);
    }
    let history = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .order_by_asc(case_event::Column::CreatedAt)
        .order_by_asc(case_event::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|e| CaseEventView {
            action: e.action,
            actor_role: e.actor_role,
            actor_id: e.actor_id,
            detail: e.detail,
            at: e.created_at,
        })
        .collect();
    let notification = notification_of(db, case.id).await?;
    let tag = etag(&case);
    Ok(ReviewCase::Ok(
        Json(ReviewCaseDetail {
            case: summary(&case, me, names),
            applicant_name,
            fields: case.fields.clone(),
            attachments,
            decisions,
            supplements,
            documents,
            history,
            notification,
        }),
        tag,
    ))
}

pub async fn document_view(
    db: &impl ConnectionTrait,
    document: returned_document::Model,
) -> Result<DocumentView, ApiError> {
    let attachments = returned_document_attachment::Entity::find()
        .filter(returned_document_attachment::Column::DocumentId.eq(document.id))
        .all(db)
        .await?
        .into_iter()
        .map(|link| link.attachment_id)
        .collect();
    Ok(DocumentView {
        id: document.id,
        case_id: document.case_id,
        title: document.title,
        body: document.body,
        attachments,
        created_at: document.created_at,
    })
}

/// Records that an official read or changed the applicant's case.
async fn record_access(
    state: &AppState,
    request: &Request,
    official: &Principal,
    case: &case::Model,
    action: &str,
    purpose: &str,
) -> Result<(), ApiError> {
    access_log::record(
        &state.db,
        Access {
            subject: case.applicant_id,
            actor: Actor::person(official),
            client_address: state.limits.client_address(request).to_string(),
            action,
            object_id: case.id.to_string(),
            purpose,
        },
    )
    .await?;
    Ok(())
}

#[OpenApi(prefix_path = "/v1/review", tag = "Tag::Review")]
impl ReviewApi {
    /// Cases of my agency, oldest first.
    #[oai(path = "/cases", method = "get", operation_id = "listReviewCases")]
    // One parameter per header, path and body the operation reads.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        /// Only cases in this status.
        status: Query<Option<String>>,
        /// Only cases of this service (or form) code.
        service: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Items per page, at most the server's cap (100 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> Result<ReviewList, ReviewListProblems> {
        let agency = auth.0.official_agency()?;
        let size = page_size(limit.0, state.settings.max_page_size)?;
        let mut query = case::Entity::find()
            .filter(case::Column::AgencyId.eq(agency))
            .order_by_asc(case::Column::CreatedAt)
            .order_by_asc(case::Column::Id);
        if let Some(status) = &status.0 {
            let status = CaseStatus::parse(status)
                .ok_or_else(|| ApiError::Validation(format!("there is no case status {status}")))?;
            query = query.filter(case::Column::Status.eq(status));
        }
        if let Some(code) = &service.0 {
            query = query.filter(
                Condition::any()
                    .add(case::Column::ServiceCode.eq(code.as_str()))
                    .add(case::Column::FormCode.eq(code.as_str())),
            );
        }
        if let Some(token) = &cursor.0 {
            query = query.filter(Cursor::decode(token)?.rows_after(
                case::Column::CreatedAt,
                case::Column::Id,
                Order::OldestFirst,
            ));
        }
        let rows = query.limit(size + 1).all(&state.reads).await?;
        let (rows, next_cursor) = split_page(rows, size, |c| Cursor {
            created_at: c.created_at,
            id: c.id,
        });
        let names = Names::load(&state.reads, reader_locale(request, None)).await?;
        let items = rows
            .iter()
            .map(|c| summary(c, auth.0.user_id, &names))
            .collect();
        Ok(ReviewList::Ok(Json(ReviewCasePage { items, next_cursor })))
    }

    /// One case of my agency, with its documents and decisions.
    #[oai(path = "/cases/:id", method = "get", operation_id = "getReviewCase")]
    async fn get(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<ReviewCase, ReviewReadProblems> {
        let found = agency_case(&state.reads, &auth.0, id.0).await?;
        record_access(&state, request, &auth.0, &found, "case.viewed", "review").await?;
        let names = Names::load(&state.reads, reader_locale(request, None)).await?;
        Ok(detail(&state.reads, found, auth.0.user_id, &names).await?)
    }

    /// Claim a case so no other official works on it; it moves to review.
    #[oai(
        path = "/cases/:id/claim",
        method = "post",
        operation_id = "claimReviewCase"
    )]
    async fn claim(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<ReviewCase, ClaimProblems> {
        let me = auth.0.user_id;
        let found = agency_case(&state.db, &auth.0, id.0).await?;
        if !found.status.is_decidable() {
            return Err(ApiError::Conflict(format!(
                "the case is {}; only submitted or in-review cases can be claimed",
                found.status.as_str()
            ))
            .into());
        }
        if found.claimed_by.is_some_and(|other| other != me) {
            return Err(ApiError::Conflict("another official has claimed this case".into()).into());
        }
        let claimed = case::Entity::update_many()
            .col_expr(case::Column::ClaimedBy, Expr::value(me))
            .col_expr(
                case::Column::Status,
                Expr::value(CaseStatus::InReview.as_str()),
            )
            .col_expr(
                case::Column::Version,
                Expr::col(case::Column::Version).add(1),
            )
            .col_expr(case::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(case::Column::Id.eq(found.id))
            .filter(case::Column::Version.eq(found.version))
            .exec(&state.db)
            .await?;
        if claimed.rows_affected == 0 {
            return Err(ApiError::Conflict("the case changed meanwhile; reload it".into()).into());
        }
        if found.claimed_by != Some(me) {
            history::record(
                &state.db,
                found.id,
                Some(&auth.0),
                "claimed",
                serde_json::json!({}),
            )
            .await?;
        }
        let updated = agency_case(&state.db, &auth.0, id.0).await?;
        let names = Names::load(&state.db, reader_locale(request, None)).await?;
        Ok(detail(&state.db, updated, me, &names).await?)
    }

    /// Decide a case: approve, reject or ask for more information, with a
    /// reason. Send the case's ETag in `If-Match`; if someone changed the
    /// case since, the answer is 412 and nothing is written.
    #[oai(
        path = "/cases/:id/decision",
        method = "post",
        operation_id = "decideReviewCase"
    )]
    async fn decide(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        body: Json<DecisionRequest>,
    ) -> Result<ReviewCase, DecideProblems> {
        auth.0.official_agency()?;
        let if_match = if_match.0.ok_or(ApiError::IfMatchRequired)?;
        let reason = body.reason.trim().to_owned();
        if reason.chars().count() > MAX_REASON {
            return Err(ApiError::Validation(format!(
                "the reason is longer than {MAX_REASON} characters"
            ))
            .into());
        }
        if body.outcome != Outcome::Approved && reason.is_empty() {
            return Err(ApiError::Validation(
                "say why: a reason is required to reject or to ask for more".into(),
            )
            .into());
        }
        let status: CaseStatus = body.outcome.into();
        let me = auth.0.user_id;

        let found = agency_case(&state.db, &auth.0, id.0).await?;
        if !found.status.is_decidable() {
            return Err(ApiError::Conflict(format!(
                "the case is {}; only submitted or in-review cases can be decided",
                found.status.as_str()
            ))
            .into());
        }
        if !if_match_holds(&if_match, &found) {
            return Err(ApiError::StaleEtag.into());
        }
        let now = Utc::now();
        // The transaction starts with its write, guarded by the version just
        // read: a decision made meanwhile makes it change nothing (412), and
        // SQLite takes its write lock before reading anything.
        let txn = onestop_model::begin_write(&state.db).await?;
        let updated = case::Entity::update_many()
            .col_expr(case::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                case::Column::Version,
                Expr::col(case::Column::Version).add(1),
            )
            .col_expr(case::Column::ClaimedBy, Expr::value(me))
            .col_expr(case::Column::UpdatedAt, Expr::value(now))
            .filter(case::Column::Id.eq(found.id))
            .filter(case::Column::Version.eq(found.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(ApiError::StaleEtag.into());
        }
        history::record(
            &txn,
            found.id,
            Some(&auth.0),
            "decided",
            serde_json::json!({ "outcome": status.as_str(), "reason": reason }),
        )
        .await?;
        decision::ActiveModel {
            id: Set(Uuid::now_v7()),
            case_id: Set(found.id),
            official_id: Set(me),
            outcome: Set(status),
            reason: Set(reason.clone()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let kind = match status {
            CaseStatus::InfoRequested => EventKind::CaseInfoRequested,
            _ => EventKind::CaseDecided,
        };
        inbox_message::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(found.applicant_id),
            kind: Set(kind),
            submission_id: Set(Some(found.submission_id)),
            case_id: Set(Some(found.id)),
            status: Set(Some(status.as_str().to_owned())),
            subject_code: Set(Some(subject_code(&found).to_owned())),
            reason: Set((!reason.is_empty()).then_some(reason)),
            created_at: Set(now),
            read_at: Set(None),
            document_id: Set(None),
        }
        .insert(&txn)
        .await?;
        outbox::record(
            &txn,
            &StreamEvent {
                event_id: Uuid::now_v7(),
                kind,
                occurred_at: now,
                recipient_user_id: found.applicant_id,
                submission_id: found.submission_id,
                case_id: Some(found.id),
                status: Some(status.as_str().to_owned()),
            },
        )
        .await?;
        txn.commit().await?;
        state.outbox_wakeup.notify_one();
        metrics::counter!("decisions_total", "outcome" => status.as_str()).increment(1);
        record_access(&state, request, &auth.0, &found, "case.decided", "decision").await?;

        let decided = agency_case(&state.db, &auth.0, id.0).await?;
        let names = Names::load(&state.db, reader_locale(request, None)).await?;
        Ok(detail(&state.db, decided, me, &names).await?)
    }

    /// Send a document back to the person behind a case: a correction
    /// notice, a decision letter. It lands in their inbox and their phones
    /// are told.
    #[oai(
        path = "/cases/:id/documents",
        method = "post",
        operation_id = "sendCaseDocument"
    )]
    async fn send_document(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
        body: Json<NewDocument>,
    ) -> Result<DocumentSent, DocumentProblems> {
        let agency = auth.0.official_agency()?.to_owned();
        let found = agency_case(&state.db, &auth.0, id.0).await?;
        check_attachments(&state.db, auth.0.user_id, &body.attachments).await?;
        let title = body.title.trim().to_owned();
        if title.is_empty() {
            return Err(ApiError::Validation("the document needs a title".into()).into());
        }
        let now = Utc::now();
        let txn = onestop_model::begin_write(&state.db).await?;
        let document = returned_document::ActiveModel {
            id: Set(Uuid::now_v7()),
            case_id: Set(found.id),
            official_id: Set(auth.0.user_id),
            agency_id: Set(agency),
            recipient_id: Set(found.applicant_id),
            title: Set(title),
            body: Set(body.body.trim().to_owned()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        for attachment_id in &body.attachments {
            returned_document_attachment::ActiveModel {
                document_id: Set(document.id),
                attachment_id: Set(*attachment_id),
            }
            .insert(&txn)
            .await?;
        }
        inbox_message::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(found.applicant_id),
            kind: Set(EventKind::DocumentReturned),
            submission_id: Set(Some(found.submission_id)),
            case_id: Set(Some(found.id)),
            status: Set(Some(found.status.as_str().to_owned())),
            subject_code: Set(Some(subject_code(&found).to_owned())),
            reason: Set(None),
            created_at: Set(now),
            read_at: Set(None),
            document_id: Set(Some(document.id)),
        }
        .insert(&txn)
        .await?;
        outbox::record(
            &txn,
            &StreamEvent {
                event_id: Uuid::now_v7(),
                kind: EventKind::DocumentReturned,
                occurred_at: now,
                recipient_user_id: found.applicant_id,
                submission_id: found.submission_id,
                case_id: Some(found.id),
                status: Some(found.status.as_str().to_owned()),
            },
        )
        .await?;
        history::record(
            &txn,
            found.id,
            Some(&auth.0),
            "document_sent",
            serde_json::json!({ "document_id": document.id, "title": document.title }),
        )
        .await?;
        txn.commit().await?;
        state.outbox_wakeup.notify_one();
        record_access(
            &state,
            request,
            &auth.0,
            &found,
            "document.sent",
            "correspondence",
        )
        .await?;
        Ok(DocumentSent::Created(Json(
            document_view(&state.db, document).await?,
        )))
    }
}
