//! Runtime values: borrowed views of JSON documents plus what functions compute, the
//! three-valued comparison rules and the total orders used for sorting and grouping.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

/// A number as the evaluator sees it: integers stay exact, everything else is a float.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

/// 2^63 as a float: the first float above every `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
/// Integers up to 2^53 are exact in a float; used when printing integral results.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

impl Num {
    pub(crate) fn from_json(number: &serde_json::Number) -> Self {
        match number.as_i64() {
            Some(int) => Num::Int(int),
            None => Num::Float(number.as_f64().unwrap_or(f64::NAN)),
        }
    }

    pub(crate) fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 is inherent to mixing with floats.
            #[allow(clippy::cast_precision_loss)]
            Num::Int(int) => int as f64,
            Num::Float(float) => float,
        }
    }

    /// Exact numeric order (1 = 1.0, 2^53 + 1 > 2^53 as a float); a total order, NaN last.
    pub(crate) fn total_cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).reverse(),
            (Num::Float(a), Num::Float(b)) => cmp_floats(a, b),
        }
    }

    /// The integer this number equals exactly, if any (`2.0` is 2, `-0.0` is 0).
    pub(crate) fn as_exact_int(self) -> Option<i64> {
        match self {
            Num::Int(int) => Some(int),
            Num::Float(float)
                if float.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&float) =>
            {
                // Integral and within the i64 range, so the cast is exact.
                #[allow(clippy::cast_possible_truncation)]
                Some(float as i64)
            }
            Num::Float(_) => None,
        }
    }

    /// The JSON form: integral results print as integers; non-finite numbers have none.
    pub(crate) fn to_json(self) -> Option<Value> {
        match self {
            Num::Int(int) => Some(Value::from(int)),
            Num::Float(float) if float.fract() == 0.0 && float.abs() <= MAX_EXACT_FLOAT_INT => {
                // Exact: the value is integral and within the float's exact-integer range.
                #[allow(clippy::cast_possible_truncation)]
                Some(Value::from(float as i64))
            }
            Num::Float(float) => serde_json::Number::from_f64(float).map(Value::Number),
        }
    }

    /// Applies an arithmetic operator; `None` (undefined) for division by zero or a
    /// non-finite result. Integer overflow continues in floating point.
    pub(crate) fn apply(op: ArithOp, a: Num, b: Num) -> Option<Num> {
        if let (Num::Int(x), Num::Int(y)) = (a, b) {
            let exact = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div if y == 0 => return None,
                ArithOp::Div => match (x.checked_rem(y), x.checked_div(y)) {
                    (Some(0), Some(quotient)) => Some(quotient),
                    _ => None,
                },
                ArithOp::Rem if y == 0 => return None,
                // Only i64::MIN % -1 overflows, and its true value is 0.
                ArithOp::Rem => Some(x.checked_rem(y).unwrap_or(0)),
            };
            if let Some(int) = exact {
                return Some(Num::Int(int));
            }
        }
        let (x, y) = (a.as_f64(), b.as_f64());
        let result = match op {
            ArithOp::Add => x + y,
            ArithOp::Sub => x - y,
            ArithOp::Mul => x * y,
            ArithOp::Div => x / y,
            ArithOp::Rem => x % y,
        };
        result.is_finite().then_some(Num::Float(result))
    }

    pub(crate) fn negate(self) -> Num {
        match self {
            Num::Int(int) => int
                .checked_neg()
                .map_or_else(|| Num::Float(-self.as_f64()), Num::Int),
            Num::Float(float) => Num::Float(-float),
        }
    }
}

fn cmp_floats(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // partial_cmp (not total_cmp) so that -0.0 = 0.0, consistent with integer 0.
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn cmp_int_float(int: i64, float: f64) -> Ordering {
    if float.is_nan() || float >= TWO_POW_63 {
        return Ordering::Less;
    }
    if float < -TWO_POW_63 {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    // `whole` is integral and within [-2^63, 2^63), so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i64;
    match int.cmp(&whole_int) {
        Ordering::Equal if float > whole => Ordering::Less,
        Ordering::Equal if float < whole => Ordering::Greater,
        other => other,
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub(crate) fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            CmpOp::Eq | CmpOp::Ne => self,
        }
    }

    /// The operator that holds exactly when this one does not (for comparable operands).
    pub(crate) fn negated(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Ne,
            CmpOp::Ne => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Ge,
            CmpOp::Le => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Le,
            CmpOp::Ge => CmpOp::Lt,
        }
    }

    pub(crate) fn holds(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering == Ordering::Equal,
            CmpOp::Ne => ordering != Ordering::Equal,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::Le => ordering != Ordering::Greater,
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::Ge => ordering != Ordering::Less,
        }
    }
}

/// A value during evaluation. Strings borrow from the document or the compiled query unless a
/// function produced them; arrays and objects are only ever inspected for type and length.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Array(usize),
    Object,
}

