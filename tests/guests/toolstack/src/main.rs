//! `toolstack`: a **privileged** domain 0 (dom0 feature note, like `reaper`) that drives
//! the fvctl toolstack interface (`HYPERVISOR_fvctl`, hypercall 47) the way `xl` does,
//! with its own image (module 0 of its start_info) as the domU kernel.
//!
//! Command line: `cycles=N mem_mib=M` (defaults 100 and 4), or `child` when started as a
//! domU by the parent.
//!
//! Parent: checks the error paths (wrong interface version → `-EACCES`, unknown command
//! → `-ENOSYS`, bad create arguments → `-EINVAL`, a missing domain → `-ESRCH`, acting on
//! itself → `-EINVAL`, a copy outside the domU's RAM → `-EINVAL`, an unreadable buffer →
//! `-EFAULT`, boot state after the start → `-EBUSY`); then `cycles` times: create a paused
//! domU, populate, load the ELF segments, write `hvm_start_info`, set the memory map and
//! the boot vCPU, check the listed state (paused, creating, memory), unpause, wait until
//! it has shut down, check its reason is poweroff (the child passed its own checks),
//! destroy it and check it is gone. Finally the host's free memory (`FVCTL_PHYSINFO`)
//! must equal what it was before the first domU, to the KiB.
//!
//! Child: checks that it is not the control domain and that every fvctl call from it
//! gets `-EPERM`, then passes (poweroff).
//!
//! `console`: started as a domU by `xl create` in a Linux dom0 (`bochs/toolstack/xl-cycle`):
//! writes `toolstack: console ready` to its PV console ring (`HVM_PARAM_CONSOLE_PFN`,
//! `HVM_PARAM_CONSOLE_EVTCHN`, as the toolstack seeded them), then answers every line
//! typed into its console with `REPLY=` and the line reversed (so the answer cannot be
//! the typed text echoed by anyone else), until it is destroyed.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::mem::offset_of;
use core::sync::atomic::{fence, Ordering};

use guest_rt::hypercall::{describe, hypercall1, hypercall2};
use guest_rt::xen_abi::fvctl::*;
use guest_rt::xen_abi::hvm::hvm_op::{XenHvmParam, HVMOP_GET_PARAM};
use guest_rt::xen_abi::hvm::params::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN};
use guest_rt::xen_abi::hvm::start_info::XEN_HVM_MEMMAP_TYPE_RESERVED;
use guest_rt::xen_abi::hvm::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};
use guest_rt::xen_abi::io::console::{XenconsInterface, XENCONS_IN_SIZE, XENCONS_OUT_SIZE};
use guest_rt::xen_abi::xen::{DOMID_SELF, HYPERVISOR_HVM_OP};
use guest_rt::xen_abi::Errno;
use guest_rt::{ensure, evtchn, fail, println, Fail, StartInfo, TestResult};
use zerocopy::{FromZeros, Immutable, IntoBytes};

guest_rt::entry!(test_main);

guest_rt::dom0_feature_note!();

/// Where the child's `hvm_start_info` and command line go (as the hypervisor's builder).
const START_INFO_GPA: u64 = 0x6000;
const MEMMAP_GPA: u64 = 0x7000;
const CMDLINE_GPA: u64 = 0x8000;
const CHILD_CMDLINE: &[u8] = b"child\0";
const SHUTDOWN_POWEROFF: u32 = 0;

fn fvctl(op: &mut FvCtl) -> i64 {
    // SAFETY: `op` is a live, writable 256-byte FvCtl; the hypervisor reads and writes
    // only it (and buffers its payload names, which the callers keep alive).
    unsafe { hypercall1(HYPERVISOR_FVCTL, op as *mut FvCtl as u64) }
}

fn call<T: IntoBytes + Immutable>(cmd: u32, domid: u16, payload: &T) -> (i64, FvCtl) {
    let mut op = FvCtl::new(cmd, domid, payload);
    let rc = fvctl(&mut op);
    (rc, op)
}

fn expect<T: IntoBytes + Immutable>(
    what: &str,
    cmd: u32,
    domid: u16,
    payload: &T,
    want: i64,
) -> Result<FvCtl, Fail> {
    let (rc, op) = call(cmd, domid, payload);
    ensure!(
        rc == want,
        "{what}: returned {}, expected {}",
        describe(rc),
        describe(want)
    );
    Ok(op)
}

fn err(e: Errno) -> i64 {
    e.to_ret()
}

fn child() -> TestResult {
    ensure!(
        !guest_rt::is_control_domain()?,
        "a toolstack-built domU claims XENFEAT_dom0"
    );
    let none = [0u8; 0];
    for cmd in [
        FVCTL_PHYSINFO,
        FVCTL_DOMAIN_INFO,
        FVCTL_DESTROY,
        FVCTL_CREATE_DOMAIN,
    ] {
        expect("fvctl from a domU", cmd, 0, &none, err(Errno::EPERM))?;
    }
    println!("toolstack: child: every fvctl call got -EPERM");
    Ok(())
}

