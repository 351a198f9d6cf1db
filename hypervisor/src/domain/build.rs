//! Building a PVH domain from a kernel image: memory → image → start_info → vCPU.
//!
//! Guest-physical layout (all inside RAM, below the kernel's 1 MiB load address):
//! `hvm_start_info` at [`START_INFO_GPA`], the module list after it, the memory map at
//! [`MEMMAP_GPA`], the command line at [`CMDLINE_GPA`].

use super::memory::{GuestFault, GuestMemory, MemoryError, Scrub, CHUNK};
use super::{
    runstate, vflags, DomId, DomState, Domain, Life, Runstate, SchedParams, Vcpu, VcpuCtx,
    VcpuTimer,
};
use crate::hvm::{Backend, BackendError, PvhEntry, VcpuStart};
use crate::sync::{Level, Lock};
use alloc::boxed::Box;
use alloc::vec::Vec;
use arrayvec::ArrayString;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64};
use pvh_loader::{parse_pvh, LoadError};
use xen_abi::hvm::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, SIF_INITDOMAIN, SIF_PRIVILEGED,
    XEN_HVM_START_MAGIC_VALUE,
};

/// `hvm_start_info` goes here.
pub const START_INFO_GPA: u64 = 0x6000;
/// The module list, right after `hvm_start_info` (56 bytes).
pub const MODLIST_GPA: u64 = 0x6040;
/// Module command lines (one page).
pub const MODULE_CMDLINE_GPA: u64 = 0x9000;
/// Most modules passed to a domain (the initramfs is the only one Linux uses).
const MAX_MODULES: usize = 4;
/// Highest event-channel port of an unprivileged domain (libxl's default).
const DOMU_MAX_PORT: u32 = 1023;
/// The memory map table.
pub const MEMMAP_GPA: u64 = 0x7000;
/// The NUL-terminated command line (up to 4 KiB).
pub const CMDLINE_GPA: u64 = 0x8000;
const CMDLINE_MAX: usize = 4096;
/// The legacy VGA/ROM hole: backed by RAM (Linux scans it) but reported reserved.
const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);
/// The ACPI tables live in the upper part of the hole, where the legacy RSDP scan looks
/// too; reported as ACPI NVS so the guest never reuses it.
const ACPI_GPA: u64 = 0xe_0000;
use crate::mm::e820::{NVS as E820_NVS, RAM as E820_RAM, RESERVED as E820_RESERVED};

pub use crate::mm::e820::E820;

/// How the initial domain's RAM is laid out on the host's addresses when it is a Linux
/// dom0 (`GuestMemory::new_identity`).
pub struct Identity<'a> {
    /// Takes that many bytes of held host frames for the domain (`mm::dom0ram::take`).
    pub take: fn(u64) -> crate::mm::dom0ram::Runs,
    /// Frees the held frames (`mm::dom0ram::release`): the domain is not a Linux dom0
    /// and is built on any frames.
    pub release: fn() -> u64,
    /// The host's memory map: every host region the domain does not get as RAM is
    /// reserved in its e820, so it never places anything (a BAR, a grant mapping) there.
    pub host_map: &'a [ferrovisor_boot::MemoryRegion],
}

