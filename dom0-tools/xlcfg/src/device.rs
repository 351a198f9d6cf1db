//! `disk = [...]` and `vif = [...]` items, in Xen's syntax (`xl-disk-configuration(5)`,
//! `xl-network-configuration(5)`), and the virtual-device numbers of
//! `docs/misc/vbd-interface.txt`.
//!
//! Only what ferrovisor's dom0 can back is accepted: raw images and block devices served
//! by dom0's kernel `xen-blkback`, bridged vifs served by `xen-netback`. Anything else is
//! refused with a message naming the parameter.

/// Xen's OUI, the first three bytes of generated MACs.
pub const XEN_OUI: [u8; 3] = [0x00, 0x16, 0x3e];

/// The script name libxl writes for bridged vifs (netback needs a non-empty `script`;
/// ferrovisor's xl does the bridging itself and never runs it).
pub const VIF_BRIDGE_SCRIPT: &str = "/etc/xen/scripts/vif-bridge";

/// One `disk` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The block device or image file (`/dev/` prepended to a relative path).
    pub target: String,
    /// The guest's name for it (`xvda`, `xvdb1`, `hda`, `sdb`, `d0p1`, or a number).
    pub vdev: String,
    /// The xenstore `virtual-device` number, also the device id.
    pub devid: u32,
    /// `access=r`/`ro`.
    pub readonly: bool,
    /// `discard` / `no-discard` (default on, as libxl).
    pub discard: bool,
    /// `direct-io-safe`.
    pub direct_io_safe: bool,
}

/// One `vif` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifSpec {
    /// `devid`: the handle; `None` = next free.
    pub devid: Option<u32>,
    /// `mac`; `None` = generated (00:16:3e:xx:xx:xx).
    pub mac: Option<[u8; 6]>,
    /// `bridge` (default `xenbr0`).
    pub bridge: String,
    /// `ip` (informational, written to the backend).
    pub ip: Option<String>,
    /// `vifname`: the dom0 interface is renamed to this.
    pub vifname: Option<String>,
    /// `script`: only vif-bridge (written for the uevent, never run).
    pub script: String,
}

fn vdev_letters(s: &str, max_disk: u32) -> Option<(u32, &str)> {
    // Bijective base 26: a=0 .. z=25, aa=26 ...
    let end = s.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let mut idx: i64 = -1;
    for c in s[..end].bytes() {
        idx = (idx + 1) * 26 + i64::from(c - b'a');
        if idx > i64::from(max_disk) {
            return None;
        }
    }
    Some((idx as u32, &s[end..]))
}

fn partition(rest: &str, max: u32) -> Option<u32> {
    if rest.is_empty() {
        return Some(0);
    }
    if rest.starts_with('0') || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse::<u32>().ok().filter(|&p| p <= max)
}

fn xvd_number(disk: u32, part: u32) -> u32 {
    if disk <= 15 && part <= 15 {
        (202 << 8) | (disk << 4) | part
    } else {
        (1 << 28) | (disk << 8) | part
    }
}

