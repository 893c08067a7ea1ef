//! The PNG filter: chunk by chunk, keeping the critical chunks and those
//! that change how pixels look, with the orientation as a minimal `eXIf`.

use serde::{Deserialize, Serialize};

use super::front::{orientation_of, orientation_only_tiff, Container, Findings, Stage};
use super::{Refusal, MAX_HELD};

pub(super) const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// Largest `eXIf` chunk read for its orientation; a bigger one is just
/// dropped.
pub(super) const MAX_EXIF_CHUNK: usize = MAX_HELD;

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
    #[serde(flatten)]
    findings: Findings,
    seen_header: bool,
    seen_data: bool,
}

impl PngFilter {
    pub fn new(max_pixels: u64) -> Self {
        PngFilter {
            state: PngState::Signature { seen: 0 },
            findings: Findings::new(max_pixels),
            seen_header: false,
            seen_data: false,
        }
    }

    /// Bytes held between pieces: the chunk being gathered.
    pub(super) fn held(&self) -> usize {
        match &self.state {
            PngState::Collect { buf, .. } => buf.capacity(),
            _ => 0,
        }
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

    /// A minimal `eXIf` chunk before the image data when the photo is not
    /// upright.
    fn write_orientation(&self, out: &mut Vec<u8>) {
        let orientation = self.findings.facts.orientation;
        if orientation == 1 {
            return;
        }
        let tiff = orientation_only_tiff(orientation);
        out.extend_from_slice(&(tiff.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"eXIf");
        crc.update(&tiff);
        out.extend_from_slice(b"eXIf");
        out.extend_from_slice(&tiff);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
}

impl Container for PngFilter {
    type Part = [u8; 4];
    const SIGNATURE: &'static [u8] = PNG_SIGNATURE;
    const UNSIGNED: &'static str = "no PNG signature";
    const CUT_SHORT: &'static str = "the PNG ends before its IEND chunk";

    fn stage(&mut self) -> Stage<'_, [u8; 4]> {
        match &mut self.state {
            PngState::Signature { seen } => Stage::Signature { seen },
            PngState::Collect {
                kind,
                remaining,
                buf,
            } => Stage::Collect {
                part: *kind,
                remaining,
                buf,
            },
            PngState::Pass { remaining } => Stage::Pass { remaining },
            PngState::Skip { remaining } => Stage::Skip { remaining },
            PngState::Done => Stage::Done,
            PngState::Header { .. } => Stage::Own,
        }
    }

    fn ended(&self) -> bool {
        matches!(self.state, PngState::Done)
    }

    fn findings(&self) -> &Findings {
        &self.findings
    }

    fn next_part(&mut self) {
        self.state = PngState::Header {
            buf: [0; 8],
            have: 0,
        };
    }

    fn collected(
        &mut self,
        kind: [u8; 4],
        data: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let body = &data[..data.len() - 4];
        if &kind == b"IHDR" {
            let width = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let height = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            self.findings.size(width, height)?;
            self.seen_header = true;
            out.extend_from_slice(&data);
        } else {
            self.findings.facts.orientation = orientation_of(body).unwrap_or(1);
        }
        self.next_part();
        Ok(())
    }

    /// Reads the length and type of the next chunk.
    fn own_step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], Refusal> {
        let PngState::Header { buf, have } = &mut self.state else {
            unreachable!("the shared walk reads the other states");
        };
        let take = (8 - *have).min(input.len());
        buf[*have..*have + take].copy_from_slice(&input[..take]);
        *have += take;
        if *have == 8 {
            let header = *buf;
            self.chunk_start(header, out)?;
        }
        Ok(&input[take..])
    }
}
