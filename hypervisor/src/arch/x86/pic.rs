//! The legacy 8259 PICs: masked at boot. The hypervisor takes no legacy interrupts, and
//! an unmasked PIT tick left by the firmware would otherwise keep forcing VM exits.

use super::port::outb;

/// Masks every line of both PICs.
pub fn mask_all() {
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}
