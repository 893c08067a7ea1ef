use std::collections::BTreeSet;

use chrono::Utc;
use onestop_model::entities::{case, case_attachment, supplement};
use onestop_model::CaseStatus;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use uuid::Uuid;

use super::submissions::{check_attachments, withdraw_case, CaseView};
use super::{reader_locale, Tag, Text};
use crate::access::own_case;
use crate::auth::BearerAuth;
use crate::cases::attachments_of;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{history, problems};

pub struct MyCasesApi;

const MAX_SUPPLEMENT_TEXT: usize = 2000;

#[derive(Object)]
pub struct NewSupplement {
    /// The answer to the office's question.
    #[oai(default, nullable)]
    pub text: Text,
    /// More photos or PDFs, uploaded first.
    #[oai(default, nullable)]
    pub attachments: Vec<Uuid>,
}

#[derive(Object)]
pub struct SupplementView {
    pub id: Uuid,
    pub case_id: Uuid,
    pub text: String,
    pub attachments: Vec<Uuid>,
    pub created_at: DateTimeUtc,
}

impl From<supplement::Model> for SupplementView {
    fn from(model: supplement::Model) -> Self {
        SupplementView {
            id: model.id,
            case_id: model.case_id,
            text: model.text,
            attachments: serde_json::from_value(model.attachments).unwrap_or_default(),
            created_at: model.created_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum SupplementSent {
    /// The answer is with the office; the case is back in its queue.
    #[oai(status = 201)]
    Created(Json<SupplementView>),
}

#[derive(ApiResponse)]
pub enum CaseWithdrawn {
    /// The case is closed (also when it already was withdrawn).
    #[oai(status = 200)]
    Ok(Json<CaseView>),
}

problems!(pub SupplementProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, Conflict = 409, LengthRequired = 411,
    PayloadTooLarge = 413, UnsupportedMediaType = 415, UnprocessableEntity = 422,
});
problems!(pub WithdrawCaseProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, Conflict = 409, LengthRequired = 411,
    PayloadTooLarge = 413, UnsupportedMediaType = 415,
});

#[OpenApi(prefix_path = "/v1", tag = "Tag::Submissions")]
impl MyCasesApi {
    /// Answer an office's request for more information, with text and
    /// photos. The case goes back to the office's queue with its history.
    #[oai(
        path = "/cases/:id/supplements",
        method = "post",
        operation_id = "createSupplement"
    )]
    async fn supplement(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
        body: Json<NewSupplement>,
    ) -> Result<SupplementSent, SupplementProblems> {
        let text = body.text.trim().to_owned();
        if text.is_empty() && body.attachments.is_empty() {
            return Err(
                ApiError::Validation("answer with text, attachments or both".into()).into(),
            );
        }
        if text.chars().count() > MAX_SUPPLEMENT_TEXT {
            return Err(ApiError::Validation(format!(
                "the text is longer than {MAX_SUPPLEMENT_TEXT} characters"
            ))
            .into());
        }
        let found = own_case(&state.db, &auth.0, id.0).await?;
        check_attachments(&state.db, auth.0.user_id, &body.attachments).await?;
        if found.status != CaseStatus::InfoRequested {
            return Err(ApiError::Conflict(format!(
                "the case is {}; only a case waiting for information takes a supplement",
                found.status.as_str()
            ))
            .into());
        }
        let txn = onestop_model::begin_write(&state.db).await?;
        let moved = case::Entity::update_many()
            .col_expr(
                case::Column::Status,
                Expr::value(CaseStatus::Submitted.as_str()),
            )
            .col_expr(
                case::Column::Version,
                Expr::col(case::Column::Version).add(1),
            )
            .col_expr(case::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(case::Column::Id.eq(found.id))
            .filter(case::Column::Version.eq(found.version))
            .exec(&txn)
            .await?;
        if moved.rows_affected == 0 {
            return Err(ApiError::Conflict("the case changed meanwhile; reload it".into()).into());
        }
        let linked: BTreeSet<Uuid> = attachments_of(&txn, [found.id].into())
            .await?
            .remove(&found.id)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for attachment_id in body.attachments.iter().filter(|a| !linked.contains(a)) {
            case_attachment::ActiveModel {
                case_id: Set(found.id),
                attachment_id: Set(*attachment_id),
            }
            .insert(&txn)
            .await?;
        }
        let stored = supplement::ActiveModel {
            id: Set(Uuid::now_v7()),
            case_id: Set(found.id),
            author_id: Set(auth.0.user_id),
            text: Set(text),
            attachments: Set(serde_json::json!(body.attachments)),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await?;
        history::record(
            &txn,
            found.id,
            Some(&auth.0),
            "supplemented",
            serde_json::json!({ "supplement_id": stored.id, "attachments": body.attachments }),
        )
        .await?;
        txn.commit().await?;
        Ok(SupplementSent::Created(Json(stored.into())))
    }

    /// Withdraw one case of a submission. Withdrawing again changes nothing;
    /// a decided case cannot be withdrawn.
    #[oai(
        path = "/cases/:id/withdraw",
        method = "post",
        operation_id = "withdrawCase"
    )]
    async fn withdraw(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<CaseWithdrawn, WithdrawCaseProblems> {
        let found = own_case(&state.db, &auth.0, id.0).await?;
        if !found.status.is_open() && found.status != CaseStatus::Withdrawn {
            return Err(ApiError::Conflict(format!(
                "the case is already {}",
                found.status.as_str()
            ))
            .into());
        }
        withdraw_case(&state.db, &auth.0, &found).await?;
        let current = own_case(&state.db, &auth.0, id.0).await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let attachments = attachments_of(&state.db, [current.id].into())
            .await?
            .remove(&current.id)
            .unwrap_or_default();
        Ok(CaseWithdrawn::Ok(Json(super::submissions::case_view(
            &current,
            attachments,
            &names,
        ))))
    }
}
