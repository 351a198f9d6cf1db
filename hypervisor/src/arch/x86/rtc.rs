//! Reading the CMOS real-time clock once at boot, to give guests a wallclock.

#![allow(unsafe_code)]

use super::port::{inb, outb};

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;

fn cmos(reg: u8) -> u8 {
    // Bit 7 of the index port is the NMI-disable bit: keep NMIs enabled.
    // SAFETY: the CMOS index/data ports belong to the RTC, which the hypervisor owns;
    // selecting and reading a register changes nothing else (NMIs stay enabled).
    unsafe {
        outb(CMOS_INDEX, reg & 0x7f);
        inb(CMOS_DATA)
    }
}

/// The RTC's date and time: (year, month, day, hour, minute, second), assumed UTC.
/// Waits out an update in progress and reads twice until two reads agree.
pub fn read() -> (u32, u32, u32, u32, u32, u32) {
    let snapshot = || {
        for _ in 0..1_000_000 {
            if cmos(0x0a) & 0x80 == 0 {
                break;
            }
        }
        [
            cmos(0x00),
            cmos(0x02),
            cmos(0x04),
            cmos(0x07),
            cmos(0x08),
            cmos(0x09),
            cmos(0x32),
        ]
    };
    let mut a = snapshot();
    for _ in 0..10 {
        let b = snapshot();
        if a == b {
            break;
        }
        a = b;
    }
    let status_b = cmos(0x0b);
    let bcd = status_b & 0x04 == 0;
    let dec = |v: u8| {
        if bcd {
            u32::from(v & 0x0f) + u32::from(v >> 4) * 10
        } else {
            u32::from(v)
        }
    };
    let [sec, min, hour, day, month, year, century] = a;
    let mut h = dec(hour & 0x7f);
    if status_b & 0x02 == 0 && hour & 0x80 != 0 {
        h = (h % 12) + 12; // 12-hour mode, PM
    }
    let century = match dec(century) {
        19..=21 => dec(century),
        _ => 20,
    };
    (
        century * 100 + dec(year),
        dec(month),
        dec(day),
        h,
        dec(min),
        dec(sec),
    )
}
