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
//!
//! # Secondary indexes
//!
//! A caller that indexes documents by the scalar values at property paths ([`IndexKey`] of
//! the value [`value_at`] reads) can
//! narrow a condition to candidates with [`Condition::index_terms`] (then still run
//! [`Condition::matches`] on each), answer COUNT-only GROUP BY queries from per-value counts
//! ([`Query::counted_group_path`], [`Query::rows_from_group_counts`]), and leave `$metadata`
//! out of the documents it evaluates when [`Query::reads_metadata`] allows.

mod aggregate;
mod ast;
mod index;
mod lexer;
mod parser;
mod value;

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::aggregate::{AggregateFunc, Column};
use crate::ast::{Expr, Path};
pub use crate::index::{IndexKey, IndexNumber, IndexTerm, KeyRange};

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

    /// Necessary conditions for a match: for every document with `self.matches(doc)` and
    /// every term returned, `term.admits(doc)`: the value at `term.path` exists, has a key,
    /// and the key lies in `term.range`. At most one term per path, in order of first mention.
    ///
    /// Terms come from comparisons between a property path and an expression that reads no
    /// property (either way round), `IN` lists without `null`, `STARTSWITH(path, 'prefix')`
    /// and boolean paths; `AND` intersects them per path, `OR` keeps the paths every branch
    /// constrains with the union of their ranges (when that union excludes some type), and
    /// `NOT` is pushed down. Whatever promises nothing (`!=` on numbers and strings, `NIN`,
    /// comparisons between paths, arithmetic, other functions) adds no term. A condition that
    /// is found never to be true gives one term with an empty `OneOf` (none if it reads no
    /// path): no document matches.
    pub fn index_terms(&self) -> Vec<IndexTerm> {
        index::terms(&self.expr)
    }

    /// Whether the condition may read the value at `prefix` or anything inside or around it
    /// (`tags` for `tags.location.region`, `properties.desired` for `properties`). A document
    /// evaluated by this condition may leave out, or set to `null`, every member it does not
    /// read without changing the outcome.
    pub fn reads_under(&self, prefix: &[&str]) -> bool {
        self.expr.find_path(|path| path.overlaps(prefix)).is_some()
    }

    /// Whether a path the condition reads goes through a segment named `$metadata` (the first
    /// segment compared ignoring ASCII case, as paths resolve): if not, its result does not
    /// depend on metadata being in the documents.
    pub fn reads_metadata(&self) -> bool {
        self.expr.find_path(Path::names_metadata).is_some()
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

/// The value a query path with these segments reads in `doc`: objects are followed segment by
/// segment, and the first segment, when the document has no exact match, matches a member
/// ignoring ASCII case (`DeviceId` reads `deviceId`). For keeping indexes the way
/// [`IndexTerm::path`] and [`Query::counted_group_path`] are read.
pub fn value_at<'a>(doc: &'a Value, path: &[impl AsRef<str>]) -> Option<&'a Value> {
    ast::resolve(path, doc).map(|(_, value)| value)
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
        self.sorted_and_cut(aggregate::rows(columns, &self.group_by, docs.into_iter()))
    }

    /// Whether anything the query reads to filter, group, order or project goes through a
    /// `$metadata` segment, or projects or groups by a whole object that holds one in the REST
    /// twin shape (`properties`, `properties.desired`, `properties.reported`). `SELECT *` rows
    /// are not counted: the caller renders them whole anyway. If false, results do not depend
    /// on metadata being in the documents.
    pub fn reads_metadata(&self) -> bool {
        let selected = match &self.select {
            Select::Star => false,
            Select::Fields(fields) => fields.iter().any(|field| field.path.may_hold_metadata()),
            Select::Aggregate(columns) => columns.iter().any(|column| {
                matches!(column, Column::Aggregate { argument: Some(argument), .. }
                    if argument.find_path(Path::names_metadata).is_some())
            }),
        };
        selected
            || self.condition.reads_metadata()
            || self.group_by.iter().any(Path::may_hold_metadata)
            || self
                .order_by
                .iter()
                .any(|key| key.expr.find_path(Path::names_metadata).is_some())
    }

    /// The GROUP BY path of a query whose aggregates are all `COUNT()` and which groups by
    /// exactly one path (selected or not; WHERE, ORDER BY and TOP allowed), as the query
    /// writes it: such a query can be answered from per-value counts with
    /// [`Query::rows_from_group_counts`]. The first segment resolves ignoring ASCII case, as
    /// in [`IndexTerm::path`].
    ///
    /// `None` also when a one-segment group path is selected without an alias: `aggregate`
    /// names that column as the documents spell the member (`SELECT Status ... GROUP BY
    /// STATUS` over `status` gives `status`), which counts cannot tell. Later segments match
    /// exactly, so longer paths name their column as the query writes it.
    pub fn counted_group_path(&self) -> Option<Vec<String>> {
        self.counted_group().map(|(_, path)| path.to_strings())
    }

    /// The rows `aggregate` gives over documents (already filtered) whose values at the
    /// [`counted_group_path`](Query::counted_group_path) and multiplicities are `groups`:
    /// `None` stands for documents where the path is undefined, and every document counts,
    /// null, array and object values included. Groups are formed as GROUP BY forms them
    /// (`1` and `1.0` are one group, shown as the first spelling given a nonzero count);
    /// entries with a zero count stand for no document. Then ORDER BY and TOP apply as in
    /// `aggregate`. Empty when `counted_group_path` is `None`.
    pub fn rows_from_group_counts(
        &self,
        groups: impl IntoIterator<Item = (Option<Value>, u64)>,
    ) -> Vec<Value> {
        let Some((columns, path)) = self.counted_group() else {
            return Vec::new();
        };
        self.sorted_and_cut(aggregate::rows_from_counts(columns, path, groups))
    }

    /// Whether the query is only `COUNT()`s with no GROUP BY (`SELECT COUNT() AS n FROM devices
    /// WHERE ...`): its answer needs the number of matching documents, not the documents.
    pub fn is_total_count(&self) -> bool {
        let Select::Aggregate(columns) = &self.select else {
            return false;
        };
        self.group_by.is_empty()
            && columns.iter().all(|column| {
                matches!(column, Column::Aggregate { func, .. } if *func == AggregateFunc::Count)
            })
    }

    /// The rows `aggregate()` gives over `matching` documents for a query where
    /// [`Query::is_total_count`] holds (one row, as without GROUP BY there always is); empty
    /// for any other query.
    pub fn rows_from_total_count(&self, matching: u64) -> Vec<Value> {
        let Select::Aggregate(columns) = &self.select else {
            return Vec::new();
        };
        if !self.is_total_count() {
            return Vec::new();
        }
        let mut row = Map::new();
        for column in columns {
            if let Column::Aggregate { name, .. } = column {
                row.insert(name.to_string(), Value::from(matching));
            }
        }
        self.sorted_and_cut(vec![Value::Object(row)])
    }

    fn counted_group(&self) -> Option<(&[Column], &Path)> {
        let Select::Aggregate(columns) = &self.select else {
            return None;
        };
        let [path] = self.group_by.as_slice() else {
            return None;
        };
        let answerable = columns.iter().all(|column| match column {
            Column::Aggregate { func, .. } => *func == AggregateFunc::Count,
            Column::GroupValue { alias, .. } => alias.is_some() || path.segments().len() > 1,
        });
        answerable.then_some((columns.as_slice(), path))
    }

    /// Aggregate rows sorted by ORDER BY and cut to TOP.
    fn sorted_and_cut(&self, mut rows: Vec<Value>) -> Vec<Value> {
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
