//! Removing metadata from photos while their bytes stream to storage.
//!
//! Written by hand because no maintained crate filters JPEG segments or
//! PNG chunks as a stream: `img-parts`, `little_exif` and the `image`
//! crate all want the whole file in memory, which a server taking many
//! 10 MB photos at once must not do. The filter is a small state machine
//! over the container structure only (markers, lengths, chunk types); it
//! never decodes or re-encodes pixels, so the image data leaves exactly as
//! it came and at most one 64 KiB segment is held at a time. Both
//! formats walk their container the same way (`front`): a signature,
//! then segments or chunks whose rest is copied, dropped or gathered.
//!
//! JPEG: kept are the segments needed to decode and display the image
//! (quantisation and Huffman tables, frame and scan headers, restart
//! interval, the entropy-coded data, the ICC colour profile, Adobe's
//! colour-transform flags and the JFIF header without its thumbnail).
//! Dropped are every other APPn segment (EXIF, XMP, IPTC/Photoshop,
//! MPF secondary images, maker data), comments, and whatever follows the
//! end-of-image marker (phones append motion-photo videos and vendor
//! trailers there). The first EXIF block before the image data is
//! replaced by a minimal one holding only the Orientation tag, so the
//! photo still displays upright in any viewer; any other EXIF block is
//! dropped like the rest, so the stored file carries one orientation at
//! most, the one the facts report.
//!
//! PNG: kept are the critical chunks and those that change how pixels
//! look (transparency, gamma, chromaticities, sRGB, ICC profile,
//! significant bits, background, histogram, physical size, suggested
//! palettes, HDR colour information). Dropped are text chunks (`tEXt`,
//! `zTXt`, `iTXt`), `eXIf`, `tIME`, animation chunks and any private or
//! unknown chunk, and anything after `IEND`. An orientation other than
//! upright in `eXIf` is kept as a minimal `eXIf` chunk.

mod front;
mod jpeg;
mod png;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use jpeg::JpegFilter;
pub use png::PngFilter;

/// Why a photo is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The container structure is broken or incomplete.
    Damaged(String),
    TooManyPixels {
        width: u32,
        height: u32,
        limit: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Damaged(what) => write!(f, "the photo is damaged or incomplete: {what}"),
            Refusal::TooManyPixels {
                width,
                height,
                limit,
            } => write!(
                f,
                "the photo is {width}×{height} pixels, more than the limit of {limit} pixels"
            ),
        }
    }
}

/// What the filter learnt about the photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PhotoFacts {
    pub width: u32,
    pub height: u32,
    /// EXIF orientation, 1 (upright) to 8.
    pub orientation: u8,
}

/// The most bytes a filter holds between pieces: one JPEG segment (its
/// length is 16 bits) or one PNG `eXIf` chunk read for its orientation.
pub const MAX_HELD: usize = 64 * 1024;

/// The filter for one file, chosen by its sniffed type. Its state can be
/// saved between the pieces of a resumable upload (serde).
#[derive(Serialize, Deserialize)]
pub enum Sanitizer {
    Jpeg(JpegFilter),
    Png(PngFilter),
    /// PDFs are stored as they come.
    Verbatim,
}

impl Sanitizer {
    pub fn for_media_type(media_type: &str, max_pixels: u64) -> Self {
        match media_type {
            "image/jpeg" => Sanitizer::Jpeg(JpegFilter::new(max_pixels)),
            "image/png" => Sanitizer::Png(PngFilter::new(max_pixels)),
            _ => Sanitizer::Verbatim,
        }
    }

    /// Filters the next piece of the file, appending what is to be stored
    /// to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        match self {
            Sanitizer::Jpeg(filter) => front::push(filter, input, out),
            Sanitizer::Png(filter) => front::push(filter, input, out),
            Sanitizer::Verbatim => {
                out.extend_from_slice(input);
                Ok(())
            }
        }
    }

    /// Bytes of the file held between pieces (the capacity of the
    /// segment or chunk being gathered); never more than [`MAX_HELD`].
    pub fn held(&self) -> usize {
        match self {
            Sanitizer::Jpeg(filter) => filter.held(),
            Sanitizer::Png(filter) => filter.held(),
            Sanitizer::Verbatim => 0,
        }
    }

    /// The file has ended: refuses it if its structure is incomplete.
    pub fn finish(&self) -> Result<Option<PhotoFacts>, Refusal> {
        match self {
            Sanitizer::Jpeg(filter) => front::finish(filter).map(Some),
            Sanitizer::Png(filter) => front::finish(filter).map(Some),
            Sanitizer::Verbatim => Ok(None),
        }
    }
}
