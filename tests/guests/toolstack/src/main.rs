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
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, hypercall1};
use guest_rt::xen_abi::fvctl::*;
use guest_rt::xen_abi::hvm::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};
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
    let t0 = evtchn::now()?;
    let mut last = 0;
    for n in 0..cycles {
        last = cycle(image, mem_kib, n == 0)?;
        if n == 0 {
            println!("toolstack: cycle 1: domain {last} built, ran its checks, destroyed");
        }
    }
    let ms = (evtchn::now()? - t0) / 1_000_000;
    let after = free_kib()?;
    println!(
        "toolstack: {cycles} create/run/destroy cycles in {ms} ms (last domain {last}); free memory {after} KiB, {baseline} KiB before"
    );
    ensure!(
        after == baseline,
        "free memory did not return to its baseline: {after} KiB now, {baseline} KiB before"
    );
    Ok(())
}
