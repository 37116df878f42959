//! What secondary indexes need from a condition: the scalar keys an index orders values by, and
//! per-path key ranges that every matching document falls in, so that a caller can pick
//! candidates from its indexes and run [`Condition::matches`](crate::Condition::matches) on
//! those alone.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::mem::{Discriminant, discriminant};
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::ops::RangeBounds;

use serde_json::Value;

use crate::ast::{Expr, Func, InList, Path};
use crate::value::{CmpOp, Num, Val};

/// A number as an index orders it: exactly as the evaluator compares numbers, so `1` and `1.0`
/// are one key while `2^53 + 1` lies above the float `2^53`. It keeps the document's spelling,
/// so [`IndexKey::to_value`] gives the number back unchanged.
#[derive(Clone, Debug)]
pub struct IndexNumber(serde_json::Number);

impl IndexNumber {
    fn num(&self) -> Num {
        Num::from_json(&self.0)
    }

    /// `None` for a non-finite number, which no document holds.
    fn from_num(num: Num) -> Option<Self> {
        match num {
            Num::Int(int) => Some(IndexNumber(int.into())),
            Num::Float(float) => serde_json::Number::from_f64(float).map(IndexNumber),
        }
    }
}

impl Ord for IndexNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.num().total_cmp(other.num())
    }
}

impl PartialOrd for IndexNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for IndexNumber {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for IndexNumber {}

impl Hash for IndexNumber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal numbers hash alike whatever their spelling: integral ones hash as integers,
        // and no two distinct non-integral floats are equal.
        let num = self.num();
        match num.as_exact_int() {
            Some(int) => int.hash(state),
            None => num.as_f64().to_bits().hash(state),
        }
    }
}

/// A scalar value as an index orders it.
///
/// Two JSON scalars have equal keys exactly when `=` between them is true, which is also
/// exactly when GROUP BY puts them in one group. Keys of one variant are ordered as `<` orders
/// their values; the variants are ordered as ORDER BY orders the types (booleans, numbers,
/// strings). `null` has no key: `null = null` is true but `null < x` never is, and indexes
/// need not hold it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKey {
    /// `false` before `true`.
    Bool(bool),
    /// Exact numeric order; integers and floats mix.
    Number(IndexNumber),
    /// By Unicode code point, case-sensitive, as the evaluator compares strings.
    String(Box<str>),
}

impl IndexKey {
    /// The key of a JSON value; `None` for null, arrays and objects.
    pub fn of(value: &Value) -> Option<IndexKey> {
        match value {
            Value::Bool(b) => Some(IndexKey::Bool(*b)),
            Value::Number(number) => Some(IndexKey::Number(IndexNumber(number.clone()))),
            Value::String(text) => Some(IndexKey::String(text.as_str().into())),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// The JSON value this key was made from (numbers spelled as they were).
    pub fn to_value(&self) -> Value {
        match self {
            IndexKey::Bool(b) => Value::Bool(*b),
            IndexKey::Number(number) => Value::Number(number.0.clone()),
            IndexKey::String(text) => Value::String(text.to_string()),
        }
    }

    /// The key of a value the evaluator computed; `None` where `of` gives none, and for
    /// non-finite numbers.
    fn of_val(value: &Val<'_>) -> Option<IndexKey> {
        match value {
            Val::Bool(b) => Some(IndexKey::Bool(*b)),
            Val::Num(num) => IndexNumber::from_num(*num).map(IndexKey::Number),
            Val::Str(text) => Some(IndexKey::String(text.as_ref().into())),
            Val::Undefined | Val::Null | Val::Array(_) | Val::Object => None,
        }
    }
}

/// One requirement that every document matching a condition satisfies: the value at `path`
/// exists, is a scalar other than null, and its key lies in `range`.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexTerm {
    /// The property path as the query writes it (the `devices.modules.`/`devices.jobs.`
    /// prefix dropped). Like every query path, its first segment resolves ignoring ASCII case
    /// when the document has no exact match (`DeviceId` reads `deviceId`), the others exactly:
    /// see [`value_at`](crate::value_at).
    pub path: Vec<String>,
    /// The keys the value may have.
    pub range: KeyRange,
}

impl IndexTerm {
    /// Whether the document satisfies the term.
    pub fn admits(&self, doc: &Value) -> bool {
        crate::value_at(doc, &self.path)
            .and_then(IndexKey::of)
            .is_some_and(|key| self.range.contains(&key))
    }
}

/// The keys an [`IndexTerm`] allows.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyRange {
    /// The key equals one of these (from `=`, `IN`, boolean comparisons and `OR`s of them);
    /// sorted and without duplicates. Empty when no document can match.
    OneOf(Vec<IndexKey>),
    /// The key lies between the bounds (from `<`, `<=`, `>`, `>=`, `STARTSWITH` and their
    /// combinations). Both bounds, when present, have the same variant and the key must have
    /// it too: `Unbounded` reaches only to the end of that variant (`x < 5` admits no string).
    /// At least one bound is present, and the range is never inverted.
    Between {
        /// The lowest key allowed.
        lower: Bound<IndexKey>,
        /// The highest key allowed.
        upper: Bound<IndexKey>,
    },
}

