//! The access log as an attacker meets it: every official's look and
//! change is recorded in the same transaction, the chain is keyed so
//! someone with write access to the database cannot re-link it, exported
//! heads find removed records, and claims hold against colleagues.

use chrono::SecondsFormat;
use onestop_model::entities::access_record;
use onestop_server::access_log::{self, ExportedHeads};
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
                "ALTER TABLE access_records DISABLE TRIGGER access_records_append_only",
            )
            .await
            .unwrap(),
        _ => db
            .execute_unprepared(
                "DROP TRIGGER IF EXISTS access_records_no_update; \
                 DROP TRIGGER IF EXISTS access_records_no_delete;",
            )
            .await
            .unwrap(),
    };
    db
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
    assert_eq!(report.unkeyed_people, 0);
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

    // The whole chain posing as records from before keyed links holds by
    // itself, but not against the heads exported before.
    relink(&db, mother, 1, None, plain_link).await;
    let report = access_log::verify(&db, keys, Some(mother)).await.unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.unkeyed_people, 1);
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
