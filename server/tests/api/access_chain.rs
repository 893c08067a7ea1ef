//! The access log as an attacker meets it: every official's look and
//! change is recorded in the same transaction, the chain is keyed so
//! someone with write access to the database cannot re-link it, records
//! from before keyed links are believed only as far as their seal, exported
//! heads find removed records, and claims hold against colleagues.

use chrono::{SecondsFormat, TimeZone, Utc};
use onestop_migrations::{Migrator, MigratorTrait};
use onestop_model::entities::{access_chain_seal, access_record};
use onestop_server::access_log::{self, Access, Actor, ExportedHeads, Sealing};
use onestop_server::Application;
use reqwest::{Method, StatusCode};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{problem, spawn_app, spawn_app_with, Backend, Options, TestApp};

/// The database as someone with write access to it, append-only triggers
/// lifted the way such a person could.
async fn attacker(app: &TestApp) -> DatabaseConnection {
    let db = Database::connect(&app.settings.database_url).await.unwrap();
    match db.get_database_backend() {
        DatabaseBackend::Postgres => db
            .execute_unprepared(
                "ALTER TABLE access_records DISABLE TRIGGER access_records_append_only; \
                 ALTER TABLE access_chain_seals DISABLE TRIGGER access_chain_seals_append_only;",
            )
            .await
            .unwrap(),
        _ => db
            .execute_unprepared(
                "DROP TRIGGER IF EXISTS access_records_no_update; \
                 DROP TRIGGER IF EXISTS access_records_no_delete; \
                 DROP TRIGGER IF EXISTS access_chain_seals_no_update; \
                 DROP TRIGGER IF EXISTS access_chain_seals_no_delete;",
            )
            .await
            .unwrap(),
    };
    db
}

/// Starts the server again on the same database and stops it: what a
/// restart, or another replica starting, does.
async fn restart(app: &TestApp) {
    let again = Application::build(app.settings.clone())
        .await
        .expect("the server starts again");
    again.run_until_stopped(async {}).await.unwrap();
}

async fn user_id(app: &TestApp, token: &str) -> Uuid {
    let me = app.get_json("/v1/me", token).await;
    me["id"].as_str().unwrap().parse().unwrap()
}

async fn chain_of(db: &DatabaseConnection, subject: Uuid) -> Vec<access_record::Model> {
    access_record::Entity::find()
        .filter(access_record::Column::SubjectUserId.eq(subject))
        .order_by_asc(access_record::Column::Seq)
        .all(db)
        .await
        .unwrap()
}

/// The record's fields as the chain links them.
fn canonical(record: &access_record::Model) -> String {
    let mut fields = vec![
        json!(record.prev_hash),
        json!(record.seq),
        json!(record.subject_user_id),
        json!(record.actor_id),
        json!(record.actor_role),
        json!(record.actor_agency_id),
        json!(record.client_address),
        json!(record.action),
        json!(record.object_id),
        json!(record.purpose),
        json!(record
            .created_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)),
    ];
    if let Some(key_id) = &record.key_id {
        fields.push(json!(key_id));
    }
    Value::Array(fields).to_string()
}

/// A link computed the way a record from before keyed links was: plain
/// SHA-256 over the record's fields, which anyone can recompute.
fn plain_link(record: &access_record::Model) -> String {
    hex::encode(Sha256::digest(canonical(record).as_bytes()))
}

