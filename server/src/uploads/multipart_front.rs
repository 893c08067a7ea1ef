//! The framing of a `multipart/form-data` body, checked as it arrives and
//! before the multipart parser buffers anything.
//!
//! `multer` looks for the first boundary and for the end of each part's
//! headers by buffering and rescanning everything it has been given, with
//! no bound: a body of zeros after `Content-Disposition: …` grows that
//! buffer until the body limit and costs a full rescan per chunk. multer
//! bounds the whole stream and each field, not the preamble, a part's
//! headers or the number of parts; no other well-kept crate does either,
//! so this small state machine does, in one pass over each chunk where it
//! lies, keeping at most a boundary's length of bytes between chunks.
//!
//! The bytes of a part's content are only searched for the next delimiter
//! (SIMD `memmem`); the parser still does the real work.

use memchr::memmem;

/// Bounds on the framing. The apps send one part, no preamble and a few
/// short headers, so each bound leaves a wide margin for real clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontLimits {
    /// Bytes before the first boundary.
    pub preamble: usize,
    /// Bytes of one part's header block, its boundary line included.
    pub part_headers: usize,
    /// Parts in the whole body.
    pub parts: usize,
    /// Bytes after the closing boundary.
    pub epilogue: usize,
}

impl Default for FrontLimits {
    fn default() -> Self {
        FrontLimits {
            preamble: 4 * 1024,
            part_headers: 8 * 1024,
            parts: 16,
            epilogue: 4 * 1024,
        }
    }
}

/// Why a body's framing is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrontError {
    #[error("the multipart body does not start with its boundary within {0} bytes")]
    PreambleTooLong(usize),
    #[error("a part's headers do not end within {0} bytes")]
    PartHeadersTooLong(usize),
    #[error("the multipart body has more than {0} parts")]
    TooManyParts(usize),
    #[error("more than {0} bytes follow the closing boundary")]
    EpilogueTooLong(usize),
    #[error("the multipart body ends before its closing boundary")]
    Incomplete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first `--boundary`; bytes seen so far.
    Preamble(usize),
    /// After a boundary: its line and the part's headers up to the blank
    /// line; bytes seen so far and the first two of them (`--` closes).
    Headers {
        seen: usize,
        first: [u8; 2],
        got: u8,
    },
    /// A part's content, up to the next `\r\n--boundary`.
    Content,
    /// After the closing `--boundary--`; bytes seen so far.
    Closed(usize),
}

/// Follows one body's framing chunk by chunk ([`MultipartFront::feed`]).
#[derive(Clone, Debug)]
pub struct MultipartFront {
    limits: FrontLimits,
    state: State,
    parts: usize,
    /// `--boundary`, and the same after a line break.
    opening: Vec<u8>,
    delimiter: Vec<u8>,
    /// The last bytes of the current state's region that could begin the
    /// needle it looks for, kept to find a needle split between chunks.
    carry: Vec<u8>,
    failed: Option<FrontError>,
}

const HEADERS_END: &[u8] = b"\r\n\r\n";

impl MultipartFront {
    pub fn new(boundary: &[u8], limits: FrontLimits) -> Self {
        let mut opening = b"--".to_vec();
        opening.extend_from_slice(boundary);
        let mut delimiter = b"\r\n".to_vec();
        delimiter.extend_from_slice(&opening);
        MultipartFront {
            limits,
            state: State::Preamble(0),
            parts: 0,
            opening,
            delimiter,
            carry: Vec::new(),
            failed: None,
        }
    }

