use chrono::Utc;
use onestop_model::entities::case;
use onestop_model::CaseStatus;
use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::Condition;
use uuid::Uuid;

use super::{
    agency_ref, reader_locale, AttachmentView, DocumentView, NamedRef, SupplementView, Tag, Text,
};
use crate::access::agency_case;
use crate::auth::{BearerAuth, Principal};
use crate::cases::reading::case_file;
use crate::cases::{etag, live_claim, subject_code, Acting, Names, NewLetter, Verdict};
use crate::error::ApiError;
use crate::notification::NotificationView;
use crate::pagination::{Order, PageRequest};
use crate::problems;
use crate::state::AppState;

crate::page_type!(ReviewCasePage, ReviewCaseSummary);

pub struct ReviewApi;

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
        agency: agency_ref(case, names),
        status: case.status.as_str().to_owned(),
        claimed: claim.is_some(),
        claimed_by_me: claim.is_some_and(|(holder, _)| holder == me),
        claim_expires_at: claim.map(|(_, until)| until),
        etag: etag(case),
        created_at: case.created_at,
        updated_at: case.updated_at,
    }
}

/// The whole case as the official sees it, with its ETag.
async fn shown(
    state: &AppState,
    db: &impl ConnectionTrait,
    request: &Request,
    me: Uuid,
    case: case::Model,
) -> Result<ReviewCase, ApiError> {
    let file = case_file(db, case).await?;
    let names = state.names.in_locale(reader_locale(request, None));
    let tag = etag(&file.case);
    let detail = ReviewCaseDetail {
        case: summary(&file.case, me, &names, state.cases.claim_ttl()),
        applicant_name: file.applicant_name,
        fields: file.case.fields,
        attachments: file
            .attachments
            .into_iter()
            .map(AttachmentView::from)
            .collect(),
        decisions: file
            .decisions
            .into_iter()
            .map(|d| DecisionView {
                outcome: d.outcome.as_str().to_owned(),
                reason: d.reason,
                decided_at: d.created_at,
            })
            .collect(),
        supplements: file
            .supplements
            .into_iter()
            .map(SupplementView::from)
            .collect(),
        documents: file.letters.into_iter().map(DocumentView::from).collect(),
        history: file
            .history
            .into_iter()
            .map(|e| CaseEventView {
                action: e.action,
                actor_role: e.actor_role,
                actor_id: e.actor_id,
                detail: e.detail,
                at: e.created_at,
            })
            .collect(),
        notification: file.notification,
    };
    Ok(ReviewCase::Ok(Json(detail), tag))
}

/// The official, and the address the request came from, for the record.
fn acting<'a>(state: &AppState, request: &Request, official: &'a Principal) -> Acting<'a> {
    Acting {
        who: official,
        client_address: state.limits.client_address(request).to_string(),
    }
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
        let page = PageRequest::new(
            cursor.0.as_deref(),
            limit.0,
            state.settings.max_page_size,
            Order::OldestFirst,
        )?;
        let mut query = case::Entity::find().filter(case::Column::AgencyId.eq(agency));
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
        let (rows, next_cursor) = page
            .fetch(
                &state.reads,
                query,
                case::Column::CreatedAt,
                case::Column::Id,
            )
            .await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let ttl = state.cases.claim_ttl();
        let items = rows
            .iter()
            .map(|c| summary(c, auth.0.user_id, &names, ttl))
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
        state
            .access_records
            .record(acting(&state, request, &auth.0).access(&found, "case.viewed", "review"))
            .await?;
        Ok(shown(&state, &state.reads, request, auth.0.user_id, found).await?)
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
        let claimed = state
            .cases
            .claim(&acting(&state, request, &auth.0), id.0, false)
            .await?;
        Ok(shown(&state, &state.db, request, auth.0.user_id, claimed).await?)
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
        let claimed = state
            .cases
            .claim(&acting(&state, request, &auth.0), id.0, true)
            .await?;
        Ok(shown(&state, &state.db, request, auth.0.user_id, claimed).await?)
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
        let verdict = Verdict::new(body.outcome.into(), &body.reason)?;
        let decided = state
            .cases
            .decide(&acting(&state, request, &auth.0), id.0, &if_match, verdict)
            .await?;
        Ok(shown(&state, &state.db, request, auth.0.user_id, decided).await?)
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
        let body = body.0;
        let letter = NewLetter {
            title: body.title.into_string(),
            body: body.body.into_string(),
            attachments: body.attachments,
        };
        let sent = state
            .cases
            .send_letter(&acting(&state, request, &auth.0), id.0, letter)
            .await?;
        Ok(DocumentSent::Created(Json(sent.into())))
    }
}