/// An HMAC link under a key of the attacker's own.
fn forged_link(record: &access_record::Model) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7u8; 32]).unwrap();
    mac.update(canonical(record).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Edits the record at `from` and re-links it and every later one with
/// `link`, as an attacker without the key would; `key_id` is what the
/// attacker writes into the re-linked records.
async fn relink(
    db: &DatabaseConnection,
    subject: Uuid,
    from: i64,
    key_id: Option<&str>,
    link: impl Fn(&access_record::Model) -> String,
) {
    let chain = chain_of(db, subject).await;
    let mut prev = chain
        .iter()
        .find(|r| r.seq == from - 1)
        .map(|r| r.hash.clone())
        .unwrap_or_else(|| access_log::GENESIS.to_owned());
    for record in chain.into_iter().filter(|r| r.seq >= from) {
        let mut edited = record.clone();
        if edited.seq == from {
            edited.purpose = "curiosity".into();
        }
        edited.prev_hash = prev.clone();
        edited.key_id = key_id.map(str::to_owned);
        edited.hash = link(&edited);
        prev = edited.hash.clone();
        let mut row: access_record::ActiveModel = record.into();
        row.purpose = Set(edited.purpose);
        row.prev_hash = Set(edited.prev_hash);
        row.key_id = Set(edited.key_id);
        row.hash = Set(edited.hash);
        row.update(db).await.unwrap();
    }
}

/// A mother's case viewed, claimed and decided: her chain has several
/// records. Returns her id and the case.
async fn looked_at_case(app: &TestApp) -> (Uuid, String) {
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    app.review_case(&official, &case_id).await;
    let claim = app
        .post_json(&claim_path(&case_id), &official, &json!({}))
        .await;
    assert_eq!(claim.status(), StatusCode::OK);
    let etag = claim.headers()["etag"].to_str().unwrap().to_owned();
    let decided = app.decide(&official, &case_id, &etag, "approved", "").await;
    assert_eq!(decided.status(), StatusCode::OK);
    (user_id(app, &mother).await, case_id)
}

fn claim_path(case_id: &str) -> String {
    format!("/v1/review/cases/{case_id}/claim")
}

fn take_over_path(case_id: &str) -> String {
    format!("/v1/review/cases/{case_id}/take-over")
}

async fn log_actions(app: &TestApp, token: &str) -> Vec<(String, String)> {
    let log = app.get_json("/v1/me/access-log?limit=100", token).await;
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["object_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn claiming_is_in_her_access_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        // Each claim answers with the whole case: each one is a look.
        let claim = app
            .post_json(&claim_path(&case_id), &official, &json!({}))
            .await;
        assert_eq!(claim.status(), StatusCode::OK);
        let body: Value = claim.json().await.unwrap();
        assert_eq!(body["case"]["claimed_by_me"], true);
        assert!(body["case"]["claim_expires_at"].is_string());
    }
    let log = app.get_json("/v1/me/access-log", &mother).await;
    let claims: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "case.claimed")
        .collect();
    assert_eq!(claims.len(), 2, "{log}");
    assert_eq!(claims[0]["object_id"], case_id.as_str());
    assert_eq!(claims[0]["agency"]["id"], "muni-gangnam");
    assert_eq!(claims[0]["actor_role"], "official");
    assert_eq!(claims[0]["purpose"], "review");
    let report = access_log::verify(&app.state.db, &app.state.access_log, None)
        .await
        .unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.sealed_people, 0);
    assert!(report.sealed_at.is_some(), "sealed on the first start");
    app.stop().await;
}

#[tokio::test]
async fn claiming_is_in_her_access_log_on_sqlite() {
    claiming_is_in_her_access_log(Backend::Sqlite).await;
}

#[tokio::test]
async fn claiming_is_in_her_access_log_on_postgres() {
    claiming_is_in_her_access_log(Backend::Postgres).await;
}

