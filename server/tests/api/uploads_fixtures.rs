//! Photos made in code the way phones make them, and small helpers for
//! the resumable upload protocol.

use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ImageBuffer, ImageEncoder, Rgb, RgbImage};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use sha2::Digest;

use crate::helpers::TestApp;

/// Words planted in the metadata; none may survive.
pub const SECRETS: &[&[u8]] = &[
    b"TestPhone Maker",
    b"Model X-9000",
    b"2026:11:20 10:11:12",
    b"xmp-secret-location",
    b"IPTC-SECRET-BYLINE",
    b"comment-secret",
    b"MotionPhoto_Data-secret",
];

/// A picture with detail in it, so that encoders have work to do.
pub fn picture(width: u32, height: u32) -> RgbImage {
    ImageBuffer::from_fn(width, height, |x, y| {
        let v = (x * 7 + y * 13) % 256;
        Rgb([v as u8, ((x * y) % 256) as u8, (255 - v) as u8])
    })
}

pub fn jpeg_of(picture: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(picture)
        .unwrap();
    out
}

pub fn png_of(picture: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            picture.as_raw(),
            picture.width(),
            picture.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    data: Vec<u8>,
}

fn ascii(tag: u16, text: &[u8]) -> Entry {
    let mut data = text.to_vec();
    data.push(0);
    Entry {
        tag,
        kind: 2,
        count: data.len() as u32,
        data,
    }
}

fn rationals(tag: u16, values: &[(u32, u32)]) -> Entry {
    let data = values
        .iter()
        .flat_map(|(n, d)| n.to_le_bytes().into_iter().chain(d.to_le_bytes()))
        .collect();
    Entry {
        tag,
        kind: 5,
        count: values.len() as u32,
        data,
    }
}

fn short(tag: u16, value: u16) -> Entry {
    Entry {
        tag,
        kind: 3,
        count: 1,
        data: value.to_le_bytes().to_vec(),
    }
}

fn long(tag: u16, value: u32) -> Entry {
    Entry {
        tag,
        kind: 4,
        count: 1,
        data: value.to_le_bytes().to_vec(),
    }
}

/// One little-endian IFD at `start`, its out-of-line values after it.
fn ifd(entries: &[Entry], start: u32) -> Vec<u8> {
    let mut table = (entries.len() as u16).to_le_bytes().to_vec();
    let mut data = Vec::new();
    let data_start = start + 2 + 12 * entries.len() as u32 + 4;
    for entry in entries {
        table.extend_from_slice(&entry.tag.to_le_bytes());
        table.extend_from_slice(&entry.kind.to_le_bytes());
        table.extend_from_slice(&entry.count.to_le_bytes());
        if entry.data.len() <= 4 {
            let mut inline = entry.data.clone();
            inline.resize(4, 0);
            table.extend_from_slice(&inline);
        } else {
            table.extend_from_slice(&(data_start + data.len() as u32).to_le_bytes());
            data.extend_from_slice(&entry.data);
            if data.len() % 2 == 1 {
                data.push(0);
            }
        }
    }
    table.extend_from_slice(&0u32.to_le_bytes());
    table.extend(data);
    table
}

/// The EXIF block of a phone photo: maker, model, time, orientation and
/// a GPS position (37°33'12.34"N 126°58'56.78"E, Seoul).
pub fn phone_exif(orientation: u16) -> Vec<u8> {
    let gps = [
        Entry {
            tag: 0x0000,
            kind: 1,
            count: 4,
            data: vec![2, 3, 0, 0],
        },
        ascii(0x0001, b"N"),
        rationals(0x0002, &[(37, 1), (33, 1), (1234, 100)]),
        ascii(0x0003, b"E"),
        rationals(0x0004, &[(126, 1), (58, 1), (5678, 100)]),
    ];
    let ifd0 = |gps_at: u32| {
        vec![
            ascii(0x010F, b"TestPhone Maker"),
            ascii(0x0110, b"Model X-9000"),
            short(0x0112, orientation),
            ascii(0x0132, b"2026:11:20 10:11:12"),
            long(0x8825, gps_at),
        ]
    };
    let first = ifd(&ifd0(0), 8);
    let gps_at = 8 + first.len() as u32;
    let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
    tiff.extend(ifd(&ifd0(gps_at), 8));
    tiff.extend(ifd(&gps, gps_at));
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(tiff);
    payload
}

fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, code];
    s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    s.extend_from_slice(payload);
    s
}

/// A JPEG as a phone writes it: EXIF with GPS, XMP, IPTC, a comment,
/// and a motion-photo trailer after the image.
pub fn phone_jpeg(picture: &RgbImage, orientation: u16) -> Vec<u8> {
    let plain = jpeg_of(picture);
    let mut file = plain[..2].to_vec();
    file.extend(segment(0xE1, &phone_exif(orientation)));
    file.extend(segment(
        0xE1,
        b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><exif:GPSLatitude>xmp-secret-location</exif:GPSLatitude></x:xmpmeta>",
    ));
    file.extend(segment(
        0xED,
        b"Photoshop 3.0\08BIM\x04\x04\0\0\0\0\0\x12IPTC-SECRET-BYLINE",
    ));
    file.extend(segment(0xFE, b"comment-secret"));
    file.extend_from_slice(&plain[2..]);
    file.extend_from_slice(b"MotionPhoto_Data-secret and a video would follow");
    file
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    c.extend_from_slice(&crc.finalize().to_be_bytes());
    c
}

