use super::front::orientation_of;
use super::png::{MAX_EXIF_CHUNK, PNG_SIGNATURE};
use super::*;

fn filter_in_pieces(
    media_type: &str,
    file: &[u8],
    piece: usize,
) -> Result<(Vec<u8>, PhotoFacts), Refusal> {
    let mut sanitizer = Sanitizer::for_media_type(media_type, 100_000_000);
    let mut out = Vec::new();
    for chunk in file.chunks(piece) {
        sanitizer.push(chunk, &mut out)?;
    }
    let facts = sanitizer.finish()?.unwrap();
    Ok((out, facts))
}

fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, code];
    s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    s.extend_from_slice(payload);
    s
}

fn exif_with_orientation_and_secret(orientation: u8) -> Vec<u8> {
    let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&2u16.to_le_bytes());
    // Orientation
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&u16::from(orientation).to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    // Make, inline "SECR"
    tiff.extend_from_slice(&0x010Fu16.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&4u32.to_le_bytes());
    tiff.extend_from_slice(b"SECR");
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    payload
}

/// A structurally valid JPEG (the pixels are not decodable, which the
/// filter never needs).
fn jpeg_with_metadata() -> Vec<u8> {
    let mut file = vec![0xFF, 0xD8];
    file.extend(segment(
        0xE0,
        b"JFIF\0\x01\x02\x00\x00\x48\x00\x48\x02\x01\xAA\xBB\xCC\xDD\xEE\xFF",
    ));
    file.extend(segment(0xE1, &exif_with_orientation_and_secret(6)));
    file.extend(segment(
        0xE1,
        b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>SECRET GPS</x:xmpmeta>",
    ));
    file.extend(segment(0xED, b"Photoshop 3.0\0SECRET IPTC"));
    file.extend(segment(0xE2, b"ICC_PROFILE\0\x01\x01profile-bytes"));
    file.extend(segment(0xFE, b"SECRET comment"));
    file.extend(segment(0xDB, &[0u8; 65]));
    file.extend(segment(0xC0, &[8, 0, 16, 0, 32, 1, 1, 0x11, 0]));
    file.extend(segment(0xC4, &[0u8; 20]));
    file.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
    file.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9]);
    file.extend_from_slice(b"SECRET trailer after the end");
    file
}

#[test]
fn jpeg_metadata_goes_and_everything_needed_to_decode_stays() {
    let file = jpeg_with_metadata();
    let (whole, facts) = filter_in_pieces("image/jpeg", &file, file.len()).unwrap();
    for piece in [1, 2, 3, 7, 64] {
        let (pieces, _) = filter_in_pieces("image/jpeg", &file, piece).unwrap();
        assert_eq!(pieces, whole, "pieces of {piece} bytes");
    }
    assert_eq!(
        facts,
        PhotoFacts {
            width: 32,
            height: 16,
            orientation: 6
        }
    );
    assert!(!whole.windows(6).any(|w| w == b"SECRET"), "{whole:x?}");
    assert!(!whole.windows(4).any(|w| w == b"SECR"));
    assert!(whole.windows(12).any(|w| w == b"ICC_PROFILE\0"));
    // The entropy data, stuffing and restart markers included, ends
    // the file exactly.
    assert!(whole.ends_with(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9]));
    // The minimal EXIF still says "rotate 90°".
    let start = whole.windows(6).position(|w| w == b"Exif\0\0").unwrap() + 6;
    assert_eq!(orientation_of(&whole[start..]), Some(6));
    // The JFIF thumbnail is gone.
    assert_eq!(&whole[2..6], &[0xFF, 0xE0, 0x00, 0x10]);
}

