//! TSC frequency measurement against the PIT, and reading the TSC.
#![allow(unsafe_code)]

use super::port::{inb, outb};

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 20 ms of PIT ticks.
const CALIBRATE_TICKS: u16 = (PIT_HZ / 50) as u16;

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; CR4.TSD is clear in the hypervisor.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measures the TSC frequency (Hz): the median of five 20 ms measurements, so that one
/// window stretched by the host descheduling an emulator (a 5 ms stall is a 25 % error)
/// does not set system time's rate, and every guest's clock with it, for the whole run.
pub fn measure_hz() -> u64 {
    let mut samples = [0u64; 5];
    for s in &mut samples {
        *s = measure_once();
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Counts TSC ticks across a one-shot countdown of PIT channel 2 (gated through port
/// 0x61, so no interrupt is involved).
fn measure_once() -> u64 {
    // SAFETY: PIT channel 2 and its gate in port 0x61 belong to the hypervisor (guests
    // never reach the host's PIT); channel 2 drives only the speaker, which stays off.
    unsafe {
        // Gate on, speaker off.
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
        outb(0x43, 0b1011_0000);
        outb(0x42, CALIBRATE_TICKS as u8);
        outb(0x42, (CALIBRATE_TICKS >> 8) as u8);
        // Restart the count by toggling the gate.
        let gate = inb(0x61);
        outb(0x61, gate & !0x01);
        outb(0x61, gate | 0x01);
    }
    let start = rdtsc();
    // Bit 5 of port 0x61 mirrors channel 2's output, which goes high at terminal count.
    let mut spins = 0u64;
    // SAFETY: reading port 0x61 (as above) has no side effect.
    while unsafe { inb(0x61) } & 0x20 == 0 {
        spins += 1;
        if spins > 1 << 32 {
            break;
        }
    }
    let ticks = rdtsc().wrapping_sub(start);
    ticks * PIT_HZ / u64::from(CALIBRATE_TICKS)
}
