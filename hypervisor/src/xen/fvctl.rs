//! `HYPERVISOR_fvctl` (47): ferrovisor's toolstack interface, for the control domain
//! only (layouts and command list: `xen_abi::fvctl`; prose: `docs/toolstack.md`).
//!
//! Every argument is checked as guest input; every command does bounded work (populate
//! continues in the next call). A domain built here is created paused and empty, given
//! RAM, contents, a memory map and a boot vCPU state, then unpaused; it stays after it
//! shuts down until the toolstack destroys it.

use super::guest_access::{copy_from_guest, copy_to_guest, read_arg, write_arg};
use super::{Cx, Reply};
use crate::domain::build::{self, DomainSpec};
use crate::domain::memory::{MemoryError, CHUNK};
use crate::domain::{runstate, vflags, Domain, DomainEnd, Life, NO_CPU};
use crate::hvm::{Backend, PvhEntry};
use crate::mm::phys;
use alloc::sync::Arc;
use alloc::vec;
use core::sync::atomic::Ordering;
use xen_abi::errno::Errno;
use xen_abi::fvctl::*;
use xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READONLY};

/// Highest domid the toolstack may use (Xen's `DOMID_FIRST_RESERVED` - 1).
const DOMID_MAX: u16 = 0x7fef;
/// Where the search for a free domid starts.
static NEXT_DOMID: core::sync::atomic::AtomicU16 = core::sync::atomic::AtomicU16::new(1);
/// Most maptrack frames a domain may have.
const MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Largest console read.
const CONSOLE_READ_MAX: u32 = 64 << 10;
/// Reserved grant entries the toolstack may seed.
const RESERVED_GRANTS: u32 = 8;

