//! Building a PVH domain from a kernel image: memory → image → start_info → vCPU.
//!
//! Guest-physical layout (all inside RAM, below the kernel's 1 MiB load address):
//! `hvm_start_info` at [`START_INFO_GPA`], the module list after it, the memory map at
//! [`MEMMAP_GPA`], the command line at [`CMDLINE_GPA`].

use super::memory::{GuestFault, GuestMemory, MemoryError};
use super::{DomId, Domain, VcpuTimer};
use crate::hvm::{Backend, BackendError, PvhEntry};
use arrayvec::ArrayString;
use core::fmt;
use pvh_loader::{parse_pvh, LoadError};
use xen_abi::hvm::start_info::{HvmMemmapTableEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE};

/// `hvm_start_info` goes here.
pub const START_INFO_GPA: u64 = 0x6000;
/// The memory map table.
pub const MEMMAP_GPA: u64 = 0x7000;
/// The NUL-terminated command line (up to 4 KiB).
pub const CMDLINE_GPA: u64 = 0x8000;
const CMDLINE_MAX: usize = 4096;
/// Start of the legacy VGA/ROM hole, reported reserved in the memory map.
const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);
/// E820 types.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

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
            BuildError::CmdlineTooLong(n) => write!(f, "command line of {n} bytes exceeds {CMDLINE_MAX}"),
        }
    }
}

/// Everything needed to build a PVH domain.
pub struct PvhConfig<'a> {
    pub domid: DomId,
    pub name: &'a str,
    pub kernel: &'a [u8],
    pub cmdline: &'a str,
    pub memory_bytes: u64,
}

/// Builds a domain ready to run its first instruction.
pub fn build<B: Backend>(backend: &mut B, cfg: &PvhConfig<'_>) -> Result<Domain<B>, BuildError> {
    let image = parse_pvh(cfg.kernel).map_err(BuildError::Image)?;
    if cfg.cmdline.len() >= CMDLINE_MAX {
        return Err(BuildError::CmdlineTooLong(cfg.cmdline.len()));
    }
    let mem = GuestMemory::<B::P2m>::new(cfg.memory_bytes, backend.caps().p2m_2m).map_err(BuildError::Memory)?;
    let ram = mem.ram_size();

    pvh_loader::load_segments(&image, |paddr, bytes, zero_len| {
        let len = bytes.len() as u64 + zero_len;
        let end = paddr.checked_add(len).filter(|&e| e <= ram && paddr >= LEGACY_HOLE.1);
        if end.is_none() {
            return Err(BuildError::SegmentOutsideMemory { paddr, len, ram });
        }
        mem.write(paddr, bytes).map_err(BuildError::Fault)?;
        // BSS: memory is zero from allocation, but be explicit about the tail.
        let zeros = [0u8; 512];
        let mut at = paddr + bytes.len() as u64;
        let mut left = zero_len;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            mem.write(at, &zeros[..n as usize]).map_err(BuildError::Fault)?;
            at += n;
            left -= n;
        }
        Ok(())
    })?;

    write_start_info(&mem, cfg.cmdline, ram).map_err(BuildError::Fault)?;
    let entry = PvhEntry { rip: image.entry, rbx: START_INFO_GPA as u32 };
    let vcpu = backend.create_vcpu(mem.p2m_root(), entry).map_err(BuildError::Vcpu)?;
    let mut name = ArrayString::new();
    for c in cfg.name.chars().take(32) {
        let _ = name.try_push(c);
    }
    Ok(Domain {
        id: cfg.domid,
        name,
        mem,
        vcpu,
        timer: VcpuTimer::default(),
        shared_info: None,
        console_line: ArrayString::new(),
        hypercalls: 0,
        exits: 0,
    })
}

/// Writes `hvm_start_info` (version 1), the memory map and the command line.
fn write_start_info<F: pagetable::Format>(mem: &GuestMemory<F>, cmdline: &str, ram: u64) -> Result<(), GuestFault> {
    let map = [
        (0, LEGACY_HOLE.0, E820_RAM),
        (LEGACY_HOLE.0, LEGACY_HOLE.1 - LEGACY_HOLE.0, E820_RESERVED),
        (LEGACY_HOLE.1, ram - LEGACY_HOLE.1, E820_RAM),
    ];
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        let e = HvmMemmapTableEntry { addr: *addr, size: *size, ty: *kind, reserved: 0 };
        mem.write_obj(MEMMAP_GPA + i as u64 * 24, &e)?;
    }
    mem.write(CMDLINE_GPA, cmdline.as_bytes())?;
    mem.write(CMDLINE_GPA + cmdline.len() as u64, &[0])?;
    let info = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: 0,
        modlist_paddr: 0,
        cmdline_paddr: CMDLINE_GPA,
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_GPA,
        memmap_entries: map.len() as u32,
        reserved: 0,
    };
    mem.write_obj(START_INFO_GPA, &info)
}
