//! The IoT Hub query language over JSON documents (twins, module twins, device-job records).
//!
//! Text is parsed and compiled once ([`parse`], [`parse_condition`]) into a [`Query`] or
//! [`Condition`] whose paths are pre-split and constants pre-lowered; evaluating it over a
//! document borrows from the document and allocates nothing on the common path.
//!
//! # Language
//!
//! `SELECT [TOP n] * | item [AS alias] {, item [AS alias]} FROM devices | devices.modules |
//! devices.jobs [WHERE cond] [GROUP BY path {, path}] [ORDER BY expr [ASC|DESC] {, ...}]`,
//! where an item is a property path or an aggregate (`COUNT()`, `SUM(x)`, `AVG(x)`, `MIN(x)`,
//! `MAX(x)`). `ORDER BY` is an extension (IoT Hub has none); so are the scalar functions beyond
//! `IS_DEFINED`, `STARTSWITH` and `ENDSWITH`, and `NOT IN` as a spelling of `NIN`.
//!
//! # Semantics
//!
//! Azure's three-valued SQL dialect: a missing property is *undefined*; comparisons with
//! undefined, across types, or with arrays/objects are undefined; `null = null` is true; a
//! condition passes only when it is exactly `true`. Decisions where IoT Hub is silent:
//! - un-aliased aggregates are named `$1`, `$2`, ... by their position in the SELECT list;
//! - ORDER BY sorts undefined < null < booleans < numbers < strings < arrays < objects
//!   (ascending; DESC reverses), strings by code point;
//! - in an aggregate query, ORDER BY and TOP apply to the output rows (ORDER BY paths name
//!   output columns), which otherwise come in group-key order;
//! - two SELECT items with the same output name (ASCII case ignored) are an error;
//! - aggregate rows hold the selected columns only (a GROUP BY path not selected is not
//!   output), and computed numbers that are integral print as integers (`60.0` → `60`);
//! - strings compare by Unicode code point;
//! - `[[` always opens an escaped name, so a nested array constant needs a space: `[ [1] ]`.

mod aggregate;
mod ast;
mod lexer;
mod parser;
mod value;

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::aggregate::Column;
use crate::ast::{Expr, Path};

/// The longest query text accepted, in characters (IoT Hub's limit).
pub const MAX_QUERY_LENGTH: usize = 8192;

/// Why query text was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// 0-based character offset of the offending token.
    pub position: usize,
    /// The full message, e.g. `Invalid query at position 27: expected 'FROM', found 'WHERE'`.
    pub message: String,
}

impl QueryError {
    fn at(position: usize, detail: std::fmt::Arguments<'_>) -> Self {
        QueryError {
            position,
            message: format!("Invalid query at position {position}: {detail}"),
        }
    }
}

/// The collection a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `FROM devices`: device twins.
    Devices,
    /// `FROM devices.modules`: module twins.
    DevicesModules,
    /// `FROM devices.jobs`: per-device job records.
    DevicesJobs,
}

/// A compiled WHERE expression.
#[derive(Debug, Clone)]
pub struct Condition {
    expr: Expr,
}

impl Condition {
    fn everything() -> Self {
        Condition { expr: Expr::TRUE }
    }

    /// Whether the document passes: the expression evaluates to exactly `true`.
    pub fn matches(&self, doc: &Value) -> bool {
        matches!(self.expr.eval(doc), value::Val::Bool(true))
    }

    /// Whether this is the always-true condition (`*`, or a query without WHERE).
    pub fn is_everything(&self) -> bool {
        matches!(self.expr, Expr::Const(ast::Const::Bool(true)))
    }
}

/// A compiled SELECT statement.
#[derive(Debug, Clone)]
pub struct Query {
    collection: Collection,
    select: Select,
    condition: Condition,
    group_by: Vec<Path>,
    order_by: Vec<OrderKey>,
    top: Option<usize>,
}

/// What the SELECT list produces.
#[derive(Debug, Clone)]
enum Select {
    Star,
    Fields(Vec<Field>),
    Aggregate(Vec<Column>),
}

