//! W3C Trace Context (`traceparent`): parsing what a client or an edge sends, and making the
//! context of a new span, so one request's trace id can be followed from the edge's log through
//! the origin's log to the stored event.
//!
//! Parsing follows the recommendation's rules: lowercase hex, an all-zero trace or parent id is
//! invalid, version `ff` is invalid, and a later version is read by its first four fields.

use std::hash::Hasher as _;

use siphasher::sip128::{Hasher128 as _, SipHasher13};

/// One span's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// This span's id: 16 lowercase hex digits, not all zero.
    pub span_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// Ids from a random seed string (an environment's random id): hashed, so any seed text gives
/// well-spread hex ids. SipHash, not a cryptographic hash: the seed is already random, the hash
/// only spreads it, and this runs on every request (a SHA-256 and `format!` per byte cost more
/// than the product route itself).
fn ids(seed: &str) -> (String, String) {
    let mut h = SipHasher13::new_with_keys(0x7472_6163_6570_6172, 0x656e_7400_0000_0001);
    h.write(seed.as_bytes());
    let trace_bytes = h.finish128().as_bytes();
    let mut h = SipHasher13::new_with_keys(0x7370_616e_0000_0000, 0x0000_0000_0000_0002);
    h.write(seed.as_bytes());
    let span_bytes = h.finish().to_be_bytes();
    let mut trace = String::with_capacity(32);
    push_hex(&mut trace, &trace_bytes);
    let mut span = String::with_capacity(16);
    push_hex(&mut span, &span_bytes);
    // Astronomically unlikely, but all-zero ids are invalid.
    if !is_hex(&trace, 32) {
        trace.replace_range(31..32, "1");
    }
    if !is_hex(&span, 16) {
        span.replace_range(15..16, "1");
    }
    (trace, span)
}

impl TraceContext {
    /// Parses a `traceparent` header value; `None` when it is not valid (the caller starts a
    /// new trace, as the recommendation says).
    pub fn parse(header: &str) -> Option<(String, String, u8)> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if version == "ff" || version.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if !is_hex(trace_id, 32) || !is_hex(parent_id, 16) {
            return None;
        }
        if flags.len() != 2 || flags.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some((trace_id.to_owned(), parent_id.to_owned(), flags))
    }

    /// The context of a new span for a request that carried `traceparent` (or not): the
    /// incoming trace continues, else a new one starts (sampled). `seed` is fresh randomness.
    pub fn continue_or_start(traceparent: Option<&str>, seed: &str) -> TraceContext {
        let (new_trace, span_id) = ids(seed);
        match traceparent.and_then(Self::parse) {
            Some((trace_id, _parent, flags)) => TraceContext {
                trace_id,
                span_id,
                flags,
            },
            None => TraceContext {
                trace_id: new_trace,
                span_id,
                flags: 1,
            },
        }
    }

    /// A child span of this one (for a call this span makes).
    pub fn child(&self, seed: &str) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id.clone(),
            span_id: ids(seed).1,
            flags: self.flags,
        }
    }

    /// The `traceparent` header naming this span as the parent.
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        out.push_str(&self.trace_id);
        out.push('-');
        out.push_str(&self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_recommendations_example() {
        let (t, p, f) = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(t, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p, "00f067aa0ba902b7");
        assert_eq!(f, 1);
    }

    #[test]
    fn refuses_invalid_headers() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        // A later version with an extra field is read by its first four.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn continues_an_incoming_trace_with_a_new_span() {
        let ctx = TraceContext::continue_or_start(Some(EXAMPLE), "seed");
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span_id, "00f067aa0ba902b7");
        let header = ctx.header();
        assert_eq!(TraceContext::parse(&header).unwrap().0, ctx.trace_id);
        let child = ctx.child("other");
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
    }

    #[test]
    fn starts_a_trace_when_there_is_none_or_it_is_invalid() {
        let a = TraceContext::continue_or_start(None, "seed-a");
        let b = TraceContext::continue_or_start(Some("garbage"), "seed-b");
        assert_ne!(a.trace_id, b.trace_id);
        assert!(TraceContext::parse(&a.header()).is_some());
        assert_eq!(a.flags, 1);
    }
}
