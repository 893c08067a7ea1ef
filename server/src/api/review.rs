use chrono::{DateTime, Utc};
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
use crate::settings::Settings;
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
    /// Whether an official holds a live claim on the case, and whether it
    /// is me.
    pub claimed: bool,
    pub claimed_by_me: bool,
    /// When the live claim lapses; then any official of the agency may
    /// claim or decide the case.
    #[oai(skip_serializing_if_is_none)]
    pub claim_expires_at: Option<DateTimeUtc>,
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
    /// `submitted`, `claimed`, `taken_over`, `decided`, `supplemented`,
    /// `document_sent`, `withdrawn`.
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
    LengthRequired = 411, PayloadTooLarge = 413, UnsupportedMediaType = 415,
});
problems!(pub TakeOverProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, NotFound = 404, Conflict = 409,
    LengthRequired = 411, PayloadTooLarge = 413, UnsupportedMediaType = 415,
});
problems!(pub DecideProblems {
    BadRequest = 400, Unauthorized = 401, Forbidden = 403, NotFound = 404, Conflict = 409,
    LengthRequired = 411, PreconditionFailed = 412, PayloadTooLarge = 413, UnsupportedMediaType = 415,
    UnprocessableEntity = 422, PreconditionRequired = 428,
});

/// Ten years: a lifetime past any working claim, and far from the range
/// where adding it to a time would overflow.
const LONGEST_CLAIM_SECS: u64 = 10 * 365 * 24 * 3600;

fn claim_ttl(settings: &Settings) -> chrono::Duration {
    chrono::Duration::seconds(settings.claim_ttl_secs.min(LONGEST_CLAIM_SECS) as i64)
}

/// Who holds a live claim on the case, and until when. A claim made before
/// claims were timed counts from the case's last change.
fn live_claim(
    case: &case::Model,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<(Uuid, DateTime<Utc>)> {
    let holder = case.claimed_by?;
    let until = case.claimed_at.unwrap_or(case.updated_at) + ttl;
    (until > now).then_some((holder, until))
}

fn summary(
    case: &case::Model,
    me: Uuid,
    names: &Names,
    ttl: chrono::Duration,
) -> ReviewCaseSummary {
    let claim = live_claim(case, ttl, Utc::now());
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
        claimed: claim.is_some(),
        claimed_by_me: claim.is_some_and(|(holder, _)| holder == me),
        claim_expires_at: claim.map(|(_, until)| until),
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
    ttl: chrono::Duration,
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
            case: summary(&case, me, names, ttl),
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

/// The access record of an official reading or changing the applicant's
/// case; written in the transaction of the change it records.
fn case_access<'a>(
    state: &AppState,
    request: &Request,
    official: &Principal,
    case: &case::Model,
    action: &'a str,
    purpose: &'a str,
) -> Access<'a> {
    Access {
        subject: case.applicant_id,
        actor: Actor::person(official),
        client_address: state.limits.client_address(request).to_string(),
        action,
        object_id: case.id.to_string(),
        purpose,
    }
}

