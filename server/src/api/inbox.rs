use chrono::Utc;
use onestop_model::entities::{inbox_message, user};
use onestop_model::{EventKind, Locale};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::QuerySelect;
use uuid::Uuid;

use super::{requested_locale, DocumentView, Tag};
use crate::auth::BearerAuth;
use crate::cases::reading::letters_to;
use crate::error::ApiError;
use crate::pagination::{Order, PageRequest};
use crate::problems;
use crate::state::AppState;

crate::page_type!(InboxMessagePage, InboxMessageView);

pub struct InboxApi;

#[derive(Object)]
pub struct InboxMessageView {
    pub id: Uuid,
    /// `submission.received`, `case.decided`, `case.info_requested` or
    /// `document.returned`.
    pub kind: String,
    pub title: String,
    pub body: String,
    #[oai(skip_serializing_if_is_none)]
    pub submission_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub case_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub status: Option<String>,
    pub created_at: DateTimeUtc,
    #[oai(skip_serializing_if_is_none)]
    pub read_at: Option<DateTimeUtc>,
    /// The document an office sent, for `document.returned`.
    #[oai(skip_serializing_if_is_none)]
    pub document: Option<DocumentView>,
}

#[derive(ApiResponse)]
pub enum InboxPage {
    #[oai(status = 200)]
    Ok(Json<InboxMessagePage>),
}

#[derive(ApiResponse)]
pub enum MarkedRead {
    #[oai(status = 204)]
    Done,
}

problems!(pub InboxProblems { BadRequest = 400, Unauthorized = 401, UnprocessableEntity = 422 });
problems!(pub ReadMarkProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, LengthRequired = 411, PayloadTooLarge = 413,
    UnsupportedMediaType = 415,
});

/// The catalog text key of an inbox entry.
fn text_key(message: &inbox_message::Model) -> String {
    match (message.kind, message.status.as_deref()) {
        (EventKind::CaseDecided, Some(status)) => format!("inbox.case.decided.{status}"),
        (kind, _) => format!("inbox.{}", kind.as_str()),
    }
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Inbox")]
impl InboxApi {
    /// Every message to me, newest first, in my language.
    #[oai(path = "/inbox", method = "get", operation_id = "listInbox")]
    async fn list(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        cursor: Query<Option<String>>,
        /// Items per page, at most the server's cap (100 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> Result<InboxPage, InboxProblems> {
        let page = PageRequest::new(
            cursor.0.as_deref(),
            limit.0,
            state.settings.max_page_size,
            Order::NewestFirst,
        )?;
        let query =
            inbox_message::Entity::find().filter(inbox_message::Column::UserId.eq(auth.0.user_id));
        let (rows, next_cursor) = page
            .fetch(
                &state.reads,
                query,
                inbox_message::Column::CreatedAt,
                inbox_message::Column::Id,
            )
            .await?;
        // The account's own language is read only when the request names
        // none the service speaks.
        let locale = match requested_locale(request) {
            Some(locale) => locale,
            None => {
                let account_locale: Option<String> = user::Entity::find_by_id(auth.0.user_id)
                    .select_only()
                    .column(user::Column::Locale)
                    .into_tuple()
                    .one(&state.reads)
                    .await?;
                account_locale
                    .as_deref()
                    .map(Locale::negotiate)
                    .unwrap_or(Locale::DEFAULT)
            }
        };
        let names = state.names.in_locale(locale);
        let document_ids: Vec<Uuid> = rows.iter().filter_map(|m| m.document_id).collect();
        let mut documents = letters_to(&state.reads, auth.0.user_id, document_ids).await?;
        let items = rows
            .into_iter()
            .map(|message| {
                let subject = message
                    .subject_code
                    .as_deref()
                    .map(|c| names.subjects(c))
                    .unwrap_or_default();
                let reason = message.reason.clone().unwrap_or_default();
                let (title, body) = names
                    .text(
                        &text_key(&message),
                        &[("subject", &subject), ("reason", &reason)],
                    )
                    .unwrap_or_else(|| (message.kind.as_str().to_owned(), subject.clone()));
                InboxMessageView {
                    id: message.id,
                    kind: message.kind.as_str().to_owned(),
                    title,
                    body,
                    submission_id: message.submission_id,
                    case_id: message.case_id,
                    status: message.status,
                    created_at: message.created_at,
                    read_at: message.read_at,
                    document: message
                        .document_id
                        .and_then(|id| documents.remove(&id))
                        .map(DocumentView::from),
                }
            })
            .collect();
        Ok(InboxPage::Ok(Json(InboxMessagePage { items, next_cursor })))
    }

    /// Mark a message read (again: no change).
    #[oai(
        path = "/inbox/:id/read",
        method = "post",
        operation_id = "markInboxRead"
    )]
    async fn mark_read(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<MarkedRead, ReadMarkProblems> {
        let found = inbox_message::Entity::find_by_id(id.0)
            .filter(inbox_message::Column::UserId.eq(auth.0.user_id))
            .one(&state.db)
            .await?
            .ok_or(ApiError::NotFound("inbox message"))?;
        if found.read_at.is_none() {
            inbox_message::Entity::update_many()
                .col_expr(inbox_message::Column::ReadAt, Expr::value(Utc::now()))
                .filter(inbox_message::Column::Id.eq(found.id))
                .filter(inbox_message::Column::ReadAt.is_null())
                .exec(&state.db)
                .await?;
        }
        Ok(MarkedRead::Done)
    }
}