#[test]
fn only_the_first_exif_block_before_the_image_data_gives_the_orientation() {
    // A second EXIF block whose IFD offset points past its end (no
    // orientation to be read), a third saying "rotate 180°", and one
    // between two scans saying "rotate 270°": none of them may change
    // what the first one says, and none may reach the stored file.
    let mut unreadable = exif_with_orientation_and_secret(3);
    unreadable[10..14].copy_from_slice(&0xD3u32.to_le_bytes());
    let mut file = vec![0xFF, 0xD8];
    file.extend(segment(0xE1, &exif_with_orientation_and_secret(6)));
    file.extend(segment(0xE1, &unreadable));
    file.extend(segment(0xE1, &exif_with_orientation_and_secret(3)));
    file.extend(segment(0xDB, &[0u8; 65]));
    file.extend(segment(0xC0, &[8, 0, 16, 0, 32, 1, 1, 0x11, 0]));
    file.extend(segment(0xC4, &[0u8; 20]));
    file.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
    file.extend_from_slice(&[0x12, 0x34]);
    file.extend(segment(0xE1, &exif_with_orientation_and_secret(8)));
    file.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
    file.extend_from_slice(&[0x56, 0xFF, 0xD9]);

    let (whole, facts) = filter_in_pieces("image/jpeg", &file, file.len()).unwrap();
    assert_eq!(filter_in_pieces("image/jpeg", &file, 1).unwrap().0, whole);
    assert_eq!(facts.orientation, 6);
    let exif: Vec<usize> = (0..whole.len())
        .filter(|&i| whole[i..].starts_with(b"Exif\0\0"))
        .collect();
    assert_eq!(exif.len(), 1, "{whole:x?}");
    assert_eq!(orientation_of(&whole[exif[0] + 6..]), Some(6));
    assert!(!whole.windows(4).any(|w| w == b"SECR"));
    // Its own output passes unchanged, with the same facts.
    assert_eq!(
        filter_in_pieces("image/jpeg", &whole, whole.len()).unwrap(),
        (whole.clone(), facts)
    );

    // An unreadable first block means upright, whatever follows.
    let mut file = vec![0xFF, 0xD8];
    file.extend(segment(0xE1, &unreadable));
    file.extend(segment(0xE1, &exif_with_orientation_and_secret(6)));
    file.extend(segment(0xC0, &[8, 0, 16, 0, 32, 1, 1, 0x11, 0]));
    file.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
    file.extend_from_slice(&[0x12, 0xFF, 0xD9]);
    let (whole, facts) = filter_in_pieces("image/jpeg", &file, 3).unwrap();
    assert_eq!(facts.orientation, 1);
    assert!(!whole.windows(4).any(|w| w == b"Exif"), "{whole:x?}");
}

#[test]
fn a_filter_saved_and_restored_anywhere_gives_the_same_bytes() {
    let file = jpeg_with_metadata();
    let (whole, facts) = filter_in_pieces("image/jpeg", &file, file.len()).unwrap();
    for split in 0..=file.len() {
        let mut first = Sanitizer::for_media_type("image/jpeg", 100_000_000);
        let mut out = Vec::new();
        first.push(&file[..split], &mut out).unwrap();
        let saved = serde_json::to_vec(&first).unwrap();
        let mut second: Sanitizer = serde_json::from_slice(&saved).unwrap();
        second.push(&file[split..], &mut out).unwrap();
        assert_eq!(out, whole, "split at {split}");
        assert_eq!(second.finish().unwrap(), Some(facts));
    }
}

