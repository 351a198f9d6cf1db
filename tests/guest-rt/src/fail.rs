//! The failure value of a test: a reason formatted into a fixed-size buffer (no allocator).
//!
//! A test's `main` returns [`TestResult`]; build failures with [`fail!`](crate::fail) (returns
//! early) or [`ensure!`](crate::ensure). The reason becomes the text after `FAIL: ` on the
//! result line, so it must be a single line: newlines are replaced by spaces and text beyond
//! [`Fail::CAPACITY`] bytes is cut (marked with `...`).

use core::fmt::{self, Write};

/// What a test's `main` returns: `Ok(())` prints `PASS`, `Err(reason)` prints
/// `FAIL: <reason>`.
pub type TestResult = Result<(), Fail>;

/// A failure reason (one line, at most [`Fail::CAPACITY`] bytes).
#[derive(Clone)]
pub struct Fail {
    buf: [u8; Fail::CAPACITY],
    len: usize,
    truncated: bool,
}

impl Fail {
    /// Maximum length of a reason in bytes.
    pub const CAPACITY: usize = 200;

    /// A failure with a formatted reason (see [`fail!`](crate::fail)).
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut f = Fail {
            buf: [0; Fail::CAPACITY],
            len: 0,
            truncated: false,
        };
        let _ = f.write_fmt(args);
        f
    }

    /// The reason text.
    pub fn reason(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in (see `write_str`).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<invalid utf-8>")
    }
}

impl Write for Fail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let c = if c == '\n' || c == '\r' { ' ' } else { c };
            let mut tmp = [0u8; 4];
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            if self.len + enc.len() > self.buf.len() {
                self.truncated = true;
                return Ok(());
            }
            self.buf[self.len..self.len + enc.len()].copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fail({:?})", self.reason())
    }
}

/// Returns early from a test with `Err(Fail)` and a formatted reason, like `anyhow::bail!`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Fail::new(format_args!($($arg)*)))
    };
}

/// Fails the test with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail!($($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    fn check(x: u32) -> TestResult {
        crate::ensure!(x < 10, "x = {x}\nis too big");
        if x == 5 {
            crate::fail!("five");
        }
        Ok(())
    }

    #[test]
    fn reasons_are_single_lines() {
        assert!(check(1).is_ok());
        assert_eq!(check(5).unwrap_err().to_string(), "five");
        assert_eq!(check(12).unwrap_err().to_string(), "x = 12 is too big");
    }

    #[test]
    fn long_reasons_are_truncated() {
        let long = "é".repeat(150);
        let f = Fail::new(format_args!("{long}"));
        assert_eq!(f.reason().len(), Fail::CAPACITY);
        assert!(f.to_string().ends_with("é..."));
    }
}
