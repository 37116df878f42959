//! Splits query text into tokens, each with its 0-based character span.

use crate::QueryError;
use crate::value::Num;

/// Punctuation and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Punct {
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What a token is.
#[derive(Debug, Clone)]
pub(crate) enum TokenKind {
    /// A bare word: keyword, function name, property name or alias.
    Ident(String),
    /// A `[[...]]` escaped property name (never a keyword).
    Escaped(String),
    Str(String),
    Num(Num),
    Punct(Punct),
    End,
}

/// A token and where it is: `start..end` in characters.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Tokenizes the whole text; the last token is always `End`.
pub(crate) fn tokenize(chars: &[char]) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { chars, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        while lexer.peek(0).is_some_and(char::is_whitespace) {
            lexer.pos += 1;
        }
        let start = lexer.pos;
        let Some(c) = lexer.peek(0) else {
            tokens.push(Token {
                kind: TokenKind::End,
                start,
                end: start,
            });
            return Ok(tokens);
        };
        let kind = if c == '[' && lexer.peek(1) == Some('[') {
            lexer.escaped_name()?
        } else if c == '\'' || c == '"' {
            lexer.string(c)?
        } else if c.is_ascii_digit() {
            lexer.number()?
        } else if is_name_start(c) {
            lexer.pos += 1;
            while lexer.peek(0).is_some_and(is_name_char) {
                lexer.pos += 1;
            }
            TokenKind::Ident(chars[start..lexer.pos].iter().collect())
        } else {
            TokenKind::Punct(lexer.punct(c)?)
        };
        tokens.push(Token {
            kind,
            start,
            end: lexer.pos,
        });
    }
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

struct Lexer<'t> {
    chars: &'t [char],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn punct(&mut self, c: char) -> Result<Punct, QueryError> {
        let next = self.peek(1);
        let (punct, width) = match (c, next) {
            ('!', Some('=')) => (Punct::Ne, 2),
            ('<', Some('>')) => (Punct::Ne, 2),
            ('<', Some('=')) => (Punct::Le, 2),
            ('>', Some('=')) => (Punct::Ge, 2),
            ('.', _) => (Punct::Dot, 1),
            (',', _) => (Punct::Comma, 1),
            ('(', _) => (Punct::LParen, 1),
            (')', _) => (Punct::RParen, 1),
            ('[', _) => (Punct::LBracket, 1),
            (']', _) => (Punct::RBracket, 1),
            ('*', _) => (Punct::Star, 1),
            ('+', _) => (Punct::Plus, 1),
            ('-', _) => (Punct::Minus, 1),
            ('/', _) => (Punct::Slash, 1),
            ('%', _) => (Punct::Percent, 1),
            ('=', _) => (Punct::Eq, 1),
            ('<', _) => (Punct::Lt, 1),
            ('>', _) => (Punct::Gt, 1),
            _ => {
                return Err(QueryError::at(
                    self.pos,
                    format_args!("unexpected character '{c}'"),
                ));
            }
        };
        self.pos += width;
        Ok(punct)
    }

    /// `[[name]]`: any characters up to the first `]]`.
    fn escaped_name(&mut self) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        self.pos += 2;
        let content_start = self.pos;
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(']'), Some(']')) => break,
                (Some(_), _) => self.pos += 1,
                (None, _) => {
                    return Err(QueryError::at(
                        start,
                        format_args!("unterminated escaped name: expected ']]'"),
                    ));
                }
            }
        }
        let name: String = self.chars[content_start..self.pos].iter().collect();
        self.pos += 2;
        if name.is_empty() {
            return Err(QueryError::at(
                start,
                format_args!("empty property name '[[]]'"),
            ));
        }
        Ok(TokenKind::Escaped(name))
    }

    fn string(&mut self, quote: char) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(QueryError::at(
                    start,
                    format_args!("unterminated string: expected a closing {quote}"),
                ));
            };
            self.pos += 1;
            if c == quote {
                return Ok(TokenKind::Str(text));
            }
            if c == '\\' {
                text.push(self.escape()?);
            } else {
                text.push(c);
            }
        }
    }

    /// The character of an escape sequence whose backslash was just consumed.
    fn escape(&mut self) -> Result<char, QueryError> {
        let backslash = self.pos - 1;
        let Some(c) = self.peek(0) else {
            return Err(QueryError::at(
                backslash,
                format_args!("unterminated escape sequence"),
            ));
        };
        self.pos += 1;
        Ok(match c {
            '\'' | '"' | '\\' | '/' => c,
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => return self.unicode_escape(backslash),
            _ => {
                return Err(QueryError::at(
                    backslash,
                    format_args!("invalid escape sequence '\\{c}'"),
                ));
            }
        })
    }

    /// `\uXXXX`, or a surrogate pair `\uD83D\uDE00`, after the `\u`.
    fn unicode_escape(&mut self, backslash: usize) -> Result<char, QueryError> {
        let invalid = || {
            QueryError::at(
                backslash,
                format_args!("invalid unicode escape: expected \\u and four hex digits"),
            )
        };
        let high = self.hex4().ok_or_else(invalid)?;
        if (0xD800..0xDC00).contains(&high) {
            if self.peek(0) != Some('\\') || self.peek(1) != Some('u') {
                return Err(invalid());
            }
            self.pos += 2;
            let low = self.hex4().ok_or_else(invalid)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(invalid());
            }
            let combined = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            return char::from_u32(combined).ok_or_else(invalid);
        }
        char::from_u32(high).ok_or_else(invalid)
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.peek(0)?.to_digit(16)?;
            value = value * 16 + digit;
            self.pos += 1;
        }
        Some(value)
    }

    fn number(&mut self) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        if self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X')) {
            self.pos += 2;
            let digits_start = self.pos;
            while self.peek(0).is_some_and(|c| c.is_ascii_hexdigit()) {
                self.pos += 1;
            }
            let digits: String = self.chars[digits_start..self.pos].iter().collect();
            let value = u64::from_str_radix(&digits, 16).map_err(|_| {
                QueryError::at(
                    start,
                    format_args!(
                        "invalid hexadecimal number: expected 1 to 16 hex digits after 0x"
                    ),
                )
            })?;
            return Ok(TokenKind::Num(match i64::try_from(value) {
                Ok(int) => Num::Int(int),
                // Above i64: kept as the nearest float, like any JSON integer that large.
                #[allow(clippy::cast_precision_loss)]
                Err(_) => Num::Float(value as f64),
            }));
        }
        let digit_at =
            |lexer: &Self, ahead: usize| lexer.peek(ahead).is_some_and(|c| c.is_ascii_digit());
        while digit_at(self, 0) {
            self.pos += 1;
        }
        let mut integral = true;
        if self.peek(0) == Some('.') && digit_at(self, 1) {
            integral = false;
            self.pos += 1;
            while digit_at(self, 0) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek(1), Some('+' | '-')));
            if digit_at(self, 1 + sign) {
                integral = false;
                self.pos += 1 + sign;
                while digit_at(self, 0) {
                    self.pos += 1;
                }
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if integral && let Ok(int) = text.parse::<i64>() {
            return Ok(TokenKind::Num(Num::Int(int)));
        }
        match text.parse::<f64>() {
            Ok(float) if float.is_finite() => Ok(TokenKind::Num(Num::Float(float))),
            _ => Err(QueryError::at(
                start,
                format_args!("number out of range '{text}'"),
            )),
        }
    }
}
