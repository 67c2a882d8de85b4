//! A pre-check of the HTTP/2 frames a client sends, in front of hyper's `h2`, for the
//! cases where `h2` 0.4 answers with another error than RFC 9113 / RFC 7541 name, or
//! with none (issue 4's bar is strict h2spec behaviour):
//!
//! | What the client sends | RFC | `h2` 0.4 | Here |
//! |---|---|---|---|
//! | SETTINGS ACK with a payload, SETTINGS not a multiple of 6 octets (§6.5) | connection `FRAME_SIZE_ERROR` | `PROTOCOL_ERROR` | GOAWAY |
//! | PING not 8 octets (§6.7), WINDOW_UPDATE or RST_STREAM not 4 (§6.9, §6.4), GOAWAY under 8 (§4.2) | connection `FRAME_SIZE_ERROR` | `PROTOCOL_ERROR` | GOAWAY |
//! | PRIORITY not 5 octets (§6.3) | stream `FRAME_SIZE_ERROR` | connection `PROTOCOL_ERROR` | RST_STREAM |
//! | SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 (§6.5.2) | connection `FLOW_CONTROL_ERROR` | `PROTOCOL_ERROR` | GOAWAY |
//! | An HPACK decoding error (§4.3, RFC 7541) | connection `COMPRESSION_ERROR` | `PROTOCOL_ERROR` | GOAWAY |
//! | DATA on a stream the client ended or reset (§5.1) | stream `STREAM_CLOSED` | GOAWAY(`PROTOCOL_ERROR`) while `h2` still holds the stream | RST_STREAM |
//! | HEADERS on a stream the client ended or reset (§5.1) | `STREAM_CLOSED` | GOAWAY(`PROTOCOL_ERROR`) | GOAWAY (§5.4.1: every header block must reach `h2`'s HPACK decoder) |
//! | Pseudo-header fields in trailers (§8.1) | stream `PROTOCOL_ERROR` (malformed) | dropped, the request succeeds | `h2` resets the stream |
//!
//! [`H2Check`] follows the client's bytes after the connection preface the way
//! [`super::framing::FramingScanner`] follows HTTP/1.1: it parses each frame header
//! (9 octets) and skips payloads by count, so most bytes are looked at once, where
//! they were read, and passed on in place. Only what a check needs is kept: the
//! HPACK dynamic table (see [`hpack`]), the client's open streams, and the frames
//! being decided.
//!
//! **How it acts.** A frame a check may change or withhold is held back until it is
//! complete (a whole header block, HEADERS plus CONTINUATIONs, or a SETTINGS frame);
//! `h2` cannot act on a frame before its last byte anyway. Then:
//!
//! - a *connection error*: nothing more reaches `h2`; GOAWAY (last stream = the
//!   highest stream whose HEADERS reached `h2`) is written once `h2`'s output is at a
//!   frame boundary, then the connection is flushed and closed;
//! - *DATA on a closed stream*: the frame is withheld from `h2`, which is handed a
//!   RST_STREAM from the "client" in its place, so it stops sending on that stream
//!   and the application sees a reset; the client gets RST_STREAM(STREAM_CLOSED)
//!   and a WINDOW_UPDATE returning the frame's share of the connection window
//!   (§6.9: flow-controlled frames always count);
//! - *pseudo-headers in trailers*: END_STREAM is cleared on the trailers' HEADERS
//!   frame, which `h2` answers itself with RST_STREAM(PROTOCOL_ERROR) before the
//!   application sees the end of the body. The block still reaches `h2`'s HPACK
//!   decoder, so both ends' tables stay in step.
//!
//! Frames the checker writes never split one of `h2`'s: it follows `h2`'s output
//! frame by frame too ([`H2Check::sent`]). A stream error's frames go out when `h2`
//! flushes (its buffer is then empty) and only after `h2` has read the RST_STREAM it
//! was handed, so they come after anything `h2` had already queued on that stream.
//!
//! Everything else is `h2`'s: a frame the checker does not follow (a frame larger
//! than SETTINGS_MAX_FRAME_SIZE, PUSH_PROMISE, a CONTINUATION out of place, a header
//! block too large to hold) switches the checker off for the rest of the connection
//! and hands everything to `h2` unchanged, as `FramingScanner` does.

pub mod hpack;

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use hpack::Hpack;

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// Error codes (RFC 9113 §7).
pub mod code {
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const COMPRESSION_ERROR: u32 = 0x9;
}

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;

const HEADER_LEN: usize = 9;

/// The most raw bytes of one header block held back before the checker gives up and
/// leaves the block to `h2` (whose own limits are lower: SETTINGS_MAX_HEADER_LIST_SIZE
/// and a handful of CONTINUATION frames).
const MAX_HELD: usize = 256 * 1024;
/// The most frames of one header block held back, likewise.
const MAX_HELD_FRAMES: usize = 32;
/// Streams the server reset that are remembered, so that DATA the client had in flight
/// is left to `h2` to ignore (§5.1); `h2` keeps fewer (10).
const RECENT_RESETS: usize = 64;

/// What the checker must know of the server's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// SETTINGS_MAX_FRAME_SIZE: a longer frame is `h2`'s to refuse.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: bounds how many open streams are followed.
    pub max_concurrent_streams: u32,
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct Head {
    len: u32,
    kind: u8,
    flags: u8,
    sid: u32,
}

