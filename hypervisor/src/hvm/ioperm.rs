//! Which I/O ports a domain reaches without a VM exit.
//!
//! An unprivileged domain reaches none: every port exits and `domain::run::port_io`
//! emulates or ignores it. The control domain (dom0, `Domain::is_control`) reaches the
//! host's ports directly, as Xen gives its hardware domain the I/O ports it does not keep
//! for itself, except the ones below, which the hypervisor owns, emulates or must keep
//! from dom0 (they stay intercepted; see docs/design.md, "Physical devices for dom0"):
//!
//! | ports | why |
//! |---|---|
//! | 0x00-0x1f, 0x80-0x9f, 0xc0-0xdf | the ISA DMA controllers and page registers (ISA DMA reaches host memory; 0x92 is also the fast reset) |
//! | 0x20-0x21, 0xa0-0xa1, 0x4d0-0x4d1 | the 8259 PICs and their ELCR (the hypervisor masks them) |
//! | 0x40-0x43, 0x61 | the PIT and port B (the hypervisor calibrates the TSC on them; channel 2 is emulated) |
//! | 0x60, 0x64 | the 8042 (0xFE to 0x64 resets the machine; the hypervisor reboots through it) |
//! | 0x70-0x71 | the RTC/CMOS (the hypervisor reads the wallclock there) |
//! | 0xe9 | the debug console port (emulated) |
//! | 0xf4 | QEMU's isa-debug-exit (the hypervisor's power off) |
//! | 0x3f8-0x3ff | COM1, the hypervisor's console |
//! | 0x510-0x51b | QEMU's fw_cfg (its DMA interface writes host memory) |
//! | 0xcf8-0xcff | PCI configuration mechanism #1 (vPCI) and 0xCF9 reset control |
//! | 0x8900 | Bochs's shutdown port (the hypervisor's power off) |
//!
//! The maps are in the hardware's format, one bit per port, set = exit: SVM's I/O
//! permission map (12 KiB, ports 0..0xffff plus the bits a wrapping access reads) and
//! VMX's I/O bitmaps A and B (8 KiB, ports 0..0xffff).

use super::Privilege;
use core::ops::RangeInclusive;

/// Ports that exit even for the control domain.
pub const DOM0_INTERCEPTED: &[RangeInclusive<u16>] = &[
    0x00..=0x1f,
    0x20..=0x21,
    0x40..=0x43,
    0x60..=0x60,
    0x61..=0x61,
    0x64..=0x64,
    0x70..=0x71,
    0x80..=0x9f,
    0xa0..=0xa1,
    0xc0..=0xdf,
    0xe9..=0xe9,
    0xf4..=0xf4,
    0x3f8..=0x3ff,
    0x4d0..=0x4d1,
    0x510..=0x51b,
    0xcf8..=0xcff,
    0x8900..=0x8900,
];

/// Whether an access to `port` exits for a domain of this privilege: every port for an
/// unprivileged one, only [`DOM0_INTERCEPTED`] for the control domain.
pub fn intercepted(privilege: Privilege, port: u16) -> bool {
    match privilege {
        Privilege::Unprivileged => true,
        Privilege::Control => DOM0_INTERCEPTED.iter().any(|r| r.contains(&port)),
    }
}

/// Fills `map` (at least 8 KiB: one bit per port, then any extra bytes, which stay all
/// ones so that an access wrapping past 0xffff exits) for a domain of this privilege.
pub fn fill(map: &mut [u8], privilege: Privilege) {
    map.fill(0xff);
    if privilege == Privilege::Unprivileged {
        return;
    }
    for (i, byte) in map.iter_mut().take(8192).enumerate() {
        let mut b = 0u8;
        for bit in 0..8 {
            let port = (i * 8 + bit) as u16;
            if intercepted(privilege, port) {
                b |= 1 << bit;
            }
        }
        *byte = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(map: &[u8], port: u16) -> bool {
        map[usize::from(port / 8)] & (1 << (port % 8)) != 0
    }

    #[test]
    fn domus_exit_on_every_port() {
        let mut map = vec![0u8; 12288];
        fill(&mut map, Privilege::Unprivileged);
        assert!(map.iter().all(|&b| b == 0xff));
        assert!((0..=0xffff).all(|p| intercepted(Privilege::Unprivileged, p)));
    }

    #[test]
    fn dom0_reaches_ide_but_not_the_hypervisors_ports() {
        let mut map = vec![0u8; 12288];
        fill(&mut map, Privilege::Control);
        // The legacy IDE channels, the ACPI PM block QEMU puts at 0x600, VGA, port 0x80's
        // neighbours outside the DMA page registers.
        for p in [
            0x1f0, 0x1f7, 0x3f6, 0x170, 0x376, 0x600, 0x3c0, 0xa2, 0x2f8, 0xcf7, 0xd00,
        ] {
            assert!(!bit(&map, p), "{p:#x} should pass through");
            assert!(!intercepted(Privilege::Control, p));
        }
        for p in [
            0x00, 0x0f, 0x20, 0x21, 0xa0, 0xa1, 0x40, 0x43, 0x61, 0x60, 0x64, 0x70, 0x71, 0x80,
            0x92, 0xc0, 0xdf, 0xe9, 0xf4, 0x3f8, 0x3fd, 0x3ff, 0x4d0, 0x4d1, 0x510, 0x514, 0x51b,
            0xcf8, 0xcf9, 0xcfc, 0xcff, 0x8900,
        ] {
            assert!(bit(&map, p), "{p:#x} should exit");
            assert!(intercepted(Privilege::Control, p));
        }
        // Exactly the listed ports, nothing else.
        let listed: usize = DOM0_INTERCEPTED.iter().map(|r| r.clone().count()).sum();
        let set: usize = (0..=0xffffu16).filter(|&p| bit(&map, p)).count();
        assert_eq!(set, listed);
        // The bytes past the 64 Ki ports (SVM's wrap-around bits) stay set.
        assert!(map[8192..].iter().all(|&b| b == 0xff));
    }
}
