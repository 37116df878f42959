//! Three-valued logic, comparisons, arithmetic and functions.

use serde_json::{Value, json};
use twinhub_query::parse_condition;

fn doc() -> Value {
    json!({
        "deviceId": "device1",
        "n": 5, "f": 5.0, "s": "abc", "t": true, "nul": null,
        "obj": {"a": 1}, "arr": [1, 2, 3], "big": 9_007_199_254_740_993_i64,
        "unicode": "héllo"
    })
}

/// The truth value of `condition` on the test document: `Some(true)`, `Some(false)`, or
/// `None` when it is undefined (neither it nor its negation passes).
fn truth(condition: &str) -> Option<bool> {
    let document = doc();
    let eval = |text: &str| {
        parse_condition(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .matches(&document)
    };
    let positive = eval(condition);
    let negative = eval(&format!("NOT ({condition})"));
    assert!(
        !(positive && negative),
        "{condition} is both true and false"
    );
    match (positive, negative) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    }
}

#[track_caller]
fn table(rows: &[(&str, Option<bool>)]) {
    for (condition, expected) in rows {
        assert_eq!(truth(condition), *expected, "{condition}");
    }
}

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
const U: Option<bool> = None;

#[test]
fn and_or_not_follow_three_valued_logic() {
    table(&[
        ("true AND true", T),
        ("true AND false", F),
        ("missing = 1 AND false", F),
        ("false AND missing = 1", F),
        ("missing = 1 AND true", U),
        ("missing = 1 AND missing = 1", U),
        ("missing = 1 OR true", T),
        ("true OR missing = 1", T),
        ("missing = 1 OR false", U),
        ("false OR false", F),
        ("NOT missing = 1", U),
        ("NOT true", F),
        ("NOT NOT true", T),
        ("'x' AND true", U),
        ("null", U),
        ("s", U),
        ("t", T),
        ("undefined", U),
    ]);
}

#[test]
fn comparisons_are_undefined_across_types_and_for_structures() {
    table(&[
        ("missing = 1", U),
        ("missing != 1", U),
        ("missing = missing", U),
        ("nul = null", T),
        ("null = null", T),
        ("null != null", F),
        ("nul = 1", U),
        ("nul < null", U),
        ("n = 5", T),
        ("n = 5.0", T),
        ("f = 5", T),
        ("n = '5'", U),
        ("n != '5'", U),
        ("big > 9007199254740992", T),
        ("big = 9007199254740993", T),
        ("n <> 4", T),
        ("n < 6 AND n <= 5 AND n > 4 AND n >= 5", T),
        ("s = 'abc'", T),
        ("s < 'abd'", T),
        ("'B' < 'a'", T),
        ("s > 1", U),
        ("t = true", T),
        ("false < true", T),
        ("obj = obj", U),
        ("arr = [1, 2, 3]", U),
        ("obj != 1", U),
        ("0x10 = 16", T),
        ("1e2 = 100", T),
        ("-1.5e-1 = -0.15", T),
        ("'a\\'b' = \"a'b\"", T),
        ("'\\u00e9\\t' = 'é\t'", T),
        ("'\\ud83d\\ude00' = '😀'", T),
    ]);
}

#[test]
fn arithmetic_has_precedence_and_is_undefined_on_non_numbers() {
    table(&[
        ("2 + 3 * 4 = 14", T),
        ("(2 + 3) * 4 = 20", T),
        ("n - 2 - 1 = 2", T),
        ("n % 3 = 2", T),
        ("n / 2 = 2.5", T),
        ("-n = -5", T),
        ("- (n) + 10 = 5", T),
        ("n / 0 = 1", U),
        ("n + 's' = 5", U),
        ("s + 1 = 1", U),
        ("missing + 1 = 1", U),
        ("NOT 1 = 2", T),
        ("true OR false AND false", T),
        ("(true OR false) AND false", F),
        ("NOT true OR true", T),
    ]);
}

#[test]
fn in_and_nin() {
    table(&[
        ("n IN [1, 5]", T),
        ("n IN [5.0]", T),
        ("n IN ['5']", F),
        ("s IN ['x', 'abc']", T),
        ("s IN []", F),
        ("s NIN ['x']", T),
        ("s NIN ['abc']", F),
        ("s NOT IN ['abc']", F),
        ("missing IN [1]", U),
        ("missing NIN [1]", U),
        ("nul IN [null]", T),
        ("t IN [false]", F),
        ("obj IN [1]", F),
        ("n IN [-5, [5], 5]", T),
        ("-5 IN [-5]", T),
    ]);
}

#[test]
fn functions() {
    table(&[
        ("IS_DEFINED(nul)", T),
        ("IS_DEFINED(missing)", F),
        ("IS_DEFINED(obj.a)", T),
        ("IS_NULL(nul)", T),
        ("IS_NULL(missing)", F),
        ("IS_BOOL(t)", T),
        ("IS_NUMBER(f)", T),
        ("IS_NUMBER(s)", F),
        ("IS_STRING(s)", T),
        ("IS_OBJECT(obj)", T),
        ("IS_ARRAY(arr)", T),
        ("IS_ARRAY([1])", T),
        ("IS_PRIMITIVE(nul)", T),
        ("IS_PRIMITIVE(obj)", F),
        ("STARTSWITH(deviceId, 'dev')", T),
        ("STARTS_WITH(deviceId, 'x')", F),
        ("ENDSWITH(deviceId, '1')", T),
        ("ENDS_WITH(deviceId, 'e1')", T),
        ("CONTAINS(s, 'b')", T),
        ("CONTAINS(s, 'z')", F),
        ("STARTSWITH(n, 'a')", U),
        ("LOWER('AbC') = 'abc'", T),
        ("UPPER(s) = 'ABC'", T),
        ("LOWER(n) = 5", U),
        ("LENGTH(unicode) = 5", T),
        ("LENGTH(arr) = 3", T),
        ("LENGTH(obj) = 1", U),
    ]);
}
