//! `platform_op` (dom0) essentials: the interface version and the op numbers Linux issues.
//!
//! Source: `xen/include/public/platform.h` (`XENPF_INTERFACE_VERSION` 0x03000001). The full
//! `xen_platform_op` union is not mirrored; ferrovisor answers these ops with `-ENOSYS`.

/// Required value of `xen_platform_op.interface_version`.
pub const XENPF_INTERFACE_VERSION: u32 = 0x0300_0001;
/// Size of `struct xen_platform_op` (cmd, interface_version, 128-byte union).
pub const XEN_PLATFORM_OP_SIZE: usize = 136;
/// Set the wallclock (32-bit seconds).
pub const XENPF_SETTIME32: u32 = 17;
/// Query firmware information.
pub const XENPF_FIRMWARE_INFO: u32 = 50;
/// Get physical CPU information.
pub const XENPF_GET_CPUINFO: u32 = 55;
/// Set the wallclock (64-bit seconds).
pub const XENPF_SETTIME64: u32 = 62;
/// Get the dom0 console description.
pub const XENPF_GET_DOM0_CONSOLE: u32 = 64;
