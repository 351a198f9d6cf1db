//! Randomized comparison with the host CPU: each read-modify-write ALU instruction is
//! emulated on a memory operand and executed natively on registers with the same values;
//! results and status flags must agree (AF only where the SDM defines it).
#![cfg(target_arch = "x86_64")]

use x86_emu::alu::{AF, STATUS};
use x86_emu::{emulate, Access, CpuMode, Error, Memory, MmioFault, Outcome, Segment, Vcpu};

type HostFn = fn(u64, u64, u64) -> (u64, u64);

/// `op r, b` on the host with CF preset to `cf`; returns (r, RFLAGS).
macro_rules! host {
    ($op:literal, $m:literal) => {{
        fn f(a: u64, b: u64, cf: u64) -> (u64, u64) {
            let mut r = a;
            let flags: u64;
            // SAFETY: register-only arithmetic, plus a push/pop pair on this thread's stack
            // (the block does not use `nostack`, so the stack pointer is usable).
            unsafe {
                core::arch::asm!(
                    "bt {c}, 0",
                    concat!($op, " {r:", $m, "}, {b:", $m, "}"),
                    "pushfq",
                    "pop {f}",
                    r = inout(reg) r,
                    b = in(reg) b,
                    c = in(reg) cf,
                    f = out(reg) flags,
                );
            }
            (r, flags)
        }
        f as HostFn
    }};
    (unary $op:literal, $m:literal) => {{
        fn f(a: u64, _b: u64, cf: u64) -> (u64, u64) {
            let mut r = a;
            let flags: u64;
            // SAFETY: as above.
            unsafe {
                core::arch::asm!(
                    "bt {c}, 0",
                    concat!($op, " {r:", $m, "}"),
                    "pushfq",
                    "pop {f}",
                    r = inout(reg) r,
                    c = in(reg) cf,
                    f = out(reg) flags,
                );
            }
            (r, flags)
        }
        f as HostFn
    }};
}

macro_rules! sizes {
    ($($t:tt)*) => {
        [host!($($t)*, "l"), host!($($t)*, "x"), host!($($t)*, "e"), host!($($t)*, "r")]
    };
}

struct Cpu {
    gpr: [u64; 16],
    rflags: u64,
    rip: u64,
}

impl Vcpu for Cpu {
    fn gpr(&self, i: u8) -> u64 {
        self.gpr[usize::from(i)]
    }
    fn set_gpr(&mut self, i: u8, v: u64) {
        self.gpr[usize::from(i)] = v;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, v: u64) {
        self.rflags = v;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, v: u64) {
        self.rip = v;
    }
    fn segment_base(&self, _: Segment) -> u64 {
        0
    }
}

struct Dev {
    value: u64,
    written: Option<u64>,
}

impl Memory for Dev {
    fn mmio_read(&mut self, _: u64, _: u8) -> Result<u64, Error> {
        Ok(self.value)
    }
    fn mmio_write(&mut self, _: u64, _: u8, v: u64) -> Result<(), Error> {
        assert!(self.written.replace(v).is_none(), "two writes");
        Ok(())
    }
    fn guest_read(&mut self, _: u64, _: &mut [u8]) -> Result<(), Error> {
        unreachable!()
    }
    fn guest_write(&mut self, _: u64, _: &[u8]) -> Result<(), Error> {
        unreachable!()
    }
}

fn mask(size: u8) -> u64 {
    if size == 8 {
        u64::MAX
    } else {
        (1 << (size * 8)) - 1
    }
}

struct Case {
    name: &'static str,
    /// Opcode for the 8-bit form; the other sizes use opcode + 1 (with 66 / REX.W).
    opcode: u8,
    modrm: u8,
    host: [HostFn; 4],
    writes: bool,
    af_defined: bool,
}

