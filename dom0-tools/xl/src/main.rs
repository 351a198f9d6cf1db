//! `xl`: ferrovisor's admin tool, with Xen's verbs, output formats and xl.cfg syntax.
#![deny(unsafe_code)]

mod backend;
mod console;
mod create;
mod device;
mod fmt;
mod hotplug;
mod hv;
mod image;
mod kcache;
mod linux;
mod monitor;
mod store;
mod tty;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hv::Hv;
use std::io::Write;
use std::time::Duration;
use store::Store;

/// The hypervisor version xl reports (ferrovisor answers XENVER_version as Xen 4.19).
const XEN_VERSION: (u32, u32) = (4, 19);

#[derive(Parser)]
#[command(
    name = "xl",
    about = "ferrovisor's domain admin tool (Xen's xl verbs)",
    version
)]
struct Cli {
    /// Verbose: `create` reports how long reading the kernel and building the domain
    /// took, and whether the kernel came from xl's cache.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `-v` given.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn verbose() -> bool {
    VERBOSE.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a domain from an xl.cfg file; trailing key=value override its settings.
    Create {
        /// Attach to the console after starting.
        #[arg(short = 'c')]
        console: bool,
        /// Leave the domain paused.
        #[arg(short = 'p')]
        paused: bool,
        /// Do not start the background monitor (on_poweroff etc. are not acted on).
        #[arg(long = "no-monitor")]
        no_monitor: bool,
        config: String,
        overrides: Vec<String>,
    },
    /// List domains.
    List {
        /// Long (JSON) output.
        #[arg(short = 'l')]
        long: bool,
        domains: Vec<String>,
    },
    /// Destroy a domain at once.
    Destroy {
        domain: String,
    },
    /// Ask a domain to shut down (through xenstore control/shutdown).
    Shutdown {
        /// Wait until it is gone.
        #[arg(short = 'w')]
        wait: bool,
        domain: String,
    },
    /// Ask a domain to reboot.
    Reboot {
        #[arg(short = 'w')]
        wait: bool,
        domain: String,
    },
    Pause {
        domain: String,
    },
    Unpause {
        domain: String,
    },
    /// Attach to a domain's console (Ctrl-] detaches).
    Console {
        /// Console type (only `pv`).
        #[arg(short = 't')]
        ty: Option<String>,
        domain: String,
    },
    /// Set a domain's memory target (`memory/target`, which its balloon driver follows):
    /// `mem-set DOMAIN SIZE`, SIZE in MiB or with a suffix (`b`, `k`, `m`, `g`, `t`).
    #[command(name = "mem-set")]
    MemSet {
        domain: String,
        memory: String,
    },
    /// Host and hypervisor facts.
    Info {
        /// Memory figures in KiB instead of MiB (a ferrovisor extension: exact to the
        /// frame, for tests that check every frame came back).
        #[arg(long = "kib")]
        kib: bool,
    },
    /// The hypervisor's console ring.
    Dmesg,
    /// vCPUs of every (or the given) domain.
    #[command(name = "vcpu-list")]
    VcpuList {
        domains: Vec<String>,
    },
    /// Pin vCPUs: `vcpu-pin DOM VCPU|all HARD [SOFT]`.
    #[command(name = "vcpu-pin")]
    VcpuPin {
        domain: String,
        vcpu: String,
        hard: String,
        soft: Option<String>,
    },
    /// Show or set credit2 scheduler parameters.
    #[command(name = "sched-credit2")]
    SchedCredit2 {
        #[arg(short = 'd')]
        domain: Option<String>,
        #[arg(short = 'w')]
        weight: Option<u16>,
        #[arg(short = 'c')]
        cap: Option<u16>,
    },
    /// Domain uptimes.
    Uptime {
        domains: Vec<String>,
    },
    /// Attach a disk: `block-attach DOMAIN DISKSPEC...` (xl.cfg disk syntax; several
    /// arguments are joined with commas).
    #[command(name = "block-attach")]
    BlockAttach {
        domain: String,
        #[arg(required = true, allow_hyphen_values = true)]
        spec: Vec<String>,
    },
    /// Detach a disk by vdev (xvdb) or device number.
    #[command(name = "block-detach")]
    BlockDetach {
        /// Do not wait for the guest: remove it at once.
        #[arg(short = 'f')]
        force: bool,
        domain: String,
        vdev: String,
    },
    /// List the disks of domains.
    #[command(name = "block-list")]
    BlockList {
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Attach a vif: `network-attach DOMAIN [mac=..] [bridge=..] [ip=..] ...`.
    #[command(name = "network-attach")]
    NetworkAttach {
        domain: String,
        settings: Vec<String>,
    },
    /// Detach a vif by devid or MAC.
    #[command(name = "network-detach")]
    NetworkDetach {
        domain: String,
        dev: String,
    },
    /// List the vifs of domains.
    #[command(name = "network-list")]
    NetworkList {
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// (internal) the per-domain monitor `create` starts.
    #[command(name = "__monitor", hide = true)]
    Monitor {
        domid: u16,
        config: String,
        overrides: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("xl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    VERBOSE.store(cli.verbose > 0, std::sync::atomic::Ordering::Relaxed);
    match cli.cmd {
        Cmd::Create {
            console,
            paused,
            no_monitor,
            config,
            overrides,
        } => {
            eprintln!("Parsing config from {config}");
            let prepared = prepare(&config, &overrides)?;
            let (mut hv, mut st) = (backend::open_hv()?, backend::open_store()?);
            let c = cmd_create(
                &mut *hv,
                &mut *st,
                &mut hotplug::RealHost,
                &prepared,
                paused,
                &[],
            )?;
            if !no_monitor {
                monitor::spawn(c, &config, &overrides)?;
            }
            if console {
                console::attach(c, Duration::from_secs(5))?;
            }
            Ok(())
        }
        Cmd::Monitor {
            domid,
            config,
            overrides,
        } => monitor::run(domid, &config, &overrides),
        cmd => {
            let (mut hv, mut st) = (backend::open_hv()?, backend::open_store()?);
            simple(&mut *hv, &mut *st, &mut hotplug::RealHost, cmd)
        }
    }
}

/// Reads the config and its files and creates the domain; returns its id.
pub struct Prepared {
    text: String,
    cfg: xlcfg::DomainConfig,
    kernel: Vec<u8>,
    ramdisk: Option<Vec<u8>>,
}

/// Reads and checks the config and the files it names (before touching any domain).
pub fn prepare(path: &str, overrides: &[String]) -> Result<Prepared> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let cfg = xlcfg::parse_with_overrides(path, &text, overrides)?;
    for w in &cfg.warnings {
        eprintln!("xl: warning: {path}: {w}");
    }
    cfg.check_supported().map_err(anyhow::Error::msg)?;
    // The kernel's ELF image: a bzImage is decompressed here, or taken from xl's cache
    // of earlier decompressions (kcache.rs).
    let (kernel, source, ms) = kcache::load_timed(&cfg.kernel, std::path::Path::new(kcache::DIR))
        .with_context(|| format!("reading kernel {}", cfg.kernel))?;
    if verbose() {
        eprintln!("xl: kernel {}: {source:?} in {ms} ms", cfg.kernel);
    }
    let ramdisk = match &cfg.ramdisk {
        Some(r) => Some(std::fs::read(r).with_context(|| format!("reading ramdisk {r}"))?),
        None => None,
    };
    Ok(Prepared {
        text,
        cfg,
        kernel,
        ramdisk,
    })
}

/// Creates the domain from a prepared config; returns its id. Vifs without a MAC in the
/// config get the one `keep` gives for their devid, else a random one.
pub fn cmd_create(
    hv: &mut dyn Hv,
    st: &mut dyn Store,
    host: &mut dyn hotplug::Host,
    p: &Prepared,
    paused: bool,
    keep: &[(u32, [u8; 6])],
) -> Result<u16> {
    let mut macs = std::collections::BTreeMap::new();
    for v in &p.cfg.vifs {
        let id = v.devid.unwrap_or(0);
        let kept = keep.iter().find(|(k, _)| *k == id).map(|(_, m)| *m);
        macs.insert(id, kept.unwrap_or_else(random_mac));
    }
    let inputs = create::Inputs {
        kernel: &p.kernel,
        ramdisk: p.ramdisk.as_deref(),
        fresh_uuid: random_uuid(),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        macs,
    };
    let t = std::time::Instant::now();
    let c = create::create(hv, st, host, &p.cfg, &inputs, paused)?;
    if verbose() {
        eprintln!(
            "xl: domain {} built in {} ms",
            c.domid,
            t.elapsed().as_millis()
        );
    }
    let _ = st.write(&format!("/libxl/{}/xl-config", c.domid), p.text.as_bytes());
    Ok(c.domid)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut u = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut u);
    }
    u
}

/// A random MAC in Xen's OUI, as libxl makes them.
fn random_mac() -> [u8; 6] {
    xlcfg::device::xen_mac(random_bytes())
}

/// A version-4 UUID from the kernel's random source.
fn random_uuid() -> [u8; 16] {
    let mut u: [u8; 16] = random_bytes();
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn host_facts() -> fmt::HostFacts {
    let rd = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    fmt::HostFacts {
        host: rd("/proc/sys/kernel/hostname"),
        release: rd("/proc/sys/kernel/osrelease"),
        version: rd("/proc/sys/kernel/version"),
        machine: std::env::consts::ARCH.to_string(),
    }
}

fn domains_or_all(hv: &mut dyn Hv, st: &mut dyn Store, names: &[String]) -> Result<Vec<u16>> {
    if names.is_empty() {
        Ok(hv.list_domains()?.iter().map(|d| d.domid).collect())
    } else {
        names.iter().map(|n| create::resolve(hv, st, n)).collect()
    }
}

fn wait_gone(hv: &mut dyn Hv, domid: u16) -> Result<()> {
    loop {
        match hv.domain_info(domid)? {
            Some(d) if d.domid == domid && d.flags & xen_abi::fvctl::dominfo::SHUTDOWN == 0 => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => return Ok(()),
        }
    }
}

/// A domain given on the command line that devices may be attached to.
/// dom0 may not be set below this (libxl's `LIBXL_MIN_DOM0_MEM`).
const MIN_DOM0_KIB: u64 = 128 << 10;

/// A size as xl takes it: a number with an optional unit suffix (`b`, `k`, `m`, `g`, `t`,
/// either case), MiB without one; in KiB (bytes rounded down).
fn parse_mem_kib(s: &str) -> Result<u64> {
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 'm'),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid memory size `{s}`"))?;
    let kib = match unit {
        'b' => Some(n / 1024),
        'k' => Some(n),
        'm' => n.checked_mul(1 << 10),
        'g' => n.checked_mul(1 << 20),
        't' => n.checked_mul(1 << 30),
        _ => bail!("invalid memory size `{s}` (units: b, k, m, g, t)"),
    };
    kib.with_context(|| format!("memory size `{s}` too large"))
}

/// `xl mem-set`: checks the target as libxl does (not below dom0's minimum, not above
/// the domain's maximum) and writes it to `memory/target`, where the domain's balloon
/// driver picks it up. The hypervisor's maximum itself is not changed (there is no
/// toolstack call for it yet), so a target above it is refused rather than raised.
fn mem_set(hv: &mut dyn Hv, st: &mut dyn Store, id: u16, kib: u64) -> Result<()> {
    let Some(d) = hv.domain_info(id)?.filter(|d| d.domid == id) else {
        bail!("domain {id} does not exist");
    };
    if id == 0 && kib < MIN_DOM0_KIB {
        bail!("new target {kib} KiB for dom0 is below the minimum threshold ({MIN_DOM0_KIB} KiB)");
    }
    if kib > d.max_kib {
        bail!(
            "memory_dynamic_max must be less than or equal to memory_static_max \
             ({kib} KiB > {} KiB)",
            d.max_kib
        );
    }
    st.write(
        &format!("/local/domain/{id}/memory/target"),
        kib.to_string().as_bytes(),
    )
    .with_context(|| format!("writing domain {id}'s memory target"))?;
    Ok(())
}

fn guest(hv: &mut dyn Hv, st: &mut dyn Store, spec: &str) -> Result<u16> {
    let id = create::resolve(hv, st, spec)?;
    if id == 0 {
        bail!("Domain-0 has no virtual devices (it owns the real ones)");
    }
    Ok(id)
}

fn simple(
    hv: &mut dyn Hv,
    st: &mut dyn Store,
    host: &mut dyn hotplug::Host,
    cmd: Cmd,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::List { long, domains } => {
            let ids = domains_or_all(hv, st, &domains)?;
            let mut rows = Vec::new();
            for id in ids {
                if let Some(d) = hv.domain_info(id)?.filter(|d| d.domid == id) {
                    let mut name = create::domain_name(st, id);
                    if name.is_empty() {
                        name = hv::info_name(&d);
                    }
                    rows.push((d, name));
                }
            }
            if long {
                let rows: Vec<_> = rows
                    .into_iter()
                    .map(|(d, n)| {
                        let cfg = st
                            .read_str(&format!("/libxl/{}/xl-config", d.domid))
                            .ok()
                            .flatten();
                        (d, n, cfg)
                    })
                    .collect();
                write!(out, "{}", fmt::list_long(&rows))?;
            } else {
                write!(out, "{}", fmt::list(&rows))?;
            }
        }
        Cmd::Destroy { domain } => {
            let id = create::resolve(hv, st, &domain)?;
            if id == 0 {
                bail!("refusing to destroy Domain-0");
            }
            for e in create::teardown(hv, st, host, id) {
                eprintln!("xl: warning: domain {id}: {e}");
            }
            if hv
                .domain_info(id)?
                .is_some_and(|d| d.domid == id && d.flags & xen_abi::fvctl::dominfo::DYING == 0)
            {
                bail!("domain {id} could not be destroyed");
            }
        }
        Cmd::Shutdown { wait, domain } => request(hv, st, &domain, "poweroff", wait)?,
        Cmd::Reboot { wait, domain } => request(hv, st, &domain, "reboot", wait)?,
        Cmd::Pause { domain } => {
            let id = create::resolve(hv, st, &domain)?;
            hv.pause(id)
                .with_context(|| format!("pausing domain {id}"))?;
        }
        Cmd::Unpause { domain } => {
            let id = create::resolve(hv, st, &domain)?;
            hv.unpause(id)
                .with_context(|| format!("unpausing domain {id}"))?;
        }
        Cmd::Console { ty, domain } => {
            if ty.as_deref().is_some_and(|t| t != "pv") {
                bail!("only the pv console exists");
            }
            let id = create::resolve(hv, st, &domain)?;
            if id == 0 {
                bail!("Domain-0's console is the hypervisor's serial line (see xl dmesg)");
            }
            console::attach(id, Duration::from_secs(0))?;
        }
        Cmd::MemSet { domain, memory } => {
            let id = create::resolve(hv, st, &domain)?;
            let kib = parse_mem_kib(&memory)?;
            mem_set(hv, st, id, kib)?;
        }
        Cmd::Info { kib } => {
            let p = hv.physinfo()?;
            write!(out, "{}", fmt::info(&host_facts(), &p, XEN_VERSION, kib))?;
        }
        Cmd::Dmesg => {
            let mut pos = 0;
            loop {
                let (bytes, next) = hv.console_read(pos, 64 << 10)?;
                if bytes.is_empty() || next <= pos {
                    break;
                }
                out.write_all(&bytes)?;
                pos = next;
            }
        }
        Cmd::VcpuList { domains } => {
            let nr = hv.physinfo()?.nr_cpus;
            write!(out, "{}", fmt::vcpu_list_header())?;
            for id in domains_or_all(hv, st, &domains)? {
                let Some(d) = hv.domain_info(id)?.filter(|d| d.domid == id) else {
                    continue;
                };
                let name = create::domain_name(st, id);
                for v in 0..d.nr_vcpus {
                    let vi = hv.vcpu_info(id, v)?;
                    write!(out, "{}", fmt::vcpu_list_row(&name, id, &vi, nr))?;
                }
            }
        }
        Cmd::VcpuPin {
            domain,
            vcpu,
            hard,
            soft,
        } => {
            let id = create::resolve(hv, st, &domain)?;
            let d = hv.domain_info(id)?.context("domain vanished")?;
            let vcpus: Vec<u32> = if vcpu == "all" {
                (0..d.nr_vcpus).collect()
            } else {
                let v: u32 = vcpu.parse().with_context(|| format!("bad vCPU `{vcpu}`"))?;
                if v >= d.nr_vcpus {
                    bail!("domain {id} has no vCPU {v} (it has {})", d.nr_vcpus);
                }
                vec![v]
            };
            let mask = |s: &str| -> Result<Option<u64>> {
                if s == "-" {
                    return Ok(None);
                }
                xlcfg::parse_cpuset(s).map(Some).map_err(anyhow::Error::msg)
            };
            let hard = mask(&hard)?;
            let soft = soft.as_deref().map(mask).transpose()?.flatten();
            for v in vcpus {
                let cur = hv.vcpu_info(id, v)?;
                hv.set_affinity(
                    id,
                    v,
                    hard.unwrap_or(cur.hard_affinity),
                    soft.unwrap_or(cur.soft_affinity),
                )
                .with_context(|| format!("pinning vCPU {v} of domain {id}"))?;
            }
        }
        Cmd::SchedCredit2 {
            domain,
            weight,
            cap,
        } => match domain {
            Some(dom) => {
                let id = create::resolve(hv, st, &dom)?;
                if weight.is_some() || cap.is_some() {
                    if weight == Some(0) {
                        bail!("weight must be 1..65535");
                    }
                    let cur = hv.sched_get(id)?;
                    hv.sched_set(id, weight.unwrap_or(cur.weight), cap.unwrap_or(cur.cap))?;
                } else {
                    let p = hv.sched_get(id)?;
                    write!(out, "{}", fmt::sched_header())?;
                    write!(
                        out,
                        "{}",
                        fmt::sched_row(&create::domain_name(st, id), id, p.weight, p.cap)
                    )?;
                }
            }
            None => {
                if weight.is_some() || cap.is_some() {
                    bail!("-w and -c need -d DOMAIN");
                }
                write!(out, "{}", fmt::sched_header())?;
                for d in hv.list_domains()? {
                    let p = hv.sched_get(d.domid)?;
                    let name = create::domain_name(st, d.domid);
                    write!(out, "{}", fmt::sched_row(&name, d.domid, p.weight, p.cap))?;
                }
            }
        },
        Cmd::Uptime { domains } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let host_up = hv.physinfo()?.uptime_ns / 1_000_000_000;
            let mut rows = Vec::new();
            for id in domains_or_all(hv, st, &domains)? {
                let name = create::domain_name(st, id);
                let started = st
                    .read_str(&format!("/local/domain/{id}/vm"))
                    .ok()
                    .flatten()
                    .and_then(|vm| st.read_str(&format!("{vm}/start_time")).ok().flatten())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let up = match started {
                    Some(t) => now.saturating_sub(t),
                    None => host_up,
                };
                rows.push((name, id, up));
            }
            write!(out, "{}", fmt::uptime(&rows))?;
        }
        Cmd::BlockAttach { domain, spec } => {
            let id = guest(hv, st, &domain)?;
            let spec = spec.join(",");
            let d = xlcfg::device::parse_disk(&spec)
                .map_err(|e| anyhow::anyhow!("disk `{spec}`: {e}"))?;
            device::add_disk(st, host, id, &d)?;
        }
        Cmd::BlockDetach {
            force,
            domain,
            vdev,
        } => {
            let id = guest(hv, st, &domain)?;
            let devid = device::find_disk(st, id, &vdev)?;
            let f = if force {
                device::Force::On
            } else {
                device::Force::Off
            };
            device::remove(st, host, id, device::Kind::Vbd, devid, f)?;
        }
        Cmd::BlockList { domains } => {
            write!(out, "{}", fmt::block_list_header())?;
            for d in domains {
                match create::resolve(hv, st, &d) {
                    Ok(id) => {
                        for i in device::list(st, id, device::Kind::Vbd)? {
                            write!(out, "{}", fmt::block_list_row(&i))?;
                        }
                    }
                    Err(_) => eprintln!("{d} is an invalid domain identifier"),
                }
            }
        }
        Cmd::NetworkAttach { domain, settings } => {
            let id = guest(hv, st, &domain)?;
            let spec = settings.join(",");
            let v = xlcfg::device::parse_vif(&spec)
                .map_err(|e| anyhow::anyhow!("vif `{spec}`: {e}"))?;
            let devid = match v.devid {
                Some(n) => n,
                None => device::next_vif_devid(st, id)?,
            };
            let mac = v.mac.unwrap_or_else(random_mac);
            device::add_vif(st, host, id, &v, devid, mac)?;
        }
        Cmd::NetworkDetach { domain, dev } => {
            let id = guest(hv, st, &domain)?;
            let devid = device::find_vif(st, id, &dev)?;
            device::remove(st, host, id, device::Kind::Vif, devid, device::Force::Auto)?;
        }
        Cmd::NetworkList { domains } => {
            write!(out, "{}", fmt::network_list_header())?;
            for d in domains {
                match create::resolve(hv, st, &d) {
                    Ok(id) => {
                        for i in device::list(st, id, device::Kind::Vif)? {
                            write!(out, "{}", fmt::network_list_row(&i))?;
                        }
                    }
                    Err(_) => eprintln!("{d} is an invalid domain identifier"),
                }
            }
        }
        Cmd::Create { .. } | Cmd::Monitor { .. } => unreachable!("handled in run"),
    }
    Ok(())
}

