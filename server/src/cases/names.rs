//! The catalog's names (agencies, services, forms, organisations) and the
//! texts of inbox entries in memory, so showing a case costs the same
//! whatever the catalog holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use onestop_model::catalog::{localised_name, Texts};
use onestop_model::entities::{agency, catalog_revision, form, organisation, service};
use onestop_model::Locale;
use sea_orm::prelude::*;
use sea_orm::QuerySelect;

/// The localised names of every agency, service, form and organisation,
/// as the catalog in the database has them.
#[derive(Default)]
struct CatalogNames {
    agencies: HashMap<String, serde_json::Value>,
    services: HashMap<String, serde_json::Value>,
    forms: HashMap<String, serde_json::Value>,
    organisations: HashMap<String, serde_json::Value>,
}

impl CatalogNames {
    async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
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

/// What the screens read of the catalog: its names, the texts of inbox
/// entries, and the revision they came from.
struct Shelf {
    revision: Option<Uuid>,
    names: CatalogNames,
    texts: Texts,
}

/// The catalog's names and texts in memory, so that showing a case costs
/// the same whatever the catalog holds (the real one has thousands of
/// offices). Loaded at start; [`NameBook::refresh`] reads them again only
/// when the catalog's revision changed, which is how a catalog another
/// replica seeded reaches this one.
pub struct NameBook(RwLock<Arc<Shelf>>);

impl NameBook {
    /// Loads the names and texts the database holds now.
    pub async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        Ok(NameBook(RwLock::new(Arc::new(Shelf::load(db).await?))))
    }

    /// The names as they are now, for one reader's language.
    pub fn in_locale(&self, locale: Locale) -> Names {
        Names {
            shelf: self.shelf(),
            locale,
        }
    }

    fn shelf(&self) -> Arc<Shelf> {
        match self.0.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the names and texts again if the catalog has a new revision
    /// (one indexed read when it has not). Returns whether they changed.
    pub async fn refresh(&self, db: &impl ConnectionTrait) -> Result<bool, DbErr> {
        let held = self.shelf().revision;
        if revision(db).await? == held {
            return Ok(false);
        }
        let fresh = Arc::new(Shelf::load(db).await?);
        match self.0.write() {
            Ok(mut current) => *current = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(true)
    }
}

impl Shelf {
    async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        // The revision first: a catalog seeded while the rest is read is
        // read again at the next refresh.
        Ok(Shelf {
            revision: revision(db).await?,
            names: CatalogNames::load(db).await?,
            texts: Texts::load(db).await?,
        })
    }
}

async fn revision(db: &impl ConnectionTrait) -> Result<Option<Uuid>, DbErr> {
    catalog_revision::Entity::find_by_id(catalog_revision::ONLY_ROW)
        .select_only()
        .column(catalog_revision::Column::Revision)
        .into_tuple()
        .one(db)
        .await
}

/// The catalog's names for one reader's language.
pub struct Names {
    shelf: Arc<Shelf>,
    pub locale: Locale,
}

impl Names {
    pub fn agency(&self, id: &str) -> String {
        self.shelf
            .names
            .agencies
            .get(id)
            .map(|names| localised_name(names, self.locale))
            .unwrap_or_else(|| id.to_owned())
    }

    pub fn organisation(&self, id: &str) -> String {
        self.shelf
            .names
            .organisations
            .get(id)
            .map(|names| localised_name(names, self.locale))
            .unwrap_or_else(|| id.to_owned())
    }

    /// The name of what a case asks for: its service or its form.
    pub fn subject(&self, code: &str) -> String {
        self.shelf
            .names
            .services
            .get(code)
            .or_else(|| self.shelf.names.forms.get(code))
            .map(|names| localised_name(names, self.locale))
            .unwrap_or_else(|| code.to_owned())
    }

    /// The title and body of an inbox text in this language, its
    /// placeholders filled from `vars`.
    pub fn text(&self, key: &str, vars: &[(&str, &str)]) -> Option<(String, String)> {
        self.shelf.texts.render(key, self.locale, vars)
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
