//! Quoting of possibly binary values, as Xen's `xenstore-read`/`-ls` print them and
//! `xenstore-write` parses them (X `tools/xs-clients/xenstore_client.c`).

use std::fmt::Write as _;

/// Printable ASCII other than `\` as is; `\t`, `\n`, `\r`, `\\`; bytes below 8 as `\ooo`
/// (octal), anything else as `\xhh`.
pub fn sanitise(val: &[u8]) -> String {
    let mut s = String::with_capacity(val.len());
    for &c in val {
        match c {
            b'\\' => s.push_str("\\\\"),
            b' '..=b'~' => s.push(c as char),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            0..=7 => {
                let _ = write!(s, "\\{c:03o}");
            }
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

/// The inverse of [`sanitise`]: `\t \n \r \\`, `\xh[h]`, `\o[o[o]]`; a backslash before any
/// other character is dropped; a trailing backslash stands for a NUL byte.
pub fn unsanitise(spec: &str) -> Vec<u8> {
    let b = spec.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = b.get(i) else {
            out.push(0);
            break;
        };
        i += 1;
        match e {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let digits = b[i..]
                    .iter()
                    .take(2)
                    .take_while(|d| d.is_ascii_hexdigit())
                    .count();
                if digits == 0 {
                    out.push(b'x');
                } else {
                    let v = std::str::from_utf8(&b[i..i + digits])
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                        .unwrap_or(0);
                    out.push(v);
                    i += digits;
                }
            }
            b'0'..=b'7' => {
                i -= 1;
                let digits = b[i..]
                    .iter()
                    .take(3)
                    .take_while(|d| (b'0'..=b'7').contains(d))
                    .count();
                let v = b[i..i + digits]
                    .iter()
                    .fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += digits;
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_xen_forms() {
        let raw = b"a b\\c\t\n\r\x00\x07\x08\x7f\xff~";
        let s = sanitise(raw);
        assert_eq!(s, "a b\\\\c\\t\\n\\r\\000\\007\\x08\\x7f\\xff~");
        assert_eq!(unsanitise(&s), raw);
        assert_eq!(unsanitise("\\x4"), b"\x04");
        assert_eq!(unsanitise("\\x41B"), b"AB");
        assert_eq!(unsanitise("\\xg"), b"xg");
        assert_eq!(unsanitise("\\101\\0"), b"A\0");
        assert_eq!(unsanitise("\\q"), b"q");
        assert_eq!(unsanitise("end\\"), b"end\0");
        assert_eq!(unsanitise("plain"), b"plain");
    }
}