fn free_kib() -> Result<u64, Fail> {
    let op = expect("physinfo", FVCTL_PHYSINFO, 0, &[0u8; 0], 0)?;
    Ok(op.payload::<PhysInfo>().free_kib)
}

fn info(domid: u16) -> Result<Option<DomainInfo>, Fail> {
    let (rc, op) = call(FVCTL_DOMAIN_INFO, domid, &[0u8; 0]);
    if rc == err(Errno::ESRCH) {
        return Ok(None);
    }
    ensure!(rc == 0, "domain_info({domid}) returned {}", describe(rc));
    Ok(Some(op.payload::<DomainInfo>()).filter(|i| i.domid == domid))
}

fn create_spec(mem_kib: u64) -> CreateDomain {
    let mut c = CreateDomain {
        max_vcpus: 1,
        flags: 0,
        max_mem_kib: mem_kib,
        max_grant_frames: 4,
        max_maptrack_frames: 16,
        max_evtchn_port: 1023,
        weight: 0,
        cap: 0,
        ..CreateDomain::new_zeroed()
    };
    c.name[..5].copy_from_slice(b"child");
    c
}

/// The error paths that need no domU, then those that need a paused one.
fn error_paths(mem_kib: u64) -> TestResult {
    let none = [0u8; 0];
    let mut op = FvCtl::new(FVCTL_PHYSINFO, 0, &none);
    op.version = FVCTL_INTERFACE_VERSION + 0x1_0000;
    ensure!(
        fvctl(&mut op) == err(Errno::EACCES),
        "a wrong interface version was accepted"
    );
    expect("unknown command", 999, 0, &none, err(Errno::ENOSYS))?;
    type Spoil = fn(&mut CreateDomain);
    let bad: [(&str, Spoil); 6] = [
        ("0 vCPUs", |c| c.max_vcpus = 0),
        ("0 KiB", |c| c.max_mem_kib = 0),
        ("more memory than the host has", |c| c.max_mem_kib = 1 << 40),
        ("unknown flags", |c| c.flags = 1),
        ("0 grant frames", |c| c.max_grant_frames = 0),
        ("a name that is not UTF-8", |c| c.name[0] = 0xff),
    ];
    for (what, f) in bad {
        let mut c = create_spec(mem_kib);
        f(&mut c);
        expect(what, FVCTL_CREATE_DOMAIN, 0, &c, err(Errno::EINVAL))?;
    }
    expect(
        "pause a missing domain",
        FVCTL_PAUSE,
        999,
        &none,
        err(Errno::ESRCH),
    )?;
    expect(
        "destroy itself",
        FVCTL_DESTROY,
        0,
        &none,
        err(Errno::EINVAL),
    )?;
    let op = expect("create", FVCTL_CREATE_DOMAIN, 0, &create_spec(mem_kib), 0)?;
    let d = op.domid;
    let dup = expect(
        "create with a taken id",
        FVCTL_CREATE_DOMAIN,
        d,
        &create_spec(mem_kib),
        err(Errno::EEXIST),
    );
    let copy = CopyTo {
        gpa: 0,
        buf: 0x1000,
        len: 4096,
    };
    let outside = expect(
        "copy before populate",
        FVCTL_COPY_TO,
        d,
        &copy,
        err(Errno::EINVAL),
    );
    let pop = Populate {
        target_kib: mem_kib * 2,
        populated_kib: 0,
    };
    let over = expect(
        "populate above max",
        FVCTL_POPULATE,
        d,
        &pop,
        err(Errno::EINVAL),
    );
    let unpause = expect(
        "unpause without a boot vCPU",
        FVCTL_UNPAUSE,
        d,
        &none,
        err(Errno::EINVAL),
    );
    let destroyed = expect("destroy", FVCTL_DESTROY, d, &none, 0);
    dup?;
    outside?;
    over?;
    unpause?;
    destroyed?;
    ensure!(info(d)?.is_none(), "domain {d} still listed after destroy");
    let unreadable = CopyTo {
        gpa: 0,
        buf: 0x7fff_0000_0000,
        len: 16,
    };
    let op = expect("create", FVCTL_CREATE_DOMAIN, 0, &create_spec(mem_kib), 0)?;
    let d = op.domid;
    populate(d, mem_kib)?;
    let fault = expect(
        "copy from an unmapped buffer",
        FVCTL_COPY_TO,
        d,
        &unreadable,
        err(Errno::EFAULT),
    );
    expect("destroy", FVCTL_DESTROY, d, &none, 0)?;
    fault?;
    println!("toolstack: error paths checked");
    Ok(())
}

/// Counts bad-input checks; a mismatch is printed and counted, the rest still run.
struct Tally {
    total: u32,
    failures: u32,
}

