//! Follows the client's HPACK encoder (RFC 7541) without decoding header values, to
//! tell [`super::H2Check`] two things `h2` does not: whether a header block is an HPACK
//! decoding error (RFC 9113 §4.3: a connection error of type `COMPRESSION_ERROR`;
//! `h2` 0.4 reports `PROTOCOL_ERROR`), and whether a block carries pseudo-header
//! fields (a trailer block must not, RFC 9113 §8.1; `h2` drops them silently).
//!
//! Both need the dynamic table, which every header block of the connection changes,
//! so every block is run through [`Hpack::block`] in order. The table keeps only what
//! the checks need: each entry's size (for eviction, RFC 7541 §4.4), its name's length
//! (a literal may reuse it) and whether the name is a pseudo-header. Strings are not
//! materialised: a raw string is skipped, a Huffman string is validated symbol by
//! symbol and only its decoded length and first byte are kept. That keeps the cost
//! well below `h2`'s own decoding, which builds a `HeaderMap` from the same bytes.
//!
//! Why not an HPACK crate: the ones on crates.io (`hpack`, `fluke-hpack`,
//! `loona-hpack`, `httlib-hpack`) all build owned name/value strings for every field;
//! `hpack` and its forks also rebuild a hash-map Huffman table for every Huffman
//! string and decode bit by bit, and `httlib-hpack` moves the rest of the block for
//! every field (quadratic in the block size) and accepts Huffman padding that is not
//! all ones. `h2`'s decoder, which is what matters for agreeing with `h2`, is private.
//!
//! What counts as an error is exactly RFC 7541 §§4–6, with `h2`'s limit on integer
//! length (at most four continuation octets), so the checker never rejects a block
//! `h2` would accept: an index of 0 or past the table, a truncated integer or string,
//! an integer of more than five octets, bad Huffman code (the EOS symbol, padding
//! longer than 7 bits or not all ones), and a dynamic table size update above the
//! limit (SETTINGS_HEADER_TABLE_SIZE, 4096: neither hyper nor gristmill changes it)
//! or after the first field of the block (§4.2). Header *names and values* that HPACK
//! decodes fine but HTTP forbids (upper case, unknown pseudo-headers) are not HPACK
//! errors and are left to `h2`.

use std::collections::VecDeque;

/// SETTINGS_HEADER_TABLE_SIZE: the protocol default, which the server never changes.
pub const TABLE_SIZE_LIMIT: usize = 4096;

/// RFC 7541 §4.1: an entry's size is its name and value length plus 32.
const ENTRY_OVERHEAD: usize = 32;

/// Names of the static table (RFC 7541 Appendix A), indices 1 to 61. Entries 1–14 are
/// pseudo-headers. Only the names matter here: an indexed static field is never
/// inserted into the dynamic table, and a literal reusing a static name needs its
/// length only.
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// Why a header block is not valid HPACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a field representation.
    Truncated,
    /// An integer of more than five octets (§5.1 lets a decoder refuse those).
    IntegerTooLong,
    /// Index 0, or past the end of the static and dynamic tables (§2.3.3).
    BadIndex,
    /// Huffman code with the EOS symbol, or bad padding (§5.2).
    BadHuffman,
    /// A dynamic table size update above the limit, or after a field (§4.2, §6.3).
    BadSizeUpdate,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Name length plus value length plus 32.
    size: usize,
    name_len: usize,
    pseudo: bool,
}

/// A field's name, as far as the checks care.
#[derive(Clone, Copy)]
struct Name {
    len: usize,
    pseudo: bool,
}

/// The decoder side of one connection's HPACK context; see the module docs.
#[derive(Debug)]
pub struct Hpack {
    /// Newest first: index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl Default for Hpack {
    fn default() -> Self {
        Hpack {
            entries: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE_LIMIT,
        }
    }
}

