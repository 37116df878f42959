//! Recursive-descent parser from tokens to a compiled `Query` or `Condition`.

use crate::aggregate::{AggregateFunc, Column};
use crate::ast::{Const, Expr, Func, InList, Path};
use crate::lexer::{Punct, Token, TokenKind, tokenize};
use crate::value::{ArithOp, CmpOp, Num};
use crate::{Collection, Condition, Field, MAX_QUERY_LENGTH, OrderKey, Query, QueryError, Select};

/// How deeply parentheses, unary operators, function calls and arrays may nest: keeps the
/// parser's recursion far from the stack limit.
const MAX_NESTING: usize = 64;
/// How deep a compiled expression tree may be: keeps evaluation's recursion bounded.
const MAX_DEPTH: usize = 128;

/// Words that cannot start a property path (they may still follow a `.`, as in `tags.group`).
const RESERVED: [&str; 15] = [
    "SELECT", "FROM", "WHERE", "GROUP", "ORDER", "BY", "AS", "AND", "OR", "NOT", "IN", "NIN",
    "TOP", "ASC", "DESC",
];

static END: Token = Token {
    kind: TokenKind::End,
    start: 0,
    end: 0,
};

/// Parses a full SELECT statement.
pub(crate) fn query(text: &str) -> Result<Query, QueryError> {
    Parser::new(text)?.query()
}

/// Parses a bare condition; `*` alone matches everything.
pub(crate) fn condition(text: &str) -> Result<Condition, QueryError> {
    let mut parser = Parser::new(text)?;
    if text.trim() == "*" {
        return Ok(Condition::everything());
    }
    parser.clause = "a condition";
    let expr = parser.expression()?;
    parser.expect_end("'AND', 'OR' or the end of the condition")?;
    Ok(Condition { expr })
}

/// A SELECT-list item before validation against GROUP BY.
struct Item {
    kind: ItemKind,
    alias: Option<Box<str>>,
    start: usize,
}

enum ItemKind {
    Path(Path),
    Aggregate(AggregateFunc, Option<Expr>),
}

struct Parser {
    chars: Vec<char>,
    tokens: Vec<Token>,
    index: usize,
    nesting: usize,
    /// Where expressions are being parsed, for "not allowed in ..." messages.
    clause: &'static str,
    /// `jobs` or `modules`: the `devices.<this>.` prefix that paths may carry.
    strip_prefix: Option<&'static str>,
}

impl Parser {
    fn new(text: &str) -> Result<Self, QueryError> {
        if text.chars().nth(MAX_QUERY_LENGTH).is_some() {
            return Err(QueryError::at(
                MAX_QUERY_LENGTH,
                format_args!("the query text exceeds the limit of {MAX_QUERY_LENGTH} characters"),
            ));
        }
        let chars: Vec<char> = text.chars().collect();
        let tokens = tokenize(&chars)?;
        let strip_prefix = match prescan_collection(&tokens) {
            Collection::Devices => None,
            Collection::DevicesModules => Some("modules"),
            Collection::DevicesJobs => Some("jobs"),
        };
        Ok(Parser {
            chars,
            tokens,
            index: 0,
            nesting: 0,
            clause: "WHERE",
            strip_prefix,
        })
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        self.tokens
            .get(self.index + ahead)
            .or_else(|| self.tokens.last())
            .unwrap_or(&END)
    }

    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    /// Moves past the current token (never past the end).
    fn bump(&mut self) {
        if !matches!(self.peek().kind, TokenKind::End) {
            self.index += 1;
        }
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        is_keyword(self.peek(), keyword)
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.at_keyword(keyword);
        if found {
            self.bump();
        }
        found
    }

    fn at_punct(&self, punct: Punct) -> bool {
        matches!(self.peek().kind, TokenKind::Punct(p) if p == punct)
    }

    fn eat_punct(&mut self, punct: Punct) -> bool {
        let found = self.at_punct(punct);
        if found {
            self.bump();
        }
        found
    }

    /// The token as written, quoted, for messages.
    fn describe(&self, token: &Token) -> String {
        const SHOWN: usize = 40;
        if matches!(token.kind, TokenKind::End) {
            return "end of query".to_owned();
        }
        let text: String = self
            .chars
            .get(token.start..token.end)
            .unwrap_or_default()
            .iter()
            .take(SHOWN)
            .collect();
        let ellipsis = if token.end - token.start > SHOWN {
            "..."
        } else {
            ""
        };
        format!("'{text}{ellipsis}'")
    }