/// Why a domain could not be built. Nothing of it is left behind on error.
#[derive(Debug)]
pub enum BuildError {
    /// The kernel image is not a usable PVH ELF.
    Image(LoadError),
    /// A loadable segment does not fit in the domain's memory.
    SegmentOutsideMemory { paddr: u64, len: u64, ram: u64 },
    /// Guest memory could not be set up.
    Memory(MemoryError),
    /// Writing boot data into the guest failed.
    Fault(GuestFault),
    /// The backend could not create the vCPU.
    Vcpu(BackendError),
    /// The command line is longer than the page reserved for it.
    CmdlineTooLong(usize),
    /// A module does not fit in the domain's memory after the kernel.
    ModuleTooLarge { index: usize, len: u64, ram: u64 },
    /// More modules than start_info carries.
    TooManyModules(usize),
    /// The ACPI tables could not be built.
    Acpi(acpi_tables::AcpiError),
    /// The event-channel table could not be set up.
    EventChannels(xen_abi::errno::Errno),
    /// A vCPU count of 0 or above what the MADT and event channels carry.
    Vcpus(u32),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Image(e) => write!(f, "bad kernel image: {e}"),
            BuildError::SegmentOutsideMemory { paddr, len, ram } => write!(
                f,
                "kernel segment at {paddr:#x} (+{len:#x}) does not fit in {} MiB of guest memory",
                ram >> 20
            ),
            BuildError::Memory(e) => write!(f, "guest memory: {e}"),
            BuildError::Fault(e) => write!(f, "writing boot data: {e}"),
            BuildError::Vcpu(e) => write!(f, "creating vCPU: {e}"),
            BuildError::CmdlineTooLong(n) => {
                write!(f, "command line of {n} bytes exceeds {CMDLINE_MAX}")
            }
            BuildError::ModuleTooLarge { index, len, ram } => write!(
                f,
                "module {index} ({} KiB) does not fit after the kernel in {} MiB of guest memory",
                len >> 10,
                ram >> 20
            ),
            BuildError::TooManyModules(n) => {
                write!(f, "{n} modules given; at most {MAX_MODULES} are passed")
            }
            BuildError::Acpi(e) => write!(f, "ACPI tables: {e}"),
            BuildError::EventChannels(e) => write!(f, "event channels: {e:?}"),
            BuildError::Vcpus(n) => write!(
                f,
                "{n} vCPUs requested; between 1 and {} are supported",
                acpi_tables::MAX_VCPUS.min(evtchn::MAX_VCPUS)
            ),
        }
    }
}

/// A module handed to the guest through start_info (the initramfs, for Linux).
pub struct GuestModule<'a> {
    pub bytes: &'a [u8],
    pub cmdline: &'a str,
}

/// Everything needed to build a PVH domain.
pub struct PvhConfig<'a> {
    pub domid: DomId,
    pub name: &'a str,
    pub kernel: &'a [u8],
    pub cmdline: &'a str,
    pub memory_bytes: u64,
    pub modules: &'a [GuestModule<'a>],
    /// The initial domain: it becomes the privileged control domain (dom0) if its kernel
    /// declares dom0 support (`XENFEAT_dom0` in its SUPPORTED_FEATURES note), as Xen
    /// requires; otherwise it runs unprivileged.
    pub initial: bool,
    /// vCPUs: vCPU 0 starts at the kernel's PVH entry, the others wait for an INIT/SIPI.
    pub vcpus: u32,
    pub params: SchedParams,
    /// For the initial domain: its RAM on the host's addresses, if it becomes dom0.
    pub identity: Option<Identity<'a>>,
}

