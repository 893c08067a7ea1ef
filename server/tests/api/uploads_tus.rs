//! Resumable uploads (tus 1.0): interrupted transfers resume to the same
//! file, bad chunks are refused without harm, two phones cannot corrupt
//! one upload, abandoned uploads are swept away.

use bytes::Bytes;
use futures_util::StreamExt;
use onestop_model::entities::upload;
use reqwest::{Method, StatusCode};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;
use sha2::Digest;

use crate::helpers::{problem, spawn_app, Backend, TestApp};
use crate::uploads_fixtures::*;

fn upload_id(path: &str) -> uuid::Uuid {
    path.rsplit('/').next().unwrap().parse().unwrap()
}

/// Waits until a request holds (or no longer holds) the upload's lock.
async fn wait_for_lock(app: &TestApp, path: &str, held: bool) {
    for _ in 0..1000 {
        let row = upload::Entity::find_by_id(upload_id(path))
            .one(&app.state.db)
            .await
            .unwrap();
        if row.is_none_or(|r| r.lock_token.is_some() == held) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the lock of {path} never became held={held}");
}

/// A PATCH whose connection drops after `bytes` were sent, like a phone
/// entering a tunnel.
async fn interrupted_patch(
    app: &TestApp,
    token: &str,
    path: &str,
    offset: usize,
    bytes: Vec<u8>,
    checksum: Option<String>,
) {
    let (cut, cut_now) = tokio::sync::oneshot::channel::<()>();
    let sent =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(bytes)) });
    let dropped = futures_util::stream::once(async move {
        let _ = cut_now.await;
        Err(std::io::Error::other("the train entered a tunnel"))
    });
    let mut request = app
        .request(Method::PATCH, path, Some(token))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream");
    if let Some(checksum) = checksum {
        request = request.header("Upload-Checksum", checksum);
    }
    let sending = tokio::spawn(
        request
            .body(reqwest::Body::wrap_stream(sent.chain(dropped)))
            .send(),
    );
    wait_for_lock(app, path, true).await;
    cut.send(()).unwrap();
    assert!(sending.await.unwrap().is_err(), "the request was cut off");
    wait_for_lock(app, path, false).await;
}