impl Head {
    fn parse(b: &[u8]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            sid: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// A frame of `kind` with a 4- or 8-octet payload, appended to `out`.
fn put_frame(out: &mut Vec<u8>, kind: u8, sid: u32, payload: &[u32]) {
    let len = (payload.len() * 4) as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&sid.to_be_bytes());
    for word in payload {
        out.extend_from_slice(&word.to_be_bytes());
    }
}

/// The client's streams, as far as the checks need them.
struct Streams {
    /// The highest stream whose HEADERS reached `h2`.
    last: u32,
    /// Streams the client opened and may still send on (no END_STREAM or RST_STREAM
    /// from it, no RST_STREAM from the server); sorted, since stream ids only grow.
    open: Vec<u32>,
    /// Streams reset lately by the server: `true` by this checker, `false` by `h2`.
    reset: VecDeque<(u32, bool)>,
    /// Ranges of stream ids the client skipped (implicitly closed, RFC 9113 §5.1.1).
    skipped: Vec<(u32, u32)>,
    /// The most open streams followed; past it (a client opening streams faster than
    /// `h2` refuses them), or past [`MAX_SKIPPED`] skipped ranges, the stream checks
    /// stop.
    max_open: usize,
    lenient: bool,
}

/// Ranges of skipped stream ids remembered; clients normally skip none.
const MAX_SKIPPED: usize = 16;

/// A client stream's state, as far as the checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Not opened yet (or stream 0, or a server stream): `h2`'s to judge.
    Idle,
    Open,
    /// Skipped by the client: closed (§5.1.1), but HEADERS on it is a PROTOCOL_ERROR.
    Skipped,
    /// Ended or reset by the client: closed (§5.1).
    Closed,
    /// Reset lately by `h2`: it ignores what the client still had in flight.
    ResetByH2,
    /// Reset lately by this checker: likewise ignored here.
    ResetHere,
    /// Not followed any more (see `Streams::max_open`).
    Unknown,
}

impl Streams {
    fn new(limits: &Limits) -> Streams {
        Streams {
            last: 0,
            open: Vec::new(),
            reset: VecDeque::new(),
            skipped: Vec::new(),
            max_open: 2 * limits.max_concurrent_streams as usize + 256,
            lenient: false,
        }
    }

    fn state(&self, sid: u32) -> StreamState {
        if sid % 2 == 0 || sid > self.last {
            return StreamState::Idle;
        }
        if self.lenient {
            return StreamState::Unknown;
        }
        if self.open.binary_search(&sid).is_ok() {
            return StreamState::Open;
        }
        match self.reset.iter().rev().find(|(s, _)| *s == sid) {
            Some((_, true)) => StreamState::ResetHere,
            Some((_, false)) => StreamState::ResetByH2,
            None if self.skipped.iter().any(|&(a, b)| (a..=b).contains(&sid)) => {
                StreamState::Skipped
            }
            None => StreamState::Closed,
        }
    }

    fn close(&mut self, sid: u32) {
        if let Ok(i) = self.open.binary_search(&sid) {
            self.open.remove(i);
        }
    }

    /// The client opened `sid` (above `last`) with a HEADERS frame.
    fn opened(&mut self, sid: u32, end_stream: bool) {
        let next = if self.last == 0 { 1 } else { self.last + 2 };
        if sid > next {
            self.skipped.push((next, sid - 2));
        }
        self.last = sid;
        if !end_stream {
            self.open.push(sid);
        }
        if self.open.len() > self.max_open || self.skipped.len() > MAX_SKIPPED {
            self.lenient = true;
            self.open = Vec::new();
            self.skipped = Vec::new();
        }
    }

    fn reset_by_server(&mut self, sid: u32, here: bool) {
        self.close(sid);
        if self.reset.len() == RECENT_RESETS {
            self.reset.pop_front();
        }
        self.reset.push_back((sid, here));
    }
}

/// Where the checker is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Reading a frame header (`H2Check::head[..head_len]` so far).
    Head,
    /// Passing this many more payload bytes to `h2` as they are.
    Pass(u32),
    /// Dropping this many more payload bytes: the frame is withheld from `h2`.
    Drop(u32),
    /// Holding this many more payload bytes of a frame decided once complete.
    Hold(u32),
    /// Not following the connection any more.
    Off,
}

/// What a complete header block asks for.
enum Verdict {
    Pass,
    /// Clear END_STREAM on its HEADERS frame (pseudo-headers in trailers).
    ClearEndStream,
    Fail(u32),
}

/// Where `feed`'s output for `h2` stands: `data[..keep]` goes to `h2` in place until
/// something is held, dropped or inserted; after that everything goes to the queue.
struct Out {
    keep: usize,
    queued: bool,
}

/// Follows `h2`'s output frame by frame, to know where frames end.
#[derive(Default)]
struct Outgoing {
    head: [u8; HEADER_LEN],
    head_len: usize,
    left: u32,
}

impl Outgoing {
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.left == 0
    }

    /// Bytes until the end of the current frame (or of its header, if unfinished).
    fn to_boundary(&self) -> usize {
        match (self.left, self.head_len) {
            (0, 0) => 0,
            (0, h) => HEADER_LEN - h,
            (left, _) => left as usize,
        }
    }

    /// Follow `data`; call `on_reset` with the stream of each RST_STREAM frame.
    fn sent(&mut self, mut data: &[u8], mut on_reset: impl FnMut(u32)) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = data.len().min(self.left as usize);
                self.left -= n as u32;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(HEADER_LEN - self.head_len);
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len == HEADER_LEN {
                self.head_len = 0;
                let h = Head::parse(&self.head);
                self.left = h.len;
                if h.kind == RST_STREAM {
                    on_reset(h.sid);
                }
            }
        }
    }
}

