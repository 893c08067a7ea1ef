//! Each target's seed corpus, made in code: a target writes its seeds to
//! the folder named by `ONESTOP_FUZZ_SEEDS` when it starts (before the
//! fuzzer reads its corpus), so no binary files are kept in the
//! repository and the seeds follow the code that makes them.

use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ImageBuffer, ImageEncoder, Rgb, RgbImage};

/// Writes `make()`'s seeds as `seed-<name>` files when asked to.
pub fn write_if_asked(make: fn() -> Vec<(String, Vec<u8>)>) {
    let Some(dir) = std::env::var_os("ONESTOP_FUZZ_SEEDS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("the seed folder can be made");
    for (name, bytes) in make() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed can be written");
    }
}

/// Piece seeds worth starting from: single bytes, small pieces (with
/// empty ones), network-sized pieces, the whole input.
const PIECE_SEEDS: [u16; 4] = [0x0000, 0x0105, 0x0002, 0x0003];

fn with_piece_seeds(name: &str, prefix: &[u8], body: &[u8]) -> Vec<(String, Vec<u8>)> {
    PIECE_SEEDS
        .iter()
        .map(|seed| {
            let mut input = prefix.to_vec();
            input.extend_from_slice(&seed.to_le_bytes());
            input.extend_from_slice(body);
            (format!("{name}-{seed:04x}"), input)
        })
        .collect()
}

// ---------------------------------------------------------------- photos

fn picture(width: u32, height: u32) -> RgbImage {
    ImageBuffer::from_fn(width, height, |x, y| {
        let v = (x * 37 + y * 91) % 256;
        Rgb([v as u8, ((x * y * 5) % 256) as u8, (255 - v) as u8])
    })
}

fn jpeg_of(picture: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 50)
        .write_image(
            picture.as_raw(),
            picture.width(),
            picture.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("a small picture encodes");
    out
}

fn png_of(picture: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            picture.as_raw(),
            picture.width(),
            picture.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("a small picture encodes");
    out
}

fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, code];
    s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    s.extend_from_slice(payload);
    s
}

/// EXIF (little-endian) with the orientation, a maker and a GPS IFD
/// pointer, as phones write it.
fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&3u16.to_le_bytes());
    for (tag, kind, count, value) in [
        (0x010Fu16, 2u16, 4u32, *b"GPS\0"),
        (0x0112, 3, 1, [orientation as u8, 0, 0, 0]),
        (0x8825, 4, 1, 50u32.to_le_bytes()),
    ] {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&count.to_le_bytes());
        tiff.extend_from_slice(&value);
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    // The GPS IFD: latitude reference "N".
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&2u32.to_le_bytes());
    tiff.extend_from_slice(b"N\0\0\0");
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff
}

