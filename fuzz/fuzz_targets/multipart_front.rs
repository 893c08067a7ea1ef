//! The framing check in front of the multipart parser: arbitrary bodies
//! and boundaries under arbitrary limits, cut into arbitrary pieces. It
//! must not panic, and the verdict (and the parts counted) must not
//! depend on how the body is cut; once refused, it stays refused the
//! same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onestop_fuzz::{pieces, seeds, take_seed};
use onestop_server::uploads::multipart_front::{FrontError, FrontLimits, MultipartFront};

fn verdict(boundary: &[u8], limits: FrontLimits, pieces: &[&[u8]]) -> Result<usize, FrontError> {
    let mut front = MultipartFront::new(boundary, limits);
    for piece in pieces {
        if let Err(error) = front.feed(piece) {
            assert_eq!(
                front.feed(b"\r\n--"),
                Err(error.clone()),
                "a refusal wears off"
            );
            assert_eq!(front.finish(), Err(error.clone()), "a refusal wears off");
            return Err(error);
        }
    }
    front.finish()?;
    Ok(front.parts())
}

fuzz_target!(init: seeds::write_if_asked(seeds::multipart_front), |data: &[u8]| {
    let [length, preamble, part_headers, epilogue, parts, rest @ ..] = data else {
        return;
    };
    let Some((seed, rest)) = take_seed(rest) else {
        return;
    };
    let length = 1 + usize::from(*length) % 70;
    if rest.len() < length {
        return;
    }
    let (boundary, body) = rest.split_at(length);
    let limits = FrontLimits {
        preamble: usize::from(*preamble) * 64,
        part_headers: usize::from(*part_headers) * 64,
        parts: usize::from(*parts),
        epilogue: usize::from(*epilogue) * 64,
    };

    let whole = verdict(boundary, limits, &[body]);
    let cut = verdict(boundary, limits, &pieces(body, seed));
    assert_eq!(whole, cut, "the verdict depends on the pieces");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, verdict(boundary, limits, &bytes), "byte by byte");
});
