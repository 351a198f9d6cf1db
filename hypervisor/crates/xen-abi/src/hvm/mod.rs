//! HVM/PVH interfaces: `xen/include/public/hvm/*` and
//! `xen/include/public/arch-x86/hvm/start_info.h`.

pub mod hvm_op;
pub mod params;
pub mod start_info;
