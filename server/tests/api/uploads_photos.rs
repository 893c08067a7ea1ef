//! Photos lose their metadata before anyone can read them, keep their
//! pixels and orientation, get thumbnails, and bad files are refused.

use image::ImageDecoder;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{problem, spawn_app, spawn_app_with, Backend, Options};
use crate::uploads_fixtures::*;

fn pixels(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

fn orientation(jpeg: &[u8]) -> image::metadata::Orientation {
    image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg))
        .unwrap()
        .orientation()
        .unwrap()
}

#[tokio::test]
async fn a_phone_photo_loses_its_location_but_not_its_pixels_or_orientation() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let original = phone_jpeg(&picture(64, 32), 6);
    for secret in SECRETS {
        assert!(
            contains(&original, secret),
            "the fixture carries its metadata"
        );
    }
    assert!(
        exif_tags(&original).unwrap().contains(&0x8825),
        "and a GPS position"
    );

    let created = upload_one_shot(&app, &mother, "IMG_0001.jpg", original.clone()).await;
    let id = created["id"].as_str().unwrap();
    let served = download(&app, &mother, id).await;

    // Served and stored bytes alike: no GPS, no maker, no XMP, IPTC,
    // comment or trailer; only the orientation tag is left.
    let stored = stored_files(&app, "attachments");
    assert_eq!(stored, vec![served.clone()]);
    for secret in SECRETS {
        assert!(
            !contains(&served, secret),
            "{}",
            String::from_utf8_lossy(secret)
        );
    }
    assert_eq!(exif_tags(&served), Some(vec![0x0112]));
    assert!(served.len() < original.len());
    assert_eq!(created["byte_size"], served.len());
    assert_eq!(
        created["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&served))
    );

    // Not a pixel changed, and it still displays turned.
    assert_eq!(pixels(&served), pixels(&original));
    assert_eq!(orientation(&served), image::metadata::Orientation::Rotate90);

    // A PNG loses its text, EXIF and time chunks the same way.
    let png = png_with_metadata(&picture(40, 30));
    let created = upload_one_shot(&app, &mother, "screenshot.png", png.clone()).await;
    let served = download(&app, &mother, created["id"].as_str().unwrap()).await;
    assert_eq!(created["media_type"], "image/png");
    for secret in SECRETS {
        assert!(!contains(&served, secret));
    }
    for chunk in [b"tEXt", b"iTXt", b"eXIf", b"tIME"] {
        assert!(!contains(&served, chunk));
    }
    assert_eq!(pixels(&served), pixels(&png));
}

#[tokio::test]
async fn the_tablet_gets_an_upright_thumbnail_under_the_photos_access_rule() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let stranger = app.login("mother2").await;
    let official = app.login("official.municipality").await;

    // 64 wide, 32 high, to be shown turned a quarter: portrait.
    let created = upload_one_shot(
        &app,
        &mother,
        "certificate.jpg",
        phone_jpeg(&picture(64, 32), 6),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let response = thumbnail(&app, &mother, &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let small = response.bytes().await.unwrap();
    let decoded = image::load_from_memory(&small).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (32, 64));
    assert_eq!(exif_tags(&small), None, "the thumbnail carries no metadata");
    let again = app
        .request(
            Method::GET,
            &format!("/v1/attachments/{id}/thumbnail"),
            Some(&mother),
        )
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // Another applicant cannot see it; the official sees it once a case
    // of her agency uses the photo.
    problem(thumbnail(&app, &stranger, &id).await, StatusCode::NOT_FOUND).await;
    problem(thumbnail(&app, &official, &id).await, StatusCode::NOT_FOUND).await;
    app.apply(&mother, &["childcare_allowance"], Some(&id))
        .await;
    assert_eq!(
        thumbnail(&app, &official, &id).await.status(),
        StatusCode::OK
    );

    // A large photo is shrunk to fit 512 pixels.
    let created = upload_one_shot(&app, &mother, "receipt.jpg", jpeg_of(&picture(1200, 900))).await;
    let response = thumbnail(&app, &mother, created["id"].as_str().unwrap()).await;
    let decoded = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (512, 384));

    // A PDF has none.
    let created = upload_one_shot(&app, &mother, "report.pdf", document(4000)).await;
    let body = problem(
        thumbnail(&app, &mother, created["id"].as_str().unwrap()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("PDF"), "{body}");
}

