//! The MMIO instruction emulator (`hypervisor/crates/x86-emu`): iced-x86 decoding plus the
//! emulation of the instructions a guest may use on device memory.
//!
//! Input: mode, access kind, faulting page offset, RFLAGS, failure switches, 15 instruction
//! bytes, then the 16 general-purpose registers, 6 segment bases and the device's value.
//!
//! Checks: no panic; every device access is 1, 2, 4 or 8 bytes inside the faulting page;
//! a non-string instruction makes at most one device read and one device write, to the same
//! address and size, the read first; RFLAGS bits other than the status flags never change;
//! an instruction that completes advances RIP by its length (wrapped to the code size), a
//! `REP` batch leaves RIP alone, and a refused non-string instruction changes no register.

use x86_emu::{emulate, Access, CpuMode, Error, Exception, Memory, MmioFault, Outcome, Registers};

use crate::input::Input;

/// Guest-physical page the fault is on (any page works; this one is recognisable).
const FAULT_PAGE: u64 = 0xfee0_0000;
/// RFLAGS status bits (CF PF AF ZF SF OF).
const STATUS: u64 = 0x8d5;

type Cpu = Registers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dev {
    Read(u64, u8),
    Write(u64, u8),
}

struct Mem {
    log: Vec<Dev>,
    value: u64,
    fail_read: bool,
    fail_write: bool,
    fail_guest: bool,
    guest_ops: u32,
}

impl Memory for Mem {
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<u64, Error> {
        self.log.push(Dev::Read(gpa, size));
        if self.fail_read {
            return Err(Error::Device(1));
        }
        Ok(self.value.rotate_left(u32::from(size)) ^ gpa)
    }
    fn mmio_write(&mut self, gpa: u64, size: u8, _value: u64) -> Result<(), Error> {
        self.log.push(Dev::Write(gpa, size));
        if self.fail_write {
            return Err(Error::Device(2));
        }
        Ok(())
    }
    fn guest_read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.guest_ops += 1;
        if self.fail_guest && self.guest_ops > 2 {
            return Err(Error::Fault(Exception::Pf {
                linear,
                error_code: 0,
            }));
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (linear as u8).wrapping_add(i as u8);
        }
        Ok(())
    }
    fn guest_write(&mut self, linear: u64, _buf: &[u8]) -> Result<(), Error> {
        self.guest_ops += 1;
        if self.fail_guest && self.guest_ops > 2 {
            return Err(Error::Fault(Exception::Pf {
                linear,
                error_code: 2,
            }));
        }
        Ok(())
    }
}

/// Whether the instruction is a string instruction the emulator handles (MOVS, STOS, LODS),
/// whose registers may change even when it fails part-way.
fn is_string(bytes: &[u8], bits: u32) -> bool {
    let op = bytes.iter().find(|&&b| {
        let legacy = matches!(
            b,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
        );
        let rex = bits == 64 && (0x40..=0x4f).contains(&b);
        !(legacy || rex)
    });
    matches!(op, Some(0xa4 | 0xa5 | 0xaa | 0xab | 0xac | 0xad))
}

/// The x86-emu target.
pub fn target_x86_emu(data: &[u8]) {
    let _ = run(data);
}

