//! A parser for the Python-literal lists that the D3/BIGRec CSV format stores in its list columns
//! (`['a', "b's"]`, `[1, 2]`, `[5.0, 4.0]`): what `ast.literal_eval` accepts for flat lists of strings
//! and numbers, with Python's string escapes.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    Str(String),
    Int(i64),
    Float(f64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyListError {
    /// Byte offset in the input where parsing failed.
    pub at: usize,
    pub msg: String,
}

impl fmt::Display for PyListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.msg, self.at)
    }
}

impl std::error::Error for PyListError {}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PyListError> {
        Err(PyListError {
            at: self.i,
            msg: msg.into(),
        })
    }

    fn skip_ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn list(&mut self) -> Result<Vec<PyValue>, PyListError> {
        self.skip_ws();
        if self.peek() != Some(b'[') {
            return self.err("expected '['");
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return self.err("unterminated list"),
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => {}
            }
            out.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                None => return self.err("unterminated list"),
                Some(c) => return self.err(format!("expected ',' or ']', found {:?}", c as char)),
            }
        }
        self.skip_ws();
        if self.i != self.b.len() {
            return self.err("trailing characters after the list");
        }
        Ok(out)
    }

    fn value(&mut self) -> Result<PyValue, PyListError> {
        match self.peek() {
            Some(b'\'') | Some(b'"') => self.string().map(PyValue::Str),
            Some(b'u') | Some(b'U')
                if matches!(self.b.get(self.i + 1), Some(b'\'') | Some(b'"')) =>
            {
                self.i += 1;
                self.string().map(PyValue::Str)
            }
            Some(c) if c == b'-' || c == b'+' || c == b'.' || c.is_ascii_digit() => self.number(),
            Some(c) => self.err(format!("unexpected {:?}", c as char)),
            None => self.err("unexpected end of input"),
        }
    }

    fn number(&mut self) -> Result<PyValue, PyListError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'_') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text: String = self.s[start..self.i]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        if let Ok(v) = text.parse::<i64>() {
            return Ok(PyValue::Int(v));
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(PyValue::Float(v)),
            _ => {
                self.i = start;
                self.err(format!("not a number: {text:?}"))
            }
        }
    }

    fn hex(&mut self, n: usize) -> Result<char, PyListError> {
        let Some(digits) = self.s.get(self.i..self.i + n) else {
            return self.err("truncated escape");
        };
        let Ok(v) = u32::from_str_radix(digits, 16) else {
            return self.err(format!("bad hex escape {digits:?}"));
        };
        let Some(c) = char::from_u32(v) else {
            return self.err(format!("escape \\{digits} is not a character"));
        };
        self.i += n;
        Ok(c)
    }

    fn string(&mut self) -> Result<String, PyListError> {
        let quote = self.b[self.i];
        if self.b.get(self.i + 1) == Some(&quote) && self.b.get(self.i + 2) == Some(&quote) {
            return self.err("triple-quoted strings are not supported");
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.s[self.i..].chars().next() else {
                return self.err("unterminated string");
            };
            self.i += c.len_utf8();
            if c as u32 == quote as u32 {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.s[self.i..].chars().next() else {
                return self.err("unterminated escape");
            };
            self.i += e.len_utf8();
            match e {
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '\n' => {}
                'x' => out.push(self.hex(2)?),
                'u' => out.push(self.hex(4)?),
                'U' => out.push(self.hex(8)?),
                '0'..='7' => {
                    let mut v = e as u32 - '0' as u32;
                    for _ in 0..2 {
                        match self.peek() {
                            Some(d @ b'0'..=b'7') => {
                                v = v * 8 + (d - b'0') as u32;
                                self.i += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(char::from_u32(v).expect("octal escape below 512"));
                }
                // Python keeps unknown escapes as written.
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }
}

/// Parses a flat Python list literal of strings and numbers.
pub fn parse_list(s: &str) -> Result<Vec<PyValue>, PyListError> {
    Parser {
        s,
        b: s.as_bytes(),
        i: 0,
    }
    .list()
}

/// Parses a list whose elements must all be strings.
pub fn parse_str_list(s: &str) -> Result<Vec<String>, PyListError> {
    parse_list(s)?
        .into_iter()
        .enumerate()
        .map(|(k, v)| match v {
            PyValue::Str(s) => Ok(s),
            other => Err(PyListError {
                at: 0,
                msg: format!("element {k} is {other:?}, not a string"),
            }),
        })
        .collect()
}

/// Parses a list of item ids: integers or strings, returned as strings (ids are opaque).
pub fn parse_id_list(s: &str) -> Result<Vec<String>, PyListError> {
    parse_list(s)?
        .into_iter()
        .enumerate()
        .map(|(k, v)| match v {
            PyValue::Str(s) => Ok(s),
            PyValue::Int(i) => Ok(i.to_string()),
            PyValue::Float(f) => Err(PyListError {
                at: 0,
                msg: format!("element {k} is the float {f}, not an id"),
            }),
        })
        .collect()
}

/// Parses a list of integers (timestamps).
pub fn parse_int_list(s: &str) -> Result<Vec<i64>, PyListError> {
    parse_list(s)?
        .into_iter()
        .enumerate()
        .map(|(k, v)| match v {
            PyValue::Int(i) => Ok(i),
            other => Err(PyListError {
                at: 0,
                msg: format!("element {k} is {other:?}, not an integer"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_with_both_quote_styles_and_escapes() {
        let v =
            parse_str_list(r#"['a', "b's", 'c\'d', 'e\\f', "tab\there", '\x41\u00e9']"#).unwrap();
        assert_eq!(v, vec!["a", "b's", "c'd", "e\\f", "tab\there", "Aé"]);
    }

    #[test]
    fn numbers_and_empty() {
        assert_eq!(parse_id_list("[2436]").unwrap(), vec!["2436"]);
        assert_eq!(parse_id_list("[1112, 327,327 , 1213]").unwrap().len(), 4);
        assert_eq!(parse_id_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_list("[5.0, -1, 1e3]").unwrap(),
            vec![
                PyValue::Float(5.0),
                PyValue::Int(-1),
                PyValue::Float(1000.0)
            ]
        );
        assert_eq!(
            parse_int_list("[1494288000, 1]").unwrap(),
            vec![1494288000, 1]
        );
        assert_eq!(parse_list("[1,]").unwrap(), vec![PyValue::Int(1)]);
    }

    #[test]
    fn non_ascii_inside_strings() {
        assert_eq!(
            parse_str_list("['Ünïcødé ✓', \"日本\"]").unwrap(),
            vec!["Ünïcødé ✓", "日本"]
        );
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            "",
            "[",
            "['a'",
            "['a',",
            "['a' 'b']",
            "[a]",
            "['a'] x",
            "['unterminated]",
            "[1.2.3]",
            "['''x''']",
            "[\"\\x4\"]",
            "{'a': 1}",
            "[nan]",
        ] {
            assert!(parse_list(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_int_list("['1']").is_err());
        assert!(parse_str_list("[1]").is_err());
        assert!(parse_id_list("[1.5]").is_err());
    }
}