/// A decision whose access record cannot be written is not made: the
/// record and the decision commit together or not at all.
async fn a_decision_exists_only_with_its_access_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let (_, etag) = app.review_case(&official, &case_id).await;

    // The database refuses the decision's access record, and only that.
    let db = Database::connect(&app.settings.database_url).await.unwrap();
    let refuse = match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            "CREATE FUNCTION refuse_decided() RETURNS trigger AS $$ BEGIN \
             IF NEW.action = 'case.decided' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END; $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_decided BEFORE INSERT ON access_records \
             FOR EACH ROW EXECUTE FUNCTION refuse_decided();"
        }
        _ => {
            "CREATE TRIGGER refuse_decided BEFORE INSERT ON access_records \
             WHEN NEW.action = 'case.decided' BEGIN SELECT RAISE(ABORT, 'refused'); END;"
        }
    };
    db.execute_unprepared(refuse).await.unwrap();
    let before = [
        app.count("decisions").await,
        app.count("inbox_messages").await,
        app.count("outbox").await,
        app.count("case_events").await,
    ];
    let failed = app.decide(&official, &case_id, &etag, "approved", "").await;
    problem(failed, StatusCode::INTERNAL_SERVER_ERROR).await;
    let after = [
        app.count("decisions").await,
        app.count("inbox_messages").await,
        app.count("outbox").await,
        app.count("case_events").await,
    ];
    assert_eq!(before, after, "nothing of the decision was kept");
    let (view, same_etag) = app.review_case(&official, &case_id).await;
    assert_eq!(view["case"]["status"], "submitted");
    assert_eq!(same_etag, etag);

    let lift = match db.get_database_backend() {
        DatabaseBackend::Postgres => "DROP TRIGGER refuse_decided ON access_records",
        _ => "DROP TRIGGER refuse_decided",
    };
    db.execute_unprepared(lift).await.unwrap();
    let decided = app.decide(&official, &case_id, &etag, "approved", "").await;
    assert_eq!(decided.status(), StatusCode::OK);
    let actions = log_actions(&app, &mother).await;
    assert_eq!(
        actions
            .iter()
            .filter(|(action, object)| action == "case.decided" && *object == case_id)
            .count(),
        1,
        "{actions:?}"
    );
    assert_eq!(app.count("decisions").await, before[0] + 1);
    app.stop().await;
}

#[tokio::test]
async fn a_decision_exists_only_with_its_access_record_on_sqlite() {
    a_decision_exists_only_with_its_access_record(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_decision_exists_only_with_its_access_record_on_postgres() {
    a_decision_exists_only_with_its_access_record(Backend::Postgres).await;
}

/// Someone who can write to the database edits a record and re-links the
/// chain after it without the key: every way of doing so is found.
async fn a_chain_relinked_without_the_key_is_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mother, _) = looked_at_case(&app).await;
    let keys = &app.state.access_log;
    let db = attacker(&app).await;
    let clean = access_log::verify(&db, keys, None).await.unwrap();
    assert!(clean.breaks.is_empty(), "{:?}", clean.breaks);
    let chain = chain_of(&db, mother).await;
    assert!(chain.len() >= 3, "{}", chain.len());
    assert!(chain.iter().all(|r| r.key_id.as_deref() == Some("alk-1")));
    let exported = match access_log::export_heads(&db, keys).await.unwrap() {
        Ok(exported) => exported,
        Err(report) => panic!("{:?}", report.breaks),
    };
    let middle = chain[1].seq;

    // Plain SHA-256 in place of the keyed link, key id kept.
    relink(&db, mother, middle, Some("alk-1"), plain_link).await;
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        report.breaks.iter().any(|b| b.subject == mother
            && b.seq == middle
            && b.reason == "this record was altered"),
        "{:?}",
        report.breaks
    );

    // Plain SHA-256, posing as records from before keyed links.
    relink(&db, mother, middle, None, plain_link).await;
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        report.breaks.iter().any(|b| b.subject == mother
            && b.seq == middle
            && b.reason
                .starts_with("a plain SHA-256 link after a keyed one")),
        "{:?}",
        report.breaks
    );

    // An HMAC under a key of the attacker's own.
    let forged = access_log::ChainKeys::new(("alk-1", &[7u8; 32]), None);
    let forged_exported = ExportedHeads::sign(&forged, &[]);
    assert!(
        ExportedHeads::open(&serde_json::to_string(&forged_exported).unwrap(), keys).is_err(),
        "heads signed with another key are refused"
    );
    relink(&db, mother, middle, Some("alk-1"), forged_link).await;
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        report.breaks.iter().any(|b| b.subject == mother
            && b.seq == middle
            && b.reason == "this record was altered"),
        "{:?}",
        report.breaks
    );

    // The whole chain posing as records from before keyed links: no seal
    // vouches for it, on a restart neither, nor against the exported heads.
    relink(&db, mother, 1, None, plain_link).await;
    restart(&app).await;
    for subject in [Some(mother), None] {
        let report = access_log::verify(&db, keys, subject).await.unwrap();
        let unvouched: Vec<i64> = report
            .breaks
            .iter()
            .filter(|b| b.subject == mother && b.reason.contains("no seal vouches for"))
            .map(|b| b.seq)
            .collect();
        assert_eq!(
            unvouched,
            chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
            "{:?}",
            report.breaks
        );
        assert_eq!(report.sealed_people, 0);
    }
    let report = access_log::verify_against(&db, keys, &exported)
        .await
        .unwrap();
    assert!(
        report.breaks.iter().any(
            |b| b.subject == mother && b.reason == "this record differs from the exported head"
        ),
        "{:?}",
        report.breaks
    );
    app.stop().await;
}

