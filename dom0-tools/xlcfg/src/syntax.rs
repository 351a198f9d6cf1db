//! The xl.cfg file syntax, as Xen's `xl.cfg(5)` and libxlu's grammar describe it:
//!
//! * a file is a sequence of settings `KEY = VALUE` or `KEY += VALUE` (append to a
//!   list), each ended by a newline or `;`; empty statements are allowed;
//! * `#` starts a comment running to the end of the line;
//! * a key is `[A-Za-z_][A-Za-z0-9_]*`;
//! * a value is a string (`'single'`: taken literally; `"double"`: backslash escapes
//!   `\n \t \r \\ \" \' \xHH` and octal `\NNN`), a number (decimal or `0x` hex), or a
//!   list `[ v, v, ... ]` of values, which may span lines and end with a trailing comma;
//! * a later setting of a key replaces an earlier one.

use crate::ConfigError;

/// A parsed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A quoted string.
    Str(String),
    /// A number literal, kept as written (Xen keeps every atom as text).
    Num(String),
    /// A list.
    List(Vec<Value>),
}

impl Value {
    /// The value as text, if it is an atom (string or number).
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Num(s) => Some(s),
            Value::List(_) => None,
        }
    }
}

/// One `key = value` setting and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Source name (file path or `<command line>`).
    pub file: String,
    /// 1-based line of the key.
    pub line: u32,
}

/// A parsed file: settings in order, a later one replacing an earlier one of the same key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawConfig {
    settings: Vec<Setting>,
}

impl RawConfig {
    /// Parses `text` (named `file` in errors) and adds its settings.
    pub fn parse_into(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        let mut p = Parser {
            file,
            src: text.as_bytes(),
            pos: 0,
            line: 1,
            depth: 0,
        };
        while let Some((key, append, value, line)) = p.statement()? {
            self.set(
                Setting {
                    key,
                    value,
                    file: file.to_string(),
                    line,
                },
                append,
            )?;
        }
        Ok(())
    }

    /// Parses one file.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let mut c = RawConfig::default();
        c.parse_into(file, text)?;
        Ok(c)
    }

    fn set(&mut self, s: Setting, append: bool) -> Result<(), ConfigError> {
        let old = self.settings.iter().position(|o| o.key == s.key);
        match (old, append) {
            (Some(i), true) => {
                let prev = &mut self.settings[i];
                match (&mut prev.value, s.value) {
                    (Value::List(a), Value::List(b)) => a.extend(b),
                    (Value::List(a), v) => a.push(v),
                    _ => {
                        return Err(ConfigError::at(
                            &s.file,
                            s.line,
                            format!("`{} +=`: the earlier value is not a list", s.key),
                        ))
                    }
                }
                prev.file = s.file;
                prev.line = s.line;
            }
            (Some(i), false) => {
                self.settings.remove(i);
                self.settings.push(s);
            }
            (None, _) => self.settings.push(s),
        }
        Ok(())
    }

    /// The setting of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// Every setting, in the order first set.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }
}

/// Deepest nesting of lists a value may have. Real files nest at most two levels (a list of
/// strings, or libxl's lists of lists); the bound keeps the recursive parser's stack use
/// small whatever the input (found by the `xlcfg` fuzz target: a few hundred thousand `[`
/// overflowed the stack).
pub const MAX_LIST_DEPTH: usize = 16;

struct Parser<'a> {
    file: &'a str,
    src: &'a [u8],
    pos: usize,
    line: u32,
    /// Lists open around the value being parsed.
    depth: usize,
}

