//! ferrovisor's toolstack interface (not Xen's): `HYPERVISOR_fvctl(op)`, hypercall
//! [`HYPERVISOR_FVCTL`], for the control domain only.
//!
//! Xen keeps its `domctl`/`sysctl` unstable and tied to its own toolstack; this is our
//! own, versioned the same way. Every call passes one 256-byte [`FvCtl`] (IN/OUT) whose
//! header carries [`FVCTL_INTERFACE_VERSION`] (a mismatch gets `-EACCES`, as Xen's
//! domctl does), a command and a target domain; the command's payload sits in `u`.
//! Pointers inside payloads are the caller's virtual addresses (dom0 userspace through
//! `/dev/xen/privcmd`): the hypervisor cannot fault pages in, so they must be locked in
//! memory and touched.
//!
//! Every call does bounded work. Long operations ([`FVCTL_POPULATE`]) return 1 while
//! work remains, and the caller repeats the same call until it returns 0.
//!
//! Errors (negative errno): `-EPERM` from any domain but the control domain, `-EACCES`
//! for a version mismatch, `-ENOSYS` for an unknown command, `-ESRCH` for a missing
//! domain, `-EINVAL` for bad arguments, `-ENOMEM` when host memory runs out, `-EFAULT`
//! for an unreadable buffer, `-EBUSY` for a state that does not allow the call (for
//! example setting boot state of a domain that already ran), `-EEXIST` for a domid in use.
//! `docs/toolstack.md` describes each command.

/// The hypercall number (unused by Xen, between `hypfs_op` (42) and the
/// architecture-specific range (48..)).
pub const HYPERVISOR_FVCTL: u64 = 47;

/// Interface version: major in the high 16 bits (incompatible changes), minor below.
pub const FVCTL_INTERFACE_VERSION: u32 = 0x0001_0000;

/// Create a paused domain without memory: [`CreateDomain`]. `domid` IN is the wanted id
/// (0 = the next free id after the last one given, as Xen allocates them); OUT the id
/// given.
pub const FVCTL_CREATE_DOMAIN: u32 = 1;
/// Give the domain RAM from guest-physical 0 up to `target_kib`: [`Populate`]. At most
/// [`FVCTL_POPULATE_STEP_KIB`] per call; returns 1 while more remains.
pub const FVCTL_POPULATE: u32 = 2;
/// Copy bytes from the caller into the domain's memory: [`CopyTo`].
pub const FVCTL_COPY_TO: u32 = 3;
/// Set the domain's memory map (what `XENMEM_memory_map` returns): [`SetMemmap`].
pub const FVCTL_SET_MEMMAP: u32 = 4;
/// Set a vCPU's boot state to a PVH entry: [`VcpuBoot`]. Only before the domain first ran.
pub const FVCTL_SET_VCPU_BOOT: u32 = 5;
/// Write one of the reserved grant entries (0..8) of the domain: [`SeedGrant`].
pub const FVCTL_SEED_GRANT: u32 = 6;
/// Pause: the domain's vCPUs stop running until a matching unpause (counted).
pub const FVCTL_PAUSE: u32 = 7;
/// Unpause (the first unpause of a new domain starts it).
pub const FVCTL_UNPAUSE: u32 = 8;
/// Shut the domain down with a `SHUTDOWN_*` reason, as if it had asked: [`Shutdown`].
pub const FVCTL_SHUTDOWN: u32 = 9;
/// Destroy the domain: it stops at once and its memory returns to the host once no
/// other domain maps any of it.
pub const FVCTL_DESTROY: u32 = 10;
/// Information about the first domain whose id is ≥ `domid`: [`DomainInfo`] (OUT).
/// `-ESRCH` when there is none, so a loop from 0 lists every domain.
pub const FVCTL_DOMAIN_INFO: u32 = 11;
/// Read the hypervisor's console ring: [`ConsoleRead`].
pub const FVCTL_CONSOLE_READ: u32 = 12;
/// Host facts: [`PhysInfo`] (OUT). `domid` is ignored.
pub const FVCTL_PHYSINFO: u32 = 13;
/// Read the domain's scheduler parameters: [`SchedParams`] (OUT).
pub const FVCTL_SCHED_GET: u32 = 14;
/// Set them: [`SchedParams`] (IN).
pub const FVCTL_SCHED_SET: u32 = 15;
/// One vCPU's state: [`VcpuInfo`] (`vcpu` IN, the rest OUT).
pub const FVCTL_VCPU_INFO: u32 = 16;
/// Set a vCPU's hard and soft affinity: [`VcpuInfo`] (`vcpu`, `hard_affinity`,
/// `soft_affinity` IN).
pub const FVCTL_SET_AFFINITY: u32 = 17;

