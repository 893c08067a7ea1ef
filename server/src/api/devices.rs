use chrono::Utc;
use onestop_model::entities::device;
use onestop_model::Platform;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::ActiveValue::Set;
use uuid::Uuid;

use super::{Tag, Text};
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::problems;
use crate::state::AppState;

pub struct DevicesApi;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum DevicePlatform {
    Android,
    Ios,
}

impl From<DevicePlatform> for Platform {
    fn from(platform: DevicePlatform) -> Self {
        match platform {
            DevicePlatform::Android => Platform::Android,
            DevicePlatform::Ios => Platform::Ios,
        }
    }
}

impl From<Platform> for DevicePlatform {
    fn from(platform: Platform) -> Self {
        match platform {
            Platform::Android => DevicePlatform::Android,
            Platform::Ios => DevicePlatform::Ios,
        }
    }
}

#[derive(Object)]
pub struct RegisterDevice {
    pub platform: DevicePlatform,
    /// The FCM registration token (Android) or APNs device token (iOS).
    #[oai(validator(min_length = 8, max_length = 4096))]
    pub push_token: Text,
    /// BCP 47 language tag for pushes, e.g. `vi-VN`.
    #[oai(validator(max_length = 35))]
    pub locale: Text,
}

#[derive(Object)]
pub struct DeviceView {
    pub id: Uuid,
    pub platform: DevicePlatform,
    pub locale: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl From<device::Model> for DeviceView {
    fn from(model: device::Model) -> Self {
        DeviceView {
            id: model.id,
            platform: model.platform.into(),
            locale: model.locale,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum DeviceRegistered {
    /// A new device.
    #[oai(status = 201)]
    Created(Json<DeviceView>),
    /// The token was known: its account, platform and language were updated.
    #[oai(status = 200)]
    Updated(Json<DeviceView>),
}

#[derive(ApiResponse)]
pub enum DeviceRemoved {
    /// The phone gets no more pushes.
    #[oai(status = 204)]
    Done,
}

problems!(pub RegisterProblems {
    BadRequest = 400, Unauthorized = 401, LengthRequired = 411, PayloadTooLarge = 413,
    UnsupportedMediaType = 415, UnprocessableEntity = 422,
});
problems!(pub RemoveProblems { BadRequest = 400, Unauthorized = 401, NotFound = 404 });

fn validate(body: &RegisterDevice) -> Result<(), ApiError> {
    let token_ok = match body.platform {
        // FCM registration tokens: URL-safe base64 with ':' separators.
        DevicePlatform::Android => body
            .push_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)),
        // APNs device tokens: hexadecimal.
        DevicePlatform::Ios => {
            body.push_token.len() >= 32 && body.push_token.bytes().all(|b| b.is_ascii_hexdigit())
        }
    };
    if !token_ok {
        return Err(ApiError::Validation(format!(
            "push_token is not a {} push token",
            match body.platform {
                DevicePlatform::Android => "Firebase",
                DevicePlatform::Ios => "APNs",
            }
        )));
    }
    let mut parts = body.locale.split(['-', '_']);
    let language_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !(language_ok && rest_ok) {
        return Err(ApiError::Validation(
            "locale must be a language tag such as vi-VN".into(),
        ));
    }
    Ok(())
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Account")]
impl DevicesApi {
    /// Register this phone for push, or update it. Registering a known token
    /// again updates the one device it belongs to, never duplicates it.
    #[oai(path = "/devices", method = "post", operation_id = "registerDevice")]
    async fn register(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        body: Json<RegisterDevice>,
    ) -> Result<DeviceRegistered, RegisterProblems> {
        validate(&body)?;
        let now = Utc::now();
        let new_id = Uuid::new_v4();
        let platform: Platform = body.platform.into();
        device::Entity::insert(device::ActiveModel {
            id: Set(new_id),
            user_id: Set(auth.0.user_id),
            platform: Set(platform),
            push_token: Set(body.push_token.0.clone()),
            locale: Set(body.locale.0.clone()),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(device::Column::PushToken)
                .update_columns([
                    device::Column::UserId,
                    device::Column::Platform,
                    device::Column::Locale,
                    device::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&state.db)
        .await?;
        let stored = device::Entity::find()
            .filter(device::Column::PushToken.eq(body.push_token.as_str()))
            .one(&state.db)
            .await?
            .ok_or_else(|| {
                ApiError::Internal("a device vanished right after it was saved".into())
            })?;
        Ok(if stored.id == new_id {
            DeviceRegistered::Created(Json(stored.into()))
        } else {
            DeviceRegistered::Updated(Json(stored.into()))
        })
    }

    /// Stop pushes to one of my phones.
    #[oai(
        path = "/devices/:id",
        method = "delete",
        operation_id = "deleteDevice"
    )]
    async fn remove(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<DeviceRemoved, RemoveProblems> {
        let removed = device::Entity::delete_many()
            .filter(device::Column::Id.eq(id.0))
            .filter(device::Column::UserId.eq(auth.0.user_id))
            .exec(&state.db)
            .await?;
        if removed.rows_affected == 0 {
            return Err(ApiError::NotFound("device").into());
        }
        Ok(DeviceRemoved::Done)
    }
}