/// Claims the case for `official`, or takes it over from a colleague whose
/// claim is live. The claim, its history entry and the access record
/// commit together, before the case is shown.
async fn claim_case(
    state: &AppState,
    request: &Request,
    official: &Principal,
    id: Uuid,
    take_over: bool,
) -> Result<ReviewCase, ApiError> {
    let me = official.user_id;
    let ttl = claim_ttl(&state.settings);
    let now = Utc::now();
    // The write lock (SQLite) comes first, so what is checked below is
    // still true when the claim is written.
    let txn = onestop_model::begin_write(&state.db).await?;
    let found = agency_case(&txn, official, id).await?;
    if !found.status.is_decidable() {
        return Err(ApiError::Conflict(format!(
            "the case is {}; only submitted or in-review cases can be claimed",
            found.status.as_str()
        )));
    }
    let taken_from = match live_claim(&found, ttl, now) {
        Some((holder, until)) if holder != me => {
            if !take_over {
                return Err(ApiError::ClaimedByAnother(until.to_rfc3339()));
            }
            Some(holder)
        }
        _ => None,
    };
    let claimed = case::Entity::update_many()
        .col_expr(case::Column::ClaimedBy, Expr::value(me))
        .col_expr(case::Column::ClaimedAt, Expr::value(now))
        .col_expr(
            case::Column::Status,
            Expr::value(CaseStatus::InReview.as_str()),
        )
        .col_expr(
            case::Column::Version,
            Expr::col(case::Column::Version).add(1),
        )
        .col_expr(case::Column::UpdatedAt, Expr::value(now))
        .filter(case::Column::Id.eq(found.id))
        .filter(case::Column::Version.eq(found.version))
        .exec(&txn)
        .await?;
    if claimed.rows_affected == 0 {
        return Err(ApiError::Conflict(
            "the case changed meanwhile; reload it".into(),
        ));
    }
    let action = match (taken_from, found.claimed_by) {
        (Some(from), _) => {
            history::record(
                &txn,
                found.id,
                Some(official),
                "taken_over",
                serde_json::json!({ "from": from }),
            )
            .await?;
            "case.taken_over"
        }
        // Renewing one's own claim changes who holds nothing.
        (None, Some(holder)) if holder == me => "case.claimed",
        (None, lapsed) => {
            let detail = match lapsed {
                Some(holder) => serde_json::json!({ "lapsed_claim_of": holder }),
                None => serde_json::json!({}),
            };
            history::record(&txn, found.id, Some(official), "claimed", detail).await?;
            "case.claimed"
        }
    };
    access_log::append(
        &txn,
        &state.access_log,
        case_access(state, request, official, &found, action, "review"),
    )
    .await?;
    txn.commit().await?;
    let updated = agency_case(&state.db, official, id).await?;
    let names = state.names.in_locale(reader_locale(request, None));
    detail(&state.db, updated, me, &names, ttl).await
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
        let names = state.names.in_locale(reader_locale(request, None));
        let items = rows
            .iter()
            .map(|c| summary(c, auth.0.user_id, &names, claim_ttl(&state.settings)))
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
        // On the record (committed) before anything of the case is shown.
        access_log::record(
            &state.db,
            &state.access_log,
            case_access(&state, request, &auth.0, &found, "case.viewed", "review"),
        )
        .await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let ttl = claim_ttl(&state.settings);
        Ok(detail(&state.reads, found, auth.0.user_id, &names, ttl).await?)
    }

    /// Claim a case so no other official works on it; it moves to review.
    /// A colleague's live claim answers 409 (`claimed-by-another`); a claim
    /// lapses after the configured lifetime (8 hours by default), and
    /// claiming again renews one's own. The claim is in the applicant's
    /// access log.
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
        Ok(claim_case(&state, request, &auth.0, id.0, false).await?)
    }

    /// Take a case over from a colleague who holds a live claim on it (who
    /// is away, say). The take-over is in the case's history (`taken_over`,
    /// naming whom it was taken from) and in the applicant's access log.
    #[oai(
        path = "/cases/:id/take-over",
        method = "post",
        operation_id = "takeOverReviewCase"
    )]
    async fn take_over(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<ReviewCase, TakeOverProblems> {
        Ok(claim_case(&state, request, &auth.0, id.0, true).await?)
    }

    /// Decide a case: approve, reject or ask for more information, with a
    /// reason. Send the case's ETag in `If-Match` (compared strongly: a
    /// weak `W/` tag never matches); if someone changed the case since, the
    /// answer is 412 and nothing is written. A case a colleague holds a live
    /// claim on answers 409 (`claimed-by-another`) until the claim lapses or
    /// is taken over.
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
        let now = Utc::now();
        if let Some((_, until)) =
            live_claim(&found, claim_ttl(&state.settings), now).filter(|(holder, _)| *holder != me)
        {
            return Err(ApiError::ClaimedByAnother(until.to_rfc3339()).into());
        }
        if !if_match_holds(&if_match, &found) {
            return Err(ApiError::StaleEtag.into());
        }
        // The transaction starts with its write, guarded by the version just
        // read: a decision or claim made meanwhile makes it change nothing
        // (412), and SQLite takes its write lock before reading anything.
        let txn = onestop_model::begin_write(&state.db).await?;
        let updated = case::Entity::update_many()
            .col_expr(case::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                case::Column::Version,
                Expr::col(case::Column::Version).add(1),
            )
            .col_expr(case::Column::ClaimedBy, Expr::value(me))
            .col_expr(case::Column::ClaimedAt, Expr::value(now))
            .col_expr(case::Column::UpdatedAt, Expr::value(now))
            .filter(case::Column::Id.eq(found.id))
            .filter(case::Column::Version.eq(found.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(ApiError::StaleEtag.into());
        }
        let mut decided = serde_json::json!({ "outcome": status.as_str(), "reason": reason });
        // A colleague's claim that had lapsed passes to the decider, on record.
        if let Some(holder) = found.claimed_by.filter(|holder| *holder != me) {
            decided["lapsed_claim_of"] = serde_json::json!(holder);
        }
        history::record(&txn, found.id, Some(&auth.0), "decided", decided).await?;
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
        // The decision and the record of who read the case to make it
        // commit together: neither exists without the other.
        access_log::append(
            &txn,
            &state.access_log,
            case_access(&state, request, &auth.0, &found, "case.decided", "decision"),
        )
        .await?;
        txn.commit().await?;
        state.outbox_wakeup.notify_one();
        metrics::counter!("decisions_total", "outcome" => status.as_str()).increment(1);

        let decided = agency_case(&state.db, &auth.0, id.0).await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let ttl = claim_ttl(&state.settings);
        Ok(detail(&state.db, decided, me, &names, ttl).await?)
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
        access_log::append(
            &txn,
            &state.access_log,
            case_access(
                &state,
                request,
                &auth.0,
                &found,
                "document.sent",
                "correspondence",
            ),
        )
        .await?;
        txn.commit().await?;
        state.outbox_wakeup.notify_one();
        Ok(DocumentSent::Created(Json(
            document_view(&state.db, document).await?,
        )))
    }
}
