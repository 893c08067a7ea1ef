//! The catalog seed: agencies, organisations, services of the one-stop
//! bundle, standard forms and the texts people read. It is data, kept in
//! `model/data/catalog.json`; editing that file (or pointing the server at
//! another one) and restarting changes the catalog without code.

use std::collections::BTreeMap;

use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};
use serde::{Deserialize, Serialize};

use crate::entities::{agency, catalog_revision, form, message_text, organisation, service};
use crate::Locale;

/// The catalog shipped with the code.
pub const EMBEDDED: &str = include_str!("../data/catalog.json");

/// Demo accounts, seeded only in demo mode.
pub const EMBEDDED_DEMO: &str = include_str!("../data/demo.json");

/// Text by locale code.
pub type Localised = BTreeMap<String, String>;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Catalog {
    pub agencies: Vec<AgencySeed>,
    pub organisations: Vec<OrganisationSeed>,
    pub documents: BTreeMap<String, DocumentSeed>,
    pub services: Vec<ServiceSeed>,
    pub forms: Vec<FormSeed>,
    /// `key → locale → {title, body}`.
    pub texts: BTreeMap<String, BTreeMap<String, TextSeed>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AgencySeed {
    pub id: String,
    pub kind: String,
    pub region: Option<String>,
    pub names: Localised,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OrganisationSeed {
    pub id: String,
    pub kind: String,
    pub region: Option<String>,
    pub names: Localised,
}

/// A kind of document an applicant may have to attach, and the shared
/// facts that make it unnecessary.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DocumentSeed {
    pub names: Localised,
    #[serde(default)]
    pub proves: Vec<String>,
}

/// An eligibility rule over shared facts: every condition must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Rule {
    #[serde(default)]
    pub all: Vec<Condition>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Condition {
    /// A fact name: `children`, `region`, `disability`, `multicultural_family`.
    pub fact: String,
    /// `eq`, `gte` or `lte`.
    pub op: String,
    pub value: serde_json::Value,
    /// Why the service does not apply when the condition fails, by locale.
    pub unmet: Localised,
}

const OPS: [&str; 3] = ["eq", "gte", "lte"];

impl Condition {
    pub fn holds(&self, facts: &serde_json::Value) -> bool {
        let Some(actual) = facts.get(&self.fact) else {
            return false;
        };
        match self.op.as_str() {
            "eq" => actual == &self.value,
            "gte" => matches!((actual.as_f64(), self.value.as_f64()), (Some(a), Some(v)) if a >= v),
            "lte" => matches!((actual.as_f64(), self.value.as_f64()), (Some(a), Some(v)) if a <= v),
            _ => false,
        }
    }
}

impl Rule {
    pub fn from_json(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value.clone())
    }

    /// Whether the rule needs any fact at all.
    pub fn needs_facts(&self) -> bool {
        !self.all.is_empty()
    }

    /// The conditions the facts do not meet; empty when eligible.
    pub fn unmet<'a>(&'a self, facts: &serde_json::Value) -> Vec<&'a Condition> {
        self.all.iter().filter(|c| !c.holds(facts)).collect()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ServiceSeed {
    pub code: String,
    pub bundle: String,
    pub agency_kind: String,
    pub position: i32,
    pub names: Localised,
    pub descriptions: Localised,
    pub rule: serde_json::Value,
    pub required_documents: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FormSeed {
    pub code: String,
    pub agency_kind: String,
    pub min_pages: i32,
    pub names: Localised,
    pub fields: Vec<FormField>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct FormField {
    pub name: String,
    /// `integer`, `text` or `date` (YYYY-MM-DD).
    pub kind: String,
    pub required: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TextSeed {
    pub title: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the catalog is inconsistent: {0}")]
    Invalid(String),
    #[error("writing the catalog failed: {0}")]
    Database(#[from] DbErr),
}

impl Catalog {
    pub fn parse(json: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog = serde_json::from_str(json)?;
        catalog.validate()?;
        Ok(catalog)
    }

    pub fn embedded() -> Self {
        Self::parse(EMBEDDED).expect("the embedded catalog is valid; a unit test checks it")
    }

    /// Checks what JSON alone cannot: every service and form can reach an
    /// agency, every name exists in every locale, documents are known.
    fn validate(&self) -> Result<(), CatalogError> {
        let invalid = |message: String| Err(CatalogError::Invalid(message));
        let kinds: Vec<&str> = self.agencies.iter().map(|a| a.kind.as_str()).collect();
        let localised = |what: &str, names: &Localised| -> Result<(), CatalogError> {
            for locale in Locale::ALL {
                if !names.contains_key(locale.as_str()) {
                    return Err(CatalogError::Invalid(format!(
                        "{what} has no text in {}",
                        locale.as_str()
                    )));
                }
            }
            Ok(())
        };
        for agency in &self.agencies {
            localised(&format!("agency {}", agency.id), &agency.names)?;
        }
        for organisation in &self.organisations {
            localised(
                &format!("organisation {}", organisation.id),
                &organisation.names,
            )?;
        }
        for (code, document) in &self.documents {
            localised(&format!("document {code}"), &document.names)?;
        }
        for service in &self.services {
            localised(&format!("service {}", service.code), &service.names)?;
            localised(&format!("service {}", service.code), &service.descriptions)?;
            let rule = Rule::from_json(&service.rule).map_err(|e| {
                CatalogError::Invalid(format!(
                    "service {} has a malformed rule: {e}",
                    service.code
                ))
            })?;
            for condition in &rule.all {
                if !OPS.contains(&condition.op.as_str()) {
                    return invalid(format!(
                        "service {} uses unknown operator {}",
                        service.code, condition.op
                    ));
                }
                localised(
                    &format!("a condition of service {}", service.code),
                    &condition.unmet,
                )?;
            }
            if !kinds.contains(&service.agency_kind.as_str()) {
                return invalid(format!(
                    "service {} needs an agency of kind {}, and there is none",
                    service.code, service.agency_kind
                ));
            }
            if let Some(doc) = service
                .required_documents
                .iter()
                .find(|doc| !self.documents.contains_key(*doc))
            {
                return invalid(format!(
                    "service {} requires unknown document {doc}",
                    service.code
                ));
            }
        }
        for form in &self.forms {
            localised(&format!("form {}", form.code), &form.names)?;
            if !kinds.contains(&form.agency_kind.as_str()) {
                return invalid(format!(
                    "form {} goes to agencies of kind {}, and there is none",
                    form.code, form.agency_kind
                ));
            }
        }
        for (key, by_locale) in &self.texts {
            for locale in Locale::ALL {
                if !by_locale.contains_key(locale.as_str()) {
                    return invalid(format!("text {key} has no {}", locale.as_str()));
                }
            }
        }
        Ok(())
    }

    /// Writes the catalog into the database, updating rows that exist, and
    /// gives it a new revision. Rows the file no longer lists are left
    /// alone: cases refer to them.
    pub async fn seed(&self, db: &impl ConnectionTrait) -> Result<(), CatalogError> {
        fn json<T: Serialize>(value: &T) -> serde_json::Value {
            serde_json::to_value(value).expect("catalog values serialise")
        }

        for a in &self.agencies {
            agency::Entity::insert(agency::ActiveModel {
                id: Set(a.id.clone()),
                kind: Set(a.kind.clone()),
                region: Set(a.region.clone()),
                names: Set(json(&a.names)),
            })
            .on_conflict(
                OnConflict::column(agency::Column::Id)
                    .update_columns([
                        agency::Column::Kind,
                        agency::Column::Region,
                        agency::Column::Names,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
        }
        for o in &self.organisations {
            organisation::Entity::insert(organisation::ActiveModel {
                id: Set(o.id.clone()),
                kind: Set(o.kind.clone()),
                region: Set(o.region.clone()),
                names: Set(json(&o.names)),
            })
            .on_conflict(
                OnConflict::column(organisation::Column::Id)
                    .update_columns([
                        organisation::Column::Kind,
                        organisation::Column::Region,
                        organisation::Column::Names,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
        }
        for s in &self.services {
            service::Entity::insert(service::ActiveModel {
                code: Set(s.code.clone()),
                bundle: Set(s.bundle.clone()),
                agency_kind: Set(s.agency_kind.clone()),
                names: Set(json(&s.names)),
                descriptions: Set(json(&s.descriptions)),
                rule: Set(s.rule.clone()),
                required_documents: Set(json(&s.required_documents)),
                position: Set(s.position),
                active: Set(true),
            })
            .on_conflict(
                OnConflict::column(service::Column::Code)
                    .update_columns([
                        service::Column::Bundle,
                        service::Column::AgencyKind,
                        service::Column::Names,
                        service::Column::Descriptions,
                        service::Column::Rule,
                        service::Column::RequiredDocuments,
                        service::Column::Position,
                        service::Column::Active,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
        }
        for f in &self.forms {
            form::Entity::insert(form::ActiveModel {
                code: Set(f.code.clone()),
                agency_kind: Set(f.agency_kind.clone()),
                names: Set(json(&f.names)),
                fields: Set(json(&f.fields)),
                min_pages: Set(f.min_pages),
                active: Set(true),
            })
            .on_conflict(
                OnConflict::column(form::Column::Code)
                    .update_columns([
                        form::Column::AgencyKind,
                        form::Column::Names,
                        form::Column::Fields,
                        form::Column::MinPages,
                        form::Column::Active,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
        }
        for (key, by_locale) in &self.texts {
            for (locale, text) in by_locale {
                message_text::Entity::insert(message_text::ActiveModel {
                    key: Set(key.clone()),
                    locale: Set(locale.clone()),
                    title: Set(text.title.clone()),
                    body: Set(text.body.clone()),
                })
                .on_conflict(
                    OnConflict::columns([message_text::Column::Key, message_text::Column::Locale])
                        .update_columns([message_text::Column::Title, message_text::Column::Body])
                        .to_owned(),
                )
                .exec(db)
                .await?;
            }
        }
        // Every replica reads the names and texts again when it sees a
        // new revision.
        catalog_revision::Entity::insert(catalog_revision::ActiveModel {
            id: Set(catalog_revision::ONLY_ROW),
            revision: Set(uuid::Uuid::now_v7()),
            seeded_at: Set(chrono::Utc::now()),
        })
        .on_conflict(
            OnConflict::column(catalog_revision::Column::Id)
                .update_columns([
                    catalog_revision::Column::Revision,
                    catalog_revision::Column::SeededAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
        Ok(())
    }
}

/// Localised texts as loaded from the database, for rendering.
#[derive(Clone, Debug, Default)]
pub struct Texts {
    by_key: BTreeMap<(String, String), (String, String)>,
}

impl Texts {
    pub async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let rows = message_text::Entity::find().all(db).await?;
        Ok(Self {
            by_key: rows
                .into_iter()
                .map(|row| ((row.key, row.locale), (row.title, row.body)))
                .collect(),
        })
    }

    /// Title and body for `key` in `locale`, falling back to English and
    /// then Korean; `{name}` placeholders are filled from `vars`.
    pub fn render(
        &self,
        key: &str,
        locale: Locale,
        vars: &[(&str, &str)],
    ) -> Option<(String, String)> {
        let (title, body) = [locale, Locale::En, Locale::Ko]
            .into_iter()
            .find_map(|l| self.by_key.get(&(key.to_owned(), l.as_str().to_owned())))?;
        let fill = |text: &str| {
            vars.iter().fold(text.to_owned(), |acc, (name, value)| {
                acc.replace(&format!("{{{name}}}"), value)
            })
        };
        Some((fill(title), fill(body)))
    }
}

/// A localised name in `locale`, falling back to English then Korean.
pub fn localised_name(names: &serde_json::Value, locale: Locale) -> String {
    [locale, Locale::En, Locale::Ko]
        .into_iter()
        .find_map(|l| names.get(l.as_str()).and_then(|v| v.as_str()))
        .unwrap_or_default()
        .to_owned()
}

/// A name from a catalog map in `locale`, falling back to English then
/// Korean.
pub fn pick_localised(names: &Localised, locale: Locale) -> String {
    [locale, Locale::En, Locale::Ko]
        .into_iter()
        .find_map(|l| names.get(l.as_str()))
        .cloned()
        .unwrap_or_default()
}

#[derive(Clone, Debug, Deserialize)]
pub struct DemoAccounts {
    pub password: String,
    pub accounts: Vec<DemoAccount>,
    #[serde(default)]
    pub registry: Vec<DemoRegistryEntry>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DemoAccount {
    pub username: String,
    pub role: crate::Role,
    pub display_name: String,
    pub locale: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub agency_id: Option<String>,
    #[serde(default)]
    pub organisation_id: Option<String>,
    /// Resident registration number, the key of the person's shared facts.
    #[serde(default)]
    pub rrn: Option<String>,
}

/// A demo person in the embedded registry.
#[derive(Clone, Debug, Deserialize)]
pub struct DemoRegistryEntry {
    pub rrn: String,
    pub facts: serde_json::Value,
}

impl DemoAccounts {
    pub fn embedded() -> Self {
        serde_json::from_str(EMBEDDED_DEMO)
            .expect("the embedded demo accounts are valid; a unit test checks it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_and_demo_accounts_are_valid() {
        let catalog = Catalog::parse(EMBEDDED).unwrap();
        assert!(catalog
            .services
            .iter()
            .any(|s| s.code == "electricity_bill_cut"));
        let demo = DemoAccounts::embedded();
        for account in &demo.accounts {
            if let Some(agency) = &account.agency_id {
                assert!(catalog.agencies.iter().any(|a| &a.id == agency), "{agency}");
            }
            if let Some(org) = &account.organisation_id {
                assert!(catalog.organisations.iter().any(|o| &o.id == org), "{org}");
            }
        }
    }

    #[test]
    fn rules_decide_from_facts() {
        let catalog = Catalog::embedded();
        let rule = |code: &str| {
            Rule::from_json(
                &catalog
                    .services
                    .iter()
                    .find(|s| s.code == code)
                    .unwrap()
                    .rule,
            )
            .unwrap()
        };
        let one_child = serde_json::json!({ "children": 1, "multicultural_family": true });
        let two_children = serde_json::json!({ "children": 2, "multicultural_family": false });
        assert_eq!(rule("electricity_bill_cut").unmet(&one_child).len(), 1);
        assert!(rule("electricity_bill_cut").unmet(&two_children).is_empty());
        assert!(rule("multicultural_visiting_service")
            .unmet(&one_child)
            .is_empty());
        assert!(!rule("multicultural_visiting_service")
            .unmet(&two_children)
            .is_empty());
        assert!(!rule("breast_pump_rental").needs_facts());
        // A fact the registry did not give never satisfies a condition.
        assert!(!rule("childcare_allowance")
            .unmet(&serde_json::json!({}))
            .is_empty());
    }

    #[test]
    fn a_service_without_an_agency_is_refused() {
        let mut value: serde_json::Value = serde_json::from_str(EMBEDDED).unwrap();
        value["services"][0]["agency_kind"] = "space_agency".into();
        let err = Catalog::parse(&value.to_string()).unwrap_err();
        assert!(err.to_string().contains("space_agency"), "{err}");
    }
}