impl KeyRange {
    /// Whether the key lies in the range.
    pub fn contains(&self, key: &IndexKey) -> bool {
        match self {
            KeyRange::OneOf(keys) => keys.contains(key),
            KeyRange::Between { lower, upper } => {
                self.variant()
                    .is_none_or(|variant| variant == discriminant(key))
                    && (lower.as_ref(), upper.as_ref()).contains(key)
            }
        }
    }

    /// For `Between`, the same keys as an interval of `IndexKey`'s total order, with a missing
    /// bound closed off at the edge of the variant: ready for `BTreeMap::range` over keys of
    /// every type (it does not panic on ranges `index_terms` returns). `None` for `OneOf`.
    pub fn as_interval(&self) -> Option<(Bound<IndexKey>, Bound<IndexKey>)> {
        let KeyRange::Between { lower, upper } = self else {
            return None;
        };
        let Some(edge) = bound_key(lower).or(bound_key(upper)) else {
            return Some((Unbounded, Unbounded));
        };
        // Booleans come first and strings last; "" is the least string, `true` the greatest
        // boolean, and numbers lie strictly between the two.
        let lower = match (lower, edge) {
            (Unbounded, IndexKey::Number(_)) => Excluded(IndexKey::Bool(true)),
            (Unbounded, IndexKey::String(_)) => Included(IndexKey::String("".into())),
            (bound, _) => bound.clone(),
        };
        let upper = match (upper, edge) {
            (Unbounded, IndexKey::Bool(_)) => Included(IndexKey::Bool(true)),
            (Unbounded, IndexKey::Number(_)) => Excluded(IndexKey::String("".into())),
            (bound, _) => bound.clone(),
        };
        Some((lower, upper))
    }

    /// `OneOf` in its normal form: sorted, without duplicates.
    fn one_of(mut keys: Vec<IndexKey>) -> KeyRange {
        keys.sort();
        keys.dedup();
        KeyRange::OneOf(keys)
    }

    /// `Between` in its normal form: an empty range becomes an empty `OneOf`, and a range of
    /// one key becomes that key.
    fn between(lower: Bound<IndexKey>, upper: Bound<IndexKey>) -> KeyRange {
        let range = KeyRange::Between { lower, upper };
        if let Some((Included(low) | Excluded(low), Included(high) | Excluded(high))) =
            range.as_interval()
        {
            match low.cmp(&high) {
                Ordering::Greater => return KeyRange::OneOf(Vec::new()),
                Ordering::Equal if range.contains(&low) => return KeyRange::OneOf(vec![low]),
                Ordering::Equal => return KeyRange::OneOf(Vec::new()),
                Ordering::Less => {}
            }
        }
        range
    }

    fn is_empty(&self) -> bool {
        matches!(self, KeyRange::OneOf(keys) if keys.is_empty())
    }

    /// The variant of a `Between`'s bounds.
    fn variant(&self) -> Option<Discriminant<IndexKey>> {
        match self {
            KeyRange::OneOf(_) => None,
            KeyRange::Between { lower, upper } => {
                bound_key(lower).or(bound_key(upper)).map(discriminant)
            }
        }
    }

