//! Names in the event store (DESIGN §3): one stream per Entity, one subject per key.
//!
//! - stream `dp_<namespace>_<entity>`
//! - subject `dp.<namespace>.<entity>.<partition>.<key-token>`
//! - `partition = fnv1a64(key as UTF-8) mod partitions`, with [`crds::hash::fnv1a64`] (FNV-1a,
//!   64 bit, shared with the operator). Stable across versions, platforms and languages.
//! - key token: the key itself when it matches `[A-Za-z0-9_-]{1,128}`, otherwise `~` followed
//!   by the unpadded base64url of its UTF-8 bytes. `~` is outside the plain alphabet, so the
//!   mapping is reversible and two keys never share a subject.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crds::hash::fnv1a64;

/// Longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 512;
const MAX_PLAIN_TOKEN: usize = 128;

/// Why a key cannot be stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {0} bytes long; at most {MAX_KEY_BYTES} are allowed")]
    TooLong(usize),
    #[error("the key contains a control character")]
    ControlCharacter,
}

/// A validated entity key and its place in the stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// Checks `key` against the store's rules: 1 to 512 bytes, no control characters.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        if key.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        Ok(Key(key))
    }

    /// The key as submitted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject token for this key.
    pub fn token(&self) -> String {
        let mut token = String::new();
        self.push_token(&mut token);
        token
    }

    /// Appends [`Key::token`] to `out`.
    fn push_token(&self, out: &mut String) {
        let plain = self.0.len() <= MAX_PLAIN_TOKEN
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if plain {
            out.push_str(&self.0);
        } else {
            out.push('~');
            URL_SAFE_NO_PAD.encode_string(self.0.as_bytes(), out);
        }
    }

    /// The key a subject token stands for, if it is one.
    pub fn from_token(token: &str) -> Option<Key> {
        let key = match token.strip_prefix('~') {
            Some(encoded) => String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?,
            None => token.to_owned(),
        };
        Key::new(key).ok()
    }

    /// The ordering partition of this key among `partitions`.
    pub fn partition(&self, partitions: u32) -> u32 {
        (fnv1a64(self.0.as_bytes()) % u64::from(partitions.max(1))) as u32
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an Entity's events live: its stream and subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamNames {
    namespace: String,
    entity: String,
    partitions: u32,
}

impl StreamNames {
    /// Names for `entity` in `namespace` (both DNS labels, as Kubernetes names are).
    pub fn new(namespace: &str, entity: &str, partitions: u32) -> Self {
        StreamNames {
            namespace: namespace.to_owned(),
            entity: entity.to_owned(),
            partitions: partitions.max(1),
        }
    }

    /// The Entity's name.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The JetStream stream name, `dp_<namespace>_<entity>`.
    pub fn stream(&self) -> String {
        crds::stream_name(&self.namespace, &self.entity)
    }

    /// The subjects the stream holds, `dp.<namespace>.<entity>.>`.
    pub fn stream_subjects(&self) -> String {
        format!("dp.{}.{}.>", self.namespace, self.entity)
    }

    /// The subject of one key's events.
    pub fn subject(&self, key: &Key) -> String {
        // Built by hand: every read and append of a key asks for it.
        let partition = key.partition(self.partitions).to_string();
        let mut subject = String::with_capacity(
            self.namespace.len() + self.entity.len() + partition.len() + key.0.len() + 8,
        );
        for part in ["dp", &self.namespace, &self.entity, &partition] {
            subject.push_str(part);
            subject.push('.');
        }
        key.push_token(&mut subject);
        subject
    }

    /// The subjects of one partition, for a consumer's filter.
    pub fn partition_subjects(&self, partition: u32) -> String {
        format!("dp.{}.{}.{}.*", self.namespace, self.entity, partition)
    }

    /// The partition and key of a subject of this stream.
    pub fn parse_subject(&self, subject: &str) -> Option<(u32, Key)> {
        let rest = subject
            .strip_prefix("dp.")?
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix('.')?
            .strip_prefix(self.entity.as_str())?
            .strip_prefix('.')?;
        let (partition, token) = rest.split_once('.')?;
        Some((partition.parse().ok()?, Key::from_token(token)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Key::new(k).unwrap()
    }

    #[test]
    fn plain_keys_are_their_own_token() {
        assert_eq!(key("cust-42_A").token(), "cust-42_A");
    }

    #[test]
    fn keys_that_would_break_a_subject_are_escaped_reversibly() {
        for raw in [
            "a.b",
            "has space",
            "ünïcødé",
            "*",
            ">",
            "a>b.*",
            "~x",
            "tab\u{a0}nbsp",
            "ends.",
        ] {
            let token = key(raw).token();
            assert!(token.starts_with('~'), "{raw} -> {token}");
            assert!(
                token[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{token} must be a single subject token"
            );
            assert_eq!(
                Key::from_token(&token),
                Some(key(raw)),
                "round trip of {raw}"
            );
        }
    }

    #[test]
    fn long_plain_keys_are_escaped_so_subjects_stay_short() {
        let long = "a".repeat(129);
        assert!(key(&long).token().starts_with('~'));
        assert_eq!(key(&"a".repeat(128)).token(), "a".repeat(128));
    }

    #[test]
    fn keys_are_limited_to_512_bytes() {
        assert!(Key::new("é".repeat(256)).is_ok()); // 512 bytes
        assert_eq!(Key::new("é".repeat(256) + "x"), Err(KeyError::TooLong(513)));
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert_eq!(Key::new("a\nb"), Err(KeyError::ControlCharacter));
    }

    #[test]
    fn the_partition_hash_is_fnv1a_64_and_never_changes() {
        // The hash's published test vectors are checked in `crds::hash`.
        // Partitions of a few keys, pinned: changing them would reorder every stored stream.
        let pinned: Vec<u32> = ["customer-1", "customer-2", "42", "ünïcødé"]
            .iter()
            .map(|k| key(k).partition(8))
            .collect();
        assert_eq!(pinned, [7, 2, 3, 0]);
        assert_eq!(key("a").partition(1), 0);
    }

    #[test]
    fn partitions_spread_keys_evenly() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[key(&format!("customer-{i}")).partition(8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn subjects_follow_the_documented_layout_and_parse_back() {
        let names = StreamNames::new("shop", "customer", 8);
        assert_eq!(names.stream(), "dp_shop_customer");
        assert_eq!(names.stream_subjects(), "dp.shop.customer.>");
        let k = key("a.b c");
        let subject = names.subject(&k);
        assert_eq!(
            subject,
            format!("dp.shop.customer.{}.{}", k.partition(8), k.token())
        );
        assert_eq!(subject.split('.').count(), 5);
        assert_eq!(names.parse_subject(&subject), Some((k.partition(8), k)));
        assert_eq!(names.partition_subjects(3), "dp.shop.customer.3.*");
        assert_eq!(names.parse_subject("dp.shop.order.1.x"), None);
    }
}
