//! PIT channel 2 and port 0x61, as far as a kernel calibrating its TSC needs them.
//!
//! Linux (booted without a TSC frequency it trusts from CPUID) times the TSC against PIT
//! channel 2: it programs a count through ports 0x43/0x42 with the gate (port 0x61 bit 0)
//! high, then reads the count back (0x42) or waits for the channel's output (0x61 bit 5).
//! Ports that float high never change, so each attempt spins through its whole budget
//! (100,000 exits in a Debian kernel's boot). This model counts down at the PIT's
//! 1.193182 MHz, derived from elapsed time the caller passes in, so calibration ends in a
//! few hundred exits and measures the real TSC rate. Channels 0 and 1, BCD counting and
//! the read-back command are not modelled (reads float high, writes are dropped).

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// How the count is read and written (control word bits 5–4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    /// LSB then MSB, alternating.
    Word,
}

/// PIT channel 2 and the speaker/gate port.
#[derive(Clone, Debug)]
pub struct Pit2 {
    mode: u8,
    access: Access,
    /// The programmed count (0 = 65536).
    reload: u32,
    /// Tick (in PIT ticks since an arbitrary origin) at which counting started; None
    /// until a count is loaded.
    start: Option<u64>,
    /// A partly written count (LSB written, MSB pending).
    write_lsb: Option<u8>,
    /// Next byte to read in `Word` access: the MSB.
    read_msb: bool,
    /// A latched count, if any (read LSB then MSB in `Word` access).
    latched: Option<u16>,
    /// Port 0x61 bits 0 (gate) and 1 (speaker data).
    port61: u8,
}

impl Default for Pit2 {
    fn default() -> Self {
        Pit2 {
            mode: 0,
            access: Access::Word,
            reload: 0,
            start: None,
            write_lsb: None,
            read_msb: false,
            latched: None,
            port61: 0,
        }
    }
}

impl Pit2 {
    /// Whether this model answers `port`.
    pub fn owns(port: u16) -> bool {
        matches!(port, 0x42 | 0x43 | 0x61)
    }

    fn reload_ticks(&self) -> u64 {
        if self.reload == 0 {
            65_536
        } else {
            u64::from(self.reload)
        }
    }

    /// The current count and output at PIT tick `now`.
    fn state(&self, now: u64) -> (u16, bool) {
        let Some(start) = self.start else {
            return (self.reload as u16, false);
        };
        let elapsed = now.saturating_sub(start);
        let reload = self.reload_ticks();
        match self.mode {
            // Modes 2 and 3 (and their aliases 6, 7) reload periodically.
            2 | 3 | 6 | 7 => {
                let count = reload - elapsed % reload;
                let out = if self.mode & 3 == 3 {
                    count > reload / 2
                } else {
                    count != 1
                };
                (count as u16, out)
            }
            // Mode 0 (and the others, approximately): count down once, output high at
            // zero; the counter keeps wrapping below zero as hardware's does.
            _ => (
                (reload.wrapping_sub(elapsed) & 0xffff) as u16,
                elapsed >= reload,
            ),
        }
    }

    /// A port read at PIT tick `now`.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x42 => {
                let count = match self.latched {
                    Some(c) => c,
                    None => self.state(now).0,
                };
                let byte = match self.access {
                    Access::Lsb => count as u8,
                    Access::Msb => (count >> 8) as u8,
                    Access::Word => {
                        let b = if self.read_msb {
                            (count >> 8) as u8
                        } else {
                            count as u8
                        };
                        self.read_msb = !self.read_msb;
                        b
                    }
                };
                let done = match self.access {
                    Access::Word => !self.read_msb,
                    _ => true,
                };
                if done {
                    self.latched = None;
                }
                byte
            }
            0x61 => {
                let (_, out) = self.state(now);
                // Bit 4 toggles with the DRAM refresh (every 15 µs on a PC).
                let refresh = (now / 18) & 1 == 1;
                self.port61 & 3 | u8::from(refresh) << 4 | u8::from(out) << 5
            }
            _ => 0xff,
        }
    }

    /// A port write at PIT tick `now`.
    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            0x43 if value >> 6 == 2 => {
                let access = (value >> 4) & 3;
                if access == 0 {
                    // Counter latch command.
                    if self.latched.is_none() {
                        self.latched = Some(self.state(now).0);
                        self.read_msb = false;
                    }
                    return;
                }
                self.access = match access {
                    1 => Access::Lsb,
                    2 => Access::Msb,
                    _ => Access::Word,
                };
                self.mode = (value >> 1) & 7;
                self.start = None;
                self.write_lsb = None;
                self.read_msb = false;
                self.latched = None;
            }
            0x42 => {
                let reload = match (self.access, self.write_lsb.take()) {
                    (Access::Lsb, _) => u32::from(value),
                    (Access::Msb, _) => u32::from(value) << 8,
                    (Access::Word, None) => {
                        self.write_lsb = Some(value);
                        return;
                    }
                    (Access::Word, Some(lsb)) => u32::from(lsb) | u32::from(value) << 8,
                };
                self.reload = reload;
                // Counting starts at the next clock edge.
                self.start = Some(now.saturating_add(1));
            }
            0x61 => {
                let rising = value & 1 == 1 && self.port61 & 1 == 0;
                self.port61 = value & 3;
                // A rising gate restarts the count in the modes it triggers (1, 5).
                if rising && matches!(self.mode, 1 | 5) && self.start.is_some() {
                    self.start = Some(now.saturating_add(1));
                }
            }
            _ => {}
        }
    }
}

