//! Xen hypercalls, x86-64 HVM/PVH convention: number in RAX, arguments in RDI, RSI, RDX,
//! R10, R8; result in RAX (negative = `-errno`); instruction `vmcall` (Intel and others) or
//! `vmmcall` (AMD, Hygon), chosen once by [`init`] from the CPUID vendor string.
//!
//! Invariant: [`init`] runs once, before any hypercall, on the boot path. If CPUID leaf
//! 0x4000_0000 does not carry the `"XenVMMXenVMM"` signature the runtime is in *bare* mode
//! (for example booted directly by `qemu-system-x86_64 -kernel`): every hypercall then returns
//! `-ENOSYS` without executing VMCALL (which would raise #UD), the console falls back to port
//! 0xE9 and [`shutdown`] exits through QEMU's isa-debug-exit device. Pointer arguments are
//! guest-virtual addresses, equal to guest-physical ones under the runtime's identity map.

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

use xen_abi::arch_x86::cpuid::{
    XEN_CPUID_FIRST_LEAF, XEN_CPUID_SIGNATURE_EBX, XEN_CPUID_SIGNATURE_ECX, XEN_CPUID_SIGNATURE_EDX,
};
use xen_abi::memory::XENMEM_ADD_TO_PHYSMAP;
use xen_abi::sched::{
    SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_REMOTE_SHUTDOWN, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD,
};
use xen_abi::version::XENVER_VERSION;
use xen_abi::xen::{
    CONSOLEIO_WRITE, HYPERVISOR_CONSOLE_IO, HYPERVISOR_MEMORY_OP, HYPERVISOR_SCHED_OP,
    HYPERVISOR_SET_TIMER_OP, HYPERVISOR_XEN_VERSION,
};
use xen_abi::Errno;

use crate::arch;

/// How hypercalls reach the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Transport {
    /// [`init`] has not run yet; hypercalls return `-ENOSYS`.
    Uninit = 0,
    /// Intel VMX (and any vendor that is not AMD/Hygon): `vmcall` (0F 01 C1).
    Vmcall = 1,
    /// AMD/Hygon SVM: `vmmcall` (0F 01 D9).
    Vmmcall = 2,
    /// No Xen signature in CPUID: no hypercalls; console on port 0xE9, exit via isa-debug-exit.
    Bare = 3,
}

static TRANSPORT: AtomicU8 = AtomicU8::new(Transport::Uninit as u8);

/// I/O port of QEMU's `isa-debug-exit` device used in bare mode
/// (`-device isa-debug-exit,iobase=0xf4,iosize=4`). QEMU exits with status `(value << 1) | 1`.
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Whether the CPU reports the Xen hypervisor signature at leaf 0x4000_0000.
pub fn xen_signature_present() -> bool {
    let r = arch::cpuid(XEN_CPUID_FIRST_LEAF, 0);
    r.ebx == XEN_CPUID_SIGNATURE_EBX
        && r.ecx == XEN_CPUID_SIGNATURE_ECX
        && r.edx == XEN_CPUID_SIGNATURE_EDX
}

/// Chooses the hypercall instruction from the CPUID vendor and records it. Idempotent.
pub fn init() -> Transport {
    let t = if !xen_signature_present() {
        Transport::Bare
    } else {
        match &arch::cpu_vendor() {
            b"AuthenticAMD" | b"HygonGenuine" => Transport::Vmmcall,
            _ => Transport::Vmcall,
        }
    };
    TRANSPORT.store(t as u8, Ordering::Relaxed);
    t
}

/// The transport chosen by [`init`].
pub fn transport() -> Transport {
    match TRANSPORT.load(Ordering::Relaxed) {
        1 => Transport::Vmcall,
        2 => Transport::Vmmcall,
        3 => Transport::Bare,
        _ => Transport::Uninit,
    }
}

/// Whether hypercalls go to a Xen-compatible hypervisor (not bare/uninitialised).
pub fn is_xen() -> bool {
    matches!(transport(), Transport::Vmcall | Transport::Vmmcall)
}