#[tokio::test]
async fn a_chain_relinked_without_the_key_is_found_on_sqlite() {
    a_chain_relinked_without_the_key_is_found(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_chain_relinked_without_the_key_is_found_on_postgres() {
    a_chain_relinked_without_the_key_is_found(Backend::Postgres).await;
}

/// Writes a chain of `n` records the way the server did before links were
/// keyed: no key id, plain SHA-256 links.
async fn write_unkeyed_chain(db: &DatabaseConnection, subject: Uuid, n: i64) {
    let mut prev = access_log::GENESIS.to_owned();
    for seq in 1..=n {
        let mut record = access_record::Model {
            id: Uuid::now_v7(),
            subject_user_id: subject,
            seq,
            actor_id: Some(Uuid::new_v4()),
            actor_role: "official".into(),
            actor_agency_id: Some("muni-gangnam".into()),
            client_address: "203.0.113.7".into(),
            action: "case.viewed".into(),
            object_id: Uuid::new_v4().to_string(),
            purpose: "review".into(),
            created_at: Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
                + chrono::Duration::minutes(seq),
            prev_hash: prev,
            hash: String::new(),
            key_id: None,
        };
        record.hash = plain_link(&record);
        prev = record.hash.clone();
        access_record::ActiveModel::from(record)
            .reset_all()
            .insert(db)
            .await
            .unwrap();
    }
}

async fn seal_of(db: &DatabaseConnection, subject: Uuid) -> Option<access_chain_seal::Model> {
    access_chain_seal::Entity::find_by_id(subject)
        .one(db)
        .await
        .unwrap()
}

fn has_break(report: &access_log::ChainReport, subject: Uuid, seq: i64, reason: &str) -> bool {
    report
        .breaks
        .iter()
        .any(|b| b.subject == subject && b.seq == seq && b.reason.contains(reason))
}

/// A database with records from before keyed links when the server first
/// starts with a key: they are sealed and hold; rewriting them at or past
/// the sealed place, or removing or altering a seal, is found, and a later
/// start seals nothing again.
async fn records_from_before_keyed_links_are_sealed_on_first_start(backend: Backend) {
    let (first, second, third) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let app = spawn_app_with(
        backend,
        Options {
            before_start: Some(Box::new(move |settings| {
                Box::pin(async move {
                    let db = Database::connect(&settings.database_url).await.unwrap();
                    Migrator::up(&db, None).await.unwrap();
                    write_unkeyed_chain(&db, first, 3).await;
                    write_unkeyed_chain(&db, second, 2).await;
                    write_unkeyed_chain(&db, third, 2).await;
                    db.close().await.unwrap();
                })
            })),
            ..Options::default()
        },
    )
    .await;
    let keys = &app.state.access_log;
    let db = attacker(&app).await;

    // Sealed: each person's last record from before, and the sealing.
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!((report.records, report.sealed_people), (7, 3));
    assert!(report.sealed_at.is_some());
    let seal = seal_of(&db, first).await.expect("her records are sealed");
    assert_eq!(seal.seq, 3);
    assert_eq!(seal.link, chain_of(&db, first).await[2].hash);
    assert_eq!(seal.key_id, keys.current_id());
    assert_eq!(seal_of(&db, access_log::SEALING).await.unwrap().seq, 3);

    // Keyed records follow the sealed ones; a restart seals nothing more.
    access_log::record(
        &app.state.db,
        keys,
        Access {
            subject: first,
            actor: Actor::service(),
            client_address: "127.0.0.1".into(),
            action: "facts.looked_up",
            object_id: first.to_string(),
            purpose: "eligibility",
        },
    )
    .await
    .unwrap();
    restart(&app).await;
    assert_eq!(
        access_log::seal_unkeyed(&db, keys).await.unwrap(),
        Sealing::AlreadySealed
    );
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!((report.records, report.sealed_people), (8, 3));

    // Past the sealed place: her keyed record rewritten in the old format.
    relink(&db, first, 4, None, plain_link).await;
    // At the sealed place: his last sealed record edited and re-linked.
    relink(&db, second, 2, None, plain_link).await;
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        has_break(&report, first, 4, "no seal vouches for"),
        "{:?}",
        report.breaks
    );
    assert!(
        has_break(&report, second, 2, "this record differs from its seal"),
        "{:?}",
        report.breaks
    );
    assert!(
        !report.breaks.iter().any(|b| b.subject == third),
        "{:?}",
        report.breaks
    );

    // A removed seal: none of the records it vouched for hold, and a
    // restart does not seal them again.
    let removed = seal_of(&db, third).await.unwrap();
    access_chain_seal::Entity::delete_by_id(third)
        .exec(&db)
        .await
        .unwrap();
    restart(&app).await;
    assert!(seal_of(&db, third).await.is_none(), "not sealed again");
    let report = access_log::verify(&db, keys, None).await.unwrap();
    for seq in [1, 2] {
        assert!(
            has_break(&report, third, seq, "no seal vouches for"),
            "{:?}",
            report.breaks
        );
    }
    assert!(
        has_break(&report, access_log::SEALING, 3, "a seal was removed"),
        "{:?}",
        report.breaks
    );
    let report = access_log::verify(&db, keys, Some(third)).await.unwrap();
    assert_eq!(report.breaks.len(), 2, "{:?}", report.breaks);

    // Put back altered, its MAC kept: the seal does not hold.
    let mut altered: access_chain_seal::ActiveModel = removed.clone().into();
    altered.seq = Set(1);
    altered.link = Set(chain_of(&db, third).await[0].hash.clone());
    access_chain_seal::Entity::insert(altered.reset_all())
        .exec_without_returning(&db)
        .await
        .unwrap();
    let report = access_log::verify(&db, keys, Some(third)).await.unwrap();
    assert!(
        has_break(&report, third, 1, "this seal does not hold"),
        "{:?}",
        report.breaks
    );
    assert!(
        has_break(&report, third, 2, "no seal vouches for"),
        "{:?}",
        report.breaks
    );

    // The record of sealing removed too: nothing is sealed again.
    access_chain_seal::Entity::delete_by_id(access_log::SEALING)
        .exec(&db)
        .await
        .unwrap();
    assert_eq!(
        access_log::seal_unkeyed(&db, keys).await.unwrap(),
        Sealing::RecordOfSealingMissing
    );
    restart(&app).await;
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        has_break(&report, access_log::SEALING, 0, "no record of sealing"),
        "{:?}",
        report.breaks
    );
    assert!(report.sealed_at.is_none());

    // A whole chain removed leaves its seal behind, which finds it.
    access_record::Entity::delete_many()
        .filter(access_record::Column::SubjectUserId.eq(second))
        .exec(&db)
        .await
        .unwrap();
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        has_break(&report, second, 2, "records were removed"),
        "{:?}",
        report.breaks
    );
    app.stop().await;
}