    /// Parts begun so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Takes the next chunk of the body. Once it has refused, it refuses
    /// every later chunk the same way.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FrontError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let outcome = self.walk(chunk);
        if let Err(error) = &outcome {
            self.failed = Some(error.clone());
        }
        outcome
    }

    /// The body ended: its framing must have closed.
    pub fn finish(&self) -> Result<(), FrontError> {
        match (&self.failed, self.state) {
            (Some(error), _) => Err(error.clone()),
            (None, State::Closed(_)) => Ok(()),
            (None, _) => Err(FrontError::Incomplete),
        }
    }

    fn walk(&mut self, chunk: &[u8]) -> Result<(), FrontError> {
        let mut at = 0;
        while at < chunk.len() {
            let rest = &chunk[at..];
            match self.state {
                State::Preamble(seen) => {
                    let limit = self.limits.preamble;
                    match self.search(Needle::Opening, rest) {
                        Some(end) => {
                            let before = (seen + end).saturating_sub(self.opening.len());
                            if before > limit {
                                return Err(FrontError::PreambleTooLong(limit));
                            }
                            self.begin_part();
                            at += end;
                        }
                        None if seen + rest.len() > limit + self.opening.len() => {
                            return Err(FrontError::PreambleTooLong(limit));
                        }
                        None => {
                            self.state = State::Preamble(seen + rest.len());
                            at = chunk.len();
                        }
                    }
                }
                State::Headers {
                    seen,
                    mut first,
                    mut got,
                } => {
                    if got < 2 {
                        let take = rest.len().min(2 - got as usize);
                        first[got as usize..got as usize + take].copy_from_slice(&rest[..take]);
                        got += take as u8;
                        if got == 2 {
                            if &first == b"--" {
                                self.state = State::Closed(0);
                                self.carry.clear();
                                at += take;
                                continue;
                            }
                            self.parts += 1;
                            if self.parts > self.limits.parts {
                                return Err(FrontError::TooManyParts(self.limits.parts));
                            }
                        }
                        if got < 2 {
                            // Part or close is not known yet: no bound is
                            // judged before it is, so the verdict does not
                            // depend on where the chunks were cut.
                            let _ = self.search(Needle::HeadersEnd, rest);
                            self.state = State::Headers {
                                seen: seen + rest.len(),
                                first,
                                got,
                            };
                            at = chunk.len();
                            continue;
                        }
                        self.state = State::Headers { seen, first, got };
                    }
                    let limit = self.limits.part_headers;
                    match self.search(Needle::HeadersEnd, rest) {
                        Some(end) if seen + end > limit => {
                            return Err(FrontError::PartHeadersTooLong(limit));
                        }
                        Some(end) => {
                            self.state = State::Content;
                            at += end;
                        }
                        None if seen + rest.len() > limit => {
                            return Err(FrontError::PartHeadersTooLong(limit));
                        }
                        None => {
                            self.state = State::Headers {
                                seen: seen + rest.len(),
                                first,
                                got,
                            };
                            at = chunk.len();
                        }
                    }
                }
                State::Content => match self.search(Needle::Delimiter, rest) {
                    Some(end) => {
                        self.begin_part();
                        at += end;
                    }
                    None => at = chunk.len(),
                },
                State::Closed(seen) => {
                    let seen = seen + rest.len();
                    if seen > self.limits.epilogue {
                        return Err(FrontError::EpilogueTooLong(self.limits.epilogue));
                    }
                    self.state = State::Closed(seen);
                    at = chunk.len();
                }
            }
        }
        Ok(())
    }

    /// A boundary was found: a part, or the closing `--`, follows; a part
    /// is counted once its first two bytes show it is not the close.
    fn begin_part(&mut self) {
        self.carry.clear();
        self.state = State::Headers {
            seen: 0,
            first: [0; 2],
            got: 0,
        };
    }

    /// Where `needle` ends in `rest` (an index into `rest`), counting a
    /// needle that began in the carried bytes of earlier chunks. Without
    /// a match, the carry keeps the bytes that could still begin one.
    fn search(&mut self, needle: Needle, rest: &[u8]) -> Option<usize> {
        let needle = match needle {
            Needle::Opening => &self.opening[..],
            Needle::Delimiter => &self.delimiter[..],
            Needle::HeadersEnd => HEADERS_END,
        };
        let keep = needle.len() - 1;
        if !self.carry.is_empty() {
            // The carry is shorter than the needle, so a match here ends
            // in `rest`: it is the earliest one.
            let mut seam = self.carry.clone();
            seam.extend_from_slice(&rest[..rest.len().min(keep)]);
            if let Some(start) = memmem::find(&seam, needle) {
                let end = start + needle.len() - self.carry.len();
                self.carry.clear();
                return Some(end);
            }
        }
        if let Some(start) = memmem::find(rest, needle) {
            self.carry.clear();
            return Some(start + needle.len());
        }
        if rest.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&rest[rest.len() - keep..]);
        } else {
            self.carry.extend_from_slice(rest);
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
        None
    }
}

/// A body stream checked by a [`MultipartFront`] on its way to the
/// parser: a refused framing ends the stream with an error, and the
/// refusal is kept in [`Framed::refusal`] for the answer.
pub struct Framed<S> {
    inner: S,
    front: MultipartFront,
    refusal: std::sync::Arc<std::sync::OnceLock<FrontError>>,
    done: bool,
}

impl<S> Framed<S> {
    pub fn new(inner: S, boundary: &[u8], limits: FrontLimits) -> Self {
        Framed {
            inner,
            front: MultipartFront::new(boundary, limits),
            refusal: Default::default(),
            done: false,
        }
    }

    /// Set once the framing was refused.
    pub fn refusal(&self) -> std::sync::Arc<std::sync::OnceLock<FrontError>> {
        self.refusal.clone()
    }
}