/// A projected property.
#[derive(Debug, Clone)]
struct Field {
    path: Path,
    alias: Option<Box<str>>,
}

/// One ORDER BY key.
#[derive(Debug, Clone)]
struct OrderKey {
    expr: Expr,
    descending: bool,
}

/// Parses and compiles a full SELECT statement.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    parser::query(text)
}

/// Parses and compiles a bare WHERE expression (a job's `queryCondition`, a configuration's
/// `targetCondition`); `*` alone matches every document and the empty text is an error.
pub fn parse_condition(text: &str) -> Result<Condition, QueryError> {
    parser::condition(text)
}

impl Query {
    /// The collection after FROM.
    pub fn collection(&self) -> Collection {
        self.collection
    }

    /// The WHERE condition; always true when there is none.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// The TOP count, if any.
    pub fn top(&self) -> Option<usize> {
        self.top
    }

    /// Whether the query aggregates (any aggregate function or GROUP BY).
    pub fn is_aggregate(&self) -> bool {
        matches!(self.select, Select::Aggregate(_))
    }

    /// Whether the query is `SELECT *`.
    pub fn is_select_star(&self) -> bool {
        matches!(self.select, Select::Star)
    }

    /// Whether there is an ORDER BY clause.
    pub fn has_order_by(&self) -> bool {
        !self.order_by.is_empty()
    }

    /// Whether the query selects properties (neither `*` nor an aggregate).
    pub fn is_projection(&self) -> bool {
        matches!(self.select, Select::Fields(_))
    }

    /// The output item for one matching document: `SELECT *` gives the document itself;
    /// projections give an object of the selected values keyed by alias or by the last path
    /// segment as the document spells it, leaving out undefined values. For an aggregate
    /// query, the row that aggregating this one document gives.
    pub fn project(&self, doc: &Value) -> Value {
        match &self.select {
            Select::Star => doc.clone(),
            Select::Fields(fields) => {
                let mut object = Map::new();
                for field in fields {
                    if let Some((key, value)) = field.path.resolve(doc) {
                        let name = field.alias.as_deref().unwrap_or(key);
                        object.insert(name.to_owned(), value.clone());
                    }
                }
                Value::Object(object)
            }
            Select::Aggregate(columns) => {
                aggregate::rows(columns, &self.group_by, std::iter::once(doc))
                    .pop()
                    .unwrap_or_else(|| Value::Object(Map::new()))
            }
        }
    }

    /// Compares two documents (or, for aggregate queries, two output rows) by ORDER BY;
    /// `Equal` when there is none. Undefined sorts first ascending.
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for key in &self.order_by {
            let ordering = key.expr.eval(a).sort_cmp(&key.expr.eval(b));
            let ordering = if key.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        Ordering::Equal
    }

    /// The aggregate rows over already-filtered documents: one per GROUP BY group (exactly
    /// one without GROUP BY), each with the aggregates and the selected group values, in
    /// group-key order, then sorted by ORDER BY and cut to TOP. Empty for a query that does
    /// not aggregate.
    pub fn aggregate<'a>(&self, docs: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
        let Select::Aggregate(columns) = &self.select else {
            return Vec::new();
        };
        let mut rows = aggregate::rows(columns, &self.group_by, docs.into_iter());
        if self.has_order_by() {
            rows.sort_by(|a, b| self.compare(a, b));
        }
        if let Some(top) = self.top {
            rows.truncate(top);
        }
        rows
    }

    /// Runs the whole query for callers that do not page: filter, order, TOP, then project
    /// (or aggregate).
    pub fn execute<'a>(&self, docs: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
        let matching = docs.into_iter().filter(|doc| self.condition.matches(doc));
        if self.is_aggregate() {
            return self.aggregate(matching);
        }
        let top = self.top.unwrap_or(usize::MAX);
        if !self.has_order_by() {
            return matching.take(top).map(|doc| self.project(doc)).collect();
        }
        let mut sorted: Vec<&Value> = matching.collect();
        sorted.sort_by(|a, b| self.compare(a, b));
        sorted
            .into_iter()
            .take(top)
            .map(|doc| self.project(doc))
            .collect()
    }
}
