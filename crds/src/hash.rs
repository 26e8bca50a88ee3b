//! The one hash both sides of the event store compute: the runtime partitions keys with it
//! (`partition = fnv1a64(key) mod partitions`, DESIGN §3, ADR 3) and the operator fingerprints
//! mounted configuration with it. It must never change: stored streams are ordered by it.

/// FNV-1a, 64 bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3): tiny and fully
/// specified, so every implementation in every language agrees.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }
}
