//! Every class of rejected text, with the reported position.

use twinhub_query::{MAX_QUERY_LENGTH, parse, parse_condition};

use crate::fixtures::{END, check_condition_error, check_error};

#[test]
fn message_format() {
    let error = parse("SELECT * FROM devices WHERE deviceId = 'a' FROM").expect_err("invalid");
    assert_eq!(error.position, 43);
    assert_eq!(
        error.to_string(),
        "Invalid query at position 43: expected an operator, 'GROUP BY', 'ORDER BY' or end of query, found 'FROM'"
    );
}

#[test]
fn statement_structure() {
    check_error("FROM devices", "FROM", "expected 'SELECT', found 'FROM'");
    check_error("", "", "expected 'SELECT', found end of query");
    check_error("SELECT * WHERE x = 1", "WHERE", "expected 'FROM'");
    check_error("SELECT deviceId WHERE", "WHERE", "expected ',' or 'FROM'");
    check_error(
        "SELECT FROM devices",
        "FROM",
        "expected '*', a property path or an aggregate",
    );
    check_error("SELECT *, deviceId FROM devices", ",", "expected 'FROM'");
    check_error(
        "SELECT * FROM things",
        "things",
        "expected 'devices', 'devices.modules' or 'devices.jobs'",
    );
    check_error(
        "SELECT * FROM devices.twins",
        "twins",
        "expected 'modules' or 'jobs'",
    );
    check_error(
        "SELECT * FROM devices GROUP status",
        "status",
        "expected 'BY'",
    );
    check_error(
        "SELECT deviceId AS FROM devices",
        "FROM",
        "expected an alias after AS",
    );
    check_error(
        "SELECT deviceId AS 'x' FROM devices",
        "'x'",
        "expected an alias after AS",
    );
}

#[test]
fn trailing_garbage() {
    check_error(
        "SELECT * FROM devices LIMIT 5",
        "LIMIT",
        "expected 'WHERE', 'GROUP BY', 'ORDER BY' or end of query, found 'LIMIT'",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId = 'a' LIMIT 5",
        "LIMIT",
        "found 'LIMIT'",
    );
    check_error(
        "SELECT * FROM devices ORDER BY deviceId ASC DESC",
        "DESC",
        "found 'DESC'",
    );
    check_error(
        "SELECT * FROM devices WHERE (a = 1",
        END,
        "expected an operator or ')', found end of query",
    );
    check_error("SELECT * FROM devices WHERE a = 1)", ")", "found ')'");
    check_condition_error(
        "deviceId = 'a' 'b'",
        "'b'",
        "expected 'AND', 'OR' or the end of the condition",
    );
}

#[test]
fn strings_escapes_and_names() {
    check_error(
        "SELECT * FROM devices WHERE deviceId = 'abc",
        "'abc",
        "unterminated string",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId = \"abc",
        "\"abc",
        "unterminated string",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId = 'abc\\",
        "\\",
        "unterminated escape sequence",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId = 'a\\qc'",
        "\\",
        "invalid escape sequence '\\q'",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId = '\\u12'",
        "\\",
        "invalid unicode escape",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId = '\\ud800x'",
        "\\",
        "invalid unicode escape",
    );
    check_error(
        "SELECT * FROM devices WHERE tags.[[abc = 1",
        "[[",
        "unterminated escaped name",
    );
    check_error(
        "SELECT * FROM devices WHERE tags.[[]] = 1",
        "[[",
        "empty property name",
    );
    check_error(
        "SELECT * FROM devices WHERE tags..x = 1",
        ".x = 1",
        "found '.'",
    );
    check_error(
        "SELECT * FROM devices WHERE tags. = 1",
        "=",
        "expected a property name after '.', found '='",
    );
    check_error(
        "SELECT * FROM devices WHERE tags.1 = 1",
        "1 =",
        "expected a property name after '.'",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId # 1",
        "#",
        "unexpected character '#'",
    );
    check_error(
        "SELECT * FROM devices WHERE a = 0x",
        "0x",
        "invalid hexadecimal number",
    );
    check_error(
        "SELECT * FROM devices WHERE a = 1e999",
        "1e999",
        "number out of range",
    );
    // Positions count characters, not bytes.
    check_error(
        "SELECT * FROM devices WHERE tags.été = 'ü' LIMIT",
        "LIMIT",
        "found 'LIMIT'",
    );
}

#[test]
fn dotted_error_is_at_the_second_dot() {
    let error = parse("SELECT * FROM devices WHERE tags..x = 1").expect_err("invalid");
    assert_eq!(error.position, 33);
    assert!(
        error
            .message
            .ends_with("expected a property name after '.', found '.'"),
        "{error}"
    );
}

#[test]
fn functions_and_arguments() {
    check_error(
        "SELECT * FROM devices WHERE FOO(deviceId)",
        "FOO",
        "unknown function 'FOO'",
    );
    check_error(
        "SELECT FOO(deviceId) FROM devices",
        "FOO",
        "unknown function 'FOO'",
    );
    check_error(
        "SELECT * FROM devices WHERE STARTSWITH(deviceId)",
        "STARTSWITH",
        "function 'STARTSWITH' expects 2 arguments, found 1",
    );
    check_error(
        "SELECT * FROM devices WHERE is_defined(a, b)",
        "is_defined",
        "expects 1 argument, found 2",
    );
    check_error(
        "SELECT COUNT(deviceId) FROM devices",
        "COUNT",
        "expects 0 arguments, found 1",
    );
    check_error(
        "SELECT SUM() FROM devices",
        "SUM",
        "expects 1 argument, found 0",
    );
    check_error(
        "SELECT LOWER(deviceId) FROM devices",
        "LOWER",
        "found function 'LOWER'",
    );
    check_error(
        "SELECT * FROM devices WHERE LENGTH(s,) = 1",
        ")",
        "expected an expression",
    );
    check_error(
        "SELECT * FROM devices WHERE LENGTH(s t) = 1",
        "t)",
        "expected an operator, ',' or ')'",
    );
}

