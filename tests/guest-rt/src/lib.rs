//! `guest-rt`: the runtime every ferrovisor test guest links.
//!
//! A test guest is a Xen PVH kernel: a `no_std` binary crate for `x86_64-unknown-none`,
//! linked at guest-physical 1 MiB by `guest.ld`, entered by the hypervisor at the 32-bit
//! entry point named in its `XEN_ELFNOTE_PHYS32_ENTRY` note. The runtime switches to long
//! mode (see `boot.rs`), installs an IDT, picks the hypercall instruction, validates
//! `hvm_start_info` and runs the test's `main`; then it prints the one result line and shuts
//! the domain down.
//!
//! # Writing a guest
//!
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! use guest_rt::{println, StartInfo, TestResult};
//!
//! guest_rt::entry!(test_main);
//!
//! fn test_main(si: &StartInfo) -> TestResult {
//!     println!("hello");
//!     guest_rt::ensure!(si.raw.version <= 1, "version {}", si.raw.version);
//!     Ok(())
//! }
//! ```
//!
//! plus a one-line `build.rs`: `include!("../../guest-rt/guest-build.rs");`.
//!
//! # Result protocol
//!
//! `Ok(())` prints `guest <name>: PASS` and shuts down with `SHUTDOWN_poweroff` (0);
//! `Err(reason)`, a panic or an exception prints `guest <name>: FAIL: <reason>` and shuts
//! down with `SHUTDOWN_crash` (3). `<name>` is the package name without the `guest-` prefix.
//! Tests that end differently (a crash the hypervisor causes, a triple fault) never return
//! from `main`. See `tests/guests/README.md`.
//!
//! # Host builds
//!
//! On the host (`cargo test --workspace`) the crate compiles without the boot code, IDT and
//! panic handler, and [`entry!`] expands to an empty `fn main`, so guests type-check and the
//! pure helpers (formatting, pvclock arithmetic) are unit-tested. Nothing here may be *run* on
//! the host except those helpers.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod arch;
#[cfg(target_os = "none")]
mod boot;
pub mod console;
pub mod evtchn;
mod fail;
#[cfg(target_os = "none")]
pub mod fault;
pub mod grant;
pub mod hypercall;
#[cfg(target_os = "none")]
pub mod idt;
pub mod pvclock;
pub mod smp;
pub mod start_info;
#[cfg(target_os = "none")]
pub mod user;
pub mod vcpu;

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

pub use fail::{Fail, TestResult};
pub use start_info::StartInfo;
pub use xen_abi;

use xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};

/// Signature of a test's main function.
pub type MainFn = fn(&StartInfo) -> TestResult;

static NAME_PTR: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);
static FINISHING: AtomicBool = AtomicBool::new(false);

fn set_name(package: &'static str) {
    let name = package.strip_prefix("guest-").unwrap_or(package);
    NAME_LEN.store(name.len(), Ordering::Relaxed);
    NAME_PTR.store(name.as_ptr().cast_mut(), Ordering::Release);
}

/// The test's name (package name without `guest-`), or `"?"` before the runtime started.
pub fn test_name() -> &'static str {
    let p = NAME_PTR.load(Ordering::Acquire);
    if p.is_null() {
        return "?";
    }
    // SAFETY: `set_name` stored the pointer and length of a `&'static str`.
    unsafe {
        core::str::from_utf8_unchecked(core::slice::from_raw_parts(
            p,
            NAME_LEN.load(Ordering::Relaxed),
        ))
    }
}

/// Declares the guest's entry point: `entry!(test_main)` with `fn test_main(&StartInfo) -> TestResult`
/// (any name but `main`, which the host stub takes).
///
/// On the bare-metal target it defines `guest_rt_start`, which the boot code calls in long
/// mode with the `hvm_start_info` address. On the host it defines an empty `fn main`.
///
/// Every guest's image also gets a `SUPPORTED_FEATURES` note without `XENFEAT_dom0`, so
/// that, as module 0, it runs as an unprivileged domain 0 (Xen builds a kernel with no
/// such note as the control domain). [`dom0_feature_note!`] adds the dom0 bit (notes are
/// OR-ed); `entry!(main, no_features_note)` leaves the note out entirely, to test the
/// no-note rule.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!($main, no_features_note);
        #[cfg(target_os = "none")]
        core::arch::global_asm!(
            r#"
            .pushsection .note.Xen, "a", @note
            .balign 4
            .long 4                 /* namesz: "Xen\0" */
            .long 4                 /* descsz */
            .long 17                /* XEN_ELFNOTE_SUPPORTED_FEATURES */
            .asciz "Xen"
            .balign 4
            .long 0                 /* no XENFEAT_* bits, in particular not XENFEAT_dom0 */
            .balign 4
            .popsection
            "#
        );
    };
    ($main:path, no_features_note) => {
        #[cfg(target_os = "none")]
        #[no_mangle]
        extern "C" fn guest_rt_start(start_info_gpa: u64) -> ! {
            $crate::start(env!("CARGO_PKG_NAME"), start_info_gpa, $main)
        }

        /// Host stub: test guests only run on the bare-metal target.
        #[cfg(not(target_os = "none"))]
        fn main() {
            let _: $crate::MainFn = $main;
        }
    };
}

