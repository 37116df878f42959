//! Property tests: no input makes the parser or the evaluator panic, and generated valid
//! queries are accepted and evaluate consistently.

use proptest::prelude::*;
use serde_json::{Map, Value};
use twinhub_query::{parse, parse_condition};

const VALID: [&str; 8] = [
    "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
    "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices GROUP BY properties.reported.telemetryConfig.status",
    "SELECT TOP 10 deviceId, LastActivityTime FROM devices WHERE status = 'enabled' ORDER BY deviceId DESC",
    "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' AND deviceId IN ['device1', 'device2']",
    "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId' AND devices.jobs.createdTimeUtc > '2016-09-01'",
    "SELECT deviceId FROM devices WHERE configurations.[[cfg-1]].status='Applied' OR NOT is_defined(tags.[[group]])",
    "SELECT COUNT(), SUM(a.b), AVG(a), MIN(status), MAX(x) FROM devices WHERE -a * 2 + 0x1F % 3 <> \"q\\u0041\"",
    "SELECT * FROM devices WHERE STARTSWITH(LOWER(deviceId), 'dev') AND LENGTH(tags) NIN [1, -2.5e3, null, true]",
];

/// Text built from the language's own pieces, so that parsing gets deep before failing.
fn token_soup() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "SELECT",
        "TOP",
        "*",
        "FROM",
        "devices",
        ".",
        "modules",
        "jobs",
        "WHERE",
        "GROUP",
        "BY",
        "ORDER",
        "ASC",
        "DESC",
        "AS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "NIN",
        "(",
        ")",
        "[",
        "]",
        "[[",
        "]]",
        ",",
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "+",
        "-",
        "/",
        "%",
        "'s'",
        "\"",
        "'",
        "\\",
        "1",
        "0x",
        "2.5e",
        "true",
        "null",
        "undefined",
        "deviceId",
        "tags",
        "$version",
        "COUNT",
        "SUM",
        "IS_DEFINED",
        "STARTSWITH",
        "LENGTH",
        "é",
        " ",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|pieces| pieces.join(" "))
}

/// A valid query with edits applied: deleted, inserted or replaced characters.
fn mutated_query() -> impl Strategy<Value = String> {
    let edit = (any::<prop::sample::Index>(), 0..3_u8, any::<char>());
    (
        prop::sample::select(VALID.to_vec()),
        prop::collection::vec(edit, 1..6),
    )
        .prop_map(|(query, edits)| {
            let mut chars: Vec<char> = query.chars().collect();
            for (at, kind, c) in edits {
                let index = at.index(chars.len() + 1);
                match kind {
                    0 if index < chars.len() => {
                        chars.remove(index);
                    }
                    1 if index < chars.len() => chars[index] = c,
                    _ => chars.insert(index, c),
                }
            }
            chars.into_iter().collect()
        })
}

fn path() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "deviceId",
        "status",
        "a",
        "a.b",
        "A.b",
        "x",
        "tags.group",
        "tags.[[group]]",
        "$version",
        "properties.desired.$version",
        "[[a]].[[b]]",
    ])
}

fn constant() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "1",
        "-2.5",
        "0x1F",
        "1e3",
        "0",
        "'a'",
        "\"b\\n\"",
        "''",
        "true",
        "false",
        "null",
        "undefined",
        "[1, 'a', [null]]",
        "9223372036854775807",
    ])
}

