//! Filing: a submission of several services (an applicant) or one form (an
//! organisation member) is checked and routed first ([`Cases::plan`]),
//! then written in one transaction ([`Cases::file`]): the submission, a
//! case per request with its attachments and history entry, the
//! applicant's inbox entry and event, and the idempotency record.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Instant;

use onestop_model::catalog::{Catalog, FormField};
use onestop_model::entities::{case, case_attachment, form, service, submission, user};
use onestop_model::{CaseStatus, EventKind, Role, SubmissionKind};
use sea_orm::prelude::*;
use sea_orm::ActiveValue::Set;

use super::change::{Change, News};
use super::reading::{CaseRecord, SubmissionRecord};
use super::{check_attachments, Cases, Names};
use crate::auth::Principal;
use crate::eligibility::{assess, rule_of, Verdict};
use crate::error::ApiError;
use crate::idempotency::{self, IdempotencyKey};
use crate::registry::SharedFacts;
use crate::routing::{office_for_form, office_for_service};

/// Services one submission may ask for.
const MAX_REQUESTS: usize = 10;
/// Longest value of a text field of a form.
const MAX_TEXT_FIELD: usize = 2000;

/// What a filed submission became.
pub type Filed = SubmissionRecord;

/// A submission as asked for.
pub enum NewFiling {
    /// Services of a one-stop bundle, each with its attachments.
    Services(Vec<(String, Vec<Uuid>)>),
    /// One form to one office.
    Form {
        code: String,
        office: String,
        fields: serde_json::Value,
        attachments: Vec<Uuid>,
    },
}

/// A submission checked and routed, ready to be written.
pub struct Plan {
    kind: SubmissionKind,
    organisation_id: Option<String>,
    cases: Vec<PlannedCase>,
}

/// Services asked for, with the account asking and when checking began.
struct Requests<'a> {
    account: user::Model,
    requests: &'a [(String, Vec<Uuid>)],
    started: Instant,
}

struct PlannedCase {
    agency_id: String,
    service_code: Option<String>,
    form_code: Option<String>,
    fields: serde_json::Value,
    attachments: Vec<Uuid>,
}

/// Counts the time a step of filing took, for the breakdown of where a
/// submission's time goes: `idempotency` (claiming the key), `checks`
/// (account, catalog, attachments), `facts` (the consented
/// lookup and its access record), `routing`, `write` and `commit`.
pub fn time_stage(stage: &'static str, started: Instant) {
    metrics::histogram!("filing_stage_seconds", "stage" => stage)
        .record(started.elapsed().as_secs_f64());
}

impl Cases {
    /// Checks a submission against the catalog, the filer's role and (for
    /// services whose rules need them) the applicant's shared facts, which
    /// `look_up_facts` fetches at most once; routes each request to its
    /// office. Writes nothing but the record of a facts lookup.
    pub async fn plan<F, Fut>(
        &self,
        principal: &Principal,
        filing: &NewFiling,
        catalog: &Catalog,
        names: &Names,
        look_up_facts: F,
    ) -> Result<Plan, ApiError>
    where
        F: FnOnce(user::Model) -> Fut,
        Fut: Future<Output = Result<Option<SharedFacts>, ApiError>>,
    {
        let started = Instant::now();
        let account = user::Entity::find_by_id(principal.user_id)
            .one(&self.db)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        match filing {
            NewFiling::Services(requests) => {
                let services = Requests {
                    account,
                    requests,
                    started,
                };
                self.plan_services(principal, services, catalog, names, look_up_facts)
                    .await
            }
            NewFiling::Form {
                code,
                office,
                fields,
                attachments,
            } => {
                self.plan_form(principal, code, office, fields, attachments, started)
                    .await
            }
        }
    }

