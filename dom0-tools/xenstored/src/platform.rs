//! What xenstored needs from `/dev/xen`, behind a trait so the loop can run without Xen
//! (`--no-domain-init`) and be tested. `xen.rs` implements it with the `xenctrl` crate.

use std::io;
use std::os::fd::BorrowedFd;

use xenstore::core::DomainStatus;

use crate::ring::SharedPage;

/// `VIRQ_DOM_EXC`: a domain shut down or died.
pub const VIRQ_DOM_EXC: u32 = 3;
/// `GNTTAB_RESERVED_XENSTORE`: the grant ref a domain's store page is reachable by.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// Event channels, grant mapping and domain information.
pub trait Platform {
    /// The event channel device, to poll for readability.
    fn evtchn_fd(&self) -> BorrowedFd<'_>;
    /// Binds a local port to `(remote_dom, remote_port)`; returns the local port.
    fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> io::Result<u32>;
    /// Binds a local port to a virtual IRQ.
    fn bind_virq(&mut self, virq: u32) -> io::Result<u32>;
    /// Closes a local port.
    fn unbind(&mut self, port: u32);
    /// Signals a local port's peer.
    fn notify(&mut self, port: u32) -> io::Result<()>;
    /// One pending local port (the device is readable); unmask it after handling.
    fn pending(&mut self) -> io::Result<u32>;
    /// Re-enables delivery on a port.
    fn unmask(&mut self, port: u32) -> io::Result<()>;
    /// Maps grant `gref` of `domid` writable.
    fn map_grant(&mut self, domid: u16, gref: u32) -> io::Result<Box<dyn SharedPage>>;
    /// Dom0's kernel ring (`/dev/xen/xenbus_backend`) and its local port.
    fn local_ring(&mut self) -> io::Result<(Box<dyn SharedPage>, u32)>;
    /// The state of a domain.
    fn domain_status(&mut self, domid: u16) -> io::Result<DomainStatus>;
}
