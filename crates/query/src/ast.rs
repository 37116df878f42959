//! The compiled form of an expression, and its evaluation over one document.
//!
//! Paths are pre-split, constants pre-lowered (an `IN` list is sorted for binary search), so
//! evaluating a comparison of a path against a constant borrows everything and allocates nothing.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::value::{ArithOp, CmpOp, Num, Val, compare};

/// A property path such as `properties.reported.$metadata`, split into its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    segments: Box<[Box<str>]>,
}

impl Path {
    /// Builds a path from at least one segment.
    pub(crate) fn new(segments: Vec<Box<str>>) -> Self {
        Path {
            segments: segments.into_boxed_slice(),
        }
    }

    /// The segments as written in the query.
    pub(crate) fn segments(&self) -> &[Box<str>] {
        &self.segments
    }

    /// The last segment as written in the query.
    pub(crate) fn last_segment(&self) -> &str {
        self.segments.last().map_or("", |segment| segment)
    }

    /// The same path: the first segment matches ignoring ASCII case (system names such as
    /// `deviceId` resolve case-insensitively), the rest exactly.
    pub(crate) fn same_as(&self, other: &Path) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(other.segments.iter())
                .enumerate()
                .all(|(index, (a, b))| {
                    if index == 0 {
                        a.eq_ignore_ascii_case(b)
                    } else {
                        a == b
                    }
                })
    }

    /// Whether the value this path reads can hold, or lie inside, the value at `prefix` (spelled
    /// as the document spells it): the shorter of the two is a prefix of the other, segments
    /// compared the way `resolve` compares them.
    pub(crate) fn overlaps(&self, prefix: &[&str]) -> bool {
        self.segments
            .iter()
            .zip(prefix)
            .enumerate()
            .all(|(index, (segment, wanted))| {
                if index == 0 {
                    segment.eq_ignore_ascii_case(wanted)
                } else {
                    **segment == **wanted
                }
            })
    }

    /// The segments as owned strings.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.segments
            .iter()
            .map(|segment| segment.to_string())
            .collect()
    }

    /// Whether a segment is `$metadata`, compared the way `resolve` compares it.
    pub(crate) fn names_metadata(&self) -> bool {
        self.segments.iter().enumerate().any(|(index, segment)| {
            if index == 0 {
                segment.eq_ignore_ascii_case(METADATA)
            } else {
                **segment == *METADATA
            }
        })
    }

    /// Whether the whole value at this path may hold `$metadata`: the path names it, or is
    /// `properties`, `properties.desired` or `properties.reported`, the objects that hold it in
    /// the REST twin shape.
    pub(crate) fn may_hold_metadata(&self) -> bool {
        let holder = match &*self.segments {
            [properties] => properties.eq_ignore_ascii_case("properties"),
            [properties, section] => {
                properties.eq_ignore_ascii_case("properties")
                    && matches!(&**section, "desired" | "reported")
            }
            _ => false,
        };
        holder || self.names_metadata()
    }

    /// Finds the value at this path, with the key under which the document stores the last
    /// segment. The first segment falls back to an ASCII-case-insensitive match.
    pub(crate) fn resolve<'a>(&self, doc: &'a Value) -> Option<(&'a str, &'a Value)> {
        resolve(&self.segments, doc)
    }
}

/// The segment under which twins keep property metadata.
const METADATA: &str = "$metadata";

/// `Path::resolve` over any spelling of the segments.
pub(crate) fn resolve<'a>(
    segments: &[impl AsRef<str>],
    doc: &'a Value,
) -> Option<(&'a str, &'a Value)> {
    let (first, rest) = segments.split_first()?;
    let first = first.as_ref();
    let object = doc.as_object()?;
    let (mut key, mut value) = match lookup(object, first) {
        Some(found) => found,
        None => object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(first))?,
    };
    for segment in rest {
        (key, value) = lookup(value.as_object()?, segment.as_ref())?;
    }
    Some((key.as_str(), value))
}

/// Objects at most this large are searched by scanning, which beats hashing the key.
const SCAN_LIMIT: usize = 12;

fn lookup<'a>(object: &'a Map<String, Value>, key: &str) -> Option<(&'a String, &'a Value)> {
    if object.len() <= SCAN_LIMIT {
        object
            .iter()
            .find(|(candidate, _)| candidate.as_str() == key)
    } else {
        object.get_key_value(key)
    }
}

/// A constant written in the query.
#[derive(Debug, Clone)]
pub(crate) enum Const {
    Undefined,
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
    Array(Vec<Const>),
}

impl Const {
    fn to_val(&self) -> Val<'_> {
        match self {
            Const::Undefined => Val::Undefined,
            Const::Null => Val::Null,
            Const::Bool(b) => Val::Bool(*b),
            Const::Num(n) => Val::Num(*n),
            Const::Str(s) => Val::Str(Cow::Borrowed(s)),
            Const::Array(items) => Val::Array(items.len()),
        }
    }
}

