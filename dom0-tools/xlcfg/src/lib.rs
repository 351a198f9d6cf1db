//! Xen's xl.cfg domain configuration: the file syntax ([`syntax`]) and the typed
//! configuration of a PVH domain ([`DomainConfig`]) that ferrovisor's `xl` builds.
//!
//! Pure: no I/O besides what the caller passes in, no unsafe code.
#![forbid(unsafe_code)]

pub mod device;
pub mod syntax;

pub use device::{DiskSpec, VifSpec};
use std::fmt;
pub use syntax::{RawConfig, Setting, Value};

/// A configuration error, located where possible (`file:line: message`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Source name.
    pub file: String,
    /// 1-based line; 0 when the problem is not on one line (a missing key).
    pub line: u32,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `file:line`.
    pub fn at(file: &str, line: u32, message: String) -> Self {
        ConfigError {
            file: file.to_string(),
            line,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// What to do when the domain shuts down for a reason (`on_poweroff` etc.).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy it and create it again from the same configuration.
    Restart,
    /// Leave it (shut down) for inspection.
    Preserve,
}

impl Action {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "destroy" => Ok(Action::Destroy),
            "restart" => Ok(Action::Restart),
            "preserve" => Ok(Action::Preserve),
            "rename-restart" | "coredump-destroy" | "coredump-restart" | "soft-reset" => Err(
                format!("action `{s}` is not supported (use destroy, restart or preserve)"),
            ),
            _ => Err(format!(
                "unknown action `{s}` (expected destroy, restart or preserve)"
            )),
        }
    }

    /// The xl.cfg spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::Preserve => "preserve",
        }
    }
}

/// The keys [`DomainConfig::from_raw`] knows. Anything else is an error.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "type",
    "kernel",
    "ramdisk",
    "cmdline",
    "extra",
    "root",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "cpus",
    "cpu_weight",
    "cap",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_watchdog",
    "disk",
    "vif",
    "uuid",
];

/// Most physical CPUs a CPU set names (affinity masks are 64 bits).
pub const MAX_CPUS: u32 = 64;

/// A typed PVH domain configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// `name` (required).
    pub name: String,
    /// `kernel` (required): path to a PVH kernel (ELF or bzImage).
    pub kernel: String,
    /// `ramdisk`.
    pub ramdisk: Option<String>,
    /// The kernel command line: `cmdline`, else `root=ROOT EXTRA`.
    pub cmdline: String,
    /// `memory`, MiB (default 128, as libxl).
    pub memory_mib: u64,
    /// `maxmem`, MiB (default `memory`).
    pub maxmem_mib: u64,
    /// `vcpus` (default 1).
    pub vcpus: u32,
    /// `maxvcpus` (default `vcpus`).
    pub maxvcpus: u32,
    /// `cpus`: hard affinity of every vCPU as a bit mask of physical CPUs; `None` = all.
    pub cpus: Option<u64>,
    /// `cpu_weight` (credit2 weight).
    pub weight: Option<u16>,
    /// `cap` (percent of one CPU).
    pub cap: Option<u16>,
    /// `on_poweroff` (default destroy).
    pub on_poweroff: Action,
    /// `on_reboot` (default restart).
    pub on_reboot: Action,
    /// `on_crash` (default destroy).
    pub on_crash: Action,
    /// `on_watchdog` (default destroy).
    pub on_watchdog: Action,
    /// `disk` items.
    pub disks: Vec<DiskSpec>,
    /// `vif` items.
    pub vifs: Vec<VifSpec>,
    /// `uuid`.
    pub uuid: Option<[u8; 16]>,
    /// Non-fatal remarks (e.g. root/extra ignored in favour of cmdline).
    pub warnings: Vec<String>,
}

/// Parses `file` (its text) followed by command-line overrides `key=value` (each as a
/// line of xl.cfg syntax, as `xl create cfg key=value` does; an unquoted value that is
/// not a number is taken as a string) into a typed config.
pub fn parse_with_overrides(
    file: &str,
    text: &str,
    overrides: &[String],
) -> Result<DomainConfig, ConfigError> {
    let mut raw = RawConfig::parse(file, text)?;
    apply_overrides(&mut raw, overrides)?;
    DomainConfig::from_raw(file, &raw)
}