#[tokio::test]
async fn records_from_before_keyed_links_are_sealed_on_first_start_on_sqlite() {
    records_from_before_keyed_links_are_sealed_on_first_start(Backend::Sqlite).await;
}

#[tokio::test]
async fn records_from_before_keyed_links_are_sealed_on_first_start_on_postgres() {
    records_from_before_keyed_links_are_sealed_on_first_start(Backend::Postgres).await;
}

/// Replicas starting together seal once: one seals, the other finds it
/// done. Seals cannot be changed in place (the database refuses it).
#[tokio::test]
async fn replicas_starting_together_seal_once() {
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let app = spawn_app_with(
        Backend::Postgres,
        Options {
            before_start: Some(Box::new(move |settings| {
                Box::pin(async move {
                    let keys = onestop_server::app::access_log_keys_from_settings(&settings, false)
                        .unwrap();
                    let one = Database::connect(&settings.database_url).await.unwrap();
                    let other = Database::connect(&settings.database_url).await.unwrap();
                    Migrator::up(&one, None).await.unwrap();
                    write_unkeyed_chain(&one, first, 2).await;
                    write_unkeyed_chain(&one, second, 1).await;
                    let (a, b) = futures_util::future::join(
                        access_log::seal_unkeyed(&one, &keys),
                        access_log::seal_unkeyed(&other, &keys),
                    )
                    .await;
                    let mut outcomes = [a.unwrap(), b.unwrap()];
                    outcomes.sort_by_key(|o| matches!(o, Sealing::AlreadySealed));
                    assert_eq!(outcomes, [Sealing::Sealed(2), Sealing::AlreadySealed]);
                    one.close().await.unwrap();
                    other.close().await.unwrap();
                })
            })),
            ..Options::default()
        },
    )
    .await;
    let keys = &app.state.access_log;
    let db = Database::connect(&app.settings.database_url).await.unwrap();
    let report = access_log::verify(&db, keys, None).await.unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.sealed_people, 2);
    assert_eq!(
        access_chain_seal::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .len(),
        3
    );
    for statement in [
        "UPDATE access_chain_seals SET seq = 5",
        "DELETE FROM access_chain_seals",
    ] {
        assert!(
            db.execute_unprepared(statement).await.is_err(),
            "{statement}"
        );
    }
    app.stop().await;
}