/// The right side of `IN`/`NIN`, lowered for lookups: strings sorted for binary search.
/// Elements that equal nothing (arrays, undefined) are dropped.
#[derive(Debug, Clone)]
pub(crate) struct InList {
    pub(crate) strings: Box<[Box<str>]>,
    pub(crate) numbers: Box<[Num]>,
    /// Whether `false` and `true` (in that order) are listed.
    pub(crate) booleans: [bool; 2],
    pub(crate) null: bool,
}

impl InList {
    pub(crate) fn new(items: Vec<Const>) -> Self {
        let mut strings = Vec::new();
        let mut numbers = Vec::new();
        let mut booleans = [false; 2];
        let mut null = false;
        for item in items {
            match item {
                Const::Str(s) => strings.push(s),
                Const::Num(n) => numbers.push(n),
                Const::Bool(b) => booleans[usize::from(b)] = true,
                Const::Null => null = true,
                Const::Undefined | Const::Array(_) => {}
            }
        }
        strings.sort_unstable();
        strings.dedup();
        InList {
            strings: strings.into_boxed_slice(),
            numbers: numbers.into_boxed_slice(),
            booleans,
            null,
        }
    }

    fn contains(&self, value: &Val<'_>) -> bool {
        match value {
            Val::Str(s) => self
                .strings
                .binary_search_by(|item| item.as_ref().cmp(s.as_ref()))
                .is_ok(),
            Val::Num(n) => self.numbers.iter().any(|item| item.total_cmp(*n).is_eq()),
            Val::Bool(b) => self.booleans[usize::from(*b)],
            Val::Null => self.null,
            Val::Undefined | Val::Array(_) | Val::Object => false,
        }
    }
}

/// Scalar functions (aggregates live in the SELECT list only, see `AggregateFunc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    IsDefined,
    IsNull,
    IsBool,
    IsNumber,
    IsString,
    IsObject,
    IsArray,
    IsPrimitive,
    StartsWith,
    EndsWith,
    Contains,
    Lower,
    Upper,
    Length,
}

impl Func {
    /// Looks a scalar function up by name, ignoring case.
    pub(crate) fn by_name(name: &str) -> Option<Func> {
        const NAMES: [(&str, Func); 16] = [
            ("IS_DEFINED", Func::IsDefined),
            ("IS_NULL", Func::IsNull),
            ("IS_BOOL", Func::IsBool),
            ("IS_NUMBER", Func::IsNumber),
            ("IS_STRING", Func::IsString),
            ("IS_OBJECT", Func::IsObject),
            ("IS_ARRAY", Func::IsArray),
            ("IS_PRIMITIVE", Func::IsPrimitive),
            ("STARTSWITH", Func::StartsWith),
            ("STARTS_WITH", Func::StartsWith),
            ("ENDSWITH", Func::EndsWith),
            ("ENDS_WITH", Func::EndsWith),
            ("CONTAINS", Func::Contains),
            ("LOWER", Func::Lower),
            ("UPPER", Func::Upper),
            ("LENGTH", Func::Length),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, func)| *func)
    }

    /// How many arguments the function takes.
    pub(crate) fn arity(self) -> usize {
        match self {
            Func::StartsWith | Func::EndsWith | Func::Contains => 2,
            _ => 1,
        }
    }

    fn call<'a>(self, args: &'a [Expr], doc: &'a Value) -> Val<'a> {
        let arg = |index: usize| args.get(index).map_or(Val::Undefined, |e| e.eval(doc));
        let first = arg(0);
        match self {
            Func::IsDefined => Val::Bool(!matches!(first, Val::Undefined)),
            Func::IsNull => Val::Bool(matches!(first, Val::Null)),
            Func::IsBool => Val::Bool(matches!(first, Val::Bool(_))),
            Func::IsNumber => Val::Bool(matches!(first, Val::Num(_))),
            Func::IsString => Val::Bool(matches!(first, Val::Str(_))),
            Func::IsObject => Val::Bool(matches!(first, Val::Object)),
            Func::IsArray => Val::Bool(matches!(first, Val::Array(_))),
            Func::IsPrimitive => Val::Bool(matches!(
                first,
                Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_)
            )),
            Func::StartsWith | Func::EndsWith | Func::Contains => match (first, arg(1)) {
                (Val::Str(text), Val::Str(part)) => Val::Bool(match self {
                    Func::StartsWith => text.starts_with(part.as_ref()),
                    Func::EndsWith => text.ends_with(part.as_ref()),
                    _ => text.contains(part.as_ref()),
                }),
                _ => Val::Undefined,
            },
            Func::Lower => match first {
                Val::Str(text) => Val::Str(Cow::Owned(text.to_lowercase())),
                _ => Val::Undefined,
            },
            Func::Upper => match first {
                Val::Str(text) => Val::Str(Cow::Owned(text.to_uppercase())),
                _ => Val::Undefined,
            },
            Func::Length => {
                let length = match first {
                    Val::Str(text) => text.chars().count(),
                    Val::Array(length) => length,
                    _ => return Val::Undefined,
                };
                i64::try_from(length).map_or(Val::Undefined, |n| Val::Num(Num::Int(n)))
            }
        }
    }
}

