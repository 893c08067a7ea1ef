use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::{reader_locale, CaseView, SupplementView, Tag, Text};
use crate::auth::BearerAuth;
use crate::cases::reading::case_record;
use crate::cases::Answer;
use crate::problems;
use crate::state::AppState;

pub struct MyCasesApi;

#[derive(Object)]
pub struct NewSupplement {
    /// The answer to the office's question.
    #[oai(default, nullable)]
    pub text: Text,
    /// More photos or PDFs, uploaded first.
    #[oai(default, nullable)]
    pub attachments: Vec<Uuid>,
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
        let answer = Answer {
            text: body.0.text.into_string(),
            attachments: body.0.attachments,
        };
        let stored = state.cases.supplement(&auth.0, id.0, answer).await?;
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
        let current = state.cases.withdraw_case(&auth.0, id.0).await?;
        let record = case_record(&state.db, current).await?;
        let names = state.names.in_locale(reader_locale(request, None));
        Ok(CaseWithdrawn::Ok(Json(CaseView::new(record, &names))))
    }
}
