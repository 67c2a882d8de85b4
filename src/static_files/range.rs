//! `Range: bytes=…` (RFC 9110 §14.1.2, §14.2) for static files.
//!
//! A header the server does not understand (another unit, a malformed list, too many
//! ranges) is ignored, as the RFC allows: the whole file is sent with 200. Ranges that
//! overlap are merged (§14.3 lets a server coalesce them; it also stops a client from
//! asking for the same bytes many times over). None satisfiable is a 416.

/// At most this many ranges in one request; more is ignored (a full 200).
pub const MAX_RANGES: usize = 64;

/// What a `Range` header asks of a file of some length.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Not a usable byte-range request: send the whole file.
    Ignore,
    /// 416.
    Unsatisfiable,
    /// Inclusive `(first, last)` byte positions, at least one.
    Satisfiable(Vec<(u64, u64)>),
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse `value` against a representation of `len` bytes.
pub fn parse(value: &str, len: u64) -> Ranges {
    let Some((unit, list)) = value.split_once('=') else {
        return Ranges::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Ignore;
    }
    let mut out = Vec::new();
    let mut specs = 0;
    for spec in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        specs += 1;
        if specs > MAX_RANGES {
            return Ranges::Ignore;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Ignore;
        };
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            // A suffix: the last N bytes.
            let Some(n) = number(last) else {
                return Ranges::Ignore;
            };
            if n > 0 && len > 0 {
                out.push((len - n.min(len), len - 1));
            }
            continue;
        }
        let Some(first) = number(first) else {
            return Ranges::Ignore;
        };
        let last = if last.is_empty() {
            u64::MAX
        } else {
            match number(last) {
                Some(l) if l >= first => l,
                _ => return Ranges::Ignore,
            }
        };
        if first < len {
            out.push((first, last.min(len - 1)));
        }
    }
    if specs == 0 {
        return Ranges::Ignore;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    Ranges::Satisfiable(coalesce(out))
}

/// Merge overlapping or adjacent ranges (sorted then); leave disjoint ones in order.
fn coalesce(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    if sorted.windows(2).all(|w| w[1].0 > w[0].1.saturating_add(1)) {
        return ranges;
    }
    ranges.clear();
    for (a, b) in sorted {
        match ranges.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => ranges.push((a, b)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ranges::*;

    #[test]
    fn parses_byte_ranges() {
        assert_eq!(parse("bytes=0-9", 100), Satisfiable(vec![(0, 9)]));
        assert_eq!(parse("bytes=90-", 100), Satisfiable(vec![(90, 99)]));
        assert_eq!(parse("bytes=-10", 100), Satisfiable(vec![(90, 99)]));
        assert_eq!(parse("bytes=-1000", 100), Satisfiable(vec![(0, 99)]));
        assert_eq!(parse("bytes=50-1000", 100), Satisfiable(vec![(50, 99)]));
        assert_eq!(
            parse("Bytes = 0-0 , 5-6", 100),
            Satisfiable(vec![(0, 0), (5, 6)])
        );
        assert_eq!(
            parse("bytes=20-29,0-9", 100),
            Satisfiable(vec![(20, 29), (0, 9)])
        );
        assert_eq!(
            parse("bytes=0-10,5-20,30-", 100),
            Satisfiable(vec![(0, 20), (30, 99)])
        );
        assert_eq!(parse("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=200-300,-0", 100), Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=-",
            "0-1",
            "bytes=1-2-3",
            "bytes=+1-2",
        ] {
            assert_eq!(parse(ignored, 100), Ignore, "{ignored}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(&many, 100), Ignore);
    }
}