#[test]
fn alu_matches_host_cpu() {
    // ModRM 0x13 = [rbx], EDX; 0x1b/0x03/0x0b = [rbx] with /3 (NEG), /0 (INC), /1 (DEC).
    let cases = [
        Case {
            name: "add",
            opcode: 0x00,
            modrm: 0x13,
            host: sizes!("add"),
            writes: true,
            af_defined: true,
        },
        Case {
            name: "or",
            opcode: 0x08,
            modrm: 0x13,
            host: sizes!("or"),
            writes: true,
            af_defined: false,
        },
        Case {
            name: "adc",
            opcode: 0x10,
            modrm: 0x13,
            host: sizes!("adc"),
            writes: true,
            af_defined: true,
        },
        Case {
            name: "sbb",
            opcode: 0x18,
            modrm: 0x13,
            host: sizes!("sbb"),
            writes: true,
            af_defined: true,
        },
        Case {
            name: "and",
            opcode: 0x20,
            modrm: 0x13,
            host: sizes!("and"),
            writes: true,
            af_defined: false,
        },
        Case {
            name: "sub",
            opcode: 0x28,
            modrm: 0x13,
            host: sizes!("sub"),
            writes: true,
            af_defined: true,
        },
        Case {
            name: "xor",
            opcode: 0x30,
            modrm: 0x13,
            host: sizes!("xor"),
            writes: true,
            af_defined: false,
        },
        Case {
            name: "cmp",
            opcode: 0x38,
            modrm: 0x13,
            host: sizes!("cmp"),
            writes: false,
            af_defined: true,
        },
        Case {
            name: "test",
            opcode: 0x84,
            modrm: 0x13,
            host: sizes!("test"),
            writes: false,
            af_defined: false,
        },
        Case {
            name: "neg",
            opcode: 0xf6,
            modrm: 0x1b,
            host: sizes!(unary "neg"),
            writes: true,
            af_defined: true,
        },
        Case {
            name: "inc",
            opcode: 0xfe,
            modrm: 0x03,
            host: sizes!(unary "inc"),
            writes: true,
            af_defined: true,
        },
        Case {
            name: "dec",
            opcode: 0xfe,
            modrm: 0x0b,
            host: sizes!(unary "dec"),
            writes: true,
            af_defined: true,
        },
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Bias towards edge values every few draws.
        match seed % 8 {
            0 => 0,
            1 => u64::MAX,
            2 => 1u64.rotate_right((seed >> 8) as u32 % 64),
            3 => 1u64.rotate_right((seed >> 8) as u32 % 64).wrapping_sub(1),
            _ => seed.rotate_left(17),
        }
    };
    let mut checked = 0u32;
    for c in &cases {
        for (si, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
            let mut bytes = Vec::new();
            match size {
                2 => bytes.push(0x66),
                8 => bytes.push(0x48),
                _ => {}
            }
            bytes.push(if size == 1 { c.opcode } else { c.opcode + 1 });
            bytes.push(c.modrm);
            for _ in 0..5000 {
                let (a, b, cf) = (rnd() & mask(size), rnd(), rnd() & 1);
                let mut cpu = Cpu {
                    gpr: [0; 16],
                    rflags: 0x202 | cf,
                    rip: 0x1000,
                };
                cpu.gpr[3] = 0x7000_0100;
                cpu.gpr[2] = b;
                let mut dev = Dev {
                    value: a,
                    written: None,
                };
                let fault = MmioFault {
                    gpa: 0xfee0_0100,
                    access: Access::Write,
                };
                let r = emulate(
                    &bytes,
                    CpuMode::Long {
                        cs_l: true,
                        cs_d: false,
                    },
                    fault,
                    &mut cpu,
                    &mut dev,
                );
                assert_eq!(
                    r,
                    Ok(Outcome::Completed {
                        len: bytes.len() as u8
                    }),
                    "{}",
                    c.name
                );
                let (hr, hf) = (c.host[si])(a, b, cf);
                let what = format!("{} size {size}: a={a:#x} b={b:#x} cf={cf}", c.name);
                assert_eq!(dev.written, c.writes.then_some(hr & mask(size)), "{what}");
                let cmp = if c.af_defined { STATUS } else { STATUS & !AF };
                assert_eq!(
                    cpu.rflags & cmp,
                    hf & cmp,
                    "{what}: emulated {:#x} host {hf:#x}",
                    cpu.rflags
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12 * 4 * 5000);
}