/// Removing a person's newest records leaves a shorter chain that holds;
/// the heads an auditor exported earlier show it.
#[tokio::test]
async fn removing_her_newest_records_is_found_against_exported_heads() {
    let app = spawn_app(Backend::Sqlite).await;
    let (mother, _) = looked_at_case(&app).await;
    let keys = &app.state.access_log;
    let exported = access_log::export_heads(&app.state.db, keys)
        .await
        .unwrap()
        .unwrap();
    let text = serde_json::to_string_pretty(&exported).unwrap();
    let exported = ExportedHeads::open(&text, keys).unwrap();
    let head = exported
        .heads
        .iter()
        .find(|h| h.subject == mother)
        .unwrap()
        .clone();
    assert!(head.seq >= 3);
    let clean = access_log::verify_against(&app.state.db, keys, &exported)
        .await
        .unwrap();
    assert!(clean.breaks.is_empty(), "{:?}", clean.breaks);

    // A heads file edited to hide the removal is refused.
    let mut edited: Value = serde_json::from_str(&text).unwrap();
    for entry in edited["heads"].as_array_mut().unwrap() {
        if entry["subject"] == mother.to_string() {
            entry["seq"] = json!(head.seq - 2);
        }
    }
    assert!(ExportedHeads::open(&edited.to_string(), keys).is_err());
    let mut dropped: Value = serde_json::from_str(&text).unwrap();
    dropped["heads"]
        .as_array_mut()
        .unwrap()
        .retain(|entry| entry["subject"] != mother.to_string());
    assert!(ExportedHeads::open(&dropped.to_string(), keys).is_err());

    let db = attacker(&app).await;
    access_record::Entity::delete_many()
        .filter(access_record::Column::SubjectUserId.eq(mother))
        .filter(access_record::Column::Seq.gt(head.seq - 2))
        .exec(&db)
        .await
        .unwrap();
    let alone = access_log::verify(&db, keys, None).await.unwrap();
    assert!(
        alone.breaks.is_empty(),
        "a shorter chain holds by itself: {:?}",
        alone.breaks
    );
    let report = access_log::verify_against(&db, keys, &exported)
        .await
        .unwrap();
    assert_eq!(report.breaks.len(), 1, "{:?}", report.breaks);
    assert_eq!(report.breaks[0].subject, mother);
    assert_eq!(report.breaks[0].seq, head.seq);
    assert!(report.breaks[0].reason.contains("records were removed"));
    app.stop().await;
}

