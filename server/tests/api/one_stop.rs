//! Eligibility by information sharing, routing, the supplement loop,
//! documents sent back, claiming, withdrawal and the access log.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, Backend, TestApp};

fn service<'a>(eligibility: &'a Value, code: &str) -> &'a Value {
    eligibility["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == code)
        .unwrap()
}

async fn eligibility_comes_from_shared_facts(app: TestApp) {
    let mother1 = app.login("mother1").await;
    let mother2 = app.login("mother2").await;

    // Without consent nothing is looked up, and the answer names the consent.
    let refused = problem(
        app.get("/v1/eligibility", &mother2).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["type"], "urn:onestop:problem:consent-required");
    assert!(refused["detail"].as_str().unwrap().contains("shared_facts"));
    let bill_cut = json!({ "services": [{ "service": "electricity_bill_cut" }] });
    let refused = problem(
        app.post_json("/v1/submissions", &mother2, &bill_cut).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["type"], "urn:onestop:problem:consent-required");

    // One child: bill cuts do not apply, and she is told why in her language.
    app.grant_consent(&mother2).await;
    let answer: Value = app
        .request(reqwest::Method::GET, "/v1/eligibility", Some(&mother2))
        .header("Accept-Language", "zh-CN")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["facts_shared"], true);
    let electricity = service(&answer, "electricity_bill_cut");
    assert_eq!(electricity["verdict"], "not_eligible");
    assert_eq!(electricity["reasons"][0], "仅限有两个及以上子女的家庭。");
    assert_eq!(
        service(&answer, "childcare_allowance")["verdict"],
        "eligible"
    );
    assert_eq!(
        service(&answer, "multicultural_visiting_service")["verdict"],
        "eligible"
    );
    assert_eq!(
        service(&answer, "childcare_allowance")["office"]["id"],
        "muni-mapo"
    );
    // Shared facts replace the certificates; the bank account copy is still needed.
    let childcare = service(&answer, "childcare_allowance");
    let skipped: Vec<&str> = childcare["documents_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    let needed: Vec<&str> = childcare["documents_needed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["birth_certificate"]);
    assert_eq!(needed, ["bank_account_copy"]);

    // Applying anyway is refused with the reason, and no case is created.
    let refused = problem(
        app.post_json("/v1/submissions", &mother2, &bill_cut).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["type"], "urn:onestop:problem:not-eligible");
    assert_eq!(app.count("cases").await, 0);

    // Two children: each public corporation gets its own case, and the
    // municipal services go to her registered municipality.
    app.grant_consent(&mother1).await;
    let response = app
        .post_json(
            "/v1/submissions",
            &mother1,
            &json!({ "services": [
                { "service": "electricity_bill_cut" }, { "service": "gas_bill_cut" },
                { "service": "district_heating_bill_cut" }, { "service": "childbirth_subsidy" }
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let submission: Value = response.json().await.unwrap();
    let mut agencies: Vec<&str> = submission["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["agency"]["id"].as_str().unwrap())
        .collect();
    agencies.sort();
    assert_eq!(agencies, ["kdhc", "kepco", "kogas", "muni-gangnam"]);

    // Each lookup is in her access log, with its purpose.
    let log = app.get_json("/v1/me/access-log", &mother1).await;
    let lookups: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "facts.looked_up")
        .collect();
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0]["purpose"], "application");
    assert_eq!(lookups[0]["actor_role"], "service");
}

#[tokio::test]
async fn eligibility_on_postgres() {
    eligibility_comes_from_shared_facts(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn eligibility_on_sqlite() {
    eligibility_comes_from_shared_facts(spawn_app(Backend::Sqlite).await).await;
}

async fn the_supplement_loop_and_documents_sent_back(app: TestApp) {
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let kepco = app.login("official.kepco").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();

    // A supplement to a case nobody asked about: 409.
    let early = app
        .post_json(
            &format!("/v1/cases/{case_id}/supplements"),
            &mother,
            &json!({ "text": "here" }),
        )
        .await;
    problem(early, StatusCode::CONFLICT).await;

    // Claimed, then more information requested.
    let claim = app
        .post_json(
            &format!("/v1/review/cases/{case_id}/claim"),
            &official,
            &json!({}),
        )
        .await;
    assert_eq!(claim.status(), StatusCode::OK);
    let etag = claim.headers()["etag"].to_str().unwrap().to_owned();
    let asked = app
        .decide(
            &official,
            &case_id,
            &etag,
            "info_requested",
            "Please send your bankbook copy.",
        )
        .await;
    assert_eq!(asked.status(), StatusCode::OK);
    let asked: Value = asked.json().await.unwrap();
    assert_eq!(asked["case"]["status"], "info_requested");

    // Another agency sees nothing of it and can do nothing with it.
    problem(
        app.post_json(
            &format!("/v1/review/cases/{case_id}/claim"),
            &kepco,
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let foreign_document = app
        .post_json(
            &format!("/v1/review/cases/{case_id}/documents"),
            &kepco,
            &json!({ "title": "Notice" }),
        )
        .await;
    problem(foreign_document, StatusCode::NOT_FOUND).await;

    // She answers with text and a photo; the case is back in the queue.
    let photo = app.upload_photo(&mother).await;
    let answered = app
        .post_json(
            &format!("/v1/cases/{case_id}/supplements"),
            &mother,
            &json!({ "text": "Attached, thank you.", "attachments": [photo] }),
        )
        .await;
    assert_eq!(answered.status(), StatusCode::CREATED);
    let mine: Value = app
        .get(
            &format!("/v1/submissions/{}", submission["id"].as_str().unwrap()),
            &mother,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["cases"][0]["status"], "submitted");
    let twice = app
        .post_json(
            &format!("/v1/cases/{case_id}/supplements"),
            &mother,
            &json!({ "text": "again" }),
        )
        .await;
    problem(twice, StatusCode::CONFLICT).await;

    // The official sees what changed, with the full history.
    let (detail, _) = app.review_case(&official, &case_id).await;
    assert_eq!(detail["supplements"][0]["text"], "Attached, thank you.");
    assert_eq!(detail["supplements"][0]["attachments"][0], photo);
    assert!(detail["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == photo));
    let actions: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["submitted", "claimed", "decided", "supplemented"]);
    let queue = app
        .get_json("/v1/review/cases?status=submitted", &official)
        .await;
    assert!(queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == case_id));

    // The office sends a letter back; it lands in her inbox with its file.
    let letter = app.upload_photo(&official).await;
    let sent = app
        .post_json(
            &format!("/v1/review/cases/{case_id}/documents"),
            &official,
            &json!({ "title": "Correction notice", "body": "Your address was corrected.", "attachments": [letter] }),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let inbox: Value = app.get("/v1/inbox", &mother).await.json().await.unwrap();
    let notice = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "document.returned")
        .unwrap();
    assert_eq!(notice["document"]["title"], "Correction notice");
    assert_eq!(notice["document"]["attachments"][0], letter);
    let letter_bytes = app.get(&format!("/v1/attachments/{letter}"), &mother).await;
    assert_eq!(letter_bytes.status(), StatusCode::OK);
    let mother2 = app.login("mother2").await;
    problem(
        app.get(&format!("/v1/attachments/{letter}"), &mother2)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn supplements_and_documents_on_postgres() {
    the_supplement_loop_and_documents_sent_back(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn supplements_and_documents_on_sqlite() {
    the_supplement_loop_and_documents_sent_back(spawn_app(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn withdrawing_one_case_leaves_the_others_and_officials_see_it() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app
        .apply(
            &mother,
            &["childcare_allowance", "breast_pump_rental"],
            None,
        )
        .await;
    let cases = submission["cases"].as_array().unwrap();
    let childcare = cases
        .iter()
        .find(|c| c["service"] == "childcare_allowance")
        .unwrap()["id"]
        .as_str()
        .unwrap();
    let pump = cases
        .iter()
        .find(|c| c["service"] == "breast_pump_rental")
        .unwrap()["id"]
        .as_str()
        .unwrap();

    let first = app
        .post_json(
            &format!("/v1/cases/{childcare}/withdraw"),
            &mother,
            &json!({}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "withdrawn");
    let again = app
        .post_json(
            &format!("/v1/cases/{childcare}/withdraw"),
            &mother,
            &json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);

    let (detail, etag) = app.review_case(&official, childcare).await;
    assert_eq!(detail["case"]["status"], "withdrawn");
    assert_eq!(
        detail["history"].as_array().unwrap().last().unwrap()["action"],
        "withdrawn"
    );
    problem(
        app.decide(&official, childcare, &etag, "approved", "")
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    let mine: Value = app
        .get(
            &format!("/v1/submissions/{}", submission["id"].as_str().unwrap()),
            &mother,
        )
        .await
        .json()
        .await
        .unwrap();
    let pump_case = mine["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == pump)
        .unwrap();
    assert_eq!(pump_case["status"], "submitted");

    let mother2 = app.login("mother2").await;
    problem(
        app.post_json(&format!("/v1/cases/{pump}/withdraw"), &mother2, &json!({}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_claimed_case_is_not_taken_by_a_second_official() {
    let app = spawn_app(Backend::Sqlite).await;
    {
        use onestop_model::entities::user;
        use sea_orm::{
            ActiveModelTrait, ColumnTrait, Database, EntityTrait, IntoActiveModel, QueryFilter, Set,
        };
        let db = Database::connect(&app.settings.database_url).await.unwrap();
        let colleague = user::Entity::find()
            .filter(user::Column::Username.eq("official.municipality"))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let mut second = colleague.into_active_model().reset_all();
        second.id = Set(uuid::Uuid::new_v4());
        second.username = Set("official.municipality2".into());
        second.display_name = Set("Second Official".into());
        second.insert(&db).await.unwrap();
    }
    let mother = app.login("mother1").await;
    let first = app.login("official.municipality").await;
    let second = app.login("official.municipality2").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap();
    let claimed = app
        .post_json(
            &format!("/v1/review/cases/{case_id}/claim"),
            &first,
            &json!({}),
        )
        .await;
    assert_eq!(claimed.status(), StatusCode::OK);
    let taken = app
        .post_json(
            &format!("/v1/review/cases/{case_id}/claim"),
            &second,
            &json!({}),
        )
        .await;
    let body = problem(taken, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("claimed"));
    let (view, _) = app.review_case(&second, case_id).await;
    assert_eq!(view["case"]["claimed"], true);
    assert_eq!(view["case"]["claimed_by_me"], false);
}

async fn every_official_access_is_in_her_log_and_tampering_shows(app: TestApp) {
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap();
    let (_, etag) = app.review_case(&official, case_id).await;
    app.review_case(&official, case_id).await;
    // Her photo, opened by the official: on the record too.
    let photo = app.upload_photo(&mother).await;
    let with_photo = app
        .apply(&mother, &["childbirth_subsidy"], Some(&photo))
        .await;
    assert_eq!(with_photo["cases"][0]["agency"]["id"], "muni-gangnam");
    let seen = app
        .get(&format!("/v1/attachments/{photo}"), &official)
        .await;
    assert_eq!(seen.status(), StatusCode::OK);
    let own_look = app.get(&format!("/v1/attachments/{photo}"), &mother).await;
    assert_eq!(own_look.status(), StatusCode::OK);
    assert_eq!(
        app.decide(&official, case_id, &etag, "approved", "")
            .await
            .status(),
        StatusCode::OK
    );

    let log = app.get_json("/v1/me/access-log", &mother).await;
    let items = log["items"].as_array().unwrap();
    let viewed = items
        .iter()
        .filter(|r| r["action"] == "case.viewed")
        .count();
    let photo_views: Vec<&Value> = items
        .iter()
        .filter(|r| r["action"] == "attachment.viewed")
        .collect();
    assert_eq!(
        photo_views.len(),
        1,
        "her own look is not someone else's access"
    );
    assert_eq!(photo_views[0]["object_id"], photo);
    assert_eq!(photo_views[0]["agency"]["id"], "muni-gangnam");
    assert_eq!(viewed, 2);
    let decided = items
        .iter()
        .find(|r| r["action"] == "case.decided")
        .unwrap();
    assert_eq!(decided["agency"]["id"], "muni-gangnam");
    assert_eq!(decided["object_id"], case_id);
    assert_eq!(decided["actor_role"], "official");
    // Nobody else's log holds her case.
    let mother2 = app.login("mother2").await;
    let other = app.get_json("/v1/me/access-log", &mother2).await;
    assert!(other["items"].as_array().unwrap().is_empty());

    // The chain holds; an altered record is detected.
    use sea_orm::{ConnectionTrait, Database, DatabaseBackend};
    let db = Database::connect(&app.settings.database_url).await.unwrap();
    let report = onestop_server::access_log::verify(&db, &app.state.access_log, None)
        .await
        .unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.records, items.len() as u64);

    // The database itself refuses edits; someone with the power to lift that
    // still cannot hide the change.
    let edit = "UPDATE access_records SET purpose = 'curiosity' WHERE action = 'case.decided'";
    assert!(
        db.execute_unprepared(edit).await.is_err(),
        "records are append-only"
    );
    match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            db.execute_unprepared(
                "ALTER TABLE access_records DISABLE TRIGGER access_records_append_only",
            )
            .await
            .unwrap();
        }
        _ => {
            db.execute_unprepared("DROP TRIGGER access_records_no_update")
                .await
                .unwrap();
        }
    }
    db.execute_unprepared(edit).await.unwrap();
    let report = onestop_server::access_log::verify(&db, &app.state.access_log, None)
        .await
        .unwrap();
    assert_eq!(report.breaks.len(), 1, "{:?}", report.breaks);
    assert_eq!(report.breaks[0].reason, "this record was altered");
}

/// Officials opening a mother's case at the same moment each get the case,
/// and each view lands in her access log, in one unbroken chain.
async fn many_views_at_once_are_each_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/review/cases/{case_id}");
    let views = futures_util::future::join_all((0..40).map(|_| app.get(&path, &official))).await;
    let statuses: Vec<StatusCode> = views.iter().map(|r| r.status()).collect();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let log = app.get_json("/v1/me/access-log?limit=100", &mother).await;
    let viewed = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "case.viewed")
        .count();
    assert_eq!(viewed, 40);
    let db = sea_orm::Database::connect(&app.settings.database_url)
        .await
        .unwrap();
    let report = onestop_server::access_log::verify(&db, &app.state.access_log, None)
        .await
        .unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
}

#[tokio::test]
async fn many_views_at_once_are_each_recorded_on_sqlite() {
    many_views_at_once_are_each_recorded(Backend::Sqlite).await;
}

#[tokio::test]
async fn many_views_at_once_are_each_recorded_on_postgres() {
    many_views_at_once_are_each_recorded(Backend::Postgres).await;
}

#[tokio::test]
async fn access_log_on_postgres() {
    every_official_access_is_in_her_log_and_tampering_shows(spawn_app(Backend::Postgres).await)
        .await;
}

#[tokio::test]
async fn access_log_on_sqlite() {
    every_official_access_is_in_her_log_and_tampering_shows(spawn_app(Backend::Sqlite).await).await;
}
