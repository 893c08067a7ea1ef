//! Removing metadata from photos while their bytes stream to storage.
//!
//! Written by hand because no maintained crate filters JPEG segments or
//! PNG chunks as a stream: `img-parts`, `little_exif` and the `image`
//! crate all want the whole file in memory, which a server taking many
//! 10 MB photos at once must not do. The filter is a small state machine
//! over the container structure only (markers, lengths, chunk types); it
//! never decodes or re-encodes pixels, so the image data leaves exactly as
//! it came and at most one 64 KiB segment is held at a time.
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

use image::metadata::Orientation;
use serde::{Deserialize, Serialize};

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
            Sanitizer::Jpeg(filter) => filter.push(input, out),
            Sanitizer::Png(filter) => filter.push(input, out),
            Sanitizer::Verbatim => {
                out.extend_from_slice(input);
                Ok(())
            }
        }
    }

    /// Bytes of the file held between pieces (the capacity of the
    /// segment or chunk being gathered); never more than [`MAX_HELD`].
    pub fn held(&self) -> usize {
        let buf = match self {
            Sanitizer::Jpeg(JpegFilter {
                state: JpegState::Peek { buf, .. } | JpegState::Collect { buf, .. },
                ..
            })
            | Sanitizer::Png(PngFilter {
                state: PngState::Collect { buf, .. },
                ..
            }) => buf,
            _ => return 0,
        };
        buf.capacity()
    }

    /// The file has ended: refuses it if its structure is incomplete.
    pub fn finish(&self) -> Result<Option<PhotoFacts>, Refusal> {
        match self {
            Sanitizer::Jpeg(filter) => filter.finish().map(Some),
            Sanitizer::Png(filter) => filter.finish().map(Some),
            Sanitizer::Verbatim => Ok(None),
        }
    }
}

fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), Refusal> {
    if width == 0 || height == 0 {
        return Err(Refusal::Damaged(format!(
            "it says it is {width}×{height} pixels"
        )));
    }
    if u64::from(width) * u64::from(height) > limit {
        return Err(Refusal::TooManyPixels {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// A TIFF structure (big-endian) with one IFD holding one entry: the
/// Orientation tag. 26 bytes fixed by the TIFF 6.0 layout; written here
/// rather than with an EXIF writer crate because nothing else is ever
/// written.
fn orientation_only_tiff(orientation: u8) -> [u8; 26] {
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

fn orientation_of(tiff: &[u8]) -> Option<u8> {
    Orientation::from_exif_chunk(tiff).map(Orientation::to_exif)
}

// ---------------------------------------------------------------- JPEG

/// The longest prefix of an APPn segment looked at to recognise it.
const APP_PEEK: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
enum JpegState {
    /// Reading the two bytes of the start-of-image marker.
    Start { seen: usize },
    /// Between segments: reading `FF`, the marker code and, for markers
    /// with a payload, its two length bytes.
    Marker { header: [u8; 4], have: usize },
    /// Gathering the first bytes of a segment to decide what it is.
    Peek {
        code: u8,
        remaining: usize,
        buf: Vec<u8>,
        want: usize,
    },
    /// Gathering a whole segment (EXIF, JFIF) to rewrite it.
    Collect {
        code: u8,
        remaining: usize,
        buf: Vec<u8>,
    },
    /// Copying the rest of a kept segment.
    Pass { remaining: usize },
    /// Skipping the rest of a dropped segment.
    Skip { remaining: usize },
    /// Inside entropy-coded data after a scan header; `pending_ff` is set
    /// when the previous piece ended in `FF`.
    Entropy { pending_ff: bool },
    /// After end-of-image: everything else is dropped.
    Done,
}

#[derive(Serialize, Deserialize)]
pub struct JpegFilter {
    state: JpegState,
    max_pixels: u64,
    facts: PhotoFacts,
    seen_frame: bool,
    /// An EXIF block has been read or the first scan has begun: the
    /// orientation is that of the first EXIF block before the image data
    /// (libjpeg, and so most viewers, reads markers only up to the first
    /// scan and takes the first EXIF block), and later ones are dropped
    /// unread.
    #[serde(default)]
    orientation_settled: bool,
}

/// What to do with a segment after looking at its first bytes.
enum Verdict {
    Keep,
    Drop,
    Collect,
}

/// Whether the byte after an FF in a scan's compressed data leaves the
/// scan going: `00` (a stuffed FF) or a restart marker (`D0`–`D7`).
/// Anything else is a real marker.
fn continues_scan(byte: u8) -> bool {
    byte == 0x00 || (0xD0..=0xD7).contains(&byte)
}

impl JpegFilter {
    pub fn new(max_pixels: u64) -> Self {
        JpegFilter {
            state: JpegState::Start { seen: 0 },
            max_pixels,
            facts: PhotoFacts {
                orientation: 1,
                ..PhotoFacts::default()
            },
            seen_frame: false,
            orientation_settled: false,
        }
    }

    fn finish(&self) -> Result<PhotoFacts, Refusal> {
        match self.state {
            JpegState::Done => Ok(self.facts),
            _ => Err(Refusal::Damaged(
                "the JPEG ends before its end-of-image marker".into(),
            )),
        }
    }

    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        while !input.is_empty() {
            input = self.step(input, out)?;
        }
        Ok(())
    }

    /// Consumes some of `input` and returns the rest.
    fn step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], Refusal> {
        match &mut self.state {
            JpegState::Start { seen } => {
                let expected = [0xFF, 0xD8];
                if input[0] != expected[*seen] {
                    return Err(Refusal::Damaged("no JPEG start-of-image marker".into()));
                }
                *seen += 1;
                if *seen == 2 {
                    out.extend_from_slice(&expected);
                    self.state = JpegState::Marker {
                        header: [0; 4],
                        have: 0,
                    };
                }
                Ok(&input[1..])
            }
            JpegState::Marker { header, have } => {
                let byte = input[0];
                let rest = &input[1..];
                match *have {
                    0 if byte != 0xFF => Err(Refusal::Damaged(format!(
                        "byte {byte:#04x} where a JPEG marker should start"
                    ))),
                    // Fill bytes: any number of FF before the code.
                    1 if byte == 0xFF => Ok(rest),
                    // FF 00 is no marker. After fill bytes in a scan,
                    // libjpeg and zune-jpeg read it as an FF data byte
                    // and carry on decoding; between segments they skip
                    // it. Either way, cutting the scan here or skipping
                    // a "segment" by a length read after it would change
                    // what decodes.
                    1 if byte == 0x00 => Err(Refusal::Damaged(
                        "a stuffed zero (FF 00) where a JPEG marker should be".into(),
                    )),
                    0 => {
                        header[0] = byte;
                        *have = 1;
                        Ok(rest)
                    }
                    1 => {
                        header[1] = byte;
                        *have = 2;
                        if !has_length(byte) {
                            self.standalone_marker(byte, out)?;
                        }
                        Ok(rest)
                    }
                    2 => {
                        header[2] = byte;
                        *have = 3;
                        Ok(rest)
                    }
                    _ => {
                        header[3] = byte;
                        let header = *header;
                        self.segment_start(header, out)?;
                        Ok(rest)
                    }
                }
            }
            JpegState::Peek {
                code,
                remaining,
                buf,
                want,
            } => {
                let needed = (*want - buf.len()).min(*remaining);
                // Room for the rest at once: a buffer restored from a
                // saved state has only the room its bytes take, and
                // growing it piece by piece would double it past the
                // bound.
                buf.reserve_exact(needed);
                let take = needed.min(input.len());
                buf.extend_from_slice(&input[..take]);
                *remaining -= take;
                if buf.len() == *want || *remaining == 0 {
                    let (code, remaining, buf) = (*code, *remaining, std::mem::take(buf));
                    self.decide(code, remaining, buf, out)?;
                }
                Ok(&input[take..])
            }
            JpegState::Collect {
                code,
                remaining,
                buf,
            } => {
                buf.reserve_exact(*remaining);
                let take = (*remaining).min(input.len());
                buf.extend_from_slice(&input[..take]);
                *remaining -= take;
                if *remaining == 0 {
                    let (code, buf) = (*code, std::mem::take(buf));
                    self.rewrite(code, &buf, out);
                    self.state = JpegState::Marker {
                        header: [0; 4],
                        have: 0,
                    };
                }
                Ok(&input[take..])
            }
            JpegState::Pass { remaining } => {
                let take = (*remaining).min(input.len());
                out.extend_from_slice(&input[..take]);
                *remaining -= take;
                if *remaining == 0 {
                    self.after_segment();
                }
                Ok(&input[take..])
            }
            JpegState::Skip { remaining } => {
                let take = (*remaining).min(input.len());
                *remaining -= take;
                if *remaining == 0 {
                    self.after_segment();
                }
                Ok(&input[take..])
            }
            JpegState::Entropy { pending_ff } => {
                if *pending_ff {
                    let byte = input[0];
                    if continues_scan(byte) {
                        // A stuffed FF or a restart marker: still data.
                        out.extend_from_slice(&[0xFF, byte]);
                        *pending_ff = false;
                        return Ok(&input[1..]);
                    }
                    // A real marker ends the scan.
                    self.state = JpegState::Marker {
                        header: [0xFF, 0, 0, 0],
                        have: 1,
                    };
                    return Ok(input);
                }
                // Stuffed FFs and restart markers within this piece are
                // data too: the whole run up to a real marker is copied at
                // once (in compressed data an FF comes every few hundred
                // bytes).
                let mut from = 0;
                loop {
                    let Some(found) = memchr::memchr(0xFF, &input[from..]) else {
                        out.extend_from_slice(input);
                        return Ok(&[]);
                    };
                    let at = from + found;
                    match input.get(at + 1) {
                        Some(&next) if continues_scan(next) => {
                            from = at + 2;
                        }
                        // A marker, or an FF whose next byte is in the next
                        // piece.
                        _ => {
                            out.extend_from_slice(&input[..at]);
                            *pending_ff = true;
                            return Ok(&input[at + 1..]);
                        }
                    }
                }
            }
            JpegState::Done => Ok(&[]),
        }
    }

    /// After a scan header comes entropy-coded data; after any other
    /// segment, the next marker.
    fn after_segment(&mut self) {
        self.state = JpegState::Marker {
            header: [0; 4],
            have: 0,
        };
    }

    fn standalone_marker(&mut self, code: u8, out: &mut Vec<u8>) -> Result<(), Refusal> {
        match code {
            0xD9 => {
                if !self.seen_frame {
                    return Err(Refusal::Damaged("the JPEG has no image frame".into()));
                }
                out.extend_from_slice(&[0xFF, 0xD9]);
                self.state = JpegState::Done;
                Ok(())
            }
            0xD8 => Err(Refusal::Damaged("a second start-of-image marker".into())),
            // Restart markers and TEM outside a scan carry nothing.
            _ => {
                out.extend_from_slice(&[0xFF, code]);
                self.after_segment();
                Ok(())
            }
        }
    }

    fn segment_start(&mut self, header: [u8; 4], out: &mut Vec<u8>) -> Result<(), Refusal> {
        let code = header[1];
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length < 2 {
            return Err(Refusal::Damaged(format!(
                "segment {code:#04x} has an impossible length"
            )));
        }
        let remaining = length - 2;
        match code {
            0xE0..=0xEF => {
                self.state = JpegState::Peek {
                    code,
                    remaining,
                    buf: Vec::with_capacity(APP_PEEK),
                    want: APP_PEEK,
                };
                if remaining == 0 {
                    self.decide(code, 0, Vec::new(), out)?;
                }
            }
            // Frame headers: look at the size first.
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if remaining < 5 {
                    return Err(Refusal::Damaged("a frame header is too short".into()));
                }
                self.state = JpegState::Peek {
                    code,
                    remaining,
                    buf: Vec::with_capacity(5),
                    want: 5,
                };
            }
            // Scan header, then entropy-coded data.
            0xDA => {
                if !self.seen_frame {
                    return Err(Refusal::Damaged(
                        "a scan comes before the frame header".into(),
                    ));
                }
                if remaining == 0 {
                    return Err(Refusal::Damaged("an empty scan header".into()));
                }
                // Read whole (it is short), then the data follows.
                self.state = JpegState::Peek {
                    code,
                    remaining,
                    buf: Vec::with_capacity(remaining),
                    want: remaining,
                };
            }
            // Tables, restart interval, line count, expansion: needed to
            // decode.
            0xC4 | 0xCC | 0xDB | 0xDC | 0xDD | 0xDF => {
                out.extend_from_slice(&header);
                self.state = JpegState::Pass { remaining };
                if remaining == 0 {
                    self.after_segment();
                }
            }
            // JPEG extensions (JPG, JPG0–JPG13, JPEG-LS among them): no
            // phone writes them, libjpeg refuses them, and other decoders
            // stop at them in ways that hide damage after them.
            0xC8 | 0xF0..=0xFD => {
                return Err(Refusal::Damaged(format!(
                    "a JPEG extension marker ({code:#04x}) no photo carries"
                )));
            }
            // Comments and reserved markers: dropped.
            _ => {
                self.state = JpegState::Skip { remaining };
                if remaining == 0 {
                    self.after_segment();
                }
            }
        }
        Ok(())
    }

    /// Acts on a segment whose first bytes (`head`) have been read;
    /// `remaining` bytes of it are still to come.
    fn decide(
        &mut self,
        code: u8,
        remaining: usize,
        head: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let length = head.len() + remaining + 2;
        let header = [0xFF, code, (length >> 8) as u8, length as u8];
        if code == 0xDA {
            // The whole scan header has been read; the data follows.
            out.extend_from_slice(&header);
            out.extend_from_slice(&head);
            self.state = JpegState::Entropy { pending_ff: false };
            self.orientation_settled = true;
            return Ok(());
        }
        let verdict = match code {
            0xE0 if head.starts_with(b"JFIF\0") => Verdict::Collect,
            0xE1 if head.starts_with(b"Exif\0") && !self.orientation_settled => {
                self.orientation_settled = true;
                Verdict::Collect
            }
            0xE2 if head.starts_with(b"ICC_PROFILE\0") => Verdict::Keep,
            0xEE if head.starts_with(b"Adobe") => Verdict::Keep,
            0xE0..=0xEF => Verdict::Drop,
            _ => {
                // A frame header: precision, height, width. A second one
                // is refused: viewers show the first frame (or give up),
                // so the facts of a later one would not describe the
                // photo.
                if self.seen_frame {
                    return Err(Refusal::Damaged("a second frame header".into()));
                }
                let height = u32::from(u16::from_be_bytes([head[1], head[2]]));
                let width = u32::from(u16::from_be_bytes([head[3], head[4]]));
                check_pixels(width, height, self.max_pixels)?;
                self.facts.width = width;
                self.facts.height = height;
                self.seen_frame = true;
                Verdict::Keep
            }
        };
        match verdict {
            Verdict::Keep => {
                out.extend_from_slice(&header);
                out.extend_from_slice(&head);
                self.state = JpegState::Pass { remaining };
            }
            Verdict::Drop => self.state = JpegState::Skip { remaining },
            Verdict::Collect => {
                let mut buf = head;
                buf.reserve(remaining);
                self.state = JpegState::Collect {
                    code,
                    remaining,
                    buf,
                };
            }
        }
        if remaining == 0 {
            if let JpegState::Collect { buf, .. } = &mut self.state {
                let buf = std::mem::take(buf);
                self.rewrite(code, &buf, out);
            }
            self.after_segment();
        }
        Ok(())
    }

    /// Writes the privacy-safe replacement of a collected segment.
    fn rewrite(&mut self, code: u8, segment: &[u8], out: &mut Vec<u8>) {
        match code {
            0xE0 => {
                // JFIF: version, density units and density; the embedded
                // thumbnail (a copy of the photo) is dropped.
                if segment.len() >= 12 {
                    out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
                    out.extend_from_slice(&segment[..12]);
                    out.extend_from_slice(&[0, 0]);
                }
            }
            _ => {
                // EXIF: only the orientation survives.
                let orientation = orientation_of(&segment[6.min(segment.len())..]).unwrap_or(1);
                self.facts.orientation = orientation;
                if orientation != 1 {
                    let tiff = orientation_only_tiff(orientation);
                    let length = (2 + 6 + tiff.len()) as u16;
                    out.extend_from_slice(&[0xFF, 0xE1]);
                    out.extend_from_slice(&length.to_be_bytes());
                    out.extend_from_slice(b"Exif\0\0");
                    out.extend_from_slice(&tiff);
                }
            }
        }
    }
}

/// Markers without a length field.
fn has_length(code: u8) -> bool {
    !matches!(code, 0xD0..=0xD9 | 0x01)
}

// ----------------------------------------------------------------- PNG

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// Largest `eXIf` chunk read for its orientation; a bigger one is just
/// dropped.
const MAX_EXIF_CHUNK: usize = MAX_HELD;

/// Chunks kept: the critical ones and those that change how pixels look.
fn png_chunk_kept(kind: &[u8; 4]) -> bool {
    matches!(
        kind,
        b"IHDR"
            | b"PLTE"
            | b"IDAT"
            | b"IEND"
            | b"tRNS"
            | b"gAMA"
            | b"cHRM"
            | b"sRGB"
            | b"iCCP"
            | b"sBIT"
            | b"bKGD"
            | b"hIST"
            | b"pHYs"
            | b"sPLT"
            | b"cICP"
            | b"mDCV"
            | b"cLLI"
            | b"mDCv"
            | b"cLLi"
    )
}

#[derive(Debug, Serialize, Deserialize)]
enum PngState {
    Signature {
        seen: usize,
    },
    /// Reading length and type of the next chunk.
    Header {
        buf: [u8; 8],
        have: usize,
    },
    /// Gathering a chunk's data and CRC (IHDR, eXIf).
    Collect {
        kind: [u8; 4],
        remaining: usize,
        buf: Vec<u8>,
    },
    Pass {
        remaining: usize,
    },
    Skip {
        remaining: usize,
    },
    Done,
}

#[derive(Serialize, Deserialize)]
pub struct PngFilter {
    state: PngState,
    max_pixels: u64,
    facts: PhotoFacts,
    seen_header: bool,
    seen_data: bool,
}

impl PngFilter {
    pub fn new(max_pixels: u64) -> Self {
        PngFilter {
            state: PngState::Signature { seen: 0 },
            max_pixels,
            facts: PhotoFacts {
                orientation: 1,
                ..PhotoFacts::default()
            },
            seen_header: false,
            seen_data: false,
        }
    }

    fn finish(&self) -> Result<PhotoFacts, Refusal> {
        match self.state {
            PngState::Done => Ok(self.facts),
            _ => Err(Refusal::Damaged(
                "the PNG ends before its IEND chunk".into(),
            )),
        }
    }

    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        while !input.is_empty() {
            input = self.step(input, out)?;
        }
        Ok(())
    }

    fn step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], Refusal> {
        match &mut self.state {
            PngState::Signature { seen } => {
                if input[0] != PNG_SIGNATURE[*seen] {
                    return Err(Refusal::Damaged("no PNG signature".into()));
                }
                *seen += 1;
                if *seen == PNG_SIGNATURE.len() {
                    out.extend_from_slice(PNG_SIGNATURE);
                    self.state = PngState::Header {
                        buf: [0; 8],
                        have: 0,
                    };
                }
                Ok(&input[1..])
            }
            PngState::Header { buf, have } => {
                let take = (8 - *have).min(input.len());
                buf[*have..*have + take].copy_from_slice(&input[..take]);
                *have += take;
                if *have == 8 {
                    let header = *buf;
                    self.chunk_start(header, out)?;
                }
                Ok(&input[take..])
            }
            PngState::Collect {
                kind,
                remaining,
                buf,
            } => {
                // As for JPEG: a restored buffer gets room for the rest
                // at once.
                buf.reserve_exact(*remaining);
                let take = (*remaining).min(input.len());
                buf.extend_from_slice(&input[..take]);
                *remaining -= take;
                if *remaining == 0 {
                    let (kind, buf) = (*kind, std::mem::take(buf));
                    self.collected(kind, &buf, out)?;
                }
                Ok(&input[take..])
            }
            PngState::Pass { remaining } => {
                let take = (*remaining).min(input.len());
                out.extend_from_slice(&input[..take]);
                *remaining -= take;
                if *remaining == 0 {
                    self.next_chunk();
                }
                Ok(&input[take..])
            }
            PngState::Skip { remaining } => {
                let take = (*remaining).min(input.len());
                *remaining -= take;
                if *remaining == 0 {
                    self.next_chunk();
                }
                Ok(&input[take..])
            }
            PngState::Done => Ok(&[]),
        }
    }

    fn next_chunk(&mut self) {
        self.state = PngState::Header {
            buf: [0; 8],
            have: 0,
        };
    }

    fn chunk_start(&mut self, header: [u8; 8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if length > i32::MAX as u32 {
            return Err(Refusal::Damaged("a chunk has an impossible length".into()));
        }
        let kind = [header[4], header[5], header[6], header[7]];
        // Data and the CRC after it.
        let remaining = length as usize + 4;
        if !self.seen_header && &kind != b"IHDR" {
            return Err(Refusal::Damaged("the PNG does not start with IHDR".into()));
        }
        match &kind {
            b"IHDR" => {
                if self.seen_header || length != 13 {
                    return Err(Refusal::Damaged("a malformed IHDR chunk".into()));
                }
                out.extend_from_slice(&header);
                self.state = PngState::Collect {
                    kind,
                    remaining,
                    buf: Vec::with_capacity(remaining),
                };
            }
            b"eXIf" if remaining <= MAX_EXIF_CHUNK && !self.seen_data => {
                self.state = PngState::Collect {
                    kind,
                    remaining,
                    buf: Vec::with_capacity(remaining),
                };
            }
            b"IEND" => {
                if !self.seen_data || length != 0 {
                    return Err(Refusal::Damaged("the PNG has no image data".into()));
                }
                // Its CRC is fixed; whatever follows IEND is dropped.
                out.extend_from_slice(&header);
                out.extend_from_slice(&[0xAE, 0x42, 0x60, 0x82]);
                self.state = PngState::Done;
            }
            kind if png_chunk_kept(kind) => {
                if kind == b"IDAT" && !self.seen_data {
                    self.seen_data = true;
                    self.write_orientation(out);
                }
                out.extend_from_slice(&header);
                self.state = PngState::Pass { remaining };
            }
            _ => self.state = PngState::Skip { remaining },
        }
        Ok(())
    }

    fn collected(&mut self, kind: [u8; 4], data: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        let body = &data[..data.len() - 4];
        if &kind == b"IHDR" {
            let width = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let height = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            check_pixels(width, height, self.max_pixels)?;
            self.facts.width = width;
            self.facts.height = height;
            self.seen_header = true;
            out.extend_from_slice(data);
        } else {
            self.facts.orientation = orientation_of(body).unwrap_or(1);
        }
        self.next_chunk();
        Ok(())
    }

    /// A minimal `eXIf` chunk before the image data when the photo is not
    /// upright.
    fn write_orientation(&self, out: &mut Vec<u8>) {
        if self.facts.orientation == 1 {
            return;
        }
        let tiff = orientation_only_tiff(self.facts.orientation);
        out.extend_from_slice(&(tiff.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"eXIf");
        crc.update(&tiff);
        out.extend_from_slice(b"eXIf");
        out.extend_from_slice(&tiff);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
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
}
