//! ferrovisor: a Xen-compatible type-1 hypervisor for x86_64.
//!
//! Boot order (this file only sequences; each step lives in its own module):
//! boot information → command line → console → banner → frames → page tables (W^X) →
//! heap → (next: virtualization backend, dom0) → idle.
//!
//! The crate also builds on the host, where only the hardware-independent modules are
//! compiled, so that `cargo test` runs their unit tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]
// `Err(())` means "the guest gets #GP" throughout the exit policy; a named unit error
// would carry no more information.
#![allow(clippy::result_unit_err)]
// `unsafe` only in the modules that allow it (docs/design.md "Unsafe code", checked by
// `xtask::unsafe_map`).
#![deny(unsafe_code)]

extern crate alloc;

#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod arch;
pub mod cmdline;
#[cfg(target_os = "none")]
mod console;
mod debugkeys;
#[cfg(target_os = "none")]
mod domain;
pub mod hvm;
pub mod loglimit;
pub mod mm;
#[cfg(target_os = "none")]
mod schedule;
#[cfg(target_os = "none")]
mod start;
#[cfg(target_os = "none")]
mod svm;
pub mod sync;
pub mod time;
mod vmx;
#[cfg(target_os = "none")]
mod xen;

#[cfg(target_os = "none")]
pub use start::fatal_stop;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ferrovisor is a bare-metal image: build it with `cargo xtask build`");
    std::process::exit(1);
}
