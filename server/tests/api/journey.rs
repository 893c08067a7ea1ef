//! The whole journey on real components: a mother's phone, her one-stop
//! application, two agencies deciding, pushes through FCM HTTP v1 (a
//! local server speaking the protocol, OAuth2 token exchange included).

use std::time::Duration;

use onestop_notifier::Notifier;
use onestop_test_support::FakeFcm;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_app, Backend, TestApp};

/// A notifier in-process, on the app's database and Redis keys, pushing to
/// `fcm`.
pub async fn start_notifier(app: &TestApp, fcm: &FakeFcm, redis_url: &str) -> CancellationToken {
    let settings = onestop_notifier::Settings {
        database_url: app.settings.database_url.clone(),
        redis_url: redis_url.to_owned(),
        redis_prefix: app.settings.redis_prefix.clone(),
        fcm_service_account: Some(fcm.write_service_account(&app.scratch)),
        fcm_endpoint: fcm.endpoint(),
        block_ms: 100,
        reclaim_idle_ms: 1000,
        ..onestop_notifier::Settings::default()
    };
    let notifier = Notifier::build(settings)
        .await
        .expect("the notifier starts");
    let cancel = CancellationToken::new();
    notifier.spawn(cancel.clone());
    cancel
}

const ANDROID_TOKEN: &str = "fcm-token-of-mothers-phone:APA91b-journey-0123456789";