/// Builds a domain ready to run its first instruction, paused once (the caller unpauses
/// it when it is in the domain table and the scheduler).
pub fn build<B: Backend>(backend: &B, cfg: &PvhConfig<'_>) -> Result<Domain<B>, BuildError> {
    let max_vcpus = acpi_tables::MAX_VCPUS.min(evtchn::MAX_VCPUS);
    if cfg.vcpus == 0 || cfg.vcpus > max_vcpus {
        return Err(BuildError::Vcpus(cfg.vcpus));
    }
    let image = parse_pvh(cfg.kernel).map_err(BuildError::Image)?;
    if cfg.cmdline.len() >= CMDLINE_MAX {
        return Err(BuildError::CmdlineTooLong(cfg.cmdline.len()));
    }
    if cfg.modules.len() > MAX_MODULES {
        return Err(BuildError::TooManyModules(cfg.modules.len()));
    }
    let privileged = cfg.initial && image.dom0_capable();
    let scrub = if privileged {
        Scrub::FirstChunk
    } else {
        Scrub::All
    };
    let large = backend.caps().p2m_2m;
    // RAM at the host's addresses for a dom0, if its kernel loads where that RAM is (a
    // Linux kernel loads at 16 MiB; a test guest may load where the hypervisor sits).
    let mut identity = None;
    if let Some(id) = cfg.identity.as_ref().filter(|_| privileged) {
        let want = cfg.memory_bytes.saturating_sub(CHUNK);
        let runs = (id.take)(want);
        let got: u64 = runs.iter().map(|r| r.len()).sum();
        // The kernel, and the modules placed right after it.
        let modules: u64 = cfg
            .modules
            .iter()
            .map(|m| (m.bytes.len() as u64).div_ceil(4096) * 4096)
            .sum();
        let hi = image.highest_paddr_end.div_ceil(4096) * 4096 + modules;
        let lo = image.lowest_paddr.max(CHUNK).min(hi);
        if lo < hi && !covers(&runs, lo, hi) {
            crate::mm::dom0ram::free_runs(&runs);
            log::warn!(
                "domain {}: its kernel and modules load at {lo:#x}-{hi:#x}, which is not free host RAM: \
                 its RAM is not at the host's addresses, and its devices get no DMA",
                cfg.domid
            );
        } else {
            if got < want {
                log::warn!(
                    "domain {}: {} MiB of RAM at the host's addresses, not the {} MiB asked \
                     (the rest was needed at boot or is not there)",
                    cfg.domid,
                    (got + CHUNK) >> 20,
                    cfg.memory_bytes >> 20
                );
            }
            identity = Some((id, runs));
        }
    }
    if let (Some(id), None) = (&cfg.identity, &identity) {
        (id.release)();
    }
    let mem = match &identity {
        Some((_, runs)) => GuestMemory::<B::P2m>::new_identity(runs, large),
        None => GuestMemory::<B::P2m>::new(cfg.memory_bytes, large, scrub),
    }
    .map_err(BuildError::Memory)?;
    let identity = identity.map(|(id, _)| id);
    let ram = mem.ram_size();
    let e820: E820 = match identity {
        Some(id) => identity_map(&mem.ram_runs(), id.host_map),
        None => memory_map(ram).into_iter().collect(),
    };

    pvh_loader::load_segments(&image, |paddr, bytes, zero_len| {
        let len = bytes.len() as u64 + zero_len;
        let end = paddr
            .checked_add(len)
            .filter(|&e| e <= ram && paddr >= LEGACY_HOLE.1);
        if end.is_none() {
            return Err(BuildError::SegmentOutsideMemory { paddr, len, ram });
        }
        mem.write(paddr, bytes).map_err(BuildError::Fault)?;
        // BSS: written, as the control domain's RAM is not zeroed (`Scrub::FirstChunk`).
        let zeros = [0u8; 512];
        let mut at = paddr + bytes.len() as u64;
        let mut left = zero_len;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            mem.write(at, &zeros[..n as usize])
                .map_err(BuildError::Fault)?;
            at += n;
            left -= n;
        }
        Ok(())
    })?;

    let flags = if privileged {
        SIF_PRIVILEGED | SIF_INITDOMAIN
    } else {
        0
    };
    let modules_at = image.highest_paddr_end.div_ceil(4096) * 4096;
    let placed = place_modules(&mem, cfg.modules, modules_at, ram)?;
    let rsdp = write_acpi(&mem, cfg.vcpus, privileged)?;
    write_start_info(&mem, cfg.cmdline, &e820, flags, &placed, rsdp).map_err(BuildError::Fault)?;
    let entry = PvhEntry {
        rip: image.entry,
        rbx: START_INFO_GPA as u32,
    };
    let spec = DomainSpec {
        domid: cfg.domid,
        name: cfg.name,
        vcpus: cfg.vcpus,
        params: cfg.params,
        privileged,
        managed: false,
        // Identity-mapped RAM has holes: the most it may hold is what it was given.
        max_mem: if identity.is_some() {
            e820.iter()
                .filter(|e| e.2 == E820_RAM)
                .map(|e| e.1)
                .sum::<u64>()
                + (CHUNK - LEGACY_HOLE.0)
        } else {
            ram
        },
        max_grant_frames: super::MAX_GRANT_FRAMES as u32,
        max_maptrack_frames: crate::xen::grant_table::DEFAULT_MAPTRACK_FRAMES,
        max_port: if privileged {
            evtchn::FIFO_NR_PORTS - 1
        } else {
            DOMU_MAX_PORT
        },
    };
    assemble(backend, mem, &spec, Some(entry), e820)
}

/// What a domain is, apart from its memory contents.
pub struct DomainSpec<'a> {
    pub domid: DomId,
    pub name: &'a str,
    pub vcpus: u32,
    pub params: SchedParams,
    pub privileged: bool,
    /// Created by the toolstack (kept after it ends until destroyed).
    pub managed: bool,
    /// Most RAM it may have (bytes).
    pub max_mem: u64,
    /// Highest event-channel port.
    pub max_port: u32,
    /// Most grant-table frames.
    pub max_grant_frames: u32,
    /// Maptrack frames (256 live grant mappings each, as Xen).
    pub max_maptrack_frames: u32,
}