#[tokio::test]
async fn bad_files_are_refused_whatever_their_name_and_leave_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;

    // Not an allowed type, whatever the name says.
    for (name, bytes) in [
        ("photo.jpg", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
        (
            "scan.pdf",
            b"#!/bin/sh\necho this is not a document\n".to_vec(),
        ),
        ("receipt.png", vec![0u8; 500]),
    ] {
        let body = problem(
            app.upload(&mother, name, bytes).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert_eq!(body["type"], "urn:onestop:problem:unsupported-media-type");
    }
    // An iPhone's HEIC photo gets a reason and what to do instead.
    let mut heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    heic.resize(2000, 0);
    let body = problem(
        app.upload(&mother, "IMG_0002.HEIC", heic).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("HEIC"), "{body}");

    // Zero bytes.
    problem(
        app.upload(&mother, "empty.jpg", Vec::new()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Huge dimensions in a tiny file: refused from the header, without
    // decoding.
    for (name, bytes) in [
        ("bomb.png", png_claiming(60_000, 60_000)),
        ("bomb.jpg", jpeg_claiming(65_000, 65_000)),
    ] {
        assert!(bytes.len() < 1000);
        let body = problem(
            app.upload(&mother, name, bytes).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("pixels"),
            "{body}"
        );
    }

    // A photo cut short.
    let photo = jpeg_of(&picture(64, 64));
    let cut = photo[..photo.len() / 2].to_vec();
    let body = problem(
        app.upload(&mother, "cut.jpg", cut).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("incomplete"),
        "{body}"
    );

    assert_eq!(app.count("attachments").await, 0);
    assert_eq!(app.media_files(), 0, "no file is left behind");

    // Names that look like paths or are not text are made safe.
    let stored = upload_one_shot(
        &app,
        &mother,
        "..\\..\\Windows\\system32\\receipt 1.jpg",
        photo.clone(),
    )
    .await;
    assert_eq!(stored["file_name"], "receipt 1.jpg");
    let path = new_upload(
        &app,
        &mother,
        photo.len(),
        b"../../etc/\xbf\xb5\xbc\xf6.jpg",
    )
    .await;
    let id = send_rest(&app, &mother, &path, &photo, 0, photo.len()).await;
    let view: Value = app
        .get(
            &format!("/v1/uploads/{}", path.rsplit('/').next().unwrap()),
            &mother,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["attachment_id"], id.as_str());
    let response = app.get(&format!("/v1/attachments/{id}"), &mother).await;
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.is_ascii() && !disposition.contains('/'),
        "{disposition}"
    );
    let name = stored_file_name(&app, &id).await;
    assert!(
        name.ends_with(".jpg") && name.contains('\u{FFFD}') && !name.contains('/'),
        "{name}"
    );
}

async fn stored_file_name(app: &crate::helpers::TestApp, id: &str) -> String {
    use onestop_model::entities::attachment;
    use sea_orm::EntityTrait;
    attachment::Entity::find_by_id(id.parse::<uuid::Uuid>().unwrap())
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
        .file_name
}

#[tokio::test]
async fn large_documents_are_read_in_ranges() {
    let app = spawn_app_with(
        Backend::Postgres,
        Options {
            max_upload_bytes: 8 * 1024 * 1024,
            ..Options::default()
        },
    )
    .await;
    let mother = app.login("mother1").await;
    let file = document(3 * 1024 * 1024 + 17);
    let size = file.len();
    let created = upload_one_shot(&app, &mother, "final-accounts.pdf", file.clone()).await;
    let path = format!("/v1/attachments/{}", created["id"].as_str().unwrap());
    let ranged = |range: &'static str| {
        app.request(Method::GET, &path, Some(&mother))
            .header("Range", range)
            .send()
    };

    let whole = app.get(&path, &mother).await;
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-length"], size.to_string().as_str());
    assert_eq!(whole.bytes().await.unwrap(), file);

    let first = ranged("bytes=0-99").await.unwrap();
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        first.headers()["content-range"],
        format!("bytes 0-99/{size}").as_str()
    );
    assert_eq!(first.bytes().await.unwrap(), file[..100]);

    let middle = ranged("bytes=1048576-2097151").await.unwrap();
    assert_eq!(middle.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(middle.bytes().await.unwrap(), file[1_048_576..2_097_152]);

    let tail = ranged("bytes=-10").await.unwrap();
    assert_eq!(
        tail.headers()["content-range"],
        format!("bytes {}-{}/{size}", size - 10, size - 1).as_str()
    );
    assert_eq!(tail.bytes().await.unwrap(), file[size - 10..]);

    let beyond = app
        .request(Method::GET, &path, Some(&mother))
        .header("Range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        beyond.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    let body = problem(beyond, StatusCode::RANGE_NOT_SATISFIABLE).await;
    assert_eq!(body["type"], "urn:onestop:problem:range-not-satisfiable");

    // Several ranges, or a range of an older version: the whole file.
    let several = ranged("bytes=0-1,5-6").await.unwrap();
    assert_eq!(several.status(), StatusCode::OK);
    let outdated = app
        .request(Method::GET, &path, Some(&mother))
        .header("Range", "bytes=0-99")
        .header("If-Range", "\"an-older-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(outdated.status(), StatusCode::OK);
    assert_eq!(outdated.bytes().await.unwrap().len(), size);
}
