//! JSON pointers (RFC 6901), the way Entities name fields (`key`, `ignore`) and the event
//! store names changed fields (`changes[].path`): one escape and one unescape for every user.

use std::borrow::Cow;

/// Splits a JSON pointer into its unescaped reference tokens, refusing what RFC 6901 does not
/// allow and what a field name cannot be (the whole document, an empty segment).
pub fn tokens(pointer: &str) -> Result<Vec<String>, &'static str> {
    if pointer.is_empty() {
        return Err("it is empty; the whole document is not a field");
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("it must start with '/'");
    };
    rest.split('/')
        .map(|token| {
            if token.is_empty() {
                return Err("it has an empty segment");
            }
            let escapes_are_valid = token
                .match_indices('~')
                .all(|(at, _)| matches!(token.as_bytes().get(at + 1), Some(b'0' | b'1')));
            if !escapes_are_valid {
                return Err("'~' must be followed by 0 or 1");
            }
            Ok(unescape(token).into_owned())
        })
        .collect()
}

/// The reference tokens of a pointer already known to be well formed (validated by
/// [`tokens`], or built with [`escape`]), without checking it again.
pub fn split(pointer: &str) -> impl Iterator<Item = Cow<'_, str>> {
    pointer.split('/').skip(1).map(unescape)
}

/// One reference token unescaped: `~1` is `/`, then `~0` is `~` (in that order, so `~01`
/// stays the text `~1`).
pub fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// A field name as one reference token: `~` becomes `~0`, then `/` becomes `~1`.
pub fn escape(field: &str) -> Cow<'_, str> {
    if field.contains(['~', '/']) {
        Cow::Owned(field.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_unescape_tilde_sequences() {
        assert_eq!(tokens("/a~1b/c~0d").unwrap(), ["a/b", "c~d"]);
        assert!(tokens("id").is_err());
        assert!(tokens("/a//b").is_err());
        assert!(tokens("/a~2").is_err());
    }

    #[test]
    fn a_tilde_at_the_end_of_a_token_is_refused() {
        assert_eq!(tokens("/a~"), Err("'~' must be followed by 0 or 1"));
        assert_eq!(
            tokens(""),
            Err("it is empty; the whole document is not a field")
        );
    }

    #[test]
    fn escape_and_unescape_are_inverse_and_split_agrees_with_tokens() {
        for field in ["plain", "a/b", "c~d", "~1", "~01/", "/"] {
            assert_eq!(unescape(&escape(field)), field, "{field}");
        }
        let pointer = format!("/{}/{}", escape("a/b"), escape("~0"));
        assert_eq!(split(&pointer).collect::<Vec<_>>(), ["a/b", "~0"]);
        assert_eq!(
            split(&pointer).map(Cow::into_owned).collect::<Vec<_>>(),
            tokens(&pointer).unwrap()
        );
    }
}
