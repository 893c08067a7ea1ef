use onestop_model::Role;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use uuid::Uuid;

use super::Sessions;
use crate::error::ApiError;

/// The caller of an operation, as its access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: Role,
    /// The agency of an official.
    pub agency_id: Option<String>,
    /// The organisation of an organisation member.
    pub organisation_id: Option<String>,
    /// The sign-in the token belongs to.
    pub session_id: Uuid,
}

impl Principal {
    /// The agency this caller reviews for; 403 for anyone but an official.
    pub fn official_agency(&self) -> Result<&str, ApiError> {
        match (self.role, self.agency_id.as_deref()) {
            (Role::Official, Some(agency)) => Ok(agency),
            _ => Err(ApiError::Forbidden(
                "only officials of an agency may do this",
            )),
        }
    }

    pub fn require_citizen(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Applicant | Role::OrganisationMember => Ok(()),
            Role::Official => Err(ApiError::Forbidden(
                "officials do not file submissions; sign in as an applicant or organisation member",
            )),
        }
    }
}

/// A short-lived access token from `POST /v1/auth/token`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

async fn check_bearer(request: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let sessions = request.data::<Sessions>().ok_or_else(|| {
        poem::Error::from_string(
            "sessions missing",
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        )
    })?;
    sessions.check(&bearer.token).await.map_err(|error| {
        poem::Error::from_response(poem::IntoResponse::into_response(
            crate::error::ProblemJson(error.into_problem()),
        ))
    })
}
