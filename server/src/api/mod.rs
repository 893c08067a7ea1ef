//! The HTTP API, one module per resource. Every operation has an explicit
//! `operation_id`: the apps' generated clients are named after it.

pub mod attachments;
pub mod auth;
pub mod catalog;
pub mod devices;
pub mod eligibility;
pub mod inbox;
pub mod me;
pub mod my_cases;
pub mod review;
pub mod submissions;
pub mod uploads;
mod views;

use poem_openapi::{OpenApiService, Tags};

pub use views::*;

#[derive(Tags)]
pub enum Tag {
    /// Signing in and out.
    Auth,
    /// The signed-in account and its phones.
    Account,
    /// Services, forms and offices.
    Catalog,
    /// Photos and PDFs.
    Attachments,
    /// Applications and reports, and the cases they become.
    Submissions,
    /// Messages to the signed-in person.
    Inbox,
    /// Officials' work on their agency's cases.
    Review,
}

pub type Apis = (
    auth::AuthApi,
    me::MeApi,
    devices::DevicesApi,
    catalog::CatalogApi,
    eligibility::EligibilityApi,
    attachments::AttachmentsApi,
    uploads::UploadsApi,
    submissions::SubmissionsApi,
    my_cases::MyCasesApi,
    inbox::InboxApi,
    review::ReviewApi,
);

/// The OpenAPI service; its document is the mobile contract.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            auth::AuthApi,
            me::MeApi,
            devices::DevicesApi,
            catalog::CatalogApi,
            eligibility::EligibilityApi,
            attachments::AttachmentsApi,
            uploads::UploadsApi,
            submissions::SubmissionsApi,
            my_cases::MyCasesApi,
            inbox::InboxApi,
            review::ReviewApi,
        ),
        "One-Stop Mobile API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "The API behind the one-stop phone and tablet apps. Errors are RFC 9457 problem \
         details (`application/problem+json`) with a stable `type` per kind of error.",
    )
}