/// PIT ticks in `ns` nanoseconds (system time, itself the TSC scaled).
pub fn ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Programs channel 2 as Linux's quick calibration does: gate on, mode 0, LSB+MSB,
    /// count 0xffff.
    fn linux_setup(p: &mut Pit2, now: u64) {
        let v = p.read(0x61, now);
        p.write(0x61, (v & !2) | 1, now);
        p.write(0x43, 0xb0, now);
        p.write(0x42, 0xff, now);
        p.write(0x42, 0xff, now);
    }

    #[test]
    fn counts_down_and_reads_lsb_then_msb() {
        let mut p = Pit2::default();
        linux_setup(&mut p, 1000);
        // 257 ticks after the start (which is one tick after the write): 0xffff - 257.
        let now = 1001 + 257;
        let lsb = p.read(0x42, now);
        let msb = p.read(0x42, now);
        assert_eq!(u16::from(msb) << 8 | u16::from(lsb), 0xffff - 257);
        // The MSB moves once every 256 ticks.
        p.read(0x42, now + 256);
        assert_eq!(p.read(0x42, now + 256), msb - 1);
    }

    #[test]
    fn mode0_output_goes_high_at_zero() {
        let mut p = Pit2::default();
        p.write(0x61, 1, 0);
        p.write(0x43, 0xb0, 0);
        // 11932 ticks = 10 ms, as Linux's slow calibration.
        p.write(0x42, (11_932 & 0xff) as u8, 0);
        p.write(0x42, (11_932 >> 8) as u8, 0);
        assert_eq!(p.read(0x61, 5000) & 0x20, 0);
        assert_eq!(p.read(0x61, 11_932) & 0x20, 0);
        assert_eq!(p.read(0x61, 11_933) & 0x20, 0x20);
        assert_eq!(p.read(0x61, 11_933) & 1, 1, "gate bit reads back");
    }

    #[test]
    fn latch_freezes_the_count_until_both_bytes_are_read() {
        let mut p = Pit2::default();
        linux_setup(&mut p, 0);
        p.write(0x43, 0x80, 101); // latch channel 2
        let lsb = p.read(0x42, 5000);
        let msb = p.read(0x42, 9000);
        assert_eq!(u16::from(msb) << 8 | u16::from(lsb), 0xffff - 100);
        // After the latch is consumed, reads follow the clock again.
        let lsb = p.read(0x42, 1001);
        let msb = p.read(0x42, 1001);
        assert_eq!(u16::from(msb) << 8 | u16::from(lsb), 0xffff - 1000);
    }

    #[test]
    fn other_channels_and_unprogrammed_reads_are_harmless() {
        let mut p = Pit2::default();
        p.write(0x43, 0x34, 5); // channel 0: ignored
        p.write(0x43, 0xc2, 5); // read-back: ignored
        assert_eq!(p.read(0x43, 5), 0xff);
        // Nothing loaded: the count reads as the (zero) reload value, the output low.
        assert_eq!(p.read(0x42, 1 << 40), 0);
        assert_eq!(p.read(0x61, u64::MAX) & 0x20, 0);
        // Huge times and counts do not overflow.
        linux_setup(&mut p, u64::MAX - 3);
        let _ = p.read(0x42, u64::MAX);
        let _ = p.read(0x61, 0);
    }

    #[test]
    fn tsc_to_pit_ticks() {
        assert_eq!(ticks(1_000_000_000), PIT_HZ);
        assert_eq!(ticks(10_000_000), 11_931);
        assert!(ticks(u64::MAX) > 0, "no overflow");
    }
}