async fn the_journey(app: TestApp) {
    let fcm = FakeFcm::start().await;
    let notifier = start_notifier(&app, &fcm, &app.settings.redis_url).await;

    // Her phone, in Vietnamese.
    let mother = app.login("mother1").await;
    let device = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "android", "push_token": ANDROID_TOKEN, "locale": "vi-VN" }),
        )
        .await;
    assert_eq!(device.status(), StatusCode::CREATED);

    // One application, with a photo, for three services of two agencies.
    let photo = app.upload_photo(&mother).await;
    app.grant_consent(&mother).await;
    let response = app
        .post_json(
            "/v1/submissions",
            &mother,
            &json!({ "services": [
                { "service": "childcare_allowance", "attachments": [photo] },
                { "service": "childbirth_subsidy" },
                { "service": "electricity_bill_cut" }
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let submission: Value = response.json().await.unwrap();
    let submission_id = submission["id"].as_str().unwrap().to_owned();
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
    let childcare = case_of("childcare_allowance");
    let subsidy = case_of("childbirth_subsidy");
    let electricity = case_of("electricity_bill_cut");

    // Both officials decide, each in their own queue.
    let municipality = app.login("official.municipality").await;
    let kepco = app.login("official.kepco").await;
    let queue = app.get_json("/v1/review/cases", &municipality).await;
    assert_eq!(queue["items"].as_array().unwrap().len(), 2);
    for (token, case, outcome, reason) in [
        (&municipality, &childcare, "approved", ""),
        (
            &municipality,
            &subsidy,
            "rejected",
            "The child was born outside the subsidy period.",
        ),
        (&kepco, &electricity, "approved", ""),
    ] {
        let (_, etag) = app.review_case(token, case).await;
        let decided = app.decide(token, case, &etag, outcome, reason).await;
        assert_eq!(decided.status(), StatusCode::OK, "{outcome} {case}");
    }

    // Exactly one push per decision, for her phone, in Vietnamese, with
    // nothing about her in it.
    fcm.wait_for_messages(3, Duration::from_secs(30)).await;
    // Give a duplicate time to show up, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = fcm.messages();
    assert_eq!(messages.len(), 3, "one push per decision: {messages:#?}");

    // The official sees that the applicant was told: her phone took the
    // push (the notifier records it right after the provider's answer).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (view, _) = app.review_case(&municipality, &childcare).await;
        let told = &view["notification"];
        if told["delivered"] == 1 {
            assert_eq!(told["pending"], 0, "{told}");
            assert_eq!(told["failed"], 0, "{told}");
            assert!(told["last_attempt_at"].is_string(), "{told}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not shown as told: {told}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut pushed_cases: Vec<String> = Vec::new();
    for message in &messages {
        assert_eq!(message["token"], ANDROID_TOKEN);
        assert_eq!(message["notification"]["title"], "Đã có kết quả");
        assert_eq!(message["data"]["kind"], "case.decided");
        pushed_cases.push(message["data"]["case_id"].as_str().unwrap().to_owned());
        let text = message.to_string();
        for personal in [
            "Trần Thị Mai",
            "mother1",
            "outside the subsidy period",
            "900101",
        ] {
            assert!(
                !text.contains(personal),
                "the push carries {personal}: {text}"
            );
        }
        assert!(message["android"]["collapse_key"].as_str().unwrap().len() > 10);
    }
    pushed_cases.sort();
    let mut decided = vec![
        childcare.replace('-', ""),
        subsidy.replace('-', ""),
        electricity.replace('-', ""),
    ];
    decided.sort();
    let mut pushed_simple: Vec<String> = pushed_cases.iter().map(|c| c.replace('-', "")).collect();
    pushed_simple.sort();
    assert_eq!(pushed_simple, decided);
    assert!(
        fcm.token_requests() >= 1,
        "the OAuth2 token exchange happened"
    );

    // Her inbox lists the decisions; her submission shows each case's status.
    let inbox: Value = app
        .request(reqwest::Method::GET, "/v1/inbox", Some(&mother))
        .header("Accept-Language", "vi")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decisions: Vec<&Value> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "case.decided")
        .collect();
    assert_eq!(decisions.len(), 3);
    let rejection = decisions.iter().find(|m| m["case_id"] == subsidy).unwrap();
    assert_eq!(rejection["title"], "Không được chấp thuận");
    assert!(rejection["body"]
        .as_str()
        .unwrap()
        .contains("outside the subsidy period"));
    let mine = app
        .get_json(&format!("/v1/submissions/{submission_id}"), &mother)
        .await;
    let status_of = |case: &str| {
        mine["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == case)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of(&childcare), "approved");
    assert_eq!(status_of(&subsidy), "rejected");
    assert_eq!(status_of(&electricity), "approved");
    notifier.cancel();
}

#[tokio::test]
async fn the_journey_on_postgres() {
    the_journey(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn the_journey_on_sqlite() {
    the_journey(spawn_app(Backend::Sqlite).await).await;
}

/// The supplement loop with its pushes: an office asks for more, the
/// mother's phone is told, she answers, the office sends a letter back and
/// her phone is told again. A withdrawn case's news is never pushed.
async fn the_supplement_loop_reaches_her_phone(app: TestApp) {
    let fcm = FakeFcm::start().await;
    let notifier = start_notifier(&app, &fcm, &app.settings.redis_url).await;
    let mother = app.login("mother1").await;
    app.post_json(
        "/v1/devices",
        &mother,
        &json!({ "platform": "android", "push_token": ANDROID_TOKEN, "locale": "en-GB" }),
    )
    .await;
    let submission = app
        .apply(
            &mother,
            &["childcare_allowance", "childbirth_subsidy"],
            None,
        )
        .await;
    let case = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let other = submission["cases"][1]["id"].as_str().unwrap().to_owned();
    let official = app.login("official.municipality").await;

    let (_, etag) = app.review_case(&official, &case).await;
    let asked = app
        .decide(
            &official,
            &case,
            &etag,
            "info_requested",
            "Please send the bankbook copy.",
        )
        .await;
    assert_eq!(asked.status(), StatusCode::OK);
    let first = fcm.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(first[0]["data"]["kind"], "case.info_requested");
    assert_eq!(first[0]["notification"]["title"], "More information needed");
    assert!(
        !first[0].to_string().contains("bankbook"),
        "the reason stays out of the push"
    );

    let answered = app
        .post_json(
            &format!("/v1/cases/{case}/supplements"),
            &mother,
            &json!({ "text": "Sent." }),
        )
        .await;
    assert_eq!(answered.status(), StatusCode::CREATED);
    let sent = app
        .post_json(
            &format!("/v1/review/cases/{case}/documents"),
            &official,
            &json!({ "title": "Receipt of your documents" }),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let messages = fcm.wait_for_messages(2, Duration::from_secs(30)).await;
    assert_eq!(messages[1]["data"]["kind"], "document.returned");
    assert_eq!(messages[1]["notification"]["title"], "A new document");

    // She withdraws the other case; a decision raced in before it changed
    // nothing for her phone afterwards: withdrawn news is not pushed.
    let withdrawn = app
        .post_json(&format!("/v1/cases/{other}/withdraw"), &mother, &json!({}))
        .await;
    assert_eq!(withdrawn.status(), StatusCode::OK);
    let (_, etag) = app.review_case(&official, &other).await;
    let too_late = app.decide(&official, &other, &etag, "approved", "").await;
    assert_eq!(too_late.status(), StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fcm.messages().len(), 2, "nothing more was pushed");
    notifier.cancel();
}

#[tokio::test]
async fn the_supplement_loop_on_postgres() {
    the_supplement_loop_reaches_her_phone(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn the_supplement_loop_on_sqlite() {
    the_supplement_loop_reaches_her_phone(spawn_app(Backend::Sqlite).await).await;
}
