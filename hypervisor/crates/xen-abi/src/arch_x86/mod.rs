//! x86-specific interfaces: `xen/include/public/arch-x86/*`.

pub mod cpuid;