/// `HYPERVISOR_fvctl(op)`.
pub fn fvctl<B: Backend>(cx: &mut Cx<'_, B>, arg: u64) -> Result<Reply, Errno> {
    if !cx.dom.is_control() {
        return Err(Errno::EPERM);
    }
    let mut op: FvCtl = read_arg(cx, arg)?;
    if op.version != FVCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    if op._pad != [0; 3] {
        return Err(Errno::EINVAL);
    }
    let ret = match op.cmd {
        FVCTL_CREATE_DOMAIN => create(cx, &mut op)?,
        FVCTL_POPULATE => populate(cx, &mut op)?,
        FVCTL_COPY_TO => copy_to(cx, &op)?,
        FVCTL_SET_MEMMAP => set_memmap(cx, &op)?,
        FVCTL_SET_VCPU_BOOT => set_vcpu_boot(cx, &op)?,
        FVCTL_SEED_GRANT => seed_grant(cx, &op)?,
        FVCTL_PAUSE => {
            let d = other(cx, op.domid)?;
            running(&d)?;
            cx.hv.pause(&d);
            0
        }
        FVCTL_UNPAUSE => unpause(cx, &op)?,
        FVCTL_SHUTDOWN => {
            let d = other(cx, op.domid)?;
            let s: Shutdown = op.payload();
            if s.reason > 5 || s._pad != 0 {
                return Err(Errno::EINVAL);
            }
            running(&d)?;
            cx.hv.end_domain(&d, DomainEnd::Shutdown(s.reason));
            0
        }
        FVCTL_DESTROY => {
            let d = other(cx, op.domid)?;
            cx.hv.destroy_domain(&d);
            0
        }
        FVCTL_DOMAIN_INFO => {
            let d = cx
                .hv
                .domains
                .all()
                .into_iter()
                .find(|d| d.id >= op.domid)
                .ok_or(Errno::ESRCH)?;
            op.domid = d.id;
            op.set_payload(&domain_info(cx, &d));
            0
        }
        FVCTL_CONSOLE_READ => {
            let mut c: ConsoleRead = op.payload();
            if c.len > CONSOLE_READ_MAX || c._pad != 0 {
                return Err(Errno::EINVAL);
            }
            let mut buf = vec![0u8; c.len as usize];
            let (n, next) = crate::console::ring_read(c.pos, &mut buf);
            copy_to_guest(cx, c.buf, &buf[..n])?;
            c.pos = next;
            c.len = n as u32;
            op.set_payload(&c);
            0
        }
        FVCTL_PHYSINFO => {
            let (total, free) = phys::FRAMES
                .lock()
                .as_ref()
                .map_or((0, 0), |f| (f.total_frames(), f.free_frames()));
            let info = PhysInfo {
                // The CPUs vCPUs are scheduled on.
                nr_cpus: crate::arch::x86::smp::usable_mask().count_ones(),
                cpu_khz: (crate::time::tsc_hz() / 1000) as u32,
                total_kib: total * 4,
                free_kib: free * 4,
                virt: if B::NAME == "VMX" { 1 } else { 2 },
                nr_domains: cx.hv.domains.len() as u32,
                uptime_ns: crate::time::now().1,
            };
            op.set_payload(&info);
            0
        }
        FVCTL_SCHED_GET => {
            let d = cx.target(op.domid)?;
            let p = cx.hv.sched.lock().params(d.id).ok_or(Errno::ESRCH)?;
            op.set_payload(&SchedParams {
                weight: p.weight,
                cap: p.cap,
                _pad: 0,
            });
            0
        }
        FVCTL_SCHED_SET => {
            let d = cx.target(op.domid)?;
            let p: SchedParams = op.payload();
            // As CREATE_DOMAIN (and Xen's credit2): up to 100 % of a CPU per vCPU.
            let max_cap = 100u32.saturating_mul(d.vcpus.len() as u32);
            if p.weight == 0 || u32::from(p.cap) > max_cap || p._pad != 0 {
                return Err(Errno::EINVAL);
            }
            let params = sched::Params {
                weight: p.weight,
                cap: p.cap,
            };
            cx.hv
                .with_sched(|s| sched::Scheduler::adjust(s, d.id, params, crate::time::now().1));
            0
        }
        FVCTL_VCPU_INFO => {
            let d = cx.target(op.domid)?;
            let mut info: VcpuInfo = op.payload();
            let v = d.vcpu(info.vcpu).ok_or(Errno::EINVAL)?;
            if info._pad != 0 {
                return Err(Errno::EINVAL);
            }
            let now = crate::time::now().1;
            let rs = v.runstate.lock().snapshot(now);
            let aff = cx.hv.sched.lock().affinity(v.sref()).ok_or(Errno::ESRCH)?;
            info.flags = vcpu_flags(cx, &d, v.id);
            // The CPU it runs on, else the one it last ran on (as Xen's vcpu-list).
            info.cpu = match v.cpu.load(Ordering::SeqCst) {
                NO_CPU => cx.hv.sched.lock().last_cpu(v.sref()).unwrap_or(0),
                c => c,
            };
            info.cpu_time_ns = rs.time[runstate::RUNNING];
            info.hard_affinity = aff.hard.0;
            info.soft_affinity = aff.soft.0;
            op.set_payload(&info);
            0
        }
        FVCTL_SET_AFFINITY => {
            let d = cx.target(op.domid)?;
            let info: VcpuInfo = op.payload();
            let v = d.vcpu(info.vcpu).ok_or(Errno::EINVAL)?;
            if info._pad != 0 {
                return Err(Errno::EINVAL);
            }
            let aff = sched::Affinity {
                hard: sched::CpuMask(info.hard_affinity),
                soft: sched::CpuMask(info.soft_affinity),
            };
            cx.hv
                .with_sched(|s| {
                    sched::Scheduler::set_affinity(s, v.sref(), aff, crate::time::now().1)
                })
                .map_err(|_| Errno::EINVAL)?;
            0
        }
        _ => return Err(Errno::ENOSYS),
    };
    write_arg(cx, arg, &op)?;
    Ok(Reply::Value(ret))
}

/// Another domain than the caller (the control domain cannot pause, shut down or destroy
/// itself through the toolstack interface).
fn other<B: Backend>(cx: &Cx<'_, B>, domid: u16) -> Result<Arc<Domain<B>>, Errno> {
    if cx.is_self(domid) {
        return Err(Errno::EINVAL);
    }
    cx.target(domid)
}