impl Tally {
    fn call(&mut self, what: core::fmt::Arguments<'_>, op: FvCtl, want: i64) -> (i64, FvCtl) {
        let mut op = op;
        let rc = fvctl(&mut op);
        self.total += 1;
        if rc != want {
            self.failures += 1;
            println!(
                "toolstack: bad input: {what}: got {} expected {}  <-- mismatch",
                describe(rc),
                describe(want)
            );
        }
        (rc, op)
    }

    fn check<T: IntoBytes + Immutable>(
        &mut self,
        what: core::fmt::Arguments<'_>,
        cmd: u32,
        domid: u16,
        payload: &T,
        want: i64,
    ) -> (i64, FvCtl) {
        self.call(what, FvCtl::new(cmd, domid, payload), want)
    }

    fn ensure(&mut self, ok: bool, what: core::fmt::Arguments<'_>) {
        self.total += 1;
        if !ok {
            self.failures += 1;
            println!("toolstack: bad input: {what}  <-- mismatch");
        }
    }
}

macro_rules! bad {
    ($t:expr, $cmd:expr, $dom:expr, $payload:expr, $want:expr, $($what:tt)*) => {
        $t.check(format_args!($($what)*), $cmd, $dom, $payload, $want)
    };
}

/// A domain id no test creates.
const NO_DOMAIN: u16 = 999;
/// A guest-virtual address the runtime's page tables do not map.
const UNMAPPED: u64 = 0x7fff_0000_0000;

fn sched_get(t: &mut Tally, d: u16) -> SchedParams {
    let (_, op) = bad!(t, FVCTL_SCHED_GET, d, &[0u8; 0], 0, "sched_get({d})");
    op.payload::<SchedParams>()
}

fn vcpu_info(t: &mut Tally, d: u16) -> VcpuInfo {
    let q = VcpuInfo::new_zeroed();
    let (_, op) = bad!(t, FVCTL_VCPU_INFO, d, &q, 0, "vcpu_info({d}, vcpu 0)");
    op.payload::<VcpuInfo>()
}