/// Creates an empty domain for the toolstack: no RAM yet, every vCPU offline until the
/// toolstack sets the boot vCPU's entry state ([`set_boot_vcpu`]), paused once.
pub fn create_empty<B: Backend>(
    backend: &B,
    spec: &DomainSpec<'_>,
) -> Result<Domain<B>, BuildError> {
    let max_vcpus = acpi_tables::MAX_VCPUS.min(evtchn::MAX_VCPUS);
    if spec.vcpus == 0 || spec.vcpus > max_vcpus {
        return Err(BuildError::Vcpus(spec.vcpus));
    }
    let mem = GuestMemory::<B::P2m>::empty(backend.caps().p2m_2m).map_err(BuildError::Memory)?;
    assemble(backend, mem, spec, None, arrayvec::ArrayVec::new())
}

/// Puts vCPU `v` of a domain that has not run yet at the PVH entry `entry`, online.
/// The caller holds the domain paused; the vCPU is parked (not running anywhere).
pub fn set_boot_vcpu<B: Backend>(
    backend: &B,
    dom: &Domain<B>,
    v: &Vcpu<B>,
    entry: PvhEntry,
) -> Result<(), BackendError> {
    let privilege = crate::hvm::Privilege::of(dom.is_control());
    let hw = backend.create_vcpu(dom.mem.p2m_root(), VcpuStart::Pvh(entry), privilege)?;
    let old = {
        let mut ctx = v.ctx.lock();
        let Some(ctx) = ctx.as_mut() else {
            return Err(BackendError::Unsupported("vCPU is running"));
        };
        core::mem::replace(&mut ctx.hw, hw)
    };
    // Dropped with no lock held (a VMX vCPU's drop may ask other CPUs to flush).
    drop(old);
    v.clear_flag(vflags::DOWN | vflags::WAIT_SIPI);
    let now = crate::time::now().1;
    v.runstate.lock().set(runstate::RUNNABLE, now);
    Ok(())
}