impl Parser<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.file, self.line, msg.into()))
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Skips blanks and comments; with `newlines`, newlines too.
    fn skip(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' if newlines => {
                    self.pos += 1;
                    self.line += 1;
                }
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// The next setting, or `None` at the end.
    #[allow(clippy::type_complexity)]
    fn statement(&mut self) -> Result<Option<(String, bool, Value, u32)>, ConfigError> {
        loop {
            self.skip(true);
            match self.peek() {
                None => return Ok(None),
                Some(b';') => self.pos += 1,
                Some(_) => break,
            }
        }
        let line = self.line;
        let key = self.ident()?;
        self.skip(false);
        let append = match self.peek() {
            Some(b'=') => {
                self.pos += 1;
                false
            }
            Some(b'+') if self.src.get(self.pos + 1) == Some(&b'=') => {
                self.pos += 2;
                true
            }
            _ => return self.err(format!("expected `=` after `{key}`")),
        };
        self.skip(false);
        let value = self.value()?;
        self.skip(false);
        match self.peek() {
            None => {}
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
            }
            Some(b';') => self.pos += 1,
            Some(c) => {
                return self.err(format!(
                    "unexpected `{}` after the value of `{key}`",
                    char::from(c).escape_default()
                ))
            }
        }
        Ok(Some((key, append, value, line)))
    }

    fn ident(&mut self) -> Result<String, ConfigError> {
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.pos += 1,
            Some(c) => {
                return self.err(format!(
                    "expected a setting name, found `{}`",
                    char::from(c).escape_default()
                ))
            }
            None => return self.err("expected a setting name"),
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        Ok(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
    }

    fn value(&mut self) -> Result<Value, ConfigError> {
        match self.peek() {
            Some(b'\'') => self.single_quoted().map(Value::Str),
            Some(b'"') => self.double_quoted().map(Value::Str),
            Some(b'[') => self.list(),
            Some(c) if c.is_ascii_digit() => self.number(),
            Some(b'\n') | None => self.err("missing value"),
            Some(c) => self.err(format!(
                "expected a value (a 'string', a number or a [list]), found `{}`",
                char::from(c).escape_default()
            )),
        }
    }

    fn number(&mut self) -> Result<Value, ConfigError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            self.pos += 1;
        }
        let text = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
        let ok = if let Some(hex) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
            !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit())
        } else {
            text.bytes().all(|c| c.is_ascii_digit())
        };
        if !ok {
            return self.err(format!("bad number `{text}` (quote strings)"));
        }
        Ok(Value::Num(text))
    }

    fn single_quoted(&mut self) -> Result<String, ConfigError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b'\'') => break,
                Some(b'\n') | None => return self.err("unterminated 'string'"),
                Some(_) => self.pos += 1,
            }
        }
        let s = self.utf8(start, self.pos)?;
        self.pos += 1;
        Ok(s)
    }

    fn utf8(&self, start: usize, end: usize) -> Result<String, ConfigError> {
        match std::str::from_utf8(&self.src[start..end]) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn double_quoted(&mut self) -> Result<String, ConfigError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("unterminated \"string\"");
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\n' => {
                    self.pos -= 1;
                    return self.err("unterminated \"string\"");
                }
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return self.err("unterminated \"string\"");
                    };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'\\' | b'"' | b'\'' => out.push(e),
                        b'x' => {
                            let start = self.pos;
                            while self.pos - start < 2
                                && self.peek().is_some_and(|c| c.is_ascii_hexdigit())
                            {
                                self.pos += 1;
                            }
                            let digits =
                                std::str::from_utf8(&self.src[start..self.pos]).unwrap_or_default();
                            match u8::from_str_radix(digits, 16) {
                                Ok(b) => out.push(b),
                                Err(_) => return self.err("`\\x` needs hex digits"),
                            }
                        }
                        b'0'..=b'7' => {
                            let start = self.pos - 1;
                            while self.pos - start < 3
                                && self.peek().is_some_and(|c| (b'0'..=b'7').contains(&c))
                            {
                                self.pos += 1;
                            }
                            let digits =
                                std::str::from_utf8(&self.src[start..self.pos]).unwrap_or_default();
                            match u8::try_from(u32::from_str_radix(digits, 8).unwrap_or(256)) {
                                Ok(b) => out.push(b),
                                Err(_) => {
                                    return self.err(format!("octal escape `\\{digits}` too big"))
                                }
                            }
                        }
                        b'\n' => return self.err("unterminated \"string\""),
                        other => {
                            return self.err(format!(
                                "unknown escape `\\{}` in string",
                                char::from(other).escape_default()
                            ))
                        }
                    }
                }
                _ => out.push(c),
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(s),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn list(&mut self) -> Result<Value, ConfigError> {
        if self.depth >= MAX_LIST_DEPTH {
            return self.err(format!("lists nested more than {MAX_LIST_DEPTH} deep"));
        }
        self.depth += 1;
        let v = self.list_items();
        self.depth -= 1;
        v
    }

    fn list_items(&mut self) -> Result<Value, ConfigError> {
        self.pos += 1;
        let mut items = Vec::new();
        let open_line = self.line;
        loop {
            self.skip(true);
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                None => {
                    return Err(ConfigError::at(
                        self.file,
                        open_line,
                        "unterminated [list]".to_string(),
                    ))
                }
                _ => {}
            }
            items.push(self.value()?);
            self.skip(true);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                None => {
                    return Err(ConfigError::at(
                        self.file,
                        open_line,
                        "unterminated [list]".to_string(),
                    ))
                }
                Some(c) => {
                    return self.err(format!(
                        "expected `,` or `]` in list, found `{}`",
                        char::from(c).escape_default()
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> RawConfig {
        RawConfig::parse("t.cfg", text).unwrap()
    }

    fn e(text: &str) -> ConfigError {
        RawConfig::parse("t.cfg", text).unwrap_err()
    }

    #[test]
    fn strings_numbers_comments_and_separators() {
        let c =
            p("# header\nname = \"a\" # trailing\nmemory=512; vcpus = 0x2\n\n\nkernel='/b\\n'\n");
        assert_eq!(c.get("name").unwrap().value, Value::Str("a".into()));
        assert_eq!(c.get("memory").unwrap().value, Value::Num("512".into()));
        assert_eq!(c.get("vcpus").unwrap().value, Value::Num("0x2".into()));
        assert_eq!(c.get("vcpus").unwrap().line, 3);
        // Single quotes are literal.
        assert_eq!(c.get("kernel").unwrap().value, Value::Str("/b\\n".into()));
        assert_eq!(c.get("kernel").unwrap().line, 6);
    }

    #[test]
    fn double_quoted_escapes() {
        let c = p(r#"a = "x\ty\"z\\\x41\101""#);
        assert_eq!(c.get("a").unwrap().value, Value::Str("x\ty\"z\\AA".into()));
    }

    #[test]
    fn lists_multiline_trailing_comma_nested() {
        let c = p("disk = [ 'a',\n  # comment\n  \"b\",\n]\nx=[]\ny=[[1,2],['q']]\n");
        assert_eq!(
            c.get("disk").unwrap().value,
            Value::List(vec![Value::Str("a".into()), Value::Str("b".into())])
        );
        assert_eq!(c.get("x").unwrap().value, Value::List(vec![]));
        assert_eq!(c.get("x").unwrap().line, 5);
        assert!(matches!(c.get("y").unwrap().value, Value::List(ref l) if l.len() == 2));
    }

    #[test]
    fn later_setting_wins_and_append() {
        let c = p("memory = 1\nmemory = 2\nvif = ['a']\nvif += ['b']\nvif += 'c'\n");
        assert_eq!(c.get("memory").unwrap().value, Value::Num("2".into()));
        assert_eq!(
            c.get("vif").unwrap().value,
            Value::List(vec![
                Value::Str("a".into()),
                Value::Str("b".into()),
                Value::Str("c".into())
            ])
        );
        let err = e("a = 'x'\na += 'y'\n");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn syntax_errors_carry_file_and_line() {
        for (text, line, what) in [
            ("a = 1\nb = \n", 2, "missing value"),
            ("a = 1\n\nname = 'x\n", 3, "unterminated"),
            ("a = 1\nname \"x\"\n", 2, "expected `=`"),
            ("a = [ 'x'\n 'y' ]\n", 2, "expected `,`"),
            ("a = [ 'x',\n", 1, "unterminated [list]"),
            ("a = 12ab\n", 1, "bad number"),
            ("a = foo\n", 1, "expected a value"),
            ("a = 'x' 'y'\n", 1, "unexpected"),
            ("1a = 2\n", 1, "expected a setting name"),
            ("a = \"\\q\"\n", 1, "unknown escape"),
            ("a = \"\\777\"\n", 1, "too big"),
        ] {
            let err = e(text);
            assert_eq!(err.file, "t.cfg", "{text:?}");
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(what), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("t.cfg:{line}: ")));
        }
    }

    #[test]
    fn list_nesting_is_bounded() {
        let ok = format!("x = {}1{}\n", "[".repeat(16), "]".repeat(16));
        assert!(RawConfig::parse("f", &ok).is_ok());
        let deep = format!("x = {}1{}\n", "[".repeat(17), "]".repeat(17));
        assert_eq!(
            e(&deep).to_string(),
            "t.cfg:1: lists nested more than 16 deep"
        );
        // Deep enough to overflow the stack of the unbounded recursive parser.
        let hostile = format!("x = {}", "[".repeat(1_000_000));
        assert!(e(&hostile).message.contains("nested more than 16"));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut seed = 0x1234_5678u32;
        let alphabet = b"ab=[]',\"\\#;\n 0x9+\xff";
        for _ in 0..2000 {
            let mut s = Vec::new();
            for _ in 0..(seed % 40) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                s.push(alphabet[(seed >> 16) as usize % alphabet.len()]);
            }
            let text = String::from_utf8_lossy(&s);
            let _ = RawConfig::parse("f", &text);
        }
    }
}
