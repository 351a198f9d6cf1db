//! dom0 access to the hypervisor, through the Linux Xen devices:
//!
//! * [`Toolstack`]: ferrovisor's toolstack interface (`fvctl`, see
//!   `xen_abi::fvctl` and `docs/toolstack.md`) and the few Xen hypercalls the
//!   toolstack issues on other domains' behalf (HVM parameters, unbound event
//!   channels), all through `/dev/xen/privcmd`;
//! * [`Evtchn`]: `/dev/xen/evtchn` (bind, notify, wait for events);
//! * [`Gntdev`]: `/dev/xen/gntdev` (map another domain's granted page);
//! * [`XenbusBackend`]: `/dev/xen/xenbus_backend` (dom0 kernel's xenstore ring).
//!
//! Memory shared with the kernel or other domains is reached only through
//! [`sys`], the one module with `unsafe` code.
#![deny(unsafe_code)]

mod sys;

pub use sys::{GrantMap, HypercallBuf};
pub use xen_abi::fvctl::{
    dominfo, vcpuinfo, DomainInfo, MemmapEntry, PhysInfo, SchedParams, VcpuInfo,
};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use xen_abi::fvctl::{self as fv, FvCtl};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Linux ioctl numbers (`include/uapi/xen/*.h`, computed as the kernel does).
pub(crate) mod nr {
    pub const PRIVCMD_HYPERCALL: u64 = 0x0030_5000;
    pub const EVTCHN_BIND_VIRQ: u64 = 0x0004_4500;
    pub const EVTCHN_BIND_INTERDOMAIN: u64 = 0x0008_4501;
    pub const EVTCHN_BIND_UNBOUND_PORT: u64 = 0x0004_4502;
    pub const EVTCHN_UNBIND: u64 = 0x0004_4503;
    pub const EVTCHN_NOTIFY: u64 = 0x0004_4504;
    pub const GNTDEV_MAP_GRANT_REF: u64 = 0x0018_4700;
    pub const GNTDEV_UNMAP_GRANT_REF: u64 = 0x0010_4701;
    pub const XENBUS_BACKEND_EVTCHN: u64 = 0x0000_4200;
}

const HYPERVISOR_HVM_OP: u64 = 34;
const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
const HVMOP_SET_PARAM: u64 = 0;
const HVMOP_GET_PARAM: u64 = 1;
const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

fn open_dev(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// What to create: see `xen_abi::fvctl::CreateDomain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSpec {
    /// Wanted id (0 = the lowest free one).
    pub domid: u16,
    pub name: String,
    pub max_vcpus: u32,
    pub max_mem_kib: u64,
    pub max_grant_frames: u32,
    pub max_maptrack_frames: u32,
    pub max_evtchn_port: u32,
    /// 0 = the default weight.
    pub weight: u16,
    /// Percent of one CPU, 0 = none.
    pub cap: u16,
}

impl Default for CreateSpec {
    fn default() -> Self {
        CreateSpec {
            domid: 0,
            name: String::new(),
            max_vcpus: 1,
            max_mem_kib: 0,
            max_grant_frames: 32,
            max_maptrack_frames: 1024,
            max_evtchn_port: 1023,
            weight: 0,
            cap: 0,
        }
    }
}

/// `/dev/xen/privcmd`: the toolstack interface and hypercalls on behalf of other domains.
pub struct Toolstack {
    privcmd: File,
    /// One locked page for the call structure and small payloads.
    op: std::sync::Mutex<HypercallBuf>,
}

impl Toolstack {
    pub fn open() -> io::Result<Toolstack> {
        let privcmd = open_dev("/dev/xen/privcmd")?;
        let op = HypercallBuf::new(4096)?;
        Ok(Toolstack {
            privcmd,
            op: std::sync::Mutex::new(op),
        })
    }

    /// Issues hypercall `op` with `args` (guest pointers must be in a [`HypercallBuf`]);
    /// a negative result becomes the matching `io::Error`.
    pub fn hypercall(&self, op: u64, args: [u64; 5]) -> io::Result<i64> {
        sys::privcmd_hypercall(self.privcmd.as_raw_fd(), op, args)
    }

    /// Runs hypercall `op` with its one argument struct `arg` copied through the locked
    /// buffer, and copies the struct back.
    fn call_with<T: IntoBytes + FromBytes + Immutable>(
        &self,
        op: u64,
        cmd: u64,
        arg: &mut T,
    ) -> io::Result<i64> {
        let mut buf = self.op.lock().unwrap_or_else(|e| e.into_inner());
        let n = std::mem::size_of::<T>();
        buf.as_mut_slice()[..n].copy_from_slice(arg.as_bytes());
        let r = self.hypercall(op, [cmd, buf.addr(), 0, 0, 0]);
        *arg = T::read_from_bytes(&buf.as_slice()[..n]).map_err(|_| io::ErrorKind::InvalidData)?;
        r
    }

