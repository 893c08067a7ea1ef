//! An official's transitions: claim or take over a case, decide it (or
//! ask for more), send a document back. Each commits with its history row
//! and the access record of the official who read the case to do it.

use chrono::Utc;
use onestop_model::entities::{case, decision, returned_document, returned_document_attachment};
use onestop_model::{CaseStatus, EventKind};
use sea_orm::prelude::*;
use sea_orm::ActiveValue::Set;

use super::change::{Change, Guard, News};
use super::reading::Letter;
use super::{check_attachments, if_match_holds, live_claim, subject_code, Acting, Cases};
use crate::access::agency_case;
use crate::access_log;
use crate::error::ApiError;

/// Longest reason an official may give.
const MAX_REASON: usize = 2000;

/// An official's decision on a case.
pub struct Verdict {
    /// `approved`, `rejected` or `info_requested`.
    pub status: CaseStatus,
    /// Why; the applicant reads it.
    pub reason: String,
}

impl Verdict {
    /// A decision as asked for, checked: rejecting and asking for more
    /// need a reason.
    pub fn new(status: CaseStatus, reason: &str) -> Result<Self, ApiError> {
        let reason = reason.trim().to_owned();
        if reason.chars().count() > MAX_REASON {
            return Err(ApiError::Validation(format!(
                "the reason is longer than {MAX_REASON} characters"
            )));
        }
        if status != CaseStatus::Approved && reason.is_empty() {
            return Err(ApiError::Validation(
                "say why: a reason is required to reject or to ask for more".into(),
            ));
        }
        Ok(Verdict { status, reason })
    }
}

/// A document an official sends to the person behind a case.
pub struct NewLetter {
    pub title: String,
    pub body: String,
    pub attachments: Vec<Uuid>,
}

impl Cases {
    /// Claims the case for the official, or takes it over from a colleague
    /// whose claim is live. The claim, its history entry and the access
    /// record commit together. Returns the case as it now is.
    pub async fn claim(
        &self,
        acting: &Acting<'_>,
        id: Uuid,
        take_over: bool,
    ) -> Result<case::Model, ApiError> {
        let official = acting.who;
        let me = official.user_id;
        // The write lock (SQLite) comes first, so what is checked below is
        // still true when the claim is written.
        let change = Change::begin(self).await?;
        let found = agency_case(change.txn(), official, id).await?;
        if !found.status.is_decidable() {
            return Err(ApiError::Conflict(format!(
                "the case is {}; only submitted or in-review cases can be claimed",
                found.status.as_str()
            )));
        }
        let taken_from = match live_claim(&found, self.claim_ttl, change.now) {
            Some((holder, until)) if holder != me => {
                if !take_over {
                    return Err(ApiError::ClaimedByAnother(until.to_rfc3339()));
                }
                Some(holder)
            }
            _ => None,
        };
        let moved = change
            .step(
                found.id,
                Guard::Version(found.version),
                CaseStatus::InReview,
                Some(me),
            )
            .await?;
        if !moved {
            return Err(ApiError::Conflict(
                "the case changed meanwhile; reload it".into(),
            ));
        }
        let action = match (taken_from, found.claimed_by) {
            (Some(from), _) => {
                change
                    .history(
                        found.id,
                        Some(official),
                        "taken_over",
                        serde_json::json!({ "from": from }),
                    )
                    .await?;
                "case.taken_over"
            }
            // Renewing one's own claim changes who holds nothing.
            (None, Some(holder)) if holder == me => "case.claimed",
            (None, lapsed) => {
                let detail = match lapsed {
                    Some(holder) => serde_json::json!({ "lapsed_claim_of": holder }),
                    None => serde_json::json!({}),
                };
                change
                    .history(found.id, Some(official), "claimed", detail)
                    .await?;
                "case.claimed"
            }
        };
        access_log::append(
            change.txn(),
            &self.access_keys,
            acting.access(&found, action, "review"),
        )
        .await?;
        change.commit().await?;
        agency_case(&self.db, official, id).await
    }