/// A domain the toolstack is still building (never unpaused): its memory and boot state
/// may be set.
fn building<B: Backend>(cx: &Cx<'_, B>, domid: u16) -> Result<Arc<Domain<B>>, Errno> {
    let d = other(cx, domid)?;
    if d.started.load(Ordering::SeqCst) || d.life() != Life::Running {
        return Err(Errno::EBUSY);
    }
    Ok(d)
}

fn running<B: Backend>(d: &Domain<B>) -> Result<(), Errno> {
    match d.life() {
        Life::Running => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

fn create<B: Backend>(cx: &mut Cx<'_, B>, op: &mut FvCtl) -> Result<u64, Errno> {
    let c: CreateDomain = op.payload();
    let max_vcpus = acpi_tables::MAX_VCPUS.min(evtchn::MAX_VCPUS);
    let total_kib = phys::FRAMES
        .lock()
        .as_ref()
        .map_or(0, |f| f.total_frames() * 4);
    let valid = (1..=max_vcpus).contains(&c.max_vcpus)
        && c.flags == FVCTL_CREATE_FLAGS
        && c.max_mem_kib > 0
        && c.max_mem_kib.is_multiple_of(4)
        && c.max_mem_kib <= total_kib
        && (1..=crate::domain::MAX_GRANT_FRAMES as u32).contains(&c.max_grant_frames)
        && (1..=MAX_MAPTRACK_FRAMES).contains(&c.max_maptrack_frames)
        && (63..evtchn::NR_PORTS).contains(&c.max_evtchn_port)
        && c.cap <= 100 * c.max_vcpus as u16;
    if !valid {
        return Err(Errno::EINVAL);
    }
    let name_len = c.name.iter().position(|&b| b == 0).unwrap_or(c.name.len());
    let name = core::str::from_utf8(&c.name[..name_len]).map_err(|_| Errno::EINVAL)?;
    let domid = match op.domid {
        // As Xen: the next free id after the last one given, so a domain built again
        // (xl's restart) gets a new id and stale references to the old one fail.
        0 => {
            let start = NEXT_DOMID.load(Ordering::Relaxed);
            let id = (0..DOMID_MAX)
                .map(|i| (start - 1 + i) % DOMID_MAX + 1)
                .find(|&id| cx.hv.domains.get(id).is_none())
                .ok_or(Errno::ENOSPC)?;
            NEXT_DOMID.store(id % DOMID_MAX + 1, Ordering::Relaxed);
            id
        }
        id if id <= DOMID_MAX => id,
        _ => return Err(Errno::EINVAL),
    };
    if cx.hv.domains.get(domid).is_some() {
        return Err(Errno::EEXIST);
    }
    cx.hv.note_baseline();
    let spec = DomainSpec {
        domid,
        name,
        vcpus: c.max_vcpus,
        params: crate::domain::SchedParams {
            weight: if c.weight == 0 { 256 } else { c.weight },
            cap: c.cap,
            cpus: 0,
        },
        privileged: false,
        managed: true,
        max_mem: c.max_mem_kib * 1024,
        max_port: c.max_evtchn_port,
        max_grant_frames: c.max_grant_frames,
        max_maptrack_frames: c.max_maptrack_frames,
    };
    let dom = build::create_empty(&cx.hv.backend, &spec).map_err(|e| {
        log::warn!("toolstack: creating domain {domid} ({name}) failed: {e}");
        Errno::ENOMEM
    })?;
    if !cx.hv.add_domain(Arc::new(dom)) {
        return Err(Errno::EEXIST);
    }
    log::info!(
        "domain {domid} ({name}) created by the toolstack: {} vCPUs, up to {} MiB",
        c.max_vcpus,
        c.max_mem_kib >> 10
    );
    op.domid = domid;
    Ok(0)
}

fn populate<B: Backend>(cx: &mut Cx<'_, B>, op: &mut FvCtl) -> Result<u64, Errno> {
    let d = building(cx, op.domid)?;
    let mut p: Populate = op.payload();
    let target = p.target_kib.checked_mul(1024).ok_or(Errno::EINVAL)?;
    if target > d.max_mem.div_ceil(CHUNK) * CHUNK {
        return Err(Errno::EINVAL);
    }
    let ram = d
        .mem
        .populate(target, FVCTL_POPULATE_STEP_KIB * 1024)
        .map_err(|e| match e {
            MemoryError::OutOfMemory { .. } => Errno::ENOMEM,
            MemoryError::CoversHole { .. } => Errno::EINVAL,
            MemoryError::P2m(_) => Errno::ENOMEM,
        })?;
    p.populated_kib = ram / 1024;
    op.set_payload(&p);
    Ok(u64::from(ram < target))
}

fn copy_to<B: Backend>(cx: &mut Cx<'_, B>, op: &FvCtl) -> Result<u64, Errno> {
    let d = building(cx, op.domid)?;
    let c: CopyTo = op.payload();
    let end = c.gpa.checked_add(c.len).ok_or(Errno::EINVAL)?;
    if c.len > FVCTL_COPY_MAX || end > d.mem.ram_size() {
        return Err(Errno::EINVAL);
    }
    let mut buf = vec![0u8; 4096];
    let mut done = 0u64;
    while done < c.len {
        let n = (c.len - done).min(buf.len() as u64) as usize;
        copy_from_guest(cx, c.buf.wrapping_add(done), &mut buf[..n])?;
        d.mem
            .write(c.gpa + done, &buf[..n])
            .map_err(|_| Errno::EFAULT)?;
        done += n as u64;
    }
    Ok(0)
}

fn set_memmap<B: Backend>(cx: &mut Cx<'_, B>, op: &FvCtl) -> Result<u64, Errno> {
    let d = building(cx, op.domid)?;
    let m: SetMemmap = op.payload();
    let nr = m.nr as usize;
    if nr == 0 || nr > FVCTL_MEMMAP_MAX || m._pad != 0 {
        return Err(Errno::EINVAL);
    }
    let mut map = arrayvec::ArrayVec::new();
    let mut prev_end = 0u64;
    for e in &m.entries[..nr] {
        let end = e.addr.checked_add(e.size).ok_or(Errno::EINVAL)?;
        if e.size == 0 || e.addr < prev_end || !(1..=5).contains(&e.ty) || e._pad != 0 {
            return Err(Errno::EINVAL);
        }
        prev_end = end;
        map.push((e.addr, e.size, e.ty));
    }
    *d.e820.lock() = map;
    Ok(0)
}

fn set_vcpu_boot<B: Backend>(cx: &mut Cx<'_, B>, op: &FvCtl) -> Result<u64, Errno> {
    let d = building(cx, op.domid)?;
    let b: VcpuBoot = op.payload();
    let v = d.vcpu(b.vcpu).ok_or(Errno::EINVAL)?;
    let (rip, rbx) = (
        u32::try_from(b.rip).map_err(|_| Errno::EINVAL)?,
        u32::try_from(b.rbx).map_err(|_| Errno::EINVAL)?,
    );
    if b._pad != 0 {
        return Err(Errno::EINVAL);
    }
    build::set_boot_vcpu(&cx.hv.backend, &d, v, PvhEntry { rip, rbx }).map_err(|e| {
        log::warn!("toolstack: boot state of d{}v{}: {e}", d.id, b.vcpu);
        Errno::ENOMEM
    })?;
    Ok(0)
}

fn seed_grant<B: Backend>(cx: &mut Cx<'_, B>, op: &FvCtl) -> Result<u64, Errno> {
    let d = building(cx, op.domid)?;
    let g: SeedGrant = op.payload();
    let frame = u32::try_from(g.frame).map_err(|_| Errno::EINVAL)?;
    let flags_ok =
        g.flags == 0 || g.flags == GTF_PERMIT_ACCESS || g.flags == GTF_PERMIT_ACCESS | GTF_READONLY;
    if g.gref >= RESERVED_GRANTS || !flags_ok {
        return Err(Errno::EINVAL);
    }
    let table = {
        let mut st = d.st.lock();
        if st.grant_frames.is_empty() {
            let f = phys::alloc_zeroed(1, 1).ok_or(Errno::ENOMEM)?;
            st.grant_frames.push(f);
        }
        st.grant_frames[0]
    };
    // grant_entry_v1: flags u16, domid u16, frame u32. The domain has never run, so no
    // one else writes the entry; flags go last all the same, as a granting guest does.
    let at = table + u64::from(g.gref) * 8;
    phys::write_bytes(at + 2, &g.domid.to_le_bytes());
    phys::write_bytes(at + 4, &frame.to_le_bytes());
    phys::write_bytes(at, &g.flags.to_le_bytes());
    Ok(0)
}

fn unpause<B: Backend>(cx: &mut Cx<'_, B>, op: &FvCtl) -> Result<u64, Errno> {
    let d = other(cx, op.domid)?;
    running(&d)?;
    if d.pause_count.load(Ordering::SeqCst) == 0 {
        return Err(Errno::EINVAL);
    }
    if !d.started.load(Ordering::SeqCst) {
        // The first unpause starts it: something must be able to run.
        if d.vcpus.iter().all(|v| v.has(vflags::DOWN)) {
            return Err(Errno::EINVAL);
        }
        d.started.store(true, Ordering::SeqCst);
        log::info!("domain {} ({}) starts", d.id, d.name);
    }
    cx.hv.unpause(&d);
    Ok(0)
}

fn vcpu_flags<B: Backend>(cx: &Cx<'_, B>, d: &Domain<B>, vcpu: u32) -> u32 {
    let Some(v) = d.vcpu(vcpu) else { return 0 };
    let mut f = 0;
    if !v.has(vflags::DOWN) {
        f |= vcpuinfo::ONLINE;
    }
    if v.has(vflags::BLOCKED) {
        f |= vcpuinfo::BLOCKED;
    }
    if v.cpu.load(Ordering::SeqCst) != NO_CPU || (d.id == cx.dom.id && vcpu == cx.vcpu.id) {
        f |= vcpuinfo::RUNNING;
    }
    f
}

fn domain_info<B: Backend>(cx: &Cx<'_, B>, d: &Domain<B>) -> DomainInfo {
    let now = crate::time::now().1;
    let life = d.life();
    let mut flags = 0;
    let mut shutdown_reason = 0;
    if d.is_control() {
        flags |= dominfo::CONTROL;
    }
    if d.pause_count.load(Ordering::SeqCst) > 0 {
        flags |= dominfo::PAUSED;
    }
    if !d.started.load(Ordering::SeqCst) {
        flags |= dominfo::CREATING;
    }
    match life {
        Life::Running => {}
        Life::Ended(end) => {
            flags |= dominfo::SHUTDOWN;
            shutdown_reason = match end {
                DomainEnd::Shutdown(r) => r,
                _ => 3,
            };
        }
        Life::Dying => flags |= dominfo::DYING,
    }
    let vf: arrayvec::ArrayVec<u32, 64> = (0..d.vcpus.len().min(64) as u32)
        .map(|i| vcpu_flags(cx, d, i))
        .collect();
    let online: arrayvec::ArrayVec<u32, 64> = vf
        .iter()
        .copied()
        .filter(|f| f & vcpuinfo::ONLINE != 0)
        .collect();
    if online.iter().any(|f| f & vcpuinfo::RUNNING != 0) {
        flags |= dominfo::RUNNING;
    } else if !online.is_empty() && online.iter().all(|f| f & vcpuinfo::BLOCKED != 0) {
        flags |= dominfo::BLOCKED;
    }
    let cpu_time_ns = d
        .vcpus
        .iter()
        .map(|v| v.runstate.lock().snapshot(now).time[runstate::RUNNING])
        .fold(0u64, u64::wrapping_add);
    let params = cx.hv.sched.lock().params(d.id);
    let mut name = [0u8; FVCTL_NAME_LEN];
    let n = d.name.len().min(name.len());
    name[..n].copy_from_slice(&d.name.as_bytes()[..n]);
    DomainInfo {
        domid: d.id,
        weight: params.map_or(d.params.weight, |p| p.weight),
        flags,
        shutdown_reason,
        nr_vcpus: d.vcpus.len() as u32,
        online_vcpus: online.len() as u32,
        cap: params.map_or(d.params.cap, |p| p.cap),
        _pad: 0,
        tot_kib: d.mem.host_frames() * 4,
        max_kib: d.max_mem / 1024,
        held_kib: d.frames_held() * 4,
        cpu_time_ns,
        name,
    }
}
