//! permessage-deflate negotiation (RFC 7692 §5, §7.1): which of a client's offers in
//! `Sec-WebSocket-Extensions` the server accepts, what it answers, and the settings the
//! compressed socket then runs with (`super::ws_yawc`).
//!
//! The client lists offers in its order of preference; the server takes the first one it
//! can honour and answers with exactly one extension. An offer it cannot honour (an
//! unknown or repeated parameter, a value out of range, a window of 8 bits that the
//! zlib backend cannot produce) is skipped, and when none is left the socket opens
//! without compression: a bad offer never fails the handshake.
//!
//! The parameters, from the server's side:
//! - `server_no_context_takeover`: always in our answer, offered or not (§7.1.1.1 lets
//!   the server add it): our compressor starts every message afresh, so between
//!   messages its state (some 300 KiB with zlib's hash tables) goes back to a shared
//!   pool instead of staying with the socket. An idle socket then holds only its
//!   inflate state (the client's window, 32 KiB at 15 bits); messages compress a little
//!   less, having no earlier message to refer to.
//! - `client_no_context_takeover`: offered, it is echoed, so our decompressor may start
//!   every message afresh too (and share its state with other sockets between messages).
//! - `server_max_window_bits=N`: we compress with a window of at most N bits and answer
//!   with that value. Not offered, the answer must not carry it (§7.1.2.1), but the
//!   window we compress with is still capped by `--ws-deflate-max-window-bits`: a client
//!   decompresses a smaller window's output without knowing.
//! - `client_max_window_bits[=N]`: the client lets us bound its window; we answer with
//!   the smaller of N (15 without a value) and our cap, and decompress with that window.
//!   Not offered, the client may use 15 bits and so do we.

use std::fmt::Write as _;

/// The smallest and largest window the zlib backend compresses with (RFC 7692 allows
/// 8, which zlib silently turns into 9: the peer's decompressor would then fail).
const MIN_WINDOW_BITS: u8 = 9;
const MAX_WINDOW_BITS: u8 = 15;

/// An accepted offer: the answer for the client, and the settings we run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 (or HTTP/2 200).
    pub response: String,
    /// Reset our compressor after each message (always: see the module docs).
    pub server_no_context_takeover: bool,
    /// Reset our decompressor after each message.
    pub client_no_context_takeover: bool,
    /// The window we compress with.
    pub server_window_bits: u8,
    /// The window we decompress with.
    pub client_window_bits: u8,
}

impl Agreed {
    /// These settings as the frame layer reads them: the same syntax as the response,
    /// but always with both windows, since the response may leave ours unsaid.
    pub fn frame_layer_params(&self) -> String {
        let mut s = format!(
            "permessage-deflate; server_max_window_bits={}; client_max_window_bits={}",
            self.server_window_bits, self.client_window_bits
        );
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        s
    }
}

/// One offer's parameters, checked.
#[derive(Default)]
struct Offer {
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Choose the first permessage-deflate offer in `headers` (every
/// `Sec-WebSocket-Extensions` value, in order) that the server can honour with windows
/// of at most `max_window_bits`; `None` when there is none.
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    max_window_bits: u8,
) -> Option<Agreed> {
    let cap = max_window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    headers
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(split_outside_quotes(','))
        .filter_map(|ext| {
            let mut parts = split_outside_quotes(';')(ext);
            let name = parts.next()?.trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                return None;
            }
            parse_offer(parts)
        })
        .find_map(|offer| accept(&offer, cap))
}

/// Split on `sep` where it is not inside a quoted string.
fn split_outside_quotes(sep: char) -> impl Fn(&str) -> std::vec::IntoIter<&str> {
    move |s: &str| {
        let mut out = Vec::new();
        let (mut start, mut quoted) = (0, false);
        for (i, c) in s.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                out.push(&s[start..i]);
                start = i + 1;
            }
        }
        out.push(&s[start..]);
        out.into_iter()
    }
}

