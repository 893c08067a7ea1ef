//! The S3 media store, against moto's S3 server on 127.0.0.1 (install:
//! `pip install 'moto[server]'`). Without `moto_server` on PATH this test
//! fails, so a CI that forgot it does not pass silently.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{spawn_app_with, Backend, Options};
use crate::uploads_fixtures::*;

const BUCKET: &str = "onestop-media";

/// moto's server, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "moto_server could not be started ({error}); the S3 media store is tested \
                 against it: install it with `pip install 'moto[server]'`"
            )
        });
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(&moto.endpoint).send().await.is_ok() {
            let created = client
                .put(format!("{}/{BUCKET}", moto.endpoint))
                .send()
                .await
                .unwrap();
            assert!(
                created.status().is_success(),
                "bucket: {}",
                created.status()
            );
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not answer on {}", moto.endpoint);
}

/// Keys in the bucket under `prefix`, straight from S3.
async fn keys(moto: &Moto, prefix: &str) -> Vec<String> {
    let listing = reqwest::get(format!(
        "{}/{BUCKET}?list-type=2&prefix={prefix}",
        moto.endpoint
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    listing
        .split("<Key>")
        .skip(1)
        .map(|rest| rest.split("</Key>").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn photos_and_documents_round_trip_through_s3() {
    let moto = start_moto().await;
    let endpoint = moto.endpoint.clone();
    let app = spawn_app_with(
        Backend::Sqlite,
        Options {
            max_upload_bytes: 16 * 1024 * 1024,
            adjust: Some(Box::new(move |settings| {
                settings.media_store = "s3".into();
                settings.s3_bucket = Some(BUCKET.into());
                settings.s3_endpoint = Some(endpoint);
                settings.s3_region = "us-east-1".into();
                settings.s3_access_key_id = Some(SecretString::from("testing"));
                settings.s3_secret_access_key = Some(SecretString::from("testing"));
            })),
            ..Options::default()
        },
    )
    .await;
    let ready: Value = reqwest::get(app.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["media"], true, "{ready}");
    let mother = app.login("mother1").await;

    // A phone photo, one shot: stored in the bucket without its metadata.
    let photo = phone_jpeg(&picture(200, 100), 6);
    let created = upload_one_shot(&app, &mother, "IMG_0004.jpg", photo.clone()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let served = download(&app, &mother, &id).await;
    for secret in SECRETS {
        assert!(!contains(&served, secret));
    }
    assert_eq!(exif_tags(&served), Some(vec![0x0112]));
    let stored = keys(&moto, "attachments/").await;
    assert_eq!(stored.len(), 1);
    let (mut object, _) = app.state.uploads.media().open(&stored[0]).await.unwrap();
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut raw)
        .await
        .unwrap();
    assert_eq!(raw, served, "what is in the bucket is what is served");
    assert_eq!(thumbnail(&app, &mother, &id).await.status(), StatusCode::OK);

    // The same photo resumable, in one PATCH: the bucket copies its one
    // piece to the attachment, which is byte for byte the one-shot's.
    let path = new_upload(&app, &mother, photo.len(), b"IMG_0004.jpg").await;
    let resumed = send_rest(&app, &mother, &path, &photo, 0, photo.len()).await;
    assert_eq!(download(&app, &mother, &resumed).await, served);
    assert_eq!(keys(&moto, "attachments/").await.len(), 2);
    assert!(
        keys(&moto, "uploads/").await.is_empty(),
        "its piece is gone"
    );

    // A document larger than one multipart part, one shot and resumable,
    // with a range read.
    let document = document(11 * 1024 * 1024 + 5);
    let created = upload_one_shot(&app, &mother, "accounts.pdf", document.clone()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(download(&app, &mother, &id).await, document);
    let range = app
        .request(Method::GET, &format!("/v1/attachments/{id}"), Some(&mother))
        .header("Range", "bytes=6000000-6000009")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.bytes().await.unwrap(), document[6_000_000..6_000_010]);

    let path = new_upload(&app, &mother, document.len(), b"accounts.pdf").await;
    let first = patch(&app, &mother, &path, 0, document[..3_000_000].to_vec()).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(keys(&moto, "uploads/").await.len(), 1, "a piece is stored");
    let attachment_id = send_rest(&app, &mother, &path, &document, 3_000_000, 4_000_000).await;
    assert_eq!(download(&app, &mother, &attachment_id).await, document);
    assert!(
        keys(&moto, "uploads/").await.is_empty(),
        "the pieces are gone"
    );

    // A photo a stopped process put in the bucket but never recorded is
    // swept; every recorded object stays. (S3 sets an object's time
    // itself, so the grace period is none here, once every thumbnail is
    // made.)
    assert_eq!(
        thumbnail(&app, &mother, &resumed).await.status(),
        StatusCode::OK
    );
    let orphan = format!("attachments/00/00/0000{}", "0".repeat(28));
    let mut writer = app.state.uploads.media().create(&orphan).await.unwrap();
    writer.write(&photo).await.unwrap();
    writer.commit().await.unwrap();
    let recorded = keys(&moto, "attachments/").await.len() - 1;
    let report = onestop_server::uploads::orphans::sweep(
        &app.state.db,
        app.state.uploads.media().as_ref(),
        Duration::ZERO,
        true,
    )
    .await
    .unwrap();
    assert_eq!(report.orphans, vec![orphan.clone()], "{report:?}");
    assert_eq!(report.removed, 1);
    let left = keys(&moto, "attachments/").await;
    assert_eq!(left.len(), recorded);
    assert!(!left.contains(&orphan));
    assert_eq!(download(&app, &mother, &id).await, document);
    assert_eq!(download(&app, &mother, &resumed).await, served);
}
