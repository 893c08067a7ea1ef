//! The applicant's transitions after filing: answer a request for more
//! information, withdraw one case or a whole submission.

use std::collections::BTreeSet;

use onestop_model::entities::{case, case_attachment, submission, supplement};
use onestop_model::CaseStatus;
use sea_orm::prelude::*;
use sea_orm::ActiveValue::Set;

use super::change::{Change, Guard};
use super::reading::attachment_ids;
use super::{check_attachments, Cases};
use crate::access::{own_case, own_submission};
use crate::auth::Principal;
use crate::error::ApiError;

/// Longest answer an applicant may give.
const MAX_SUPPLEMENT_TEXT: usize = 2000;

/// An applicant's answer to a request for more information.
pub struct Answer {
    pub text: String,
    pub attachments: Vec<Uuid>,
}

impl Cases {
    /// Answers the office's request for more information: the case goes
    /// back to the office's queue, with the answer and its history entry.
    pub async fn supplement(
        &self,
        applicant: &Principal,
        id: Uuid,
        answer: Answer,
    ) -> Result<supplement::Model, ApiError> {
        let text = answer.text.trim().to_owned();
        if text.is_empty() && answer.attachments.is_empty() {
            return Err(ApiError::Validation(
                "answer with text, attachments or both".into(),
            ));
        }
        if text.chars().count() > MAX_SUPPLEMENT_TEXT {
            return Err(ApiError::Validation(format!(
                "the text is longer than {MAX_SUPPLEMENT_TEXT} characters"
            )));
        }
        let found = own_case(&self.db, applicant, id).await?;
        check_attachments(&self.db, applicant.user_id, &answer.attachments).await?;
        if found.status != CaseStatus::InfoRequested {
            return Err(ApiError::Conflict(format!(
                "the case is {}; only a case waiting for information takes a supplement",
                found.status.as_str()
            )));
        }
        let change = Change::begin(self).await?;
        if !change
            .step(
                found.id,
                Guard::Version(found.version),
                CaseStatus::Submitted,
                None,
            )
            .await?
        {
            return Err(ApiError::Conflict(
                "the case changed meanwhile; reload it".into(),
            ));
        }
        let linked: BTreeSet<Uuid> = attachment_ids(change.txn(), found.id)
            .await?
            .into_iter()
            .collect();
        let new_links: Vec<_> = answer
            .attachments
            .iter()
            .filter(|a| !linked.contains(a))
            .map(|attachment_id| case_attachment::ActiveModel {
                case_id: Set(found.id),
                attachment_id: Set(*attachment_id),
            })
            .collect();
        if !new_links.is_empty() {
            case_attachment::Entity::insert_many(new_links)
                .exec(change.txn())
                .await?;
        }
        let stored = supplement::ActiveModel {
            id: Set(Uuid::now_v7()),
            case_id: Set(found.id),
            author_id: Set(applicant.user_id),
            text: Set(text),
            attachments: Set(serde_json::json!(answer.attachments)),
            created_at: Set(change.now),
        }
        .insert(change.txn())
        .await?;
        change
            .history(
                found.id,
                Some(applicant),
                "supplemented",
                serde_json::json!({ "supplement_id": stored.id, "attachments": answer.attachments }),
            )
            .await?;
        change.commit().await?;
        Ok(stored)
    }

    /// Withdraws one case. Withdrawing again changes nothing; a decided
    /// case cannot be withdrawn. Returns the case as it now is.
    pub async fn withdraw_case(
        &self,
        applicant: &Principal,
        id: Uuid,
    ) -> Result<case::Model, ApiError> {
        let found = own_case(&self.db, applicant, id).await?;
        if !found.status.is_open() && found.status != CaseStatus::Withdrawn {
            return Err(ApiError::Conflict(format!(
                "the case is already {}",
                found.status.as_str()
            )));
        }
        if found.status.is_open() {
            let change = Change::begin(self).await?;
            withdraw(&change, applicant, &found).await?;
            change.commit().await?;
        }
        own_case(&self.db, applicant, id).await
    }

    /// Withdraws a submission: every case still open closes, each with its
    /// history entry, in one transaction. Withdrawing again changes
    /// nothing.
    pub async fn withdraw_submission(
        &self,
        applicant: &Principal,
        id: Uuid,
    ) -> Result<submission::Model, ApiError> {
        let found = own_submission(&self.db, applicant, id).await?;
        let change = Change::begin(self).await?;
        for case in change.open_cases_of(found.id).await? {
            withdraw(&change, applicant, &case).await?;
        }
        change.commit().await?;
        Ok(found)
    }
}

/// The one way a case is withdrawn: the step, then its history entry when
/// the step moved it (a case closed meanwhile stays as it is).
async fn withdraw(
    change: &Change<'_>,
    applicant: &Principal,
    case: &case::Model,
) -> Result<(), ApiError> {
    if change
        .step(case.id, Guard::Open, CaseStatus::Withdrawn, None)
        .await?
    {
        change
            .history(case.id, Some(applicant), "withdrawn", serde_json::json!({}))
            .await?;
    }
    Ok(())
}
