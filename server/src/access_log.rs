//! Who looked at whose data. Every time an official opens a case or a
//! photo, or the service looks a person's facts up, a record is appended:
//! who, which agency, from where, what, why. Records form one chain per
//! person: each record's link is an HMAC-SHA-256, under a key kept outside
//! the database, over the record and the link of the one before. Someone
//! who can write to the database but does not hold the key cannot alter,
//! reorder or remove a record and make the chain hold again; removing a
//! person's newest records is found against heads exported earlier
//! ([`export_heads`]). The database also refuses updates and deletes.
//!
//! Records written before links were keyed have no key id: their link is a
//! plain SHA-256, which anyone can recompute, so they are believed only as
//! far as a seal vouches for them. On its first start with seals the server
//! seals them once ([`seal_unkeyed`]): for each person whose chain has
//! such records, the place and link of the last one, with an HMAC under the
//! key. A record without a key id beyond its person's seal, or of a person
//! without a valid seal, is a break, and so is a chain that no longer holds
//! the sealed link at the sealed place. The sealing itself is recorded (the
//! row of the nil id, with how many people were sealed), so a removed seal
//! is found and later starts seal nobody.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{SecondsFormat, Timelike, Utc};
use hmac::{Hmac, Mac};
use onestop_model::entities::{access_chain_seal, access_record};
use sea_orm::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, DatabaseBackend, DatabaseTransaction, FromQueryResult, QueryOrder, Set,
    SqlErr, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
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

#[derive(Clone)]
pub struct Access<'a> {
    pub subject: Uuid,
    pub actor: Actor,
    pub client_address: String,
    /// `case.viewed`, `attachment.viewed`, `facts.looked_up`, `case.decided`, ...
    pub action: &'a str,
    pub object_id: String,
    pub purpose: &'a str,
}

/// One key that links records, named by the id each record stores.
#[derive(Clone)]
struct ChainKey {
    id: String,
    mac: Hmac<Sha256>,
}

impl ChainKey {
    fn new(id: &str, secret: &[u8]) -> Self {
        ChainKey {
            id: id.to_owned(),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length"),
        }
    }

    fn sign(&self, message: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The keys of the chain: the one new records are linked with, and the
/// previous one while rotating (records keep the key that linked them, so
/// both must be known to verify until no record of the old key is wanted).
#[derive(Clone)]
pub struct ChainKeys {
    current: ChainKey,
    previous: Option<ChainKey>,
}

impl std::fmt::Debug for ChainKeys {
    // Key ids only: the keys themselves never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKeys")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl ChainKeys {
    /// `current` (and `previous` during a rotation) as `(id, secret)`.
    pub fn new(current: (&str, &[u8]), previous: Option<(&str, &[u8])>) -> Self {
        ChainKeys {
            current: ChainKey::new(current.0, current.1),
            previous: previous.map(|(id, secret)| ChainKey::new(id, secret)),
        }
    }

    /// The embedded default: the key is the text of a file outside the
    /// database (64 random hex digits), made on first start when `create`.
    /// The same text given as `ACCESS_LOG_KEY` is the same key.
    pub fn from_key_file(id: &str, path: &Path, create: bool) -> std::io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
                let text = hex::encode(key);
                crate::identity::write_key_file(path, text.as_bytes())?;
                text
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(std::io::Error::new(
                    error.kind(),
                    format!(
                        "ACCESS_LOG_KEY is not set and {} does not exist (the server makes it \
                         on first start)",
                        path.display()
                    ),
                ))
            }
            Err(error) => return Err(error),
        };
        let secret = text.trim();
        if secret.len() < 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds fewer than 32 bytes", path.display()),
            ));
        }
        Ok(Self::new((id, secret.as_bytes()), None))
    }

    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn get(&self, id: &str) -> Option<&ChainKey> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|key| key.id == id)
    }
}

