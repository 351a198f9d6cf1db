//! `xen_version` (17).

use super::guest_access::{copy_to_guest, write_arg};
use super::Cx;
use super::Reply;
use crate::hvm::cpuid::XEN_VERSION;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::features::{
    xenfeat_bit, XENFEAT_AUTO_TRANSLATED_PHYSMAP, XENFEAT_DOM0, XENFEAT_HVM_CALLBACK_VECTOR,
    XENFEAT_HVM_SAFE_PVCLOCK,
};
use xen_abi::version::*;

/// The features we implement (XENVER_get_features submap 0). Grows with the ABI.
pub const FEATURES: u32 = xenfeat_bit(XENFEAT_AUTO_TRANSLATED_PHYSMAP)
    | xenfeat_bit(XENFEAT_HVM_SAFE_PVCLOCK)
    | xenfeat_bit(XENFEAT_HVM_CALLBACK_VECTOR);

/// Copies `s` into a zero-padded fixed-size guest buffer of `N` bytes.
fn put_str<const N: usize, B: Backend>(cx: &Cx<'_, B>, arg: u64, s: &str) -> Result<Reply, Errno> {
    let mut buf = [0u8; N];
    let n = s.len().min(N - 1);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    copy_to_guest(cx, arg, &buf)?;
    Ok(Reply::Value(0))
}

/// `HYPERVISOR_xen_version(cmd, arg)`.
pub fn xen_version<B: Backend>(cx: &mut Cx<'_, B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    match cmd {
        XENVER_VERSION => Ok(Reply::Value(u64::from(
            (XEN_VERSION.0 << 16) | XEN_VERSION.1,
        ))),
        XENVER_EXTRAVERSION => put_str::<16, B>(cx, arg, "-ferrovisor"),
        XENVER_CAPABILITIES => {
            put_str::<1024, B>(cx, arg, "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64")
        }
        XENVER_CHANGESET => {
            put_str::<64, B>(cx, arg, concat!("ferrovisor ", env!("CARGO_PKG_VERSION")))
        }
        XENVER_PLATFORM_PARAMETERS => {
            // virt_start: where a PV guest's hypervisor hole would begin; fixed on x86-64.
            write_arg(cx, arg, &0xffff_8000_0000_0000u64)?;
            Ok(Reply::Value(0))
        }
        XENVER_GET_FEATURES => {
            let mut info: XenFeatureInfo = super::guest_access::read_arg(cx, arg)?;
            let dom0 = if cx.dom.is_control() {
                xenfeat_bit(XENFEAT_DOM0)
            } else {
                0
            };
            info.submap = if info.submap_idx == 0 {
                FEATURES | dom0
            } else {
                0
            };
            write_arg(cx, arg, &info)?;
            Ok(Reply::Value(0))
        }
        XENVER_PAGESIZE => Ok(Reply::Value(4096)),
        XENVER_GUEST_HANDLE => {
            copy_to_guest(cx, arg, &[0u8; 16])?;
            Ok(Reply::Value(0))
        }
        XENVER_COMPILE_INFO => {
            // struct xen_compile_info: compiler[64], compile_by[16], domain[32], date[32].
            let mut info = [0u8; 144];
            info[..5].copy_from_slice(b"rustc");
            info[64..74].copy_from_slice(b"ferrovisor");
            copy_to_guest(cx, arg, &info)?;
            Ok(Reply::Value(0))
        }
        // Privileged in Xen (XSM): only the control domain may read them.
        XENVER_COMMANDLINE | XENVER_BUILD_ID => Err(Errno::EPERM),
        _ => Err(Errno::ENOSYS),
    }
}
