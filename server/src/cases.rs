//! Reading cases and submissions into the shapes the apps see, and the
//! small rules about ETags and names shared by applicant and official
//! routes.

use std::collections::{BTreeSet, HashMap};

use onestop_model::catalog::localised_name;
use onestop_model::entities::{agency, case, case_attachment, form, service, submission};
use onestop_model::Locale;
use sea_orm::prelude::*;
use sea_orm::QueryOrder;

use crate::error::ApiError;

/// The ETag of a case: it changes with every change of the case.
pub fn etag(case: &case::Model) -> String {
    format!("\"v{}\"", case.version)
}

/// Whether an `If-Match` value names the case's current ETag. If-Match
/// compares strongly (RFC 9110 §13.1.1): a weak tag `W/"…"` only promises
/// an equivalent representation, never the same version, so it matches
/// nothing.
pub fn if_match_holds(header: &str, case: &case::Model) -> bool {
    let current = etag(case);
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current)
}

/// The localised names of every agency, service and form, as the catalog
/// in the database has them.
#[derive(Default)]
pub struct CatalogNames {
    agencies: HashMap<String, serde_json::Value>,
    services: HashMap<String, serde_json::Value>,
    forms: HashMap<String, serde_json::Value>,
}

impl CatalogNames {
    pub async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        Ok(CatalogNames {
            agencies: agency::Entity::find()
                .all(db)
                .await?
                .into_iter()
                .map(|a| (a.id, a.names))
                .collect(),
            services: service::Entity::find()
                .all(db)
                .await?
                .into_iter()
                .map(|s| (s.code, s.names))
                .collect(),
            forms: form::Entity::find()
                .all(db)
                .await?
                .into_iter()
                .map(|f| (f.code, f.names))
                .collect(),
        })
    }
}

/// The catalog's names in memory, so that showing a case costs the same
/// whatever the catalog holds (the real one has thousands of offices).
/// Loaded at start and read again by the maintenance task, so a catalog
/// another replica seeded reaches this one within a period.
pub struct NameBook(std::sync::RwLock<std::sync::Arc<CatalogNames>>);

impl NameBook {
    pub fn new(names: CatalogNames) -> Self {
        NameBook(std::sync::RwLock::new(std::sync::Arc::new(names)))
    }

    /// The names as they are now, for one reader's language.
    pub fn in_locale(&self, locale: Locale) -> Names {
        let catalog = match self.0.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Names { catalog, locale }
    }

    /// Reads the names from the database again.
    pub async fn reload(&self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        let fresh = std::sync::Arc::new(CatalogNames::load(db).await?);
        match self.0.write() {
            Ok(mut current) => *current = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

/// The catalog's names for one reader's language.
pub struct Names {
    catalog: std::sync::Arc<CatalogNames>,
    pub locale: Locale,
}

impl Names {
    pub fn agency(&self, id: &str) -> String {
        self.catalog
            .agencies
            .get(id)
            .map(|names| localised_name(names, self.locale))
            .unwrap_or_else(|| id.to_owned())
    }

    /// The name of what a case asks for: its service or its form.
    pub fn subject(&self, code: &str) -> String {
        self.catalog
            .services
            .get(code)
            .or_else(|| self.catalog.forms.get(code))
            .map(|names| localised_name(names, self.locale))
            .unwrap_or_else(|| code.to_owned())
    }

    /// Names of a comma-separated list of codes, joined for a sentence.
    pub fn subjects(&self, codes: &str) -> String {
        codes
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|code| self.subject(code))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn subject_code(case: &case::Model) -> &str {
    case.service_code
        .as_deref()
        .or(case.form_code.as_deref())
        .unwrap_or_default()
}

/// The cases of some submissions, in the order they were asked for, with
/// the ids of their attachments.
pub async fn cases_of(
    db: &impl ConnectionTrait,
    submission_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<(case::Model, Vec<Uuid>)>>, ApiError> {
    let cases = case::Entity::find()
        .filter(case::Column::SubmissionId.is_in(submission_ids.iter().copied()))
        .order_by_asc(case::Column::CreatedAt)
        .order_by_asc(case::Column::Id)
        .all(db)
        .await?;
    let attachments = attachments_of(db, cases.iter().map(|c| c.id).collect()).await?;
    let mut by_submission: HashMap<Uuid, Vec<(case::Model, Vec<Uuid>)>> = HashMap::new();
    for case in cases {
        let ids = attachments.get(&case.id).cloned().unwrap_or_default();
        by_submission
            .entry(case.submission_id)
            .or_default()
            .push((case, ids));
    }
    Ok(by_submission)
}

/// Attachment ids by case.
pub async fn attachments_of(
    db: &impl ConnectionTrait,
    case_ids: BTreeSet<Uuid>,
) -> Result<HashMap<Uuid, Vec<Uuid>>, ApiError> {
    let links = case_attachment::Entity::find()
        .filter(case_attachment::Column::CaseId.is_in(case_ids))
        .order_by_asc(case_attachment::Column::AttachmentId)
        .all(db)
        .await?;
    let mut by_case: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for link in links {
        by_case
            .entry(link.case_id)
            .or_default()
            .push(link.attachment_id);
    }
    Ok(by_case)
}

/// The submissions, newest first, after `before` when paging.
pub fn newest_first() -> sea_orm::Select<submission::Entity> {
    submission::Entity::find()
        .order_by_desc(submission::Column::CreatedAt)
        .order_by_desc(submission::Column::Id)
}