/// Marks the image as a dom0 kernel: Xen's SUPPORTED_FEATURES note
/// (XEN_ELFNOTE_SUPPORTED_FEATURES = 17, owner "Xen", a 4-byte XENFEAT_* bitmap) with
/// XENFEAT_dom0 (bit 11). Module 0 becomes the privileged control domain when the OR of
/// its kernel's SUPPORTED_FEATURES notes has this bit, or when it has no such note at all
/// (see [`entry!`]). The linker script keeps every `.note.Xen` section in the
/// image's PT_NOTE segment, next to the runtime's PHYS32_ENTRY note.
#[macro_export]
macro_rules! dom0_feature_note {
    () => {
        #[cfg(target_os = "none")]
        core::arch::global_asm!(
            r#"
            .pushsection .note.Xen, "a", @note
            .balign 4
            .long 4                 /* namesz: "Xen\0" */
            .long 4                 /* descsz */
            .long 17                /* XEN_ELFNOTE_SUPPORTED_FEATURES */
            .asciz "Xen"
            .balign 4
            .long 1 << 11           /* XENFEAT_dom0 */
            .balign 4
            .popsection
            "#
        );
    };
}

/// Whether this domain is the control domain: `XENVER_get_features` (submap 0) has
/// `XENFEAT_dom0`.
pub fn is_control_domain() -> Result<bool, Fail> {
    use xen_abi::features::{xenfeat_bit, XENFEAT_DOM0};
    // struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }
    let mut info = [0u32, 0];
    // SAFETY: `info` is a live, writable xen_feature_info.
    let rc = unsafe {
        hypercall::xen_version(
            xen_abi::version::XENVER_GET_FEATURES,
            info.as_mut_ptr() as u64,
        )
    };
    if rc != 0 {
        return Err(Fail::new(format_args!(
            "xen_version(XENVER_get_features) returned {}",
            hypercall::describe(rc)
        )));
    }
    Ok(info[1] & xenfeat_bit(XENFEAT_DOM0) != 0)
}

/// Runs a test (called by the code [`entry!`] generates; not for direct use).
#[doc(hidden)]
pub fn start(package: &'static str, start_info_gpa: u64, main: MainFn) -> ! {
    set_name(package);
    let transport = hypercall::init();
    #[cfg(target_os = "none")]
    idt::init();
    if transport == hypercall::Transport::Bare {
        console::write_e9_fmt(format_args!(
            "{} no Xen CPUID signature: bare mode (console on port 0xe9, exit via \
             isa-debug-exit at port {:#x})\n",
            console::E9_TAG,
            hypercall::ISA_DEBUG_EXIT_PORT
        ));
    }
    // SAFETY: the PVH ABI passes the address of `hvm_start_info` in EBX; any address below
    // 4 GiB is mapped by the runtime's page tables.
    let result = match unsafe { StartInfo::from_addr(start_info_gpa) } {
        Ok(si) => main(&si),
        Err(e) => Err(Fail::new(format_args!(
            "bad hvm_start_info at {start_info_gpa:#x}: {e:?}"
        ))),
    };
    finish(result)
}

/// Prints the result line for `result` and shuts down: `PASS` with `poweroff`, `FAIL` with
/// `crash`.
pub fn finish(result: TestResult) -> ! {
    match result {
        Ok(()) => finish_with(format_args!("PASS"), SHUTDOWN_POWEROFF),
        Err(f) => fail_now(format_args!("{f}")),
    }
}

/// Prints `guest <name>: FAIL: <reason>` and shuts down with `crash`. Used by the panic and
/// exception handlers; usable by tests that cannot return an error.
pub fn fail_now(reason: fmt::Arguments<'_>) -> ! {
    finish_with(format_args!("FAIL: {reason}"), SHUTDOWN_CRASH)
}

/// Prints `guest <name>: <verdict>` and shuts down with `reason`. Only the first call prints
/// (a fault while finishing goes to port 0xE9, tagged, and spins: a halt with interrupts off
/// would pass for a clean power-off).
fn finish_with(verdict: fmt::Arguments<'_>, reason: u32) -> ! {
    if FINISHING.swap(true, Ordering::AcqRel) {
        console::write_e9_fmt(format_args!(
            "{} guest {}: nested failure while finishing: {verdict}\n",
            console::E9_TAG,
            test_name()
        ));
        loop {
            arch::pause();
        }
    }
    crate::println!("guest {}: {verdict}", test_name());
    hypercall::shutdown(reason)
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(loc) => fail_now(format_args!(
            "panic at {}:{}: {}",
            loc.file(),
            loc.line(),
            info.message()
        )),
        None => fail_now(format_args!("panic: {}", info.message())),
    }
}

/// Guest-physical range `[start, end)` of the loaded image, `.bss` included.
pub fn image_range() -> (u64, u64) {
    #[cfg(target_os = "none")]
    {
        extern "C" {
            static __guest_image_start: u8;
            static __guest_image_end: u8;
        }
        // Linker-script symbols: only their addresses are taken.
        (
            core::ptr::addr_of!(__guest_image_start) as u64,
            core::ptr::addr_of!(__guest_image_end) as u64,
        )
    }
    #[cfg(not(target_os = "none"))]
    {
        (0, 0)
    }
}
