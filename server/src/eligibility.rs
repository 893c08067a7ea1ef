//! Which services of the catalog apply to a person, from their shared
//! facts and the rules in the catalog (never from code).

use onestop_model::catalog::{pick_localised, Catalog, Condition, Rule};
use onestop_model::entities::service;
use onestop_model::Locale;

use crate::error::ApiError;
use crate::registry::SharedFacts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Eligible,
    NotEligible,
    /// The rule needs facts the registry does not have for the person.
    Unknown,
}

pub struct Assessment {
    pub verdict: Verdict,
    /// Why not, in the reader's language.
    pub reasons: Vec<String>,
    /// Documents still to attach, and those the shared facts replace.
    pub documents_needed: Vec<String>,
    pub documents_skipped: Vec<String>,
}

pub fn rule_of(service: &service::Model) -> Result<Rule, ApiError> {
    Rule::from_json(&service.rule).map_err(|e| {
        ApiError::Internal(format!(
            "service {} has a malformed rule: {e}",
            service.code
        ))
    })
}

pub fn assess(
    catalog: &Catalog,
    service: &service::Model,
    facts: Option<&SharedFacts>,
    locale: Locale,
) -> Result<Assessment, ApiError> {
    let rule = rule_of(service)?;
    let required: Vec<String> =
        serde_json::from_value(service.required_documents.clone()).unwrap_or_default();
    let (documents_skipped, documents_needed): (Vec<String>, Vec<String>) =
        required.into_iter().partition(|code| {
            facts.is_some()
                && catalog
                    .documents
                    .get(code)
                    .is_some_and(|document| !document.proves.is_empty())
        });
    let (verdict, reasons) = match facts {
        None if rule.needs_facts() => (Verdict::Unknown, Vec::new()),
        None => (Verdict::Eligible, Vec::new()),
        Some(facts) => {
            let unmet: Vec<&Condition> = rule.unmet(&facts.as_json());
            if unmet.is_empty() {
                (Verdict::Eligible, Vec::new())
            } else {
                (
                    Verdict::NotEligible,
                    unmet
                        .iter()
                        .map(|c| pick_localised(&c.unmet, locale))
                        .collect(),
                )
            }
        }
    };
    Ok(Assessment {
        verdict,
        reasons,
        documents_needed,
        documents_skipped,
    })
}
