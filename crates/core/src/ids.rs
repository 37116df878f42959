//! Device and module identifier rules of the IoT Hub identity registry.

/// Longest identifier IoT Hub accepts, in characters (all allowed characters are ASCII).
pub const MAX_ID_LEN: usize = 128;

/// Punctuation allowed in device and module identifiers besides ASCII letters and digits.
const ALLOWED_PUNCTUATION: &str = "-:.+%_#*?!(),=@;$'";

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidId {
    /// A human sentence naming the rule that was broken.
    pub reason: String,
}

/// Checks a device identifier: 1..=128 ASCII letters, digits or `-:.+%_#*?!(),=@;$'`.
pub fn validate_device_id(id: &str) -> Result<(), InvalidId> {
    validate("device", id)
}

/// Checks a module identifier; same rules as device identifiers.
pub fn validate_module_id(id: &str) -> Result<(), InvalidId> {
    validate("module", id)
}

fn validate(kind: &str, id: &str) -> Result<(), InvalidId> {
    if id.is_empty() {
        return Err(InvalidId {
            reason: format!("The {kind} id must not be empty."),
        });
    }
    let len = id.chars().count();
    if len > MAX_ID_LEN {
        return Err(InvalidId {
            reason: format!(
                "The {kind} id is {len} characters long; at most {MAX_ID_LEN} are allowed."
            ),
        });
    }
    if let Some((position, c)) = id
        .chars()
        .enumerate()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || ALLOWED_PUNCTUATION.contains(c)))
    {
        return Err(InvalidId {
            reason: format!(
                "The {kind} id contains the character {:?} at position {}; only ASCII letters, \
                 digits and {ALLOWED_PUNCTUATION} are allowed.",
                c.escape_default().to_string(),
                position + 1
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_every_allowed_character() {
        assert_eq!(validate_device_id("d1"), Ok(()));
        assert_eq!(validate_device_id("Az09-:.+%_#*?!(),=@;$'"), Ok(()));
        assert_eq!(validate_module_id("$edgeAgent"), Ok(()));
    }

    #[test]
    fn length_boundaries() {
        assert_eq!(validate_device_id(&"a".repeat(128)), Ok(()));
        let too_long = validate_device_id(&"a".repeat(129)).unwrap_err();
        assert_eq!(
            too_long.to_string(),
            "The device id is 129 characters long; at most 128 are allowed."
        );
        let empty = validate_module_id("").unwrap_err();
        assert_eq!(empty.to_string(), "The module id must not be empty.");
    }

    #[test]
    fn rejects_forbidden_characters() {
        for bad in [
            "a b", "a/b", "a&b", "a\"b", "a\\b", "é", "a\nb", "a{b}", "a~b", "a<b",
        ] {
            assert!(validate_device_id(bad).is_err(), "{bad:?}");
        }
        let err = validate_device_id("ab/c").unwrap_err();
        assert!(err.reason.contains("\"/\" at position 3"), "{}", err.reason);
    }

    proptest! {
        #[test]
        fn valid_ids_are_exactly_the_charset(id in "[A-Za-z0-9:.+%_#*?!(),=@;$'-]{0,130}|\\PC{0,140}") {
            let expected = (1..=MAX_ID_LEN).contains(&id.chars().count())
                && id.chars().all(|c| c.is_ascii_alphanumeric() || ALLOWED_PUNCTUATION.contains(c));
            prop_assert_eq!(validate_device_id(&id).is_ok(), expected);
        }
    }
}