/// A JPEG as a phone writes it: JFIF with a thumbnail, EXIF, XMP, an
/// ICC profile, Adobe flags, IPTC, a comment and a trailer after the
/// image.
fn phone_jpeg(plain: &[u8], orientation: u16) -> Vec<u8> {
    let mut file = plain[..2].to_vec();
    let mut jfif = b"JFIF\0\x01\x02\x00\x00\x48\x00\x48\x01\x01".to_vec();
    jfif.extend_from_slice(&[0x80, 0x40, 0x20]);
    file.extend(segment(0xE0, &jfif));
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend(exif_tiff(orientation));
    file.extend(segment(0xE1, &exif));
    file.extend(segment(
        0xE1,
        b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>secret</x:xmpmeta>",
    ));
    file.extend(segment(0xE2, b"ICC_PROFILE\0\x01\x01profile"));
    file.extend(segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"));
    file.extend(segment(0xED, b"Photoshop 3.0\08BIM\x04\x04secret"));
    file.extend(segment(0xFE, b"secret comment"));
    // The encoder's own JFIF header goes; its tables and scan stay.
    let tables = plain
        .windows(2)
        .position(|w| w == [0xFF, 0xDB])
        .expect("the encoder writes tables");
    file.extend_from_slice(&plain[tables..]);
    file.extend_from_slice(b"MotionPhoto_Data secret");
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

/// A PNG with text, EXIF (orientation and more), a time and a trailer
/// around the encoder's chunks.
fn phone_png(plain: &[u8], orientation: u16) -> Vec<u8> {
    let ihdr_end = 8 + 12 + 13;
    let mut file = plain[..ihdr_end].to_vec();
    file.extend(png_chunk(b"tEXt", b"Comment\0secret"));
    file.extend(png_chunk(b"eXIf", &exif_tiff(orientation)));
    file.extend(png_chunk(b"tIME", &[7, 234, 1, 2, 3, 4, 5]));
    file.extend(png_chunk(b"gAMA", &[0, 0, 177, 143]));
    file.extend_from_slice(&plain[ihdr_end..plain.len() - 12]);
    file.extend(png_chunk(b"zTXt", b"k\0\0secret"));
    file.extend_from_slice(&plain[plain.len() - 12..]);
    file.extend_from_slice(b"secret after the end");
    file
}

/// Seeds of the `strip` target: a flag byte (bit 0: PNG), the piece seed,
/// the file.
pub fn strip() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (w, h) in [(8, 8), (17, 9)] {
        let jpeg = jpeg_of(&picture(w, h));
        let png = png_of(&picture(w, h));
        seeds.extend(with_piece_seeds(&format!("jpeg-{w}x{h}"), &[0], &jpeg));
        seeds.extend(with_piece_seeds(&format!("png-{w}x{h}"), &[1], &png));
        for orientation in [1, 6] {
            seeds.extend(with_piece_seeds(
                &format!("phone-jpeg-{w}x{h}-{orientation}"),
                &[0],
                &phone_jpeg(&jpeg, orientation),
            ));
            seeds.extend(with_piece_seeds(
                &format!("phone-png-{w}x{h}-{orientation}"),
                &[1],
                &phone_png(&png, orientation),
            ));
        }
    }
    // The largest segment and chunk the filter gathers whole: a JFIF
    // thumbnail and an EXIF block of 64 KiB.
    let jpeg = jpeg_of(&picture(8, 8));
    let mut big = jpeg[..2].to_vec();
    let mut jfif = b"JFIF\0\x01\x02\x00\x00\x48\x00\x48\xFF\xFF".to_vec();
    jfif.resize(usize::from(u16::MAX) - 2, 0x5A);
    big.extend(segment(0xE0, &jfif));
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend(exif_tiff(8));
    exif.resize(usize::from(u16::MAX) - 2, 0);
    big.extend(segment(0xE1, &exif));
    big.extend_from_slice(&jpeg[2..]);
    seeds.extend(with_piece_seeds("big-jpeg", &[0], &big).into_iter().skip(2));
    let png = png_of(&picture(8, 8));
    let mut tiff = exif_tiff(3);
    tiff.resize(onestop_server::uploads::strip::MAX_HELD - 4, 0);
    let mut big = png[..8 + 12 + 13].to_vec();
    big.extend(png_chunk(b"eXIf", &tiff));
    big.extend_from_slice(&png[8 + 12 + 13..]);
    seeds.extend(with_piece_seeds("big-png", &[1], &big).into_iter().skip(2));
    seeds
}

// ------------------------------------------------------------ tus headers

/// Seeds of the `tus_headers` target: a mode byte (bit 0: the rest is a
/// file name to wrap in a header; bit 1: under the key `name`), then the
/// header or the name.
pub fn tus_headers() -> Vec<(String, Vec<u8>)> {
    let b64 = |s: &[u8]| STANDARD.encode(s);
    let raw = [
        format!(
            "filename {},filetype {},is_confidential",
            b64(b"receipt.jpg"),
            b64(b"image/jpeg")
        ),
        format!("name {}", URL_SAFE_NO_PAD.encode(b"\xbf\xb5\xbc\xf6.jpg")),
        format!(
            " filename  {} , relativePath null,",
            b64("사진 1.png".as_bytes())
        ),
        "a YQ==,a YQ==".into(),
        format!("sha1 {}", b64(&[7; 20])),
        format!("sha256 {}", b64(&[9; 32])),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = raw
        .iter()
        .enumerate()
        .map(|(i, header)| {
            let mut input = vec![0];
            input.extend_from_slice(header.as_bytes());
            (format!("header-{i}"), input)
        })
        .collect();
    for (i, name) in [
        &b"IMG_0001.HEIC.jpg"[..],
        "보고서.pdf".as_bytes(),
        b"\xff\xfe",
    ]
    .iter()
    .enumerate()
    {
        for mode in [1u8, 3] {
            let mut input = vec![mode];
            input.extend_from_slice(name);
            seeds.push((format!("name-{i}-{mode}"), input));
        }
    }
    seeds
}

// ----------------------------------------------------------------- cursor

/// Seeds of the `cursor` target: a mode byte (bit 0: the rest is the JSON
/// inside the token, else the token itself), then the bytes.
pub fn cursor() -> Vec<(String, Vec<u8>)> {
    let json = [
        r#"{"t":"2026-11-23T08:05:09.123456789Z","i":"0191f2a4-7b1c-7c3e-9a55-5f0e6d2b8c11"}"#,
        r#"{"i":"00000000-0000-0000-0000-000000000000","t":"1970-01-01T00:00:00+09:00"}"#,
        r#"{"t":"+262142-12-31T23:59:59Z","i":"ffffffffffffffffffffffffffffffff"}"#,
        r#"{"t":"2026-02-29T24:00:00Z","i":[1,2,3]}"#,
    ];
    let mut seeds = Vec::new();
    for (i, json) in json.iter().enumerate() {
        let mut raw = vec![1];
        raw.extend_from_slice(json.as_bytes());
        seeds.push((format!("json-{i}"), raw));
        let mut token = vec![0];
        token.extend_from_slice(URL_SAFE_NO_PAD.encode(json).as_bytes());
        seeds.push((format!("token-{i}"), token));
    }
    seeds
}

// -------------------------------------------------------------- multipart

/// Seeds of the `multipart_front` target: the boundary's length less one
/// (mod 70), four limit bytes (preamble, part headers, epilogue: ×64
/// bytes; parts), the piece seed, the boundary, the body.
pub fn multipart_front() -> Vec<(String, Vec<u8>)> {
    let boundary = b"----WebKitFormBoundary7MA4YWxkTrZu0gW";
    let part = |name: &str, content: &[u8]| {
        let mut out = b"--".to_vec();
        out.extend_from_slice(boundary);
        out.extend_from_slice(
            format!(
                "\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.jpg\"\r\n\
                 Content-Type: image/jpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        out
    };
    let close = {
        let mut out = b"--".to_vec();
        out.extend_from_slice(boundary);
        out.extend_from_slice(b"--\r\n");
        out
    };
    let mut tricky = b"\r\n--".to_vec();
    tricky.extend_from_slice(&boundary[..boundary.len() - 1]);
    tricky.extend_from_slice(b"x --");
    tricky.extend_from_slice(boundary);
    let bodies: Vec<Vec<u8>> = vec![
        [part("file", b"\xFF\xD8\xFF\xE0 photo bytes"), close.clone()].concat(),
        [
            b"a preamble\r\n".to_vec(),
            part("meta", b"{}"),
            part("file", &tricky),
            close.clone(),
            b"an epilogue".to_vec(),
        ]
        .concat(),
        [part("file", b"no closing boundary")].concat(),
    ];
    let mut seeds = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let mut prefix = vec![(boundary.len() - 1) as u8, 64, 128, 64, 16];
        // The piece seed goes between the limits and the boundary.
        let mut rest = boundary.to_vec();
        rest.extend_from_slice(body);
        for (name, input) in with_piece_seeds(&format!("body-{i}"), &prefix, &rest) {
            seeds.push((name, input));
        }
        // Tight limits, so that each limit is met.
        prefix[1..].copy_from_slice(&[0, 1, 0, 1]);
        seeds.extend(with_piece_seeds(&format!("tight-{i}"), &prefix, &rest));
    }
    seeds
}