/// A compiled expression. `AND`/`OR` chains are flattened so long generated conditions
/// (`a = 1 OR a = 2 OR ...`) do not nest deeply.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Const(Const),
    Path(Path),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    In {
        value: Box<Expr>,
        list: InList,
        negated: bool,
    },
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// The constant `true`: what `*` and a missing WHERE compile to.
    pub(crate) const TRUE: Expr = Expr::Const(Const::Bool(true));

    /// Evaluates the expression over one document under the three-valued rules.
    pub(crate) fn eval<'a>(&'a self, doc: &'a Value) -> Val<'a> {
        match self {
            Expr::Const(constant) => constant.to_val(),
            Expr::Path(path) => path
                .resolve(doc)
                .map_or(Val::Undefined, |(_, value)| Val::from_json(value)),
            Expr::Not(inner) => match inner.eval(doc) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Undefined,
            },
            Expr::And(items) => Self::connective(items, doc, false),
            Expr::Or(items) => Self::connective(items, doc, true),
            Expr::Compare(op, left, right) => compare(*op, &left.eval(doc), &right.eval(doc)),
            Expr::In {
                value,
                list,
                negated,
            } => match value.eval(doc) {
                Val::Undefined => Val::Undefined,
                value => Val::Bool(list.contains(&value) != *negated),
            },
            Expr::Arith(op, left, right) => match (left.eval(doc), right.eval(doc)) {
                (Val::Num(a), Val::Num(b)) => {
                    Num::apply(*op, a, b).map_or(Val::Undefined, Val::Num)
                }
                _ => Val::Undefined,
            },
            Expr::Neg(inner) => match inner.eval(doc) {
                Val::Num(n) => Val::Num(n.negate()),
                _ => Val::Undefined,
            },
            Expr::Call(func, args) => func.call(args, doc),
        }
    }

    /// AND (`decisive` = false) or OR (`decisive` = true): the decisive boolean wins over
    /// undefined; otherwise the result is the other boolean only if every operand is one.
    fn connective<'a>(items: &'a [Expr], doc: &'a Value, decisive: bool) -> Val<'a> {
        let mut all_boolean = true;
        for item in items {
            match item.eval(doc) {
                Val::Bool(b) if b == decisive => return Val::Bool(decisive),
                Val::Bool(_) => {}
                _ => all_boolean = false,
            }
        }
        if all_boolean {
            Val::Bool(!decisive)
        } else {
            Val::Undefined
        }
    }

    /// The direct subexpressions, in the order they are written.
    fn children(&self) -> impl DoubleEndedIterator<Item = &Expr> {
        let (items, pair): (&[Expr], [Option<&Expr>; 2]) = match self {
            Expr::Const(_) | Expr::Path(_) => (&[], [None, None]),
            Expr::Not(inner) | Expr::Neg(inner) | Expr::In { value: inner, .. } => {
                (&[], [Some(&**inner), None])
            }
            Expr::And(items) | Expr::Or(items) | Expr::Call(_, items) => (items, [None, None]),
            Expr::Compare(_, left, right) | Expr::Arith(_, left, right) => {
                (&[], [Some(&**left), Some(&**right)])
            }
        };
        items.iter().chain(pair.into_iter().flatten())
    }

    /// The depth of the expression tree, computed without recursion (the tree may be deep
    /// when this is asked: that is what the parser checks).
    pub(crate) fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 1_usize)];
        while let Some((expr, depth)) = pending.pop() {
            deepest = deepest.max(depth);
            pending.extend(expr.children().map(|child| (child, depth + 1)));
        }
        deepest
    }

    /// The first property path, as written, that the expression reads and that satisfies
    /// `wanted`.
    pub(crate) fn find_path(&self, mut wanted: impl FnMut(&Path) -> bool) -> Option<&Path> {
        let mut pending = vec![self];
        while let Some(expr) = pending.pop() {
            match expr {
                Expr::Path(path) if wanted(path) => return Some(path),
                _ => pending.extend(expr.children().rev()),
            }
        }
        None
    }

    /// Whether the value depends on the document at all.
    pub(crate) fn reads_document(&self) -> bool {
        self.find_path(|_| true).is_some()
    }
}