/// Which of the checker's frames for the client to write ([`H2Check::client_frames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Only the rest of a frame written in part: due before any byte of `h2`'s.
    Unfinished,
    /// All that may go now. Call when `h2` flushes: its output is then at a frame
    /// boundary and its buffer empty (see the module docs). When closing, the GOAWAY.
    Now,
}

/// See the module docs. The connection wrapper feeds it every byte read after the
/// preface ([`H2Check::feed`]) and every byte `h2` writes ([`H2Check::sent`]), hands
/// `h2` the [`H2Check::input`] queued for it, and writes [`H2Check::client_frames`]
/// when `h2` flushes (or closes after them, once [`H2Check::is_closing`]).
pub struct H2Check {
    limits: Limits,
    input: Input,
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// The raw frames held back (a header block so far, or a SETTINGS frame), and
    /// where the last of them starts.
    held: Vec<u8>,
    held_frame: usize,
    held_frames: usize,
    /// The header block being held: its stream, END_STREAM, and HPACK fragments.
    block: Option<(u32, bool)>,
    fragments: Vec<u8>,
    hpack: Hpack,
    streams: Streams,
    /// Bytes for `h2` that are not in the reader's buffer, in order.
    queue: BytesMut,
    /// Bytes handed towards `h2` so far (in place or queued).
    produced: u64,
    /// Frames for the client (`client[client_pos..]` still to write), and when they may
    /// go: once `h2` has read everything up to `arm_at` (then it has acted on what it
    /// was handed with them).
    client: Vec<u8>,
    client_pos: usize,
    arm_at: u64,
    armed: bool,
    closing: Option<u32>,
    closed: bool,
    out: Outgoing,
}

impl H2Check {
    pub fn new(limits: Limits) -> H2Check {
        H2Check {
            limits,
            input: Input::Head,
            head: [0; HEADER_LEN],
            head_len: 0,
            held: Vec::new(),
            held_frame: 0,
            held_frames: 0,
            block: None,
            fragments: Vec::new(),
            hpack: Hpack::default(),
            streams: Streams::new(&limits),
            queue: BytesMut::new(),
            produced: 0,
            client: Vec::new(),
            client_pos: 0,
            arm_at: 0,
            armed: false,
            closing: None,
            closed: false,
            out: Outgoing::default(),
        }
    }

    // --- the client's bytes ----------------------------------------------------------

