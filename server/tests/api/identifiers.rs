//! Resident registration numbers: sealed at rest, never shown whole,
//! re-encrypted by key rotation.

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::{spawn_app, Backend, TestApp};

const MOTHER1_RRN: [&str; 2] = ["900101-2345678", "9001012345678"];

async fn database_dump(app: &TestApp) -> Vec<u8> {
    if app.settings.database_url.starts_with("postgres") {
        let name = app
            .settings
            .database_url
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let output = std::process::Command::new("pg_dump")
            .args(["-h", "127.0.0.1", "-U", "postgres", "--no-owner", &name])
            .output()
            .expect("pg_dump is installed with PostgreSQL");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    } else {
        let file = app
            .settings
            .database_url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend(std::fs::read(format!("{file}-wal")).unwrap_or_default());
        bytes
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn numbers_are_sealed_and_survive_rotation(app: TestApp) {
    let mother = app.login("mother1").await;
    let me: Value = app.get("/v1/me", &mother).await.json().await.unwrap();
    assert_eq!(me["rrn_masked"], "******-*****78");
    let body = serde_json::to_string(&me).unwrap();
    assert!(MOTHER1_RRN.iter().all(|rrn| !body.contains(rrn)));

    // She uses the service; nothing of it writes the number in clear.
    app.apply(&mother, &["childcare_allowance"], None).await;
    app.get("/v1/eligibility", &mother).await;
    let dump = database_dump(&app).await;
    assert!(contains(&dump, "v1.dk-"), "the number is stored, sealed");
    for rrn in MOTHER1_RRN {
        assert!(!contains(&dump, rrn), "the dump holds {rrn} in clear");
    }

    // Rotation: a new data key and, here, a new key-encrypting key.
    use onestop_model::entities::{data_key, user};
    use onestop_server::vault::Vault;
    use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter};
    let db = Database::connect(&app.settings.database_url).await.unwrap();
    let old_kek = app
        .settings
        .rrn_kek
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let new_kek = "ab".repeat(32);
    let rotating = Vault::new(("kek-2", &new_kek), Some(("kek-1", &old_kek))).unwrap();
    let count = rotating.rotate(&db).await.unwrap();
    assert_eq!(count, 2, "both demo mothers have a number");
    let keys = data_key::Entity::find().all(&db).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kek_id, "kek-2");

    // Every row opens with the new KEK alone.
    let retired = Vault::new(("kek-2", &new_kek), None).unwrap();
    for person in user::Entity::find()
        .filter(user::Column::RrnCiphertext.is_not_null())
        .all(&db)
        .await
        .unwrap()
    {
        let sealed = person.rrn_ciphertext.unwrap();
        assert!(sealed.contains(&keys[0].key_id));
        let opened = retired
            .decrypt(&db, &sealed, person.id.as_bytes())
            .await
            .unwrap();
        assert_eq!(opened.len(), 13);
    }
    // A sealed value moved to another row does not open there.
    let rows = user::Entity::find()
        .filter(user::Column::RrnCiphertext.is_not_null())
        .all(&db)
        .await
        .unwrap();
    let moved = retired
        .decrypt(
            &db,
            rows[0].rrn_ciphertext.as_ref().unwrap(),
            rows[1].id.as_bytes(),
        )
        .await;
    assert!(moved.is_err());
}

#[tokio::test]
async fn identifiers_on_postgres() {
    numbers_are_sealed_and_survive_rotation(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn identifiers_on_sqlite() {
    numbers_are_sealed_and_survive_rotation(spawn_app(Backend::Sqlite).await).await;
}