    /// One fvctl call; returns the hypercall's value and the call structure as it came back.
    fn fvctl<T: IntoBytes + Immutable>(
        &self,
        cmd: u32,
        domid: u16,
        payload: &T,
    ) -> io::Result<(i64, FvCtl)> {
        let mut op = FvCtl::new(cmd, domid, payload);
        let mut buf = self.op.lock().unwrap_or_else(|e| e.into_inner());
        buf.as_mut_slice()[..256].copy_from_slice(op.as_bytes());
        let r = self.hypercall(fv::HYPERVISOR_FVCTL, [buf.addr(), 0, 0, 0, 0])?;
        op = FvCtl::read_from_bytes(&buf.as_slice()[..256])
            .map_err(|_| io::ErrorKind::InvalidData)?;
        Ok((r, op))
    }

    fn fvctl_simple(&self, cmd: u32, domid: u16) -> io::Result<()> {
        self.fvctl(cmd, domid, &[0u8; 0]).map(|_| ())
    }

    /// Creates a paused domain without memory; returns its id.
    pub fn create_domain(&self, spec: &CreateSpec) -> io::Result<u16> {
        let mut name = [0u8; fv::FVCTL_NAME_LEN];
        let bytes = spec.name.as_bytes();
        if bytes.len() > name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("domain name longer than {} bytes", name.len()),
            ));
        }
        name[..bytes.len()].copy_from_slice(bytes);
        let c = fv::CreateDomain {
            max_vcpus: spec.max_vcpus,
            flags: fv::FVCTL_CREATE_FLAGS,
            max_mem_kib: spec.max_mem_kib,
            max_grant_frames: spec.max_grant_frames,
            max_maptrack_frames: spec.max_maptrack_frames,
            max_evtchn_port: spec.max_evtchn_port,
            weight: spec.weight,
            cap: spec.cap,
            name,
        };
        let (_, op) = self.fvctl(fv::FVCTL_CREATE_DOMAIN, spec.domid, &c)?;
        Ok(op.domid)
    }

    /// Gives the domain `target_kib` of RAM from guest-physical 0 (repeating the bounded call).
    pub fn populate(&self, domid: u16, target_kib: u64) -> io::Result<()> {
        let p = fv::Populate {
            target_kib,
            populated_kib: 0,
        };
        loop {
            let (r, _) = self.fvctl(fv::FVCTL_POPULATE, domid, &p)?;
            if r == 0 {
                return Ok(());
            }
        }
    }

    /// Copies `data` into the domain's memory at `gpa`.
    pub fn copy_to(&self, domid: u16, gpa: u64, data: &[u8]) -> io::Result<()> {
        let chunk = fv::FVCTL_COPY_MAX as usize;
        let mut buf = HypercallBuf::new(chunk.min(data.len()).max(1))?;
        for (i, piece) in data.chunks(chunk).enumerate() {
            buf.as_mut_slice()[..piece.len()].copy_from_slice(piece);
            let c = fv::CopyTo {
                gpa: gpa
                    .checked_add((i * chunk) as u64)
                    .ok_or(io::ErrorKind::InvalidInput)?,
                buf: buf.addr(),
                len: piece.len() as u64,
            };
            self.fvctl(fv::FVCTL_COPY_TO, domid, &c)?;
        }
        Ok(())
    }

    pub fn set_memmap(&self, domid: u16, map: &[MemmapEntry]) -> io::Result<()> {
        if map.len() > fv::FVCTL_MEMMAP_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "memory map has too many entries",
            ));
        }
        let mut m = fv::SetMemmap {
            nr: map.len() as u32,
            ..Default::default()
        };
        m.entries[..map.len()].copy_from_slice(map);
        self.fvctl(fv::FVCTL_SET_MEMMAP, domid, &m).map(|_| ())
    }

    pub fn set_vcpu_boot(&self, domid: u16, vcpu: u32, rip: u64, rbx: u64) -> io::Result<()> {
        let b = fv::VcpuBoot {
            vcpu,
            _pad: 0,
            rip,
            rbx,
        };
        self.fvctl(fv::FVCTL_SET_VCPU_BOOT, domid, &b).map(|_| ())
    }

    pub fn seed_grant(
        &self,
        domid: u16,
        gref: u32,
        flags: u16,
        to_domid: u16,
        frame: u64,
    ) -> io::Result<()> {
        let g = fv::SeedGrant {
            gref,
            flags,
            domid: to_domid,
            frame,
        };
        self.fvctl(fv::FVCTL_SEED_GRANT, domid, &g).map(|_| ())
    }

    pub fn pause(&self, domid: u16) -> io::Result<()> {
        self.fvctl_simple(fv::FVCTL_PAUSE, domid)
    }

    pub fn unpause(&self, domid: u16) -> io::Result<()> {
        self.fvctl_simple(fv::FVCTL_UNPAUSE, domid)
    }

    pub fn destroy(&self, domid: u16) -> io::Result<()> {
        self.fvctl_simple(fv::FVCTL_DESTROY, domid)
    }

    pub fn shutdown(&self, domid: u16, reason: u32) -> io::Result<()> {
        let s = fv::Shutdown { reason, _pad: 0 };
        self.fvctl(fv::FVCTL_SHUTDOWN, domid, &s).map(|_| ())
    }

    /// The first domain whose id is ≥ `domid`, or None.
    fn domain_info_from(&self, domid: u16) -> io::Result<Option<DomainInfo>> {
        match self.fvctl(fv::FVCTL_DOMAIN_INFO, domid, &[0u8; 0]) {
            Ok((_, op)) => Ok(Some(op.payload())),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Domain `domid`, or None if it does not exist.
    pub fn domain_info(&self, domid: u16) -> io::Result<Option<DomainInfo>> {
        Ok(self.domain_info_from(domid)?.filter(|i| i.domid == domid))
    }

    /// Every domain, by id.
    pub fn list_domains(&self) -> io::Result<Vec<DomainInfo>> {
        let mut out = Vec::new();
        let mut next = 0u16;
        while let Some(i) = self.domain_info_from(next)? {
            out.push(i);
            match i.domid.checked_add(1) {
                Some(n) if n < 0x7ff0 => next = n,
                _ => break,
            }
        }
        Ok(out)
    }

    /// Up to `max` bytes of the hypervisor console from position `pos`; returns them and
    /// the position after them.
    pub fn console_read(&self, pos: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
        let buf = HypercallBuf::new(max.max(1))?;
        let c = fv::ConsoleRead {
            pos,
            buf: buf.addr(),
            len: u32::try_from(max).unwrap_or(u32::MAX),
            _pad: 0,
        };
        let (_, op) = self.fvctl(fv::FVCTL_CONSOLE_READ, 0, &c)?;
        let c: fv::ConsoleRead = op.payload();
        let n = (c.len as usize).min(max);
        Ok((buf.as_slice()[..n].to_vec(), c.pos))
    }

    pub fn physinfo(&self) -> io::Result<PhysInfo> {
        let (_, op) = self.fvctl(fv::FVCTL_PHYSINFO, 0, &[0u8; 0])?;
        Ok(op.payload())
    }

    pub fn sched_get(&self, domid: u16) -> io::Result<SchedParams> {
        let (_, op) = self.fvctl(fv::FVCTL_SCHED_GET, domid, &[0u8; 0])?;
        Ok(op.payload())
    }

    pub fn sched_set(&self, domid: u16, weight: u16, cap: u16) -> io::Result<()> {
        let p = SchedParams {
            weight,
            cap,
            _pad: 0,
        };
        self.fvctl(fv::FVCTL_SCHED_SET, domid, &p).map(|_| ())
    }

    pub fn vcpu_info(&self, domid: u16, vcpu: u32) -> io::Result<VcpuInfo> {
        let v = VcpuInfo {
            vcpu,
            ..Default::default()
        };
        let (_, op) = self.fvctl(fv::FVCTL_VCPU_INFO, domid, &v)?;
        Ok(op.payload())
    }

    pub fn set_affinity(&self, domid: u16, vcpu: u32, hard: u64, soft: u64) -> io::Result<()> {
        let v = VcpuInfo {
            vcpu,
            hard_affinity: hard,
            soft_affinity: soft,
            ..Default::default()
        };
        self.fvctl(fv::FVCTL_SET_AFFINITY, domid, &v).map(|_| ())
    }

    /// HVMOP_set_param on another domain.
    pub fn set_hvm_param(&self, domid: u16, index: u32, value: u64) -> io::Result<()> {
        let mut p = HvmParam {
            domid,
            _pad: 0,
            index,
            value,
        };
        self.call_with(HYPERVISOR_HVM_OP, HVMOP_SET_PARAM, &mut p)
            .map(|_| ())
    }

    /// HVMOP_get_param on another domain.
    pub fn get_hvm_param(&self, domid: u16, index: u32) -> io::Result<u64> {
        let mut p = HvmParam {
            domid,
            _pad: 0,
            index,
            value: 0,
        };
        self.call_with(HYPERVISOR_HVM_OP, HVMOP_GET_PARAM, &mut p)?;
        Ok(p.value)
    }

    /// EVTCHNOP_alloc_unbound in `domid` for `remote`; returns the port (in `domid`).
    pub fn alloc_unbound(&self, domid: u16, remote: u16) -> io::Result<u32> {
        let mut a = AllocUnbound {
            dom: domid,
            remote_dom: remote,
            port: 0,
        };
        self.call_with(HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_ALLOC_UNBOUND, &mut a)?;
        Ok(a.port)
    }
}

/// `xen_hvm_param` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct HvmParam {
    domid: u16,
    _pad: u16,
    index: u32,
    value: u64,
}