    async fn plan_services<F, Fut>(
        &self,
        principal: &Principal,
        Requests {
            account,
            requests,
            started,
        }: Requests<'_>,
        catalog: &Catalog,
        names: &Names,
        look_up_facts: F,
    ) -> Result<Plan, ApiError>
    where
        F: FnOnce(user::Model) -> Fut,
        Fut: Future<Output = Result<Option<SharedFacts>, ApiError>>,
    {
        if principal.role != Role::Applicant {
            return Err(ApiError::Forbidden("only applicants apply for services"));
        }
        if requests.len() > MAX_REQUESTS {
            return Err(ApiError::Validation(format!(
                "at most {MAX_REQUESTS} services at once"
            )));
        }
        let mut seen = BTreeSet::new();
        let mut wanted = Vec::with_capacity(requests.len());
        for (code, attachments) in requests {
            if !seen.insert(code.as_str()) {
                return Err(ApiError::Validation(format!(
                    "the service {code} is asked for twice"
                )));
            }
            let found = service::Entity::find_by_id(code.clone())
                .filter(service::Column::Active.eq(true))
                .one(&self.db)
                .await?
                .ok_or_else(|| ApiError::Validation(format!("there is no service {code}")))?;
            check_attachments(&self.db, principal.user_id, attachments).await?;
            let needs_facts = rule_of(&found)?.needs_facts();
            wanted.push((attachments, found, needs_facts));
        }

        // Facts are looked up once, with consent, when a rule needs them.
        let needs_facts = wanted.iter().any(|(_, _, needs)| *needs);
        let region = account.region.clone();
        time_stage("checks", started);
        let shared = if needs_facts {
            let started = Instant::now();
            let shared = look_up_facts(account).await?;
            time_stage("facts", started);
            if shared.is_none() {
                return Err(ApiError::NotEligible(
                    "the public registry has no record of you, so eligibility cannot be checked; \
                     apply at an office with your documents"
                        .into(),
                ));
            }
            shared
        } else {
            None
        };
        let mut refusals = Vec::new();
        for (_, found, _) in &wanted {
            let assessment = assess(catalog, found, shared.as_ref(), names.locale)?;
            if assessment.verdict != Verdict::Eligible {
                refusals.push(format!(
                    "{}: {}",
                    names.subject(&found.code),
                    assessment.reasons.join(" ")
                ));
            }
        }
        if !refusals.is_empty() {
            return Err(ApiError::NotEligible(refusals.join("; ")));
        }

        let region = shared.as_ref().and_then(|f| f.region.clone()).or(region);
        let started = Instant::now();
        let mut cases = Vec::with_capacity(wanted.len());
        for (attachments, found, needs_facts) in wanted {
            let office =
                office_for_service(&self.db, &found.agency_kind, region.as_deref(), &found.code)
                    .await?;
            let fields = match &shared {
                Some(facts) if needs_facts => {
                    serde_json::json!({ "shared_facts": facts.as_json() })
                }
                _ => serde_json::json!({}),
            };
            cases.push(PlannedCase {
                agency_id: office.id,
                service_code: Some(found.code),
                form_code: None,
                fields,
                attachments: attachments.clone(),
            });
        }
        time_stage("routing", started);
        Ok(Plan {
            kind: SubmissionKind::OneStop,
            organisation_id: None,
            cases,
        })
    }

