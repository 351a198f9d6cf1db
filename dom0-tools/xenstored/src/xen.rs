//! [`Platform`] over dom0's Xen devices, through the `xenctrl` crate.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use xen_abi::fvctl::dominfo;
use xenctrl::{Evtchn, Gntdev, GrantMap, Toolstack, XenbusBackend};
use xenstore::core::DomainStatus;

use crate::log;
use crate::platform::Platform;
use crate::ring::SharedPage;

/// `/dev/xen/evtchn`, `/dev/xen/gntdev`, `/dev/xen/privcmd` (domain info) and, once asked for,
/// `/dev/xen/xenbus_backend`.
pub struct XenPlatform {
    evtchn: Evtchn,
    gntdev: Gntdev,
    toolstack: Toolstack,
}

impl XenPlatform {
    /// Opens the devices.
    pub fn open() -> io::Result<XenPlatform> {
        let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        Ok(XenPlatform {
            evtchn: Evtchn::open().map_err(|e| ctx("/dev/xen/evtchn", e))?,
            gntdev: Gntdev::open().map_err(|e| ctx("/dev/xen/gntdev", e))?,
            toolstack: Toolstack::open().map_err(|e| ctx("/dev/xen/privcmd", e))?,
        })
    }
}

struct GrantPage {
    _map: GrantMap,
    base: NonNull<u8>,
}

// SAFETY: `GrantMap` maps exactly one page (4096 bytes, page-aligned) and keeps it mapped until
// it is dropped together with this value; only the owning `Ring` touches it.
unsafe impl SharedPage for GrantPage {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
}

struct BackendPage {
    _dev: XenbusBackend,
    base: NonNull<u8>,
}

// SAFETY: `XenbusBackend` mmaps the kernel's one-page ring (4096 bytes, page-aligned) and keeps
// it mapped until dropped together with this value; only the owning `Ring` touches it.
unsafe impl SharedPage for BackendPage {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
}

fn non_null(p: *mut u8) -> io::Result<NonNull<u8>> {
    NonNull::new(p).ok_or_else(|| io::Error::other("mapping has no address"))
}

impl Platform for XenPlatform {
    fn evtchn_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.evtchn)
    }

    fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> io::Result<u32> {
        self.evtchn.bind_interdomain(remote_dom, remote_port)
    }

    fn bind_virq(&mut self, virq: u32) -> io::Result<u32> {
        self.evtchn.bind_virq(virq)
    }

    fn unbind(&mut self, port: u32) {
        if let Err(e) = self.evtchn.unbind(port) {
            log!("unbind port {port}: {e}");
        }
    }

    fn notify(&mut self, port: u32) -> io::Result<()> {
        self.evtchn.notify(port)
    }

    fn pending(&mut self) -> io::Result<u32> {
        self.evtchn.pending()
    }

    fn unmask(&mut self, port: u32) -> io::Result<()> {
        self.evtchn.unmask(port)
    }

    fn map_grant(&mut self, domid: u16, gref: u32) -> io::Result<Box<dyn SharedPage>> {
        let m = self.gntdev.map(domid, gref, true)?;
        let p = non_null(m.as_ptr())?;
        Ok(Box::new(GrantPage { _map: m, base: p }))
    }

    fn local_ring(&mut self) -> io::Result<(Box<dyn SharedPage>, u32)> {
        let b = XenbusBackend::open()?;
        let port = b.port();
        let p = non_null(b.ring())?;
        Ok((Box::new(BackendPage { _dev: b, base: p }), port))
    }

    fn domain_status(&mut self, domid: u16) -> io::Result<DomainStatus> {
        Ok(match self.toolstack.domain_info(domid)? {
            None => DomainStatus::Gone,
            Some(i) if i.flags & dominfo::DYING != 0 => DomainStatus::Gone,
            Some(i) if i.flags & dominfo::SHUTDOWN != 0 => DomainStatus::Shutdown,
            Some(_) => DomainStatus::Running,
        })
    }
}
