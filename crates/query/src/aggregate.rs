//! GROUP BY and the aggregate functions COUNT, SUM, AVG, MIN and MAX.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ast::{Expr, Path};
use crate::value::{ArithOp, Num, Val, json_total_cmp};

/// The aggregate functions, allowed only in the SELECT list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggregateFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggregateFunc {
    /// Looks an aggregate function up by name, ignoring case.
    pub(crate) fn by_name(name: &str) -> Option<Self> {
        const NAMES: [(&str, AggregateFunc); 5] = [
            ("COUNT", AggregateFunc::Count),
            ("SUM", AggregateFunc::Sum),
            ("AVG", AggregateFunc::Avg),
            ("MIN", AggregateFunc::Min),
            ("MAX", AggregateFunc::Max),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, func)| *func)
    }

    /// How many arguments the function takes.
    pub(crate) fn arity(self) -> usize {
        match self {
            AggregateFunc::Count => 0,
            _ => 1,
        }
    }
}

/// One output column of an aggregate query.
#[derive(Debug, Clone)]
pub(crate) enum Column {
    /// An aggregate function; `name` is its alias or `$n` (its 1-based position).
    Aggregate {
        name: Box<str>,
        func: AggregateFunc,
        argument: Option<Expr>,
    },
    /// The value of the GROUP BY path number `key`, named by alias or by its last segment.
    GroupValue { alias: Option<Box<str>>, key: usize },
}

/// A running aggregate.
enum Accumulator<'a> {
    Count(u64),
    /// `None` once the sum left the finite range.
    Sum(Option<Num>),
    Avg {
        total: f64,
        count: u64,
    },
    Min(Option<Val<'a>>),
    Max(Option<Val<'a>>),
}

impl<'a> Accumulator<'a> {
    fn new(func: AggregateFunc) -> Self {
        match func {
            AggregateFunc::Count => Accumulator::Count(0),
            AggregateFunc::Sum => Accumulator::Sum(Some(Num::Int(0))),
            AggregateFunc::Avg => Accumulator::Avg {
                total: 0.0,
                count: 0,
            },
            AggregateFunc::Min => Accumulator::Min(None),
            AggregateFunc::Max => Accumulator::Max(None),
        }
    }

    fn add(&mut self, value: Val<'a>) {
        match (self, value) {
            (Accumulator::Count(count), _) => *count += 1,
            (Accumulator::Sum(total), Val::Num(n)) => {
                *total = total.and_then(|sum| Num::apply(ArithOp::Add, sum, n));
            }
            (Accumulator::Avg { total, count }, Val::Num(n)) => {
                *total += n.as_f64();
                *count += 1;
            }
            (Accumulator::Min(best), value @ (Val::Num(_) | Val::Str(_))) => {
                keep_extreme(best, value, Ordering::Less);
            }
            (Accumulator::Max(best), value @ (Val::Num(_) | Val::Str(_))) => {
                keep_extreme(best, value, Ordering::Greater);
            }
            _ => {}
        }
    }

    fn result(&self) -> Option<Value> {
        match self {
            Accumulator::Count(count) => Some(Value::from(*count)),
            Accumulator::Sum(total) => total.and_then(Num::to_json),
            Accumulator::Avg { count: 0, .. } => None,
            Accumulator::Avg { total, count } => {
                // Counts stay far below 2^53, so the conversion is exact.
                #[allow(clippy::cast_precision_loss)]
                let mean = total / *count as f64;
                Num::Float(mean).to_json()
            }
            Accumulator::Min(best) | Accumulator::Max(best) => best.as_ref().and_then(Val::to_json),
        }
    }
}

/// Numbers order before strings, so MIN prefers numbers and MAX prefers strings.
fn keep_extreme<'a>(best: &mut Option<Val<'a>>, candidate: Val<'a>, wanted: Ordering) {
    let better = best
        .as_ref()
        .is_none_or(|current| candidate.sort_cmp(current) == wanted);
    if better {
        *best = Some(candidate);
    }
}

/// One part of a group key: a document's value at a GROUP BY path (`None` = undefined).
#[derive(Debug, Clone, Copy)]
struct KeyPart<'a>(Option<&'a Value>);

impl Ord for KeyPart<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        json_total_cmp(self.0, other.0)
    }
}

impl PartialOrd for KeyPart<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for KeyPart<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for KeyPart<'_> {}