/// A PNG with text, EXIF (with GPS) and time chunks.
pub fn png_with_metadata(picture: &RgbImage) -> Vec<u8> {
    let plain = png_of(picture);
    // Signature and IHDR: 8 + 25 bytes.
    let mut file = plain[..33].to_vec();
    file.extend(png_chunk(b"tEXt", b"Author\0TestPhone Maker"));
    file.extend(png_chunk(
        b"iTXt",
        b"XML:com.adobe.xmp\0\0\0\0\0xmp-secret-location",
    ));
    file.extend(png_chunk(b"eXIf", &phone_exif(1)[6..]));
    file.extend(png_chunk(b"tIME", &[7, 234, 11, 20, 10, 11, 12]));
    file.extend_from_slice(&plain[33..]);
    file
}

/// A PNG header claiming `width`×`height` pixels, with almost no data.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    file.extend(png_chunk(b"IHDR", &ihdr));
    file.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    file.extend(png_chunk(b"IEND", b""));
    file
}

/// A real JPEG whose frame header is changed to claim `width`×`height`.
pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut file = jpeg_of(&picture(16, 16));
    let sof = file
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    file[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    file[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    file
}

/// A PDF-like document of `size` bytes with varied content.
pub fn document(size: usize) -> Vec<u8> {
    let mut file = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut x: u32 = 12345;
    while file.len() < size - 6 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        file.push((x >> 16) as u8);
    }
    file.extend_from_slice(b"%%EOF\n");
    file
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The tags of the first IFD of a JPEG's EXIF block, if it has one.
pub fn exif_tags(jpeg: &[u8]) -> Option<Vec<u16>> {
    let start = jpeg.windows(6).position(|w| w == b"Exif\0\0")? + 6;
    let tiff = &jpeg[start..];
    let big = &tiff[..2] == b"MM";
    let u16_at = |at: usize| {
        let b = [tiff[at], tiff[at + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let first = if big {
        u32::from_be_bytes(tiff[4..8].try_into().unwrap())
    } else {
        u32::from_le_bytes(tiff[4..8].try_into().unwrap())
    } as usize;
    let count = u16_at(first) as usize;
    Some((0..count).map(|i| u16_at(first + 2 + 12 * i)).collect())
}

/// Every stored file under a folder of the media store.
pub fn stored_files(app: &TestApp, folder: &str) -> Vec<Vec<u8>> {
    fn walk(dir: &std::path::Path, found: &mut Vec<Vec<u8>>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                walk(&entry.path(), found);
            } else {
                found.push(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut found = Vec::new();
    walk(&app.settings.media_dir.join(folder), &mut found);
    found
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/uploads` for a file of `length` bytes.
pub async fn create_upload(
    app: &TestApp,
    token: &str,
    length: usize,
    file_name: &[u8],
) -> Response {
    app.request(Method::POST, "/v1/uploads", Some(token))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header(
            "Upload-Metadata",
            format!(
                "filename {},filetype {}",
                b64(file_name),
                b64(b"image/jpeg")
            ),
        )
        .send()
        .await
        .unwrap()
}

/// Creates an upload and returns its path.
pub async fn new_upload(app: &TestApp, token: &str, length: usize, file_name: &[u8]) -> String {
    let response = create_upload(app, token, length, file_name).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.headers()["location"].to_str().unwrap().to_owned()
}

pub async fn patch(
    app: &TestApp,
    token: &str,
    path: &str,
    offset: usize,
    bytes: Vec<u8>,
) -> Response {
    app.request(Method::PATCH, path, Some(token))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// `HEAD`: the offset to continue from.
pub async fn offset_of(app: &TestApp, token: &str, path: &str) -> usize {
    let response = app
        .request(Method::HEAD, path, Some(token))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends `file` from `offset` to its end in chunks of `chunk` bytes;
/// returns the attachment id the last response names.
pub async fn send_rest(
    app: &TestApp,
    token: &str,
    path: &str,
    file: &[u8],
    mut offset: usize,
    chunk: usize,
) -> String {
    loop {
        let end = (offset + chunk).min(file.len());
        let response = patch(app, token, path, offset, file[offset..end].to_vec()).await;
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "PATCH at {offset}"
        );
        assert_eq!(response.headers()["tus-resumable"], "1.0.0");
        offset = response.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(offset, end);
        if offset == file.len() {
            return response.headers()["upload-attachment-id"]
                .to_str()
                .unwrap()
                .to_owned();
        }
    }
}

/// The bytes of an attachment as its reader gets them.
pub async fn download(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    let response = app.get(&format!("/v1/attachments/{id}"), token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let served = response.bytes().await.unwrap().to_vec();
    assert_eq!(
        etag,
        format!("\"{}\"", hex::encode(sha2::Sha256::digest(&served))),
        "the SHA-256 recorded for the attachment (its ETag) is that of the bytes served"
    );
    served
}

/// Uploads in one request and returns the created attachment.
pub async fn upload_one_shot(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> Value {
    let response = app.upload(token, name, bytes).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// Waits (without a deadline that could flake on a busy machine, but
/// bounded) until the thumbnail is no longer being made.
pub async fn thumbnail(app: &TestApp, token: &str, id: &str) -> Response {
    for _ in 0..600 {
        let response = app
            .get(&format!("/v1/attachments/{id}/thumbnail"), token)
            .await;
        if response.status() != StatusCode::ACCEPTED {
            return response;
        }
        assert!(response.headers().contains_key("retry-after"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the thumbnail of {id} was still pending after 600 polls");
}