    /// Follow `data`, just read from the client into `h2`'s buffer. Returns how many
    /// leading bytes stay there for `h2` (possibly changed in place); the rest was
    /// taken over: queued for `h2` ([`H2Check::input`]), held back or dropped.
    pub fn feed(&mut self, data: &mut [u8]) -> usize {
        let mut out = Out {
            keep: 0,
            queued: !self.queue.is_empty(),
        };
        let mut i = 0;
        while i < data.len() && self.closing.is_none() {
            match self.input {
                Input::Off => {
                    self.pass(&mut out, data, i, data.len());
                    i = data.len();
                }
                Input::Head => {
                    let from_earlier_read = self.head_len > 0;
                    let n = (HEADER_LEN - self.head_len).min(data.len() - i);
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&data[i..i + n]);
                    self.head_len += n;
                    i += n;
                    if self.head_len < HEADER_LEN {
                        break; // the rest comes with the next read
                    }
                    self.head_len = 0;
                    let at = (!from_earlier_read).then(|| i - HEADER_LEN);
                    i = self.frame(&mut out, data, at, i);
                }
                Input::Pass(left) | Input::Drop(left) | Input::Hold(left) => {
                    let end = i + data.len().saturating_sub(i).min(left as usize);
                    let left = left - (end - i) as u32;
                    match self.input {
                        Input::Pass(_) => {
                            self.pass(&mut out, data, i, end);
                            self.input = Input::Pass(left);
                        }
                        Input::Hold(_) => {
                            self.held.extend_from_slice(&data[i..end]);
                            self.input = Input::Hold(left);
                        }
                        _ => self.input = Input::Drop(left),
                    }
                    i = end;
                    if left == 0 {
                        self.payload_done(&mut out);
                    }
                }
            }
        }
        out.keep
    }

    /// Bytes queued for `h2`, to be read before anything new from the socket.
    pub fn input(&self) -> &[u8] {
        &self.queue
    }

    /// `h2` took `n` bytes of [`H2Check::input`].
    pub fn input_taken(&mut self, n: usize) {
        self.queue.advance(n);
    }

    /// `h2` asks for more input: it has acted on every complete frame handed to it.
    pub fn h2_wants_input(&mut self) {
        if self.produced - self.queue.len() as u64 >= self.arm_at {
            self.armed = true;
        }
    }

    /// A connection error was found: after [`H2Check::client_frames`] (the GOAWAY),
    /// flush and close; hand `h2` nothing more. The value is the error code.
    pub fn is_closing(&self) -> Option<u32> {
        self.closing
    }

    /// The checker's frames for the client that are `due`: the GOAWAY of a connection
    /// error, or RST_STREAM and WINDOW_UPDATE frames of stream errors.
    pub fn client_frames(&self, due: Due) -> &[u8] {
        let rest = &self.client[self.client_pos..];
        if matches!(due, Due::Now) && (self.armed || self.closing.is_some()) {
            return rest;
        }
        // The rest of a frame written in part, if any.
        let mut start = 0;
        while start < self.client_pos {
            let end = start + HEADER_LEN + Head::parse(&self.client[start..]).len as usize;
            if end > self.client_pos {
                return &self.client[self.client_pos..end];
            }
            start = end;
        }
        &[]
    }

    /// `n` bytes of [`H2Check::client_frames`] were written.
    pub fn client_written(&mut self, n: usize) {
        self.client_pos += n;
        if self.client_pos == self.client.len() {
            self.client.clear();
            self.client_pos = 0;
        }
    }

    /// The connection was flushed and shut down after a connection error.
    pub fn set_closed(&mut self) {
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    // --- `h2`'s bytes ----------------------------------------------------------------

    /// Follow bytes `h2` wrote to the client.
    pub fn sent(&mut self, data: &[u8]) {
        let streams = &mut self.streams;
        self.out
            .sent(data, |sid| streams.reset_by_server(sid, false));
    }

    /// Whether `h2`'s output ends at a frame boundary.
    pub fn at_frame_boundary(&self) -> bool {
        self.out.at_boundary()
    }

    /// How much more of `h2`'s output may be written before the next boundary.
    pub fn to_frame_boundary(&self) -> usize {
        self.out.to_boundary()
    }

    // --- internals -------------------------------------------------------------------

    /// Hand `data[a..b]` to `h2`: in place while nothing was taken over, else queued.
    fn pass(&mut self, out: &mut Out, data: &[u8], a: usize, b: usize) {
        if !out.queued && a == out.keep {
            out.keep = b;
        } else {
            out.queued = true;
            self.queue.extend_from_slice(&data[a..b]);
        }
        self.produced += (b - a) as u64;
    }

    /// Hand `bytes`, which are not in the reader's buffer, to `h2` after what came
    /// before.
    fn push(&mut self, out: &mut Out, bytes: &[u8]) {
        out.queued = true;
        self.queue.extend_from_slice(bytes);
        self.produced += bytes.len() as u64;
    }

    /// Hand the current frame header to `h2`.
    fn pass_head(&mut self, out: &mut Out, data: &[u8], at: Option<usize>) {
        match at {
            Some(a) => self.pass(out, data, a, a + HEADER_LEN),
            None => {
                let head = self.head;
                self.push(out, &head);
            }
        }
    }

    fn expect_payload(&mut self, out: &mut Out, input: Input) {
        self.input = input;
        if matches!(input, Input::Pass(0) | Input::Drop(0) | Input::Hold(0)) {
            self.payload_done(out);
        }
    }

    /// The current frame's payload has been passed, dropped or held completely.
    fn payload_done(&mut self, out: &mut Out) {
        let held = matches!(self.input, Input::Hold(_));
        self.input = Input::Head;
        if held {
            self.held_frame_done(out);
        }
    }

    /// A frame header was read; `data[i..]` follows it, `at` is where it starts in
    /// `data` (if it is all there). Returns where to go on in `data`.
    fn frame(&mut self, out: &mut Out, data: &mut [u8], at: Option<usize>, i: usize) -> usize {
        let h = Head::parse(&self.head);
        if h.len > self.limits.max_frame_size {
            return self.off(out, data, at, i); // h2: FRAME_SIZE_ERROR
        }
        if let Some((sid, _)) = self.block {
            if h.kind != CONTINUATION || h.sid != sid {
                return self.off(out, data, at, i); // h2: PROTOCOL_ERROR
            }
            return self.hold(out, data, at, i, h);
        }
        let fixed_len = match h.kind {
            PING => Some(8),
            WINDOW_UPDATE | RST_STREAM => Some(4),
            _ => None,
        };
        match h.kind {
            _ if fixed_len.is_some_and(|n| n != h.len) => self.fail(code::FRAME_SIZE_ERROR),
            GOAWAY if h.len < 8 => self.fail(code::FRAME_SIZE_ERROR),
            SETTINGS if h.sid == 0 && h.flags & ACK != 0 && h.len != 0 => {
                self.fail(code::FRAME_SIZE_ERROR)
            }
            SETTINGS if h.sid == 0 && h.len % 6 != 0 => self.fail(code::FRAME_SIZE_ERROR),
            SETTINGS if h.sid == 0 && h.flags & ACK == 0 => return self.hold(out, data, at, i, h),
            PRIORITY if h.sid != 0 && h.len != 5 => {
                self.stream_error(out, h.sid, code::FRAME_SIZE_ERROR);
                self.expect_payload(out, Input::Drop(h.len));
            }
            HEADERS if h.sid % 2 == 1 => return self.hold(out, data, at, i, h),
            HEADERS | PUSH_PROMISE | CONTINUATION => return self.off(out, data, at, i),
            DATA => return self.data(out, data, at, i, h),
            _ => {
                if h.kind == RST_STREAM && h.sid <= self.streams.last {
                    self.streams.close(h.sid); // closed by the client
                }
                self.pass_head(out, data, at);
                self.expect_payload(out, Input::Pass(h.len));
            }
        }
        i
    }

    fn data(&mut self, out: &mut Out, data: &[u8], at: Option<usize>, i: usize, h: Head) -> usize {
        let state = self.streams.state(h.sid);
        if matches!(
            state,
            StreamState::Idle | StreamState::Open | StreamState::ResetByH2 | StreamState::Unknown
        ) {
            if h.flags & END_STREAM != 0 {
                self.streams.close(h.sid);
            }
            self.pass_head(out, data, at);
            self.expect_payload(out, Input::Pass(h.len));
            return i;
        }
        // Withheld from h2. After the stream error (or, for a stream reset here, the
        // frames the client had in flight: ignored, §5.1) the client gets its
        // connection window back, as h2 would give it.
        if state != StreamState::ResetHere {
            self.stream_error(out, h.sid, code::STREAM_CLOSED);
        }
        if h.len > 0 {
            put_frame(&mut self.client, WINDOW_UPDATE, 0, &[h.len]);
            self.hold_client_frames();
        }
        self.expect_payload(out, Input::Drop(h.len));
        i
    }

    /// Hold the current frame until it is complete; decide at once if it is already.
    fn hold(
        &mut self,
        out: &mut Out,
        data: &mut [u8],
        at: Option<usize>,
        i: usize,
        h: Head,
    ) -> usize {
        let len = h.len as usize;
        if let (Some(a), None) = (at, self.block) {
            if data.len() - i >= len && (h.kind == SETTINGS || h.flags & END_HEADERS != 0) {
                // The whole frame is here: decide in place.
                let payload = &data[i..i + len];
                let verdict = if h.kind == SETTINGS {
                    settings_verdict(payload)
                } else {
                    match fragment(&h, payload) {
                        Some(f) => {
                            self.block_verdict(h.sid, h.flags & END_STREAM != 0, &payload[f])
                        }
                        None => return self.off(out, data, at, i),
                    }
                };
                match verdict {
                    Verdict::Fail(c) => self.fail(c),
                    Verdict::Pass => self.pass(out, data, a, i + len),
                    Verdict::ClearEndStream => {
                        data[a + 4] &= !END_STREAM;
                        self.pass(out, data, a, i + len);
                    }
                }
                return i + len;
            }
        }
        if self.held.len() + HEADER_LEN + len > MAX_HELD || self.held_frames == MAX_HELD_FRAMES {
            return self.off(out, data, at, i);
        }
        self.held_frame = self.held.len();
        self.held_frames += 1;
        match at {
            Some(a) => self.held.extend_from_slice(&data[a..a + HEADER_LEN]),
            None => self.held.extend_from_slice(&self.head),
        }
        self.expect_payload(out, Input::Hold(h.len));
        i
    }

    /// A held frame is complete: decide on it, or on the header block it completes.
    fn held_frame_done(&mut self, out: &mut Out) {
        let h = Head::parse(&self.held[self.held_frame..]);
        let payload = self.held_frame + HEADER_LEN..self.held.len();
        let verdict = match h.kind {
            SETTINGS => settings_verdict(&self.held[payload]),
            _ => {
                if h.kind == HEADERS {
                    let Some(f) = fragment(&h, &self.held[payload.clone()]) else {
                        return self.release_off(out);
                    };
                    self.block = Some((h.sid, h.flags & END_STREAM != 0));
                    let f = payload.start + f.start..payload.start + f.end;
                    self.fragments.extend_from_slice(&self.held[f]);
                } else {
                    self.fragments.extend_from_slice(&self.held[payload]);
                }
                if h.flags & END_HEADERS == 0 {
                    return; // CONTINUATION frames follow
                }
                let (sid, end_stream) = self.block.take().expect("a header block");
                let fragments = std::mem::take(&mut self.fragments);
                let v = self.block_verdict(sid, end_stream, &fragments);
                self.fragments = fragments;
                self.fragments.clear();
                v
            }
        };
        match verdict {
            Verdict::Fail(c) => self.fail(c),
            Verdict::Pass | Verdict::ClearEndStream => {
                if matches!(verdict, Verdict::ClearEndStream) {
                    self.held[4] &= !END_STREAM; // the block's HEADERS frame comes first
                }
                let held = std::mem::take(&mut self.held);
                self.push(out, &held);
                self.held = held;
                self.held.clear();
                self.held_frames = 0;
            }
        }
    }

    /// Follow a complete header block on `sid`.
    fn block_verdict(&mut self, sid: u32, end_stream: bool, fragments: &[u8]) -> Verdict {
        let Ok(pseudo) = self.hpack.block(fragments) else {
            return Verdict::Fail(code::COMPRESSION_ERROR);
        };
        match self.streams.state(sid) {
            StreamState::Idle => self.streams.opened(sid, end_stream),
            StreamState::Open => {
                // Trailers. Without END_STREAM h2 resets the stream (malformed); with
                // pseudo-headers it must too, and will once END_STREAM is cleared.
                if pseudo || !end_stream {
                    self.streams.reset_by_server(sid, false);
                } else {
                    self.streams.close(sid);
                }
                if pseudo && end_stream {
                    return Verdict::ClearEndStream;
                }
            }
            // A stream the client ended or reset (§5.1: STREAM_CLOSED). h2 must read
            // every header block to keep its HPACK table in step, and would answer
            // GOAWAY(PROTOCOL_ERROR); so it is a connection error (§5.4.1 allows one
            // for any stream error) with the right code.
            StreamState::Closed | StreamState::ResetHere => {
                return Verdict::Fail(code::STREAM_CLOSED)
            }
            // h2 ignores trailers on streams it reset; a skipped (lower) stream id is
            // its PROTOCOL_ERROR (§5.1.1).
            StreamState::Skipped | StreamState::ResetByH2 | StreamState::Unknown => {}
        }
        Verdict::Pass
    }

    /// Stop following the connection: hand `h2` what is held, the current frame's
    /// header and everything after it, unchanged.
    fn off(&mut self, out: &mut Out, data: &[u8], at: Option<usize>, i: usize) -> usize {
        self.release_off(out);
        self.pass_head(out, data, at);
        i
    }

    fn release_off(&mut self, out: &mut Out) {
        let held = std::mem::take(&mut self.held);
        self.push(out, &held);
        self.block = None;
        self.fragments = Vec::new();
        self.held_frames = 0;
        self.input = Input::Off;
    }

    /// A connection error: GOAWAY (after any frames for the client already queued),
    /// then close.
    fn fail(&mut self, code: u32) {
        put_frame(&mut self.client, GOAWAY, 0, &[self.streams.last, code]);
        self.closing = Some(code);
        self.held = Vec::new();
    }

    /// A stream error: RST_STREAM to the client; and when `h2` knows the stream, a
    /// RST_STREAM "from the client" to `h2` in place of the offending frame, so that it
    /// stops sending on the stream and the application sees the reset.
    fn stream_error(&mut self, out: &mut Out, sid: u32, code: u32) {
        if sid <= self.streams.last {
            let mut rst = Vec::with_capacity(HEADER_LEN + 4);
            put_frame(&mut rst, RST_STREAM, sid, &[code]);
            self.push(out, &rst);
        }
        put_frame(&mut self.client, RST_STREAM, sid, &[code]);
        self.streams.reset_by_server(sid, true);
        self.hold_client_frames();
    }

    /// Frames were added for the client: they wait until `h2` has read all it was
    /// handed so far.
    fn hold_client_frames(&mut self) {
        self.arm_at = self.produced;
        self.armed = false;
    }
}

