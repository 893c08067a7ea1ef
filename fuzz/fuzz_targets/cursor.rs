//! The pagination cursor, a token clients send back: arbitrary tokens
//! must not panic, and a token that decodes names a cursor whose own
//! token decodes to it again.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use onestop_fuzz::seeds;
use onestop_server::pagination::Cursor;

fuzz_target!(init: seeds::write_if_asked(seeds::cursor), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Either the token itself or the JSON inside it, so the fuzzer
    // reaches the JSON without having to find base64 first.
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        URL_SAFE_NO_PAD.encode(rest)
    };
    if let Ok(cursor) = Cursor::decode(&token) {
        let again = Cursor::decode(&cursor.encode());
        match again {
            Ok(again) => assert_eq!(again, cursor),
            Err(error) => panic!("{cursor:?} does not survive its own token: {error}"),
        }
    }
});