impl Hpack {
    /// Follow one complete header block (the fragments of a HEADERS frame and its
    /// CONTINUATIONs, joined). Returns whether any field is a pseudo-header. After an
    /// error the table is in an undefined state: the connection must end.
    pub fn block(&mut self, mut b: &[u8]) -> Result<bool, HpackError> {
        let mut pseudo = false;
        let mut fields = false;
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                // §6.1 indexed field.
                let index = integer(&mut b, 7)?;
                pseudo |= self.name(index)?.pseudo;
                fields = true;
            } else if first & 0xe0 == 0x20 {
                // §6.3 dynamic table size update: only before the first field.
                let size = integer(&mut b, 5)?;
                if fields || size > TABLE_SIZE_LIMIT {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // §6.2: literal with incremental indexing (01), without indexing (0000)
                // or never indexed (0001).
                let indexing = first & 0x40 != 0;
                let index = integer(&mut b, if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    let s = string(&mut b)?;
                    Name {
                        len: s.len,
                        pseudo: s.first == Some(b':'),
                    }
                } else {
                    self.name(index)?
                };
                let value = string(&mut b)?;
                if indexing {
                    self.insert(Entry {
                        size: name.len + value.len + ENTRY_OVERHEAD,
                        name_len: name.len,
                        pseudo: name.pseudo,
                    });
                }
                pseudo |= name.pseudo;
                fields = true;
            }
        }
        Ok(pseudo)
    }

    fn name(&self, index: usize) -> Result<Name, HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => Ok(Name {
                len: STATIC_NAMES[index - 1].len(),
                pseudo: index <= 14,
            }),
            _ => self
                .entries
                .get(index - 62)
                .map(|e| Name {
                    len: e.name_len,
                    pseudo: e.pseudo,
                })
                .ok_or(HpackError::BadIndex),
        }
    }

    /// §4.4: evict from the oldest end until the entry fits; an entry larger than the
    /// whole table empties it and is not added.
    fn insert(&mut self, entry: Entry) {
        self.evict_to(self.max_size.saturating_sub(entry.size));
        if entry.size <= self.max_size {
            self.size += entry.size;
            self.entries.push_front(entry);
        }
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size,
                None => break,
            }
        }
    }
}

