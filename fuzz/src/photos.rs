//! Independent checks of the photo filter's output, written over the
//! whole file rather than as a stream: what may remain of a JPEG or PNG
//! after the filter, and whether it still decodes to the same pixels.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The 26-byte big-endian TIFF the filter writes for an orientation.
fn orientation_tiff(orientation: u8) -> [u8; 26] {
    let mut tiff = [0u8; 26];
    tiff[..8].copy_from_slice(b"MM\0\x2a\0\0\0\x08");
    tiff[8..10].copy_from_slice(&1u16.to_be_bytes());
    tiff[10..12].copy_from_slice(&0x0112u16.to_be_bytes());
    tiff[12..14].copy_from_slice(&3u16.to_be_bytes());
    tiff[14..18].copy_from_slice(&1u32.to_be_bytes());
    tiff[18..20].copy_from_slice(&u16::from(orientation).to_be_bytes());
    tiff
}

fn is_orientation_tiff(tiff: &[u8]) -> bool {
    (2..=8).any(|o| tiff == orientation_tiff(o))
}

/// A filtered JPEG: start-of-image, then only segments needed to decode
/// or display it, the EXIF block reduced to the orientation, no comment,
/// and nothing after end-of-image.
pub fn check_jpeg(out: &[u8]) -> Result<(), String> {
    if !out.starts_with(&[0xFF, 0xD8]) {
        return Err("no start-of-image".into());
    }
    let mut at = 2;
    loop {
        let (Some(&0xFF), Some(&code)) = (out.get(at), out.get(at + 1)) else {
            return Err(format!("no marker at {at}"));
        };
        match code {
            0xD9 if at + 2 == out.len() => return Ok(()),
            0xD9 => return Err(format!("{} bytes after end-of-image", out.len() - at - 2)),
            0xD8 => return Err("a second start-of-image".into()),
            0xFF => return Err(format!("a fill byte kept at {at}")),
            0x01 | 0xD0..=0xD7 => {
                at += 2;
                continue;
            }
            _ => {}
        }
        let Some(length) = out.get(at + 2..at + 4) else {
            return Err(format!("segment {code:#04x} cut short"));
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        let Some(payload) = length
            .checked_sub(2)
            .and_then(|n| out.get(at + 4..at + 4 + n))
        else {
            return Err(format!("segment {code:#04x} of length {length} overruns"));
        };
        let allowed = match code {
            0xE0 => length == 16 && payload.starts_with(b"JFIF\0") && payload[12..] == [0, 0],
            0xE1 => {
                payload.len() == 32 && payload.starts_with(b"Exif\0\0") && {
                    is_orientation_tiff(&payload[6..])
                }
            }
            0xE2 => payload.starts_with(b"ICC_PROFILE\0"),
            0xEE => payload.starts_with(b"Adobe"),
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => payload.len() >= 5,
            0xC4 | 0xCC | 0xDB | 0xDC | 0xDD | 0xDF | 0xDA => true,
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "segment {code:#04x} of length {length} kept at {at}"
            ));
        }
        at += 2 + length;
        if code == 0xDA {
            // Entropy-coded data: up to an FF that is neither stuffing
            // nor a restart marker.
            loop {
                match (out.get(at), out.get(at + 1)) {
                    (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => at += 2,
                    (Some(0xFF), _) => break,
                    (Some(_), _) => at += 1,
                    (None, _) => return Err("the scan has no end".into()),
                }
            }
        }
    }
}

/// A filtered PNG: signature, IHDR first, only chunks that change how
/// pixels look, at most one `eXIf` holding only the orientation before
/// the image data, and nothing after IEND. The chunks the filter writes
/// itself have correct CRCs.
pub fn check_png(out: &[u8]) -> Result<(), String> {
    let Some(mut rest) = out.strip_prefix(PNG_SIGNATURE) else {
        return Err("no signature".into());
    };
    let mut first = true;
    let mut seen_data = false;
    let mut seen_exif = false;
    loop {
        if rest.len() < 12 {
            return Err("a chunk cut short".into());
        }
        let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind: [u8; 4] = [rest[4], rest[5], rest[6], rest[7]];
        let Some(chunk) = rest.get(..12 + length) else {
            return Err(format!("chunk {kind:?} overruns"));
        };
        let data = &chunk[8..8 + length];
        let crc_ok = || {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&kind);
            crc.update(data);
            crc.finalize().to_be_bytes() == chunk[8 + length..]
        };
        if first != (&kind == b"IHDR") {
            return Err("IHDR is not the first chunk, or not the only one".into());
        }
        first = false;
        match &kind {
            b"IHDR" if length != 13 => return Err("a malformed IHDR".into()),
            b"eXIf" => {
                if seen_exif || seen_data || !is_orientation_tiff(data) || !crc_ok() {
                    return Err("an eXIf chunk beyond the orientation".into());
                }
                seen_exif = true;
            }
            b"IDAT" => seen_data = true,
            b"IEND" => {
                if length != 0 || !crc_ok() || !seen_data {
                    return Err("a malformed IEND".into());
                }
                return if chunk.len() == rest.len() {
                    Ok(())
                } else {
                    Err("bytes after IEND".into())
                };
            }
            b"IHDR" | b"PLTE" | b"tRNS" | b"gAMA" | b"cHRM" | b"sRGB" | b"iCCP" | b"sBIT"
            | b"bKGD" | b"hIST" | b"pHYs" | b"sPLT" | b"cICP" | b"mDCV" | b"cLLI" | b"mDCv"
            | b"cLLi" => {}
            _ => return Err(format!("chunk {:?} kept", String::from_utf8_lossy(&kind))),
        }
        rest = &rest[chunk.len()..];
    }
}

/// The pixels of a small image, or `None` when it does not decode.
pub fn decode(bytes: &[u8], format: ImageFormat) -> Option<DynamicImage> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(1024);
    limits.max_image_height = Some(1024);
    limits.max_alloc = Some(64 << 20);
    reader.limits(limits);
    reader.decode().ok()
}
