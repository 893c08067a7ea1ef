//! The catalog's names (agencies, services, forms) in memory, so showing
//! a case costs the same whatever the catalog holds.

use std::collections::HashMap;

use onestop_model::catalog::localised_name;
use onestop_model::entities::{agency, form, organisation, service};
use onestop_model::Locale;
use sea_orm::prelude::*;

/// The localised names of every agency, service, form and organisation, as the catalog
/// in the database has them.
#[derive(Default)]
pub struct CatalogNames {
    agencies: HashMap<String, serde_json::Value>,
    services: HashMap<String, serde_json::Value>,
    forms: HashMap<String, serde_json::Value>,
    organisations: HashMap<String, serde_json::Value>,
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
            organisations: organisation::Entity::find()
                .all(db)
                .await?
                .into_iter()
                .map(|o| (o.id, o.names))
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

    pub fn organisation(&self, id: &str) -> String {
        self.catalog
            .organisations
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