impl<'a> Val<'a> {
    pub(crate) fn from_json(value: &'a Value) -> Self {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(Num::from_json(n)),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(items) => Val::Array(items.len()),
            Value::Object(_) => Val::Object,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Val::Undefined => 0,
            Val::Null => 1,
            Val::Bool(_) => 2,
            Val::Num(_) => 3,
            Val::Str(_) => 4,
            Val::Array(_) => 5,
            Val::Object => 6,
        }
    }

    /// The sort order: undefined < null < booleans < numbers < strings < arrays < objects;
    /// within a type, natural order (strings by code point). A total preorder.
    pub(crate) fn sort_cmp(&self, other: &Val<'_>) -> Ordering {
        match (self, other) {
            (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
            (Val::Num(a), Val::Num(b)) => a.total_cmp(*b),
            (Val::Str(a), Val::Str(b)) => a.as_ref().cmp(b.as_ref()),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// The JSON form of a scalar; `None` for undefined, arrays and objects (which are never
    /// kept by value) and non-finite numbers.
    pub(crate) fn to_json(&self) -> Option<Value> {
        match self {
            Val::Null => Some(Value::Null),
            Val::Bool(b) => Some(Value::Bool(*b)),
            Val::Num(n) => n.to_json(),
            Val::Str(s) => Some(Value::String(s.as_ref().to_owned())),
            Val::Undefined | Val::Array(_) | Val::Object => None,
        }
    }
}

/// A comparison under the three-valued rules: undefined when either side is undefined, the
/// types differ, or either side is an array or object; `null = null` is true.
pub(crate) fn compare(op: CmpOp, left: &Val<'_>, right: &Val<'_>) -> Val<'static> {
    let ordering = match (left, right) {
        (Val::Null, Val::Null) => match op {
            CmpOp::Eq => return Val::Bool(true),
            CmpOp::Ne => return Val::Bool(false),
            _ => return Val::Undefined,
        },
        (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
        (Val::Num(a), Val::Num(b)) => a.total_cmp(*b),
        (Val::Str(a), Val::Str(b)) => a.as_ref().cmp(b.as_ref()),
        _ => return Val::Undefined,
    };
    Val::Bool(op.holds(ordering))
}

fn json_rank(value: Option<&Value>) -> u8 {
    match value {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Object(_)) => 6,
    }
}

/// A total order over whole JSON values (`None` = undefined, first), used for group keys.
/// Objects compare entry by entry in their stored order.
pub(crate) fn json_total_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            Num::from_json(x).total_cmp(Num::from_json(y))
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Array(x)), Some(Value::Array(y))) => x
            .iter()
            .zip(y)
            .map(|(p, q)| json_total_cmp(Some(p), Some(q)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Some(Value::Object(x)), Some(Value::Object(y))) => x
            .iter()
            .zip(y)
            .map(|((kp, vp), (kq, vq))| kp.cmp(kq).then_with(|| json_total_cmp(Some(vp), Some(vq))))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => json_rank(a).cmp(&json_rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_compare_exactly() {
        assert_eq!(Num::Int(1).total_cmp(Num::Float(1.0)), Ordering::Equal);
        assert_eq!(Num::Int(1).total_cmp(Num::Float(1.5)), Ordering::Less);
        assert_eq!(Num::Int(-1).total_cmp(Num::Float(-1.5)), Ordering::Greater);
        assert_eq!(
            Num::Int(9_007_199_254_740_993).total_cmp(Num::Float(9_007_199_254_740_992.0)),
            Ordering::Greater
        );
        assert_eq!(
            Num::Int(i64::MAX).total_cmp(Num::Float(TWO_POW_63)),
            Ordering::Less
        );
        assert_eq!(
            Num::Int(i64::MIN).total_cmp(Num::Float(-TWO_POW_63)),
            Ordering::Equal
        );
        assert_eq!(Num::Int(0).total_cmp(Num::Float(-0.0)), Ordering::Equal);
        assert_eq!(Num::Float(-0.0).total_cmp(Num::Float(0.0)), Ordering::Equal);
    }

    #[test]
    fn exact_integers_of_floats_stop_at_the_i64_range() {
        assert_eq!(Num::Float(2.0).as_exact_int(), Some(2));
        assert_eq!(Num::Float(-0.0).as_exact_int(), Some(0));
        assert_eq!(Num::Float(-TWO_POW_63).as_exact_int(), Some(i64::MIN));
        assert_eq!(Num::Float(TWO_POW_63).as_exact_int(), None);
        assert_eq!(Num::Float(2.5).as_exact_int(), None);
        assert_eq!(Num::Int(i64::MAX).as_exact_int(), Some(i64::MAX));
    }

    #[test]
    fn arithmetic_stays_exact_then_overflows_into_floats() {
        let add = |a, b| Num::apply(ArithOp::Add, a, b).and_then(Num::to_json);
        assert_eq!(add(Num::Int(2), Num::Int(3)), Some(Value::from(5)));
        assert_eq!(
            add(Num::Int(i64::MAX), Num::Int(1)),
            Some(Value::from(9_223_372_036_854_775_808.0))
        );
        assert!(Num::apply(ArithOp::Div, Num::Int(1), Num::Int(0)).is_none());
        assert!(Num::apply(ArithOp::Rem, Num::Float(1.0), Num::Float(0.0)).is_none());
        assert!(Num::apply(ArithOp::Mul, Num::Float(f64::MAX), Num::Float(2.0)).is_none());
        assert!(matches!(
            Num::apply(ArithOp::Rem, Num::Int(i64::MIN), Num::Int(-1)),
            Some(Num::Int(0))
        ));
        assert!(matches!(
            Num::apply(ArithOp::Div, Num::Int(7), Num::Int(2)),
            Some(Num::Float(f)) if f == 3.5
        ));
        assert!(matches!(Num::Int(i64::MIN).negate(), Num::Float(f) if f == TWO_POW_63));
    }

    #[test]
    fn json_order_is_by_type_then_value() {
        let values = [
            None,
            Some(Value::Null),
            Some(Value::Bool(false)),
            Some(Value::from(-3)),
            Some(Value::from(2.5)),
            Some(Value::from("a")),
            Some(serde_json::json!([1])),
            Some(serde_json::json!({"a": 1})),
        ];
        for pair in values.windows(2) {
            assert_eq!(
                json_total_cmp(pair[0].as_ref(), pair[1].as_ref()),
                Ordering::Less,
                "{pair:?}"
            );
        }
    }
}
