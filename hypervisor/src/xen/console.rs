//! `console_io` (18): guest output to the hypervisor console.
//!
//! Writes are allowed to every domain (as a Xen debug build does), so test guests and
//! early dom0 output are visible; reads need the console input path (later).

use super::guest_access::copy_from_guest;
use super::Reply;
use crate::domain::Domain;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::xen::{CONSOLEIO_READ, CONSOLEIO_WRITE};

/// Largest single write accepted; bounds the work one hypercall can cause.
pub const WRITE_MAX: u64 = 64 * 1024;

/// `HYPERVISOR_console_io(cmd, count, buffer)`.
pub fn console_io<B: Backend>(dom: &mut Domain<B>, cmd: u64, count: u64, buffer: u64) -> Result<Reply, Errno> {
    match cmd {
        CONSOLEIO_WRITE => {
            if count > WRITE_MAX {
                return Err(Errno::EINVAL);
            }
            let mut chunk = [0u8; 256];
            let mut done = 0;
            while done < count {
                let n = (count - done).min(chunk.len() as u64) as usize;
                copy_from_guest(dom, buffer.wrapping_add(done), &mut chunk[..n])?;
                dom.console_write(&chunk[..n]);
                done += n as u64;
            }
            Ok(Reply::Value(0))
        }
        // No console input reaches guests yet: nothing to read.
        CONSOLEIO_READ => Ok(Reply::Value(0)),
        _ => Err(Errno::ENOSYS),
    }
}