/// Issues hypercall `nr` with five arguments and returns RAX as a signed value.
///
/// # Safety
/// Pointer arguments must be valid for whatever the hypercall reads or writes there, and the
/// hypercall must not change guest state the caller relies on (for example remap a page in
/// use). Tests that deliberately pass bad pointers rely on the hypervisor rejecting them.
pub unsafe fn hypercall5(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: u64;
    match transport() {
        // SAFETY: the caller guarantees the arguments; the hypervisor clobbers at most the
        // argument registers, which are all declared as outputs, and may write guest memory
        // through pointer arguments (hence no `nomem`/`readonly`).
        Transport::Vmcall => unsafe {
            asm!(
                "vmcall",
                inlateout("rax") nr => ret,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                options(nostack),
            );
        },
        // SAFETY: as above, with the AMD instruction.
        Transport::Vmmcall => unsafe {
            asm!(
                "vmmcall",
                inlateout("rax") nr => ret,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                options(nostack),
            );
        },
        Transport::Bare | Transport::Uninit => return Errno::ENOSYS.to_ret(),
    }
    ret as i64
}

/// Hypercall with no argument. See [`hypercall5`].
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn hypercall0(nr: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, 0, 0, 0, 0, 0) }
}

/// Hypercall with one argument. See [`hypercall5`].
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn hypercall1(nr: u64, a1: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, 0, 0, 0, 0) }
}

/// Hypercall with two arguments. See [`hypercall5`].
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn hypercall2(nr: u64, a1: u64, a2: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, 0, 0, 0) }
}

/// Hypercall with three arguments. See [`hypercall5`].
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn hypercall3(nr: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, a3, 0, 0) }
}

/// Hypercall with four arguments. See [`hypercall5`].
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn hypercall4(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, a3, a4, 0) }
}

/// `console_io(CONSOLEIO_write, len, buf)`: writes bytes to the hypervisor console.
/// Returns the raw result (>= 0 on success). Does **not** fall back to port 0xE9; use
/// [`crate::console::write_bytes`] for that.
pub fn console_io_write(bytes: &[u8]) -> i64 {
    // SAFETY: the hypervisor only reads `bytes.len()` bytes at `bytes`, which is valid.
    unsafe {
        hypercall3(
            HYPERVISOR_CONSOLE_IO,
            CONSOLEIO_WRITE,
            bytes.len() as u64,
            bytes.as_ptr() as u64,
        )
    }
}

/// `sched_op(cmd, arg)` with a raw argument.
///
/// # Safety
/// `arg` must be valid for the sub-op (or deliberately invalid in a test that expects an
/// error), and the sub-op must not break the runtime (e.g. `SCHEDOP_shutdown` returns only on
/// failure).
pub unsafe fn sched_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall2(HYPERVISOR_SCHED_OP, cmd, arg) }
}

/// `SCHEDOP_yield`.
pub fn sched_yield() -> i64 {
    // SAFETY: yield takes no argument and has no memory effects.
    unsafe { sched_op(SCHEDOP_YIELD, 0) }
}

/// `SCHEDOP_block`: block until an event is pending. Returns the raw result.
pub fn sched_block() -> i64 {
    // SAFETY: block takes no argument and has no memory effects.
    unsafe { sched_op(SCHEDOP_BLOCK, 0) }
}

/// `SCHEDOP_poll`: waits until one of `ports` is pending (masked or not), or until
/// `timeout_abs_ns` of system time (0 = no timeout). Returns the raw result (0 also after a
/// timeout: check the ports).
pub fn sched_poll(ports: &[u32], timeout_abs_ns: u64) -> i64 {
    let arg = xen_abi::sched::SchedPoll {
        ports: xen_abi::GuestHandle::new(ports.as_ptr() as u64),
        nr_ports: ports.len() as u32,
        _pad0: 0,
        timeout: timeout_abs_ns,
    };
    // SAFETY: `arg` and the port array it points to live across the call; poll only reads
    // them.
    unsafe { sched_op(SCHEDOP_POLL, core::ptr::addr_of!(arg) as u64) }
}

/// `SCHEDOP_remote_shutdown(domid, reason)`: shuts another domain down (control domain
/// only; Xen answers `-EPERM` to others, `-ESRCH` for a domain that does not exist).
pub fn sched_remote_shutdown(domid: xen_abi::DomId, reason: u32) -> i64 {
    let arg = xen_abi::sched::SchedRemoteShutdown {
        domain_id: domid,
        _pad0: 0,
        reason,
    };
    // SAFETY: `arg` is a valid struct sched_remote_shutdown that lives across the call.
    unsafe { sched_op(SCHEDOP_REMOTE_SHUTDOWN, core::ptr::addr_of!(arg) as u64) }
}

