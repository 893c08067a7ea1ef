//! The tus request headers parsed by hand: `Upload-Metadata` and
//! `Upload-Checksum`. Arbitrary text must not panic; a file name wrapped
//! in a header as clients do must come back as sent (as text, at most 255
//! characters).
#![no_main]

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use onestop_fuzz::seeds;
use onestop_server::uploads::tus::{parse_metadata, Checksum};

fuzz_target!(init: seeds::write_if_asked(seeds::tus_headers), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let raw = String::from_utf8_lossy(rest);
        match parse_metadata(&raw) {
            Ok(name) => {
                assert!(raw.len() <= 4 * 1024);
                if let Some(name) = name {
                    assert!(name.chars().count() <= 255);
                }
            }
            Err(_) => {}
        }
        match Checksum::parse(&raw) {
            Ok(Checksum::Sha1(digest)) => assert_eq!(digest.len(), 20),
            Ok(Checksum::Sha256(digest)) => assert_eq!(digest.len(), 32),
            Err(_) => {}
        }
        return;
    }
    // A name as a client sends it: among other pairs, padded or not.
    let name = &rest[..rest.len().min(2048)];
    let key = if mode & 2 == 0 { "filename" } else { "name" };
    let value = if mode & 4 == 0 {
        STANDARD.encode(name)
    } else {
        STANDARD_NO_PAD.encode(name)
    };
    let header = format!(
        "filetype {}, {key} {value},is_confidential,relativePath  null",
        STANDARD.encode(b"image/jpeg")
    );
    let expected: String = String::from_utf8_lossy(name).chars().take(255).collect();
    match parse_metadata(&header) {
        // An empty value is sent as the key alone, which names no file.
        Ok(got) => assert_eq!(got.unwrap_or_default(), expected),
        Err(error) => panic!("{header:?} refused: {error}"),
    }
});
