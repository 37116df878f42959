//! Syntax rules for topic names and topic filters (MQTT 3.1.1 §4.7).

/// Whether `name` may be used as a PUBLISH (or will) topic: non-empty, no wildcard
/// characters, no U+0000, and at most 65,535 bytes.
#[must_use]
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= usize::from(u16::MAX) && !name.contains(['+', '#', '\0'])
}

/// Whether `filter` is a well-formed SUBSCRIBE/UNSUBSCRIBE topic filter: non-empty, at most
/// 65,535 bytes, no U+0000, `+` only as a whole level and `#` only as the whole last level.
///
/// The codec leaves this check to the server because a bad filter is answered with a SUBACK
/// failure code rather than by closing the connection.
#[must_use]
pub fn is_valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > usize::from(u16::MAX) || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let valid = match level {
            "+" => true,
            "#" => is_last,
            other => !other.contains(['+', '#']),
        };
        if !valid {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for valid in [
            "a",
            "/",
            "a/b/c",
            "$iothub/twin/GET/?$rid=1",
            "sport/tennis/ ",
        ] {
            assert!(is_valid_topic_name(valid), "{valid:?}");
        }
        for invalid in ["", "a/+", "a/#", "a+b", "a\0b"] {
            assert!(!is_valid_topic_name(invalid), "{invalid:?}");
        }
        assert!(!is_valid_topic_name(&"a".repeat(65_536)));
        assert!(is_valid_topic_name(&"a".repeat(65_535)));
    }

    #[test]
    fn topic_filters_follow_the_spec_examples() {
        for valid in [
            "#",
            "+",
            "/",
            "sport/tennis/#",
            "sport/#",
            "+/tennis/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "$iothub/twin/res/#",
        ] {
            assert!(is_valid_topic_filter(valid), "{valid:?}");
        }
        for invalid in [
            "",
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "sport/+player",
            "#/a",
            "a\0",
        ] {
            assert!(!is_valid_topic_filter(invalid), "{invalid:?}");
        }
    }
}