/// Most KiB one `FVCTL_POPULATE` call adds.
pub const FVCTL_POPULATE_STEP_KIB: u64 = 64 << 10;
/// Most bytes one `FVCTL_COPY_TO` call copies.
pub const FVCTL_COPY_MAX: u64 = 1 << 20;
/// Entries in a memory map.
pub const FVCTL_MEMMAP_MAX: usize = 8;
/// Bytes of a domain name, NUL-padded (not necessarily NUL-terminated).
pub const FVCTL_NAME_LEN: usize = 32;

/// `DomainInfo::flags`.
pub mod dominfo {
    /// Being destroyed (gone from the list once nothing maps its memory).
    pub const DYING: u32 = 1 << 0;
    /// Shut down (the reason is in `shutdown_reason`); waits to be destroyed.
    pub const SHUTDOWN: u32 = 1 << 1;
    /// Paused by the toolstack (count > 0).
    pub const PAUSED: u32 = 1 << 2;
    /// Every online vCPU is blocked.
    pub const BLOCKED: u32 = 1 << 3;
    /// A vCPU is running right now.
    pub const RUNNING: u32 = 1 << 4;
    /// The control domain.
    pub const CONTROL: u32 = 1 << 5;
    /// Never unpaused yet (being built).
    pub const CREATING: u32 = 1 << 6;
}

/// `VcpuInfo::flags`.
pub mod vcpuinfo {
    /// Up (not offline / waiting for INIT-SIPI).
    pub const ONLINE: u32 = 1 << 0;
    /// Blocked waiting for an event.
    pub const BLOCKED: u32 = 1 << 1;
    /// Running right now.
    pub const RUNNING: u32 = 1 << 2;
}

/// `CreateDomain::flags`: none defined yet (must be 0).
pub const FVCTL_CREATE_FLAGS: u32 = 0;

/// The one argument of every call (IN/OUT).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct FvCtl {
    /// IN: [`FVCTL_INTERFACE_VERSION`].
    pub version: u32,
    /// IN: `FVCTL_*` command.
    pub cmd: u32,
    /// IN (OUT for create): target domain.
    pub domid: u16,
    /// Must be 0.
    pub _pad: [u16; 3],
    /// The command's payload (one of the structs below, at offset 0).
    pub u: [u8; 240],
}
assert_layout!(FvCtl, size = 256, align = 4, version @ 0, cmd @ 4, domid @ 8, u @ 16);

impl FvCtl {
    /// A call of `cmd` on `domid` with `payload` (any of this module's payload structs).
    pub fn new<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        cmd: u32,
        domid: u16,
        payload: &T,
    ) -> Self {
        let mut op = FvCtl {
            version: FVCTL_INTERFACE_VERSION,
            cmd,
            domid,
            _pad: [0; 3],
            u: [0; 240],
        };
        let bytes = payload.as_bytes();
        op.u[..bytes.len()].copy_from_slice(bytes);
        op
    }

    /// The payload read as `T` (the first `size_of::<T>()` bytes of `u`).
    pub fn payload<T: zerocopy::FromBytes>(&self) -> T {
        T::read_from_prefix(&self.u[..])
            .map(|(v, _)| v)
            .unwrap_or_else(|_| T::new_zeroed())
    }

    /// Replaces the payload with `payload` (the rest of `u` is zeroed).
    pub fn set_payload<T: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, payload: &T) {
        let bytes = payload.as_bytes();
        self.u = [0; 240];
        self.u[..bytes.len()].copy_from_slice(bytes);
    }
}