    /// The keys in both ranges.
    fn intersection(&self, other: &KeyRange) -> KeyRange {
        match (self, other) {
            (KeyRange::OneOf(keys), range) | (range, KeyRange::OneOf(keys)) => KeyRange::OneOf(
                keys.iter()
                    .filter(|key| range.contains(key))
                    .cloned()
                    .collect(),
            ),
            (
                KeyRange::Between {
                    lower: lower_a,
                    upper: upper_a,
                },
                KeyRange::Between {
                    lower: lower_b,
                    upper: upper_b,
                },
            ) => {
                if self.variant() != other.variant() {
                    return KeyRange::OneOf(Vec::new());
                }
                let lower = if lower_cmp(lower_a, lower_b).is_ge() {
                    lower_a
                } else {
                    lower_b
                };
                let upper = if upper_cmp(upper_a, upper_b).is_le() {
                    upper_a
                } else {
                    upper_b
                };
                KeyRange::between(lower.clone(), upper.clone())
            }
        }
    }

    /// A range holding the keys of both; `None` when it would allow keys of every variant.
    fn union(&self, other: &KeyRange) -> Option<KeyRange> {
        match (self, other) {
            (KeyRange::OneOf(a), KeyRange::OneOf(b)) => {
                Some(KeyRange::one_of(a.iter().chain(b).cloned().collect()))
            }
            (KeyRange::OneOf(keys), range) | (range, KeyRange::OneOf(keys)) => {
                keys.iter().try_fold(range.clone(), |range, key| {
                    range.union(&KeyRange::Between {
                        lower: Included(key.clone()),
                        upper: Included(key.clone()),
                    })
                })
            }
            (
                KeyRange::Between {
                    lower: lower_a,
                    upper: upper_a,
                },
                KeyRange::Between {
                    lower: lower_b,
                    upper: upper_b,
                },
            ) => {
                if self.variant() != other.variant() {
                    return None;
                }
                let lower = if lower_cmp(lower_a, lower_b).is_le() {
                    lower_a
                } else {
                    lower_b
                };
                let upper = if upper_cmp(upper_a, upper_b).is_ge() {
                    upper_a
                } else {
                    upper_b
                };
                if matches!((lower, upper), (Unbounded, Unbounded)) {
                    return None;
                }
                Some(KeyRange::Between {
                    lower: lower.clone(),
                    upper: upper.clone(),
                })
            }
        }
    }
}

fn bound_key(bound: &Bound<IndexKey>) -> Option<&IndexKey> {
    match bound {
        Included(key) | Excluded(key) => Some(key),
        Unbounded => None,
    }
}

/// Orders lower bounds by how few keys they let through.
fn lower_cmp(a: &Bound<IndexKey>, b: &Bound<IndexKey>) -> Ordering {
    match (a, b) {
        (Unbounded, Unbounded) => Ordering::Equal,
        (Unbounded, _) => Ordering::Less,
        (_, Unbounded) => Ordering::Greater,
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => x
            .cmp(y)
            .then_with(|| matches!(a, Excluded(_)).cmp(&matches!(b, Excluded(_)))),
    }
}

/// Orders upper bounds by how many keys they let through.
fn upper_cmp(a: &Bound<IndexKey>, b: &Bound<IndexKey>) -> Ordering {
    match (a, b) {
        (Unbounded, Unbounded) => Ordering::Equal,
        (Unbounded, _) => Ordering::Greater,
        (_, Unbounded) => Ordering::Less,
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => x
            .cmp(y)
            .then_with(|| matches!(b, Excluded(_)).cmp(&matches!(a, Excluded(_)))),
    }
}

/// What an expression that reads no property is evaluated against.
static NO_DOCUMENT: Value = Value::Null;

/// What an expression's evaluating to a wanted boolean requires of the document.
enum Requirement {
    /// It never does.
    Never,
    /// It does only where every term holds; at most one term per path.
    Terms(Vec<IndexTerm>),
}