/// Adds `key=value` command-line settings to `raw` (`key+=value` appends).
pub fn apply_overrides(raw: &mut RawConfig, overrides: &[String]) -> Result<(), ConfigError> {
    const SRC: &str = "<command line>";
    for (i, o) in overrides.iter().enumerate() {
        let line = i as u32 + 1;
        let Some((k, v)) = o.split_once('=') else {
            return Err(ConfigError::at(
                SRC,
                line,
                format!("`{o}` is not key=value"),
            ));
        };
        if o.contains('\n') {
            return Err(ConfigError::at(SRC, line, format!("`{o}` spans lines")));
        }
        let text = if RawConfig::parse(SRC, o).is_ok()
            || v.trim().is_empty()
            || v.contains(['\'', '"', '['])
        {
            o.clone()
        } else {
            // `name=foo`: a bare word is taken as a string, as users expect.
            format!("{}='{}'", k.trim(), v.trim())
        };
        // Leading newlines make errors and settings report the override's position.
        let padded = format!("{}{text}", "\n".repeat(i));
        raw.parse_into(SRC, &padded)?;
    }
    Ok(())
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Parses a CPU set as xl.cfg's `cpus` takes it: `"all"`, `"N"`, `"N-M"`, comma
/// separated, `^N`/`^N-M` removing CPUs; returns the bit mask.
pub fn parse_cpuset(s: &str) -> Result<u64, String> {
    let mut mask = 0u64;
    let mut any_positive = false;
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty item in CPU set `{s}`"));
        }
        let (neg, body) = match part.strip_prefix('^') {
            Some(b) => (true, b),
            None => (false, part),
        };
        let bits = if body == "all" {
            u64::MAX
        } else {
            let (a, b) = match body.split_once('-') {
                Some((a, b)) => (a, b),
                None => (body, body),
            };
            let a: u32 = a
                .trim()
                .parse()
                .map_err(|_| format!("bad CPU `{part}` in CPU set `{s}`"))?;
            let b: u32 = b
                .trim()
                .parse()
                .map_err(|_| format!("bad CPU `{part}` in CPU set `{s}`"))?;
            if a > b {
                return Err(format!("bad CPU range `{part}` in `{s}`"));
            }
            if b >= MAX_CPUS {
                return Err(format!("CPU {b} is beyond the {MAX_CPUS} supported"));
            }
            let width = b - a + 1;
            let ones = if width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            ones << a
        };
        if neg {
            mask &= !bits;
        } else {
            any_positive = true;
            mask |= bits;
        }
    }
    if !any_positive {
        return Err(format!("CPU set `{s}` names no CPU"));
    }
    if mask == 0 {
        return Err(format!("CPU set `{s}` is empty"));
    }
    Ok(mask)
}

/// Parses a UUID `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats a UUID the usual way.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

struct Typed<'a> {
    file: &'a str,
    raw: &'a RawConfig,
}

