//! The protocol's headers: the version and extensions offered,
//! `Upload-Metadata`, `Upload-Checksum` (with the digest a chunk is
//! checked against as it arrives) and the dates of `Upload-Expires`.

use base64::Engine;
use chrono::{DateTime, Utc};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const TUS_VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,checksum,termination,expiration";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
const MAX_METADATA_BYTES: usize = 4 * 1024;

/// RFC 9110 date, as `Upload-Expires` wants it.
pub fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs. Returns
/// the file name (`filename`, or `name` as some clients call it) as text;
/// bytes that are not UTF-8 become replacement characters.
pub fn parse_metadata(raw: &str) -> Result<Option<String>, ApiError> {
    if raw.len() > MAX_METADATA_BYTES {
        return Err(ApiError::BadRequest(format!(
            "Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes"
        )));
    }
    let mut seen = Vec::new();
    let mut file_name = None;
    let mut name = None;
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, Some(value.trim())),
            None => (pair, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) || seen.contains(&key) {
            return Err(ApiError::BadRequest(format!(
                "Upload-Metadata has a bad or repeated key `{key}`"
            )));
        }
        seen.push(key);
        let Some(value) = value else { continue };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "the Upload-Metadata value of `{key}` is not base64"
                ))
            })?;
        let text: String = String::from_utf8_lossy(&decoded)
            .chars()
            .take(255)
            .collect();
        match key {
            "filename" => file_name = Some(text),
            "name" => name = Some(text),
            _ => {}
        }
    }
    Ok(file_name.or(name))
}

/// `Upload-Checksum`: an algorithm and the base64 digest of the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

impl Checksum {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let (algorithm, digest) = raw.trim().split_once(' ').ok_or_else(|| {
            ApiError::BadRequest("Upload-Checksum must be `<algorithm> <base64 digest>`".into())
        })?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(digest.trim())
            .map_err(|_| ApiError::BadRequest("the Upload-Checksum digest is not base64".into()))?;
        let checksum = match algorithm.to_ascii_lowercase().as_str() {
            "sha1" => Checksum::Sha1(digest),
            "sha256" => Checksum::Sha256(digest),
            other => {
                return Err(ApiError::BadRequest(format!(
                "checksum algorithm `{other}` is not supported; use one of {CHECKSUM_ALGORITHMS}"
            )))
            }
        };
        let (expected, got) = match &checksum {
            Checksum::Sha1(d) => (20, d.len()),
            Checksum::Sha256(d) => (32, d.len()),
        };
        if expected != got {
            return Err(ApiError::BadRequest(
                "the Upload-Checksum digest has the wrong length".into(),
            ));
        }
        Ok(checksum)
    }
}

/// The digest of a chunk as its bytes arrive, for `Upload-Checksum`.
pub(super) enum RunningDigest {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl RunningDigest {
    pub(super) fn for_checksum(checksum: &Checksum) -> Self {
        match checksum {
            Checksum::Sha1(_) => RunningDigest::Sha1(Sha1::new()),
            Checksum::Sha256(_) => RunningDigest::Sha256(Sha256::new()),
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            RunningDigest::Sha1(h) => h.update(bytes),
            RunningDigest::Sha256(h) => h.update(bytes),
        }
    }

    pub(super) fn matches(self, checksum: &Checksum) -> bool {
        match (self, checksum) {
            (RunningDigest::Sha1(h), Checksum::Sha1(d)) => h.finalize().as_slice() == d.as_slice(),
            (RunningDigest::Sha256(h), Checksum::Sha256(d)) => {
                h.finalize().as_slice() == d.as_slice()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_gives_the_file_name_whatever_its_bytes() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let raw = format!(
            "filename {},filetype {},is_confidential",
            b64(b"receipt.jpg"),
            b64(b"image/jpeg")
        );
        assert_eq!(
            parse_metadata(&raw).unwrap().as_deref(),
            Some("receipt.jpg")
        );
        // EUC-KR bytes are not UTF-8: they become replacement characters.
        let raw = format!("filename {}", b64(b"\xbf\xb5\xbc\xf6.jpg"));
        let name = parse_metadata(&raw).unwrap().unwrap();
        assert!(name.ends_with(".jpg") && name.contains('\u{FFFD}'));
        assert_eq!(parse_metadata("").unwrap(), None);
        assert!(parse_metadata("filename !!!notbase64").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
    }

    #[test]
    fn checksums_name_a_known_algorithm_and_a_digest_of_its_length() {
        let sha1 = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(b"x"));
        assert!(matches!(
            Checksum::parse(&format!("sha1 {sha1}")),
            Ok(Checksum::Sha1(_))
        ));
        assert!(Checksum::parse(&format!("sha256 {sha1}")).is_err());
        assert!(Checksum::parse(&format!("md5 {sha1}")).is_err());
        assert!(Checksum::parse("sha1").is_err());
    }

    #[test]
    fn expiry_dates_are_http_dates() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:05:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(http_date(at), "Mon, 23 Nov 2026 08:05:09 GMT");
    }
}
