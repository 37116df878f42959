//! The URL-encoded property bag at the end of telemetry and cloud-to-device topics.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::topics::TopicError;

/// Everything but RFC 3986 unreserved characters is escaped, so `$` goes out as `%24` (the C SDK
/// only recognises system properties spelled `%24.mid`, `%24.ct`, ...).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Message properties as `k=v&k2=v2`, in wire order. A value of `None` is a bare `key`,
/// `Some("")` is `key=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyBag(pub Vec<(String, Option<String>)>);

impl PropertyBag {
    /// Parses a bag. Keys and values are percent-decoded (hex in either case); `+` stays a literal
    /// plus because SDKs escape spaces as `%20`. Empty items (`a=1&&b=2`, a trailing `&`) are skipped.
    pub fn parse(s: &str) -> Result<PropertyBag, TopicError> {
        let mut properties = Vec::new();
        for item in s.split('&').filter(|item| !item.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (item, None),
            };
            let key = decode(key)?;
            if key.is_empty() {
                return Err(TopicError::Malformed("property with an empty name"));
            }
            let value = value.map(decode).transpose()?;
            properties.push((key, value));
        }
        Ok(PropertyBag(properties))
    }

    /// Encodes the bag for a topic, percent-encoding keys and values.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.extend(utf8_percent_encode(key, COMPONENT));
            if let Some(value) = value {
                out.push('=');
                out.extend(utf8_percent_encode(value, COMPONENT));
            }
        }
        out
    }

    /// The value of the first property named `key`; a bare `key` (no `=`) yields `Some("")`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_deref().unwrap_or(""))
    }

    /// Whether the bag holds no property.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode(s: &str) -> Result<String, TopicError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| TopicError::Malformed("property bag is not UTF-8 after percent-decoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(items: &[(&str, Option<&str>)]) -> PropertyBag {
        PropertyBag(
            items
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        )
    }

    #[test]
    fn parses_python_system_properties() {
        let parsed = PropertyBag::parse("%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8")
            .expect("valid");
        assert_eq!(
            parsed,
            bag(&[
                ("$.mid", Some("abc")),
                ("$.ct", Some("application/json")),
                ("$.ce", Some("utf-8"))
            ])
        );
        assert_eq!(parsed.get("$.ct"), Some("application/json"));
        assert_eq!(parsed.get("$.cid"), None);
    }

    #[test]
    fn decodes_lowercase_hex_from_the_c_sdk() {
        let parsed = PropertyBag::parse("%24.ct=application%2fjson&note=a%20b%3bc").expect("valid");
        assert_eq!(parsed.get("$.ct"), Some("application/json"));
        assert_eq!(parsed.get("note"), Some("a b;c"));
    }

    #[test]
    fn distinguishes_bare_key_from_empty_value() {
        let parsed = PropertyBag::parse("prop1&prop2=&prop3=a%20string").expect("valid");
        assert_eq!(
            parsed,
            bag(&[
                ("prop1", None),
                ("prop2", Some("")),
                ("prop3", Some("a string"))
            ])
        );
        assert_eq!(parsed.get("prop1"), Some(""));
        assert_eq!(parsed.encode(), "prop1&prop2=&prop3=a%20string");
    }

    #[test]
    fn value_may_contain_equals() {
        let parsed = PropertyBag::parse("k=a=b").expect("valid");
        assert_eq!(parsed.get("k"), Some("a=b"));
    }

    #[test]
    fn plus_is_literal() {
        assert_eq!(
            PropertyBag::parse("k=a+b").expect("valid").get("k"),
            Some("a+b")
        );
    }

    #[test]
    fn skips_empty_items() {
        assert_eq!(
            PropertyBag::parse("").expect("valid"),
            PropertyBag::default()
        );
        assert_eq!(
            PropertyBag::parse("a=1&&b=2&").expect("valid"),
            bag(&[("a", Some("1")), ("b", Some("2"))])
        );
    }

    #[test]
    fn rejects_empty_names_and_invalid_utf8() {
        assert!(matches!(
            PropertyBag::parse("=v"),
            Err(TopicError::Malformed(_))
        ));
        assert!(matches!(
            PropertyBag::parse("k=%ff%fe"),
            Err(TopicError::Malformed(_))
        ));
    }

    #[test]
    fn encodes_dollar_as_percent_24() {
        let encoded = bag(&[
            ("$.mid", Some("m 1")),
            ("$.ct", Some("application/json")),
            ("iothub-ack", Some("full")),
        ])
        .encode();
        assert_eq!(
            encoded,
            "%24.mid=m%201&%24.ct=application%2Fjson&iothub-ack=full"
        );
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let original = bag(&[
            ("a&b", Some("c=d")),
            ("é", Some("%")),
            ("flag", None),
            ("empty", Some("")),
        ]);
        assert_eq!(
            PropertyBag::parse(&original.encode()).expect("valid"),
            original
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(s in ".*") {
                let _ = PropertyBag::parse(&s);
            }

            #[test]
            fn round_trips(items in proptest::collection::vec((".+", proptest::option::of(".*")), 0..5)) {
                let original = PropertyBag(items);
                prop_assert_eq!(PropertyBag::parse(&original.encode()), Ok(original));
            }
        }
    }
}