    /// Decides a case the official read at the version `if_match` names.
    /// A change made since answers 412 and writes nothing; a colleague's
    /// live claim answers 409. The decision, its history entry, what the
    /// applicant is told and the access record commit together.
    pub async fn decide(
        &self,
        acting: &Acting<'_>,
        id: Uuid,
        if_match: &str,
        verdict: Verdict,
    ) -> Result<case::Model, ApiError> {
        let official = acting.who;
        let me = official.user_id;
        let found = agency_case(&self.db, official, id).await?;
        if !found.status.is_decidable() {
            return Err(ApiError::Conflict(format!(
                "the case is {}; only submitted or in-review cases can be decided",
                found.status.as_str()
            )));
        }
        if let Some((_, until)) =
            live_claim(&found, self.claim_ttl, Utc::now()).filter(|(holder, _)| *holder != me)
        {
            return Err(ApiError::ClaimedByAnother(until.to_rfc3339()));
        }
        if !if_match_holds(if_match, &found) {
            return Err(ApiError::StaleEtag);
        }
        // The transaction starts with its write, guarded by the version just
        // read: a decision or claim made meanwhile makes it change nothing
        // (412), and SQLite takes its write lock before reading anything.
        let mut change = Change::begin(self).await?;
        let status = verdict.status;
        if !change
            .step(found.id, Guard::Version(found.version), status, Some(me))
            .await?
        {
            return Err(ApiError::StaleEtag);
        }
        let mut decided =
            serde_json::json!({ "outcome": status.as_str(), "reason": verdict.reason });
        // A colleague's claim that had lapsed passes to the decider, on record.
        if let Some(holder) = found.claimed_by.filter(|holder| *holder != me) {
            decided["lapsed_claim_of"] = serde_json::json!(holder);
        }
        change
            .history(found.id, Some(official), "decided", decided)
            .await?;
        decision::ActiveModel {
            id: Set(Uuid::now_v7()),
            case_id: Set(found.id),
            official_id: Set(me),
            outcome: Set(status),
            reason: Set(verdict.reason.clone()),
            created_at: Set(change.now),
        }
        .insert(change.txn())
        .await?;
        change
            .announce(News {
                recipient: found.applicant_id,
                kind: match status {
                    CaseStatus::InfoRequested => EventKind::CaseInfoRequested,
                    _ => EventKind::CaseDecided,
                },
                submission_id: found.submission_id,
                case_id: Some(found.id),
                status,
                subject_code: subject_code(&found).to_owned(),
                reason: (!verdict.reason.is_empty()).then_some(verdict.reason),
                document_id: None,
            })
            .await?;
        // The decision and the record of who read the case to make it
        // commit together: neither exists without the other.
        access_log::append(
            change.txn(),
            &self.access_keys,
            acting.access(&found, "case.decided", "decision"),
        )
        .await?;
        change.commit().await?;
        metrics::counter!("decisions_total", "outcome" => status.as_str()).increment(1);
        agency_case(&self.db, official, id).await
    }

    /// Sends a document back to the person behind a case: it lands in
    /// their inbox and their phones are told.
    pub async fn send_letter(
        &self,
        acting: &Acting<'_>,
        id: Uuid,
        letter: NewLetter,
    ) -> Result<Letter, ApiError> {
        let official = acting.who;
        let agency = official.official_agency()?.to_owned();
        let found = agency_case(&self.db, official, id).await?;
        check_attachments(&self.db, official.user_id, &letter.attachments).await?;
        let title = letter.title.trim().to_owned();
        if title.is_empty() {
            return Err(ApiError::Validation("the document needs a title".into()));
        }
        let mut change = Change::begin(self).await?;
        let document = returned_document::ActiveModel {
            id: Set(Uuid::now_v7()),
            case_id: Set(found.id),
            official_id: Set(official.user_id),
            agency_id: Set(agency),
            recipient_id: Set(found.applicant_id),
            title: Set(title),
            body: Set(letter.body.trim().to_owned()),
            created_at: Set(change.now),
        }
        .insert(change.txn())
        .await?;
        if !letter.attachments.is_empty() {
            returned_document_attachment::Entity::insert_many(letter.attachments.iter().map(
                |attachment_id| returned_document_attachment::ActiveModel {
                    document_id: Set(document.id),
                    attachment_id: Set(*attachment_id),
                },
            ))
            .exec(change.txn())
            .await?;
        }
        change
            .announce(News {
                recipient: found.applicant_id,
                kind: EventKind::DocumentReturned,
                submission_id: found.submission_id,
                case_id: Some(found.id),
                status: found.status,
                subject_code: subject_code(&found).to_owned(),
                reason: None,
                document_id: Some(document.id),
            })
            .await?;
        change
            .history(
                found.id,
                Some(official),
                "document_sent",
                serde_json::json!({ "document_id": document.id, "title": document.title }),
            )
            .await?;
        access_log::append(
            change.txn(),
            &self.access_keys,
            acting.access(&found, "document.sent", "correspondence"),
        )
        .await?;
        change.commit().await?;
        Ok(Letter {
            document,
            attachments: letter.attachments,
        })
    }
}