/// A domain around `mem`: vCPU 0 at `entry` (or offline when None), the others offline
/// waiting for INIT-SIPI; event channels; paused once.
fn assemble<B: Backend>(
    backend: &B,
    mem: GuestMemory<B::P2m>,
    spec: &DomainSpec<'_>,
    entry: Option<PvhEntry>,
    e820: E820,
) -> Result<Domain<B>, BuildError> {
    let now = crate::time::now().1;
    let mut vcpus = Vec::with_capacity(spec.vcpus as usize);
    for id in 0..spec.vcpus {
        let start = match entry {
            Some(e) if id == 0 => VcpuStart::Pvh(e),
            _ => VcpuStart::WaitForSipi,
        };
        let hw = backend
            .create_vcpu(
                mem.p2m_root(),
                start,
                crate::hvm::Privilege::of(spec.privileged),
            )
            .map_err(BuildError::Vcpu)?;
        let ctx = VcpuCtx {
            hw,
            timer: VcpuTimer::default(),
            vlapic: crate::hvm::vlapic::Vlapic::new(id),
            flush_gen: 0,
            poll_deadline: 0,
            exits: 0,
            exits_by_kind: [0; crate::hvm::Exit::KINDS],
            trace: super::ExitTrace::default(),
        };
        // The boot vCPU starts at the PVH entry; the others are offline until a SIPI.
        let (flags, state) = if matches!(start, VcpuStart::Pvh(_)) {
            (0, runstate::RUNNABLE)
        } else {
            (vflags::DOWN | vflags::WAIT_SIPI, runstate::OFFLINE)
        };
        vcpus.push(Vcpu {
            id,
            domid: spec.domid,
            flags: AtomicU32::new(flags),
            ipis: Default::default(),
            sipi: AtomicU32::new(0),
            hw_frames: crate::hvm::Vcpu::frames(&ctx.hw),
            next_timer: AtomicU64::new(u64::MAX),
            apic_logical: AtomicU64::new(ctx.vlapic.logical_id().to_bits()),
            cpu: AtomicU32::new(super::NO_CPU),
            runstate: Lock::new(
                Level::Runstate,
                Runstate {
                    state,
                    entry_ns: now,
                    ..Runstate::default()
                },
            ),
            ctx: Lock::new(Level::VcpuCtx, Some(Box::new(ctx))),
        });
    }
    let mut name = ArrayString::new();
    for c in spec.name.chars().take(32) {
        let _ = name.try_push(c);
    }
    let evtchn = evtchn::EventChannels::new(
        spec.domid,
        evtchn::Config {
            max_vcpus: spec.vcpus,
            max_port: spec.max_port,
        },
    )
    .map_err(BuildError::EventChannels)?;
    Ok(Domain {
        id: spec.domid,
        name,
        privileged: spec.privileged,
        mem,
        vcpus,
        params: spec.params,
        e820: Lock::new(Level::E820, e820),
        managed: spec.managed,
        max_mem: spec.max_mem,
        max_grant_frames: spec.max_grant_frames,
        started: core::sync::atomic::AtomicBool::new(false),
        flush_gen: AtomicU64::new(0),
        pause_count: AtomicU32::new(1),
        hypercalls: AtomicU64::new(0),
        log_limit: Default::default(),
        st: Lock::new(
            Level::DomainState,
            DomState {
                life: Life::Running,
                hvm_params: [0; xen_abi::hvm::params::HVM_NR_PARAMS as usize],
                evtchn,
                callback_vector: None,
                upcall_vector: alloc::vec![0; spec.vcpus as usize],
                shared_info: None,
                vcpu_info: alloc::vec![None; spec.vcpus as usize],
                grant_frames: arrayvec::ArrayVec::new(),
                grant: crate::xen::grant_table::GrantState::new(spec.max_maptrack_frames),
                pit: Default::default(),
                console_line: ArrayString::new(),
                console_budget: Default::default(),
                vioapics: if spec.privileged {
                    super::devirq::vioapics()
                } else {
                    Vec::new()
                },
            },
        ),
        freed: Default::default(),
    })
}