impl Requirement {
    fn nothing_known() -> Self {
        Requirement::Terms(Vec::new())
    }

    fn term(path: &Path, range: KeyRange) -> Self {
        if range.is_empty() {
            return Requirement::Never;
        }
        Requirement::Terms(vec![IndexTerm {
            path: path.to_strings(),
            range,
        }])
    }
}

/// See `Condition::index_terms`.
pub(crate) fn terms(expr: &Expr) -> Vec<IndexTerm> {
    match requirement(expr, true) {
        Requirement::Terms(terms) => terms,
        // No document matches, so every term holds for every match: an empty one says so.
        Requirement::Never => expr
            .find_path(|_| true)
            .map(|path| IndexTerm {
                path: path.to_strings(),
                range: KeyRange::OneOf(Vec::new()),
            })
            .into_iter()
            .collect(),
    }
}

/// What evaluating to exactly `wanted` requires, under the evaluator's three-valued rules.
fn requirement(expr: &Expr, wanted: bool) -> Requirement {
    if !expr.reads_document() {
        return match expr.eval(&NO_DOCUMENT) {
            Val::Bool(outcome) if outcome == wanted => Requirement::nothing_known(),
            _ => Requirement::Never,
        };
    }
    match expr {
        Expr::Path(path) => Requirement::term(path, KeyRange::OneOf(vec![IndexKey::Bool(wanted)])),
        Expr::Not(inner) => requirement(inner, !wanted),
        // AND is true when every item is and false when any is; OR the other way round.
        Expr::And(items) if wanted => all_of(items, wanted),
        Expr::Or(items) if !wanted => all_of(items, wanted),
        Expr::And(items) | Expr::Or(items) => any_of(items, wanted),
        Expr::Compare(op, left, right) => comparison(*op, left, right, wanted),
        // IN is true, and NIN false, exactly when the (defined) value is listed.
        Expr::In {
            value,
            list,
            negated,
        } if wanted != *negated => match &**value {
            Expr::Path(path) => listed(path, list),
            _ => Requirement::nothing_known(),
        },
        Expr::Call(Func::StartsWith, arguments) if wanted => prefixed(arguments),
        _ => Requirement::nothing_known(),
    }
}

/// Every item must evaluate to `wanted`: all their terms hold, ranges on one path intersect.
fn all_of(items: &[Expr], wanted: bool) -> Requirement {
    let mut terms: Vec<IndexTerm> = Vec::new();
    for item in items {
        let Requirement::Terms(found) = requirement(item, wanted) else {
            return Requirement::Never;
        };
        for term in found {
            match terms.iter_mut().find(|known| known.path == term.path) {
                Some(known) => {
                    known.range = known.range.intersection(&term.range);
                    if known.range.is_empty() {
                        return Requirement::Never;
                    }
                }
                None => terms.push(term),
            }
        }
    }
    Requirement::Terms(terms)
}

/// Some item must evaluate to `wanted`: only paths that every item able to do so constrains
/// are known, each to the union of its ranges.
fn any_of(items: &[Expr], wanted: bool) -> Requirement {
    let mut common: Option<Vec<IndexTerm>> = None;
    for item in items {
        let Requirement::Terms(found) = requirement(item, wanted) else {
            continue;
        };
        let merged: Vec<IndexTerm> = match common {
            None => found,
            Some(terms) => terms
                .into_iter()
                .filter_map(|term| {
                    let other = found.iter().find(|other| other.path == term.path)?;
                    let range = term.range.union(&other.range)?;
                    Some(IndexTerm {
                        path: term.path,
                        range,
                    })
                })
                .collect(),
        };
        if merged.is_empty() {
            return Requirement::nothing_known();
        }
        common = Some(merged);
    }
    common.map_or(Requirement::Never, Requirement::Terms)
}

