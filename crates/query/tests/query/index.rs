//! Secondary-index support: index keys, the terms a condition guarantees, metadata reads, and
//! COUNT-only GROUP BY rows from per-value counts.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use twinhub_query::{IndexKey, IndexTerm, KeyRange, parse, parse_condition, value_at};

use crate::fixtures::devices;

fn key(value: &Value) -> IndexKey {
    IndexKey::of(value).unwrap_or_else(|| panic!("{value} has no key"))
}

fn render_key(key: &IndexKey) -> String {
    key.to_value().to_string()
}

/// A term as `path: {k, ...}` or `path: [low, high)`, `..` standing for a missing bound.
fn render(terms: &[IndexTerm]) -> String {
    let term = |term: &IndexTerm| {
        let range = match &term.range {
            KeyRange::OneOf(keys) => {
                let keys: Vec<String> = keys.iter().map(render_key).collect();
                format!("{{{}}}", keys.join(", "))
            }
            KeyRange::Between { lower, upper } => {
                let lower = match lower {
                    Bound::Included(key) => format!("[{}", render_key(key)),
                    Bound::Excluded(key) => format!("({}", render_key(key)),
                    Bound::Unbounded => "(..".to_owned(),
                };
                let upper = match upper {
                    Bound::Included(key) => format!("{}]", render_key(key)),
                    Bound::Excluded(key) => format!("{})", render_key(key)),
                    Bound::Unbounded => "..)".to_owned(),
                };
                format!("{lower}, {upper}")
            }
        };
        format!("{}: {range}", term.path.join("."))
    };
    terms.iter().map(term).collect::<Vec<_>>().join("; ")
}

fn terms_of(condition: &str) -> String {
    let parsed = parse_condition(condition).unwrap_or_else(|error| panic!("{condition}: {error}"));
    render(&parsed.index_terms())
}