#[test]
fn a_saved_filter_keeps_the_layout_earlier_versions_saved() {
    // Resumable uploads save the filter between requests; a server
    // of another version must read what this one saved, and the
    // other way round.
    let jpeg = jpeg_with_metadata();
    let mut png = PNG_SIGNATURE.to_vec();
    png.extend(png_chunk(b"IHDR", &[0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0]));
    png.extend(png_chunk(
        b"eXIf",
        &exif_with_orientation_and_secret(6)[6..],
    ));
    png.extend(png_chunk(b"IDAT", b"pixels"));
    png.extend(png_chunk(b"IEND", b""));
    let layouts = [
        (
            "image/jpeg",
            &jpeg,
            1,
            r#"{"Jpeg":{"state":{"Start":{"seen":1}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":1},"seen_frame":false,"orientation_settled":false}}"#,
        ),
        (
            "image/jpeg",
            &jpeg,
            28,
            r#"{"Jpeg":{"state":{"Marker":{"header":[255,225,0,0],"have":2}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":1},"seen_frame":false,"orientation_settled":false}}"#,
        ),
        (
            "image/jpeg",
            &jpeg,
            40,
            r#"{"Jpeg":{"state":{"Peek":{"code":225,"remaining":34,"buf":[69,120,105,102,0,0,73,73,42,0],"want":32}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":1},"seen_frame":false,"orientation_settled":false}}"#,
        ),
        (
            "image/jpeg",
            &jpeg,
            70,
            r#"{"Jpeg":{"state":{"Collect":{"code":225,"remaining":4,"buf":[69,120,105,102,0,0,73,73,42,0,8,0,0,0,2,0,18,1,3,0,1,0,0,0,6,0,0,0,15,1,2,0,4,0,0,0,83,69,67,82]}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":1},"seen_frame":false,"orientation_settled":true}}"#,
        ),
        (
            "image/jpeg",
            &jpeg,
            120,
            r#"{"Jpeg":{"state":{"Skip":{"remaining":20}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":6},"seen_frame":false,"orientation_settled":true}}"#,
        ),
        (
            "image/jpeg",
            &jpeg,
            251,
            r#"{"Jpeg":{"state":{"Pass":{"remaining":36}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":6},"seen_frame":false,"orientation_settled":true}}"#,
        ),
        (
            "image/jpeg",
            &jpeg,
            jpeg.len() - 33,
            r#"{"Jpeg":{"state":{"Entropy":{"pending_ff":true}},"max_pixels":100000000,"facts":{"width":32,"height":16,"orientation":6},"seen_frame":true,"orientation_settled":true}}"#,
        ),
        (
            "image/png",
            &png,
            3,
            r#"{"Png":{"state":{"Signature":{"seen":3}},"max_pixels":100000000,"facts":{"width":0,"height":0,"orientation":1},"seen_header":false,"seen_data":false}}"#,
        ),
        (
            "image/png",
            &png,
            40,
            r#"{"Png":{"state":{"Header":{"buf":[0,0,0,38,101,88,73,0],"have":7}},"max_pixels":100000000,"facts":{"width":3,"height":2,"orientation":1},"seen_header":true,"seen_data":false}}"#,
        ),
        (
            "image/png",
            &png,
            45,
            r#"{"Png":{"state":{"Collect":{"kind":[101,88,73,102],"remaining":38,"buf":[73,73,42,0]}},"max_pixels":100000000,"facts":{"width":3,"height":2,"orientation":1},"seen_header":true,"seen_data":false}}"#,
        ),
        (
            "image/png",
            &png,
            93,
            r#"{"Png":{"state":{"Pass":{"remaining":8}},"max_pixels":100000000,"facts":{"width":3,"height":2,"orientation":6},"seen_header":true,"seen_data":true}}"#,
        ),
    ];
    for (media_type, file, split, saved) in layouts {
        let mut sanitizer = Sanitizer::for_media_type(media_type, 100_000_000);
        let mut out = Vec::new();
        sanitizer.push(&file[..split], &mut out).unwrap();
        assert_eq!(serde_json::to_string(&sanitizer).unwrap(), saved);
        let mut restored: Sanitizer = serde_json::from_str(saved).unwrap();
        restored.push(&file[split..], &mut out).unwrap();
        let facts = restored.finish().unwrap();
        assert_eq!(
            (out, facts),
            filter_in_pieces(media_type, file, file.len())
                .map(|(bytes, facts)| (bytes, Some(facts)))
                .unwrap()
        );
    }
}

#[test]
fn jpeg_size_limits_and_truncation_are_refused() {
    let file = jpeg_with_metadata();
    let mut small_limit = Sanitizer::for_media_type("image/jpeg", 100);
    let mut out = Vec::new();
    assert!(matches!(
        small_limit.push(&file, &mut out),
        Err(Refusal::TooManyPixels {
            width: 32,
            height: 16,
            limit: 100
        })
    ));
    let cut = &file[..file.len() - 40];
    assert!(filter_in_pieces("image/jpeg", cut, 5).is_err());
    let mut zero = file.clone();
    let sof = zero.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    zero[sof + 5] = 0;
    zero[sof + 6] = 0;
    assert!(matches!(
        filter_in_pieces("image/jpeg", &zero, 9),
        Err(Refusal::Damaged(_))
    ));
}

#[test]
fn a_restored_filter_holds_no_more_than_one_segment() {
    // The largest segment and chunk gathered whole: a JFIF thumbnail
    // and an EXIF block of 64 KiB.
    let mut jpeg = vec![0xFF, 0xD8];
    let mut jfif = b"JFIF\0\x01\x02\x00\x00\x48\x00\x48\xFF\xFF".to_vec();
    jfif.resize(usize::from(u16::MAX) - 2, 0x5A);
    jpeg.extend(segment(0xE0, &jfif));
    let mut png = PNG_SIGNATURE.to_vec();
    png.extend(png_chunk(b"IHDR", &[0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0]));
    png.extend(png_chunk(b"eXIf", &vec![0; MAX_EXIF_CHUNK - 4]));
    for (media_type, file) in [("image/jpeg", jpeg), ("image/png", png)] {
        // Saved and restored after the first piece, as between the
        // requests of a resumable upload, then given the rest.
        let mut sanitizer = Sanitizer::for_media_type(media_type, 100_000_000);
        let mut out = Vec::new();
        let (first, rest) = file.split_at(8_520);
        sanitizer.push(first, &mut out).unwrap();
        let saved = serde_json::to_vec(&sanitizer).unwrap();
        let mut sanitizer: Sanitizer = serde_json::from_slice(&saved).unwrap();
        for piece in [&rest[..50_591], &rest[50_591..50_809], &rest[50_809..]] {
            sanitizer.push(piece, &mut out).unwrap();
            let held = sanitizer.held();
            assert!(held <= MAX_HELD, "{media_type}: {held} bytes held");
        }
    }
}

