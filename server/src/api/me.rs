use onestop_model::entities::{access_record, consent, user};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::QueryOrder;
use uuid::Uuid;

use super::{reader_locale, NamedRef, Tag, Text};
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::facts;
use crate::pagination::{Order, PageRequest};
use crate::problems;
use crate::state::AppState;

pub struct MeApi;

#[derive(Object)]
pub struct MeView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    /// `applicant`, `organisation_member` or `official`.
    pub role: String,
    pub locale: String,
    /// The resident registration number with all but its last digits
    /// hidden, for recognising it; the full number is never sent.
    #[oai(skip_serializing_if_is_none)]
    pub rrn_masked: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub agency: Option<NamedRef>,
    #[oai(skip_serializing_if_is_none)]
    pub organisation: Option<NamedRef>,
}

#[derive(ApiResponse)]
pub enum MeResponse {
    #[oai(status = 200)]
    Ok(Json<MeView>),
}

problems!(pub MeProblems { Unauthorized = 401 });
problems!(pub ConsentProblems {
    BadRequest = 400, Unauthorized = 401, LengthRequired = 411, PayloadTooLarge = 413,
    UnsupportedMediaType = 415, UnprocessableEntity = 422,
});
problems!(pub AccessLogProblems { BadRequest = 400, Unauthorized = 401, UnprocessableEntity = 422 });

#[derive(Object)]
pub struct ConsentRequest {
    /// `shared_facts`: look my facts up in public records (household,
    /// region, disability, multicultural family) instead of asking me for
    /// paper proofs.
    pub purpose: Text,
}

#[derive(Object)]
pub struct ConsentView {
    pub purpose: String,
    pub granted_at: DateTimeUtc,
}

impl From<consent::Model> for ConsentView {
    fn from(model: consent::Model) -> Self {
        ConsentView {
            purpose: model.purpose,
            granted_at: model.granted_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum ConsentGranted {
    /// Recorded (or already given: the first grant stands).
    #[oai(status = 201)]
    Created(Json<ConsentView>),
}

#[derive(ApiResponse)]
pub enum ConsentList {
    #[oai(status = 200)]
    Ok(Json<Vec<ConsentView>>),
}

#[derive(ApiResponse)]
pub enum ConsentRevoked {
    /// No more lookups for this purpose (also when there was no consent).
    #[oai(status = 204)]
    Done,
}

/// One access to my data.
#[derive(Object)]
pub struct AccessRecordView {
    pub at: DateTimeUtc,
    /// `case.viewed`, `case.decided`, `attachment.viewed`, `facts.looked_up`, ...
    pub action: String,
    /// Why, e.g. `review` or `eligibility`.
    pub purpose: String,
    /// The case, attachment or record looked at.
    pub object_id: String,
    /// `official`, or `service` when the service itself looked facts up for me.
    pub actor_role: String,
    /// The official's account, pseudonymous.
    #[oai(skip_serializing_if_is_none)]
    pub official_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub agency: Option<NamedRef>,
}

crate::page_type!(AccessLogPage, AccessRecordView);

#[derive(ApiResponse)]
pub enum AccessLogResponse {
    #[oai(status = 200)]
    Ok(Json<AccessLogPage>),
}

fn check_purpose(purpose: &str) -> Result<&'static str, ApiError> {
    facts::PURPOSES
        .into_iter()
        .find(|known| *known == purpose)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "there is no consent purpose {purpose}; the purposes are {:?}",
                facts::PURPOSES
            ))
        })
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Account")]
impl MeApi {
    /// The signed-in account.
    #[oai(path = "/me", method = "get", operation_id = "getMe")]
    async fn me(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
    ) -> Result<MeResponse, MeProblems> {
        let account = user::Entity::find_by_id(auth.0.user_id)
            .one(&state.reads)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        let rrn_masked = match &account.rrn_ciphertext {
            Some(sealed) => {
                let rrn = state
                    .vault
                    .decrypt(&state.reads, sealed, account.id.as_bytes())
                    .await
                    .map_err(|e| {
                        ApiError::Internal(format!("opening a stored number failed: {e}"))
                    })?;
                Some(crate::identity::Rrn::parse(&rrn)?.masked())
            }
            None => None,
        };
        let names = state
            .names
            .in_locale(reader_locale(request, Some(&account.locale)));
        let agency = account.agency_id.as_deref().map(|id| NamedRef {
            id: id.to_owned(),
            name: names.agency(id),
        });
        let organisation = account.organisation_id.as_deref().map(|id| NamedRef {
            id: id.to_owned(),
            name: names.organisation(id),
        });
        Ok(MeResponse::Ok(Json(MeView {
            id: account.id,
            username: account.username,
            display_name: account.display_name,
            role: account.role.as_str().to_owned(),
            locale: account.locale,
            rrn_masked,
            agency,
            organisation,
        })))
    }

