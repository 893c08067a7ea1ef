//! What the fuzz targets share: cutting an input into pieces the way a
//! network would, writing each target's seed corpus, and independent
//! checks of what the photo filter lets through.

#![forbid(unsafe_code)]

pub mod photos;
pub mod seeds;

/// Cuts a byte string into pieces whose lengths follow a small generator
/// seeded from the input, so the fuzzer steers the cuts as well as the
/// bytes. The two low bits of the seed choose the largest piece (1, 8,
/// 300 or 70 000 bytes); bit 2 allows empty pieces.
pub fn pieces(data: &[u8], seed: u16) -> Vec<&[u8]> {
    let largest = match seed & 3 {
        0 => 1,
        1 => 8,
        2 => 300,
        _ => 70_000,
    };
    let smallest = if seed & 4 == 0 { 1 } else { 0 };
    let mut state = u64::from(seed) ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let span = (largest - smallest + 1) as u64;
        let len = (smallest + (splitmix64(&mut state) % span) as usize).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        out.push(piece);
        rest = tail;
    }
    out
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Splits off the two-byte piece seed at the start of an input.
pub fn take_seed(data: &[u8]) -> Option<(u16, &[u8])> {
    match data {
        [a, b, rest @ ..] => Some((u16::from_le_bytes([*a, *b]), rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in 0..64 {
            let cut = pieces(&data, seed);
            assert_eq!(cut.concat(), data, "seed {seed}");
            if seed & 3 == 0 && seed & 4 == 0 {
                assert!(cut.iter().all(|p| p.len() == 1));
            }
        }
        assert!(pieces(&[], 7).is_empty());
    }
}