/// `SCHEDOP_shutdown` with `reason` (`xen_abi::sched::SHUTDOWN_*`). Returns the raw result;
/// on success it does not return. See [`shutdown`] for the never-returning variant.
pub fn sched_shutdown(reason: u32) -> i64 {
    let arg = xen_abi::sched::SchedShutdown { reason };
    // SAFETY: `arg` is a valid `struct sched_shutdown` that lives across the call.
    unsafe { sched_op(SCHEDOP_SHUTDOWN, core::ptr::addr_of!(arg) as u64) }
}

/// Shuts the domain down with `reason` and never returns.
///
/// Under Xen this is `SCHEDOP_shutdown`. If that returns (an error), the error is printed
/// (console, or port 0xE9 if that fails) and the vCPU **spins** forever: it deliberately does not execute
/// `cli; hlt`, which a hypervisor may treat as "all vCPUs down, power off" and which would
/// make a failed shutdown look like a clean `poweroff`. The test then ends by its timeout.
///
/// In bare mode it writes `reason` to the isa-debug-exit port (QEMU exits with status
/// `reason * 2 + 1`: 1 for poweroff, 7 for crash), then spins: not `cli; hlt`, for the same
/// reason (under a hypervisor that failed to show its CPUID signature, a halt would pass for
/// a clean power-off).
pub fn shutdown(reason: u32) -> ! {
    if !is_xen() {
        // SAFETY: port 0xf4 is QEMU's isa-debug-exit (or nothing); writing it has no memory
        // effects.
        unsafe { arch::outl(ISA_DEBUG_EXIT_PORT, reason) };
        loop {
            arch::pause();
        }
    }
    let rc = sched_shutdown(reason);
    crate::println!(
        "guest-rt: SCHEDOP_shutdown({reason}) returned {}",
        describe(rc)
    );
    loop {
        arch::pause();
    }
}

/// `set_timer_op(deadline)`: arm this vCPU's one-shot timer at `deadline_ns` of Xen system
/// time (0 cancels). Returns the raw result.
pub fn set_timer_op(deadline_ns: u64) -> i64 {
    // SAFETY: the argument is a plain integer.
    unsafe { hypercall1(HYPERVISOR_SET_TIMER_OP, deadline_ns) }
}

/// `xen_version(cmd, arg)`.
///
/// # Safety
/// `arg` must be valid for `cmd` (NULL for `XENVER_version`).
pub unsafe fn xen_version(cmd: u64, arg: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall2(HYPERVISOR_XEN_VERSION, cmd, arg) }
}

/// `xen_version(XENVER_version, NULL)`: `major << 16 | minor`, or `-errno`.
pub fn xen_version_number() -> i64 {
    // SAFETY: XENVER_version takes no argument.
    unsafe { xen_version(XENVER_VERSION, 0) }
}

/// `memory_op(cmd, arg)`.
///
/// # Safety
/// `arg` must be valid for `cmd`, and the operation must not remap memory the runtime uses.
pub unsafe fn memory_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall2(HYPERVISOR_MEMORY_OP, cmd, arg) }
}

/// `memory_op(XENMEM_add_to_physmap, xatp)`.
///
/// # Safety
/// The page at `xatp.gpfn` is replaced by the hypervisor's page: nothing may be using it,
/// and afterwards it must only be accessed with volatile reads/writes.
pub unsafe fn add_to_physmap(xatp: &xen_abi::memory::XenAddToPhysmap) -> i64 {
    // SAFETY: `xatp` is a valid struct; the caller vouches for the target page.
    unsafe { memory_op(XENMEM_ADD_TO_PHYSMAP, core::ptr::from_ref(xatp) as u64) }
}

/// Formats a hypercall result as `0`, `N` or `-ENAME (-N)`.
pub fn describe(rc: i64) -> Describe {
    Describe(rc)
}

/// Display helper returned by [`describe`].
#[derive(Clone, Copy, Debug)]
pub struct Describe(pub i64);

impl core::fmt::Display for Describe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match Errno::from_ret(self.0) {
            Some(e) => write!(f, "-{} ({})", e.name(), self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_errnos() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(describe(-38).to_string(), "-ENOSYS (-38)");
        assert_eq!(describe(-14).to_string(), "-EFAULT (-14)");
        assert_eq!(describe(0).to_string(), "0");
        assert_eq!(describe(0x4_0013).to_string(), "262163");
    }

    #[test]
    fn uninitialised_transport_returns_enosys() {
        // On the host nothing calls init(), so no VMCALL is executed.
        // SAFETY: no hypercall is issued while the transport is uninitialised.
        assert_eq!(unsafe { hypercall0(17) }, -38);
    }
}