zc_struct! {
    /// [`FVCTL_CREATE_DOMAIN`] (IN).
    pub struct CreateDomain {
        /// vCPUs (1..=the MADT's limit); vCPU 0 boots, the others wait for INIT-SIPI.
        pub max_vcpus: u32,
        /// [`FVCTL_CREATE_FLAGS`].
        pub flags: u32,
        /// Most memory the domain may have, KiB (a multiple of 4).
        pub max_mem_kib: u64,
        /// Grant-table frames it may have (1..=64; Xen's default 32).
        pub max_grant_frames: u32,
        /// Maptrack frames for the grants it maps (1..=1024; Xen's default 1024).
        pub max_maptrack_frames: u32,
        /// Highest event-channel port (63..=4095; Xen's default for domUs 1023).
        pub max_evtchn_port: u32,
        /// Scheduler weight (1..=65535; 0 = the default 256).
        pub weight: u16,
        /// Cap in percent of one CPU (0 = none).
        pub cap: u16,
        /// Name, NUL-padded (for the hypervisor's own messages).
        pub name: [u8; FVCTL_NAME_LEN],
    }
}
assert_layout!(CreateDomain, size = 64, align = 8, max_mem_kib @ 8, name @ 32);

zc_struct! {
    /// [`FVCTL_POPULATE`] (IN `target_kib`, OUT `populated_kib`).
    pub struct Populate {
        /// RAM wanted, KiB, from guest-physical 0 (≤ max_mem_kib; rounded up to 2 MiB).
        pub target_kib: u64,
        /// RAM the domain has after this call, KiB.
        pub populated_kib: u64,
    }
}
assert_layout!(Populate, size = 16, align = 8);

zc_struct! {
    /// [`FVCTL_COPY_TO`] (IN).
    pub struct CopyTo {
        /// Destination guest-physical address in the domain (its RAM).
        pub gpa: u64,
        /// Source: the caller's virtual address.
        pub buf: u64,
        /// Bytes (≤ [`FVCTL_COPY_MAX`]).
        pub len: u64,
    }
}
assert_layout!(CopyTo, size = 24, align = 8);

zc_struct! {
    /// One memory-map entry (the layout of `hvm_memmap_table_entry`).
    pub struct MemmapEntry {
        /// Start.
        pub addr: u64,
        /// Length.
        pub size: u64,
        /// E820 type (1 RAM, 2 reserved, 3 ACPI, 4 NVS).
        pub ty: u32,
        /// Must be 0.
        pub _pad: u32,
    }
}
assert_layout!(MemmapEntry, size = 24, align = 8);

zc_struct! {
    /// [`FVCTL_SET_MEMMAP`] (IN).
    pub struct SetMemmap {
        /// Entries used (1..=[`FVCTL_MEMMAP_MAX`]), sorted and not overlapping.
        pub nr: u32,
        /// Must be 0.
        pub _pad: u32,
        /// The entries.
        pub entries: [MemmapEntry; FVCTL_MEMMAP_MAX],
    }
}
assert_layout!(SetMemmap, size = 200, align = 8, entries @ 8);

zc_struct! {
    /// [`FVCTL_SET_VCPU_BOOT`] (IN): the PVH entry state (32-bit protected mode, paging
    /// off, `ebx` = the `hvm_start_info` address).
    pub struct VcpuBoot {
        /// vCPU (0 for the boot vCPU; others are started by the guest).
        pub vcpu: u32,
        /// Must be 0.
        pub _pad: u32,
        /// Entry point (below 4 GiB).
        pub rip: u64,
        /// `hvm_start_info` guest-physical address (below 4 GiB).
        pub rbx: u64,
    }
}
assert_layout!(VcpuBoot, size = 24, align = 8);

zc_struct! {
    /// [`FVCTL_SEED_GRANT`] (IN): writes grant entry `gref` (< 8) as a v1 entry.
    pub struct SeedGrant {
        /// Reserved entry: 0 console, 1 xenstore.
        pub gref: u32,
        /// `GTF_permit_access`, optionally `GTF_readonly`; 0 clears the entry.
        pub flags: u16,
        /// Domain granted access.
        pub domid: u16,
        /// Frame (GFN in the granting domain).
        pub frame: u64,
    }
}
assert_layout!(SeedGrant, size = 16, align = 8);

zc_struct! {
    /// [`FVCTL_SHUTDOWN`] (IN).
    pub struct Shutdown {
        /// `SHUTDOWN_*` reason.
        pub reason: u32,
        /// Must be 0.
        pub _pad: u32,
    }
}
assert_layout!(Shutdown, size = 8, align = 4);