/// The parameters of one offer; `None` declines it (§7.1: unknown, repeated or invalid).
fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for param in params {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => {
                let v = v.trim();
                // A quoted-string value is the same token without quotes (RFC 6455 §9.1).
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (n.trim(), Some(v))
            }
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            // Accepted: we answer with it whether offered or not.
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => {
                offer.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                offer.server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                offer.client_max_window_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(offer)
}

/// A window size as RFC 7692 §7.1.2 writes it: 8 to 15, digits only, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

fn accept(offer: &Offer, cap: u8) -> Option<Agreed> {
    let mut response = String::from("permessage-deflate");
    let server_window_bits = match offer.server_max_window_bits {
        // We cannot compress with a window of 8 bits: decline this offer.
        Some(8) => return None,
        Some(n) => {
            let bits = n.min(cap);
            let _ = write!(response, "; server_max_window_bits={bits}");
            bits
        }
        None => cap,
    };
    let client_window_bits = match offer.client_max_window_bits {
        Some(hint) => {
            let bits = hint.unwrap_or(MAX_WINDOW_BITS).min(cap);
            if hint.is_some() || bits < MAX_WINDOW_BITS {
                let _ = write!(response, "; client_max_window_bits={bits}");
            }
            // zlib inflates a window of 8 bits with 9 (a larger window reads a smaller one).
            bits.max(MIN_WINDOW_BITS)
        }
        None => MAX_WINDOW_BITS,
    };
    response.push_str("; server_no_context_takeover");
    if offer.client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    Some(Agreed {
        response,
        server_no_context_takeover: true,
        client_no_context_takeover: offer.client_no_context_takeover,
        server_window_bits,
        client_window_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(offers: &[&str], cap: u8) -> Option<Agreed> {
        negotiate(offers.iter().map(|s| s.as_bytes()), cap)
    }

    fn answer(offers: &[&str], cap: u8) -> Option<String> {
        agree(offers, cap).map(|a| a.response)
    }

    #[test]
    fn a_plain_offer_is_accepted_with_the_cap_unsaid_and_no_server_context() {
        let a = agree(&["permessage-deflate"], 12).unwrap();
        assert_eq!(a.response, "permessage-deflate; server_no_context_takeover");
        assert_eq!((a.server_window_bits, a.client_window_bits), (12, 15));
        assert!(a.server_no_context_takeover && !a.client_no_context_takeover);
    }

    #[test]
    fn the_browser_offer() {
        assert_eq!(
            answer(&["permessage-deflate; client_max_window_bits"], 15).as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(
            answer(&["permessage-deflate; client_max_window_bits"], 10).as_deref(),
            Some("permessage-deflate; client_max_window_bits=10; server_no_context_takeover")
        );
    }

    #[test]
    fn window_bits_are_honoured_and_capped() {
        let a = agree(
            &["permessage-deflate; server_max_window_bits=9; client_max_window_bits=11"],
            15,
        )
        .unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=11; server_no_context_takeover"
        );
        assert_eq!((a.server_window_bits, a.client_window_bits), (9, 11));
        let a = agree(
            &["permessage-deflate; server_max_window_bits=14; client_max_window_bits=15"],
            10,
        )
        .unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10; server_no_context_takeover"
        );
        assert_eq!(
            a.frame_layer_params(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10; \
             server_no_context_takeover"
        );
    }

    #[test]
    fn no_context_takeover_is_echoed() {
        let a = agree(
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            15,
        )
        .unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
    }

    #[test]
    fn the_first_acceptable_offer_wins() {
        // The first asks for an 8-bit window we cannot produce; the second is fine.
        let offers = ["x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10, permessage-deflate"];
        assert_eq!(
            answer(&offers, 15).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10; server_no_context_takeover")
        );
        // Across header lines too.
        assert_eq!(
            answer(
                &[
                    "permessage-deflate; foo=1",
                    "permessage-deflate; client_no_context_takeover"
                ],
                15
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
    }

    #[test]
    fn offers_we_cannot_honour_get_no_extension() {
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; unknown_param",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(answer(&[bad], 15), None, "{bad}");
        }
        assert_eq!(answer(&[], 15), None);
    }

    #[test]
    fn quoted_values_and_odd_spacing() {
        assert_eq!(
            answer(
                &["  PERMESSAGE-DEFLATE ;client_max_window_bits=\"12\" ;  server_no_context_takeover "],
                15
            )
            .as_deref(),
            Some("permessage-deflate; client_max_window_bits=12; server_no_context_takeover")
        );
    }

    #[test]
    fn an_eight_bit_client_window_is_inflated_with_nine() {
        let a = agree(&["permessage-deflate; client_max_window_bits=8"], 15).unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; client_max_window_bits=8; server_no_context_takeover"
        );
        assert_eq!(a.client_window_bits, 9);
    }
}