#[test]
fn comparisons_with_constants_give_ranges() {
    let rows = [
        ("a = 1", "a: {1}"),
        ("1 = a", "a: {1}"),
        ("a = 1.0", "a: {1.0}"),
        ("a = 'x'", r#"a: {"x"}"#),
        ("a < 5", "a: (.., 5)"),
        ("5 < a", "a: (5, ..)"),
        ("a <= -2.5", "a: (.., -2.5]"),
        ("a >= 'm'", r#"a: ["m", ..)"#),
        ("'m' >= a", r#"a: (.., "m"]"#),
        ("a = 1 + 2", "a: {3}"),
        ("a = LOWER('AB')", r#"a: {"ab"}"#),
        ("a != 5", ""),
        ("a <> 'x'", ""),
        ("a != true", "a: {false}"),
        ("a <= false", "a: {false}"),
        ("a >= false", "a: {false, true}"),
        ("a < false", "a: {}"),
        ("a = null", ""),
        ("a != null", "a: {}"),
        ("a < null", "a: {}"),
        ("a = undefined", "a: {}"),
        ("a = [1]", "a: {}"),
        ("a = b", ""),
        ("a + 1 = 2", ""),
        ("LOWER(a) = 'x'", ""),
        ("a", "a: {true}"),
        ("NOT a", "a: {false}"),
        ("DeviceId = 'd1'", r#"DeviceId: {"d1"}"#),
        (
            "tags.location.region = 'US'",
            r#"tags.location.region: {"US"}"#,
        ),
        ("true", ""),
        ("false", ""),
        ("*", ""),
    ];
    for (condition, expected) in rows {
        assert_eq!(terms_of(condition), expected, "{condition}");
    }
}

#[test]
fn in_lists_and_prefixes() {
    let rows = [
        (
            "a IN ['b', 'a', 'a', 1, 1.0, true]",
            r#"a: {true, 1, "a", "b"}"#,
        ),
        ("a IN []", "a: {}"),
        ("a IN [1, null]", ""),
        ("a IN [ [1], 2]", "a: {2}"),
        ("a NIN [1]", ""),
        ("a NOT IN [1]", ""),
        ("NOT (a NIN [1, 2])", "a: {1, 2}"),
        ("NOT (a IN [1])", ""),
        ("STARTSWITH(a, 'ab')", r#"a: ["ab", "ac")"#),
        ("startswith(a, '')", r#"a: ["", ..)"#),
        ("STARTSWITH(a, 1)", "a: {}"),
        ("NOT STARTSWITH(a, 'ab')", ""),
        ("STARTSWITH(LOWER(a), 'ab')", ""),
        ("ENDSWITH(a, 'b')", ""),
        ("CONTAINS(a, 'b')", ""),
    ];
    for (condition, expected) in rows {
        assert_eq!(terms_of(condition), expected, "{condition}");
    }
}

#[test]
fn and_intersects_per_path() {
    let rows = [
        ("a >= 2 AND a < 5", "a: [2, 5)"),
        ("a >= 2 AND a <= 2", "a: {2}"),
        ("a >= 2 AND a < 2", "a: {}"),
        ("a > 5 AND a < 3", "a: {}"),
        ("a > 1 AND a > 3 AND a <= 9 AND a < 9", "a: (3, 9)"),
        ("a >= 3 AND a > 3", "a: (3, ..)"),
        ("a > 1.5 AND a < 2", "a: (1.5, 2)"),
        ("a = 1 AND a = 2", "a: {}"),
        ("a = 1 AND a = 1.0", "a: {1}"),
        ("a = 'X' AND a = 'x'", "a: {}"),
        ("a > 'b' AND a < 5", "a: {}"),
        ("a > 1 AND a IN [0, 2, 3, 'x']", "a: {2, 3}"),
        ("STARTSWITH(a, 'ab') AND a < 'abc'", r#"a: ["ab", "abc")"#),
        ("a < '' ", r#"a: {}"#),
        (
            "tags.location.region = 'US' AND (properties.reported.x >= 10 AND tags.location.region IN ['US', 'EU'])",
            r#"tags.location.region: {"US"}; properties.reported.x: [10, ..)"#,
        ),
        ("a = 1 AND 1 = 1", "a: {1}"),
        ("a = 1 AND false", "a: {}"),
        ("a = 1 AND b = null", "a: {1}"),
        (
            "a = 1 AND DeviceId = 'x' AND deviceId = 'y'",
            r#"a: {1}; DeviceId: {"x"}; deviceId: {"y"}"#,
        ),
    ];
    for (condition, expected) in rows {
        assert_eq!(terms_of(condition), expected, "{condition}");
    }
}

#[test]
fn or_unites_paths_every_branch_constrains() {
    let rows = [
        ("a = 1 OR a = 2", "a: {1, 2}"),
        ("a = 1 OR a = 1.0 OR a IN [3]", "a: {1, 3}"),
        ("a = 1 OR a = 'x'", r#"a: {1, "x"}"#),
        ("a = 1 OR b = 2", ""),
        ("(a = 1 AND b = 'x') OR (a = 3 AND c = 1)", "a: {1, 3}"),
        ("a < 3 OR a > 10", ""),
        ("a < 3 OR a = 7", "a: (.., 7]"),
        ("a > 'm' OR a = 'c'", r#"a: ["c", ..)"#),
        ("(a > 2 AND a < 4) OR (a >= 6 AND a < 8)", "a: (2, 8)"),
        ("a < 3 OR a = 'x'", ""),
        ("a = 1 OR false", "a: {1}"),
        ("a = 1 OR true", ""),
        ("a = 1 OR b < null", "a: {1}"),
        ("a < null OR b < null", "a: {}"),
        ("b = 1 AND a < null", "b: {}"),
    ];
    for (condition, expected) in rows {
        assert_eq!(terms_of(condition), expected, "{condition}");
    }
}

#[test]
fn not_is_pushed_down() {
    let rows = [
        ("NOT (a < 5)", "a: [5, ..)"),
        ("NOT (a >= 'k')", r#"a: (.., "k")"#),
        ("NOT (a = 5)", ""),
        ("NOT (a != 'x')", r#"a: {"x"}"#),
        ("NOT (a = null)", "a: {}"),
        ("NOT (a != null)", ""),
        ("NOT (a = 1 OR b < 2)", "b: [2, ..)"),
        ("NOT (a = 1 AND b = 2)", ""),
        ("NOT (a < 1 AND b = true)", ""),
        ("NOT (a < 1 AND a < 0)", "a: [0, ..)"),
        ("NOT (a > 1 OR a < 0)", "a: [0, 1]"),
        ("NOT NOT (a = 1)", "a: {1}"),
        ("NOT (NOT a)", "a: {true}"),
    ];
    for (condition, expected) in rows {
        assert_eq!(terms_of(condition), expected, "{condition}");
    }
}

#[test]
fn terms_keep_escaped_names_and_drop_the_collection_prefix() {
    let condition = parse_condition("tags.[[a.b]] = 1").unwrap();
    assert_eq!(condition.index_terms()[0].path, ["tags", "a.b"]);
    let query = parse(
        "SELECT * FROM devices.modules WHERE devices.modules.properties.reported.status = 'x'",
    )
    .unwrap();
    assert_eq!(
        query.condition().index_terms()[0].path,
        ["properties", "reported", "status"]
    );
}

#[test]
fn terms_resolve_paths_like_the_evaluator() {
    let condition = parse_condition("DEVICEID = 'd1' AND tags.Loc = 1").unwrap();
    let terms = condition.index_terms();
    let doc = json!({"deviceId": "d1", "tags": {"Loc": 1, "loc": 2}});
    assert!(condition.matches(&doc));
    assert_eq!(value_at(&doc, &terms[0].path), Some(&json!("d1")));
    let both = json!({"status": "a", "STATUS": "b"});
    assert_eq!(value_at(&both, &["STATUS"]), Some(&json!("b")));
    assert_eq!(value_at(&both, &["Status"]), Some(&json!("a")));
    assert!(terms.iter().all(|term| term.admits(&doc)));
    let other = json!({"deviceId": "d1", "tags": {"loc": 1}});
    assert!(!terms[1].admits(&other));
}

#[test]
fn keys_equal_as_the_evaluator_compares_and_groups() {
    assert_eq!(key(&json!(1)), key(&json!(1.0)));
    assert_eq!(key(&json!(0)), key(&json!(-0.0)));
    assert_ne!(
        key(&json!(9_007_199_254_740_993_i64)),
        key(&json!(9_007_199_254_740_992.0))
    );
    assert_eq!(
        key(&json!(u64::MAX)),
        key(&json!(18_446_744_073_709_551_615.0))
    );
    assert_ne!(key(&json!("a")), key(&json!("A")));
    assert_ne!(key(&json!(1)), key(&json!("1")));
    assert_ne!(key(&json!(true)), key(&json!(1)));
    let hasher = RandomState::new();
    assert_eq!(
        hasher.hash_one(key(&json!(1))),
        hasher.hash_one(key(&json!(1.0)))
    );
    assert_eq!(
        hasher.hash_one(key(&json!(0))),
        hasher.hash_one(key(&json!(-0.0)))
    );
    for value in [json!(null), json!([1]), json!({"a": 1})] {
        assert_eq!(IndexKey::of(&value), None, "{value}");
    }
}

#[test]
fn keys_order_by_type_then_value_and_give_their_value_back() {
    let ascending = [
        json!(false),
        json!(true),
        json!(-1e300),
        json!(i64::MIN),
        json!(-1.5),
        json!(0),
        json!(0.5),
        json!(9_007_199_254_740_992.0),
        json!(9_007_199_254_740_993_i64),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(1e300),
        json!(""),
        json!("B"),
        json!("a"),
        json!("é"),
    ];
    for pair in ascending.windows(2) {
        assert!(key(&pair[0]) < key(&pair[1]), "{pair:?}");
    }
    for value in ascending {
        assert_eq!(key(&value).to_value(), value);
    }
    assert_eq!(key(&json!(1.0)).to_value(), json!(1.0));
}

#[test]
fn ranges_contain_keys_of_their_own_type_only() {
    let below_five = KeyRange::Between {
        lower: Bound::Unbounded,
        upper: Bound::Excluded(key(&json!(5))),
    };
    assert!(below_five.contains(&key(&json!(-100))));
    assert!(below_five.contains(&key(&json!(4.5))));
    assert!(!below_five.contains(&key(&json!(5.0))));
    assert!(!below_five.contains(&key(&json!(true))));
    assert!(!below_five.contains(&key(&json!("a"))));
    let from_m = KeyRange::Between {
        lower: Bound::Included(key(&json!("m"))),
        upper: Bound::Unbounded,
    };
    assert!(from_m.contains(&key(&json!("m"))));
    assert!(!from_m.contains(&key(&json!("M"))));
    assert!(!from_m.contains(&key(&json!(1))));
    assert!(KeyRange::OneOf(vec![key(&json!(1))]).contains(&key(&json!(1.0))));
}

#[test]
fn intervals_select_the_same_keys_from_a_mixed_index() {
    let index: BTreeMap<IndexKey, ()> = [
        json!(false),
        json!(true),
        json!(-3),
        json!(4),
        json!(5.0),
        json!(7.5),
        json!(""),
        json!("a"),
        json!("ab"),
        json!("b"),
    ]
    .into_iter()
    .map(|value| (key(&value), ()))
    .collect();
    let rows = [
        ("a < 5", vec![json!(-3), json!(4)]),
        ("a >= 5", vec![json!(5.0), json!(7.5)]),
        ("a <= 'a'", vec![json!(""), json!("a")]),
        ("STARTSWITH(a, 'a')", vec![json!("a"), json!("ab")]),
        ("a > 'a'", vec![json!("ab"), json!("b")]),
    ];
    for (condition, expected) in rows {
        let terms = parse_condition(condition).unwrap().index_terms();
        let interval = terms[0].range.as_interval().expect(condition);
        let found: Vec<Value> = index.range(interval).map(|(k, ())| k.to_value()).collect();
        assert_eq!(found, expected, "{condition}");
    }
    assert_eq!(KeyRange::OneOf(Vec::new()).as_interval(), None);
}

#[test]
fn metadata_reads_of_conditions() {
    let rows = [
        (
            "properties.reported.$metadata.x.$lastUpdated > '2024'",
            true,
        ),
        ("IS_DEFINED(properties.desired.$metadata)", true),
        (
            "a = 1 OR NOT (properties.desired.$metadata.$lastUpdated = a)",
            true,
        ),
        ("$METADATA.x = 1", true),
        ("properties.reported.$METADATA = 1", false),
        ("properties.reported.x = 1", false),
        ("properties.reported = 1", false),
        ("properties.reported.[[$metadata]] = 1", true),
        ("*", false),
    ];
    for (condition, expected) in rows {
        let parsed = parse_condition(condition).unwrap();
        assert_eq!(parsed.reads_metadata(), expected, "{condition}");
    }
}

const METADATA_FREE: [&str; 8] = [
    "SELECT * FROM devices WHERE properties.reported.telemetryConfig.status = 'Success'",
    "SELECT deviceId, properties.reported.connectivity FROM devices ORDER BY properties.desired.$version",
    "SELECT tags, properties.reported.telemetryConfig AS t FROM devices",
    "SELECT properties.reported.connectivity AS c, COUNT() AS n FROM devices GROUP BY properties.reported.connectivity",
    "SELECT MAX(properties.reported.$version) AS v FROM devices",
    "SELECT TOP 2 deviceId FROM devices WHERE IS_OBJECT(properties.reported) ORDER BY properties.reported DESC",
    "SELECT * FROM devices ORDER BY properties",
    "SELECT COUNT() AS n FROM devices WHERE properties.reported = properties.desired",
];

#[test]
fn metadata_reads_of_queries() {
    let reading = [
        "SELECT * FROM devices WHERE properties.reported.$metadata.connectivity.$lastUpdated > '2024'",
        "SELECT properties.reported FROM devices",
        "SELECT Properties FROM devices",
        "SELECT properties.desired.$metadata AS m FROM devices",
        "SELECT deviceId FROM devices ORDER BY properties.reported.$metadata.$lastUpdated",
        "SELECT properties.desired AS d, COUNT() FROM devices GROUP BY properties.desired",
        "SELECT COUNT() AS n FROM devices GROUP BY properties.reported",
        "SELECT MAX(properties.reported.$metadata.$lastUpdated) AS last FROM devices",
    ];
    for query in reading {
        assert!(parse(query).unwrap().reads_metadata(), "{query}");
    }
    for query in METADATA_FREE {
        assert!(!parse(query).unwrap().reads_metadata(), "{query}");
    }
}

/// Removes every `$metadata` member, at any depth.
fn without_metadata(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(key, _)| key.as_str() != "$metadata")
                .map(|(key, value)| (key.clone(), without_metadata(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn queries_that_read_no_metadata_answer_alike_without_it() {
    let docs = devices();
    let stripped: Vec<Value> = docs.iter().map(without_metadata).collect();
    for text in METADATA_FREE {
        let query = parse(text).unwrap();
        let (full, lean) = (query.execute(&docs), query.execute(&stripped));
        if query.is_select_star() {
            let ids = |rows: Vec<Value>| -> Vec<Value> {
                rows.iter().map(|row| row["deviceId"].clone()).collect()
            };
            assert_eq!(ids(full), ids(lean), "{text}");
        } else {
            assert_eq!(full, lean, "{text}");
        }
    }
    // And the check above can tell: a query that reads metadata answers differently.
    let reading = parse("SELECT properties.reported AS r FROM devices").unwrap();
    assert_ne!(reading.execute(&docs), reading.execute(&stripped));
}

#[test]
fn counted_group_paths() {
    let counted = [
        (
            "SELECT tags.x, COUNT() FROM devices GROUP BY tags.x",
            vec!["tags", "x"],
        ),
        (
            "SELECT COUNT() AS n, tags.x AS value FROM devices WHERE a > 1 GROUP BY tags.x ORDER BY n DESC",
            vec!["tags", "x"],
        ),
        (
            "SELECT TOP 3 COUNT() FROM devices GROUP BY status",
            vec!["status"],
        ),
        (
            "SELECT status AS s FROM devices GROUP BY Status",
            vec!["Status"],
        ),
        (
            "SELECT properties.reported.Mode FROM devices GROUP BY Properties.reported.Mode",
            vec!["Properties", "reported", "Mode"],
        ),
        (
            "SELECT status AS a, COUNT() AS b, COUNT() AS c FROM devices GROUP BY status",
            vec!["status"],
        ),
        (
            "SELECT properties.reported.status, COUNT() FROM devices.modules GROUP BY devices.modules.properties.reported.status",
            vec!["properties", "reported", "status"],
        ),
    ];
    for (query, expected) in counted {
        let path = parse(query).unwrap().counted_group_path();
        assert_eq!(
            path,
            Some(expected.iter().map(ToString::to_string).collect()),
            "{query}"
        );
    }
    let not_counted = [
        "SELECT status, SUM(version) FROM devices GROUP BY status",
        "SELECT status, AVG(version) FROM devices GROUP BY status",
        "SELECT status, MIN(version), COUNT() FROM devices GROUP BY status",
        "SELECT status, MAX(version) FROM devices GROUP BY status",
        "SELECT status, COUNT() FROM devices GROUP BY status",
        "SELECT status, COUNT() FROM devices GROUP BY status, connectionState",
        "SELECT status, connectionState, COUNT() FROM devices GROUP BY status, connectionState",
        "SELECT COUNT() FROM devices",
        "SELECT status FROM devices",
        "SELECT * FROM devices",
    ];
    for query in not_counted {
        assert_eq!(parse(query).unwrap().counted_group_path(), None, "{query}");
    }
}

#[test]
fn rows_from_group_counts_merge_equal_values_and_skip_empty_ones() {
    let query = parse("SELECT tags.x AS x, COUNT() AS n FROM devices GROUP BY tags.x").unwrap();
    let rows = query.rows_from_group_counts([
        (Some(json!("b")), 1),
        (Some(json!("gone")), 0),
        (Some(json!(1.0)), 2),
        (None, 4),
        (Some(json!(1)), 3),
        (Some(json!(null)), 1),
        (Some(json!("b")), 1),
    ]);
    assert_eq!(
        rows,
        [
            json!({"n": 4}),
            json!({"x": null, "n": 1}),
            json!({"x": 1.0, "n": 5}),
            json!({"x": "b", "n": 2}),
        ]
    );
    let ordered =
        parse("SELECT TOP 1 COUNT() AS n, tags.x FROM devices GROUP BY tags.x ORDER BY n DESC")
            .unwrap();
    assert_eq!(
        ordered.rows_from_group_counts([(Some(json!("a")), 1), (Some(json!("b")), 2)]),
        [json!({"n": 2, "x": "b"})]
    );
    let summed = parse("SELECT status, SUM(version) FROM devices GROUP BY status").unwrap();
    assert!(
        summed
            .rows_from_group_counts([(Some(json!("a")), 1)])
            .is_empty()
    );
    // Named as the documents spell `status`, which counts cannot tell.
    let spelled = parse("SELECT Status, COUNT() FROM devices GROUP BY STATUS").unwrap();
    assert!(
        spelled
            .rows_from_group_counts([(Some(json!("a")), 1)])
            .is_empty()
    );
}

#[test]
fn rows_from_group_counts_of_a_path_spelled_unlike_the_documents() {
    let docs = devices();
    let query = parse("SELECT STATUS AS s, COUNT() FROM devices GROUP BY Status").unwrap();
    let path = query.counted_group_path().unwrap();
    let groups = docs.iter().map(|doc| (value_at(doc, &path).cloned(), 1));
    let expected = [
        json!({"s": "disabled", "$2": 1}),
        json!({"s": "enabled", "$2": 4}),
    ];
    assert_eq!(query.aggregate(&docs), expected);
    assert_eq!(query.rows_from_group_counts(groups), expected);
}

#[test]
fn rows_from_the_fixture_counts_match_aggregation() {
    let docs = devices();
    let query = parse(
        "SELECT tags.location.region AS region, COUNT() AS n FROM devices \
         GROUP BY tags.location.region ORDER BY n DESC",
    )
    .unwrap();
    let path = ["tags", "location", "region"];
    let groups = docs.iter().map(|doc| (value_at(doc, &path).cloned(), 1));
    assert_eq!(query.rows_from_group_counts(groups), query.aggregate(&docs));
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-3..4_i64).prop_map(Value::from),
        (-3..4_i64).prop_map(|n| Value::from(n as f64)),
        prop::sample::select(vec![-1.5, 0.5, 2.5, -0.0]).prop_map(Value::from),
        prop::sample::select(vec![
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(9_007_199_254_740_992_i64),
            json!(9_007_199_254_740_993_i64),
            json!(9_007_199_254_740_992.0),
            json!(9.223_372_036_854_776e18),
            json!(1.844_674_407_370_955_2e19),
        ]),
        prop::sample::select(vec!["", "a", "A", "ab", "b", "é", "1"]).prop_map(Value::from),
    ]
}

/// A value as documents hold them: scalars, null, arrays and objects.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => Just(Value::Null),
        1 => Just(json!([1])),
        1 => Just(json!({"d": 1})),
    ]
}

/// Small documents over the paths the generated conditions read.
fn document() -> impl Strategy<Value = Value> {
    let member = || prop::option::of(value());
    (member(), member(), member(), member(), member()).prop_map(|(a, upper_a, b, d, x)| {
        let mut doc = Map::new();
        let put = |object: &mut Map<String, Value>, name: &str, value: Option<Value>| {
            if let Some(value) = value {
                object.insert(name.to_owned(), value);
            }
        };
        put(&mut doc, "a", a);
        put(&mut doc, "A", upper_a);
        put(&mut doc, "b", b);
        let mut c = Map::new();
        put(&mut c, "d", d);
        doc.insert("c".to_owned(), Value::Object(c));
        let mut tags = Map::new();
        put(&mut tags, "x", x);
        doc.insert("tags".to_owned(), Value::Object(tags));
        Value::Object(doc)
    })
}

const LITERALS: [&str; 16] = [
    "1",
    "1.0",
    "2",
    "-1",
    "1.5",
    "0",
    "'a'",
    "'b'",
    "'A'",
    "''",
    "true",
    "false",
    "null",
    "undefined",
    "[1]",
    "9223372036854775807",
];

fn condition() -> impl Strategy<Value = String> {
    let path = prop::sample::select(vec!["a", "A", "b", "c.d", "tags.x", "TAGS.x"]);
    let literal = prop::sample::select(LITERALS.to_vec());
    let op = prop::sample::select(vec!["=", "!=", "<>", "<", "<=", ">", ">="]);
    let list = prop::collection::vec(literal.clone(), 0..4).prop_map(|items| items.join(", "));
    let leaf = prop_oneof![
        (path.clone(), op.clone(), literal.clone()).prop_map(|(p, o, l)| format!("{p} {o} {l}")),
        (literal.clone(), op.clone(), path.clone()).prop_map(|(l, o, p)| format!("{l} {o} {p}")),
        (
            path.clone(),
            prop::sample::select(vec!["IN", "NIN", "NOT IN"]),
            list
        )
            .prop_map(|(p, o, l)| format!("{p} {o} [ {l}]")),
        (path.clone(), literal.clone()).prop_map(|(p, l)| format!("STARTSWITH({p}, {l})")),
        (path.clone(), path.clone(), op).prop_map(|(p, q, o)| format!("{p} {o} {q}")),
        (path.clone(), literal).prop_map(|(p, l)| format!("{p} + 1 > {l}")),
        path.clone().prop_map(|p| format!("IS_DEFINED({p})")),
        path.prop_map(str::to_owned),
        prop::sample::select(vec!["true", "false"]).prop_map(str::to_owned),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4)
                .prop_map(|items| format!("({})", items.join(" AND "))),
            prop::collection::vec(inner.clone(), 2..4)
                .prop_map(|items| format!("({})", items.join(" OR "))),
            inner.prop_map(|item| format!("NOT ({item})")),
        ]
    })
}

/// Keys to probe ranges with: every type, both sides of every literal.
fn probe_keys() -> Vec<IndexKey> {
    [
        json!(false),
        json!(true),
        json!(-2),
        json!(-1),
        json!(0),
        json!(0.5),
        json!(1),
        json!(1.5),
        json!(2),
        json!(3),
        json!(9_223_372_036_854_775_807_i64),
        json!(u64::MAX),
        json!(""),
        json!("A"),
        json!("a"),
        json!("ab"),
        json!("b"),
        json!("é"),
    ]
    .into_iter()
    .map(|value| key(&value))
    .collect()
}

/// What every returned range promises callers beyond holding the matches.
fn check_range_form(range: &KeyRange) -> Result<(), TestCaseError> {
    match range {
        KeyRange::OneOf(keys) => {
            prop_assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
        }
        KeyRange::Between { .. } => {
            let interval = range.as_interval().expect("a Between has an interval");
            let index: BTreeMap<IndexKey, ()> =
                probe_keys().into_iter().map(|key| (key, ())).collect();
            // Never inverted: this would panic.
            let selected: Vec<&IndexKey> = index.range(interval).map(|(key, ())| key).collect();
            let contained: Vec<&IndexKey> =
                index.keys().filter(|key| range.contains(key)).collect();
            prop_assert_eq!(selected, contained, "{:?}", range);
        }
    }
    Ok(())
}

const COUNT_QUERIES: [&str; 9] = [
    "SELECT tags.x, COUNT() AS n FROM devices GROUP BY tags.x",
    "SELECT COUNT() AS n, tags.x AS value FROM devices GROUP BY tags.x ORDER BY n DESC, value",
    "SELECT TOP 2 tags.x, COUNT() FROM devices GROUP BY tags.x ORDER BY x DESC",
    "SELECT COUNT() FROM devices GROUP BY a",
    "SELECT a AS v FROM devices GROUP BY a ORDER BY v DESC",
    "SELECT TOP 3 a AS s, COUNT() AS m, COUNT() AS k FROM devices WHERE a != 'zzz' GROUP BY a ORDER BY m",
    "SELECT TOP 0 a AS v, COUNT() FROM devices GROUP BY a",
    "SELECT COUNT() AS n FROM devices GROUP BY tags.x ORDER BY n",
    "SELECT COUNT() AS n, TAGS.x FROM devices GROUP BY tags.x ORDER BY x",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_match_satisfies_every_term(
        text in condition(),
        docs in prop::collection::vec(document(), 1..16),
    ) {
        let parsed = parse_condition(&text);
        prop_assert!(parsed.is_ok(), "{text}: {parsed:?}");
        let Ok(parsed) = parsed else { return Ok(()) };
        let terms = parsed.index_terms();
        for term in &terms {
            check_range_form(&term.range)?;
        }
        for doc in docs.iter().filter(|doc| parsed.matches(doc)) {
            for term in &terms {
                prop_assert!(term.admits(doc), "{text}: {} fails {:?}", doc, term);
            }
        }
    }

    /// Setting to `null` whatever a condition does not read leaves its outcome unchanged, which
    /// is what lets the hub build only the parts of a twin a condition reads.
    #[test]
    fn members_a_condition_does_not_read_do_not_change_its_outcome(
        text in condition(),
        doc in document(),
    ) {
        let parsed = parse_condition(&text).unwrap();
        let mut trimmed = doc.clone();
        let top: Vec<String> = doc.as_object().unwrap().keys().cloned().collect();
        for name in top {
            if !parsed.reads_under(&[&name]) {
                trimmed[&name] = Value::Null;
            }
        }
        if !parsed.reads_under(&["c", "d"]) {
            trimmed["c"]["d"] = Value::Null;
        }
        prop_assert_eq!(parsed.matches(&doc), parsed.matches(&trimmed), "{}: {} against {}", text, doc, trimmed);
    }

    #[test]
    fn keys_agree_with_comparison_grouping_and_sorting(x in scalar(), y in scalar()) {
        let doc = json!({"a": x, "b": y});
        let holds = |condition: &str| parse_condition(condition).unwrap().matches(&doc);
        let (kx, ky) = (key(&x), key(&y));
        prop_assert_eq!(kx == ky, holds("a = b"));
        let grouped = parse("SELECT COUNT() FROM devices GROUP BY a").unwrap();
        let (dx, dy) = (json!({"a": x}), json!({"a": y}));
        prop_assert_eq!(kx == ky, grouped.aggregate([&dx, &dy]).len() == 1);
        if kx == ky {
            let hasher = RandomState::new();
            prop_assert_eq!(hasher.hash_one(&kx), hasher.hash_one(&ky));
        }
        let same_type = std::mem::discriminant(&kx) == std::mem::discriminant(&ky);
        prop_assert_eq!(same_type && kx < ky, holds("a < b"));
        let sorted = parse("SELECT * FROM devices ORDER BY a").unwrap();
        prop_assert_eq!(kx.cmp(&ky), sorted.compare(&dx, &dy));
        prop_assert_eq!(kx.to_value(), x);
    }

    #[test]
    fn rows_from_group_counts_equal_aggregation(
        text in prop::sample::select(COUNT_QUERIES.to_vec()),
        docs in prop::collection::vec(document(), 0..12),
        merges in prop::collection::vec(any::<bool>(), 12),
        empties in prop::collection::vec(prop::option::of(value()), 12),
    ) {
        let query = parse(text).unwrap();
        let path = query.counted_group_path().expect("a COUNT-only query");
        // What an index would report: each value with its number of documents, the same value
        // sometimes reported twice, with entries of no documents mixed in.
        let mut groups: Vec<(Option<Value>, u64)> = Vec::new();
        for ((doc, merge), empty) in docs.iter().zip(&merges).zip(&empties) {
            let value = value_at(doc, &path).cloned();
            // Spelled alike: `==` takes -0.0 for 0.0, which an index would keep apart.
            let spelling = value.as_ref().map(Value::to_string);
            let known = groups.iter_mut().find(|(known, count)| {
                *count > 0 && known.as_ref().map(Value::to_string) == spelling
            });
            match known {
                Some((_, count)) if *merge => *count += 1,
                _ => groups.push((value, 1)),
            }
            groups.push((empty.clone(), 0));
        }
        let expected = query.aggregate(&docs);
        let actual = query.rows_from_group_counts(groups);
        // Serialized too, so that column order and number spelling count.
        prop_assert_eq!(serde_json::to_string(&actual).unwrap(), serde_json::to_string(&expected).unwrap());
        prop_assert_eq!(actual, expected);
    }
}

#[test]
fn rows_from_a_total_count_equal_aggregating_the_documents() {
    let docs = devices();
    let counted = [
        "SELECT COUNT() FROM devices",
        "SELECT COUNT() AS n FROM devices",
        "SELECT COUNT() AS a, COUNT() AS b FROM devices WHERE status = 'enabled'",
        "SELECT TOP 0 COUNT() AS n FROM devices",
    ];
    for text in counted {
        let query = parse(text).unwrap();
        assert!(query.is_total_count(), "{text}");
        let matching = docs.iter().filter(|d| query.condition().matches(d)).count();
        assert_eq!(
            query.rows_from_total_count(matching as u64),
            query.execute(docs.iter()),
            "{text}"
        );
        assert_eq!(query.rows_from_total_count(0), query.execute([]), "{text}");
    }
    let not_counted = [
        "SELECT status, COUNT() FROM devices GROUP BY status",
        "SELECT COUNT() AS n, SUM(version) AS v FROM devices",
        "SELECT * FROM devices",
        "SELECT deviceId FROM devices",
    ];
    for text in not_counted {
        let query = parse(text).unwrap();
        assert!(!query.is_total_count(), "{text}");
        assert!(query.rows_from_total_count(3).is_empty(), "{text}");
    }
}

#[test]
fn what_conditions_read() {
    let rows = [
        ("tags.location.region = 'eu'", &["tags"][..], true),
        ("TAGS.location.region = 'eu'", &["tags"], true),
        (
            "tags.location.region = 'eu'",
            &["properties", "reported"],
            false,
        ),
        (
            "properties.reported.battery < 20",
            &["properties", "reported"],
            true,
        ),
        (
            "properties.reported.battery < 20",
            &["properties", "desired"],
            false,
        ),
        ("IS_DEFINED(properties)", &["properties", "desired"], true),
        (
            "properties.Desired.x = 1",
            &["properties", "desired"],
            false,
        ),
        (
            "deviceId = 'a' OR tags.x = properties.desired.x",
            &["properties", "desired"],
            true,
        ),
        ("*", &["tags"], false),
    ];
    for (condition, prefix, expected) in rows {
        let parsed = parse_condition(condition).unwrap();
        assert_eq!(
            parsed.reads_under(prefix),
            expected,
            "{condition} under {prefix:?}"
        );
    }
}
