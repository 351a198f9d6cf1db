//! `xen_version` hypercall sub-ops and argument types.
//!
//! Source: `xen/include/public/version.h`, interface version 0x00040d00. The `XENFEAT_*` bits
//! (`features.h`) are re-exported from [`crate::features`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::features::*;

/// Returns `(major << 16) | minor`; the argument is NULL.
pub const XENVER_VERSION: u64 = 0;
/// Fills a [`XenExtraversion`] (NUL-terminated, e.g. `".0"`).
pub const XENVER_EXTRAVERSION: u64 = 1;
/// Fills a [`XenCompileInfo`].
pub const XENVER_COMPILE_INFO: u64 = 2;
/// Fills a [`XenCapabilitiesInfo`] (e.g. `"hvm-3.0-x86_64 ..."`).
pub const XENVER_CAPABILITIES: u64 = 3;
/// Fills a [`XenChangesetInfo`].
pub const XENVER_CHANGESET: u64 = 4;
/// Fills a [`XenPlatformParameters`].
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
/// Fills a [`XenFeatureInfo`].
pub const XENVER_GET_FEATURES: u64 = 6;
/// Returns the page size; the argument is NULL.
pub const XENVER_PAGESIZE: u64 = 7;
/// Fills a `xen_domain_handle_t` (16-byte UUID).
pub const XENVER_GUEST_HANDLE: u64 = 8;
/// Fills a [`XenCommandline`] (privileged).
pub const XENVER_COMMANDLINE: u64 = 9;
/// Fills a `xen_build_id` ([`XenVarbufHeader`] followed by the bytes).
pub const XENVER_BUILD_ID: u64 = 10;
/// Variable-length extraversion ([`XenVarbufHeader`] + bytes).
pub const XENVER_EXTRAVERSION2: u64 = 11;
/// Variable-length capabilities.
pub const XENVER_CAPABILITIES2: u64 = 12;
/// Variable-length changeset.
pub const XENVER_CHANGESET2: u64 = 13;
/// Variable-length command line.
pub const XENVER_COMMANDLINE2: u64 = 14;

/// Length of `xen_extraversion_t`.
pub const XEN_EXTRAVERSION_LEN: usize = 16;
/// Length of `xen_capabilities_info_t`.
pub const XEN_CAPABILITIES_INFO_LEN: usize = 1024;
/// Length of `xen_changeset_info_t`.
pub const XEN_CHANGESET_INFO_LEN: usize = 64;
/// Length of `xen_commandline_t`.
pub const XEN_COMMANDLINE_LEN: usize = 1024;

/// `xen_extraversion_t`: OUT, NUL-terminated string.
pub type XenExtraversion = [u8; XEN_EXTRAVERSION_LEN];
/// `xen_capabilities_info_t`: OUT, NUL-terminated string.
pub type XenCapabilitiesInfo = [u8; XEN_CAPABILITIES_INFO_LEN];
/// `xen_changeset_info_t`: OUT, NUL-terminated string.
pub type XenChangesetInfo = [u8; XEN_CHANGESET_INFO_LEN];
/// `xen_commandline_t`: OUT, NUL-terminated string.
pub type XenCommandline = [u8; XEN_COMMANDLINE_LEN];

/// `struct xen_compile_info` (`XENVER_compile_info`). All fields OUT, NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenCompileInfo {
    /// OUT: compiler identification.
    pub compiler: [u8; 64],
    /// OUT: user who built.
    pub compile_by: [u8; 16],
    /// OUT: build host domain.
    pub compile_domain: [u8; 32],
    /// OUT: build date.
    pub compile_date: [u8; 32],
}
assert_layout!(XenCompileInfo, size = 144, align = 1,
    compiler @ 0, compile_by @ 64, compile_domain @ 80, compile_date @ 112);

/// `struct xen_platform_parameters` (`XENVER_platform_parameters`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenPlatformParameters {
    /// OUT: start of the hypervisor's virtual-address hole (PV).
    pub virt_start: u64,
}
assert_layout!(XenPlatformParameters, size = 8, align = 8, virt_start @ 0);

/// `struct xen_feature_info` (`XENVER_get_features`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenFeatureInfo {
    /// IN: which 32-bit submap to return (only 0 exists).
    pub submap_idx: u32,
    /// OUT: the submap; bit `n` = `XENFEAT_*` number `32 * submap_idx + n`.
    pub submap: u32,
}
assert_layout!(XenFeatureInfo, size = 8, align = 4, submap_idx @ 0, submap @ 4);

/// Header of `struct xen_build_id` / `struct xen_varbuf`; the bytes follow it.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenVarbufHeader {
    /// IN: size of the buffer that follows, in bytes.
    pub len: u32,
}
assert_layout!(XenVarbufHeader, size = 4, align = 4, len @ 0);

/// Encodes a `XENVER_version` result: `(major << 16) | minor`.
pub const fn xen_version_value(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_features() {
        assert_eq!(xen_version_value(4, 19), 0x0004_0013);
        assert_eq!(XENVER_GET_FEATURES, 6);
        // The PVH-required set of features Xen reports to domUs (spec section 4.1).
        let bits = [0, 2, 8, 9, 13, 16, 18, 19, 20]
            .iter()
            .fold(0u32, |acc, &b| acc | xenfeat_bit(b));
        assert_eq!(bits & xenfeat_bit(XENFEAT_AUTO_TRANSLATED_PHYSMAP), 1 << 2);
        assert_eq!(bits & xenfeat_bit(XENFEAT_HVM_PIRQS), 0);
        assert_eq!(XENFEAT_LINUX_RSDP_UNRESTRICTED, 15);
        let fi = XenFeatureInfo {
            submap_idx: 0,
            submap: bits,
        };
        assert_eq!(&fi.as_bytes()[4..], &bits.to_le_bytes());
    }
}