    fn expected(&self, what: &str) -> QueryError {
        let token = self.peek();
        QueryError::at(
            token.start,
            format_args!("expected {what}, found {}", self.describe(token)),
        )
    }

    fn expect_punct(&mut self, punct: Punct, what: &str) -> Result<(), QueryError> {
        if self.eat_punct(punct) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), QueryError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{keyword}'")))
        }
    }

    fn expect_end(&self, what: &str) -> Result<(), QueryError> {
        if matches!(self.peek().kind, TokenKind::End) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(QueryError::at(
                self.peek().start,
                format_args!("expression nested too deeply (more than {MAX_NESTING} levels)"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    fn query(mut self) -> Result<Query, QueryError> {
        self.expect_keyword("SELECT")?;
        let top = if self.eat_keyword("TOP") {
            Some(self.top()?)
        } else {
            None
        };
        let select_start = self.peek().start;
        let items = if self.eat_punct(Punct::Star) {
            None
        } else {
            Some(self.items()?)
        };
        if !self.eat_keyword("FROM") {
            let what = if items.is_some() {
                "',' or 'FROM'"
            } else {
                "'FROM'"
            };
            return Err(self.expected(what));
        }
        let collection = self.collection()?;
        let mut next = "'WHERE', 'GROUP BY', 'ORDER BY' or end of query";
        let condition = if self.eat_keyword("WHERE") {
            self.clause = "WHERE";
            next = "an operator, 'GROUP BY', 'ORDER BY' or end of query";
            Condition {
                expr: self.expression()?,
            }
        } else {
            Condition::everything()
        };
        let group_start = self.peek().start;
        let group_by = if self.eat_keyword("GROUP") {
            self.expect_keyword("BY")?;
            next = "',', 'ORDER BY' or end of query";
            self.group_by()?
        } else {
            Vec::new()
        };
        let order_by = if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            next = "an operator, ',', 'ASC', 'DESC' or end of query";
            self.order_by()?
        } else {
            Vec::new()
        };
        self.expect_end(next)?;

        if collection == Collection::DevicesJobs && items.is_some() {
            return Err(QueryError::at(
                select_start,
                format_args!("devices.jobs queries support only SELECT *"),
            ));
        }
        let select = match items {
            None if !group_by.is_empty() => {
                return Err(QueryError::at(
                    group_start,
                    format_args!("GROUP BY cannot be used with SELECT *"),
                ));
            }
            None => Select::Star,
            Some(items) => select_list(items, &group_by)?,
        };
        Ok(Query {
            collection,
            select,
            condition,
            group_by,
            order_by,
            top,
        })
    }

    fn top(&mut self) -> Result<usize, QueryError> {
        let count = match self.peek().kind {
            TokenKind::Num(Num::Int(n)) => usize::try_from(n).ok(),
            _ => None,
        };
        let count = count.ok_or_else(|| self.expected("a non-negative integer after TOP"))?;
        self.bump();
        Ok(count)
    }

    fn items(&mut self) -> Result<Vec<Item>, QueryError> {
        let mut items = Vec::new();
        loop {
            items.push(self.item()?);
            if !self.eat_punct(Punct::Comma) {
                return Ok(items);
            }
        }
    }

    fn item(&mut self) -> Result<Item, QueryError> {
        let token = self.peek().clone();
        let kind = match &token.kind {
            TokenKind::Ident(name) if self.is_call() => {
                let Some(func) = AggregateFunc::by_name(name) else {
                    return Err(if Func::by_name(name).is_some() {
                        QueryError::at(
                            token.start,
                            format_args!(
                                "expected a property path or an aggregate function, found function '{name}'"
                            ),
                        )
                    } else {
                        unknown_function(&token, name)
                    });
                };
                self.bump();
                self.clause = "an aggregate argument";
                let mut arguments = self.arguments(&token, name, func.arity())?;
                ItemKind::Aggregate(func, arguments.pop())
            }
            _ if self.at_path_start() => ItemKind::Path(self.path()?),
            _ => return Err(self.expected("'*', a property path or an aggregate function")),
        };
        let alias = if self.eat_keyword("AS") {
            Some(self.alias()?)
        } else {
            None
        };
        Ok(Item {
            kind,
            alias,
            start: token.start,
        })
    }

    fn alias(&mut self) -> Result<Box<str>, QueryError> {
        let alias = match &self.peek().kind {
            TokenKind::Ident(name) if !is_reserved(name) => name.as_str().into(),
            TokenKind::Escaped(name) => name.as_str().into(),
            _ => return Err(self.expected("an alias after AS")),
        };
        self.bump();
        Ok(alias)
    }

    fn collection(&mut self) -> Result<Collection, QueryError> {
        let what = "'devices', 'devices.modules' or 'devices.jobs'";
        if !self.eat_keyword("devices") {
            return Err(self.expected(what));
        }
        if !self.eat_punct(Punct::Dot) {
            return Ok(Collection::Devices);
        }
        if self.eat_keyword("modules") {
            Ok(Collection::DevicesModules)
        } else if self.eat_keyword("jobs") {
            Ok(Collection::DevicesJobs)
        } else {
            Err(self.expected("'modules' or 'jobs' after 'devices.'"))
        }
    }

    fn group_by(&mut self) -> Result<Vec<Path>, QueryError> {
        let mut paths = Vec::new();
        loop {
            if !self.at_path_start() {
                return Err(self.expected("a property path"));
            }
            paths.push(self.path()?);
            if !self.eat_punct(Punct::Comma) {
                return Ok(paths);
            }
        }
    }

    fn order_by(&mut self) -> Result<Vec<OrderKey>, QueryError> {
        self.clause = "ORDER BY";
        let mut keys = Vec::new();
        loop {
            let expr = self.expression()?;
            let descending = if self.eat_keyword("DESC") {
                true
            } else {
                self.eat_keyword("ASC");
                false
            };
            keys.push(OrderKey { expr, descending });
            if !self.eat_punct(Punct::Comma) {
                return Ok(keys);
            }
        }
    }

    /// A whole expression, checked for depth.
    fn expression(&mut self) -> Result<Expr, QueryError> {
        let start = self.peek().start;
        let expr = self.or()?;
        if expr.depth() > MAX_DEPTH {
            return Err(QueryError::at(
                start,
                format_args!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(expr)
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let first = self.and()?;
        if !self.at_keyword("OR") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_keyword("OR") {
            items.push(self.and()?);
        }
        Ok(Expr::Or(items))
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let first = self.not()?;
        if !self.at_keyword("AND") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_keyword("AND") {
            items.push(self.not()?);
        }
        Ok(Expr::And(items))
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if !self.eat_keyword("NOT") {
            return self.comparison();
        }
        self.enter()?;
        let inner = self.not()?;
        self.leave();
        Ok(Expr::Not(Box::new(inner)))
    }

    fn comparison(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.additive()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Punct(Punct::Eq) => Some(CmpOp::Eq),
                TokenKind::Punct(Punct::Ne) => Some(CmpOp::Ne),
                TokenKind::Punct(Punct::Lt) => Some(CmpOp::Lt),
                TokenKind::Punct(Punct::Le) => Some(CmpOp::Le),
                TokenKind::Punct(Punct::Gt) => Some(CmpOp::Gt),
                TokenKind::Punct(Punct::Ge) => Some(CmpOp::Ge),
                _ => None,
            };
            if let Some(op) = op {
                self.bump();
                let right = self.additive()?;
                left = Expr::Compare(op, Box::new(left), Box::new(right));
                continue;
            }
            let negated = if self.eat_keyword("IN") {
                false
            } else if self.eat_keyword("NIN") {
                true
            } else if self.at_keyword("NOT") && is_keyword(self.peek_at(1), "IN") {
                self.bump();
                self.bump();
                true
            } else {
                return Ok(left);
            };
            if !self.at_punct(Punct::LBracket) {
                return Err(self.expected("an array constant such as ['a', 'b']"));
            }
            let list = InList::new(self.array()?);
            left = Expr::In {
                value: Box::new(left),
                list,
                negated,
            };
        }
    }

    fn additive(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Punct(Punct::Plus) => ArithOp::Add,
                TokenKind::Punct(Punct::Minus) => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.multiplicative()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Punct(Punct::Star) => ArithOp::Mul,
                TokenKind::Punct(Punct::Slash) => ArithOp::Div,
                TokenKind::Punct(Punct::Percent) => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if !self.eat_punct(Punct::Minus) {
            return self.primary();
        }
        self.enter()?;
        let inner = self.unary()?;
        self.leave();
        Ok(match inner {
            Expr::Const(Const::Num(n)) => Expr::Const(Const::Num(n.negate())),
            other => Expr::Neg(Box::new(other)),
        })
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let token = self.peek().clone();
        match &token.kind {
            TokenKind::Punct(Punct::LParen) => {
                self.bump();
                self.enter()?;
                let inner = self.or()?;
                self.expect_punct(Punct::RParen, "an operator or ')'")?;
                self.leave();
                Ok(inner)
            }
            TokenKind::Punct(Punct::LBracket) => Ok(Expr::Const(Const::Array(self.array()?))),
            TokenKind::Ident(name) if self.is_call() => self.call(&token, name),
            _ => {
                if let Some(constant) = self.scalar_constant() {
                    self.bump();
                    Ok(Expr::Const(constant))
                } else if self.at_path_start() {
                    Ok(Expr::Path(self.path()?))
                } else {
                    Err(self.expected("an expression"))
                }
            }
        }
    }

    /// Whether the current token is a name directly followed by `(`.
    fn is_call(&self) -> bool {
        matches!(&self.peek().kind, TokenKind::Ident(name) if !is_reserved(name))
            && matches!(self.peek_at(1).kind, TokenKind::Punct(Punct::LParen))
    }

    fn call(&mut self, token: &Token, name: &str) -> Result<Expr, QueryError> {
        if AggregateFunc::by_name(name).is_some() {
            return Err(QueryError::at(
                token.start,
                format_args!(
                    "aggregate function '{name}' is not allowed in {}; aggregates belong in the SELECT list",
                    self.clause
                ),
            ));
        }
        let func = Func::by_name(name).ok_or_else(|| unknown_function(token, name))?;
        self.bump();
        let arguments = self.arguments(token, name, func.arity())?;
        Ok(Expr::Call(func, arguments))
    }

    /// `( expr, ... )` after a function name, with the argument count checked.
    fn arguments(
        &mut self,
        name_token: &Token,
        name: &str,
        arity: usize,
    ) -> Result<Vec<Expr>, QueryError> {
        self.expect_punct(Punct::LParen, "'('")?;
        self.enter()?;
        let mut arguments = Vec::new();
        if !self.eat_punct(Punct::RParen) {
            loop {
                arguments.push(self.or()?);
                if self.eat_punct(Punct::RParen) {
                    break;
                }
                self.expect_punct(Punct::Comma, "an operator, ',' or ')'")?;
            }
        }
        self.leave();
        if arguments.len() != arity {
            let plural = if arity == 1 { "" } else { "s" };
            return Err(QueryError::at(
                name_token.start,
                format_args!(
                    "function '{name}' expects {arity} argument{plural}, found {}",
                    arguments.len()
                ),
            ));
        }
        Ok(arguments)
    }

    /// A string, number or keyword constant at the current token (not consumed).
    fn scalar_constant(&self) -> Option<Const> {
        match &self.peek().kind {
            TokenKind::Str(text) => Some(Const::Str(text.as_str().into())),
            TokenKind::Num(n) => Some(Const::Num(*n)),
            TokenKind::Ident(word) => keyword_constant(word),
            _ => None,
        }
    }

    /// `[ constant, ... ]`, the current token being `[`.
    fn array(&mut self) -> Result<Vec<Const>, QueryError> {
        self.expect_punct(Punct::LBracket, "'['")?;
        self.enter()?;
        let mut items = Vec::new();
        if !self.eat_punct(Punct::RBracket) {
            loop {
                items.push(self.constant()?);
                if self.eat_punct(Punct::RBracket) {
                    break;
                }
                self.expect_punct(Punct::Comma, "',' or ']'")?;
            }
        }
        self.leave();
        Ok(items)
    }

    fn constant(&mut self) -> Result<Const, QueryError> {
        if self.at_punct(Punct::LBracket) {
            return Ok(Const::Array(self.array()?));
        }
        let negative = self.at_punct(Punct::Minus);
        if negative {
            self.bump();
        }
        match self.scalar_constant() {
            Some(Const::Num(n)) => {
                self.bump();
                Ok(Const::Num(if negative { n.negate() } else { n }))
            }
            Some(constant) if !negative => {
                self.bump();
                Ok(constant)
            }
            _ if negative => Err(self.expected("a number after '-'")),
            _ => Err(self.expected("a constant (string, number, true, false, null or array)")),
        }
    }

    fn at_path_start(&self) -> bool {
        match &self.peek().kind {
            TokenKind::Ident(name) => !is_reserved(name),
            TokenKind::Escaped(_) => true,
            _ => false,
        }
    }

    /// A property path; the current token is its first name.
    fn path(&mut self) -> Result<Path, QueryError> {
        let mut segments = Vec::new();
        loop {
            let segment: Box<str> = match &self.peek().kind {
                TokenKind::Ident(name) | TokenKind::Escaped(name) => name.as_str().into(),
                _ => return Err(self.expected("a property name after '.'")),
            };
            self.bump();
            segments.push(segment);
            if !self.eat_punct(Punct::Dot) {
                break;
            }
        }
        if let Some(collection) = self.strip_prefix
            && segments.len() > 2
            && segments[0].eq_ignore_ascii_case("devices")
            && segments[1].eq_ignore_ascii_case(collection)
        {
            segments.drain(..2);
        }
        Ok(Path::new(segments))
    }
}

/// Validates a SELECT list against GROUP BY and names the output columns.
fn select_list(items: Vec<Item>, group_by: &[Path]) -> Result<Select, QueryError> {
    let mut names: Vec<(String, usize)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let name = match (&item.alias, &item.kind) {
            (Some(alias), _) => alias.to_string(),
            (None, ItemKind::Path(path)) => path.last_segment().to_owned(),
            (None, ItemKind::Aggregate(..)) => format!("${}", index + 1),
        };
        if names
            .iter()
            .any(|(seen, _)| seen.eq_ignore_ascii_case(&name))
        {
            return Err(QueryError::at(
                item.start,
                format_args!("the output name '{name}' is used more than once; add AS alias"),
            ));
        }
        names.push((name, item.start));
    }
    let aggregate = !group_by.is_empty()
        || items
            .iter()
            .any(|item| matches!(item.kind, ItemKind::Aggregate(..)));
    if !aggregate {
        let fields = items
            .into_iter()
            .filter_map(|item| match item.kind {
                ItemKind::Path(path) => Some(Field {
                    path,
                    alias: item.alias,
                }),
                ItemKind::Aggregate(..) => None,
            })
            .collect();
        return Ok(Select::Fields(fields));
    }
    let mut columns = Vec::with_capacity(items.len());
    for (item, (name, _)) in items.into_iter().zip(names) {
        columns.push(match item.kind {
            ItemKind::Aggregate(func, argument) => Column::Aggregate {
                name: name.into(),
                func,
                argument,
            },
            ItemKind::Path(path) => {
                let key = group_by
                    .iter()
                    .position(|grouped| grouped.same_as(&path))
                    .ok_or_else(|| {
                        QueryError::at(
                            item.start,
                            format_args!(
                                "'{name}' must appear in GROUP BY or be inside an aggregate function"
                            ),
                        )
                    })?;
                Column::GroupValue {
                    alias: item.alias,
                    key,
                }
            }
        });
    }
    Ok(Select::Aggregate(columns))
}

fn is_keyword(token: &Token, keyword: &str) -> bool {
    matches!(&token.kind, TokenKind::Ident(word) if word.eq_ignore_ascii_case(keyword))
}

fn is_reserved(word: &str) -> bool {
    RESERVED
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(word))
}

fn keyword_constant(word: &str) -> Option<Const> {
    [
        ("true", Const::Bool(true)),
        ("false", Const::Bool(false)),
        ("null", Const::Null),
        ("undefined", Const::Undefined),
    ]
    .into_iter()
    .find(|(keyword, _)| keyword.eq_ignore_ascii_case(word))
    .map(|(_, constant)| constant)
}

fn unknown_function(token: &Token, name: &str) -> QueryError {
    QueryError::at(token.start, format_args!("unknown function '{name}'"))
}

/// Finds the collection ahead of parsing, so paths in the SELECT list (which precedes FROM)
/// can drop their `devices.jobs.`/`devices.modules.` prefix too.
fn prescan_collection(tokens: &[Token]) -> Collection {
    let from = tokens.iter().enumerate().position(|(index, token)| {
        is_keyword(token, "FROM")
            && !(index > 0
                && matches!(
                    tokens.get(index - 1).map(|t| &t.kind),
                    Some(TokenKind::Punct(Punct::Dot))
                ))
    });
    let Some(from) = from else {
        return Collection::Devices;
    };
    match tokens.get(from + 1..from + 4) {
        Some([devices, dot, which])
            if is_keyword(devices, "devices")
                && matches!(dot.kind, TokenKind::Punct(Punct::Dot)) =>
        {
            if is_keyword(which, "jobs") {
                Collection::DevicesJobs
            } else if is_keyword(which, "modules") {
                Collection::DevicesModules
            } else {
                Collection::Devices
            }
        }
        _ => Collection::Devices,
    }
}
