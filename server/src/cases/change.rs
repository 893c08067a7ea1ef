//! One change to cases: a write transaction that carries the guarded
//! status step, the history rows and what the person is told, and wakes
//! the outbox relay once it has committed (not before: the relay would
//! find nothing yet).

use chrono::{DateTime, Utc};
use onestop_model::entities::{case, inbox_message};
use onestop_model::{CaseStatus, EventKind, StreamEvent};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::ActiveValue::Set;
use sea_orm::{DatabaseTransaction, Iterable};
use tokio::sync::Notify;

use super::{history, Cases};
use crate::auth::Principal;
use crate::outbox;

pub(super) struct Change<'a> {
    txn: DatabaseTransaction,
    relay: &'a Notify,
    announced: bool,
    /// The time of the change, the same on every row it writes.
    pub now: DateTime<Utc>,
}

/// Which case a status step may move.
pub(super) enum Guard {
    /// Only the version that was read: a change made meanwhile makes the
    /// step move nothing.
    Version(i32),
    /// Any case still open.
    Open,
}

/// What the person behind a case is told: an inbox entry, and the event
/// that pushes it to their phones.
pub(super) struct News {
    pub recipient: Uuid,
    pub kind: EventKind,
    pub submission_id: Uuid,
    pub case_id: Option<Uuid>,
    pub status: CaseStatus,
    /// The service or form codes the entry is about, comma-separated.
    pub subject_code: String,
    pub reason: Option<String>,
    pub document_id: Option<Uuid>,
}

/// The statuses in which a case is open ([`CaseStatus::is_open`]), as
/// stored.
fn open_statuses() -> impl Iterator<Item = &'static str> {
    CaseStatus::iter()
        .filter(|status| status.is_open())
        .map(CaseStatus::as_str)
}

impl<'a> Change<'a> {
    /// Begins the write transaction (on SQLite it takes the write lock
    /// first, so what is read inside stays true until the commit).
    pub async fn begin(cases: &'a Cases) -> Result<Self, DbErr> {
        Ok(Change {
            txn: onestop_model::begin_write(&cases.db).await?,
            relay: &cases.relay,
            announced: false,
            now: Utc::now(),
        })
    }

    pub fn txn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Moves one case to `status` (a new version) if the guard holds, and
    /// gives it to `claimant` when named. Returns whether it moved.
    pub async fn step(
        &self,
        case_id: Uuid,
        guard: Guard,
        status: CaseStatus,
        claimant: Option<Uuid>,
    ) -> Result<bool, DbErr> {
        let mut update = case::Entity::update_many()
            .col_expr(case::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                case::Column::Version,
                Expr::col(case::Column::Version).add(1),
            )
            .col_expr(case::Column::UpdatedAt, Expr::value(self.now))
            .filter(case::Column::Id.eq(case_id));
        if let Some(claimant) = claimant {
            update = update
                .col_expr(case::Column::ClaimedBy, Expr::value(claimant))
                .col_expr(case::Column::ClaimedAt, Expr::value(self.now));
        }
        update = match guard {
            Guard::Version(version) => update.filter(case::Column::Version.eq(version)),
            Guard::Open => update.filter(case::Column::Status.is_in(open_statuses())),
        };
        Ok(update.exec(&self.txn).await?.rows_affected == 1)
    }

    /// The open cases of a submission, locked for this change.
    pub async fn open_cases_of(&self, submission_id: Uuid) -> Result<Vec<case::Model>, DbErr> {
        case::Entity::find()
            .filter(case::Column::SubmissionId.eq(submission_id))
            .filter(case::Column::Status.is_in(open_statuses()))
            .all(&self.txn)
            .await
    }

    /// Appends to a case's history; `actor` is `None` when the service
    /// itself acted.
    pub async fn history(
        &self,
        case_id: Uuid,
        actor: Option<&Principal>,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<(), DbErr> {
        history::record(&self.txn, actor, action, [(case_id, detail)], self.now).await
    }

    /// Appends one entry of the same actor and action to each of several
    /// cases' histories, each with its own detail, in one statement.
    pub async fn history_of_each(
        &self,
        actor: Option<&Principal>,
        action: &str,
        entries: impl IntoIterator<Item = (Uuid, serde_json::Value)>,
    ) -> Result<(), DbErr> {
        history::record(&self.txn, actor, action, entries, self.now).await
    }

    /// Tells the person: the inbox entry and the outbox event commit with
    /// the change.
    pub async fn announce(&mut self, news: News) -> Result<(), DbErr> {
        inbox_message::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(news.recipient),
            kind: Set(news.kind),
            submission_id: Set(Some(news.submission_id)),
            case_id: Set(news.case_id),
            status: Set(Some(news.status.as_str().to_owned())),
            subject_code: Set(Some(news.subject_code)),
            reason: Set(news.reason),
            created_at: Set(self.now),
            read_at: Set(None),
            document_id: Set(news.document_id),
        }
        .insert(&self.txn)
        .await?;
        outbox::record(
            &self.txn,
            &StreamEvent {
                event_id: Uuid::now_v7(),
                kind: news.kind,
                occurred_at: self.now,
                recipient_user_id: news.recipient,
                submission_id: news.submission_id,
                case_id: news.case_id,
                status: Some(news.status.as_str().to_owned()),
            },
        )
        .await?;
        self.announced = true;
        Ok(())
    }

    /// Commits, then wakes the relay if anything was announced.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await?;
        if self.announced {
            self.relay.notify_one();
        }
        Ok(())
    }
}