/// §5.1 integer with an `n`-bit prefix; at most four continuation octets, as in `h2`.
fn integer(b: &mut &[u8], n: u32) -> Result<usize, HpackError> {
    let (&first, mut rest) = b.split_first().ok_or(HpackError::Truncated)?;
    let mask = (1usize << n) - 1;
    let mut value = usize::from(first) & mask;
    if value == mask {
        let mut shift = 0;
        loop {
            let (&octet, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            value += usize::from(octet & 0x7f) << shift;
            shift += 7;
            if octet & 0x80 == 0 {
                break;
            }
            if shift == 28 {
                return Err(HpackError::IntegerTooLong);
            }
        }
    }
    *b = rest;
    Ok(value)
}

/// A string literal as the checks see it.
struct Str {
    /// Decoded length.
    len: usize,
    /// Decoded first byte.
    first: Option<u8>,
}

/// §5.2 string literal: skip a raw one, validate a Huffman one.
fn string(b: &mut &[u8]) -> Result<Str, HpackError> {
    let huffman = b.first().is_some_and(|&h| h & 0x80 != 0);
    let len = integer(b, 7)?;
    if len > b.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = b.split_at(len);
    *b = rest;
    if huffman {
        huffman::check(raw)
    } else {
        Ok(Str {
            len,
            first: raw.first().copied(),
        })
    }
}

/// The HPACK Huffman code (RFC 7541 Appendix B) as a canonical code: the table fixes
/// only each symbol's code length, and the codes follow from the lengths (shorter
/// first, then by symbol). Decoding compares a left-aligned 32-bit window against the
/// first code after each length, so it needs no tree and no per-call set-up.
mod huffman {
    use super::{HpackError, Str};

    /// Code length in bits of symbols 0–255 and EOS (256), RFC 7541 Appendix B.
    const LENGTHS: [u8; 257] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
        30,
    ];
    const EOS: u16 = 256;
    const MAX_LEN: usize = 30;

    /// Per code length: the first code, the end of the codes left-aligned to 32 bits
    /// (exclusive), and where its symbols start in [`Table::symbols`].
    struct Table {
        first: [u32; MAX_LEN + 1],
        limit: [u64; MAX_LEN + 1],
        offset: [u16; MAX_LEN + 1],
        symbols: [u16; 257],
    }

    const TABLE: Table = build();

    const fn build() -> Table {
        let mut count = [0u32; MAX_LEN + 1];
        let mut s = 0;
        while s < 257 {
            count[LENGTHS[s] as usize] += 1;
            s += 1;
        }
        let mut t = Table {
            first: [0; MAX_LEN + 1],
            limit: [0; MAX_LEN + 1],
            offset: [0; MAX_LEN + 1],
            symbols: [0; 257],
        };
        let mut code = 0u32;
        let mut offset = 0u16;
        let mut len = 1;
        while len <= MAX_LEN {
            code = (code + count[len - 1]) << 1;
            t.first[len] = code;
            t.limit[len] = ((code + count[len]) as u64) << (32 - len);
            t.offset[len] = offset;
            offset += count[len] as u16;
            len += 1;
        }
        // Symbols sorted by (length, symbol): the canonical order.
        let mut next = t.offset;
        let mut s = 0;
        while s < 257 {
            let len = LENGTHS[s] as usize;
            t.symbols[next[len] as usize] = s as u16;
            next[len] += 1;
            s += 1;
        }
        t
    }

    /// The 32 bits of `raw` from bit `pos` on, padded with ones past the end.
    fn window(raw: &[u8], pos: usize) -> u32 {
        let start = pos / 8;
        let mut w = 0u64;
        for i in 0..5 {
            w = (w << 8) | u64::from(raw.get(start + i).copied().unwrap_or(0xff));
        }
        // 40 bits loaded; drop the bits before `pos` and keep the next 32.
        ((w << (pos % 8)) >> 8) as u32
    }

    /// The symbol whose code starts the window, and its code length.
    fn symbol(w: u32) -> (u16, usize) {
        let w = u64::from(w);
        let mut len = 5; // the shortest code
        while w >= TABLE.limit[len] {
            len += 1; // ends at 30: the code is complete, so every window matches
        }
        let index = ((w >> (32 - len)) as u32 - TABLE.first[len]) as u16;
        (TABLE.symbols[(TABLE.offset[len] + index) as usize], len)
    }

    /// Validate a Huffman-coded string; return its decoded length and first byte.
    pub(super) fn check(raw: &[u8]) -> Result<Str, HpackError> {
        let mut s = Str {
            len: 0,
            first: None,
        };
        walk(raw, |b| {
            s.first.get_or_insert(b);
            s.len += 1;
        })?;
        Ok(s)
    }

    /// Decode `raw` symbol by symbol, or fail on EOS or bad padding.
    fn walk(raw: &[u8], mut each: impl FnMut(u8)) -> Result<(), HpackError> {
        let bits = raw.len() * 8;
        let mut pos = 0;
        while pos < bits {
            let left = bits - pos;
            let w = window(raw, pos);
            if left <= 7 && w >> (32 - left) == (1 << left) - 1 {
                break; // padding: the most significant bits of EOS (all ones)
            }
            let (sym, n) = symbol(w);
            if n > left || sym == EOS {
                return Err(HpackError::BadHuffman);
            }
            each(sym as u8);
            pos += n;
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn decode(raw: &[u8]) -> Result<Vec<u8>, HpackError> {
            let mut out = Vec::new();
            walk(raw, |b| out.push(b))?;
            Ok(out)
        }

        #[test]
        fn code_is_complete_and_canonical() {
            // Kraft equality: every bit pattern starts exactly one code.
            let kraft: u64 = LENGTHS
                .iter()
                .map(|&l| 1u64 << (MAX_LEN - l as usize))
                .sum();
            assert_eq!(kraft, 1 << MAX_LEN);
            // Spot checks against Appendix B: '0' is 00000, 'a' 00011, ':' 1011100,
            // EOS thirty ones.
            assert_eq!(symbol(0b00000 << 27), (b'0' as u16, 5));
            assert_eq!(symbol(0b00011 << 27), (b'a' as u16, 5));
            assert_eq!(symbol(0b1011100 << 25), (b':' as u16, 7));
            assert_eq!(symbol(u32::MAX), (EOS, 30));
        }

        #[test]
        fn rfc7541_appendix_c4_examples() {
            let cases: [(&[u8], &[u8]); 4] = [
                (
                    &[
                        0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                    ],
                    b"www.example.com",
                ),
                (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], b"no-cache"),
                (
                    &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
                    b"custom-key",
                ),
                (
                    &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
                    b"custom-value",
                ),
            ];
            for (raw, text) in cases {
                assert_eq!(decode(raw).unwrap(), text);
                let s = check(raw).unwrap();
                assert_eq!((s.len, s.first), (text.len(), Some(text[0])));
            }
            assert_eq!(check(&[]).unwrap().len, 0);
        }

        #[test]
        fn rejects_eos_and_bad_padding() {
            // EOS inside the string: thirty ones, then padding.
            assert_eq!(
                check(&[0xff, 0xff, 0xff, 0xff]).err(),
                Some(HpackError::BadHuffman)
            );
            // 'a' then eleven ones, or eight ones alone: padding longer than 7 bits.
            assert_eq!(check(&[0x1f, 0xff]).err(), Some(HpackError::BadHuffman));
            assert_eq!(check(&[0xff]).err(), Some(HpackError::BadHuffman));
            // 'a' (00011) then padding 001: not the EOS prefix.
            assert_eq!(check(&[0b0001_1001]).err(), Some(HpackError::BadHuffman));
            // 'a' then 111: fine.
            assert_eq!(check(&[0b0001_1111]).unwrap().len, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal field without indexing with a new, raw name.
    fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x00, name.len() as u8];
        v.extend_from_slice(name);
        v.push(value.len() as u8);
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn rfc7541_appendix_c3_requests_keep_the_table_in_step() {
        // C.3: three requests without Huffman on one connection. The third indexes
        // the entry the first added (62 + 2 = :authority www.example.com, now third).
        let mut h = Hpack::default();
        let c31 = [
            0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p',
            b'l', b'e', b'.', b'c', b'o', b'm',
        ];
        assert_eq!(h.block(&c31), Ok(true));
        assert_eq!(h.size, 57);
        let c32 = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e',
        ];
        assert_eq!(h.block(&c32), Ok(true));
        assert_eq!(h.size, 110);
        let mut c33 = vec![0x82, 0x87, 0x85, 0xbf, 0x40, 0x0a];
        c33.extend_from_slice(b"custom-key");
        c33.push(0x0c);
        c33.extend_from_slice(b"custom-value");
        assert_eq!(h.block(&c33), Ok(true));
        assert_eq!(h.size, 164);
        assert_eq!(h.entries.len(), 3);
        // Index 65 is past the three dynamic entries.
        assert_eq!(h.block(&[0xc1]), Err(HpackError::BadIndex));
    }

    #[test]
    fn rfc7541_appendix_c5_eviction() {
        // C.5 responses with a 256-byte table: the third block evicts two entries.
        let mut h = Hpack::default();
        assert_eq!(h.block(&[0x3f, 0xe1, 0x01]), Ok(false)); // size update to 256
        let date = b"Mon, 21 Oct 2013 20:13:21 GMT";
        let mut b1 = vec![0x48, 0x03, b'3', b'0', b'2', 0x58, 0x07];
        b1.extend_from_slice(b"private");
        b1.extend_from_slice(&[0x61, 0x1d]);
        b1.extend_from_slice(date);
        b1.extend_from_slice(&[0x6e, 0x17]);
        b1.extend_from_slice(b"https://www.example.com");
        assert_eq!(h.block(&b1), Ok(true));
        assert_eq!(h.size, 222);
        assert_eq!(
            h.block(&[0x48, 0x03, b'3', b'0', b'7', 0xc1, 0xc0, 0xbf]),
            Ok(true)
        );
        assert_eq!(h.size, 222);
        let mut b3 = vec![0x88, 0xc1, 0x61, 0x1d];
        b3.extend_from_slice(b"Mon, 21 Oct 2013 20:13:22 GMT");
        b3.extend_from_slice(&[0xc0, 0x5a, 0x04]);
        b3.extend_from_slice(b"gzip");
        b3.extend_from_slice(&[0x77, 0x38]);
        b3.extend_from_slice(b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1");
        assert_eq!(h.block(&b3), Ok(true));
        assert_eq!(h.size, 215);
        assert_eq!(h.entries.len(), 3);
    }

    #[test]
    fn pseudo_headers_are_seen_by_any_representation() {
        let mut h = Hpack::default();
        assert_eq!(h.block(&literal(b"x-checksum", b"abc")), Ok(false));
        assert_eq!(h.block(&literal(b":path", b"/x")), Ok(true));
        assert_eq!(h.block(&[0x84]), Ok(true)); // indexed :path /
        assert_eq!(h.block(&[0x04, 0x01, b'/']), Ok(true)); // literal, static name :path
                                                            // A pseudo-header name added to the dynamic table, then indexed.
        let mut b = vec![0x40, 0x05];
        b.extend_from_slice(b":path");
        b.extend_from_slice(&[0x01, b'/']);
        assert_eq!(h.block(&b), Ok(true));
        assert_eq!(h.block(&[0xbe]), Ok(true));
        // Huffman-coded names: ':path' (':' is 1011100), then 'path'.
        assert_eq!(
            h.block(&[0x00, 0x84, 0xb9, 0x58, 0xd3, 0x3f, 0x01, b'/']),
            Ok(true)
        );
        assert_eq!(
            h.block(&[0x00, 0x83, 0xac, 0x69, 0x9f, 0x01, b'/']),
            Ok(false)
        );
    }

    #[test]
    fn decoding_errors() {
        let err = |b: &[u8]| Hpack::default().block(b).err();
        assert_eq!(err(&[0xc6]), Some(HpackError::BadIndex)); // 70, table empty
        assert_eq!(err(&[0x80]), Some(HpackError::BadIndex)); // index 0
        assert_eq!(err(&[0x3f, 0xe2, 0x1f]), Some(HpackError::BadSizeUpdate)); // 4097
        assert_eq!(err(&[0x82, 0x20]), Some(HpackError::BadSizeUpdate)); // after a field
        assert_eq!(
            err(&[0x40, 0x81, 0xff, 0x81, 0xff]),
            Some(HpackError::BadHuffman)
        );
        assert_eq!(err(&[0xff]), Some(HpackError::Truncated)); // integer cut short
        assert_eq!(err(&[0x00, 0x05, b'a']), Some(HpackError::Truncated)); // string cut
        assert_eq!(
            err(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Some(HpackError::IntegerTooLong)
        );
        // Four continuation octets are the most h2 accepts: a valid (huge) index.
        assert_eq!(
            err(&[0xff, 0x80, 0x80, 0x80, 0x00]),
            Some(HpackError::BadIndex)
        );
        // Size updates at the start, even two, and alone, are fine.
        assert_eq!(
            Hpack::default().block(&[0x20, 0x3f, 0xe1, 0x1f, 0x82]),
            Ok(true)
        );
        assert_eq!(Hpack::default().block(&[0x20]), Ok(false));
        assert_eq!(Hpack::default().block(&[]), Ok(false));
    }

    #[test]
    fn entry_larger_than_the_table_empties_it() {
        let mut h = Hpack::default();
        assert_eq!(h.block(&[0x20 | 0x1f, 0x21]), Ok(false)); // size 64
        let mut b = vec![0x40, 0x01, b'a', 0x01, b'b']; // 34 bytes: fits
        assert_eq!(h.block(&b), Ok(false));
        assert_eq!(h.entries.len(), 1);
        b = vec![0x40, 0x01, b'a', 0x20];
        b.extend_from_slice(&[b'v'; 32]); // 65 bytes: larger than the table
        assert_eq!(h.block(&b), Ok(false));
        assert_eq!((h.entries.len(), h.size), (0, 0));
        assert_eq!(h.block(&[0xbe]), Err(HpackError::BadIndex));
    }
}
