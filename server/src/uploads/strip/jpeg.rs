//! The JPEG filter: segment by segment, keeping what decoding and
//! display need and rewriting the JFIF header and the first EXIF block.

use serde::{Deserialize, Serialize};

use super::front::{orientation_of, orientation_only_tiff, Container, Findings, Stage};
use super::Refusal;

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
    #[serde(flatten)]
    findings: Findings,
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
            findings: Findings::new(max_pixels),
            seen_frame: false,
            orientation_settled: false,
        }
    }

    /// Bytes held between pieces: the segment being gathered.
    pub(super) fn held(&self) -> usize {
        match &self.state {
            JpegState::Peek { buf, .. } | JpegState::Collect { buf, .. } => buf.capacity(),
            _ => 0,
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
                self.findings.size(width, height)?;
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
                self.findings.facts.orientation = orientation;
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

impl Container for JpegFilter {
    type Part = u8;
    const SIGNATURE: &'static [u8] = &[0xFF, 0xD8];
    const UNSIGNED: &'static str = "no JPEG start-of-image marker";
    const CUT_SHORT: &'static str = "the JPEG ends before its end-of-image marker";

    fn stage(&mut self) -> Stage<'_, u8> {
        match &mut self.state {
            JpegState::Start { seen } => Stage::Signature { seen },
            JpegState::Collect {
                code,
                remaining,
                buf,
            } => Stage::Collect {
                part: *code,
                remaining,
                buf,
            },
            JpegState::Pass { remaining } => Stage::Pass { remaining },
            JpegState::Skip { remaining } => Stage::Skip { remaining },
            JpegState::Done => Stage::Done,
            JpegState::Marker { .. } | JpegState::Peek { .. } | JpegState::Entropy { .. } => {
                Stage::Own
            }
        }
    }

    fn ended(&self) -> bool {
        matches!(self.state, JpegState::Done)
    }

    fn findings(&self) -> &Findings {
        &self.findings
    }

    fn next_part(&mut self) {
        self.after_segment();
    }

    fn collected(&mut self, code: u8, whole: Vec<u8>, out: &mut Vec<u8>) -> Result<(), Refusal> {
        self.rewrite(code, &whole, out);
        self.after_segment();
        Ok(())
    }

    fn own_step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], Refusal> {
        match &mut self.state {
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
            JpegState::Start { .. }
            | JpegState::Collect { .. }
            | JpegState::Pass { .. }
            | JpegState::Skip { .. }
            | JpegState::Done => unreachable!("the shared walk reads these states"),
        }
    }
}

/// Markers without a length field.
fn has_length(code: u8) -> bool {
    !matches!(code, 0xD0..=0xD9 | 0x01)
}
