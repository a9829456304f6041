//! Byte-string key ranges shared by nodes and routers.
//!
//! Keys sort bytewise. A prefix query is the half-open range `[prefix, prefix_end(prefix))`;
//! the node (its storage trees) and the router (the ranges it sends to shards) must cut that
//! range identically, so the function lives here, once.

/// The smallest key greater than every key starting with `prefix`; `None` when there is
/// none (the prefix is empty or all `0xff`), i.e. the range has no upper bound.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Trailing `0xff` bytes carry into the byte before them; an all-`0xff` or empty prefix
    /// has no end.
    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    proptest! {
        /// `[prefix, prefix_end(prefix))` holds exactly the keys starting with `prefix`.
        #[test]
        fn prefix_range_holds_exactly_the_prefixed_keys(
            prefix in proptest::collection::vec(prop_oneof![Just(0xffu8), Just(0u8), any::<u8>()], 0..4),
            key in proptest::collection::vec(prop_oneof![Just(0xffu8), Just(0u8), any::<u8>()], 0..6),
        ) {
            let end = prefix_end(&prefix);
            let in_range = key >= prefix && end.as_ref().is_none_or(|end| key < *end);
            prop_assert_eq!(in_range, key.starts_with(&prefix), "prefix {:?} end {:?}", prefix, end);
        }

        /// Keys formed by extending `prefix` always sort before its end.
        #[test]
        fn extensions_sort_before_the_end(
            prefix in proptest::collection::vec(any::<u8>(), 0..6),
            suffix in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let mut key = prefix.clone();
            key.extend_from_slice(&suffix);
            if let Some(end) = prefix_end(&prefix) {
                prop_assert!(key < end);
            }
        }
    }
}