#[test]
fn a_jpeg_extension_marker_is_refused() {
    let file = jpeg_with_metadata();
    let sos = file.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    for code in [0xC8, 0xF0, 0xF5, 0xFD] {
        let mut extended = file[..sos].to_vec();
        extended.extend(segment(code, &[1, 2, 3]));
        extended.extend_from_slice(&file[sos..]);
        assert!(
            matches!(
                filter_in_pieces("image/jpeg", &extended, 5),
                Err(Refusal::Damaged(_))
            ),
            "{code:#04x}"
        );
    }
}

#[test]
fn a_stuffed_zero_where_a_marker_should_be_is_refused() {
    let file = jpeg_with_metadata();
    let data = file.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap() + 10;
    // In a scan, FF FF 00 is read by decoders as one FF data byte
    // followed by more data, here 03 E7; taken as the end of the scan
    // and a segment 00 of length 3, it would lose that data.
    let mut in_scan = file[..data].to_vec();
    in_scan.extend_from_slice(&[0x12, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x03, 0xE7, 0xFF, 0xD9]);
    // Between segments it is no marker either.
    let frame = file.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut between = file[..frame].to_vec();
    between.extend_from_slice(&[0xFF, 0x00, 0x00, 0x03, 0xE7]);
    between.extend_from_slice(&file[frame..]);
    for broken in [in_scan, between] {
        for piece in 1..=broken.len() {
            assert!(
                matches!(
                    filter_in_pieces("image/jpeg", &broken, piece),
                    Err(Refusal::Damaged(_))
                ),
                "in pieces of {piece}: {broken:x?}"
            );
        }
    }
}

#[test]
fn a_second_frame_header_is_refused() {
    let file = jpeg_with_metadata();
    let sos = file.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut twice = file[..sos].to_vec();
    twice.extend(segment(0xC0, &[8, 0, 1, 0x11, 0x11, 1, 1, 0x11, 0]));
    twice.extend_from_slice(&file[sos..]);
    assert!(matches!(
        filter_in_pieces("image/jpeg", &twice, 7),
        Err(Refusal::Damaged(_))
    ));
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

#[test]
fn png_text_and_exif_go_and_orientation_stays() {
    let mut file = PNG_SIGNATURE.to_vec();
    let mut ihdr = 3u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&2u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    file.extend(png_chunk(b"IHDR", &ihdr));
    file.extend(png_chunk(b"tEXt", b"Comment\0SECRET"));
    file.extend(png_chunk(
        b"eXIf",
        &exif_with_orientation_and_secret(8)[6..],
    ));
    file.extend(png_chunk(b"tIME", &[7, 234, 1, 2, 3, 4, 5]));
    file.extend(png_chunk(b"gAMA", &[0, 0, 177, 143]));
    file.extend(png_chunk(b"IDAT", b"pixels"));
    file.extend(png_chunk(b"zTXt", b"k\0\0SECRET"));
    file.extend(png_chunk(b"IEND", b""));
    file.extend_from_slice(b"SECRET after the end");
    let (whole, facts) = filter_in_pieces("image/png", &file, file.len()).unwrap();
    for piece in [1, 5, 13] {
        assert_eq!(
            filter_in_pieces("image/png", &file, piece).unwrap().0,
            whole
        );
    }
    assert_eq!(
        facts,
        PhotoFacts {
            width: 3,
            height: 2,
            orientation: 8
        }
    );
    assert!(!whole.windows(4).any(|w| w == b"SECR"));
    assert!(!whole.windows(4).any(|w| w == b"tIME"));
    assert!(whole.windows(4).any(|w| w == b"gAMA"));
    assert!(whole.ends_with(&png_chunk(b"IEND", b"")));
    let exif = whole.windows(4).position(|w| w == b"eXIf").unwrap() + 4;
    assert_eq!(orientation_of(&whole[exif..exif + 26]), Some(8));

    let mut huge = file.clone();
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(
        filter_in_pieces("image/png", &huge, 4),
        Err(Refusal::TooManyPixels { .. })
    ));
}
