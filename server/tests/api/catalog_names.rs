//! The names of agencies, services and forms are served from memory and
//! follow the catalog in the database: a catalog seeded by another
//! replica shows on this one after its next maintenance pass.

use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::helpers::{spawn_app, Backend};

#[tokio::test]
async fn a_renamed_agency_shows_after_the_names_are_read_again() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let agency = submission["cases"][0]["agency"].clone();
    let agency_id = agency["id"].as_str().unwrap().to_owned();
    assert!(!agency["name"].as_str().unwrap().is_empty());
    let path = format!("/v1/submissions/{}", submission["id"].as_str().unwrap());

    // Another replica seeds a catalog in which the office has a new name.
    let renamed =
        json!({ "ko": "새 이름", "en": "The Renamed Office", "vi": "Tên mới", "zh": "新名称" });
    let db = &app.state.db;
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE agencies SET names = $1 WHERE id = $2",
        [renamed.to_string().into(), agency_id.clone().into()],
    ))
    .await
    .unwrap();
    let in_english = || async {
        app.request(Method::GET, &path, Some(&mother))
            .header("accept-language", "en")
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let before = in_english().await;
    // Until then the names in memory are served.
    assert_ne!(before["cases"][0]["agency"]["name"], "The Renamed Office");
    assert!(!before["cases"][0]["agency"]["name"]
        .as_str()
        .unwrap()
        .is_empty());

    app.state.names.reload(&app.state.db).await.unwrap();
    let after = in_english().await;
    assert_eq!(after["cases"][0]["agency"]["name"], "The Renamed Office");
    app.stop().await;
}