/// Decodes the input, emulates, checks; returns what `emulate` returned (for the seed test).
pub(crate) fn run(data: &[u8]) -> Result<Outcome, Error> {
    let mut inp = Input::new(data);
    let mode = match inp.u8() % 5 {
        0 => CpuMode::Real,
        1 => CpuMode::Protected { cs_d: false },
        2 => CpuMode::Protected { cs_d: true },
        3 => CpuMode::Long {
            cs_l: false,
            cs_d: true,
        },
        _ => CpuMode::Long {
            cs_l: true,
            cs_d: false,
        },
    };
    let bits = mode.bitness();
    let access = inp.pick(&[Access::Read, Access::Write, Access::Unknown]);
    let gpa = FAULT_PAGE | u64::from(inp.u16() & 0xfff);
    let rflags = (u64::from(inp.u16()) | 2) & 0x3f_7fd7;
    let switches = inp.u8();
    let mut bytes = [0u8; 15];
    let b = inp.bytes(15);
    bytes[..b.len()].copy_from_slice(b);
    // Registers: small values by default so memory operands often land in the page.
    let mut cpu = Cpu {
        gpr: [0; 16],
        rflags,
        rip: 0x1000,
        seg: [0; 6],
    };
    for r in cpu.gpr.iter_mut() {
        *r = match inp.u8() {
            0..=127 => u64::from(inp.u16()),
            128..=191 => u64::from(inp.u32()),
            _ => inp.u64(),
        };
    }
    if switches & 0x80 != 0 {
        for s in cpu.seg.iter_mut() {
            *s = u64::from(inp.u32()) << 4;
        }
        cpu.rip = inp.u64();
    }
    let mut mem = Mem {
        log: Vec::new(),
        value: inp.u64(),
        fail_read: switches & 1 != 0,
        fail_write: switches & 2 != 0,
        fail_guest: switches & 4 != 0,
        guest_ops: 0,
    };
    // Shorter instruction buffers (a fetch stopped at a page boundary).
    let len = if switches & 8 != 0 {
        usize::from(switches >> 4) % 15
    } else {
        15
    };
    let before = cpu.clone();
    let fault = MmioFault { gpa, access };
    let result = emulate(&bytes[..len], mode, fault, &mut cpu, &mut mem);

    for d in &mem.log {
        let (Dev::Read(a, s) | Dev::Write(a, s)) = *d;
        assert!(matches!(s, 1 | 2 | 4 | 8), "device access of {s} bytes");
        assert_eq!(
            a & !0xfff,
            FAULT_PAGE,
            "device access outside the faulting page"
        );
        assert!(
            (a & 0xfff) + u64::from(s) <= 0x1000,
            "device access crosses the page"
        );
    }
    assert_eq!(
        cpu.rflags & !STATUS,
        before.rflags & !STATUS,
        "non-status flags changed"
    );
    let string = is_string(&bytes[..len], bits);
    if !string {
        let reads: Vec<_> = mem
            .log
            .iter()
            .filter(|d| matches!(d, Dev::Read(..)))
            .collect();
        let writes: Vec<_> = mem
            .log
            .iter()
            .filter(|d| matches!(d, Dev::Write(..)))
            .collect();
        assert!(reads.len() <= 1 && writes.len() <= 1, "{:?}", mem.log);
        if let ([Dev::Read(ra, rs)], [Dev::Write(wa, ws)]) = (&reads[..], &writes[..]) {
            assert_eq!((ra, rs), (wa, ws), "read-modify-write on two places");
            assert!(matches!(mem.log[0], Dev::Read(..)), "write before read");
        }
        assert_eq!(
            mem.guest_ops, 0,
            "ordinary memory touched by a non-string instruction"
        );
    }
    let ip_mask = match bits {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    };
    match result {
        Ok(Outcome::Completed { len: n }) => {
            assert!((1..=15).contains(&n) && usize::from(n) <= len);
            assert_eq!(cpu.rip, before.rip.wrapping_add(u64::from(n)) & ip_mask);
            assert!(
                !mem.log.is_empty() || string,
                "completed without touching the device"
            );
        }
        Ok(Outcome::RepPending { len: n }) => {
            assert!(string && (1..=15).contains(&n));
            assert_eq!(cpu.rip, before.rip);
        }
        Err(e) => {
            if string {
                assert_eq!(
                    cpu.rip, before.rip,
                    "RIP moved on a failed string instruction"
                );
            } else {
                assert_eq!(
                    cpu, before,
                    "a refused instruction ({e:?}) changed registers"
                );
            }
        }
    }
    result
}