/// The record's fields as a JSON array, which keeps their boundaries
/// unambiguous; a keyed record's key id is part of what it links.
fn canonical(record: &access_record::Model) -> String {
    let mut fields = vec![
        serde_json::json!(record.prev_hash),
        serde_json::json!(record.seq),
        serde_json::json!(record.subject_user_id),
        serde_json::json!(record.actor_id),
        serde_json::json!(record.actor_role),
        serde_json::json!(record.actor_agency_id),
        serde_json::json!(record.client_address),
        serde_json::json!(record.action),
        serde_json::json!(record.object_id),
        serde_json::json!(record.purpose),
        serde_json::json!(record
            .created_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)),
    ];
    if let Some(key_id) = &record.key_id {
        fields.push(serde_json::json!(key_id));
    }
    serde_json::Value::Array(fields).to_string()
}

/// What the record's link must be: the HMAC under the key it names, or the
/// plain SHA-256 of a record from before keyed links.
fn link_of(keys: &ChainKeys, record: &access_record::Model) -> Result<String, &'static str> {
    match &record.key_id {
        None => Ok(hex::encode(Sha256::digest(canonical(record).as_bytes()))),
        Some(id) => keys
            .get(id)
            .map(|key| key.sign(&canonical(record)))
            .ok_or("this record names a key that is not configured"),
    }
}

/// Holds one person's chain for the rest of a transaction, so records
/// made for that person at the same moment line up instead of all taking
/// the same place. SQLite's write lock, taken when a write transaction
/// begins ([`onestop_model::begin_write`]), already holds every chain;
/// PostgreSQL takes a transaction-scoped advisory lock on the person. Two
/// people whose ids fold to the same key merely wait for each other.
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

/// Appends a record to the subject's chain inside the caller's
/// transaction, so the record commits or vanishes together with what it
/// records. The chain is held ([`hold_chain`]) until that transaction
/// ends. Should the place be taken all the same (a writer that does not
/// hold the chain), only the insert is undone, through a savepoint, and the
/// record takes the next place: a failed statement would otherwise spoil
/// the caller's whole transaction on PostgreSQL.
pub async fn append(
    txn: &DatabaseTransaction,
    keys: &ChainKeys,
    access: Access<'_>,
) -> Result<access_record::Model, DbErr> {
    hold_chain(txn, access.subject).await?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (seq, prev_hash) = head_of(txn, access.subject).await?;
        let row = linked(keys, &access, seq, prev_hash);
        let savepoint = txn.begin().await?;
        let inserted = access_record::ActiveModel::from(row.clone())
            .reset_all()
            .insert(&savepoint)
            .await;
        match inserted {
            Ok(_) => {
                savepoint.commit().await?;
                metrics::counter!("access_records_total", "action" => access.action.to_owned())
                    .increment(1);
                return Ok(row);
            }
            Err(error) => {
                savepoint.rollback().await?;
                if attempts < 10
                    && matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
                {
                    continue;
                }
                return Err(error);
            }
        }
    }
}

/// The time now, to the microsecond: what every backend stores, so a time
/// that is signed reads back as it was signed.
fn now_in_microseconds() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now)
}

/// The place after a person's newest record, and that record's link.
async fn head_of(txn: &DatabaseTransaction, subject: Uuid) -> Result<(i64, String), DbErr> {
    let last = access_record::Entity::find()
        .filter(access_record::Column::SubjectUserId.eq(subject))
        .order_by_desc(access_record::Column::Seq)
        .one(txn)
        .await?;
    Ok(match last {
        Some(last) => (last.seq + 1, last.hash),
        None => (1, GENESIS.to_owned()),
    })
}

/// The record of `access` at place `seq` of its person's chain, linked
/// to `prev_hash` under the current key.
fn linked(
    keys: &ChainKeys,
    access: &Access<'_>,
    seq: i64,
    prev_hash: String,
) -> access_record::Model {
    let created_at = now_in_microseconds();
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
        key_id: Some(keys.current.id.clone()),
    };
    row.hash = keys.current.sign(&canonical(&row));
    row
}