/// SETTINGS values that `h2` refuses with the wrong code.
fn settings_verdict(payload: &[u8]) -> Verdict {
    for s in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([s[0], s[1]]);
        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
        if id == SETTINGS_INITIAL_WINDOW_SIZE && value > MAX_WINDOW_SIZE {
            return Verdict::Fail(code::FLOW_CONTROL_ERROR);
        }
    }
    Verdict::Pass
}

/// Where the header block fragment is in a HEADERS payload, or `None` where `h2`
/// refuses the frame before decoding it (bad padding or priority fields, a stream
/// depending on itself) and the checker must not decode it either.
fn fragment(h: &Head, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    let mut end = payload.len();
    if h.flags & PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad).filter(|&e| e >= start)?;
    }
    if h.flags & PRIORITY_FLAG != 0 {
        let dep = payload.get(start..start + 4)?;
        if u32::from_be_bytes(dep.try_into().ok()?) & 0x7fff_ffff == h.sid {
            return None;
        }
        start += 5;
    }
    (start <= end).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_frame_size: 16384,
        max_concurrent_streams: 100,
    };

    fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&sid.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn rst(sid: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, sid, &code.to_be_bytes())
    }

    fn goaway(last: u32, code: u32) -> Vec<u8> {
        frame(
            GOAWAY,
            0,
            0,
            &[last.to_be_bytes(), code.to_be_bytes()].concat(),
        )
    }

    fn window_update(n: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, 0, &n.to_be_bytes())
    }

    /// GET https://localhost/ (the :authority literal is added to the dynamic table).
    const GET: &[u8] = b"\x82\x87\x84\x41\x09localhost";
    /// A trailer field `x-t: 1`, and a trailer block with `:path /x`.
    const TRAILER: &[u8] = b"\x00\x03x-t\x011";
    const PSEUDO_TRAILER: &[u8] = b"\x04\x02/x";

    fn headers(sid: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        frame(HEADERS, flags | END_HEADERS, sid, block)
    }

    /// Feed `bytes` in chunks of `chunk` as the connection wrapper does; return what
    /// h2 reads.
    fn feed(check: &mut H2Check, bytes: &[u8], chunk: usize) -> Vec<u8> {
        let mut to_h2 = Vec::new();
        for c in bytes.chunks(chunk) {
            if check.is_closing().is_some() {
                break;
            }
            let mut buf = c.to_vec();
            let keep = check.feed(&mut buf);
            to_h2.extend_from_slice(&buf[..keep]);
            let n = check.input().len();
            to_h2.extend_from_slice(check.input());
            check.input_taken(n);
            check.h2_wants_input();
        }
        to_h2
    }

    /// Run `bytes` through a fresh checker whole, byte by byte, and in odd chunks; all
    /// must agree. Returns what h2 reads and the frames for the client.
    fn run(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, Option<u32>) {
        let mut results = Vec::new();
        for chunk in [bytes.len().max(1), 1, 5, 13] {
            let mut check = H2Check::new(LIMITS);
            let to_h2 = feed(&mut check, bytes, chunk);
            let client = check.client_frames(Due::Now).to_vec();
            results.push((to_h2, client, check.is_closing()));
        }
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        results.swap_remove(0)
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut c = frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]); // INITIAL_WINDOW_SIZE 65536
        c.extend(frames.concat());
        c
    }

    #[test]
    fn a_valid_connection_passes_unchanged_and_in_place() {
        let bytes = connection(&[
            frame(SETTINGS, ACK, 0, b""),
            headers(1, END_STREAM, GET),
            headers(3, 0, b"\x83\x87\x84\xbe"), // POST, the :authority entry reused
            frame(DATA, 0, 3, &[7; 100]),
            frame(DATA, PADDED | END_STREAM, 3, b"\x02ab\0\0"),
            frame(PING, 0, 0, b"12345678"),
            frame(WINDOW_UPDATE, 0, 3, &1u32.to_be_bytes()),
            frame(PRIORITY, 0, 9, &[0, 0, 0, 0, 16]),
            frame(0xfa, 0, 0, b"unknown type"),
            headers(5, 0, GET),
            headers(5, END_STREAM, TRAILER),
            frame(RST_STREAM, 0, 5, &8u32.to_be_bytes()),
            frame(GOAWAY, 0, 0, &[0; 8]),
        ]);
        let (to_h2, client, closing) = run(&bytes);
        assert_eq!(to_h2, bytes);
        assert!(client.is_empty() && closing.is_none());
        // Read whole, nothing is copied: every byte stays in the reader's buffer.
        let mut check = H2Check::new(LIMITS);
        let mut buf = bytes.clone();
        assert_eq!(check.feed(&mut buf), bytes.len());
        assert!(check.input().is_empty());
    }

    #[test]
    fn connection_errors_get_goaway_with_the_rfc_code() {
        let mut big_window = vec![0, 4];
        big_window.extend_from_slice(&(1u32 << 31).to_be_bytes());
        let cases: [(Vec<u8>, u32); 10] = [
            (
                frame(SETTINGS, ACK, 0, &[0, 3, 0, 0, 0, 100]),
                code::FRAME_SIZE_ERROR,
            ),
            (
                frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
                code::FRAME_SIZE_ERROR,
            ),
            (frame(SETTINGS, 0, 0, &big_window), code::FLOW_CONTROL_ERROR),
            (frame(PING, 0, 0, b"1234567"), code::FRAME_SIZE_ERROR),
            (
                frame(WINDOW_UPDATE, 0, 0, b"\0\0\x01"),
                code::FRAME_SIZE_ERROR,
            ),
            (
                frame(RST_STREAM, 0, 1, b"\0\0\0\0\0"),
                code::FRAME_SIZE_ERROR,
            ),
            (frame(GOAWAY, 0, 0, b"\0\0\0\0"), code::FRAME_SIZE_ERROR),
            (headers(5, END_STREAM, b"\xc6"), code::COMPRESSION_ERROR),
            (headers(5, END_STREAM, b"\x82\x20"), code::COMPRESSION_ERROR),
            // A bad block split over CONTINUATION frames.
            (
                [
                    frame(HEADERS, END_STREAM, 5, b"\x82\x86"),
                    frame(CONTINUATION, END_HEADERS, 5, b"\x40\x81\xff\x81\xff"),
                ]
                .concat(),
                code::COMPRESSION_ERROR,
            ),
        ];
        for (bad, code) in cases {
            let before = connection(&[headers(1, END_STREAM, GET), headers(3, END_STREAM, GET)]);
            let after = headers(7, END_STREAM, GET);
            let (to_h2, client, closing) = run(&[&before[..], &bad, &after].concat());
            assert_eq!(closing, Some(code), "{bad:?}");
            // h2 reads what came before the bad frame and nothing from it on; the
            // GOAWAY names stream 3, the last that reached h2.
            assert_eq!(to_h2, before, "{bad:?}");
            assert_eq!(client, goaway(3, code));
        }
    }

    #[test]
    fn data_on_a_stream_the_client_ended_is_stream_closed() {
        let opening = connection(&[headers(1, END_STREAM, GET)]);
        let late = frame(DATA, 0, 1, b"late");
        let mut check = H2Check::new(LIMITS);
        let to_h2 = feed(&mut check, &opening, 4096);
        assert_eq!(to_h2, opening);
        let mut buf = late.clone();
        assert_eq!(check.feed(&mut buf), 0);
        // h2 hears the stream was reset instead of reading the DATA; the client's
        // frames wait until h2 has read that.
        assert_eq!(check.input(), rst(1, code::STREAM_CLOSED));
        assert!(check.client_frames(Due::Now).is_empty());
        check.input_taken(13);
        check.h2_wants_input();
        let expected = [rst(1, code::STREAM_CLOSED), window_update(4)].concat();
        assert_eq!(check.client_frames(Due::Now), expected);
        check.client_written(expected.len());
        // More DATA the client had in flight is ignored, the window given back.
        assert_eq!(feed(&mut check, &late, 100), b"");
        assert_eq!(check.client_frames(Due::Now), window_update(4));
        assert!(check.is_closing().is_none());
    }

    #[test]
    fn which_streams_are_closed_to_data() {
        let data = |sid| frame(DATA, END_STREAM, sid, b"x");
        let opening = connection(&[
            headers(1, 0, GET),
            headers(3, 0, GET),
            frame(RST_STREAM, 0, 3, &8u32.to_be_bytes()),
            headers(5, 0, GET),
            headers(9, 0, GET), // 7 skipped: closed (RFC 9113 §5.1.1)
        ]);
        let mut check = H2Check::new(LIMITS);
        feed(&mut check, &opening, 4096);
        // h2 resets stream 5: DATA in flight on it is h2's to ignore.
        check.sent(&rst(5, 0x1)); // PROTOCOL_ERROR
        for (sid, passes) in [
            (1, true),
            (3, false),
            (5, true),
            (7, false),
            (9, true),
            (11, true),
        ] {
            let got = feed(&mut check, &data(sid), 100);
            assert_eq!(got == data(sid), passes, "DATA on {sid}");
        }
        // Stream 1 ended with that DATA: the next is STREAM_CLOSED.
        assert_ne!(feed(&mut check, &data(1), 100), data(1));
    }

    #[test]
    fn headers_on_a_stream_the_client_ended_is_stream_closed() {
        let opening = connection(&[headers(1, END_STREAM, GET), headers(5, 0, GET)]);
        for (again, code) in [
            (headers(1, END_STREAM, GET), Some(code::STREAM_CLOSED)),
            // Stream 3 was skipped: a lower stream id is h2's PROTOCOL_ERROR.
            (headers(3, END_STREAM, GET), None),
        ] {
            let (to_h2, client, closing) = run(&[&opening[..], &again].concat());
            assert_eq!(closing, code);
            match code {
                Some(c) => {
                    assert_eq!(to_h2, opening);
                    assert_eq!(client, goaway(5, c));
                }
                None => assert_eq!(to_h2, [&opening[..], &again].concat()),
            }
        }
    }

    #[test]
    fn pseudo_headers_in_trailers_clear_end_stream() {
        let body = frame(DATA, 0, 1, b"x");
        for split in [false, true] {
            let trailers = if split {
                [
                    frame(HEADERS, END_STREAM, 1, &PSEUDO_TRAILER[..2]),
                    frame(CONTINUATION, END_HEADERS, 1, &PSEUDO_TRAILER[2..]),
                ]
                .concat()
            } else {
                headers(1, END_STREAM, PSEUDO_TRAILER)
            };
            let before = connection(&[headers(1, 0, GET), body.clone()]);
            let (to_h2, client, closing) = run(&[&before[..], &trailers].concat());
            assert!(client.is_empty() && closing.is_none());
            let mut expected = [&before[..], &trailers].concat();
            expected[before.len() + 4] &= !END_STREAM;
            assert_eq!(to_h2, expected);
        }
        // Trailers without pseudo-headers, and request headers, keep END_STREAM.
        let ok = connection(&[headers(1, 0, GET), body, headers(1, END_STREAM, TRAILER)]);
        assert_eq!(run(&ok).0, ok);
    }

    #[test]
    fn priority_of_the_wrong_length_resets_the_stream() {
        let bytes = connection(&[headers(1, 0, GET), frame(PRIORITY, 0, 1, &[0; 4])]);
        let (to_h2, client, closing) = run(&bytes);
        let prefix = connection(&[headers(1, 0, GET)]);
        assert_eq!(to_h2, [prefix, rst(1, code::FRAME_SIZE_ERROR)].concat());
        assert_eq!(client, rst(1, code::FRAME_SIZE_ERROR));
        assert!(closing.is_none());
    }

    #[test]
    fn switches_off_where_h2_decides() {
        let bad_ping = frame(PING, 0, 0, b"1234567");
        for odd in [
            frame(DATA, 0, 1, &vec![0; 16385]), // larger than SETTINGS_MAX_FRAME_SIZE
            frame(CONTINUATION, END_HEADERS, 1, GET),
            frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2]),
            headers(2, END_STREAM, GET),
            // Depends on itself: h2 resets the stream without decoding the block.
            headers(1, PRIORITY_FLAG, &[&[0, 0, 0, 1, 16][..], GET].concat()),
            // Padding longer than the payload.
            headers(1, PADDED, &[&[200][..], GET].concat()),
            // A HEADERS frame followed by something else than its CONTINUATION.
            [frame(HEADERS, 0, 1, GET), frame(PING, 0, 0, b"12345678")].concat(),
        ] {
            let bytes = connection(&[odd, bad_ping.clone()]);
            let (to_h2, client, closing) = run(&bytes);
            assert_eq!(to_h2, bytes);
            assert!(client.is_empty() && closing.is_none());
        }
    }

    #[test]
    fn follows_h2_output_frame_by_frame() {
        let mut check = H2Check::new(LIMITS);
        feed(&mut check, &connection(&[headers(1, 0, GET)]), 4096);
        assert!(check.at_frame_boundary());
        let out = [
            frame(HEADERS, END_HEADERS, 1, b"\x88"),
            frame(DATA, 0, 1, b"hello"),
            rst(1, 0),
        ]
        .concat();
        check.sent(&out[..4]);
        assert_eq!(check.to_frame_boundary(), 5); // the rest of the header
        check.sent(&out[4..22]); // HEADERS done, DATA's header and 3 of 5 bytes
        assert_eq!(check.to_frame_boundary(), 2); // the rest of the payload
        check.sent(&out[22..out.len() - 1]);
        assert!(!check.at_frame_boundary());
        check.sent(&out[out.len() - 1..]);
        assert!(check.at_frame_boundary());
        // h2 reset stream 1: its DATA is h2's to ignore.
        let data = frame(DATA, 0, 1, b"x");
        assert_eq!(feed(&mut check, &data, 100), data);
    }

    #[test]
    fn a_client_frame_written_in_part_is_finished_first() {
        let mut check = H2Check::new(LIMITS);
        feed(
            &mut check,
            &connection(&[headers(1, END_STREAM, GET)]),
            4096,
        );
        feed(&mut check, &frame(DATA, 0, 1, b"late"), 100);
        let all = check.client_frames(Due::Now).to_vec();
        assert_eq!(all.len(), 13 + 13);
        check.client_written(5);
        assert_eq!(check.client_frames(Due::Unfinished), &all[5..13]);
        check.client_written(8);
        assert!(check.client_frames(Due::Unfinished).is_empty());
        assert_eq!(check.client_frames(Due::Now), &all[13..]);
    }
}
