//! The xl.cfg parser (`dom0-tools/xlcfg`): syntax, typed domain config, device specs.
//!
//! Input: the file's text, then optionally a NUL and command-line overrides, one per line.
//! Checks: no panic; a parsed file printed back in xl.cfg syntax parses to the same settings;
//! UUIDs and MACs the parsers accept survive format → parse; the device parsers accept or
//! refuse every string atom without panicking.

use xlcfg::device::{format_mac, parse_disk, parse_mac, parse_vif, vdev_number};
use xlcfg::{format_uuid, parse_cpuset, parse_uuid, DomainConfig, RawConfig, Value};

/// `v` in xl.cfg syntax that parses back to `v`.
fn print_value(v: &Value, out: &mut String) {
    match v {
        Value::Num(s) => out.push_str(s),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 || c == '\x7f' => {
                        out.push_str(&format!("\\x{:02x}", c as u32));
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print_value(item, out);
            }
            out.push(']');
        }
    }
}

fn print_config(raw: &RawConfig) -> String {
    let mut out = String::new();
    for s in raw.settings() {
        out.push_str(&s.key);
        out.push_str(" = ");
        print_value(&s.value, &mut out);
        out.push('\n');
    }
    out
}

fn atoms<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Str(s) | Value::Num(s) => out.push(s),
        Value::List(items) => items.iter().for_each(|i| atoms(i, out)),
    }
}

fn check_atom(s: &str) {
    if let Some(m) = parse_mac(s) {
        assert_eq!(
            parse_mac(&format_mac(&m)),
            Some(m),
            "MAC round trip of {s:?}"
        );
    }
    if let Some(u) = parse_uuid(s) {
        assert_eq!(
            parse_uuid(&format_uuid(&u)),
            Some(u),
            "UUID round trip of {s:?}"
        );
    }
    let _ = parse_cpuset(s);
    let _ = vdev_number(s);
    let _ = parse_disk(s);
    let _ = parse_vif(s);
}

/// The xl.cfg target.
pub fn target_xlcfg(data: &[u8]) {
    let (file, overrides) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let text = String::from_utf8_lossy(file);
    let mut raw = match RawConfig::parse("fuzz.cfg", &text) {
        Ok(raw) => raw,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // Round trip through the printer.
    let printed = print_config(&raw);
    let again = RawConfig::parse("printed.cfg", &printed)
        .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
    assert_eq!(again.settings().len(), raw.settings().len());
    for (a, b) in raw.settings().iter().zip(again.settings()) {
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.value, b.value,
            "value of `{}` changed by the round trip",
            a.key
        );
    }
    let mut all = Vec::new();
    for s in raw.settings() {
        atoms(&s.value, &mut all);
    }
    for a in all.iter().take(64) {
        check_atom(a);
    }
    if let Some(ov) = overrides {
        let lines: Vec<String> = String::from_utf8_lossy(ov)
            .split('\n')
            .take(16)
            .map(str::to_owned)
            .collect();
        if xlcfg::apply_overrides(&mut raw, &lines).is_err() {
            return;
        }
    }
    if let Ok(cfg) = DomainConfig::from_raw("fuzz.cfg", &raw) {
        let _ = cfg.check_supported();
        if let Some(u) = cfg.uuid {
            assert_eq!(parse_uuid(&format_uuid(&u)), Some(u));
        }
        for v in &cfg.vifs {
            if let Some(m) = v.mac {
                assert_eq!(parse_mac(&format_mac(&m)), Some(m));
            }
        }
    }
}
