//! Hashes that must match the Java implementation bit for bit.

/// `java.lang.String#hashCode` over the UTF-16 code units of `s`.
///
/// RocketMQ stores `tagsCode = tags.hashCode()` in every ConsumeQueue entry and the broker's tag
/// filter compares those codes, so Remoting clients and Rocketraft must agree on this function.
pub fn java_string_hash(s: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in s.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_java() {
        // Values computed with OpenJDK: "TagA".hashCode() etc.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("TagA"), 2598919);
        assert_eq!(java_string_hash("hello world"), 1794106052);
        // Non-BMP characters hash as their surrogate pairs, as Java does.
        assert_eq!(java_string_hash("\u{1F600}"), 1772899);
    }
}