zc_struct! {
    /// [`FVCTL_DOMAIN_INFO`] (OUT).
    pub struct DomainInfo {
        /// The domain's id.
        pub domid: u16,
        /// Scheduler weight.
        pub weight: u16,
        /// [`dominfo`] flags.
        pub flags: u32,
        /// `SHUTDOWN_*` reason when `SHUTDOWN` is set (`crash` for a crash).
        pub shutdown_reason: u32,
        /// vCPUs.
        pub nr_vcpus: u32,
        /// vCPUs online.
        pub online_vcpus: u32,
        /// Cap (percent; 0 none).
        pub cap: u16,
        /// Must be 0.
        pub _pad: u16,
        /// RAM it has, KiB.
        pub tot_kib: u64,
        /// Most RAM it may have, KiB.
        pub max_kib: u64,
        /// Host frames it holds in all (RAM, page tables, vCPU state, shared pages), KiB.
        pub held_kib: u64,
        /// CPU time used by all its vCPUs, ns.
        pub cpu_time_ns: u64,
        /// Its name, NUL-padded.
        pub name: [u8; FVCTL_NAME_LEN],
    }
}
assert_layout!(DomainInfo, size = 88, align = 8, tot_kib @ 24, name @ 56);

zc_struct! {
    /// [`FVCTL_CONSOLE_READ`]: copies ring bytes from position `pos` into `buf`.
    pub struct ConsoleRead {
        /// IN: position (bytes since boot) to read from; a position older than the ring
        /// holds starts at the oldest byte kept. OUT: the position after the last byte
        /// copied.
        pub pos: u64,
        /// IN: the caller's buffer.
        pub buf: u64,
        /// IN: its size; OUT: bytes copied.
        pub len: u32,
        /// Must be 0.
        pub _pad: u32,
    }
}
assert_layout!(ConsoleRead, size = 24, align = 8);

zc_struct! {
    /// [`FVCTL_PHYSINFO`] (OUT).
    pub struct PhysInfo {
        /// Physical CPUs in use.
        pub nr_cpus: u32,
        /// TSC frequency, kHz.
        pub cpu_khz: u32,
        /// Host RAM managed by the hypervisor, KiB.
        pub total_kib: u64,
        /// Of which free, KiB.
        pub free_kib: u64,
        /// 1 = VMX with EPT, 2 = SVM with NPT.
        pub virt: u32,
        /// Domains in the table.
        pub nr_domains: u32,
        /// Hypervisor uptime, ns.
        pub uptime_ns: u64,
    }
}
assert_layout!(PhysInfo, size = 40, align = 8);

zc_struct! {
    /// [`FVCTL_SCHED_GET`] / [`FVCTL_SCHED_SET`].
    pub struct SchedParams {
        /// Weight (1..=65535).
        pub weight: u16,
        /// Cap, percent of one CPU (0 = none).
        pub cap: u16,
        /// Must be 0.
        pub _pad: u32,
    }
}
assert_layout!(SchedParams, size = 8, align = 4);

zc_struct! {
    /// [`FVCTL_VCPU_INFO`] / [`FVCTL_SET_AFFINITY`].
    pub struct VcpuInfo {
        /// IN: vCPU id.
        pub vcpu: u32,
        /// OUT: [`vcpuinfo`] flags.
        pub flags: u32,
        /// OUT: CPU it runs on or last ran on.
        pub cpu: u32,
        /// Must be 0.
        pub _pad: u32,
        /// OUT: time spent running, ns.
        pub cpu_time_ns: u64,
        /// Hard affinity: bit n = physical CPU n.
        pub hard_affinity: u64,
        /// Soft affinity.
        pub soft_affinity: u64,
    }
}
assert_layout!(VcpuInfo, size = 40, align = 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_the_header() {
        let c = CreateDomain {
            max_vcpus: 2,
            max_mem_kib: 65536,
            name: *b"guest\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Default::default()
        };
        let op = FvCtl::new(FVCTL_CREATE_DOMAIN, 0, &c);
        assert_eq!(op.version, FVCTL_INTERFACE_VERSION);
        assert_eq!(op.payload::<CreateDomain>(), c);
        let mut op = op;
        op.set_payload(&Populate {
            target_kib: 1,
            populated_kib: 2,
        });
        assert_eq!(op.payload::<Populate>().populated_kib, 2);
        assert!(op.u[16..].iter().all(|&b| b == 0));
    }
}