/// A syntactically valid expression over the paths above.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        path().prop_map(str::to_owned),
        constant().prop_map(str::to_owned)
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        let binary = prop::sample::select(vec![
            "=", "!=", "<>", "<", "<=", ">", ">=", "AND", "OR", "+", "-", "*", "/", "%",
        ]);
        let unary_function = prop::sample::select(vec![
            "IS_DEFINED",
            "is_null",
            "IS_BOOL",
            "IS_NUMBER",
            "IS_STRING",
            "IS_OBJECT",
            "IS_ARRAY",
            "IS_PRIMITIVE",
            "LOWER",
            "UPPER",
            "LENGTH",
        ]);
        let binary_function =
            prop::sample::select(vec!["STARTSWITH", "ENDS_WITH", "CONTAINS", "startswith"]);
        prop_oneof![
            (inner.clone(), binary, inner.clone())
                .prop_map(|(l, op, r)| format!("({l}) {op} ({r})")),
            inner.clone().prop_map(|e| format!("NOT ({e})")),
            inner.clone().prop_map(|e| format!("-({e})")),
            (unary_function, inner.clone()).prop_map(|(f, e)| format!("{f}({e})")),
            (binary_function, inner.clone(), inner.clone())
                .prop_map(|(f, a, b)| format!("{f}({a}, {b})")),
            (
                inner,
                prop::bool::ANY,
                prop::collection::vec(constant(), 0..4)
            )
                .prop_map(|(e, negated, items)| {
                    let op = if negated { "NIN" } else { "IN" };
                    // The space keeps a nested array from reading as an escaped name `[[`.
                    format!("({e}) {op} [ {}]", items.join(", "))
                }),
        ]
    })
}

/// A syntactically valid statement.
fn statement() -> impl Strategy<Value = String> {
    let select = prop::sample::select(vec![
        ("*", ""),
        ("deviceId, a.b AS ab, A", ""),
        (
            "COUNT() AS n, SUM(a) AS s, AVG(a.b), MIN(x), MAX(status)",
            "",
        ),
        ("status, COUNT(), MAX(a)", " GROUP BY status"),
        ("a.b, x AS y, COUNT() AS n", " GROUP BY x, a.b"),
    ]);
    (
        select,
        prop::option::of(0..5_usize),
        prop::option::of(expression()),
        prop::option::of((expression(), prop::bool::ANY)),
    )
        .prop_map(|((items, group), top, condition, order)| {
            let top = top.map(|n| format!("TOP {n} ")).unwrap_or_default();
            let condition = condition.map(|c| format!(" WHERE {c}")).unwrap_or_default();
            let order = order
                .map(|(e, desc)| format!(" ORDER BY {e}{}", if desc { " DESC" } else { "" }))
                .unwrap_or_default();
            format!("SELECT {top}{items} FROM devices{condition}{group}{order}")
        })
}

fn json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "a",
        "b",
        "A",
        "x",
        "deviceId",
        "status",
        "tags",
        "group",
        "$version",
        "properties",
        "desired",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6..1e6_f64).prop_map(Value::from),
        prop::sample::select(vec![i64::MAX, i64::MIN, 0, 1]).prop_map(Value::from),
        "[a-cA-C']{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
        let _ = parse_condition(&text);
    }

    #[test]
    fn parsing_token_soup_never_panics(text in token_soup()) {
        let _ = parse(&text);
        let _ = parse_condition(&text);
    }

    #[test]
    fn parsing_mutated_queries_never_panics(text in mutated_query(), doc in json()) {
        if let Ok(query) = parse(&text) {
            let _ = query.execute([&doc, &doc]);
        }
    }

    #[test]
    fn generated_queries_parse_and_evaluate(
        text in statement(),
        docs in prop::collection::vec(json(), 0..6),
    ) {
        let query = parse(&text);
        prop_assert!(query.is_ok(), "{text}: {query:?}");
        let Ok(query) = query else { return Ok(()) };
        let results = query.execute(&docs);
        if let Some(top) = query.top() {
            prop_assert!(results.len() <= top);
        }
        if !query.is_aggregate() {
            prop_assert!(results.len() <= docs.len());
        }
        for doc in &docs {
            let _ = query.project(doc);
            prop_assert_eq!(query.compare(doc, doc), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn a_condition_and_its_negation_never_both_pass(
        condition in expression(),
        doc in json(),
    ) {
        let positive = parse_condition(&condition);
        prop_assert!(positive.is_ok(), "{condition}: {positive:?}");
        let negative = parse_condition(&format!("NOT ({condition})"));
        if let (Ok(positive), Ok(negative)) = (positive, negative) {
            prop_assert!(!(positive.matches(&doc) && negative.matches(&doc)), "{condition} on {doc}");
        }
    }
}
