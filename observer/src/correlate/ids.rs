//! Trace and span ids: a splitmix64 stream from the engine's seed.
//! splitmix64 is a bijection of its 64-bit state, which steps by a constant
//! odd number, so its first 2^64 outputs are all distinct: every span id the
//! engine hands out is unique, and so is every trace id (its first half is
//! one such output). Zero (an invalid id in OTLP) is skipped.

use super::episode::SpanRef;

#[derive(Clone, Debug)]
pub(crate) struct Ids {
    state: u64,
}

impl Ids {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        loop {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    pub(crate) fn span_id(&mut self) -> [u8; 8] {
        self.next().to_be_bytes()
    }

    /// A new trace with its root span.
    pub(crate) fn root(&mut self) -> SpanRef {
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&self.next().to_be_bytes());
        trace_id[8..].copy_from_slice(&self.next().to_be_bytes());
        SpanRef { trace_id, span_id: self.span_id() }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_deterministic_nonzero_and_unique() {
        let (mut a, mut b) = (Ids::new(7), Ids::new(7));
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let (ra, rb) = (a.root(), b.root());
            assert_eq!(ra, rb);
            assert_ne!(ra.trace_id, [0; 16]);
            assert_ne!(ra.span_id, [0; 8]);
            assert!(seen.insert(ra.span_id));
            assert!(seen.insert(a.span_id()));
            b.span_id();
        }
        assert_ne!(Ids::new(1).root(), Ids::new(2).root());
    }
}