/// shutdown/reboot: write the request where Linux's xenbus watches for it.
fn request(
    hv: &mut dyn Hv,
    st: &mut dyn Store,
    domain: &str,
    what: &str,
    wait: bool,
) -> Result<()> {
    let id = create::resolve(hv, st, domain)?;
    if id == 0 {
        bail!("refusing to {what} Domain-0 from xl");
    }
    let path = format!("/local/domain/{id}/control/shutdown");
    st.write(&path, what.as_bytes())
        .with_context(|| format!("asking domain {id} to {what}"))?;
    if wait {
        eprintln!("Waiting for 1 domains");
        wait_gone(hv, id)?;
        eprintln!("Domain {id} has been shut down");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotplug::fake::FakeHost;
    use crate::hv::fake::FakeHv;
    use crate::store::MemStore;

    fn world() -> (FakeHv, MemStore) {
        let mut hv = FakeHv::new(1024);
        let mut st = MemStore::default();
        let k = image::tests::tiny_kernel(&[0x90; 16], 16, Some(0x10_0000));
        let cfg =
            xlcfg::parse_with_overrides("t", "name='g'\nkernel='k'\nmemory=16\n", &[]).unwrap();
        let inputs = create::Inputs {
            kernel: &k,
            ramdisk: None,
            fresh_uuid: [1; 16],
            now: 0,
            macs: Default::default(),
        };
        create::create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg,
            &inputs,
            false,
        )
        .unwrap();
        (hv, st)
    }

    fn cli(args: &[&str]) -> Cmd {
        Cli::try_parse_from(std::iter::once("xl").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn shutdown_and_reboot_write_the_control_node() {
        let (mut hv, mut st) = world();
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["shutdown", "g"]),
        )
        .unwrap();
        assert_eq!(
            st.value("/local/domain/1/control/shutdown").unwrap(),
            "poweroff"
        );
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["reboot", "1"]),
        )
        .unwrap();
        assert_eq!(
            st.value("/local/domain/1/control/shutdown").unwrap(),
            "reboot"
        );
        // -w returns once the domain has shut down.
        hv.shutdown(1, 0).unwrap();
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["shutdown", "-w", "g"]),
        )
        .unwrap();
        assert!(simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["shutdown", "nosuch"])
        )
        .is_err());
        assert!(simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["shutdown", "0"])
        )
        .is_err());
    }

    #[test]
    fn mem_set_writes_the_target_within_the_limits() {
        let (mut hv, mut st) = world();
        let mut run = |args: &[&str]| simple(&mut hv, &mut st, &mut FakeHost::default(), cli(args));
        run(&["mem-set", "g", "12"]).unwrap();
        run(&["mem-set", "1", "8192k"]).unwrap();
        assert!(run(&["mem-set", "g", "17m"]).is_err(), "above the maximum");
        assert!(run(&["mem-set", "g", "12x"]).is_err());
        assert!(run(&["mem-set", "g", "99999999999999t"]).is_err());
        assert!(run(&["mem-set", "0", "64m"]).is_err(), "dom0 below 128 MiB");
        assert!(run(&["mem-set", "nosuch", "12"]).is_err());
        assert_eq!(st.value("/local/domain/1/memory/target").unwrap(), "8192");
        assert_eq!(parse_mem_kib("1g").unwrap(), 1 << 20);
        assert_eq!(parse_mem_kib("4096B").unwrap(), 4);
    }

    #[test]
    fn destroy_pause_sched_pin() {
        let (mut hv, mut st) = world();
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["pause", "g"]),
        )
        .unwrap();
        assert_eq!(hv.domains[&1].pause, 1);
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["unpause", "g"]),
        )
        .unwrap();
        assert_eq!(hv.domains[&1].pause, 0);
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["sched-credit2", "-d", "g", "-w", "512"]),
        )
        .unwrap();
        assert_eq!(hv.domains[&1].info.weight, 512);
        assert!(simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["sched-credit2", "-w", "5"])
        )
        .is_err());
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["vcpu-pin", "g", "0", "0-1"]),
        )
        .unwrap();
        assert!(hv
            .calls
            .iter()
            .any(|c| c == "set_affinity 1 0 0x3 0xffffffffffffffff"));
        assert!(simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["vcpu-pin", "g", "3", "0"])
        )
        .is_err());
        assert!(simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["destroy", "0"])
        )
        .is_err());
        simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["destroy", "g"]),
        )
        .unwrap();
        assert!(!hv.domains.contains_key(&1));
        assert!(st.value("/local/domain/1/name").is_none());
        assert!(simple(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            cli(&["destroy", "g"])
        )
        .is_err());
    }

    #[test]
    fn device_verbs() {
        let (mut hv, mut st) = world();
        st.sim_backends = true;
        let mut host = FakeHost::default();
        let mut run = |hv: &mut FakeHv, st: &mut MemStore, args: &[&str]| {
            simple(hv, st, &mut host, cli(args))
        };
        // Xen's multi-argument form is joined with commas.
        run(
            &mut hv,
            &mut st,
            &["block-attach", "g", "/img/a.img", "raw", "xvdb", "r"],
        )
        .unwrap();
        let be = "/local/domain/0/backend/vbd/1/51728";
        assert_eq!(st.value(&format!("{be}/mode")).unwrap(), "r");
        run(
            &mut hv,
            &mut st,
            &[
                "block-attach",
                "1",
                "format=raw, vdev=xvdc, target=/dev/sdb",
            ],
        )
        .unwrap();
        let e = run(
            &mut hv,
            &mut st,
            &["block-attach", "g", "/img/a.img,qcow2,xvdd"],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("disk format `qcow2` is not supported"),
            "{e}"
        );
        let e = run(&mut hv, &mut st, &["block-attach", "0", "/img/a.img,,xvdd"]).unwrap_err();
        assert!(
            e.to_string().contains("Domain-0 has no virtual devices"),
            "{e}"
        );
        run(&mut hv, &mut st, &["block-list", "g", "nosuch"]).unwrap();
        run(&mut hv, &mut st, &["block-detach", "g", "xvdb"]).unwrap();
        assert!(st.value(&format!("{be}/state")).is_none());
        run(&mut hv, &mut st, &["block-detach", "-f", "g", "51744"]).unwrap();
        assert!(run(&mut hv, &mut st, &["block-detach", "g", "xvdb"]).is_err());
        assert!(Cli::try_parse_from(["xl", "block-attach", "g"]).is_err());
        assert!(Cli::try_parse_from(["xl", "block-list"]).is_err());

        run(
            &mut hv,
            &mut st,
            &["network-attach", "g", "bridge=br9", "mac=00:16:3e:0:0:7"],
        )
        .unwrap();
        run(&mut hv, &mut st, &["network-attach", "g"]).unwrap();
        let mac1 = st.value("/local/domain/1/device/vif/1/mac").unwrap();
        assert!(mac1.starts_with("00:16:3e:"), "{mac1}");
        assert_eq!(
            st.value("/local/domain/0/backend/vif/1/0/bridge").unwrap(),
            "br9"
        );
        let e = run(&mut hv, &mut st, &["network-attach", "g", "rate=1Mb/s"]).unwrap_err();
        assert!(e.to_string().contains("parameter `rate`"), "{e}");
        run(&mut hv, &mut st, &["network-list", "g"]).unwrap();
        run(
            &mut hv,
            &mut st,
            &["network-detach", "g", "00:16:3e:00:00:07"],
        )
        .unwrap();
        run(&mut hv, &mut st, &["network-detach", "g", "1"]).unwrap();
        assert!(run(&mut hv, &mut st, &["network-detach", "g", "1"]).is_err());
        let left: Vec<_> = st.nodes.keys().filter(|k| k.contains("backend")).collect();
        assert!(left.is_empty(), "{left:?}");
        // destroy takes devices down with the domain.
        run(&mut hv, &mut st, &["block-attach", "g", "/img/b.img,,xvda"]).unwrap();
        run(&mut hv, &mut st, &["destroy", "g"]).unwrap();
        let left: Vec<_> = st.nodes.keys().filter(|k| k.contains("backend")).collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = run;
        assert!(host.loops.is_empty());
        assert!(host.ports().is_empty());
    }
}
