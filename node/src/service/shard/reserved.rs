//! The reserved keyspace `__ringkv/` (lease records, `lease/src/lib.rs`) left out of
//! range reads, range deletes and watches that do not ask for it.
//!
//! ringkv keeps some bookkeeping as ordinary keys, so it replicates, expires, backs up and
//! moves with the shards like any key. A user who scans or counts "everything" (or any
//! range that is not inside the reserved keyspace) must not see it, as etcd users never
//! see lease bookkeeping in a range read. A range read whose whole range lies inside the
//! reserved keyspace (a prefix of `__ringkv/…`: the lease list, a backup's copy of the
//! lease records) reads it as it is.
//!
//! Why here, on each shard's range calls, and not in the router: the scan and count pages
//! stay exact (the limit and the byte budget count only keys the caller sees) and every
//! router and direct caller gets the same answer. A read whose range reaches across the
//! reserved keyspace runs as its pieces on either side ([`user_pieces`]), in scan order;
//! when a page ends between two pieces, its last key is the boundary of the reserved
//! keyspace ([`boundary_after`]): the continuation starts outside it and skips it again.
//! A watch leaves out the changes of reserved keys unless its range lies inside the
//! reserved keyspace ([`watch_leaves_out_reserved`]); its progress covers them all the
//! same, so a watch resumed from it never sees them either.

/// Keys under this prefix are ringkv's own bookkeeping.
pub const RESERVED_PREFIX: &[u8] = b"__ringkv/";
/// The first key after the reserved keyspace (`/` + 1).
pub const RESERVED_END: &[u8] = b"__ringkv0";

/// One piece of a range: `[start, end)`, `None` end = no upper bound.
pub type Piece = (Vec<u8>, Option<Vec<u8>>);

/// Whether `[start, end)` lies wholly inside the reserved keyspace (an explicit read of it).
fn inside_reserved(start: &[u8], end: Option<&[u8]>) -> bool {
    start >= RESERVED_PREFIX && end.is_some_and(|end| end <= RESERVED_END)
}

/// Whether a watch of `[start, end)` leaves out the changes of reserved keys: unless its
/// range lies inside the reserved keyspace, as for range reads.
pub fn watch_leaves_out_reserved(start: &[u8], end: Option<&[u8]>) -> bool {
    !inside_reserved(start, end)
}

/// Whether `key` is one of ringkv's own (under [`RESERVED_PREFIX`]).
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The pieces of `[start, end)` a range read covers, in key order: the whole range when it
/// lies inside the reserved keyspace, else the range without the reserved keyspace (one
/// or two pieces; none when the range is all reserved keyspace).
pub fn user_pieces(start: &[u8], end: Option<&[u8]>) -> Vec<Piece> {
    if inside_reserved(start, end) {
        return vec![(start.to_vec(), end.map(<[u8]>::to_vec))];
    }
    let mut pieces = Vec::with_capacity(2);
    if start < RESERVED_PREFIX {
        let below_end = match end {
            Some(end) if end <= RESERVED_PREFIX => end,
            _ => RESERVED_PREFIX,
        };
        if start < below_end {
            pieces.push((start.to_vec(), Some(below_end.to_vec())));
        }
    }
    let above_start = start.max(RESERVED_END);
    if end.is_none_or(|end| end > above_start) {
        pieces.push((above_start.to_vec(), end.map(<[u8]>::to_vec)));
    }
    pieces
}

/// The last key of a page that ended after `piece` (its scan order: `reverse`), with the
/// rest of the range in the next piece: the reserved keyspace's edge on `piece`'s far
/// side. The continuation (strictly after it, or before it when reverse) is a range that
/// is not inside the reserved keyspace, so it leaves it out again.
pub fn boundary_after(reverse: bool) -> Vec<u8> {
    match reverse {
        false => RESERVED_PREFIX.to_vec(),
        true => RESERVED_END.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: &str, end: Option<&str>) -> Piece {
        (start.as_bytes().to_vec(), end.map(|end| end.as_bytes().to_vec()))
    }

    /// Ranges and their pieces, as a table.
    #[test]
    fn a_range_loses_the_reserved_keyspace_unless_it_lies_inside_it() {
        let cases: [(&str, Option<&str>, Vec<Piece>); 9] = [
            (
                "",
                None,
                vec![piece("", Some("__ringkv/")), piece("__ringkv0", None)],
            ),
            ("a", Some("b"), vec![piece("a", Some("b"))]),
            ("", Some("_"), vec![piece("", Some("_"))]),
            ("b", None, vec![piece("b", None)]),
            (
                "__ringkv/lease/",
                Some("__ringkv/lease0"),
                vec![piece("__ringkv/lease/", Some("__ringkv/lease0"))],
            ),
            (
                "__ringkv/",
                Some("__ringkv0"),
                vec![piece("__ringkv/", Some("__ringkv0"))],
            ),
            // A continuation that starts inside the reserved keyspace but runs past it.
            ("__ringkv/\0", None, vec![piece("__ringkv0", None)]),
            ("", Some("__ringkv/lease0"), vec![piece("", Some("__ringkv/"))]),
            (
                "__ringkv/x",
                Some("__ringkv0a"),
                vec![piece("__ringkv0", Some("__ringkv0a"))],
            ),
        ];
        for (index, (start, end, expected)) in cases.into_iter().enumerate() {
            let pieces = user_pieces(start.as_bytes(), end.map(str::as_bytes));
            assert_eq!(pieces, expected, "case {index}: [{start:?}, {end:?})");
        }
    }

    /// The continuation after a boundary is not inside the reserved keyspace, so it skips it.
    #[test]
    fn a_continuation_from_the_boundary_skips_the_reserved_keyspace() {
        let mut after = boundary_after(false);
        after.push(0);
        assert_eq!(user_pieces(&after, None), vec![piece("__ringkv0", None)]);
        let before = boundary_after(true);
        assert_eq!(
            user_pieces(b"", Some(&before)),
            vec![piece("", Some("__ringkv/"))]
        );
    }
}