    async fn plan_form(
        &self,
        principal: &Principal,
        code: &str,
        office: &str,
        fields: &serde_json::Value,
        attachments: &[Uuid],
        started: Instant,
    ) -> Result<Plan, ApiError> {
        if principal.role != Role::OrganisationMember {
            return Err(ApiError::Forbidden(
                "only members of an organisation file forms",
            ));
        }
        let found = form::Entity::find_by_id(code.to_owned())
            .filter(form::Column::Active.eq(true))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::Validation(format!("there is no form {code}")))?;
        let spec: Vec<FormField> = serde_json::from_value(found.fields.clone()).map_err(|e| {
            ApiError::Internal(format!("form {} has a broken field list: {e}", found.code))
        })?;
        let fields = check_form_fields(&spec, fields)?;
        check_attachments(&self.db, principal.user_id, attachments).await?;
        if (attachments.len() as i32) < found.min_pages {
            return Err(ApiError::Validation(format!(
                "the form {} needs at least {} attached page(s)",
                found.code, found.min_pages
            )));
        }
        time_stage("checks", started);
        let started = Instant::now();
        let office = office_for_form(&self.db, &found.agency_kind, office, &found.code).await?;
        time_stage("routing", started);
        Ok(Plan {
            kind: SubmissionKind::Form,
            organisation_id: principal.organisation_id.clone(),
            cases: vec![PlannedCase {
                agency_id: office.id,
                service_code: None,
                form_code: Some(found.code),
                fields,
                attachments: attachments.to_vec(),
            }],
        })
    }

    /// Writes a planned submission in one transaction and returns the
    /// answer `answer` makes of what it became. With an idempotency key,
    /// that answer is stored in the same transaction, so a retry gets it
    /// back and never files twice.
    pub async fn file<A: serde::Serialize>(
        &self,
        principal: &Principal,
        plan: Plan,
        key: Option<&IdempotencyKey>,
        answer: impl FnOnce(Filed) -> A,
    ) -> Result<A, ApiError> {
        let started = Instant::now();
        let mut change = Change::begin(self).await?;
        let now = change.now;
        let submission = submission::ActiveModel {
            id: Set(Uuid::now_v7()),
            applicant_id: Set(principal.user_id),
            kind: Set(plan.kind),
            organisation_id: Set(plan.organisation_id),
            created_at: Set(now),
        }
        .insert(change.txn())
        .await?;
        let mut cases = Vec::with_capacity(plan.cases.len());
        let mut links = Vec::new();
        // Each case's attachments in the order they were given, for its history.
        let mut asked = Vec::with_capacity(plan.cases.len());
        for (position, planned) in plan.cases.into_iter().enumerate() {
            let case = case::Model {
                id: Uuid::now_v7(),
                submission_id: submission.id,
                applicant_id: principal.user_id,
                agency_id: planned.agency_id,
                service_code: planned.service_code,
                form_code: planned.form_code,
                status: CaseStatus::Submitted,
                version: 1,
                claimed_by: None,
                claimed_at: None,
                fields: planned.fields,
                // Cases keep the order they were asked for.
                created_at: now + chrono::Duration::microseconds(position as i64),
                updated_at: now,
            };
            links.extend(planned.attachments.iter().map(|attachment_id| {
                case_attachment::ActiveModel {
                    case_id: Set(case.id),
                    attachment_id: Set(*attachment_id),
                }
            }));
            asked.push(planned.attachments.clone());
            let mut attachments = planned.attachments;
            attachments.sort();
            cases.push(CaseRecord { case, attachments });
        }
        case::Entity::insert_many(
            cases
                .iter()
                .map(|record| case::ActiveModel::from(record.case.clone()).reset_all()),
        )
        .exec(change.txn())
        .await?;
        if !links.is_empty() {
            case_attachment::Entity::insert_many(links)
                .exec(change.txn())
                .await?;
        }
        change
            .history_of_each(
                Some(principal),
                "submitted",
                cases.iter().zip(asked).map(|(record, attachments)| {
                    (
                        record.case.id,
                        serde_json::json!({ "attachments": attachments }),
                    )
                }),
            )
            .await?;
        let codes: Vec<&str> = cases
            .iter()
            .map(|record| super::subject_code(&record.case))
            .collect();
        change
            .announce(News {
                recipient: principal.user_id,
                kind: EventKind::SubmissionReceived,
                submission_id: submission.id,
                case_id: None,
                status: CaseStatus::Submitted,
                subject_code: codes.join(","),
                reason: None,
                document_id: None,
            })
            .await?;
        let kind = match submission.kind {
            SubmissionKind::Form => "form",
            SubmissionKind::OneStop => "one_stop",
        };
        let answer = answer(SubmissionRecord { submission, cases });
        if let Some(key) = key {
            let stored = serde_json::to_string(&answer)
                .map_err(|e| ApiError::Internal(format!("an answer does not serialise: {e}")))?;
            idempotency::complete(change.txn(), principal.user_id, key, 201, &stored).await?;
        }
        time_stage("write", started);
        let started = Instant::now();
        change.commit().await?;
        time_stage("commit", started);
        metrics::counter!("submissions_created_total", "kind" => kind).increment(1);
        Ok(answer)
    }
}

fn check_form_fields(
    spec: &[FormField],
    given: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let given = given.as_object().ok_or_else(|| {
        ApiError::Validation("fields must be an object of field names and values".into())
    })?;
    if let Some(unknown) = given
        .keys()
        .find(|name| !spec.iter().any(|f| &f.name == *name))
    {
        return Err(ApiError::Validation(format!(
            "the form has no field {unknown}"
        )));
    }
    for field in spec {
        let value = given.get(&field.name).filter(|v| !v.is_null());
        let Some(value) = value else {
            if field.required {
                return Err(ApiError::Validation(format!(
                    "the field {} is required",
                    field.name
                )));
            }
            continue;
        };
        let ok = match field.kind.as_str() {
            "integer" => value.is_i64() || value.is_u64(),
            "date" => value
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            _ => value
                .as_str()
                .is_some_and(|s| s.chars().count() <= MAX_TEXT_FIELD),
        };
        if !ok {
            return Err(ApiError::Validation(format!(
                "the field {} must be {}",
                field.name,
                match field.kind.as_str() {
                    "integer" => "a whole number".to_owned(),
                    "date" => "a date as YYYY-MM-DD".to_owned(),
                    _ => format!("text of at most {MAX_TEXT_FIELD} characters"),
                }
            )));
        }
    }
    Ok(serde_json::Value::Object(given.clone()))
}
