//! Reading cases for the apps' screens: the rows of a view in as few
//! queries as the view has kinds of rows, never one query per row. Plain
//! reads; none needs a transaction.

use std::collections::HashMap;

use onestop_model::entities::{
    attachment, case, case_attachment, case_event, decision, returned_document,
    returned_document_attachment, submission, supplement, user,
};
use sea_orm::prelude::*;
use sea_orm::{JoinType, QueryOrder, QuerySelect, RelationDef};

use crate::notification::{notification_of, NotificationView};

/// A case with the ids of its attachments.
pub struct CaseRecord {
    pub case: case::Model,
    pub attachments: Vec<Uuid>,
}

/// A submission with its cases, in the order they were asked for.
pub struct SubmissionRecord {
    pub submission: submission::Model,
    pub cases: Vec<CaseRecord>,
}

/// A document an office sent back, with the ids of its attachments.
pub struct Letter {
    pub document: returned_document::Model,
    pub attachments: Vec<Uuid>,
}

/// Everything an official sees of one case.
pub struct CaseFile {
    pub case: case::Model,
    pub applicant_name: String,
    pub attachments: Vec<attachment::Model>,
    pub decisions: Vec<decision::Model>,
    pub supplements: Vec<supplement::Model>,
    pub letters: Vec<Letter>,
    pub history: Vec<case_event::Model>,
    pub notification: NotificationView,
}

/// The submissions with their cases and the cases' attachment ids: one
/// query for the cases and their attachments together.
pub async fn submissions_with_cases(
    db: &impl ConnectionTrait,
    submissions: Vec<submission::Model>,
) -> Result<Vec<SubmissionRecord>, DbErr> {
    let mut cases = cases_of(db, submissions.iter().map(|s| s.id)).await?;
    Ok(submissions
        .into_iter()
        .map(|submission| SubmissionRecord {
            cases: cases.remove(&submission.id).unwrap_or_default(),
            submission,
        })
        .collect())
}

/// The cases of some submissions, in the order they were asked for, each
/// with its attachment ids.
async fn cases_of(
    db: &impl ConnectionTrait,
    submission_ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, Vec<CaseRecord>>, DbErr> {
    let rows = case::Entity::find()
        .join_rev(JoinType::LeftJoin, case_attachment::Relation::Case.def())
        .select_also(case_attachment::Entity)
        .filter(case::Column::SubmissionId.is_in(submission_ids))
        .order_by_asc(case::Column::CreatedAt)
        .order_by_asc(case::Column::Id)
        .order_by_asc(case_attachment::Column::AttachmentId)
        .all(db)
        .await?;
    let mut by_submission: HashMap<Uuid, Vec<CaseRecord>> = HashMap::new();
    for (case, link) in rows {
        let cases = by_submission.entry(case.submission_id).or_default();
        match cases.last_mut() {
            Some(last) if last.case.id == case.id => {}
            _ => cases.push(CaseRecord {
                case,
                attachments: Vec::new(),
            }),
        }
        if let (Some(link), Some(last)) = (link, cases.last_mut()) {
            last.attachments.push(link.attachment_id);
        }
    }
    Ok(by_submission)
}

/// One case with its attachment ids.
pub async fn case_record(
    db: &impl ConnectionTrait,
    case: case::Model,
) -> Result<CaseRecord, DbErr> {
    let attachments = attachment_ids(db, case.id).await?;
    Ok(CaseRecord { case, attachments })
}

/// The ids of a case's attachments.
pub(super) async fn attachment_ids(
    db: &impl ConnectionTrait,
    case_id: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    case_attachment::Entity::find()
        .select_only()
        .column(case_attachment::Column::AttachmentId)
        .filter(case_attachment::Column::CaseId.eq(case_id))
        .order_by_asc(case_attachment::Column::AttachmentId)
        .into_tuple()
        .all(db)
        .await
}

/// The attachments of a case, oldest first, in one query.
async fn attachments_of_case(
    db: &impl ConnectionTrait,
    case_id: Uuid,
) -> Result<Vec<attachment::Model>, DbErr> {
    let of_link: RelationDef = case_attachment::Entity::belongs_to(attachment::Entity)
        .from(case_attachment::Column::AttachmentId)
        .to(attachment::Column::Id)
        .into();
    attachment::Entity::find()
        .join_rev(JoinType::InnerJoin, of_link)
        .filter(case_attachment::Column::CaseId.eq(case_id))
        .order_by_asc(attachment::Column::CreatedAt)
        .all(db)
        .await
}

/// Letters with their attachment ids: one query for all their attachments.
pub async fn letters(
    db: &impl ConnectionTrait,
    documents: Vec<returned_document::Model>,
) -> Result<Vec<Letter>, DbErr> {
    if documents.is_empty() {
        return Ok(Vec::new());
    }
    let links = returned_document_attachment::Entity::find()
        .filter(
            returned_document_attachment::Column::DocumentId.is_in(documents.iter().map(|d| d.id)),
        )
        .all(db)
        .await?;
    let mut by_document: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for link in links {
        by_document
            .entry(link.document_id)
            .or_default()
            .push(link.attachment_id);
    }
    Ok(documents
        .into_iter()
        .map(|document| Letter {
            attachments: by_document.remove(&document.id).unwrap_or_default(),
            document,
        })
        .collect())
}

/// The letters among `ids` sent to `recipient`, by id.
pub async fn letters_to(
    db: &impl ConnectionTrait,
    recipient: Uuid,
    ids: Vec<Uuid>,
) -> Result<HashMap<Uuid, Letter>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let documents = returned_document::Entity::find()
        .filter(returned_document::Column::Id.is_in(ids))
        .filter(returned_document::Column::RecipientId.eq(recipient))
        .all(db)
        .await?;
    Ok(letters(db, documents)
        .await?
        .into_iter()
        .map(|letter| (letter.document.id, letter))
        .collect())
}

/// Everything an official sees of one case.
pub async fn case_file(db: &impl ConnectionTrait, case: case::Model) -> Result<CaseFile, DbErr> {
    let applicant_name = user::Entity::find_by_id(case.applicant_id)
        .select_only()
        .column(user::Column::DisplayName)
        .into_tuple::<String>()
        .one(db)
        .await?
        .unwrap_or_default();
    let attachments = attachments_of_case(db, case.id).await?;
    let decisions = decision::Entity::find()
        .filter(decision::Column::CaseId.eq(case.id))
        .order_by_asc(decision::Column::CreatedAt)
        .all(db)
        .await?;
    let supplements = supplement::Entity::find()
        .filter(supplement::Column::CaseId.eq(case.id))
        .order_by_asc(supplement::Column::CreatedAt)
        .all(db)
        .await?;
    let documents = returned_document::Entity::find()
        .filter(returned_document::Column::CaseId.eq(case.id))
        .order_by_asc(returned_document::Column::CreatedAt)
        .all(db)
        .await?;
    let letters = letters(db, documents).await?;
    let history = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .order_by_asc(case_event::Column::CreatedAt)
        .order_by_asc(case_event::Column::Id)
        .all(db)
        .await?;
    let notification = notification_of(db, case.id).await?;
    Ok(CaseFile {
        case,
        applicant_name,
        attachments,
        decisions,
        supplements,
        letters,
        history,
        notification,
    })
}