impl Typed<'_> {
    fn err(&self, s: &Setting, msg: String) -> ConfigError {
        ConfigError::at(&s.file, s.line, msg)
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw.get(key) {
            None => Ok(None),
            Some(s) => match s.value.as_atom() {
                Some(v) => Ok(Some(v.to_string())),
                None => Err(self.err(s, format!("`{key}` must be a string, not a list"))),
            },
        }
    }

    fn number(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.raw.get(key) {
            None => Ok(None),
            Some(s) => {
                let Some(text) = s.value.as_atom() else {
                    return Err(self.err(s, format!("`{key}` must be a number, not a list")));
                };
                match parse_u64(text) {
                    Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    Some(n) => {
                        Err(self.err(s, format!("`{key}` = {n} is out of range ({min}..={max})")))
                    }
                    None => Err(self.err(s, format!("`{key}` = `{text}` is not a number"))),
                }
            }
        }
    }

    fn string_list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.raw.get(key) {
            None => Ok(Vec::new()),
            Some(s) => match &s.value {
                Value::List(items) => items
                    .iter()
                    .map(|v| {
                        v.as_atom()
                            .map(str::to_string)
                            .ok_or_else(|| self.err(s, format!("`{key}` items must be strings")))
                    })
                    .collect(),
                v => Ok(vec![v.as_atom().unwrap_or_default().to_string()]),
            },
        }
    }

    fn action(&self, key: &str, default: Action) -> Result<Action, ConfigError> {
        match self.raw.get(key) {
            None => Ok(default),
            Some(s) => {
                let text = self.string(key)?.unwrap_or_default();
                Action::parse(&text).map_err(|m| self.err(s, format!("`{key}`: {m}")))
            }
        }
    }

    fn disks(&self) -> Result<Vec<DiskSpec>, ConfigError> {
        let mut out: Vec<DiskSpec> = Vec::new();
        for (i, item) in self.string_list("disk")?.iter().enumerate() {
            let s = self.raw.get("disk").expect("listed");
            let d = device::parse_disk(item)
                .map_err(|m| self.err(s, format!("`disk` item {} (`{item}`): {m}", i + 1)))?;
            if let Some(o) = out.iter().find(|o| o.devid == d.devid) {
                return Err(self.err(
                    s,
                    format!(
                        "`disk` item {} (`{item}`): vdev {} is the same device as {}",
                        i + 1,
                        d.vdev,
                        o.vdev
                    ),
                ));
            }
            out.push(d);
        }
        Ok(out)
    }

    fn vifs(&self) -> Result<Vec<VifSpec>, ConfigError> {
        let mut out: Vec<VifSpec> = Vec::new();
        for (i, item) in self.string_list("vif")?.iter().enumerate() {
            let s = self.raw.get("vif").expect("listed");
            let mut v = device::parse_vif(item)
                .map_err(|m| self.err(s, format!("`vif` item {} (`{item}`): {m}", i + 1)))?;
            // As libxl: a vif without devid gets the next one after those before it.
            let id = v.devid.unwrap_or_else(|| {
                out.iter()
                    .filter_map(|o| o.devid)
                    .max()
                    .map_or(0, |m| m + 1)
            });
            let dup = |m: String| self.err(s, format!("`vif` item {} (`{item}`): {m}", i + 1));
            if out.iter().any(|o| o.devid == Some(id)) {
                return Err(dup(format!("devid {id} is used twice")));
            }
            if let Some(mac) = v.mac {
                if out.iter().any(|o| o.mac == Some(mac)) {
                    return Err(dup(format!(
                        "MAC {} is used twice",
                        device::format_mac(&mac)
                    )));
                }
            }
            if let Some(n) = &v.vifname {
                if out.iter().any(|o| o.vifname.as_ref() == Some(n)) {
                    return Err(dup(format!("vifname {n} is used twice")));
                }
            }
            v.devid = Some(id);
            out.push(v);
        }
        Ok(out)
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::at(self.file, 0, format!("`{key}` is required"))
    }
}

