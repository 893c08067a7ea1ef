//! The names of agencies, services and forms and the texts of inbox
//! entries are served from memory and follow the catalog in the database:
//! a catalog another replica seeds shows on this one within seconds,
//! while a server whose catalog did not change never reads it again.

use std::time::Duration;

use onestop_model::catalog::Catalog;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::helpers::{spawn_app, Backend};

#[tokio::test]
async fn a_catalog_seeded_by_another_replica_shows_here_within_seconds() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let agency_id = submission["cases"][0]["agency"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/submissions/{}", submission["id"].as_str().unwrap());
    let name_in_english = || async {
        let view: Value = app
            .request(Method::GET, &path, Some(&mother))
            .header("accept-language", "en")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["cases"][0]["agency"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = name_in_english().await;
    assert!(!before.is_empty());

    // A row changed behind the catalog's back is not read again: the
    // revision did not change.
    let db = &app.state.db;
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE agencies SET names = $1 WHERE id = $2",
        [
            serde_json::json!({ "en": "Changed Behind Its Back" })
                .to_string()
                .into(),
            agency_id.clone().into(),
        ],
    ))
    .await
    .unwrap();
    assert!(!app.state.names.refresh(db).await.unwrap());
    assert_eq!(name_in_english().await, before);

    // Another replica seeds a catalog in which the office has a new name.
    let mut catalog = Catalog::embedded();
    let office = catalog
        .agencies
        .iter_mut()
        .find(|a| a.id == agency_id)
        .unwrap();
    office
        .names
        .insert("en".to_owned(), "The Renamed Office".to_owned());
    catalog.seed(db).await.unwrap();

    // This server's own watch picks it up, without being asked.
    let mut after = String::new();
    for _ in 0..100 {
        after = name_in_english().await;
        if after == "The Renamed Office" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(after, "The Renamed Office");
    app.stop().await;
}