/// Bad arguments to the commands the error paths above leave out: the top-level padding,
/// `SET_MEMMAP`, `SEED_GRANT`, `SET_VCPU_BOOT`, `SCHED_GET`/`SCHED_SET`, `VCPU_INFO`,
/// `SET_AFFINITY` and `CONSOLE_READ`, each answered with the error `docs/toolstack.md`
/// gives and leaving nothing changed (checked afterwards where the command changes
/// something). The domains built for it are destroyed; `main`'s final free-memory check
/// also covers the grant frame `SEED_GRANT` allocates for a domain that never ran.
fn bad_input(mem_kib: u64) -> TestResult {
    let none = [0u8; 0];
    let inval = err(Errno::EINVAL);
    let srch = err(Errno::ESRCH);
    let mut t = Tally {
        total: 0,
        failures: 0,
    };

    // The header's padding (checked before the command).
    let domains = |t: &mut Tally| {
        let (_, op) = bad!(t, FVCTL_PHYSINFO, 0, &none, 0, "physinfo");
        op.payload::<PhysInfo>().nr_domains
    };
    let before = domains(&mut t);
    for pad in [[1u16, 0, 0], [0, 0, 0x8000]] {
        let mut op = FvCtl::new(FVCTL_PHYSINFO, 0, &none);
        op._pad = pad;
        t.call(format_args!("physinfo with padding {pad:?}"), op, inval);
        let mut op = FvCtl::new(FVCTL_CREATE_DOMAIN, 0, &create_spec(mem_kib));
        op._pad = pad;
        t.call(format_args!("create with padding {pad:?}"), op, inval);
    }
    let after = domains(&mut t);
    t.ensure(
        after == before,
        format_args!("{after} domains after refused creates, {before} before"),
    );

    let (rc, op) = bad!(
        t,
        FVCTL_CREATE_DOMAIN,
        0,
        &create_spec(mem_kib),
        0,
        "create"
    );
    ensure!(rc == 0, "create for the bad-input checks failed");
    let d = op.domid;
    let mut spec2 = create_spec(mem_kib);
    spec2.max_vcpus = 2;
    let (rc, op) = bad!(t, FVCTL_CREATE_DOMAIN, 0, &spec2, 0, "create with 2 vCPUs");
    ensure!(rc == 0, "create of a 2-vCPU domain failed");
    let d2 = op.domid;

    // SET_MEMMAP: 1..=8 entries, sorted, not overlapping, non-empty, types 1-5, pads 0.
    let entry = |addr: u64, size: u64, ty: u32| MemmapEntry {
        addr,
        size,
        ty,
        _pad: 0,
    };
    let good = [
        entry(0, 0xa_0000, 1),
        entry(0x10_0000, mem_kib * 1024 - 0x10_0000, 1),
    ];
    let memmap = |nr: u32, e: &[MemmapEntry]| {
        let mut m = SetMemmap {
            nr,
            ..SetMemmap::new_zeroed()
        };
        m.entries[..e.len()].copy_from_slice(e);
        m
    };
    let spoiled: [(&str, SetMemmap); 12] = [
        ("no entry", memmap(0, &good)),
        ("9 entries", memmap(9, &[good[0]; 8])),
        ("nr 0xffffffff", memmap(u32::MAX, &good)),
        (
            "padding",
            SetMemmap {
                _pad: 1,
                ..memmap(2, &good)
            },
        ),
        (
            "an empty entry",
            memmap(2, &[good[0], entry(0x10_0000, 0, 1)]),
        ),
        ("type 0", memmap(2, &[good[0], entry(0x10_0000, 0x1000, 0)])),
        ("type 6", memmap(2, &[good[0], entry(0x10_0000, 0x1000, 6)])),
        (
            "entry padding",
            memmap(2, &[good[0], MemmapEntry { _pad: 1, ..good[1] }]),
        ),
        (
            "overlapping entries",
            memmap(2, &[good[0], entry(0x9_0000, 0x2_0000, 2)]),
        ),
        ("unsorted entries", memmap(2, &[good[1], good[0]])),
        (
            "an entry wrapping at 2^64",
            memmap(2, &[good[0], entry(u64::MAX - 0xfff, 0x2000, 2)]),
        ),
        ("a duplicate entry", memmap(2, &[good[0], good[0]])),
    ];
    for (what, m) in &spoiled {
        bad!(
            t,
            FVCTL_SET_MEMMAP,
            d,
            m,
            inval,
            "set_memmap({d}) with {what}"
        );
    }
    let m = memmap(2, &good);
    bad!(
        t,
        FVCTL_SET_MEMMAP,
        NO_DOMAIN,
        &m,
        srch,
        "set_memmap({NO_DOMAIN})"
    );
    bad!(t, FVCTL_SET_MEMMAP, 0, &m, inval, "set_memmap(itself)");
    bad!(
        t,
        FVCTL_SET_MEMMAP,
        d,
        &m,
        0,
        "set_memmap({d}) with a good map"
    );

    // SEED_GRANT: gref < 8, flags 0 / permit_access / + readonly, a 32-bit frame.
    use guest_rt::xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY};
    let seed = |gref: u32, flags: u16, frame: u64| SeedGrant {
        gref,
        flags,
        domid: 0,
        frame,
    };
    let spoiled = [
        ("ref 8", seed(8, GTF_PERMIT_ACCESS, 0x10)),
        ("ref 0xffffffff", seed(u32::MAX, GTF_PERMIT_ACCESS, 0x10)),
        (
            "readonly without permit_access",
            seed(1, GTF_READONLY, 0x10),
        ),
        ("flags 0xffff", seed(1, 0xffff, 0x10)),
        (
            "GTF_reading",
            seed(1, GTF_PERMIT_ACCESS | GTF_READING, 0x10),
        ),
        ("frame 2^32", seed(1, GTF_PERMIT_ACCESS, 1 << 32)),
        ("frame 2^64-1", seed(1, GTF_PERMIT_ACCESS, u64::MAX)),
    ];
    for (what, g) in &spoiled {
        bad!(
            t,
            FVCTL_SEED_GRANT,
            d,
            g,
            inval,
            "seed_grant({d}) with {what}"
        );
    }
    let g = seed(1, GTF_PERMIT_ACCESS, 0x10);
    bad!(
        t,
        FVCTL_SEED_GRANT,
        NO_DOMAIN,
        &g,
        srch,
        "seed_grant({NO_DOMAIN})"
    );
    bad!(t, FVCTL_SEED_GRANT, 0, &g, inval, "seed_grant(itself)");
    bad!(t, FVCTL_SEED_GRANT, d, &g, 0, "seed_grant({d}) ref 1");

    // SET_VCPU_BOOT: an existing vCPU, rip and rbx below 4 GiB, padding 0.
    let boot = |vcpu: u32, rip: u64, rbx: u64, pad: u32| VcpuBoot {
        vcpu,
        _pad: pad,
        rip,
        rbx,
    };
    let spoiled = [
        ("vCPU 1 of 1", boot(1, 0x10_0000, START_INFO_GPA, 0)),
        (
            "vCPU 0xffffffff",
            boot(u32::MAX, 0x10_0000, START_INFO_GPA, 0),
        ),
        ("rip 4 GiB", boot(0, 1 << 32, START_INFO_GPA, 0)),
        ("rbx 4 GiB", boot(0, 0x10_0000, 1 << 32, 0)),
        ("padding", boot(0, 0x10_0000, START_INFO_GPA, 1)),
    ];
    for (what, b) in &spoiled {
        bad!(
            t,
            FVCTL_SET_VCPU_BOOT,
            d,
            b,
            inval,
            "set_vcpu_boot({d}) with {what}"
        );
    }

    // SCHED_SET: weight >= 1, cap <= 100 per vCPU, padding 0; nothing changes on error.
    let sp = |weight: u16, cap: u16, pad: u32| SchedParams {
        weight,
        cap,
        _pad: pad,
    };
    let was = sched_get(&mut t, d);
    let spoiled = [
        ("weight 0", sp(0, 0, 0)),
        ("cap 101 for 1 vCPU", sp(256, 101, 0)),
        ("cap 65535", sp(256, u16::MAX, 0)),
        ("padding", sp(512, 50, 1)),
    ];
    for (what, p) in &spoiled {
        bad!(
            t,
            FVCTL_SCHED_SET,
            d,
            p,
            inval,
            "sched_set({d}) with {what}"
        );
    }
    let now = sched_get(&mut t, d);
    t.ensure(
        (now.weight, now.cap) == (was.weight, was.cap),
        format_args!(
            "sched_get({d}) after refused sets: weight {} cap {}, before {} {}",
            now.weight, now.cap, was.weight, was.cap
        ),
    );
    let p = sp(512, 50, 0);
    bad!(
        t,
        FVCTL_SCHED_SET,
        NO_DOMAIN,
        &p,
        srch,
        "sched_set({NO_DOMAIN})"
    );
    bad!(
        t,
        FVCTL_SCHED_GET,
        NO_DOMAIN,
        &none,
        srch,
        "sched_get({NO_DOMAIN})"
    );
    bad!(
        t,
        FVCTL_SCHED_SET,
        d,
        &p,
        0,
        "sched_set({d}) weight 512 cap 50"
    );
    let now = sched_get(&mut t, d);
    t.ensure(
        (now.weight, now.cap) == (512, 50),
        format_args!(
            "sched_get({d}): weight {} cap {}, set 512 50",
            now.weight, now.cap
        ),
    );
    // As CREATE_DOMAIN and Xen's credit2: a cap is up to 100 % per vCPU.
    bad!(
        t,
        FVCTL_SCHED_SET,
        d2,
        &sp(256, 200, 0),
        0,
        "sched_set({d2}) cap 200 for 2 vCPUs"
    );
    bad!(
        t,
        FVCTL_SCHED_SET,
        d2,
        &sp(256, 201, 0),
        inval,
        "sched_set({d2}) cap 201 for 2 vCPUs"
    );

    // VCPU_INFO and SET_AFFINITY: an existing vCPU, padding 0, a hard affinity naming an
    // online CPU; nothing changes on error.
    let vi = |vcpu: u32, hard: u64, soft: u64, pad: u32| VcpuInfo {
        vcpu,
        _pad: pad,
        hard_affinity: hard,
        soft_affinity: soft,
        ..VcpuInfo::new_zeroed()
    };
    let spoiled = [
        ("vCPU 1 of 1", vi(1, 0, 0, 0)),
        ("vCPU 0xffffffff", vi(u32::MAX, 0, 0, 0)),
        ("padding", vi(0, 0, 0, 1)),
    ];
    for (what, q) in &spoiled {
        bad!(
            t,
            FVCTL_VCPU_INFO,
            d,
            q,
            inval,
            "vcpu_info({d}) with {what}"
        );
    }
    bad!(
        t,
        FVCTL_VCPU_INFO,
        NO_DOMAIN,
        &vi(0, 0, 0, 0),
        srch,
        "vcpu_info({NO_DOMAIN})"
    );
    let was = vcpu_info(&mut t, d);
    let spoiled = [
        ("no hard CPU", vi(0, 0, 1, 0)),
        ("only CPU 5 (offline)", vi(0, 1 << 5, 1, 0)),
        ("vCPU 1 of 1", vi(1, 1, 1, 0)),
        ("vCPU 0xffffffff", vi(u32::MAX, 1, 1, 0)),
        ("padding", vi(0, 1, 1, 1)),
    ];
    for (what, q) in &spoiled {
        bad!(
            t,
            FVCTL_SET_AFFINITY,
            d,
            q,
            inval,
            "set_affinity({d}) with {what}"
        );
    }
    bad!(
        t,
        FVCTL_SET_AFFINITY,
        NO_DOMAIN,
        &vi(0, 1, 1, 0),
        srch,
        "set_affinity({NO_DOMAIN})"
    );
    let now = vcpu_info(&mut t, d);
    t.ensure(
        (now.hard_affinity, now.soft_affinity) == (was.hard_affinity, was.soft_affinity),
        format_args!(
            "vcpu_info({d}) after refused sets: hard {:#x} soft {:#x}, before {:#x} {:#x}",
            now.hard_affinity, now.soft_affinity, was.hard_affinity, was.soft_affinity
        ),
    );
    bad!(
        t,
        FVCTL_SET_AFFINITY,
        d,
        &vi(0, 1, 1, 0),
        0,
        "set_affinity({d}) hard 0x1 soft 0x1"
    );

    // CONSOLE_READ: at most 64 KiB, padding 0, a writable buffer.
    let mut buf = [0u8; 64];
    let cr = |buf: u64, len: u32, pad: u32| ConsoleRead {
        pos: 0,
        buf,
        len,
        _pad: pad,
    };
    let at = buf.as_mut_ptr() as u64;
    let spoiled = [
        ("64 KiB + 1", cr(at, (64 << 10) + 1, 0)),
        ("0xffffffff bytes", cr(at, u32::MAX, 0)),
        ("padding", cr(at, 64, 1)),
    ];
    for (what, c) in &spoiled {
        bad!(
            t,
            FVCTL_CONSOLE_READ,
            0,
            c,
            inval,
            "console_read with {what}"
        );
    }
    bad!(
        t,
        FVCTL_CONSOLE_READ,
        0,
        &cr(UNMAPPED, 64, 0),
        err(Errno::EFAULT),
        "console_read into an unmapped buffer"
    );
    let (_, op) = bad!(
        t,
        FVCTL_CONSOLE_READ,
        0,
        &cr(at, 64, 0),
        0,
        "console_read of 64 bytes"
    );
    let got = op.payload::<ConsoleRead>();
    t.ensure(
        got.len == 64 && got.pos >= 64 && buf.iter().any(|&b| b != 0),
        format_args!("console_read of 64 bytes: len {} pos {}", got.len, got.pos),
    );

    for dom in [d, d2] {
        bad!(t, FVCTL_DESTROY, dom, &none, 0, "destroy({dom})");
        let gone = info(dom)?.is_none();
        t.ensure(
            gone,
            format_args!("domain {dom} still listed after destroy"),
        );
    }
    println!(
        "toolstack: bad input: {} of {} checks as documented",
        t.total - t.failures,
        t.total
    );
    ensure!(
        t.failures == 0,
        "{} bad-input result(s) differ from the documentation",
        t.failures
    );
    Ok(())
}

