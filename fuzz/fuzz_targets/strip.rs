//! The photo filter: arbitrary bytes, cut into arbitrary pieces, with its
//! state saved and restored between two of them as a resumable upload
//! does. It must not panic, must hold at most `MAX_HELD` bytes, must give
//! the same verdict and bytes however the file is cut, and what it lets
//! through must be a clean file it would let through unchanged, which
//! decodes to the same pixels whenever the original did.
#![no_main]

use image::ImageFormat;
use libfuzzer_sys::fuzz_target;
use onestop_fuzz::{photos, pieces, seeds, take_seed};
use onestop_server::uploads::strip::{PhotoFacts, Refusal, Sanitizer, MAX_HELD};

/// Small enough that decoding what passes stays cheap.
const MAX_PIXELS: u64 = 1 << 16;

type Verdict = Result<(Vec<u8>, PhotoFacts), Refusal>;

fn filter(media_type: &str, pieces: &[&[u8]], save_after: Option<usize>) -> Verdict {
    let mut sanitizer = Sanitizer::for_media_type(media_type, MAX_PIXELS);
    let mut out = Vec::new();
    let mut taken = 0;
    for (i, piece) in pieces.iter().enumerate() {
        sanitizer.push(piece, &mut out)?;
        taken += piece.len();
        assert!(
            sanitizer.held() <= MAX_HELD,
            "{} bytes held",
            sanitizer.held()
        );
        // What is added to a photo is a few dozen bytes per segment it
        // replaces, never more than the segment itself.
        assert!(
            out.len() <= 2 * taken + 64,
            "{} bytes out of {taken}",
            out.len()
        );
        if save_after == Some(i) {
            let saved = serde_json::to_vec(&sanitizer).expect("the state saves");
            sanitizer = serde_json::from_slice(&saved).expect("the saved state loads");
        }
    }
    let facts = sanitizer.finish()?.expect("a photo filter reports facts");
    Ok((out, facts))
}

fuzz_target!(init: seeds::write_if_asked(seeds::strip), |data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((seed, file)) = take_seed(rest) else {
        return;
    };
    let (media_type, format) = if flags & 1 == 1 {
        ("image/png", ImageFormat::Png)
    } else {
        ("image/jpeg", ImageFormat::Jpeg)
    };

    let whole = filter(media_type, &[file], None);
    let cut = pieces(file, seed);
    let save_after = usize::from(flags >> 1) % (cut.len() + 1);
    let in_pieces = filter(media_type, &cut, Some(save_after));
    assert_eq!(whole, in_pieces, "the verdict depends on the pieces");

    let Ok((out, facts)) = whole else {
        return;
    };
    let clean = match format {
        ImageFormat::Png => photos::check_png(&out),
        _ => photos::check_jpeg(&out),
    };
    if let Err(problem) = clean {
        panic!("the filtered file is not clean: {problem}");
    }
    assert!((1..=8).contains(&facts.orientation));
    assert!(u64::from(facts.width) * u64::from(facts.height) <= MAX_PIXELS);

    // The filter's own output passes it unchanged.
    match filter(media_type, &[&out], None) {
        Ok((again, again_facts)) => {
            assert!(again == out, "filtering twice changes the bytes");
            assert_eq!(again_facts, facts, "filtering twice changes the facts");
        }
        Err(refusal) => panic!("the filtered file is refused: {refusal}"),
    }

    // Whatever decoded before decodes to the same pixels after. The
    // filter drops a segment under a reserved JPEG marker (which no
    // encoder writes) by its length, as the standard says; decoders
    // recover from one inside a scan each their own way, so such files
    // are left out of this comparison.
    let reserved = format == ImageFormat::Jpeg
        && file
            .windows(2)
            .any(|w| w[0] == 0xFF && (0x02..=0xBF).contains(&w[1]));
    // Likewise a segment the filter drops (APPn, COM) once image data has
    // begun: no camera writes one there, and on a scan cut short a
    // decoder either stops at it or decodes on, so the pixels differ
    // though both come from the same missing data.
    let dropped_after_scan = format == ImageFormat::Jpeg
        && file
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .is_some_and(|sos| {
                file[sos..]
                    .windows(2)
                    .any(|w| w[0] == 0xFF && (matches!(w[1], 0xE0..=0xEF | 0xFE)))
            });
    if reserved || dropped_after_scan {
        return;
    }
    if let Some(before) = photos::decode(file, format) {
        match photos::decode(&out, format) {
            Some(after) => assert!(before == after, "the pixels changed"),
            None => panic!("the filtered file no longer decodes"),
        }
    }
});
