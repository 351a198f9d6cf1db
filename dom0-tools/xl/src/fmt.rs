//! Xen's xl output formats (list, info, vcpu-list, sched-credit2, uptime, block-list,
//! network-list).

use crate::hv::{DomainInfo, PhysInfo, VcpuInfo};
use std::fmt::Write;
use xen_abi::fvctl::{dominfo, vcpuinfo};
use xen_abi::sched::SHUTDOWN_CRASH;

/// xl's six state letters `rbpscd`, `-` where not set.
pub fn state_letters(d: &DomainInfo) -> String {
    let f = d.flags;
    let shutdown = f & dominfo::SHUTDOWN != 0;
    let crashed = shutdown && d.shutdown_reason == SHUTDOWN_CRASH;
    [
        (f & dominfo::RUNNING != 0, 'r'),
        (f & dominfo::BLOCKED != 0, 'b'),
        (f & dominfo::PAUSED != 0, 'p'),
        (shutdown && !crashed, 's'),
        (crashed, 'c'),
        (f & dominfo::DYING != 0, 'd'),
    ]
    .iter()
    .map(|&(on, c)| if on { c } else { '-' })
    .collect()
}

/// `xl list`: `Name ID Mem VCPUs State Time(s)`.
pub fn list(domains: &[(DomainInfo, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>5} {:>5} {:>5} {:>10} {:>9}",
        "Name", "ID", "Mem", "VCPUs", "State", "Time(s)"
    );
    for (d, name) in domains {
        let _ = writeln!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}",
            name,
            d.domid,
            d.tot_kib >> 10,
            d.online_vcpus,
            state_letters(d),
            d.cpu_time_ns as f64 / 1e9
        );
    }
    out
}