fn populate(d: u16, mem_kib: u64) -> TestResult {
    let p = Populate {
        target_kib: mem_kib,
        populated_kib: 0,
    };
    for _ in 0..1000 {
        let (rc, op) = call(FVCTL_POPULATE, d, &p);
        match rc {
            0 => {
                let got = op.payload::<Populate>().populated_kib;
                ensure!(got >= mem_kib, "populate reported {got} KiB of {mem_kib}");
                return Ok(());
            }
            1 => continue,
            _ => fail!("populate({d}, {mem_kib} KiB) returned {}", describe(rc)),
        }
    }
    fail!("populate({d}) never finished")
}

fn copy(d: u16, gpa: u64, bytes: &[u8]) -> TestResult {
    let c = CopyTo {
        gpa,
        buf: bytes.as_ptr() as u64,
        len: bytes.len() as u64,
    };
    expect("copy_to", FVCTL_COPY_TO, d, &c, 0).map(|_| ())
}

/// Builds, runs and destroys one domU; returns its id.
fn cycle(image: &[u8], mem_kib: u64, first: bool) -> Result<u16, Fail> {
    let none = [0u8; 0];
    let img =
        pvh_loader::parse_pvh(image).map_err(|e| Fail::new(format_args!("own image: {e}")))?;
    let op = expect("create", FVCTL_CREATE_DOMAIN, 0, &create_spec(mem_kib), 0)?;
    let d = op.domid;
    populate(d, mem_kib)?;
    let ram = mem_kib * 1024;
    pvh_loader::load_segments(&img, |paddr, bytes, _zero| copy(d, paddr, bytes))?;
    let map = [
        HvmMemmapTableEntry {
            addr: 0,
            size: 0xa_0000,
            ty: 1,
            reserved: 0,
        },
        HvmMemmapTableEntry {
            addr: 0x10_0000,
            size: ram - 0x10_0000,
            ty: 1,
            reserved: 0,
        },
    ];
    for (i, e) in map.iter().enumerate() {
        copy(d, MEMMAP_GPA + i as u64 * 24, e.as_bytes())?;
    }
    copy(d, CMDLINE_GPA, CHILD_CMDLINE)?;
    let si = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: 0,
        modlist_paddr: 0,
        cmdline_paddr: CMDLINE_GPA,
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_GPA,
        memmap_entries: 2,
        reserved: 0,
    };
    copy(d, START_INFO_GPA, si.as_bytes())?;
    let mut mm = SetMemmap {
        nr: 2,
        ..SetMemmap::new_zeroed()
    };
    for (i, e) in map.iter().enumerate() {
        mm.entries[i] = MemmapEntry {
            addr: e.addr,
            size: e.size,
            ty: e.ty,
            _pad: 0,
        };
    }
    expect("set_memmap", FVCTL_SET_MEMMAP, d, &mm, 0)?;
    let boot = VcpuBoot {
        vcpu: 0,
        _pad: 0,
        rip: u64::from(img.entry),
        rbx: START_INFO_GPA,
    };
    expect("set_vcpu_boot", FVCTL_SET_VCPU_BOOT, d, &boot, 0)?;
    let i = info(d)?.ok_or_else(|| Fail::new(format_args!("domain {d} not listed")))?;
    ensure!(
        i.flags & (dominfo::PAUSED | dominfo::CREATING) == dominfo::PAUSED | dominfo::CREATING,
        "new domain {d} flags {:#x}: not paused and creating",
        i.flags
    );
    ensure!(
        i.tot_kib >= mem_kib && i.max_kib == mem_kib && i.nr_vcpus == 1 && i.online_vcpus == 1,
        "domain {d}: {} KiB of {} KiB, {}/{} vCPUs online",
        i.tot_kib,
        i.max_kib,
        i.online_vcpus,
        i.nr_vcpus
    );
    expect("unpause", FVCTL_UNPAUSE, d, &none, 0)?;
    if first {
        let late = expect(
            "boot state after start",
            FVCTL_SET_VCPU_BOOT,
            d,
            &boot,
            err(Errno::EBUSY),
        );
        let twice = expect("unpause twice", FVCTL_UNPAUSE, d, &none, err(Errno::EINVAL));
        late?;
        twice?;
    }
    // Wait (sleeping on our timer, so the child runs) until it has shut down.
    let start = evtchn::now()?;
    let reason = loop {
        let i = info(d)?
            .ok_or_else(|| Fail::new(format_args!("domain {d} vanished before destroy")))?;
        if i.flags & dominfo::SHUTDOWN != 0 {
            break i.shutdown_reason;
        }
        let now = evtchn::now()?;
        ensure!(
            now - start < 30_000_000_000,
            "domain {d} did not shut down in 30 s"
        );
        evtchn::sleep_until(now + 1_000_000)?;
    };
    ensure!(
        reason == SHUTDOWN_POWEROFF,
        "domain {d} shut down with reason {reason}: the child failed its checks"
    );
    expect("destroy", FVCTL_DESTROY, d, &none, 0)?;
    ensure!(info(d)?.is_none(), "domain {d} still listed after destroy");
    Ok(d)
}