/// Appends several records inside the caller's transaction with one
/// insert: each person's chain is held and its head read once, and the
/// records are linked in memory in the order given. Returns whether every
/// place was free; if one was taken (a writer that does not hold the
/// chain), nothing may be trusted and the caller rolls back.
async fn append_all(
    txn: &DatabaseTransaction,
    keys: &ChainKeys,
    accesses: &[&Access<'_>],
) -> Result<bool, DbErr> {
    let mut heads: HashMap<Uuid, (i64, String)> = HashMap::new();
    let mut rows = Vec::with_capacity(accesses.len());
    for access in accesses {
        let (seq, prev_hash) = match heads.remove(&access.subject) {
            Some(head) => head,
            None => {
                hold_chain(txn, access.subject).await?;
                head_of(txn, access.subject).await?
            }
        };
        let row = linked(keys, access, seq, prev_hash);
        heads.insert(access.subject, (seq + 1, row.hash.clone()));
        rows.push(row);
    }
    let count = rows.len() as u64;
    let inserted = access_record::Entity::insert_many(
        rows.into_iter()
            .map(|row| access_record::ActiveModel::from(row).reset_all()),
    )
    .on_conflict(
        OnConflict::columns([
            access_record::Column::SubjectUserId,
            access_record::Column::Seq,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    if inserted != count {
        return Ok(false);
    }
    for access in accesses {
        metrics::counter!("access_records_total", "action" => access.action.to_owned())
            .increment(1);
    }
    Ok(true)
}

/// Appends a record in a transaction of its own: for an access that
/// changes nothing else (the record is committed before the data is
/// shown).
pub async fn record(
    db: &DatabaseConnection,
    keys: &ChainKeys,
    access: Access<'_>,
) -> Result<access_record::Model, DbErr> {
    let txn = onestop_model::begin_write(db).await?;
    let row = append(&txn, keys, access).await?;
    txn.commit().await?;
    Ok(row)
}

/// Most access records that change nothing else to be written at once.
const MAX_BATCH: usize = 128;

/// Writes access records that change nothing else (an official opening a
/// case or a photo), each committed before the caller shows anything.
/// Records that arrive while a batch is being written go into the next
/// one, so many viewers share one transaction and one commit instead of
/// queueing for the database's writer one by one (group commit).
#[derive(Clone)]
pub struct Recorder {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

struct Pending {
    access: Access<'static>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Recorder {
    /// Starts the writer; it writes what is queued, then stops, once
    /// `cancel` fires.
    pub fn start(
        db: DatabaseConnection,
        keys: ChainKeys,
        cancel: tokio_util::sync::CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, waiting) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        let writer = tokio::spawn(write_batches(db, keys, waiting, cancel));
        (Recorder { queue }, writer)
    }

    /// Appends the record; returns once it is committed.
    pub async fn record(&self, access: Access<'static>) -> Result<(), DbErr> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let closed = || DbErr::Custom("the access log is not taking records".into());
        self.queue
            .send(Pending { access, done })
            .await
            .map_err(|_| closed())?;
        committed
            .await
            .map_err(|_| closed())?
            .map_err(DbErr::Custom)
    }
}

async fn write_batches(
    db: DatabaseConnection,
    keys: ChainKeys,
    mut waiting: tokio::sync::mpsc::Receiver<Pending>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            next = waiting.recv() => next,
            _ = cancel.cancelled() => {
                // Take nothing new; write what was queued, then stop.
                waiting.close();
                waiting.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // Chains are taken in one order by every writer (PostgreSQL's
        // locks), and a person's records keep the order they came in.
        batch.sort_by_key(|pending| pending.access.subject);
        let written = write_batch(&db, &keys, &batch)
            .await
            .map_err(|error| error.to_string());
        if let Err(error) = &written {
            tracing::error!(%error, records = batch.len(), "writing access records failed");
        }
        metrics::histogram!("access_record_batch_size").record(batch.len() as f64);
        for pending in batch {
            let _ = pending.done.send(written.clone());
        }
    }
}

/// Writes a batch in one transaction: one insert for all of it, or, should
/// a place be taken meanwhile, record by record in a new transaction.
async fn write_batch(
    db: &DatabaseConnection,
    keys: &ChainKeys,
    batch: &[Pending],
) -> Result<(), DbErr> {
    let accesses: Vec<&Access<'static>> = batch.iter().map(|pending| &pending.access).collect();
    let txn = onestop_model::begin_write(db).await?;
    if append_all(&txn, keys, &accesses).await? {
        return txn.commit().await;
    }
    txn.rollback().await?;
    let txn = onestop_model::begin_write(db).await?;
    for access in accesses {
        append(&txn, keys, access.clone()).await?;
    }
    txn.commit().await
}

/// A place where a chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub subject: Uuid,
    pub seq: i64,
    pub reason: &'static str,
}

/// A person's newest record: where the chain ends now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub subject: Uuid,
    pub seq: i64,
    pub link: String,
    pub key_id: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ChainReport {
    pub records: u64,
    pub people: u64,
    /// People whose chain begins with records from before keyed links,
    /// vouched for by a seal that holds.
    pub sealed_people: u64,
    /// When the records from before keyed links were sealed (also on a
    /// database that had none); `None` before the server's first start.
    pub sealed_at: Option<DateTimeUtc>,
    pub breaks: Vec<Break>,
    pub heads: Vec<ChainHead>,
}

/// Recomputes every chain (or one person's) and reports where it breaks:
/// an altered record, one re-linked without the key, one removed from the
/// middle, or one reordered.
pub async fn verify(
    db: &DatabaseConnection,
    keys: &ChainKeys,
    subject: Option<Uuid>,
) -> Result<ChainReport, DbErr> {
    walk(db, keys, subject, &[]).await
}

/// [`verify`], and every exported head checked: a person's chain must
/// still reach the exported place and hold the same link there, so
/// removing someone's newest records (which leaves a shorter chain that
/// holds) is found too.
pub async fn verify_against(
    db: &DatabaseConnection,
    keys: &ChainKeys,
    exported: &ExportedHeads,
) -> Result<ChainReport, DbErr> {
    walk(db, keys, None, &exported.heads).await
}

async fn walk(
    db: &DatabaseConnection,
    keys: &ChainKeys,
    subject: Option<Uuid>,
    exported: &[SignedHead],
) -> Result<ChainReport, DbErr> {
    let mut report = ChainReport::default();
    let mut seals_query = access_chain_seal::Entity::find();
    if let Some(subject) = subject {
        seals_query =
            seals_query.filter(access_chain_seal::Column::SubjectUserId.is_in([subject, SEALING]));
    }
    let mut seals: HashMap<Uuid, access_chain_seal::Model> = seals_query
        .all(db)
        .await?
        .into_iter()
        .map(|seal| (seal.subject_user_id, seal))
        .collect();
    let sealing = seals.remove(&SEALING);
    let era_broken = |report: &mut ChainReport, seq, reason| {
        report.breaks.push(Break {
            subject: SEALING,
            seq,
            reason,
        })
    };
    match &sealing {
        Some(sealing) => match seal_holds(keys, sealing) {
            Ok(()) => {
                report.sealed_at = Some(sealing.created_at);
                if subject.is_none() && seals.len() as i64 != sealing.seq {
                    era_broken(
                        &mut report,
                        sealing.seq,
                        "the seals are not the ones made: a seal was removed or added",
                    );
                }
            }
            Err(reason) => era_broken(&mut report, sealing.seq, reason),
        },
        None if !seals.is_empty() => era_broken(
            &mut report,
            0,
            "there are seals but no record of sealing: it was removed",
        ),
        None => {}
    }

    let mut query = access_record::Entity::find()
        .order_by_asc(access_record::Column::SubjectUserId)
        .order_by_asc(access_record::Column::Seq);
    if let Some(subject) = subject {
        query = query.filter(access_record::Column::SubjectUserId.eq(subject));
    }
    let wanted: HashMap<Uuid, &SignedHead> = exported.iter().map(|h| (h.subject, h)).collect();
    let mut reached = HashSet::new();
    let mut pages = query.paginate(db, 1000);
    // The chain being walked: its newest record so far, whether a keyed
    // record came before, and the place and link its seal vouches for.
    let mut current: Option<Walked> = None;
    let finish = |report: &mut ChainReport, last: Option<Walked>| {
        if let Some(Walked {
            record, vouched, ..
        }) = last
        {
            if let Some((seq, _)) = vouched {
                report.sealed_people += 1;
                if record.seq < seq {
                    report.breaks.push(Break {
                        subject: record.subject_user_id,
                        seq,
                        reason: "the chain ends before its seal: records were removed",
                    });
                }
            }
            report.heads.push(ChainHead {
                subject: record.subject_user_id,
                seq: record.seq,
                link: record.hash,
                key_id: record.key_id,
            });
        }
    };
    while let Some(records) = pages.fetch_and_next().await? {
        for record in records {
            report.records += 1;
            let same_person = current
                .as_ref()
                .is_some_and(|walked| walked.record.subject_user_id == record.subject_user_id);
            let (expected_seq, expected_prev, keyed_before, vouched) = if same_person {
                let walked = current.take().expect("the same person's chain");
                (
                    walked.record.seq + 1,
                    walked.record.hash,
                    walked.keyed,
                    walked.vouched,
                )
            } else {
                finish(&mut report, current.take());
                report.people += 1;
                let vouched = match seals.remove(&record.subject_user_id) {
                    Some(seal) => match seal_holds(keys, &seal) {
                        Ok(()) => Some((seal.seq, seal.link)),
                        Err(reason) => {
                            report.breaks.push(Break {
                                subject: seal.subject_user_id,
                                seq: seal.seq,
                                reason,
                            });
                            None
                        }
                    },
                    None => None,
                };
                (1, GENESIS.to_owned(), false, vouched)
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
            if record.key_id.is_none() {
                if keyed_before {
                    broken("a plain SHA-256 link after a keyed one: the chain was re-linked without the key");
                } else if vouched.as_ref().is_none_or(|(seq, _)| record.seq > *seq) {
                    broken("a plain SHA-256 link no seal vouches for: the chain was re-linked without the key");
                }
            }
            if let Some((seq, link)) = &vouched {
                if record.seq == *seq && (record.hash != *link || record.key_id.is_some()) {
                    broken("this record differs from its seal");
                }
            }
            match link_of(keys, &record) {
                Ok(link) if link == record.hash => {}
                Ok(_) => broken("this record was altered"),
                Err(reason) => broken(reason),
            }
            if let Some(head) = wanted.get(&record.subject_user_id) {
                if head.seq == record.seq {
                    reached.insert(record.subject_user_id);
                    if head.link != record.hash {
                        broken("this record differs from the exported head");
                    }
                }
            }
            let keyed = keyed_before || record.key_id.is_some();
            current = Some(Walked {
                record,
                keyed,
                vouched,
            });
        }
    }
    finish(&mut report, current.take());
    // Seals of people who have no record left at all.
    let mut unreached: Vec<access_chain_seal::Model> = seals.into_values().collect();
    unreached.sort_by_key(|seal| seal.subject_user_id);
    for seal in unreached {
        report.breaks.push(Break {
            subject: seal.subject_user_id,
            seq: seal.seq,
            reason: match seal_holds(keys, &seal) {
                Ok(()) => "the chain ends before its seal: records were removed",
                Err(reason) => reason,
            },
        });
    }
    for head in exported {
        if !reached.contains(&head.subject) && subject.is_none_or(|s| s == head.subject) {
            report.breaks.push(Break {
                subject: head.subject,
                seq: head.seq,
                reason: "the chain ends before its exported head: records were removed",
            });
        }
    }
    Ok(report)
}

/// One person's chain as far as it has been walked.
struct Walked {
    record: access_record::Model,
    keyed: bool,
    vouched: Option<(i64, String)>,
}

/// Format tag of what a seal's MAC covers.
const SEAL_FORMAT: &str = "onestop-access-seal/1";

/// The id under which the sealing itself is recorded; no person has it.
pub const SEALING: Uuid = Uuid::nil();

fn seal_message(subject: Uuid, seq: i64, link: &str, created_at: &DateTimeUtc) -> String {
    serde_json::json!([
        SEAL_FORMAT,
        subject,
        seq,
        link,
        created_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    ])
    .to_string()
}

fn make_seal(
    keys: &ChainKeys,
    subject: Uuid,
    seq: i64,
    link: String,
    created_at: DateTimeUtc,
) -> access_chain_seal::ActiveModel {
    let key = &keys.current;
    access_chain_seal::ActiveModel {
        subject_user_id: Set(subject),
        seq: Set(seq),
        mac: Set(key.sign(&seal_message(subject, seq, &link, &created_at))),
        link: Set(link),
        key_id: Set(key.id.clone()),
        created_at: Set(created_at),
    }
}

fn seal_holds(keys: &ChainKeys, seal: &access_chain_seal::Model) -> Result<(), &'static str> {
    let key = keys
        .get(&seal.key_id)
        .ok_or("this seal names a key that is not configured")?;
    let message = seal_message(seal.subject_user_id, seal.seq, &seal.link, &seal.created_at);
    if key.sign(&message) == seal.mac {
        Ok(())
    } else {
        Err("this seal does not hold: it was altered or made without the key")
    }
}

/// What [`seal_unkeyed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// Sealed on an earlier start (or by another replica starting now).
    AlreadySealed,
    /// Sealed now: the records from before keyed links of this many people.
    Sealed(u64),
    /// There are seals but no record of sealing: nothing is sealed again,
    /// since that would vouch for whatever the records say now.
    RecordOfSealingMissing,
}

/// The last record from before keyed links of one person.
#[derive(FromQueryResult)]
struct LastUnkeyed {
    subject_user_id: Uuid,
    seq: i64,
    hash: String,
}

/// Seals every person's records from before keyed links, once per
/// database: the place and link of each person's last record without a
/// key id, with an HMAC under the current key, and a record of the sealing
/// (which is made on a database without such records too). Every later call
/// is one look-up by primary key and seals nobody, so records written
/// without the key later, or a removed seal, are never vouched for.
/// Replicas starting together take turns (the write lock on SQLite, an
/// advisory lock on PostgreSQL) and insert only what is absent.
pub async fn seal_unkeyed(db: &DatabaseConnection, keys: &ChainKeys) -> Result<Sealing, DbErr> {
    let sealed = access_chain_seal::Entity::find_by_id(SEALING);
    if sealed.clone().one(db).await?.is_some() {
        return Ok(Sealing::AlreadySealed);
    }
    let txn = onestop_model::begin_write(db).await?;
    hold_chain(&txn, SEALING).await?;
    if sealed.one(&txn).await?.is_some() {
        return Ok(Sealing::AlreadySealed);
    }
    if access_chain_seal::Entity::find().one(&txn).await?.is_some() {
        return Ok(Sealing::RecordOfSealingMissing);
    }
    let last = LastUnkeyed::find_by_statement(Statement::from_string(
        txn.get_database_backend(),
        "SELECT r.subject_user_id, r.seq, r.hash FROM access_records r \
         WHERE r.key_id IS NULL AND NOT EXISTS (SELECT 1 FROM access_records n \
         WHERE n.subject_user_id = r.subject_user_id AND n.key_id IS NULL AND n.seq > r.seq)",
    ))
    .all(&txn)
    .await?;
    let created_at = now_in_microseconds();
    let people = last.len() as u64;
    let seals = last
        .into_iter()
        .map(|last| make_seal(keys, last.subject_user_id, last.seq, last.hash, created_at))
        .chain(std::iter::once(make_seal(
            keys,
            SEALING,
            people as i64,
            "sealing".to_owned(),
            created_at,
        )))
        .collect::<Vec<_>>();
    for batch in seals.chunks(500) {
        access_chain_seal::Entity::insert_many(batch.iter().cloned())
            .on_conflict(
                OnConflict::column(access_chain_seal::Column::SubjectUserId)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(Sealing::Sealed(people))
}

/// Format tag of an exported heads file and of what its MACs cover.
const HEADS_FORMAT: &str = "onestop-access-heads/1";

/// One person's chain head as exported, signed so the file cannot be
/// edited either.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub subject: Uuid,
    pub seq: i64,
    pub link: String,
    pub mac: String,
}

/// Every person's chain head at one moment, for an auditor to keep outside
/// the database: `mac` covers the whole list (so no person can be dropped
/// from it), each head's own `mac` that head alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportedHeads {
    pub format: String,
    pub exported_at: DateTimeUtc,
    /// The chain key that signed the file.
    pub key_id: String,
    pub heads: Vec<SignedHead>,
    pub mac: String,
}

fn head_message(subject: Uuid, seq: i64, link: &str) -> String {
    serde_json::json!([HEADS_FORMAT, subject, seq, link]).to_string()
}

fn heads_message(exported_at: &DateTimeUtc, key_id: &str, heads: &[SignedHead]) -> String {
    let macs: Vec<&str> = heads.iter().map(|h| h.mac.as_str()).collect();
    serde_json::json!([
        HEADS_FORMAT,
        exported_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        key_id,
        macs
    ])
    .to_string()
}

impl ExportedHeads {
    /// Signs the heads of a verified walk with the current key.
    pub fn sign(keys: &ChainKeys, heads: &[ChainHead]) -> Self {
        let key = &keys.current;
        let heads: Vec<SignedHead> = heads
            .iter()
            .map(|head| SignedHead {
                subject: head.subject,
                seq: head.seq,
                link: head.link.clone(),
                mac: key.sign(&head_message(head.subject, head.seq, &head.link)),
            })
            .collect();
        let exported_at = now_in_microseconds();
        ExportedHeads {
            format: HEADS_FORMAT.to_owned(),
            mac: key.sign(&heads_message(&exported_at, &key.id, &heads)),
            exported_at,
            key_id: key.id.clone(),
            heads,
        }
    }

    /// Reads a heads file and checks its signatures; an edited file is
    /// refused rather than trusted.
    pub fn open(text: &str, keys: &ChainKeys) -> Result<Self, String> {
        let exported: ExportedHeads =
            serde_json::from_str(text).map_err(|e| format!("not a heads file: {e}"))?;
        if exported.format != HEADS_FORMAT {
            return Err(format!("not a heads file of format {HEADS_FORMAT}"));
        }
        let key = keys.get(&exported.key_id).ok_or_else(|| {
            format!(
                "the heads were signed with key {}, which is not configured",
                exported.key_id
            )
        })?;
        let whole = heads_message(&exported.exported_at, &exported.key_id, &exported.heads);
        if key.sign(&whole) != exported.mac {
            return Err("the heads file was altered: its signature does not hold".into());
        }
        if let Some(head) = exported
            .heads
            .iter()
            .find(|h| key.sign(&head_message(h.subject, h.seq, &h.link)) != h.mac)
        {
            return Err(format!(
                "the head of person {} was altered: its signature does not hold",
                head.subject
            ));
        }
        Ok(exported)
    }
}

/// Verifies every chain and, when all hold, signs their heads for an
/// auditor to keep. A broken chain is not signed: its report comes back
/// instead.
pub async fn export_heads(
    db: &DatabaseConnection,
    keys: &ChainKeys,
) -> Result<Result<ExportedHeads, ChainReport>, DbErr> {
    let report = verify(db, keys, None).await?;
    if !report.breaks.is_empty() {
        return Ok(Err(report));
    }
    Ok(Ok(ExportedHeads::sign(keys, &report.heads)))
}