/// A comparison between a property and an expression that reads no property, either way round.
fn comparison(op: CmpOp, left: &Expr, right: &Expr, wanted: bool) -> Requirement {
    let (path, constant, op) = match (left, right) {
        (Expr::Path(path), constant) if !constant.reads_document() => (path, constant, op),
        (constant, Expr::Path(path)) if !constant.reads_document() => {
            (path, constant, op.flipped())
        }
        _ => return Requirement::nothing_known(),
    };
    // Comparable operands give exactly one boolean, so `false` is the negated operator's `true`.
    // That holds for null too: `null = null` is only ever true and `null != null` false.
    let op = if wanted { op } else { op.negated() };
    let constant = constant.eval(&NO_DOCUMENT);
    match constant {
        // True only when the value is null, which has no key.
        Val::Null if op == CmpOp::Eq => Requirement::nothing_known(),
        Val::Bool(b) => {
            let keys = [false, true]
                .into_iter()
                .filter(|key| op.holds(key.cmp(&b)))
                .map(IndexKey::Bool)
                .collect();
            Requirement::term(path, KeyRange::OneOf(keys))
        }
        Val::Num(_) | Val::Str(_) => {
            let range = IndexKey::of_val(&constant).and_then(|key| ordered_range(op, key));
            range.map_or_else(Requirement::nothing_known, |range| {
                Requirement::term(path, range)
            })
        }
        // Comparisons with undefined, arrays and objects, and ordering ones with null, are
        // undefined.
        Val::Undefined | Val::Null | Val::Array(_) | Val::Object => Requirement::Never,
    }
}

/// The keys of the constant's type for which `value op key` holds; `None` for `!=`, which
/// allows all but one.
fn ordered_range(op: CmpOp, key: IndexKey) -> Option<KeyRange> {
    let (lower, upper) = match op {
        CmpOp::Eq => return Some(KeyRange::OneOf(vec![key])),
        CmpOp::Ne => return None,
        CmpOp::Lt => (Unbounded, Excluded(key)),
        CmpOp::Le => (Unbounded, Included(key)),
        CmpOp::Gt => (Excluded(key), Unbounded),
        CmpOp::Ge => (Included(key), Unbounded),
    };
    Some(KeyRange::between(lower, upper))
}

/// `path IN list`: the value is listed.
fn listed(path: &Path, list: &InList) -> Requirement {
    if list.null {
        // A listed null admits null values, which have no key.
        return Requirement::nothing_known();
    }
    let booleans = [false, true]
        .into_iter()
        .zip(list.booleans)
        .filter(|(_, listed)| *listed)
        .map(|(b, _)| IndexKey::Bool(b));
    let numbers = list
        .numbers
        .iter()
        .filter_map(|num| IndexNumber::from_num(*num).map(IndexKey::Number));
    let strings = list
        .strings
        .iter()
        .map(|text| IndexKey::String(text.clone()));
    let keys = booleans.chain(numbers).chain(strings).collect();
    Requirement::term(path, KeyRange::one_of(keys))
}

/// `STARTSWITH(path, prefix)`: the value is a string from the prefix up to the next string
/// that does not start with it.
fn prefixed(arguments: &[Expr]) -> Requirement {
    let [Expr::Path(path), prefix] = arguments else {
        return Requirement::nothing_known();
    };
    if prefix.reads_document() {
        return Requirement::nothing_known();
    }
    let Val::Str(prefix) = prefix.eval(&NO_DOCUMENT) else {
        // STARTSWITH with a prefix that is not a string is undefined.
        return Requirement::Never;
    };
    let upper = prefix_successor(&prefix).map_or(Unbounded, |next| {
        Excluded(IndexKey::String(next.into_boxed_str()))
    });
    Requirement::term(
        path,
        KeyRange::between(Included(IndexKey::String(prefix.as_ref().into())), upper),
    )
}

/// The least string above every string that starts with `prefix` (strings ordered by code
/// point); `None` when there is none, as for `""`.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut text = prefix.to_owned();
    while let Some(last) = text.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            text.push(next);
            return Some(text);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successors_skip_surrogates_and_carry_past_the_last_char() {
        assert_eq!(prefix_successor("ab"), Some("ac".to_owned()));
        assert_eq!(prefix_successor("a\u{D7FF}"), Some("a\u{E000}".to_owned()));
        assert_eq!(prefix_successor("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_successor(""), None);
    }
}