/// `HVMOP_get_param(DOMID_SELF, index)`.
fn hvm_param(index: u32) -> Result<u64, Fail> {
    let mut p = XenHvmParam {
        domid: DOMID_SELF,
        index,
        ..Default::default()
    };
    // SAFETY: `p` is a live xen_hvm_param the hypervisor fills in.
    let rc = unsafe {
        hypercall2(
            HYPERVISOR_HVM_OP,
            HVMOP_GET_PARAM,
            core::ptr::from_mut(&mut p) as u64,
        )
    };
    ensure!(
        rc == 0,
        "HVMOP_get_param({index}) returned {}",
        describe(rc)
    );
    Ok(p.value)
}

/// The domU's end of its console ring page (`struct xencons_interface`), identity-mapped.
struct ConsoleRing {
    base: usize,
}

impl ConsoleRing {
    fn idx(&self, off: usize) -> u32 {
        // SAFETY: `base` is the ring page (checked to be inside our reserved memory map,
        // identity-mapped below 4 GiB), `off` an aligned index field of it.
        let v = unsafe { core::ptr::read_volatile((self.base + off) as *const u32) };
        fence(Ordering::SeqCst);
        v
    }

    fn set_idx(&self, off: usize, v: u32) {
        fence(Ordering::SeqCst);
        // SAFETY: as in `idx`; the guest owns this index (in_cons or out_prod).
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) };
    }

    /// Copies `bytes` into the output ring, waiting (with the timer) while it is full.
    fn write(&self, port: u32, bytes: &[u8]) -> TestResult {
        let out = offset_of!(XenconsInterface, output);
        for &b in bytes {
            let prod = self.idx(offset_of!(XenconsInterface, out_prod));
            while prod.wrapping_sub(self.idx(offset_of!(XenconsInterface, out_cons)))
                >= XENCONS_OUT_SIZE as u32
            {
                evtchn::send(port);
                evtchn::sleep_until(evtchn::now()? + 10_000_000)?;
            }
            let at = out + prod as usize % XENCONS_OUT_SIZE;
            // SAFETY: `at` is inside the output array of the ring page.
            unsafe { core::ptr::write_volatile((self.base + at) as *mut u8, b) };
            self.set_idx(offset_of!(XenconsInterface, out_prod), prod.wrapping_add(1));
        }
        evtchn::send(port);
        Ok(())
    }

    /// The next input byte, if the backend has produced one.
    fn read(&self, port: u32) -> Option<u8> {
        let cons = self.idx(offset_of!(XenconsInterface, in_cons));
        if cons == self.idx(offset_of!(XenconsInterface, in_prod)) {
            return None;
        }
        let at = offset_of!(XenconsInterface, input) + cons as usize % XENCONS_IN_SIZE;
        // SAFETY: `at` is inside the input array of the ring page.
        let b = unsafe { core::ptr::read_volatile((self.base + at) as *const u8) };
        self.set_idx(offset_of!(XenconsInterface, in_cons), cons.wrapping_add(1));
        evtchn::send(port);
        Some(b)
    }
}