fn parse_number(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// The xenstore virtual-device number of a vdev name (libxl's rules):
/// * `xvd<letters>[<partition>]`: `202<<8 | disk<<4 | part` for disk and partition ≤ 15,
///   else `1<<28 | disk<<8 | part` (disk < 2^20, partition ≤ 255);
/// * `d<disk>p<part>`: the same numbers;
/// * a plain number (decimal, `0x` hex or `0` octal, ≤ `i32::MAX`): itself;
/// * `hd<a-d>[part ≤ 63]`: `3<<8` / `22<<8` forms; `sd<a-p>[part ≤ 15]`: `8<<8 | disk<<4 | part`.
pub fn vdev_number(vdev: &str) -> Result<u32, String> {
    let bad = || {
        format!("`{vdev}` is not a virtual disk name (expected xvda, xvdb1, hda, sda, d0p1 or a number)")
    };
    if let Some(rest) = vdev.strip_prefix("xvd") {
        let (disk, rest) = vdev_letters(rest, (1 << 20) - 1).ok_or_else(bad)?;
        let part = partition(rest, 255).ok_or_else(bad)?;
        return Ok(xvd_number(disk, part));
    }
    if let Some(rest) = vdev.strip_prefix('d') {
        if let Some((d, p)) = rest.split_once('p') {
            let num = |s: &str| {
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
            };
            if let (Some(disk), Some(part)) = (num(d), num(p)) {
                if disk < (1 << 20) && part < 256 {
                    return Ok(xvd_number(disk, part));
                }
                return Err(bad());
            }
        }
    }
    if let Some(n) = parse_number(vdev) {
        return u32::try_from(n)
            .ok()
            .filter(|&n| n > 0 && n <= i32::MAX as u32)
            .ok_or_else(bad);
    }
    if let Some(rest) = vdev.strip_prefix("hd") {
        let (disk, rest) = vdev_letters(rest, 3).ok_or_else(bad)?;
        let part = partition(rest, 63).ok_or_else(bad)?;
        let major = if disk < 2 { 3 } else { 22 };
        return Ok((major << 8) | ((disk & 1) << 6) | part);
    }
    if let Some(rest) = vdev.strip_prefix("sd") {
        let (disk, rest) = vdev_letters(rest, 15).ok_or_else(bad)?;
        let part = partition(rest, 15).ok_or_else(bad)?;
        return Ok((8 << 8) | (disk << 4) | part);
    }
    Err(bad())
}

/// Parses `aa:bb:cc:dd:ee:ff` (`-` also accepted as separator).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as libxl writes it.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// A MAC in Xen's OUI from three random bytes (libxl clears the top bit of the fourth).
pub fn xen_mac(r: [u8; 3]) -> [u8; 6] {
    [XEN_OUI[0], XEN_OUI[1], XEN_OUI[2], r[0] & 0x7f, r[1], r[2]]
}

fn backend_is_dom0(v: &str) -> bool {
    matches!(v, "" | "0" | "Domain-0")
}

#[derive(Default)]
struct DiskParse {
    target: Option<String>,
    format: Option<String>,
    had_prefix: bool,
    vdev: Option<String>,
    access: Option<String>,
    cdrom: bool,
    discard: Option<bool>,
    direct_io_safe: bool,
}

impl DiskParse {
    fn set(slot: &mut Option<String>, what: &str, v: &str) -> Result<(), String> {
        match slot {
            Some(old) if !old.is_empty() => {
                Err(format!("{what} specified twice (`{old}` and `{v}`)"))
            }
            _ => {
                *slot = Some(v.to_string());
                Ok(())
            }
        }
    }

    fn vdev_devtype(&mut self, v: &str) -> Result<(), String> {
        match v.rsplit_once(':') {
            Some((vdev, "disk")) => Self::set(&mut self.vdev, "vdev", vdev),
            Some((_, "cdrom")) => {
                self.cdrom = true;
                Ok(())
            }
            Some((_, t)) => Err(format!("unknown device type `{t}` (only disk)")),
            None => Self::set(&mut self.vdev, "vdev", v),
        }
    }

    /// One positional parameter, after deprecated prefixes are taken off.
    fn positional(&mut self, tok: &str) -> Result<(), String> {
        if self.target.is_none() {
            self.target = Some(tok.to_string());
        } else if self.target.as_deref() == Some("") && self.format.is_none() && tok.contains(':') {
            // xend's `,hdc:cdrom,r`: an empty drive.
            self.format = Some("empty".into());
            self.vdev_devtype(tok)?;
        } else if !self.had_prefix && self.format.is_none() {
            if !tok.is_empty() && !FORMATS.contains(&tok) {
                return Err(format!(
                    "`{tok}` is not a disk format (positional parameters are target, format, vdev, access: write `TARGET,,{tok},...`, `TARGET,raw,{tok},...` or `phy:TARGET,{tok},...`)"
                ));
            }
            self.format = Some(tok.to_string());
        } else if self.vdev.is_none() {
            self.vdev_devtype(tok)?;
        } else if self.access.is_none() {
            self.access = Some(tok.to_string());
        } else {
            return Err(format!("too many positional parameters at `{tok}`"));
        }
        Ok(())
    }
}

const FORMATS: &[&str] = &["raw", "qcow", "qcow2", "vhd", "qed", "empty"];

/// Strips xend's deprecated `prefix:` forms off a positional parameter.
fn strip_prefixes<'a>(p: &mut DiskParse, mut tok: &'a str) -> Result<&'a str, String> {
    loop {
        let Some((pre, rest)) = tok.split_once(':') else {
            return Ok(tok);
        };
        match pre {
            "raw" | "qcow" | "qcow2" | "vhd" => {
                DiskParse::set(&mut p.format, "format", pre)?;
            }
            "tapdisk" | "tap" | "tap2" | "aio" | "ioemu" | "file" | "phy" => {}
            "iscsi" | "nbd" | "enbd" | "drbd" => {
                return Err(format!(
                    "`{pre}:` names the block script block-{pre}; hotplug scripts are not supported"
                ))
            }
            _ => {
                // Xen: any other `word:` not followed by a letter or digit is a prefix it
                // does not know; otherwise (`xvda:disk`) it is not a prefix at all.
                let word = !pre.is_empty()
                    && pre.as_bytes()[0].is_ascii_lowercase()
                    && pre
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                let alnum_next = rest
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if word && !alnum_next {
                    return Err(format!("unknown deprecated disk prefix `{pre}:`"));
                }
                return Ok(tok);
            }
        }
        p.had_prefix = true;
        tok = rest;
    }
}