    /// Give consent, e.g. to have facts looked up instead of attaching proofs.
    #[oai(path = "/me/consents", method = "post", operation_id = "grantConsent")]
    async fn grant_consent(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        body: Json<ConsentRequest>,
    ) -> Result<ConsentGranted, ConsentProblems> {
        let purpose = check_purpose(&body.purpose)?;
        let granted = facts::grant(&state.db, auth.0.user_id, purpose).await?;
        Ok(ConsentGranted::Created(Json(granted.into())))
    }

    /// The consents I have given and not withdrawn.
    #[oai(path = "/me/consents", method = "get", operation_id = "listConsents")]
    async fn consents(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
    ) -> Result<ConsentList, MeProblems> {
        let given = consent::Entity::find()
            .filter(consent::Column::UserId.eq(auth.0.user_id))
            .filter(consent::Column::RevokedAt.is_null())
            .order_by_asc(consent::Column::GrantedAt)
            .all(&state.reads)
            .await?;
        Ok(ConsentList::Ok(Json(
            given.into_iter().map(ConsentView::from).collect(),
        )))
    }

    /// Withdraw a consent.
    #[oai(
        path = "/me/consents/:purpose",
        method = "delete",
        operation_id = "revokeConsent"
    )]
    async fn revoke_consent(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        purpose: Path<String>,
    ) -> Result<ConsentRevoked, ConsentProblems> {
        let purpose = check_purpose(&purpose.0)?;
        facts::revoke(&state.db, auth.0.user_id, purpose).await?;
        Ok(ConsentRevoked::Done)
    }

    /// Who looked at my data, when, and why, newest first.
    #[oai(path = "/me/access-log", method = "get", operation_id = "getAccessLog")]
    async fn access_log(
        &self,
        auth: BearerAuth,
        request: &Request,
        state: poem::web::Data<&AppState>,
        cursor: Query<Option<String>>,
        /// Items per page, at most the server's cap (100 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> Result<AccessLogResponse, AccessLogProblems> {
        let page = PageRequest::new(
            cursor.0.as_deref(),
            limit.0,
            state.settings.max_page_size,
            Order::NewestFirst,
        )?;
        let query = access_record::Entity::find()
            .filter(access_record::Column::SubjectUserId.eq(auth.0.user_id));
        let (rows, next_cursor) = page
            .fetch(
                &state.reads,
                query,
                access_record::Column::CreatedAt,
                access_record::Column::Id,
            )
            .await?;
        let names = state.names.in_locale(reader_locale(request, None));
        let items = rows
            .into_iter()
            .map(|r| AccessRecordView {
                at: r.created_at,
                action: r.action,
                purpose: r.purpose,
                object_id: r.object_id,
                official_id: r.actor_id.filter(|_| r.actor_role == "official"),
                agency: r.actor_agency_id.as_deref().map(|id| NamedRef {
                    id: id.to_owned(),
                    name: names.agency(id),
                }),
                actor_role: r.actor_role,
            })
            .collect();
        Ok(AccessLogResponse::Ok(Json(AccessLogPage {
            items,
            next_cursor,
        })))
    }
}