/// The `console` mode: a domU of `xl` talking on its PV console until destroyed.
fn console(si: &StartInfo) -> TestResult {
    ensure!(
        !guest_rt::is_control_domain()?,
        "an xl-built domU claims XENFEAT_dom0"
    );
    let pfn = hvm_param(HVM_PARAM_CONSOLE_PFN)?;
    let port = hvm_param(HVM_PARAM_CONSOLE_EVTCHN)?;
    let gpa = pfn.saturating_mul(4096);
    ensure!(
        gpa < (1 << 32) && si.memmap_covers(gpa, gpa + 4096, XEN_HVM_MEMMAP_TYPE_RESERVED),
        "console pfn {pfn:#x} is not a reserved page of our memory map"
    );
    ensure!(
        port != 0 && port < evtchn::NR_PORTS as u64,
        "console event channel {port} out of range"
    );
    let port = port as u32;
    evtchn::init_with_timer()?;
    let ring = ConsoleRing { base: gpa as usize };
    println!("toolstack: console: ring at pfn {pfn:#x}, port {port}");
    ring.write(port, b"toolstack: console ready\r\n")?;
    let mut line = [0u8; 64];
    let mut len = 0;
    loop {
        while let Some(b) = ring.read(port) {
            if b == b'\r' || b == b'\n' {
                if len > 0 {
                    line[..len].reverse();
                    ring.write(port, b"REPLY=")?;
                    ring.write(port, &line[..len])?;
                    ring.write(port, b"\r\n")?;
                    len = 0;
                }
            } else if len < line.len() {
                line[len] = b;
                len += 1;
            }
        }
        evtchn::sleep_until(evtchn::now()? + 20_000_000)?;
    }
}