/// Parses one `disk` item (`spec`): Xen's positional form `TARGET,FORMAT,VDEV,ACCESS`,
/// keywords (`format=`, `vdev=`, `access=`, `devtype=`, `backend=`, `backendtype=`,
/// `target=` last, taking the rest of the string with its commas), flags and the
/// deprecated `phy:`/`file:`/`raw:` prefixes.
pub fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    let mut p = DiskParse::default();
    let mut rest = spec;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n']);
        if let Some(t) = rest.strip_prefix("target=") {
            p.target = match p.target.take() {
                Some(old) if !old.is_empty() => {
                    return Err(format!("target specified twice (`{old}` and `{t}`)"))
                }
                _ => Some(t.to_string()),
            };
            break;
        }
        let (tok, next) = match rest.split_once(',') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        if next.is_none() && tok.is_empty() {
            break;
        }
        if let Some((key, val)) = tok.split_once('=') {
            match key {
                "format" => {
                    if !val.is_empty() && !FORMATS.contains(&val) {
                        return Err(format!("unknown disk format `{val}`"));
                    }
                    DiskParse::set(&mut p.format, "format", val)?
                }
                "vdev" => DiskParse::set(&mut p.vdev, "vdev", val)?,
                "access" => DiskParse::set(&mut p.access, "access", val)?,
                "devtype" => match val {
                    "disk" => {}
                    "cdrom" => p.cdrom = true,
                    _ => return Err(format!("unknown devtype `{val}` (only disk)")),
                },
                "backend" => {
                    if !backend_is_dom0(val) {
                        return Err(format!(
                            "backend={val}: only dom0 serves disks (driver domains are not supported)"
                        ));
                    }
                }
                "backendtype" => {
                    if val != "phy" {
                        return Err(format!(
                            "backendtype={val} is not supported (only phy: dom0's xen-blkback)"
                        ));
                    }
                }
                "specification" => {
                    if val != "xen" {
                        return Err(format!("specification={val} is not supported (only xen)"));
                    }
                }
                "script" => {
                    return Err(format!(
                        "script={val}: block hotplug scripts are not supported (xl sets up files and block devices itself)"
                    ))
                }
                _ => return Err(format!("unknown disk parameter `{key}`")),
            }
        } else {
            match tok {
                "cdrom" => p.cdrom = true,
                "discard" => p.discard = Some(true),
                "no-discard" => p.discard = Some(false),
                "direct-io-safe" => p.direct_io_safe = true,
                "trusted" | "untrusted" => {}
                "colo" | "no-colo" => return Err(format!("`{tok}`: COLO is not supported")),
                _ => {
                    let t = strip_prefixes(&mut p, tok)?;
                    p.positional(t)?;
                }
            }
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }

    if p.cdrom {
        return Err("cdrom devices are not supported (PVH guests get disks only)".into());
    }
    match p.format.as_deref().unwrap_or("") {
        "" | "raw" => {}
        "empty" => return Err("format=empty (an empty cdrom) is not supported".into()),
        f => {
            return Err(format!(
                "disk format `{f}` is not supported: only raw images and block devices (no qdisk backend)"
            ))
        }
    }
    let mut target = p.target.unwrap_or_default();
    if target.is_empty() {
        return Err("no target (the image file or block device) given".into());
    }
    if !target.starts_with('/') {
        target = format!("/dev/{target}");
    }
    let vdev = p
        .vdev
        .filter(|v| !v.is_empty())
        .ok_or("no vdev (the guest's disk name, e.g. xvda) given")?;
    let devid = vdev_number(&vdev)?;
    let readonly = match p.access.as_deref().unwrap_or("") {
        "r" | "ro" => true,
        "" | "w" | "rw" => false,
        a => return Err(format!("unknown access `{a}` (r, ro, w or rw)")),
    };
    Ok(DiskSpec {
        target,
        vdev,
        devid,
        readonly,
        discard: p.discard.unwrap_or(true),
        direct_io_safe: p.direct_io_safe,
    })
}

