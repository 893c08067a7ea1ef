//! The life of a case, in one place. Every transition — filing a
//! submission, claiming, deciding, asking for more, answering with a
//! supplement, withdrawing one case or a whole submission, sending a
//! document back — is one transaction here, with its history rows, its
//! access record and, where the person is told, one announcement (inbox
//! entry and outbox event) that wakes the relay once committed. The HTTP
//! handlers parse, authorise, call one of these and shape the answer.
//!
//! Reads of cases for the apps' screens live in [`reading`]; names of the
//! catalog in [`names`].

mod applicant;
mod attached;
mod change;
pub mod filing;
mod history;
pub mod names;
pub mod reading;
mod review;

use std::sync::Arc;

use onestop_model::entities::case;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::access_log::{Access, Actor, ChainKeys};
use crate::auth::Principal;

pub use applicant::Answer;
pub use attached::check_attachments;
pub use filing::{Filed, NewFiling};
pub use names::{NameBook, Names};
pub use reading::{CaseFile, CaseRecord, Letter, SubmissionRecord};
pub use review::{NewLetter, Verdict};

/// What the transitions need: the database, the keys that link access
/// records, the relay's wake-up and how long a claim lives.
#[derive(Clone)]
pub struct Cases {
    db: DatabaseConnection,
    access_keys: ChainKeys,
    relay: Arc<Notify>,
    claim_ttl: chrono::Duration,
}

/// Ten years: a lifetime past any working claim, and far from the range
/// where adding it to a time would overflow.
const LONGEST_CLAIM_SECS: u64 = 10 * 365 * 24 * 3600;

impl Cases {
    pub fn new(
        db: DatabaseConnection,
        access_keys: ChainKeys,
        relay: Arc<Notify>,
        claim_ttl_secs: u64,
    ) -> Self {
        Cases {
            db,
            access_keys,
            relay,
            claim_ttl: chrono::Duration::seconds(claim_ttl_secs.min(LONGEST_CLAIM_SECS) as i64),
        }
    }

    /// How long a claim lives before any official of the agency may take
    /// the case.
    pub fn claim_ttl(&self) -> chrono::Duration {
        self.claim_ttl
    }
}

/// Who acts, and from where: what an access record names.
pub struct Acting<'a> {
    pub who: &'a Principal,
    pub client_address: String,
}

impl Acting<'_> {
    /// The access record of this person reading or changing someone's case.
    pub fn access<'a>(&self, case: &case::Model, action: &'a str, purpose: &'a str) -> Access<'a> {
        Access {
            subject: case.applicant_id,
            actor: Actor::person(self.who),
            client_address: self.client_address.clone(),
            action,
            object_id: case.id.to_string(),
            purpose,
        }
    }
}

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

/// The code of what a case asks for: its service or its form.
pub fn subject_code(case: &case::Model) -> &str {
    case.service_code
        .as_deref()
        .or(case.form_code.as_deref())
        .unwrap_or_default()
}

/// Who holds a live claim on the case, and until when. A claim made before
/// claims were timed counts from the case's last change.
pub fn live_claim(
    case: &case::Model,
    ttl: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(Uuid, chrono::DateTime<chrono::Utc>)> {
    let holder = case.claimed_by?;
    let until = case.claimed_at.unwrap_or(case.updated_at) + ttl;
    (until > now).then_some((holder, until))
}