fn own_image(si: &StartInfo) -> Result<&'static [u8], Fail> {
    ensure!(
        si.raw.nr_modules >= 1 && si.raw.modlist_paddr != 0,
        "no module: give this guest its own image as module 1"
    );
    // SAFETY: the hypervisor wrote the module list in our RAM (identity-mapped below
    // 4 GiB) and placed the module there; nothing writes either afterwards.
    let m = unsafe { core::ptr::read_unaligned(si.raw.modlist_paddr as *const HvmModlistEntry) };
    // SAFETY: as above; the module's bytes stay in place for our whole life.
    Ok(unsafe { core::slice::from_raw_parts(m.paddr as *const u8, m.size as usize) })
}

fn test_main(si: &StartInfo) -> TestResult {
    if si
        .cmdline()
        .is_some_and(|c| c.split_whitespace().any(|w| w == "child"))
    {
        return child();
    }
    if si
        .cmdline()
        .is_some_and(|c| c.split_whitespace().any(|w| w == "console"))
    {
        return console(si);
    }
    let cycles = si.arg_u64("cycles", 100)?;
    let mem_kib = si.arg_u64("mem_mib", 4)? * 1024;
    ensure!(
        guest_rt::is_control_domain()?,
        "not the control domain (dom0 note ignored?)"
    );
    evtchn::init_with_timer()?;
    let image = own_image(si)?;
    let baseline = free_kib()?;
    error_paths(mem_kib)?;
    bad_input(mem_kib)?;
    let t0 = evtchn::now()?;
    let mut last = 0;
    for n in 0..cycles {
        last = cycle(image, mem_kib, n == 0)?;
        if n == 0 {
            println!("toolstack: cycle 1: domain {last} built, ran its checks, destroyed");
        }
    }
    let ms = (evtchn::now()? - t0) / 1_000_000;
    // A destroyed domain's memory goes back when its last reference drops, which with
    // several CPUs may be a moment later on another CPU (as with Xen, where `xl destroy`
    // waits for the domain to be gone): wait up to a second of system time.
    let mut after = free_kib()?;
    let deadline = evtchn::now()?.saturating_add(1_000_000_000);
    while after != baseline && evtchn::now()? < deadline {
        guest_rt::hypercall::sched_yield();
        after = free_kib()?;
    }
    println!(
        "toolstack: {cycles} create/run/destroy cycles in {ms} ms (last domain {last}); free memory {after} KiB, {baseline} KiB before"
    );
    ensure!(
        after == baseline,
        "free memory did not return to its baseline: {after} KiB now, {baseline} KiB before"
    );
    Ok(())
}
