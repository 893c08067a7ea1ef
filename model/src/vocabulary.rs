use sea_orm::entity::prelude::*;
use sea_orm::Iterable;
use serde::{Deserialize, Serialize};

/// What an account may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A citizen applying for services, e.g. a mother.
    #[sea_orm(string_value = "applicant")]
    Applicant,
    /// A member of an organisation filing reports, e.g. a nursery teacher.
    #[sea_orm(string_value = "organisation_member")]
    OrganisationMember,
    /// An official of exactly one agency.
    #[sea_orm(string_value = "official")]
    Official,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Applicant => "applicant",
            Role::OrganisationMember => "organisation_member",
            Role::Official => "official",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::iter().find(|role| role.as_str() == value)
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    #[sea_orm(string_value = "android")]
    Android,
    #[sea_orm(string_value = "ios")]
    Ios,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Android => "android",
            Platform::Ios => "ios",
        }
    }
}

/// `submitted → in_review → (approved | rejected | info_requested)`;
/// `info_requested → submitted` after a supplement; `withdrawn` from any
/// open state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    #[sea_orm(string_value = "submitted")]
    Submitted,
    #[sea_orm(string_value = "in_review")]
    InReview,
    #[sea_orm(string_value = "approved")]
    Approved,
    #[sea_orm(string_value = "rejected")]
    Rejected,
    #[sea_orm(string_value = "info_requested")]
    InfoRequested,
    #[sea_orm(string_value = "withdrawn")]
    Withdrawn,
}

impl CaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Submitted => "submitted",
            CaseStatus::InReview => "in_review",
            CaseStatus::Approved => "approved",
            CaseStatus::Rejected => "rejected",
            CaseStatus::InfoRequested => "info_requested",
            CaseStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::iter().find(|status| status.as_str() == value)
    }

    /// Open cases still wait for someone; the others are settled.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            CaseStatus::Submitted | CaseStatus::InReview | CaseStatus::InfoRequested
        )
    }

    /// Whether an official may decide a case in this status.
    pub fn is_decidable(self) -> bool {
        matches!(self, CaseStatus::Submitted | CaseStatus::InReview)
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum SubmissionKind {
    /// Several services of a one-stop bundle, one case each.
    #[sea_orm(string_value = "one_stop")]
    OneStop,
    /// One standard form to one office.
    #[sea_orm(string_value = "form")]
    Form,
}