#[tokio::test]
async fn a_file_interrupted_at_several_places_resumes_to_the_identical_attachment() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;

    // Discovery needs no token.
    let options = app
        .request(Method::OPTIONS, "/v1/uploads", None)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    let headers = options.headers();
    assert_eq!(headers["tus-resumable"], "1.0.0");
    assert_eq!(headers["tus-version"], "1.0.0");
    assert_eq!(
        headers["tus-extension"],
        "creation,checksum,termination,expiration"
    );
    assert_eq!(headers["tus-checksum-algorithm"], "sha1,sha256");
    assert_eq!(
        headers["tus-max-size"],
        app.settings.max_upload_bytes.to_string().as_str()
    );

    let file = document(700_000);
    let created = create_upload(&app, &mother, file.len(), b"final accounts.pdf").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["tus-resumable"], "1.0.0");
    assert!(created.headers().contains_key("upload-expires"));
    let path = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(path.starts_with("/v1/uploads/"));

    // A first chunk, with a checksum.
    let response = app
        .request(Method::PATCH, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header(
            "Upload-Checksum",
            format!("sha1 {}", b64(&sha1::Sha1::digest(&file[..100_000]))),
        )
        .body(file[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["upload-offset"], "100000");
    assert!(response.headers().contains_key("upload-expires"));

    // Cut off without a checksum: what arrived is kept.
    interrupted_patch(
        &app,
        &mother,
        &path,
        100_000,
        file[100_000..250_000].to_vec(),
        None,
    )
    .await;
    assert_eq!(offset_of(&app, &mother, &path).await, 250_000);
    // Cut off with a checksum: the chunk cannot be verified and goes.
    let digest = format!(
        "sha256 {}",
        b64(&sha2::Sha256::digest(&file[250_000..350_000]))
    );
    interrupted_patch(
        &app,
        &mother,
        &path,
        250_000,
        file[250_000..300_000].to_vec(),
        Some(digest),
    )
    .await;
    assert_eq!(offset_of(&app, &mother, &path).await, 250_000);
    interrupted_patch(
        &app,
        &mother,
        &path,
        250_000,
        file[250_000..283_333].to_vec(),
        None,
    )
    .await;
    let resume_at = offset_of(&app, &mother, &path).await;
    assert_eq!(resume_at, 283_333);

    let attachment_id = send_rest(&app, &mother, &path, &file, resume_at, 200_000).await;
    assert_eq!(
        download(&app, &mother, &attachment_id).await,
        file,
        "byte-identical"
    );

    // The upload tells its attachment, in HEAD and as JSON.
    let head = app
        .request(Method::HEAD, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["upload-offset"],
        file.len().to_string().as_str()
    );
    assert_eq!(
        head.headers()["upload-length"],
        file.len().to_string().as_str()
    );
    assert_eq!(
        head.headers()["upload-attachment-id"],
        attachment_id.as_str()
    );
    assert!(head.headers()["upload-metadata"]
        .to_str()
        .unwrap()
        .starts_with("filename "));
    let view: Value = app.get(&path, &mother).await.json().await.unwrap();
    assert_eq!(view["complete"], true);
    assert_eq!(view["attachment_id"], attachment_id.as_str());
    assert_eq!(view["file_name"], "final accounts.pdf");
    assert!(
        stored_files(&app, "uploads").is_empty(),
        "the pieces are gone"
    );

    // A phone photo sent in pieces becomes what a one-shot upload makes.
    let photo = phone_jpeg(&picture(300, 200), 6);
    let one_shot = upload_one_shot(&app, &mother, "IMG_0003.jpg", photo.clone()).await;
    let path = new_upload(&app, &mother, photo.len(), b"IMG_0003.jpg").await;
    let third = photo.len() / 3;
    send_patch_ok(&app, &mother, &path, 0, &photo[..third]).await;
    interrupted_patch(
        &app,
        &mother,
        &path,
        third,
        photo[third..2 * third].to_vec(),
        None,
    )
    .await;
    let at = offset_of(&app, &mother, &path).await;
    let attachment_id = send_rest(&app, &mother, &path, &photo, at, third).await;
    let served = download(&app, &mother, &attachment_id).await;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&served)),
        one_shot["sha256"].as_str().unwrap()
    );
    for secret in SECRETS {
        assert!(!contains(&served, secret));
    }

    // The same photo in one PATCH, as tus-android-client sends it, after a
    // first try cut off with a checksum: nothing of that try is kept, and
    // the photo becomes the attachment a one-shot upload makes, with no
    // staged or partial file left.
    let path = new_upload(&app, &mother, photo.len(), b"IMG_0003.jpg").await;
    let digest = format!("sha256 {}", b64(&sha2::Sha256::digest(&photo)));
    interrupted_patch(
        &app,
        &mother,
        &path,
        0,
        photo[..third].to_vec(),
        Some(digest),
    )
    .await;
    assert_eq!(offset_of(&app, &mother, &path).await, 0);
    assert!(stored_files(&app, ".partial").is_empty(), "the try is gone");
    let attachment_id = send_rest(&app, &mother, &path, &photo, 0, photo.len()).await;
    assert_eq!(download(&app, &mother, &attachment_id).await, served);
    assert!(stored_files(&app, "uploads").is_empty());
    assert!(stored_files(&app, ".partial").is_empty());
}

