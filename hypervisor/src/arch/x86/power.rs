//! Ending the machine's run: power off, reboot, halt.
#![allow(unsafe_code)]

use super::port::{outb, outl};
use crate::println;

/// QEMU's `isa-debug-exit` device (configured at 0xf4 by xtask): QEMU exits with status
/// `(value << 1) | 1`.
const QEMU_DEBUG_EXIT: u16 = 0xf4;
/// Bochs quits when the string "Shutdown" is written here (its BIOS shutdown port).
const BOCHS_SHUTDOWN: u16 = 0x8900;
/// 8042 keyboard controller command port; 0xFE pulses the CPU reset line.
const KBD_CONTROLLER: u16 = 0x64;

/// Powers the machine off. `code` 0 means success; it becomes an emulator's exit status.
pub fn poweroff(code: u32) -> ! {
    println!("ferrovisor: power off, exit code {code}");
    crate::console::drain();
    // SAFETY: the machine is ending: 0xf4 (QEMU's debug-exit) and 0x8900 (Bochs's
    // shutdown port) only stop the emulator, and are unused on other machines.
    unsafe {
        outl(QEMU_DEBUG_EXIT, code);
        for b in b"Shutdown" {
            outb(BOCHS_SHUTDOWN, *b);
        }
    }
    halt()
}

/// Resets the machine.
pub fn reboot() -> ! {
    println!("ferrovisor: rebooting");
    // SAFETY: the machine is ending: 0xFE to the 8042 pulses the CPU reset line.
    unsafe { outb(KBD_CONTROLLER, 0xfe) };
    halt()
}

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
