//! The twinhub domain model: identities, twins with their patch semantics and limits, SAS tokens and
//! shared access policies. Pure logic: no I/O and no async (the clock is read only by
//! [`time::Timestamp::now`]; every operation takes `now` as an argument).

pub mod identity;
pub mod ids;
pub mod policy;
pub mod sas;
pub mod time;
pub mod twin;

/// Compares two byte strings in time that depends only on their lengths, never on their content.
///
/// Lengths are not secret (a signature's length is public), so unequal lengths return early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_slices_compare_equal() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
    }

    #[test]
    fn any_difference_is_detected() {
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