async fn send_patch_ok(app: &TestApp, token: &str, path: &str, offset: usize, bytes: &[u8]) {
    let response = patch(app, token, path, offset, bytes.to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_requests_and_chunks_get_clear_problems_and_change_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let stranger = app.login("mother2").await;
    let photo = jpeg_of(&picture(120, 80));

    // The protocol version is required.
    let unversioned = app
        .request(Method::POST, "/v1/uploads", Some(&mother))
        .header("Upload-Length", "100")
        .send()
        .await
        .unwrap();
    assert_eq!(unversioned.headers()["tus-version"], "1.0.0");
    assert_eq!(unversioned.headers()["tus-resumable"], "1.0.0");
    let body = problem(unversioned, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(body["type"], "urn:onestop:problem:tus-version-unsupported");
    let old = app
        .request(Method::POST, "/v1/uploads", Some(&mother))
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", "100")
        .send()
        .await
        .unwrap();
    problem(old, StatusCode::PRECONDITION_FAILED).await;

    // Creation: sizes and metadata are checked.
    let too_big = create_upload(&app, &mother, 3 * 1024 * 1024, b"big.jpg").await;
    assert_eq!(too_big.headers()["tus-resumable"], "1.0.0");
    problem(too_big, StatusCode::PAYLOAD_TOO_LARGE).await;
    problem(
        create_upload(&app, &mother, 0, b"empty.jpg").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    for (name, value) in [
        ("Upload-Length", "lots"),
        ("Upload-Metadata", "filename !!not-base64!!"),
    ] {
        let response = app
            .request(Method::POST, "/v1/uploads", Some(&mother))
            .header("Tus-Resumable", "1.0.0")
            .header(
                "Upload-Length",
                if name == "Upload-Length" { value } else { "10" },
            )
            .header(name, value)
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::BAD_REQUEST).await;
    }
    let unauthenticated = app
        .request(Method::POST, "/v1/uploads", None)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.headers()["tus-resumable"], "1.0.0");
    problem(unauthenticated, StatusCode::UNAUTHORIZED).await;

    let path = new_upload(&app, &mother, photo.len(), b"receipt.jpg").await;
    send_patch_ok(&app, &mother, &path, 0, &photo[..1000]).await;

    // Wrong offset.
    let body = problem(
        patch(&app, &mother, &path, 5, photo[5..900].to_vec()).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("1000"), "{body}");
    // A chunk that does not match its checksum is discarded.
    let mismatch = app
        .request(Method::PATCH, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "1000")
        .header("Content-Type", "application/offset+octet-stream")
        .header(
            "Upload-Checksum",
            format!("sha1 {}", b64(&sha1::Sha1::digest(b"other bytes"))),
        )
        .body(photo[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    let body = problem(mismatch, StatusCode::from_u16(460).unwrap()).await;
    assert_eq!(body["type"], "urn:onestop:problem:checksum-mismatch");
    let unknown_algorithm = app
        .request(Method::PATCH, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "1000")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", "md5 XUFAKrxLKna5cZ2REBfFkg==")
        .body(photo[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    problem(unknown_algorithm, StatusCode::BAD_REQUEST).await;
    // Wrong content type, and more bytes than the upload's length.
    let wrong_type = app
        .request(Method::PATCH, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "1000")
        .header("Content-Type", "image/jpeg")
        .body(photo[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    problem(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let mut too_long = photo[1000..].to_vec();
    too_long.extend_from_slice(b"and then some");
    problem(
        patch(&app, &mother, &path, 1000, too_long).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(offset_of(&app, &mother, &path).await, 1000, "nothing moved");

    // Another user's upload does not exist for them.
    problem(
        patch(&app, &stranger, &path, 1000, photo[1000..].to_vec()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for method in [Method::HEAD, Method::GET, Method::DELETE] {
        let response = app
            .request(method.clone(), &path, Some(&stranger))
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
    }

    // A client that can only POST overrides the method.
    let overridden = app
        .request(Method::POST, &path, Some(&mother))
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "1000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(photo[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(overridden.status(), StatusCode::NO_CONTENT);
    // One staged file; the filter's state between pieces is in the
    // database.
    assert_eq!(stored_files(&app, "uploads").len(), 1);

    // Termination deletes the upload and its pieces.
    let deleted = app
        .request(Method::DELETE, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(
        patch(&app, &mother, &path, 2000, photo[2000..].to_vec()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(stored_files(&app, "uploads").is_empty());

    // Bytes that are no photo are refused at the first chunk, whatever
    // the name, and the upload goes.
    let text = b"Dear office, this text file pretends to be a photo of a receipt. ".repeat(20);
    let path = new_upload(&app, &mother, text.len(), b"receipt.jpg").await;
    problem(
        patch(&app, &mother, &path, 0, text[..200].to_vec()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let gone = app
        .request(Method::HEAD, &path, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    // A photo claiming huge dimensions is refused when complete.
    let bomb = png_claiming(50_000, 50_000);
    let path = new_upload(&app, &mother, bomb.len(), b"bomb.png").await;
    let body = problem(
        patch(&app, &mother, &path, 0, bomb).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("pixels"));

    assert_eq!(app.count("attachments").await, 0);
    assert_eq!(app.media_files(), 0, "nothing is left behind");
}

#[tokio::test]
async fn two_phones_resuming_one_upload_at_once_cannot_corrupt_it() {
    two_phones_resuming_one_upload_at_once(Backend::Postgres).await;
}

#[tokio::test]
async fn two_phones_resuming_one_upload_at_once_cannot_corrupt_it_on_sqlite() {
    two_phones_resuming_one_upload_at_once(Backend::Sqlite).await;
}

async fn two_phones_resuming_one_upload_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mother = app.login("mother1").await;
    let file = document(600_000);
    let path = new_upload(&app, &mother, file.len(), b"report.pdf").await;

    // The first phone starts sending and holds on.
    let (go, go_on) = tokio::sync::oneshot::channel::<()>();
    let first = Bytes::from(file[..200_000].to_vec());
    let second = Bytes::from(file[200_000..300_000].to_vec());
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = go_on.await;
            Ok(second)
        }),
    );
    let slow = tokio::spawn(
        app.request(Method::PATCH, &path, Some(&mother))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    wait_for_lock(&app, &path, true).await;

    // The second phone is told to wait.
    let body = problem(
        patch(&app, &mother, &path, 0, file[..300_000].to_vec()).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("another request"),
        "{body}"
    );
    assert_eq!(offset_of(&app, &mother, &path).await, 0);

    go.send(()).unwrap();
    let first_done = slow.await.unwrap().unwrap();
    assert_eq!(first_done.status(), StatusCode::NO_CONTENT);
    assert_eq!(first_done.headers()["upload-offset"], "300000");

    // The second phone's stale offset is refused; it asks and continues.
    problem(
        patch(&app, &mother, &path, 0, file[..300_000].to_vec()).await,
        StatusCode::CONFLICT,
    )
    .await;
    let at = offset_of(&app, &mother, &path).await;
    let attachment_id = send_rest(&app, &mother, &path, &file, at, 300_000).await;
    assert_eq!(download(&app, &mother, &attachment_id).await, file);
}

#[tokio::test]
async fn abandoned_uploads_expire_with_their_pieces() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let file = document(50_000);
    let abandoned = new_upload(&app, &mother, file.len(), b"abandoned.pdf").await;
    send_patch_ok(&app, &mother, &abandoned, 0, &file[..20_000]).await;
    let finished = new_upload(&app, &mother, file.len(), b"finished.pdf").await;
    let attachment_id = send_rest(&app, &mother, &finished, &file, 0, 30_000).await;
    assert_eq!(stored_files(&app, "uploads").len(), 1);

    // Nothing is due yet.
    assert_eq!(
        onestop_server::uploads::tus::sweep_expired(&app.state.uploads)
            .await
            .unwrap(),
        0
    );

    // A day later (the clock is moved by moving the dates back).
    upload::Entity::update_many()
        .col_expr(
            upload::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .filter(upload::Column::OwnerId.is_not_null())
        .exec(&app.state.db)
        .await
        .unwrap();
    let head = app
        .request(Method::HEAD, &abandoned, Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        onestop_server::uploads::tus::sweep_expired(&app.state.uploads)
            .await
            .unwrap(),
        2
    );
    assert!(stored_files(&app, "uploads").is_empty());
    assert_eq!(app.count("uploads").await, 0);
    assert_eq!(app.count("upload_parts").await, 0);
    // The finished upload's attachment stays.
    assert_eq!(download(&app, &mother, &attachment_id).await, file);
}

#[tokio::test]
async fn an_upload_left_locked_by_a_dead_request_is_taken_over_and_completes() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let photo = phone_jpeg(&picture(300, 200), 6);
    let one_shot = upload_one_shot(&app, &mother, "IMG_0004.jpg", photo.clone()).await;
    let path = new_upload(&app, &mother, photo.len(), b"IMG_0004.jpg").await;

    // A first chunk too short to tell the type, then one ending inside
    // the EXIF block (nothing of which is stored), then more.
    send_patch_ok(&app, &mother, &path, 0, &photo[..10]).await;
    send_patch_ok(&app, &mother, &path, 10, &photo[10..100]).await;
    let half = photo.len() / 2;
    send_patch_ok(&app, &mother, &path, 100, &photo[100..half]).await;

    // The server handling the upload died holding its lock minutes ago.
    upload::Entity::update_many()
        .col_expr(upload::Column::LockToken, Expr::value(uuid::Uuid::new_v4()))
        .col_expr(
            upload::Column::LockedAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(5)),
        )
        .filter(upload::Column::Id.eq(upload_id(&path)))
        .exec(&app.state.db)
        .await
        .unwrap();
    let attachment_id = send_rest(&app, &mother, &path, &photo, half, 1000).await;
    let served = download(&app, &mother, &attachment_id).await;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&served)),
        one_shot["sha256"].as_str().unwrap(),
        "the same attachment a one-shot upload makes"
    );
    assert!(stored_files(&app, "uploads").is_empty());
}

#[tokio::test]
async fn a_photo_whose_filter_state_was_saved_in_a_file_still_completes() {
    use onestop_model::entities::upload_part;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, QueryOrder};

    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let photo = phone_jpeg(&picture(300, 200), 6);
    let one_shot = upload_one_shot(&app, &mother, "IMG_0004.jpg", photo.clone()).await;
    let path = new_upload(&app, &mother, photo.len(), b"IMG_0004.jpg").await;
    let half = photo.len() / 2;
    send_patch_ok(&app, &mother, &path, 0, &photo[..half]).await;

    // Earlier versions kept the state in `uploads/<id>/filter-<offset>`
    // and nothing in the piece's row.
    let id = upload_id(&path);
    let piece = upload_part::Entity::find()
        .filter(upload_part::Column::UploadId.eq(id))
        .order_by_desc(upload_part::Column::StartOffset)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut state: Value = serde_json::from_str(
        piece
            .filter_state
            .as_deref()
            .expect("a photo's filter state"),
    )
    .unwrap();
    // Nor did they carry the hash of the bytes so far.
    state
        .as_object_mut()
        .unwrap()
        .remove("sha256")
        .expect("a saved hash");
    std::fs::write(
        app.settings
            .media_dir
            .join(format!("uploads/{}/filter-{half:012}", id.simple())),
        state.to_string(),
    )
    .unwrap();
    let mut moved: upload_part::ActiveModel = piece.into();
    moved.filter_state = Set(None);
    moved.update(&app.state.db).await.unwrap();

    let attachment_id = send_rest(&app, &mother, &path, &photo, half, photo.len()).await;
    let served = download(&app, &mother, &attachment_id).await;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&served)),
        one_shot["sha256"].as_str().unwrap(),
        "the same photo as a one-shot upload"
    );
    assert!(
        stored_files(&app, "uploads").is_empty(),
        "the old state file went with the pieces"
    );
}