/// `xl list -l`: one JSON object per domain (a subset of what libxl prints).
pub fn list_long(domains: &[(DomainInfo, String, Option<String>)]) -> String {
    let mut out = String::from("[\n");
    for (i, (d, name, config)) in domains.iter().enumerate() {
        let _ = write!(
            out,
            "    {{\n        \"domid\": {},\n        \"name\": {},\n        \"state\": \"{}\",\n        \"memory_kb\": {},\n        \"max_memory_kb\": {},\n        \"vcpus\": {},\n        \"online_vcpus\": {},\n        \"cpu_time\": {:.3},\n        \"weight\": {},\n        \"cap\": {},\n        \"config\": {}\n    }}",
            d.domid,
            json_str(name),
            state_letters(d),
            d.tot_kib,
            d.max_kib,
            d.nr_vcpus,
            d.online_vcpus,
            d.cpu_time_ns as f64 / 1e9,
            d.weight,
            d.cap,
            config.as_deref().map_or("null".to_string(), json_str),
        );
        out.push_str(if i + 1 < domains.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Host facts `xl info` prints besides physinfo.
pub struct HostFacts {
    pub host: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

/// `xl info`: `key                    : value`. Memory in MiB as Xen's, or in KiB with
/// `kib` (`xl info --kib`).
pub fn info(h: &HostFacts, p: &PhysInfo, xen: (u32, u32), kib: bool) -> String {
    let shift = if kib { 0 } else { 10 };
    let virt_caps = match p.virt {
        1 => "hvm hap",
        2 => "hvm hap",
        _ => "",
    };
    let rows: Vec<(&str, String)> = vec![
        ("host", h.host.clone()),
        ("release", h.release.clone()),
        ("version", h.version.clone()),
        ("machine", h.machine.clone()),
        ("nr_cpus", p.nr_cpus.to_string()),
        ("max_cpu_id", p.nr_cpus.saturating_sub(1).to_string()),
        ("nr_nodes", "1".into()),
        (
            "cpu_mhz",
            format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000),
        ),
        ("virt_caps", virt_caps.into()),
        ("total_memory", (p.total_kib >> shift).to_string()),
        ("free_memory", (p.free_kib >> shift).to_string()),
        ("sharing_freed_memory", "0".into()),
        ("sharing_used_memory", "0".into()),
        ("outstanding_claims", "0".into()),
        ("free_cpus", "0".into()),
        ("xen_major", xen.0.to_string()),
        ("xen_minor", xen.1.to_string()),
        ("xen_extra", "-ferrovisor".into()),
        ("xen_version", format!("{}.{}-ferrovisor", xen.0, xen.1)),
        ("xen_caps", "hvm-3.0-x86_64".into()),
        ("xen_scheduler", "credit2".into()),
        ("xen_pagesize", "4096".into()),
        ("nr_domains", p.nr_domains.to_string()),
        ("xen_uptime", format_uptime(p.uptime_ns / 1_000_000_000)),
        ("xend_config_format", "4".into()),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<23}: {v}");
    }
    out
}

/// An affinity mask as xl prints it: `all`, or ranges `0-1,4`.
pub fn cpumask(mask: u64, nr_cpus: u32) -> String {
    let all = if nr_cpus >= 64 {
        u64::MAX
    } else {
        (1u64 << nr_cpus) - 1
    };
    if mask & all == all || mask == u64::MAX {
        return "all".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 64 {
        if mask & (1 << i) != 0 {
            let start = i;
            while i + 1 < 64 && mask & (1 << (i + 1)) != 0 {
                i += 1;
            }
            parts.push(if start == i {
                start.to_string()
            } else {
                format!("{start}-{i}")
            });
        }
        i += 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

pub fn vcpu_list_header() -> String {
    format!(
        "{:<32} {:>5} {:>5} {:>5} {:>5} {:>9} {}\n",
        "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)"
    )
}

pub fn vcpu_list_row(name: &str, domid: u16, v: &VcpuInfo, nr_cpus: u32) -> String {
    let online = v.flags & vcpuinfo::ONLINE != 0;
    let cpu = if online {
        v.cpu.to_string()
    } else {
        "-".into()
    };
    let state = if !online {
        "---"
    } else if v.flags & vcpuinfo::RUNNING != 0 {
        "r--"
    } else if v.flags & vcpuinfo::BLOCKED != 0 {
        "-b-"
    } else {
        "---"
    };
    format!(
        "{:<32} {:>5} {:>5} {:>5} {:>5}  {:>9.1}  {} / {}\n",
        name,
        domid,
        v.vcpu,
        cpu,
        state,
        v.cpu_time_ns as f64 / 1e9,
        cpumask(v.hard_affinity, nr_cpus),
        cpumask(v.soft_affinity, nr_cpus)
    )
}

pub fn sched_header() -> String {
    format!(
        "Cpupool Pool-0: ratelimit=1000us\n{:<33} {:>4} {:>6} {:>4}\n",
        "Name", "ID", "Weight", "Cap"
    )
}

pub fn sched_row(name: &str, domid: u16, weight: u16, cap: u16) -> String {
    format!("{name:<33} {domid:>4} {weight:>6} {cap:>4}\n")
}

/// `[D day[s], ]H:MM:SS`, as xl uptime prints.
pub fn format_uptime(secs: u64) -> String {
    let days = secs / 86400;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    match days {
        0 => format!("{h}:{m:02}:{s:02}"),
        1 => format!("1 day, {h}:{m:02}:{s:02}"),
        d => format!("{d} days, {h}:{m:02}:{s:02}"),
    }
}

pub fn uptime(rows: &[(String, u16, u64)]) -> String {
    let mut out = format!("{:<33} {:>4} {}\n", "Name", "ID", "Uptime");
    for (name, id, secs) in rows {
        let _ = writeln!(out, "{name:<33} {id:>4} {:>8}", format_uptime(*secs));
    }
    out
}

/// `xl block-list`'s header (xl_block.c `main_blocklist`).
pub fn block_list_header() -> String {
    format!(
        "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}\n",
        "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"
    )
}

/// One `xl block-list` row: the handle column is the frontend domain, as in xl.
pub fn block_list_row(d: &crate::device::DevInfo) -> String {
    format!(
        "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}\n",
        d.devid, d.backend_id, d.frontend_id, d.state, d.evtch, d.rref, d.be_path
    )
}

/// `xl network-list`'s header (xl_nic.c `main_networklist`).
pub fn network_list_header() -> String {
    format!(
        "{:<3} {:<2} {:<17} {:<6} {:<5} {:<6} {:>5}/{:<5} {:<30}\n",
        "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path"
    )
}

/// One `xl network-list` row (xl prints the MAC with no space before the handle).
pub fn network_list_row(d: &crate::device::DevInfo) -> String {
    format!(
        "{:<3} {:<2} {}{:>6} {:>5} {:>6} {:>5}/{:<11} {:<30}\n",
        d.devid, d.backend_id, d.mac, d.devid, d.state, d.evtch, d.rref_tx, d.rref_rx, d.be_path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(domid: u16, flags: u32) -> DomainInfo {
        DomainInfo {
            domid,
            flags,
            tot_kib: 512 << 10,
            online_vcpus: 2,
            cpu_time_ns: 12_340_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn list_matches_xl_columns() {
        let out = list(&[
            (
                dom(0, dominfo::RUNNING | dominfo::CONTROL),
                "Domain-0".into(),
            ),
            (dom(3, dominfo::PAUSED), "guest".into()),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "Name                                        ID   Mem VCPUs      State   Time(s)"
        );
        assert_eq!(
            lines[1],
            "Domain-0                                     0   512     2     r-----      12.3"
        );
        assert_eq!(
            lines[2],
            "guest                                        3   512     2     --p---      12.3"
        );
    }

    #[test]
    fn state_letters_cover_every_state() {
        let mut d = dom(1, dominfo::SHUTDOWN);
        d.shutdown_reason = 0;
        assert_eq!(state_letters(&d), "---s--");
        d.shutdown_reason = SHUTDOWN_CRASH;
        assert_eq!(state_letters(&d), "----c-");
        assert_eq!(
            state_letters(&dom(1, dominfo::BLOCKED | dominfo::DYING)),
            "-b---d"
        );
    }

    #[test]
    fn info_lines_are_key_colon_value() {
        let h = HostFacts {
            host: "dom0".into(),
            release: "6.1.0-18-amd64".into(),
            version: "#1 SMP".into(),
            machine: "x86_64".into(),
        };
        let p = PhysInfo {
            nr_cpus: 2,
            cpu_khz: 2_400_500,
            total_kib: 4 << 20,
            free_kib: 1 << 20,
            virt: 1,
            nr_domains: 1,
            uptime_ns: 90_061_000_000_000,
        };
        let out = info(&h, &p, (4, 19), false);
        assert!(out.contains("\nrelease                : 6.1.0-18-amd64\n"));
        assert!(out.contains("\nnr_cpus                : 2\n"));
        assert!(out.contains("\ntotal_memory           : 4096\n"));
        assert!(out.contains("\nfree_memory            : 1024\n"));
        assert!(out.contains("\nxen_major              : 4\n"));
        assert!(out.contains("\nxen_minor              : 19\n"));
        assert!(out.contains("\nvirt_caps              : hvm hap\n"));
        assert!(out.contains("\ncpu_mhz                : 2400.500\n"));
        assert!(out.contains("1 day, 1:01:01"));
        for l in out.lines() {
            assert_eq!(&l[23..25], ": ", "{l}");
        }
        let kib = info(&h, &p, (4, 19), true);
        assert!(kib.contains("\ntotal_memory           : 4194304\n"));
        assert!(kib.contains("\nfree_memory            : 1048576\n"));
    }

    #[test]
    fn cpumasks_and_uptimes() {
        assert_eq!(cpumask(u64::MAX, 2), "all");
        assert_eq!(cpumask(0b11, 2), "all");
        assert_eq!(cpumask(0b1, 2), "0");
        assert_eq!(cpumask(0b1101, 8), "0,2-3");
        assert_eq!(cpumask(0, 8), "none");
        assert_eq!(format_uptime(59), "0:00:59");
        assert_eq!(format_uptime(3 * 86400 + 3723), "3 days, 1:02:03");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
        let out = list_long(&[(dom(1, 0), "x".into(), Some("name='x'\n".into()))]);
        assert!(out.contains("\"config\": \"name='x'\\n\""));
        assert!(out.starts_with("[\n") && out.ends_with("]\n"));
    }

    #[test]
    fn vcpu_and_sched_rows() {
        let v = VcpuInfo {
            vcpu: 1,
            flags: vcpuinfo::ONLINE | vcpuinfo::BLOCKED,
            cpu: 0,
            _pad: 0,
            cpu_time_ns: 2_500_000_000,
            hard_affinity: 1,
            soft_affinity: u64::MAX,
        };
        let r = vcpu_list_row("g", 2, &v, 2);
        assert!(
            r.starts_with("g                                    2     1     0   -b-"),
            "{r}"
        );
        assert!(r.ends_with("0 / all\n"), "{r}");
        assert_eq!(
            sched_row("g", 2, 256, 0),
            "g                                    2    256    0\n"
        );
    }
}