/// Whether `s` is a usable Linux interface name (`IFNAMSIZ` - 1 bytes, no `/`, `:`,
/// whitespace).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Parses one `vif` item: `key=value` pairs separated by commas (`mac`, `bridge`, `ip`,
/// `script`, `type`, `vifname`, `model`, `backend`, `devid`).
pub fn parse_vif(spec: &str) -> Result<VifSpec, String> {
    let mut v = VifSpec {
        devid: None,
        mac: None,
        bridge: "xenbr0".into(),
        ip: None,
        vifname: None,
        script: VIF_BRIDGE_SCRIPT.into(),
    };
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, val)) = item.split_once('=') else {
            return Err(format!("`{item}` is not key=value"));
        };
        let (key, val) = (key.trim(), val.trim());
        match key {
            "mac" => {
                let m = parse_mac(val).ok_or_else(|| format!("bad MAC address `{val}`"))?;
                if m[0] & 1 != 0 {
                    return Err(format!("MAC `{val}` is a multicast address"));
                }
                v.mac = Some(m);
            }
            "bridge" | "netdev" => {
                if !valid_ifname(val) {
                    return Err(format!("bad bridge name `{val}`"));
                }
                v.bridge = val.into();
            }
            "ip" => v.ip = Some(val.into()),
            "vifname" => {
                if !valid_ifname(val) {
                    return Err(format!(
                        "bad vifname `{val}` (1 to 15 characters, no `/` or `:`)"
                    ));
                }
                v.vifname = Some(val.into());
            }
            "script" => {
                let base = val.rsplit('/').next().unwrap_or(val);
                if base != "vif-bridge" {
                    return Err(format!(
                        "script={val}: only bridged vifs are supported (xl bridges them itself; vif-route and vif-nat are not)"
                    ));
                }
                v.script = if val.contains('/') {
                    val.into()
                } else {
                    VIF_BRIDGE_SCRIPT.into()
                };
            }
            "type" => match val {
                "vif" => {}
                "ioemu" => {
                    return Err(
                        "type=ioemu: emulated NICs are not supported (PVH guests use vif)".into(),
                    )
                }
                _ => return Err(format!("unknown vif type `{val}`")),
            },
            // The emulated NIC model only matters to HVM guests: ignored, as libxl does for PVH.
            "model" => {}
            "backend" => {
                if !backend_is_dom0(val) {
                    return Err(format!(
                        "backend={val}: only dom0 serves vifs (driver domains are not supported)"
                    ));
                }
            }
            "devid" => {
                let n = val
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n < 1 << 16)
                    .ok_or_else(|| format!("bad devid `{val}`"))?;
                v.devid = Some(n);
            }
            _ => return Err(format!("unknown or unsupported vif parameter `{key}`")),
        }
    }
    Ok(v)
}
