//! What the JPEG and PNG filters share: the walk through a container (the
//! signature it starts with, then segments or chunks whose rest is
//! copied, dropped or gathered whole, each within the bytes at hand), the
//! pixel limit with the facts found so far, and the orientation-only EXIF
//! both write. Each format says which of its states are which, and what
//! its own states and gathered parts do ([`Container`]).

use image::metadata::Orientation;
use serde::{Deserialize, Serialize};

use super::{PhotoFacts, Refusal};

/// Where a filter stands, as the shared walk sees it.
pub(super) enum Stage<'s, P> {
    /// Reading the signature; `seen` bytes of it have matched.
    Signature { seen: &'s mut usize },
    /// Gathering the rest of the segment or chunk `part` whole.
    Collect {
        part: P,
        remaining: &'s mut usize,
        buf: &'s mut Vec<u8>,
    },
    /// Copying the rest of a kept segment or chunk.
    Pass { remaining: &'s mut usize },
    /// Skipping the rest of a dropped segment or chunk.
    Skip { remaining: &'s mut usize },
    /// After the end of the image: everything else is dropped.
    Done,
    /// A state of the format's own (markers, chunk headers, scans).
    Own,
}

/// A container format, as the shared walk drives it.
pub(super) trait Container {
    /// What names a segment or chunk being gathered: a JPEG marker code,
    /// a PNG chunk type.
    type Part: Copy;
    /// The bytes every file of the format starts with.
    const SIGNATURE: &'static [u8];
    /// What is wrong when they are not there.
    const UNSIGNED: &'static str;
    /// What is wrong when the file ends before its image does.
    const CUT_SHORT: &'static str;

    fn stage(&mut self) -> Stage<'_, Self::Part>;
    /// Whether the end of the image has been read.
    fn ended(&self) -> bool;
    fn findings(&self) -> &Findings;
    /// The signature, or a segment or chunk, has been read to its end:
    /// the next one starts.
    fn next_part(&mut self);
    /// The segment or chunk `part` has been gathered `whole`.
    fn collected(
        &mut self,
        part: Self::Part,
        whole: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal>;
    /// Consumes some of `input` in a state of the format's own and
    /// returns the rest.
    fn own_step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], Refusal>;
}

/// Filters the next piece of the file, appending what is to be stored to
/// `out`.
pub(super) fn push(
    filter: &mut impl Container,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    while !input.is_empty() {
        input = step(filter, input, out)?;
    }
    Ok(())
}

/// The file has ended: its facts, or why it is incomplete.
pub(super) fn finish<C: Container>(filter: &C) -> Result<PhotoFacts, Refusal> {
    if filter.ended() {
        Ok(filter.findings().facts)
    } else {
        Err(Refusal::Damaged(C::CUT_SHORT.into()))
    }
}

/// Consumes some of `input` and returns the rest.
fn step<'a, C: Container>(
    filter: &mut C,
    input: &'a [u8],
    out: &mut Vec<u8>,
) -> Result<&'a [u8], Refusal> {
    match filter.stage() {
        Stage::Signature { seen } => {
            if input[0] != C::SIGNATURE[*seen] {
                return Err(Refusal::Damaged(C::UNSIGNED.into()));
            }
            *seen += 1;
            if *seen == C::SIGNATURE.len() {
                out.extend_from_slice(C::SIGNATURE);
                filter.next_part();
            }
            Ok(&input[1..])
        }
        Stage::Collect {
            part,
            remaining,
            buf,
        } => {
            // Room for the rest at once: a buffer restored from a saved
            // state has only the room its bytes take, and growing it piece
            // by piece would double it past the bound.
            buf.reserve_exact(*remaining);
            let take = (*remaining).min(input.len());
            buf.extend_from_slice(&input[..take]);
            *remaining -= take;
            if *remaining == 0 {
                let whole = std::mem::take(buf);
                filter.collected(part, whole, out)?;
            }
            Ok(&input[take..])
        }
        Stage::Pass { remaining } => {
            let take = (*remaining).min(input.len());
            out.extend_from_slice(&input[..take]);
            *remaining -= take;
            if *remaining == 0 {
                filter.next_part();
            }
            Ok(&input[take..])
        }
        Stage::Skip { remaining } => {
            let take = (*remaining).min(input.len());
            *remaining -= take;
            if *remaining == 0 {
                filter.next_part();
            }
            Ok(&input[take..])
        }
        Stage::Done => Ok(&[]),
        Stage::Own => filter.own_step(input, out),
    }
}

/// The pixel limit a filter keeps to and the facts it has found so far;
/// saved with the filter, among its own fields.
#[derive(Serialize, Deserialize)]
pub(super) struct Findings {
    max_pixels: u64,
    pub facts: PhotoFacts,
}

impl Findings {
    /// Nothing found yet: no size, upright.
    pub fn new(max_pixels: u64) -> Self {
        Findings {
            max_pixels,
            facts: PhotoFacts {
                orientation: 1,
                ..PhotoFacts::default()
            },
        }
    }

    /// The size the image header gives, refused when empty or over the
    /// pixel limit.
    pub fn size(&mut self, width: u32, height: u32) -> Result<(), Refusal> {
        if width == 0 || height == 0 {
            return Err(Refusal::Damaged(format!(
                "it says it is {width}×{height} pixels"
            )));
        }
        let limit = self.max_pixels;
        if u64::from(width) * u64::from(height) > limit {
            return Err(Refusal::TooManyPixels {
                width,
                height,
                limit,
            });
        }
        self.facts.width = width;
        self.facts.height = height;
        Ok(())
    }
}

/// A TIFF structure (big-endian) with one IFD holding one entry: the
/// Orientation tag. 26 bytes fixed by the TIFF 6.0 layout; written here
/// rather than with an EXIF writer crate because nothing else is ever
/// written.
pub(super) fn orientation_only_tiff(orientation: u8) -> [u8; 26] {
    let mut tiff = [0u8; 26];
    tiff[..8].copy_from_slice(b"MM\0\x2a\0\0\0\x08");
    tiff[8..10].copy_from_slice(&1u16.to_be_bytes()); // one entry
    tiff[10..12].copy_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff[12..14].copy_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff[14..18].copy_from_slice(&1u32.to_be_bytes()); // one value
    tiff[18..20].copy_from_slice(&u16::from(orientation).to_be_bytes());
    // Two bytes of padding and a zero "next IFD" offset stay zero.
    tiff
}

pub(super) fn orientation_of(tiff: &[u8]) -> Option<u8> {
    Orientation::from_exif_chunk(tiff).map(Orientation::to_exif)
}
