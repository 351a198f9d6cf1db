//! The legacy 8259 PICs: masked at boot. The hypervisor takes no legacy interrupts, and
//! an unmasked PIT tick left by the firmware would otherwise keep forcing VM exits.

#![allow(unsafe_code)]

use super::port::outb;

/// Masks every line of both PICs.
pub fn mask_all() {
    // SAFETY: 0x21/0xa1 are the data ports of the two 8259s, which the hypervisor owns;
    // masking every line only stops legacy interrupts.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}