impl<S> futures_util::Stream for Framed<S>
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        let item = futures_util::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx));
        let verdict = match &item {
            Some(Ok(chunk)) => self.front.feed(chunk),
            Some(Err(_)) => Ok(()),
            None => self.front.finish(),
        };
        match verdict {
            Ok(()) => std::task::Poll::Ready(item),
            Err(error) => {
                self.done = true;
                let _ = self.refusal.set(error.clone());
                std::task::Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    error,
                ))))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Needle {
    Opening,
    Delimiter,
    HeadersEnd,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &[u8] = b"XyZ123";

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, content) in parts {
            out.extend_from_slice(b"--XyZ123\r\n");
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ123--\r\n");
        out
    }

    fn verdict(input: &[u8], split: usize, limits: FrontLimits) -> Result<usize, FrontError> {
        let mut front = MultipartFront::new(BOUNDARY, limits);
        for piece in input.chunks(split.max(1)) {
            front.feed(piece)?;
        }
        front.finish()?;
        Ok(front.parts())
    }

    #[test]
    fn a_well_formed_body_passes_however_it_is_split() {
        let input = body(&[("meta", b"{}"), ("file", &[0xFFu8; 5000])]);
        for split in [1, 2, 3, 7, 9, 64, 4096, input.len()] {
            assert_eq!(verdict(&input, split, FrontLimits::default()), Ok(2));
        }
    }

    #[test]
    fn content_that_looks_like_a_boundary_without_its_line_break_is_content() {
        let input = body(&[("file", b"--XyZ123 inside, not after a line break")]);
        assert_eq!(verdict(&input, 5, FrontLimits::default()), Ok(1));
    }

    #[test]
    fn endless_part_headers_are_refused_at_the_limit_not_at_the_end() {
        let limits = FrontLimits::default();
        let mut front = MultipartFront::new(BOUNDARY, limits);
        front
            .feed(b"--XyZ123\r\nContent-Disposition: form-data; name=\"file\"")
            .unwrap();
        let zeros = [0u8; 1024];
        let mut fed = 0;
        let refused = loop {
            match front.feed(&zeros) {
                Ok(()) => fed += zeros.len(),
                Err(error) => break error,
            }
            assert!(fed < 64 * 1024, "still reading after {fed} bytes");
        };
        assert_eq!(refused, FrontError::PartHeadersTooLong(limits.part_headers));
        assert!(fed <= limits.part_headers);
        // Refused for good.
        assert_eq!(front.feed(b"\r\n\r\n"), Err(refused));
    }

    #[test]
    fn a_body_that_never_shows_its_boundary_is_refused_early() {
        let input = vec![b'a'; 10_000];
        assert_eq!(
            verdict(&input, 1000, FrontLimits::default()),
            Err(FrontError::PreambleTooLong(4096))
        );
        let mut with_preamble = b"a short preamble\r\n".to_vec();
        with_preamble.extend_from_slice(&body(&[("file", b"x")]));
        assert_eq!(verdict(&with_preamble, 3, FrontLimits::default()), Ok(1));
    }

    #[test]
    fn the_verdict_does_not_depend_on_where_the_body_was_cut_even_at_tiny_bounds() {
        let tiny = |parts| FrontLimits {
            preamble: 0,
            part_headers: 0,
            parts,
            epilogue: 0,
        };
        let boundary = b"B";
        for (input, limits) in [
            (&b"--Bxx\r\n\r\n"[..], tiny(0)),
            (&b"--B--"[..], tiny(1)),
            (&b"--B\r\n\r\nx\r\n--B--"[..], tiny(1)),
        ] {
            let verdicts: Vec<_> = [1, 2, 3, input.len()]
                .into_iter()
                .map(|split| {
                    let mut front = MultipartFront::new(boundary, limits);
                    input
                        .chunks(split)
                        .try_for_each(|piece| front.feed(piece))
                        .and_then(|()| front.finish())
                })
                .collect();
            assert!(
                verdicts.windows(2).all(|pair| pair[0] == pair[1]),
                "{:?}: {verdicts:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn too_many_parts_are_refused() {
        let many: Vec<(&str, &[u8])> = (0..17).map(|_| ("x", &b"1"[..])).collect();
        assert_eq!(
            verdict(&body(&many), 11, FrontLimits::default()),
            Err(FrontError::TooManyParts(16))
        );
        let enough: Vec<(&str, &[u8])> = (0..16).map(|_| ("x", &b"1"[..])).collect();
        assert_eq!(verdict(&body(&enough), 11, FrontLimits::default()), Ok(16));
    }

    #[test]
    fn a_long_epilogue_and_a_missing_close_are_refused() {
        let mut input = body(&[("file", b"x")]);
        input.extend_from_slice(&[b'e'; 5000]);
        assert_eq!(
            verdict(&input, 100, FrontLimits::default()),
            Err(FrontError::EpilogueTooLong(4096))
        );
        let input = body(&[("file", b"x")]);
        let cut = &input[..input.len() - 12];
        assert_eq!(
            verdict(cut, 4, FrontLimits::default()),
            Err(FrontError::Incomplete)
        );
    }
}