impl DomainConfig {
    /// The typed config of a parsed file; `file` names it in errors about missing keys.
    pub fn from_raw(file: &str, raw: &RawConfig) -> Result<Self, ConfigError> {
        for s in raw.settings() {
            if !KNOWN_KEYS.contains(&s.key.as_str()) {
                return Err(ConfigError::at(
                    &s.file,
                    s.line,
                    format!("unknown or unsupported setting `{}`", s.key),
                ));
            }
        }
        let t = Typed { file, raw };
        let mut warnings = Vec::new();

        if let Some(ty) = t.string("type")? {
            let s = raw.get("type").expect("just read");
            match ty.as_str() {
                "pvh" => {}
                "hvm" | "pv" => {
                    return Err(t.err(
                        s,
                        format!("type \"{ty}\" is not supported: ferrovisor runs PVH guests only (type = \"pvh\")"),
                    ))
                }
                _ => return Err(t.err(s, format!("unknown domain type \"{ty}\""))),
            }
        }

        let name = t.string("name")?.ok_or_else(|| t.missing("name"))?;
        if let Some(s) = raw.get("name") {
            if name.is_empty() || name.len() > 64 {
                return Err(t.err(s, "`name` must have 1 to 64 characters".into()));
            }
            if name.chars().any(|c| c.is_control() || c == '/') {
                return Err(t.err(
                    s,
                    "`name` must not contain `/` or control characters".into(),
                ));
            }
            if name.parse::<u32>().is_ok() {
                return Err(t.err(
                    s,
                    "`name` must not be a number (it would look like a domain id)".into(),
                ));
            }
        }
        let kernel = t.string("kernel")?.ok_or_else(|| t.missing("kernel"))?;
        if kernel.is_empty() {
            return Err(t.err(raw.get("kernel").expect("read"), "`kernel` is empty".into()));
        }
        let ramdisk = t.string("ramdisk")?.filter(|r| !r.is_empty());

        let root = t.string("root")?;
        let extra = t.string("extra")?;
        let cmdline = match t.string("cmdline")? {
            Some(c) => {
                if root.is_some() || extra.is_some() {
                    warnings.push("ignoring root= and extra= in favour of cmdline=".to_string());
                }
                c
            }
            None => match (root, extra) {
                (Some(r), Some(e)) => format!("root={r} {e}"),
                (Some(r), None) => format!("root={r}"),
                (None, Some(e)) => e,
                (None, None) => String::new(),
            },
        };
        if cmdline.len() >= 4096 {
            return Err(ConfigError::at(
                file,
                0,
                format!(
                    "kernel command line is {} bytes; at most 4095 fit",
                    cmdline.len()
                ),
            ));
        }

        let memory_mib = t.number("memory", 1, 1 << 30)?.unwrap_or(128);
        let maxmem_mib = t.number("maxmem", 1, 1 << 30)?.unwrap_or(memory_mib);
        if maxmem_mib < memory_mib {
            return Err(t.err(
                raw.get("maxmem").expect("set"),
                format!("`maxmem` ({maxmem_mib}) is below `memory` ({memory_mib})"),
            ));
        }
        let vcpus = t.number("vcpus", 1, 128)?.unwrap_or(1) as u32;
        let maxvcpus = t.number("maxvcpus", 1, 128)?.map_or(vcpus, |n| n as u32);
        if maxvcpus < vcpus {
            return Err(t.err(
                raw.get("maxvcpus").expect("set"),
                format!("`maxvcpus` ({maxvcpus}) is below `vcpus` ({vcpus})"),
            ));
        }
        let cpus = match raw.get("cpus") {
            None => None,
            Some(s) => {
                let text = match &s.value {
                    Value::List(items) => items
                        .iter()
                        .map(|v| v.as_atom().unwrap_or("?").to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    v => v.as_atom().unwrap_or_default().to_string(),
                };
                let mask = parse_cpuset(&text).map_err(|m| t.err(s, format!("`cpus`: {m}")))?;
                (mask != u64::MAX).then_some(mask)
            }
        };
        let weight = t.number("cpu_weight", 1, 65535)?.map(|n| n as u16);
        let cap = t.number("cap", 0, 65535)?.map(|n| n as u16);
        let uuid = match raw.get("uuid") {
            None => None,
            Some(s) => {
                let text = t.string("uuid")?.unwrap_or_default();
                Some(parse_uuid(&text).ok_or_else(|| t.err(s, format!("bad uuid `{text}`")))?)
            }
        };
        Ok(DomainConfig {
            name,
            kernel,
            ramdisk,
            cmdline,
            memory_mib,
            maxmem_mib,
            vcpus,
            maxvcpus,
            cpus,
            weight,
            cap,
            on_poweroff: t.action("on_poweroff", Action::Destroy)?,
            on_reboot: t.action("on_reboot", Action::Restart)?,
            on_crash: t.action("on_crash", Action::Destroy)?,
            on_watchdog: t.action("on_watchdog", Action::Destroy)?,
            disks: t.disks()?,
            vifs: t.vifs()?,
            uuid,
            warnings,
        })
    }

    /// Fails with a clear message for settings parsed but not implemented yet (none at
    /// the moment: every accepted setting is implemented).
    pub fn check_supported(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