struct Group<'a> {
    /// The first document of the group: where group values and their key spelling come from.
    representative: Option<&'a Value>,
    accumulators: Vec<Accumulator<'a>>,
}

/// Computes one row per group, in group-key order. Without GROUP BY there is exactly one row,
/// even over no documents (`COUNT()` is then 0).
pub(crate) fn rows<'d>(
    columns: &[Column],
    group_by: &[Path],
    docs: impl Iterator<Item = &'d Value>,
) -> Vec<Value> {
    let aggregates: Vec<(AggregateFunc, Option<&Expr>)> = columns
        .iter()
        .filter_map(|column| match column {
            Column::Aggregate { func, argument, .. } => Some((*func, argument.as_ref())),
            Column::GroupValue { .. } => None,
        })
        .collect();
    let new_group = |representative| Group {
        representative,
        accumulators: aggregates
            .iter()
            .map(|(func, _)| Accumulator::new(*func))
            .collect(),
    };
    let mut groups: BTreeMap<Vec<KeyPart<'_>>, Group<'_>> = BTreeMap::new();
    if group_by.is_empty() {
        groups.insert(Vec::new(), new_group(None));
    }
    let mut key = Vec::with_capacity(group_by.len());
    for doc in docs {
        key.clear();
        key.extend(
            group_by
                .iter()
                .map(|path| KeyPart(path.resolve(doc).map(|(_, value)| value))),
        );
        if !groups.contains_key(key.as_slice()) {
            groups.insert(key.clone(), new_group(Some(doc)));
        }
        let Some(group) = groups.get_mut(key.as_slice()) else {
            continue;
        };
        for (accumulator, (_, argument)) in group.accumulators.iter_mut().zip(&aggregates) {
            let value = argument.map_or(Val::Undefined, |expr| expr.eval(doc));
            accumulator.add(value);
        }
    }
    groups
        .into_values()
        .map(|group| row(columns, group_by, &group))
        .collect()
}

/// The rows `rows` computes for one GROUP BY path and COUNT() aggregates only, from each group
/// value's number of documents, for columns named as the query writes them (see
/// `Query::counted_group_path`). Values in one group merge; the first with a nonzero count
/// stands for the group, as the first document does in `rows`.
pub(crate) fn rows_from_counts(
    columns: &[Column],
    group_path: &Path,
    counts: impl IntoIterator<Item = (Option<Value>, u64)>,
) -> Vec<Value> {
    let mut counts: Vec<(Option<Value>, u64)> =
        counts.into_iter().filter(|(_, count)| *count > 0).collect();
    // Stable, so each group's first value stays first.
    counts.sort_by(|(a, _), (b, _)| json_total_cmp(a.as_ref(), b.as_ref()));
    let mut groups: Vec<(Option<Value>, u64)> = Vec::with_capacity(counts.len());
    for (value, count) in counts {
        match groups.last_mut() {
            Some((first, total)) if json_total_cmp(first.as_ref(), value.as_ref()).is_eq() => {
                *total = total.saturating_add(count);
            }
            _ => groups.push((value, count)),
        }
    }
    groups
        .into_iter()
        .map(|(value, count)| {
            let mut row = Map::new();
            for column in columns {
                match column {
                    Column::Aggregate { name, .. } => {
                        row.insert(name.to_string(), Value::from(count));
                    }
                    Column::GroupValue { alias, .. } => {
                        if let Some(value) = &value {
                            let name = alias.as_deref().unwrap_or(group_path.last_segment());
                            row.insert(name.to_owned(), value.clone());
                        }
                    }
                }
            }
            Value::Object(row)
        })
        .collect()
}

fn row(columns: &[Column], group_by: &[Path], group: &Group<'_>) -> Value {
    let mut row = Map::new();
    let mut accumulators = group.accumulators.iter();
    for column in columns {
        match column {
            Column::Aggregate { name, .. } => {
                if let Some(value) = accumulators.next().and_then(Accumulator::result) {
                    row.insert(name.to_string(), value);
                }
            }
            Column::GroupValue { alias, key } => {
                let resolved = group
                    .representative
                    .zip(group_by.get(*key))
                    .and_then(|(doc, path)| path.resolve(doc));
                if let Some((written, value)) = resolved {
                    let name = alias.as_deref().unwrap_or(written);
                    row.insert(name.to_owned(), value.clone());
                }
            }
        }
    }
    Value::Object(row)
}
