//! Files that a process stopped between storing and recording left in the
//! media store are found and removed by the operator's sweep; files that
//! records name, and files too young to judge, stay.

use std::path::Path;
use std::time::{Duration, SystemTime};

use onestop_server::uploads::storage_key;
use onestop_server::uploads::thumbnails::thumbnail_key;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::uploads_fixtures::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const GRACE: Duration = Duration::from_secs(60 * 60);

/// Leaves a file under `key` as a stopped process would, last written
/// `age` ago.
fn leave(app: &TestApp, key: &str, bytes: &[u8], age: Duration) {
    let path = app.settings.media_dir.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    age_file(&path, age);
}

fn age_file(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

fn exists(app: &TestApp, key: &str) -> bool {
    app.settings.media_dir.join(key).is_file()
}

async fn sweep(app: &TestApp, remove: bool) -> onestop_server::uploads::orphans::Report {
    onestop_server::uploads::orphans::sweep(
        &app.state.db,
        app.state.uploads.media().as_ref(),
        GRACE,
        remove,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_photo_left_without_its_record_is_swept_and_recorded_photos_stay() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let photo = phone_jpeg(&picture(64, 32), 6);

    // A store whose old files no record names at all belongs to another
    // database: the sweep refuses to touch it.
    let strangers: Vec<String> = (0..12).map(|_| storage_key(Uuid::new_v4())).collect();
    for key in &strangers {
        leave(&app, key, &photo, 2 * DAY);
    }
    let report = sweep(&app, true).await;
    assert_eq!(report.orphans.len(), 12);
    assert!(report.refused.is_some(), "{report:?}");
    assert_eq!(report.removed, 0);
    assert!(strangers.iter().all(|key| exists(&app, key)));
    for key in &strangers {
        std::fs::remove_file(app.settings.media_dir.join(key)).unwrap();
    }

    // A recorded photo, with its thumbnail, both written long ago.
    let created = upload_one_shot(&app, &mother, "birth-certificate.jpg", photo.clone()).await;
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        thumbnail(&app, &mother, &id.to_string()).await.status(),
        StatusCode::OK
    );
    let served = download(&app, &mother, &id.to_string()).await;
    let recorded = storage_key(id);
    age_file(&app.settings.media_dir.join(&recorded), 2 * DAY);
    let recorded_thumbnail = thumbnail_key(id);
    age_file(&app.settings.media_dir.join(&recorded_thumbnail), 2 * DAY);

    // What stopped processes left: a photo named but never recorded, its
    // thumbnail, and a piece of an upload whose record is gone; and a
    // photo stored a moment ago, whose request may be recording it now.
    let orphan = Uuid::new_v4();
    let left = [
        storage_key(orphan),
        thumbnail_key(orphan),
        format!("uploads/{}/0", Uuid::new_v4().simple()),
    ];
    for key in &left {
        leave(&app, key, &photo, 2 * DAY);
    }
    let young = storage_key(Uuid::new_v4());
    leave(&app, &young, &photo, Duration::from_secs(60));

    // A dry run lists them and removes nothing.
    let listed = sweep(&app, false).await;
    let mut found = listed.orphans.clone();
    found.sort();
    let mut expected = left.to_vec();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!((listed.young, listed.removed), (1, 0));
    assert!(left.iter().all(|key| exists(&app, key)));

    let swept = sweep(&app, true).await;
    assert_eq!(swept.removed, 3, "{swept:?}");
    assert!(left.iter().all(|key| !exists(&app, key)));
    assert!(exists(&app, &young), "a file too young to judge stays");
    assert_eq!(
        download(&app, &mother, &id.to_string()).await,
        served,
        "the recorded photo is still served whole"
    );
    assert_eq!(
        thumbnail(&app, &mother, &id.to_string()).await.status(),
        StatusCode::OK
    );
    assert!(exists(&app, &recorded_thumbnail));
}