#[test]
fn aggregates_only_in_the_select_list() {
    check_error(
        "SELECT * FROM devices WHERE COUNT() > 1",
        "COUNT",
        "aggregate function 'COUNT' is not allowed in WHERE",
    );
    check_error(
        "SELECT * FROM devices ORDER BY max(version)",
        "max",
        "not allowed in ORDER BY",
    );
    check_error(
        "SELECT SUM(MAX(version)) FROM devices",
        "MAX",
        "not allowed in an aggregate argument",
    );
    check_condition_error("avg(version) > 1", "avg", "not allowed in a condition");
}

#[test]
fn top_must_be_a_non_negative_integer() {
    check_error(
        "SELECT TOP -1 * FROM devices",
        "-1",
        "expected a non-negative integer after TOP, found '-'",
    );
    check_error(
        "SELECT TOP 1.5 * FROM devices",
        "1.5",
        "expected a non-negative integer after TOP, found '1.5'",
    );
    check_error(
        "SELECT TOP * FROM devices",
        "*",
        "expected a non-negative integer after TOP",
    );
    check_error(
        "SELECT TOP 'a' * FROM devices",
        "'a'",
        "expected a non-negative integer after TOP",
    );
    assert_eq!(
        parse("SELECT TOP 0 * FROM devices").map(|q| q.top()),
        Ok(Some(0))
    );
}

#[test]
fn collection_and_grouping_rules() {
    check_error(
        "SELECT deviceId FROM devices.jobs",
        "deviceId",
        "devices.jobs queries support only SELECT *",
    );
    check_error(
        "SELECT COUNT() FROM devices.jobs",
        "COUNT",
        "devices.jobs queries support only SELECT *",
    );
    check_error(
        "SELECT * FROM devices GROUP BY status",
        "GROUP",
        "GROUP BY cannot be used with SELECT *",
    );
    check_error(
        "SELECT deviceId, COUNT() FROM devices",
        "deviceId",
        "'deviceId' must appear in GROUP BY",
    );
    check_error(
        "SELECT status, tags.x AS y FROM devices GROUP BY status",
        "tags.x",
        "'y' must appear in GROUP BY",
    );
    check_error(
        "SELECT deviceId, tags.deviceId FROM devices",
        "tags.deviceId",
        "the output name 'deviceId' is used more than once",
    );
    check_error(
        "SELECT COUNT() AS n, SUM(version) AS N FROM devices",
        "SUM",
        "the output name 'N' is used more than once",
    );
    check_error(
        "SELECT status, COUNT() FROM devices GROUP BY",
        END,
        "expected a property path, found end of query",
    );
}

#[test]
fn in_needs_an_array_constant() {
    check_error(
        "SELECT * FROM devices WHERE deviceId IN 'a'",
        "'a'",
        "expected an array constant such as ['a', 'b']",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId IN [deviceId]",
        "deviceId]",
        "expected a constant",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId IN ['a' 'b']",
        "'b'",
        "expected ',' or ']'",
    );
    check_error(
        "SELECT * FROM devices WHERE deviceId IN [-'a']",
        "'a'",
        "expected a number after '-'",
    );
}

#[test]
fn conditions() {
    check_condition_error("", "", "expected an expression, found end of query");
    check_condition_error("   ", END, "found end of query");
    check_condition_error(
        "SELECT * FROM devices",
        "SELECT",
        "expected an expression, found 'SELECT'",
    );
    check_condition_error(
        "* AND deviceId = 'a'",
        "*",
        "expected an expression, found '*'",
    );
    check_condition_error(
        "deviceId =",
        END,
        "expected an expression, found end of query",
    );
}

#[test]
fn limits() {
    let long = format!(
        "SELECT * FROM devices WHERE deviceId = '{}'",
        "x".repeat(MAX_QUERY_LENGTH)
    );
    let error = parse(&long).expect_err("too long");
    assert_eq!(error.position, MAX_QUERY_LENGTH);
    assert!(
        error
            .message
            .contains("exceeds the limit of 8192 characters"),
        "{error}"
    );
    let error = parse_condition(&"é".repeat(MAX_QUERY_LENGTH + 1)).expect_err("too long");
    assert_eq!(error.position, MAX_QUERY_LENGTH);
    // Exactly at the limit is fine.
    let padding = MAX_QUERY_LENGTH - "SELECT * FROM devices WHERE deviceId = ''".len();
    assert!(
        parse(&format!(
            "SELECT * FROM devices WHERE deviceId = '{}'",
            "x".repeat(padding)
        ))
        .is_ok()
    );

    let nested = format!("{}true{}", "(".repeat(100), ")".repeat(100));
    let error = parse_condition(&nested).expect_err("too deep");
    assert!(error.message.contains("nested too deeply"), "{error}");
    let chain = format!("1{} = 1", " + 1".repeat(500));
    let error = parse_condition(&chain).expect_err("too deep");
    assert_eq!(error.position, 0);
    assert!(error.message.contains("nested too deeply"), "{error}");
    let negations = format!("{}true", "NOT ".repeat(100));
    assert!(parse_condition(&negations).is_err());
    // Long AND/OR chains are flat, not deep.
    let many = vec!["deviceId = 'a'"; 400].join(" OR ");
    assert!(parse_condition(&many).is_ok());
}