/// Copies the modules into guest RAM from `at` upward (page aligned) and writes their
/// command lines; returns the module list entries.
fn place_modules<F: pagetable::Format>(
    mem: &GuestMemory<F>,
    modules: &[GuestModule<'_>],
    mut at: u64,
    ram: u64,
) -> Result<arrayvec::ArrayVec<HvmModlistEntry, MAX_MODULES>, BuildError> {
    let mut list = arrayvec::ArrayVec::new();
    let mut cmdline_at = MODULE_CMDLINE_GPA;
    for (index, m) in modules.iter().enumerate() {
        let len = m.bytes.len() as u64;
        if at.checked_add(len).is_none_or(|end| end > ram) {
            return Err(BuildError::ModuleTooLarge { index, len, ram });
        }
        mem.write(at, m.bytes).map_err(BuildError::Fault)?;
        let cmdline_paddr = if m.cmdline.is_empty()
            || cmdline_at + m.cmdline.len() as u64 + 1 > MODULE_CMDLINE_GPA + 4096
        {
            0
        } else {
            mem.write(cmdline_at, m.cmdline.as_bytes())
                .map_err(BuildError::Fault)?;
            mem.write(cmdline_at + m.cmdline.len() as u64, &[0])
                .map_err(BuildError::Fault)?;
            let p = cmdline_at;
            cmdline_at += m.cmdline.len() as u64 + 1;
            p
        };
        list.push(HvmModlistEntry {
            paddr: at,
            size: len,
            cmdline_paddr,
            reserved: 0,
        });
        at = (at + len).div_ceil(4096) * 4096;
    }
    Ok(list)
}

/// The guest's e820 map: RAM from 0 with the legacy hole reserved and the ACPI tables
/// in NVS. Given in start_info and by XENMEM_memory_map.
fn memory_map(ram: u64) -> [(u64, u64, u32); 4] {
    [
        (0, LEGACY_HOLE.0, E820_RAM),
        (LEGACY_HOLE.0, ACPI_GPA - LEGACY_HOLE.0, E820_RESERVED),
        (ACPI_GPA, LEGACY_HOLE.1 - ACPI_GPA, E820_NVS),
        (LEGACY_HOLE.1, ram - LEGACY_HOLE.1, E820_RAM),
    ]
}

/// Whether `runs` (sorted, disjoint) cover `[lo, hi)` without a gap.
fn covers(runs: &[crate::mm::frame::PhysRange], lo: u64, hi: u64) -> bool {
    let mut at = lo;
    for r in runs {
        if r.start <= at && at < r.end {
            at = r.end;
        }
    }
    at >= hi
}

/// The e820 map of a dom0 with identity-mapped RAM (`ram`: its RAM runs, the first
/// below 2 MiB): the low 640 KiB as RAM, the legacy hole and the ACPI tables as in
/// [`memory_map`], the rest of its first 2 MiB reserved (those frames are not the host's
/// at these addresses, so no device may be pointed there), its identity-mapped RAM, and
/// every other region of the host's map reserved (host RAM it does not own included).
fn identity_map(ram: &[(u64, u64)], host: &[ferrovisor_boot::MemoryRegion]) -> E820 {
    let mut map = E820::new();
    let low = memory_map(CHUNK);
    map.extend(low[..3].iter().copied());
    map.push((LEGACY_HOLE.1, CHUNK - LEGACY_HOLE.1, E820_RESERVED));
    for &(start, end) in ram.iter().filter(|r| r.0 >= CHUNK) {
        let _ = map.try_push((start, end - start, E820_RAM));
    }
    crate::mm::e820::reserve_uncovered(&mut map, host, CHUNK);
    map
}

/// Builds the guest's ACPI tables (RSDP, XSDT, hardware-reduced FADT, DSDT, MADT) at
/// [`ACPI_GPA`]; returns the RSDP's address. The control domain's MADT also lists its
/// virtual I/O APICs (the host's) and the host's interrupt source overrides.
fn write_acpi<F: pagetable::Format>(
    mem: &GuestMemory<F>,
    vcpus: u32,
    control: bool,
) -> Result<u64, BuildError> {
    let mut cfg = acpi_tables::AcpiConfig::new(vcpus);
    if let Some(p) = crate::arch::x86::ioapic::platform().filter(|_| control) {
        for (slot, a) in cfg.ioapics.iter_mut().zip(&p.ioapics) {
            *slot = Some(acpi_tables::IoApicEntry {
                id: a.id,
                addr: a.addr as u32,
                gsi_base: a.gsi_base,
            });
        }
        for (slot, o) in cfg
            .overrides
            .iter_mut()
            .zip(p.overrides.iter().filter(|o| o.bus == 0))
        {
            *slot = Some(acpi_tables::OverrideEntry {
                source: o.source,
                gsi: o.gsi,
                flags: o.flags,
            });
        }
    }
    let mut buf = [0u8; 4096];
    let layout = acpi_tables::build(&cfg, ACPI_GPA, &mut buf).map_err(BuildError::Acpi)?;
    mem.write(ACPI_GPA, &buf[..layout.total_len])
        .map_err(BuildError::Fault)?;
    Ok(layout.rsdp_gpa)
}

/// Writes `hvm_start_info` (version 1), the module list, the memory map and the command line.
fn write_start_info<F: pagetable::Format>(
    mem: &GuestMemory<F>,
    cmdline: &str,
    map: &E820,
    flags: u32,
    modules: &[HvmModlistEntry],
    rsdp: u64,
) -> Result<(), GuestFault> {
    for (i, m) in modules.iter().enumerate() {
        mem.write_obj(MODLIST_GPA + i as u64 * 32, m)?;
    }
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        let e = HvmMemmapTableEntry {
            addr: *addr,
            size: *size,
            ty: *kind,
            reserved: 0,
        };
        mem.write_obj(MEMMAP_GPA + i as u64 * 24, &e)?;
    }
    mem.write(CMDLINE_GPA, cmdline.as_bytes())?;
    mem.write(CMDLINE_GPA + cmdline.len() as u64, &[0])?;
    let info = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_GPA },
        cmdline_paddr: CMDLINE_GPA,
        rsdp_paddr: rsdp,
        memmap_paddr: MEMMAP_GPA,
        memmap_entries: map.len() as u32,
        reserved: 0,
    };
    mem.write_obj(START_INFO_GPA, &info)
}