/// A second official of the same agency as `official.municipality`.
async fn add_colleague(app: &TestApp) {
    use onestop_model::entities::user;
    use sea_orm::IntoActiveModel;
    let db = Database::connect(&app.settings.database_url).await.unwrap();
    let colleague = user::Entity::find()
        .filter(user::Column::Username.eq("official.municipality"))
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let mut second = colleague.into_active_model().reset_all();
    second.id = Set(Uuid::new_v4());
    second.username = Set("official.municipality2".into());
    second.display_name = Set("Second Official".into());
    second.insert(&db).await.unwrap();
}

fn history_actions(view: &Value) -> Vec<String> {
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_colleague_cannot_decide_a_claimed_case_unless_taking_it_over() {
    let app = spawn_app(Backend::Sqlite).await;
    add_colleague(&app).await;
    let mother = app.login("mother1").await;
    let first = app.login("official.municipality").await;
    let second = app.login("official.municipality2").await;
    let second_id = user_id(&app, &second).await;
    let first_id = user_id(&app, &first).await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let claim = app
        .post_json(&claim_path(&case_id), &first, &json!({}))
        .await;
    assert_eq!(claim.status(), StatusCode::OK);

    // The colleague, with the case's current ETag, is refused; nothing changes.
    let (view, etag) = app.review_case(&second, &case_id).await;
    assert_eq!(view["case"]["claimed"], true);
    let decisions = app.count("decisions").await;
    let refused = problem(
        app.decide(&second, &case_id, &etag, "approved", "").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(refused["type"], "urn:onestop:problem:claimed-by-another");
    let refused = problem(
        app.post_json(&claim_path(&case_id), &second, &json!({}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(refused["type"], "urn:onestop:problem:claimed-by-another");
    assert_eq!(app.count("decisions").await, decisions);
    let (_, unchanged) = app.review_case(&second, &case_id).await;
    assert_eq!(unchanged, etag);

    // Taken over on purpose: on the case's record and in her access log.
    let taken = app
        .request(Method::POST, &take_over_path(&case_id), Some(&second))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::OK);
    let etag = taken.headers()["etag"].to_str().unwrap().to_owned();
    let taken: Value = taken.json().await.unwrap();
    assert_eq!(taken["case"]["claimed_by_me"], true);
    let event = taken["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "taken_over")
        .unwrap();
    assert_eq!(event["actor_id"], second_id.to_string());
    assert_eq!(event["detail"]["from"], first_id.to_string());
    assert!(log_actions(&app, &mother)
        .await
        .contains(&("case.taken_over".to_owned(), case_id.clone())));

    // Now the first official is the colleague.
    let (_, current) = app.review_case(&first, &case_id).await;
    let refused = problem(
        app.decide(&first, &case_id, &current, "approved", "").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(refused["type"], "urn:onestop:problem:claimed-by-another");
    let decided = app.decide(&second, &case_id, &etag, "approved", "").await;
    assert_eq!(decided.status(), StatusCode::OK);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(
        history_actions(&decided),
        ["submitted", "claimed", "taken_over", "decided"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_lapsed_claim_lets_a_colleague_decide_on_the_record() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Options {
            adjust: Some(Box::new(|settings| settings.claim_ttl_secs = 1)),
            ..Options::default()
        },
    )
    .await;
    add_colleague(&app).await;
    let mother = app.login("mother1").await;
    let first = app.login("official.municipality").await;
    let second = app.login("official.municipality2").await;
    let first_id = user_id(&app, &first).await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let claim = app
        .post_json(&claim_path(&case_id), &first, &json!({}))
        .await;
    assert_eq!(claim.status(), StatusCode::OK);
    let (_, etag) = app.review_case(&second, &case_id).await;
    problem(
        app.decide(&second, &case_id, &etag, "approved", "").await,
        StatusCode::CONFLICT,
    )
    .await;

    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (view, etag) = app.review_case(&second, &case_id).await;
    assert_eq!(view["case"]["claimed"], false, "the claim has lapsed");
    let decided = app.decide(&second, &case_id, &etag, "approved", "").await;
    assert_eq!(decided.status(), StatusCode::OK);
    let decided: Value = decided.json().await.unwrap();
    let event = decided["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "decided")
        .unwrap();
    assert_eq!(event["detail"]["lapsed_claim_of"], first_id.to_string());
    app.stop().await;
}

#[tokio::test]
async fn a_weak_if_match_never_matches() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let (_, etag) = app.review_case(&official, &case_id).await;
    let decisions = app.count("decisions").await;
    for weak in [format!("W/{etag}"), format!("\"v0\", W/{etag}")] {
        let refused = problem(
            app.decide(&official, &case_id, &weak, "approved", "").await,
            StatusCode::PRECONDITION_FAILED,
        )
        .await;
        assert_eq!(refused["type"], "urn:onestop:problem:stale-etag");
    }
    assert_eq!(app.count("decisions").await, decisions);
    let (_, unchanged) = app.review_case(&official, &case_id).await;
    assert_eq!(unchanged, etag);
    // The strong tag itself still works.
    let decided = app.decide(&official, &case_id, &etag, "approved", "").await;
    assert_eq!(decided.status(), StatusCode::OK);
    app.stop().await;
}

/// Officials opening cases at once share the access log's transactions,
/// and nothing is lost or misordered by it: every look is on the record and
/// her chain is whole, in order, and holds.
async fn looks_at_once_are_each_on_the_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let mother = app.login("mother1").await;
    let gangnam = app.login("official.municipality").await;
    let kepco = app.login("official.kepco").await;
    let submission = app
        .apply(
            &mother,
            &["childcare_allowance", "electricity_bill_cut"],
            None,
        )
        .await;
    let case_of = |service: &str| {
        submission["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == service)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (childcare, bills) = (
        case_of("childcare_allowance"),
        case_of("electricity_bill_cut"),
    );

    const LOOKS: usize = 40;
    let looks = (0..LOOKS).map(|i| {
        let (token, case) = if i % 2 == 0 {
            (&gangnam, &childcare)
        } else {
            (&kepco, &bills)
        };
        let app = &app;
        async move {
            app.get(&format!("/v1/review/cases/{case}"), token)
                .await
                .status()
        }
    });
    for status in futures_util::future::join_all(looks).await {
        assert_eq!(status, StatusCode::OK);
    }

    let subject = user_id(&app, &mother).await;
    let chain = chain_of(&app.state.db, subject).await;
    for case in [&childcare, &bills] {
        let viewed = chain
            .iter()
            .filter(|r| r.action == "case.viewed" && &r.object_id == case)
            .count();
        assert_eq!(viewed, LOOKS / 2);
    }
    let places: Vec<i64> = chain.iter().map(|r| r.seq).collect();
    assert_eq!(places, (1..=chain.len() as i64).collect::<Vec<_>>());
    let report = access_log::verify(&app.state.db, &app.state.access_log, Some(subject))
        .await
        .unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    app.stop().await;
}

#[tokio::test]
async fn looks_at_once_are_each_on_the_record_on_sqlite() {
    looks_at_once_are_each_on_the_record(Backend::Sqlite).await;
}

#[tokio::test]
async fn looks_at_once_are_each_on_the_record_on_postgres() {
    looks_at_once_are_each_on_the_record(Backend::Postgres).await;
}