/// `evtchn_alloc_unbound` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct AllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

/// `/dev/xen/evtchn`: event channels of the calling process.
pub struct Evtchn {
    fd: File,
}

impl Evtchn {
    pub fn open() -> io::Result<Evtchn> {
        Ok(Evtchn {
            fd: open_dev("/dev/xen/evtchn")?,
        })
    }

    fn ioctl(&self, nr: u64, arg: &mut [u32]) -> io::Result<u32> {
        sys::ioctl(self.fd.as_raw_fd(), nr, arg.as_mut_ptr().cast()).map(|r| r as u32)
    }

    /// Binds to port `remote_port` of `remote_dom`; returns the local port.
    pub fn bind_interdomain(&self, remote_dom: u16, remote_port: u32) -> io::Result<u32> {
        self.ioctl(
            nr::EVTCHN_BIND_INTERDOMAIN,
            &mut [u32::from(remote_dom), remote_port],
        )
    }

    pub fn bind_virq(&self, virq: u32) -> io::Result<u32> {
        self.ioctl(nr::EVTCHN_BIND_VIRQ, &mut [virq])
    }

    /// A new port that `remote_dom` may bind to.
    pub fn bind_unbound(&self, remote_dom: u16) -> io::Result<u32> {
        self.ioctl(nr::EVTCHN_BIND_UNBOUND_PORT, &mut [u32::from(remote_dom)])
    }

