use onestop_model::entities::user;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;

use super::{Tag, Text};
use crate::auth::{verify_password, TokenPair};
use crate::error::ApiError;
use crate::problems;
use crate::state::AppState;

pub struct AuthApi;

#[derive(Object)]
pub struct TokenRequest {
    #[oai(validator(min_length = 1, max_length = 64))]
    pub username: Text,
    #[oai(validator(min_length = 1, max_length = 256))]
    pub password: Text,
}

#[derive(Object)]
pub struct RefreshRequest {
    #[oai(validator(min_length = 1, max_length = 512))]
    pub refresh_token: Text,
}

#[derive(Object)]
pub struct LogoutRequest {
    #[oai(validator(min_length = 1, max_length = 512))]
    pub refresh_token: Text,
    /// End every sign-in of the account, on every phone, not only this one.
    #[oai(default, nullable)]
    pub everywhere: bool,
}

#[derive(Object)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Trade for a new pair at `POST /v1/auth/refresh`; each works once.
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        TokenResponse {
            access_token: pair.access_token,
            token_type: "Bearer".into(),
            expires_in: pair.access_expires_in,
            refresh_token: pair.refresh_token,
            refresh_expires_in: pair.refresh_expires_in,
        }
    }
}

#[derive(ApiResponse)]
pub enum TokenIssued {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<TokenResponse>),
}

#[derive(ApiResponse)]
pub enum SignedOut {
    /// The sign-in is over (also when it already was).
    #[oai(status = 204)]
    Done,
}

problems!(pub TokenProblems {
    BadRequest = 400, Unauthorized = 401, LengthRequired = 411, PayloadTooLarge = 413,
    UnsupportedMediaType = 415, TooManyRequests = 429,
});
problems!(pub LogoutProblems { BadRequest = 400, LengthRequired = 411, PayloadTooLarge = 413, UnsupportedMediaType = 415 });

#[OpenApi(prefix_path = "/v1", tag = "Tag::Auth")]
impl AuthApi {
    /// Sign in with username and password.
    #[oai(path = "/auth/token", method = "post", operation_id = "createToken")]
    async fn token(
        &self,
        request: &Request,
        state: poem::web::Data<&AppState>,
        body: Json<TokenRequest>,
    ) -> Result<TokenIssued, TokenProblems> {
        state.limits.check_sign_in(request)?;
        state.limits.check_sign_in_account(&body.username)?;
        let account = user::Entity::find()
            .filter(user::Column::Username.eq(body.username.as_str()))
            .one(&state.db)
            .await?;
        let hash = account.as_ref().map(|a| a.password_hash.clone());
        let matches = verify_password(body.0.password.into_string(), hash).await?;
        let account = match account {
            Some(account) if matches && !account.disabled => account,
            _ => {
                metrics::counter!("sign_in_failures_total").increment(1);
                return Err(ApiError::InvalidCredentials.into());
            }
        };
        let pair = state.sessions.issue(&account).await?;
        Ok(TokenIssued::Ok(Json(pair.into())))
    }

    /// Trade a refresh token for a new pair. The old one stops working; using
    /// it again ends the whole sign-in.
    #[oai(path = "/auth/refresh", method = "post", operation_id = "refreshToken")]
    async fn refresh(
        &self,
        state: poem::web::Data<&AppState>,
        body: Json<RefreshRequest>,
    ) -> Result<TokenIssued, TokenProblems> {
        let pair = state.sessions.refresh(&body.refresh_token).await?;
        Ok(TokenIssued::Ok(Json(pair.into())))
    }

    /// Sign out: the refresh token, every token refreshed from the same
    /// sign-in, and their access tokens stop working at once.
    #[oai(path = "/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        state: poem::web::Data<&AppState>,
        body: Json<LogoutRequest>,
    ) -> Result<SignedOut, LogoutProblems> {
        state
            .sessions
            .end(&body.refresh_token, body.everywhere)
            .await?;
        Ok(SignedOut::Done)
    }
}
