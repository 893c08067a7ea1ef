//! Who looked at whose data. Every time an official opens a case or a
//! photo, or the service looks a person's facts up, a record is appended:
//! who, which agency, from where, what, why. Records form one hash chain
//! per person (each holds the hash of the one before), so an altered or
//! removed record is detectable; the database refuses updates and deletes.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use onestop_model::entities::access_record;
use sea_orm::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseBackend, DatabaseTransaction, QueryOrder, SqlErr};
use sha2::{Digest, Sha256};

use crate::auth::Principal;

/// The hash before a person's first record.
pub const GENESIS: &str = "genesis";

/// Who accessed.
#[derive(Clone, Debug)]
pub struct Actor {
    pub id: Option<Uuid>,
    pub role: String,
    pub agency_id: Option<String>,
}

impl Actor {
    pub fn person(principal: &Principal) -> Self {
        Actor {
            id: Some(principal.user_id),
            role: principal.role.as_str().to_owned(),
            agency_id: principal.agency_id.clone(),
        }
    }

    /// The service itself, acting for the person (e.g. an eligibility check).
    pub fn service() -> Self {
        Actor {
            id: None,
            role: "service".to_owned(),
            agency_id: None,
        }
    }
}

pub struct Access<'a> {
    pub subject: Uuid,
    pub actor: Actor,
    pub client_address: String,
    /// `case.viewed`, `attachment.viewed`, `facts.looked_up`, `case.decided`, ...
    pub action: &'a str,
    pub object_id: String,
    pub purpose: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn digest(
    prev_hash: &str,
    seq: i64,
    subject: Uuid,
    actor_id: Option<Uuid>,
    actor_role: &str,
    actor_agency_id: Option<&str>,
    client_address: &str,
    action: &str,
    object_id: &str,
    purpose: &str,
    created_at: &DateTime<Utc>,
) -> String {
    // A JSON array keeps field boundaries unambiguous.
    let canonical = serde_json::json!([
        prev_hash,
        seq,
        subject,
        actor_id,
        actor_role,
        actor_agency_id,
        client_address,
        action,
        object_id,
        purpose,
        created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

fn hash_of(record: &access_record::Model) -> String {
    digest(
        &record.prev_hash,
        record.seq,
        record.subject_user_id,
        record.actor_id,
        &record.actor_role,
        record.actor_agency_id.as_deref(),
        &record.client_address,
        &record.action,
        &record.object_id,
        &record.purpose,
        &record.created_at,
    )
}

/// Holds one person's chain for the rest of a transaction, so records
/// made for that person at the same moment line up instead of all taking
/// the same place. SQLite's write lock, taken when the transaction begins,
/// already holds every chain; PostgreSQL takes a transaction-scoped
/// advisory lock on the person. Two people whose ids fold to the same key
/// merely wait for each other.
async fn hold_chain(txn: &DatabaseTransaction, subject: Uuid) -> Result<(), DbErr> {
    if txn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let (high, low) = subject.as_u64_pair();
    let key = (high ^ low) as i64;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({key})"))
        .await?;
    Ok(())
}

/// Appends a record to the subject's chain: the last record is read and
/// the next one written in one transaction that holds the chain
/// ([`hold_chain`]). Should a place be taken all the same (a writer that
/// does not hold the chain), the record takes the next one.
pub async fn record(
    db: &DatabaseConnection,
    access: Access<'_>,
) -> Result<access_record::Model, DbErr> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let txn = onestop_model::begin_write(db).await?;
        hold_chain(&txn, access.subject).await?;
        let last = access_record::Entity::find()
            .filter(access_record::Column::SubjectUserId.eq(access.subject))
            .order_by_desc(access_record::Column::Seq)
            .one(&txn)
            .await?;
        let (seq, prev_hash) = match &last {
            Some(last) => (last.seq + 1, last.hash.clone()),
            None => (1, GENESIS.to_owned()),
        };
        let now = Utc::now();
        // Stored timestamps keep microseconds on every backend.
        let created_at = now
            .with_nanosecond(now.nanosecond() / 1000 * 1000)
            .unwrap_or(now);
        let mut row = access_record::Model {
            id: Uuid::now_v7(),
            subject_user_id: access.subject,
            seq,
            actor_id: access.actor.id,
            actor_role: access.actor.role.clone(),
            actor_agency_id: access.actor.agency_id.clone(),
            client_address: access.client_address.clone(),
            action: access.action.to_owned(),
            object_id: access.object_id.clone(),
            purpose: access.purpose.to_owned(),
            created_at,
            prev_hash,
            hash: String::new(),
        };
        row.hash = hash_of(&row);
        let inserted = access_record::ActiveModel {
            id: Set(row.id),
            subject_user_id: Set(row.subject_user_id),
            seq: Set(row.seq),
            actor_id: Set(row.actor_id),
            actor_role: Set(row.actor_role.clone()),
            actor_agency_id: Set(row.actor_agency_id.clone()),
            client_address: Set(row.client_address.clone()),
            action: Set(row.action.clone()),
            object_id: Set(row.object_id.clone()),
            purpose: Set(row.purpose.clone()),
            created_at: Set(row.created_at),
            prev_hash: Set(row.prev_hash.clone()),
            hash: Set(row.hash.clone()),
        }
        .insert(&txn)
        .await;
        match inserted {
            Ok(_) => {
                txn.commit().await?;
                metrics::counter!("access_records_total", "action" => access.action.to_owned())
                    .increment(1);
                return Ok(row);
            }
            Err(error)
                if attempts < 10
                    && matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
            {
                continue;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A place where a chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub subject: Uuid,
    pub seq: i64,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct ChainReport {
    pub records: u64,
    pub people: u64,
    pub breaks: Vec<Break>,
}

/// Recomputes every chain (or one person's) and reports where it breaks:
/// an altered record, one removed from the middle, or one reordered.
pub async fn verify(db: &DatabaseConnection, subject: Option<Uuid>) -> Result<ChainReport, DbErr> {
    let mut query = access_record::Entity::find()
        .order_by_asc(access_record::Column::SubjectUserId)
        .order_by_asc(access_record::Column::Seq);
    if let Some(subject) = subject {
        query = query.filter(access_record::Column::SubjectUserId.eq(subject));
    }
    let mut report = ChainReport::default();
    let mut pages = query.paginate(db, 1000);
    let mut current: Option<(Uuid, i64, String)> = None;
    while let Some(records) = pages.fetch_and_next().await? {
        for record in records {
            report.records += 1;
            let (expected_seq, expected_prev) = match &current {
                Some((subject, seq, hash)) if *subject == record.subject_user_id => {
                    (seq + 1, hash.clone())
                }
                _ => {
                    report.people += 1;
                    (1, GENESIS.to_owned())
                }
            };
            let mut broken = |reason| {
                report.breaks.push(Break {
                    subject: record.subject_user_id,
                    seq: record.seq,
                    reason,
                })
            };
            if record.seq != expected_seq {
                broken("a record is missing before this one");
            } else if record.prev_hash != expected_prev {
                broken("the record before this one was altered");
            }
            if hash_of(&record) != record.hash {
                broken("this record was altered");
            }
            current = Some((record.subject_user_id, record.seq, record.hash.clone()));
        }
    }
    Ok(report)
}