    pub fn unbind(&self, port: u32) -> io::Result<()> {
        self.ioctl(nr::EVTCHN_UNBIND, &mut [port]).map(|_| ())
    }

    pub fn notify(&self, port: u32) -> io::Result<()> {
        self.ioctl(nr::EVTCHN_NOTIFY, &mut [port]).map(|_| ())
    }

    /// Waits for one pending port (the fd may be polled first); the port stays masked
    /// until [`Evtchn::unmask`].
    pub fn pending(&self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        let n = sys::read(self.fd.as_raw_fd(), &mut b)?;
        if n != 4 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short read from /dev/xen/evtchn",
            ));
        }
        Ok(u32::from_ne_bytes(b))
    }

    pub fn unmask(&self, port: u32) -> io::Result<()> {
        sys::write(self.fd.as_raw_fd(), &port.to_ne_bytes()).map(|_| ())
    }
}

impl AsRawFd for Evtchn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for Evtchn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `/dev/xen/gntdev`: maps pages other domains grant to dom0.
pub struct Gntdev {
    fd: std::sync::Arc<File>,
}

impl Gntdev {
    pub fn open() -> io::Result<Gntdev> {
        Ok(Gntdev {
            fd: std::sync::Arc::new(open_dev("/dev/xen/gntdev")?),
        })
    }

    /// Maps grant `gref` of `domid` (read-only unless `writable`).
    pub fn map(&self, domid: u16, gref: u32, writable: bool) -> io::Result<GrantMap> {
        // struct ioctl_gntdev_map_grant_ref: count, pad, index (OUT), refs[1] = {domid, ref}.
        let mut arg = [1u32, 0, 0, 0, u32::from(domid), gref];
        sys::ioctl(
            self.fd.as_raw_fd(),
            nr::GNTDEV_MAP_GRANT_REF,
            arg.as_mut_ptr().cast(),
        )?;
        let index = u64::from(arg[2]) | u64::from(arg[3]) << 32;
        GrantMap::new(self.fd.clone(), index, writable)
    }
}

/// `/dev/xen/xenbus_backend`: dom0 kernel's xenstore ring and its local port.
pub struct XenbusBackend {
    _fd: File,
    ring: sys::Mapping,
    port: u32,
}

impl XenbusBackend {
    pub fn open() -> io::Result<XenbusBackend> {
        let fd = open_dev("/dev/xen/xenbus_backend")?;
        let port = sys::ioctl(
            fd.as_raw_fd(),
            nr::XENBUS_BACKEND_EVTCHN,
            std::ptr::null_mut(),
        )?;
        let ring = sys::Mapping::new(fd.as_raw_fd(), 0, 4096, true)?;
        Ok(XenbusBackend {
            _fd: fd,
            ring,
            port: port as u32,
        })
    }

    /// The ring page (4096 bytes, shared with dom0's kernel).
    pub fn ring(&self) -> *mut u8 {
        self.ring.ptr()
    }

    /// dom0's local port for it.
    pub fn port(&self) -> u32 {
        self.port
    }
}
