//! Host tests. Instruction bytes are hand-assembled; the assertions on access sizes,
//! addresses and registers check iced's decoding of each. Expected flags come from an
//! independent model ([`reference`]) that works on wide integers instead of bit tricks, and
//! from values worked out by hand from the SDM's definitions.
#![allow(clippy::type_complexity)]
extern crate std;

use super::*;
use alu::{AF, OF, PF, SF, ZF};
use std::vec::Vec;

const PAGE_GPA: u64 = 0xfee0_0000;
/// Linear address at which the test guest maps the MMIO page.
const PAGE_LIN: u64 = 0x7000_0000;
/// Offset in the page of the default access.
const OFF: u64 = 0x100;
const RAM_LIN: u64 = 0x20_0000;
const RAM_LEN: usize = 0x3000;

const M64: CpuMode = CpuMode::Long {
    cs_l: true,
    cs_d: false,
};
const M32: CpuMode = CpuMode::Protected { cs_d: true };
const M16: CpuMode = CpuMode::Real;
const RBX: u8 = 3;
const RDX: u8 = 2;

type Cpu = Registers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    R(u64, u8),
    W(u64, u8, u64),
    GR(u64, usize),
    GW(u64, usize),
}

struct Mem {
    dev: [u8; 4096],
    ram: Vec<u8>,
    log: Vec<Ev>,
    fail_device: bool,
}

impl Mem {
    fn new() -> Self {
        let mut dev = [0u8; 4096];
        for (i, b) in dev.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(1);
        }
        let ram = (0..RAM_LEN).map(|i| (i as u8) ^ 0x5a).collect();
        Mem {
            dev,
            ram,
            log: Vec::new(),
            fail_device: false,
        }
    }
    fn dev_get(&self, off: u64, size: u8) -> u64 {
        let mut le = [0u8; 8];
        le[..usize::from(size)]
            .copy_from_slice(&self.dev[off as usize..off as usize + usize::from(size)]);
        u64::from_le_bytes(le)
    }
    fn dev_set(&mut self, off: u64, size: u8, v: u64) {
        self.dev[off as usize..off as usize + usize::from(size)]
            .copy_from_slice(&v.to_le_bytes()[..usize::from(size)]);
    }
    fn ram_range(&self, lin: u64, len: usize) -> Result<usize, Error> {
        match lin.checked_sub(RAM_LIN) {
            Some(o) if o as usize + len <= RAM_LEN => Ok(o as usize),
            _ => Err(Error::Fault(Exception::Pf {
                linear: lin,
                error_code: 0,
            })),
        }
    }
    fn writes(&self) -> Vec<Ev> {
        self.log
            .iter()
            .copied()
            .filter(|e| matches!(e, Ev::W(..)))
            .collect()
    }
}

impl Memory for Mem {
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<u64, Error> {
        assert_eq!(gpa & !0xfff, PAGE_GPA, "device read outside its page");
        assert!([1, 2, 4, 8].contains(&size));
        if self.fail_device {
            return Err(Error::Device(7));
        }
        self.log.push(Ev::R(gpa, size));
        Ok(self.dev_get(gpa & 0xfff, size))
    }
    fn mmio_write(&mut self, gpa: u64, size: u8, v: u64) -> Result<(), Error> {
        assert_eq!(gpa & !0xfff, PAGE_GPA, "device write outside its page");
        assert_eq!(v & !mask(size), 0, "value wider than the access");
        if self.fail_device {
            return Err(Error::Device(7));
        }
        self.log.push(Ev::W(gpa, size, v));
        self.dev_set(gpa & 0xfff, size, v);
        Ok(())
    }
    fn guest_read(&mut self, lin: u64, buf: &mut [u8]) -> Result<(), Error> {
        let o = self.ram_range(lin, buf.len())?;
        self.log.push(Ev::GR(lin, buf.len()));
        buf.copy_from_slice(&self.ram[o..o + buf.len()]);
        Ok(())
    }
    fn guest_write(&mut self, lin: u64, buf: &[u8]) -> Result<(), Error> {
        let o = self.ram_range(lin, buf.len())?;
        self.log.push(Ev::GW(lin, buf.len()));
        self.ram[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

fn cpu() -> Cpu {
    let mut gpr = [0u64; 16];
    for (i, r) in gpr.iter_mut().enumerate() {
        *r = 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1) ^ 0x0123_4567_89ab_cdef;
    }
    gpr[usize::from(RBX)] = PAGE_LIN + OFF;
    Cpu {
        gpr,
        rflags: 0x2,
        rip: 0x40_1000,
        seg: [0; 6],
    }
}

struct Run {
    res: Result<Outcome, Error>,
    cpu: Cpu,
    before: Cpu,
    mem: Mem,
}

fn exec(
    bytes: &[u8],
    mode: CpuMode,
    gpa: u64,
    access: Access,
    f: impl FnOnce(&mut Cpu, &mut Mem),
) -> Run {
    let mut c = cpu();
    let mut mem = Mem::new();
    f(&mut c, &mut mem);
    let before = c.clone();
    let res = emulate(bytes, mode, MmioFault { gpa, access }, &mut c, &mut mem);
    Run {
        res,
        cpu: c,
        before,
        mem,
    }
}

/// 64-bit mode, fault at the default offset.
fn run64(bytes: &[u8], f: impl FnOnce(&mut Cpu, &mut Mem)) -> Run {
    exec(bytes, M64, PAGE_GPA + OFF, Access::Unknown, f)
}

fn done(r: &Run, len: u8) {
    assert_eq!(r.res, Ok(Outcome::Completed { len }));
    assert_eq!(r.cpu.rip, r.before.rip + u64::from(len));
}

/// The registers other than those listed are unchanged.
fn others_unchanged(r: &Run, changed: &[u8]) {
    for i in 0..16u8 {
        if !changed.contains(&i) {
            assert_eq!(
                r.cpu.gpr[usize::from(i)],
                r.before.gpr[usize::from(i)],
                "register {i} changed"
            );
        }
    }
}

// ---------------------------------------------------------------- reference flags model

#[derive(Clone, Copy, Debug)]
enum R {
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
}

/// Result and status flags by wide arithmetic (signed and unsigned ranges), independent of
/// the crate's bit tricks.
fn reference(op: R, size: u8, a: u64, b: u64, cin: bool) -> (u64, u64) {
    let bits = u32::from(size) * 8;
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let s = |v: u64| -> i128 { i128::from(sign_extend(v, size) as i64) };
    let c = u128::from(cin);
    let (smin, smax) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
    let (r, cf, of, af) = match op {
        R::Add | R::Adc => {
            let c = if matches!(op, R::Adc) { c } else { 0 };
            let u = u128::from(a) + u128::from(b) + c;
            let sv = s(a) + s(b) + c as i128;
            (
                (u as u64) & m,
                u >> bits != 0,
                sv < smin || sv > smax,
                (a & 0xf) + (b & 0xf) + c as u64 > 0xf,
            )
        }
        R::Sub | R::Sbb => {
            let c = if matches!(op, R::Sbb) { c } else { 0 };
            let sv = s(a) - s(b) - c as i128;
            let r = (i128::from(a) - i128::from(b) - c as i128) as u64 & m;
            (
                r,
                u128::from(a) < u128::from(b) + c,
                sv < smin || sv > smax,
                (a & 0xf) < (b & 0xf) + c as u64,
            )
        }
        R::And => (a & b, false, false, false),
        R::Or => (a | b, false, false, false),
        R::Xor => (a ^ b, false, false, false),
    };
    let mut f = 0;
    let bit = |on: bool, v: u64| if on { v } else { 0 };
    f |= bit(cf, CF);
    f |= bit((0..8).filter(|i| r >> i & 1 == 1).count() % 2 == 0, PF);
    f |= bit(af, AF);
    f |= bit(r == 0, ZF);
    f |= bit(r >> (bits - 1) & 1 == 1, SF);
    f |= bit(of, OF);
    (r, f)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Random values biased to the interesting edges.
    fn val(&mut self) -> u64 {
        match self.next() % 6 {
            0 => 0,
            1 => u64::MAX,
            2 => 0x8000_0000_0000_0000 >> (self.next() % 64),
            3 => (0x8000_0000_0000_0000u64 >> (self.next() % 64)).wrapping_sub(1),
            _ => self.next(),
        }
    }
}

#[test]
fn alu_matches_reference_model() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ops = [
        (R::Add, Op::Add),
        (R::Adc, Op::Adc),
        (R::Sub, Op::Sub),
        (R::Sbb, Op::Sbb),
        (R::And, Op::And),
        (R::Or, Op::Or),
        (R::Xor, Op::Xor),
    ];
    for _ in 0..20_000 {
        for (r, o) in ops {
            for size in [1u8, 2, 4, 8] {
                let (a, b, cin) = (rng.val(), rng.val(), rng.next() & 1 == 1);
                let rf = 0x202 | if cin { CF } else { 0 };
                let (res, f) = alu(o, size, a, b, rf);
                let (eres, ef) = reference(r, size, a, b, cin);
                assert_eq!(
                    (res, f),
                    (eres, ef | 0x202),
                    "{o:?} size {size} a {a:#x} b {b:#x} cf {cin}"
                );
            }
        }
    }
}

#[test]
fn alu_sdm_examples() {
    // 0x7f + 1 (8-bit): signed overflow, sign, half carry, no carry.
    assert_eq!(alu(Op::Add, 1, 0x7f, 1, 0), (0x80, OF | SF | AF));
    // 0xff + 1: carry, zero, half carry, parity even (0 has no bits set).
    assert_eq!(alu(Op::Add, 1, 0xff, 1, 0), (0, CF | ZF | AF | PF));
    // 0 - 1 (32-bit): borrow, sign, half borrow, 0xff low byte = even parity.
    assert_eq!(alu(Op::Sub, 4, 0, 1, 0), (0xffff_ffff, CF | SF | AF | PF));
    // 0x8000 - 1 (16-bit): signed overflow.
    assert_eq!(alu(Op::Sub, 2, 0x8000, 1, 0), (0x7fff, OF | AF | PF));
    // INC keeps CF, DEC keeps CF.
    assert_eq!(alu(Op::Inc, 8, u64::MAX, 0, CF), (0, CF | ZF | AF | PF));
    assert_eq!(alu(Op::Dec, 1, 0x80, 0, 0), (0x7f, OF | AF));
    // NEG 0 clears CF; NEG 0x80 (8-bit) overflows.
    assert_eq!(alu(Op::Neg, 1, 0, 0, CF), (0, ZF | PF));
    assert_eq!(alu(Op::Neg, 1, 0x80, 0, 0), (0x80, CF | OF | SF));
    // Logic clears CF and OF.
    assert_eq!(alu(Op::And, 4, 0xf0, 0x0f, CF | OF), (0, ZF | PF));
}

// ---------------------------------------------------------------- MOV

#[test]
fn mov_store_each_size() {
    let g = PAGE_GPA + OFF;
    // (bytes, expected write size, register index, shift)
    let cases: &[(&[u8], u8, u8, u32)] = &[
        (&[0x88, 0x03], 1, 0, 0),             // mov [rbx], al
        (&[0x88, 0x33], 1, 2, 8),             // mov [rbx], dh
        (&[0x40, 0x88, 0x33], 1, 6, 0),       // mov [rbx], sil
        (&[0x66, 0x89, 0x03], 2, 0, 0),       // mov [rbx], ax
        (&[0x89, 0x0b], 4, 1, 0),             // mov [rbx], ecx
        (&[0x48, 0x89, 0x03], 8, 0, 0),       // mov [rbx], rax
        (&[0x4c, 0x89, 0x3b], 8, 15, 0),      // mov [rbx], r15
        (&[0x44, 0x89, 0x03], 4, 8, 0),       // mov [rbx], r8d
        (&[0x66, 0x44, 0x89, 0x0b], 2, 9, 0), // mov [rbx], r9w
    ];
    for &(bytes, size, reg, shift) in cases {
        let r = run64(bytes, |_, _| {});
        done(&r, bytes.len() as u8);
        let v = (r.before.gpr[usize::from(reg)] >> shift) & mask(size);
        assert_eq!(r.mem.log, [Ev::W(g, size, v)], "{bytes:x?}");
        others_unchanged(&r, &[]);
        assert_eq!(r.cpu.rflags, r.before.rflags);
    }
}

#[test]
fn mov_load_each_size() {
    let g = PAGE_GPA + OFF;
    let dev = Mem::new();
    let cases: &[(&[u8], u8, u8, fn(u64, u64) -> u64)] = &[
        (&[0x8a, 0x03], 1, 0, |old, v| (old & !0xff) | v), // mov al, [rbx]
        (&[0x8a, 0x23], 1, 0, |old, v| (old & !0xff00) | v << 8), // mov ah, [rbx]
        (&[0x40, 0x8a, 0x3b], 1, 7, |old, v| (old & !0xff) | v), // mov dil, [rbx]
        (&[0x66, 0x8b, 0x13], 2, 2, |old, v| (old & !0xffff) | v), // mov dx, [rbx]
        (&[0x8b, 0x03], 4, 0, |_, v| v),                   // mov eax, [rbx] zero-extends
        (&[0x48, 0x8b, 0x03], 8, 0, |_, v| v),             // mov rax, [rbx]
        (&[0x4c, 0x8b, 0x03], 8, 8, |_, v| v),             // mov r8, [rbx]
        (&[0x66, 0x45, 0x8b, 0x33], 2, 14, |old, v| {
            (old & !0xffff) | v
        }), // mov r14w, [r11]
    ];
    for &(bytes, size, reg, f) in cases {
        let r = run64(bytes, |c, _| c.gpr[11] = PAGE_LIN + OFF);
        done(&r, bytes.len() as u8);
        assert_eq!(r.mem.log, [Ev::R(g, size)], "{bytes:x?}");
        let v = dev.dev_get(OFF, size);
        assert_eq!(
            r.cpu.gpr[usize::from(reg)],
            f(r.before.gpr[usize::from(reg)], v),
            "{bytes:x?}"
        );
        others_unchanged(&r, &[reg]);
    }
}

#[test]
fn mov_immediate_store() {
    let g = PAGE_GPA + OFF;
    let cases: &[(&[u8], u8, u64)] = &[
        (&[0xc6, 0x03, 0x12], 1, 0x12),               // mov byte [rbx], 0x12
        (&[0x66, 0xc7, 0x03, 0x34, 0x12], 2, 0x1234), // mov word [rbx], 0x1234
        (&[0xc7, 0x03, 0x78, 0x56, 0x34, 0x12], 4, 0x1234_5678), // mov dword [rbx], ...
        (
            &[0x48, 0xc7, 0x03, 0xf0, 0xff, 0xff, 0xff],
            8,
            0xffff_ffff_ffff_fff0,
        ), // sign-extended imm32
    ];
    for &(bytes, size, v) in cases {
        let r = run64(bytes, |_, _| {});
        done(&r, bytes.len() as u8);
        assert_eq!(r.mem.log, [Ev::W(g, size, v)]);
    }
}

#[test]
fn mov_moffs_all_modes() {
    // 64-bit: mov al, [abs64]; mov [abs64], rax; with 67: 32-bit moffs.
    let abs = (PAGE_LIN + 0x20).to_le_bytes();
    let mut b = std::vec![0xa0];
    b.extend_from_slice(&abs);
    let r = exec(&b, M64, PAGE_GPA + 0x20, Access::Read, |_, _| {});
    done(&r, 9);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x20, 1)]);
    assert_eq!(r.cpu.gpr[0] & 0xff, Mem::new().dev_get(0x20, 1));
    let mut b = std::vec![0x48, 0xa3];
    b.extend_from_slice(&abs);
    let r = exec(&b, M64, PAGE_GPA + 0x20, Access::Write, |_, _| {});
    done(&r, 10);
    assert_eq!(r.mem.log, [Ev::W(PAGE_GPA + 0x20, 8, r.before.gpr[0])]);
    let r = exec(
        &[0x67, 0xa1, 0x20, 0, 0, 0x70],
        M64,
        PAGE_GPA + 0x20,
        Access::Read,
        |_, _| {},
    );
    done(&r, 6);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x20, 4)]);
    // 66 A1 in 64-bit mode: mov ax, [moffs64].
    let mut b = std::vec![0x66, 0xa1];
    b.extend_from_slice(&abs);
    let r = exec(&b, M64, PAGE_GPA + 0x20, Access::Read, |_, _| {});
    done(&r, 10);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x20, 2)]);
    // 32-bit protected mode, FS override: mov eax, fs:[0x10]; FS base puts it in the page.
    let r = exec(
        &[0x64, 0xa1, 0x10, 0, 0, 0],
        M32,
        PAGE_GPA + 0x30,
        Access::Read,
        |c, _| c.seg[Segment::Fs as usize] = PAGE_LIN + 0x20,
    );
    done(&r, 6);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x30, 4)]);
    // Real mode: mov [0x0040], al with DS base 0x10000 → linear 0x10040.
    let r = exec(
        &[0xa2, 0x40, 0x00],
        M16,
        PAGE_GPA + 0x40,
        Access::Write,
        |c, _| {
            c.seg[Segment::Ds as usize] = 0x1_0000;
            c.rip = 0x100;
        },
    );
    done(&r, 3);
    assert_eq!(
        r.mem.log,
        [Ev::W(PAGE_GPA + 0x40, 1, r.before.gpr[0] & 0xff)]
    );
}

#[test]
fn addressing_forms_and_prefixes() {
    let g = PAGE_GPA + OFF;
    // mov eax, [rbx+rcx*4+0x10]
    let r = run64(&[0x8b, 0x44, 0x8b, 0x10], |c, _| {
        c.gpr[RBX as usize] = PAGE_LIN;
        c.gpr[RCX as usize] = (OFF - 0x10) / 4;
    });
    done(&r, 4);
    assert_eq!(r.mem.log, [Ev::R(g, 4)]);
    // RIP-relative: mov eax, [rip+disp32]; next RIP + disp = PAGE_LIN + OFF.
    let rip = 0x40_1000u64;
    let disp = (PAGE_LIN + OFF).wrapping_sub(rip + 6) as u32;
    let mut b = std::vec![0x8b, 0x05];
    b.extend_from_slice(&disp.to_le_bytes());
    let r = run64(&b, |_, _| {});
    done(&r, 6);
    assert_eq!(r.mem.log, [Ev::R(g, 4)]);
    // 67 in 64-bit mode: mov eax, [ebx] ignores RBX's upper half.
    let r = run64(&[0x67, 0x8b, 0x03], |c, _| {
        c.gpr[RBX as usize] |= 0xdead_0000_0000_0000
    });
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(g, 4)]);
    // GS override applies the GS base in 64-bit mode; DS/CS overrides do not add a base.
    let r = run64(&[0x65, 0x8b, 0x03], |c, _| {
        c.seg[Segment::Gs as usize] = 0x1000;
        c.gpr[RBX as usize] = PAGE_LIN + OFF - 0x1000;
    });
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(g, 4)]);
    let r = run64(&[0x2e, 0x8b, 0x03], |c, _| {
        c.seg[Segment::Cs as usize] = 0x1000
    });
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(g, 4)]);
    // Real mode 16-bit addressing: mov ax, [bx+si+2] with DS base; 66: mov eax, [bx];
    // 67: mov ax, [ebx]; SS is the default segment for [bp].
    let rm = |bytes: &[u8], f: fn(&mut Cpu)| {
        exec(bytes, M16, PAGE_GPA + 0x40, Access::Read, move |c, _| {
            c.seg[Segment::Ds as usize] = 0x2_0000;
            c.seg[Segment::Ss as usize] = 0x3_0000;
            c.rip = 0x7c00;
            f(c)
        })
    };
    // Linear 0x20040 is not PAGE_LIN-based: only the page offset matters to the emulator.
    let r = rm(&[0x8b, 0x40, 0x02], |c| {
        c.gpr[RBX as usize] = 0xffff_0000_0000_0030;
        c.gpr[RSI as usize] = 0x0e;
    });
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x40, 2)]);
    assert_eq!(r.cpu.gpr[0] & !0xffff, r.before.gpr[0] & !0xffff);
    let r = rm(&[0x66, 0x8b, 0x07], |c| c.gpr[RBX as usize] = 0x40);
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x40, 4)]);
    let r = rm(&[0x67, 0x8b, 0x03], |c| c.gpr[RBX as usize] = 0x1_0040);
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x40, 2)]);
    // mov ax, [bp+0x10]: SS base 0x30000 + 0x30 + 0x10.
    let r = rm(&[0x8b, 0x46, 0x10], |c| c.gpr[5] = 0x30);
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x40, 2)]);
    // A 16-bit offset wraps: [bx+0x50] with BX = 0xfff0 is DS:0x0040.
    let r = rm(&[0x8b, 0x47, 0x50], |c| c.gpr[RBX as usize] = 0xfff0);
    done(&r, 3);
    // 16-bit IP wraps.
    let r = exec(&[0x8b, 0x07], M16, PAGE_GPA + 0x40, Access::Read, |c, _| {
        c.gpr[RBX as usize] = 0x40;
        c.rip = 0xffff;
    });
    assert_eq!(r.res, Ok(Outcome::Completed { len: 2 }));
    assert_eq!(r.cpu.rip, 1);
    // Compatibility mode with CS.D = 0 is 16-bit code.
    let r = exec(
        &[0x8b, 0x07],
        CpuMode::Long {
            cs_l: false,
            cs_d: false,
        },
        PAGE_GPA + 0x40,
        Access::Read,
        |c, _| {
            c.gpr[RBX as usize] = 0x40;
            c.rip = 0x1000;
        },
    );
    done(&r, 2);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + 0x40, 2)]);
    // 32-bit mode: mov eax, es:[ebx] with a segment base and a 32-bit wrap of the sum.
    let r = exec(
        &[0x26, 0x8b, 0x03],
        M32,
        PAGE_GPA + OFF,
        Access::Read,
        |c, _| {
            c.seg[Segment::Es as usize] = 0xffff_f000;
            c.gpr[RBX as usize] = 0x1000 + OFF;
        },
    );
    done(&r, 3);
    // 32-bit mode, 66: mov ax, [ebx].
    let r = exec(
        &[0x66, 0x8b, 0x03],
        M32,
        PAGE_GPA + OFF,
        Access::Read,
        |_, _| {},
    );
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + OFF, 2)]);
}

#[test]
fn movzx_movsx() {
    let dev = Mem::new();
    // Device byte at OFF is 0x100*7+1 = 0x01 (low byte of 0x701); use OFF 0x13 for a negative byte.
    let off = 0x13u64; // byte 0x13*7+1 = 0x86 (negative), word 0x8d86
    let b = dev.dev_get(off, 1);
    let w = dev.dev_get(off, 2);
    let d = dev.dev_get(off, 4);
    assert!(b & 0x80 != 0 && w & 0x8000 != 0 && d & 0x8000_0000 != 0);
    let cases: &[(&[u8], u8, u64)] = &[
        (&[0x0f, 0xb6, 0x03], 1, b),                     // movzx eax, byte [rbx]
        (&[0x66, 0x0f, 0xb6, 0x03], 1, 0x2222_0000 | b), // movzx ax, byte: merges (checked below)
        (&[0x48, 0x0f, 0xb7, 0x03], 2, w),               // movzx rax, word
        (&[0x0f, 0xbe, 0x03], 1, sign_extend(b, 1) & mask(4)), // movsx eax, byte
        (&[0x48, 0x0f, 0xbf, 0x03], 2, sign_extend(w, 2)), // movsx rax, word
        (&[0x48, 0x63, 0x03], 4, sign_extend(d, 4)),     // movsxd rax, dword
        (
            &[0x66, 0x0f, 0xbe, 0x03],
            1,
            0x2222_0000 | (sign_extend(b, 1) & 0xffff),
        ), // movsx ax, byte
    ];
    for &(bytes, size, want) in cases {
        let r = exec(bytes, M64, PAGE_GPA + off, Access::Read, |c, _| {
            c.gpr[RBX as usize] = PAGE_LIN + off;
            c.gpr[0] = 0xffff_ffff_2222_3333;
        });
        done(&r, bytes.len() as u8);
        assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + off, size)]);
        let want = if bytes[0] == 0x66 {
            0xffff_ffff_0000_0000 | want
        } else {
            want
        };
        assert_eq!(r.cpu.gpr[0], want, "{bytes:x?}");
    }
}

// ---------------------------------------------------------------- ALU read-modify-write

/// ModRM for [rbx] with the given reg field.
fn modrm_rbx(reg: u8) -> u8 {
    (reg << 3) | 3
}

const ALU_OPS: [(R, u8, &str); 8] = [
    (R::Add, 0, "add"),
    (R::Or, 1, "or"),
    (R::Adc, 2, "adc"),
    (R::Sbb, 3, "sbb"),
    (R::And, 4, "and"),
    (R::Sub, 5, "sub"),
    (R::Xor, 6, "xor"),
    (R::Sub, 7, "cmp"),
];

/// Prefix bytes and opcode adjustment for an operand size in 64-bit mode.
fn size_prefix(size: u8) -> (&'static [u8], u8) {
    match size {
        1 => (&[], 0),
        2 => (&[0x66], 1),
        4 => (&[], 1),
        _ => (&[0x48], 1),
    }
}

#[test]
fn alu_all_forms_sizes_and_flags() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (rop, n, name) in ALU_OPS {
        let cmp = name == "cmp";
        for size in [1u8, 2, 4, 8] {
            let (pfx, w) = size_prefix(size);
            for form in 0..5 {
                for _ in 0..40 {
                    let (dv, rv, cin) = (rng.val(), rng.val(), rng.next() & 1 == 1);
                    let imm8 = rng.next() as u8;
                    let imm32 = rng.next() as u32;
                    let mut b = pfx.to_vec();
                    // form 0: op [rbx], reg(edx); 1: op reg, [rbx]; 2: op [rbx], imm8 (80/83);
                    // 3: op [rbx], imm (80/81); 4: 82 alias (8-bit only, invalid in 64-bit)
                    let (mem_first, src) = match form {
                        0 => {
                            b.extend([n * 8 + w, modrm_rbx(2)]);
                            (true, rv)
                        }
                        1 => {
                            b.extend([n * 8 + 2 + w, modrm_rbx(2)]);
                            (false, rv)
                        }
                        2 => {
                            b.extend([if size == 1 { 0x80 } else { 0x83 }, modrm_rbx(n), imm8]);
                            (true, sign_extend(u64::from(imm8), 1))
                        }
                        3 if size != 1 => {
                            b.push(0x81);
                            b.push(modrm_rbx(n));
                            if size == 2 {
                                b.extend((imm32 as u16).to_le_bytes());
                                (true, u64::from(imm32 as u16))
                            } else {
                                b.extend(imm32.to_le_bytes());
                                (true, sign_extend(u64::from(imm32), 4))
                            }
                        }
                        _ => continue,
                    };
                    let r = run64(&b, |c, m| {
                        m.dev_set(OFF, size, dv & mask(size));
                        c.gpr[RDX as usize] = rv;
                        c.rflags = 0x202 | if cin { CF } else { 0 };
                    });
                    done(&r, b.len() as u8);
                    let (a, s) = if mem_first { (dv, src) } else { (rv, dv) };
                    let (res, flags) = reference(rop, size, a, s, cin);
                    assert_eq!(
                        r.cpu.rflags,
                        0x202 | flags,
                        "{name} size {size} form {form} {b:x?}"
                    );
                    let g = PAGE_GPA + OFF;
                    if cmp {
                        assert_eq!(r.mem.log, [Ev::R(g, size)]);
                        others_unchanged(&r, &[]);
                    } else if mem_first {
                        assert_eq!(
                            r.mem.log,
                            [Ev::R(g, size), Ev::W(g, size, res)],
                            "{name} {b:x?}"
                        );
                        others_unchanged(&r, &[]);
                    } else {
                        assert_eq!(r.mem.log, [Ev::R(g, size)]);
                        assert_eq!(
                            r.cpu.gpr[RDX as usize],
                            merge(rv, res, size),
                            "{name} {b:x?}"
                        );
                        others_unchanged(&r, &[RDX]);
                    }
                }
            }
        }
    }
}

#[test]
fn test_instruction() {
    let g = PAGE_GPA + OFF;
    // test [rbx], edx: 0x80000000 & 0x80000001 → SF, no ZF; PF from low byte 0 → PF.
    let r = run64(&[0x85, 0x13], |c, m| {
        m.dev_set(OFF, 4, 0x8000_0001);
        c.gpr[RDX as usize] = 0x8000_0000;
        c.rflags = 0x2 | CF | OF;
    });
    done(&r, 2);
    assert_eq!(r.cpu.rflags, 0x2 | SF | PF);
    assert_eq!(r.mem.log, [Ev::R(g, 4)]);
    // test byte [rbx], 0x0f with 0xf0 → ZF PF.
    let r = run64(&[0xf6, 0x03, 0x0f], |_, m| m.dev_set(OFF, 1, 0xf0));
    done(&r, 3);
    assert_eq!(r.cpu.rflags, 0x2 | ZF | PF);
    // test qword [rbx], imm32 (sign-extended) and test word with 66.
    let r = run64(&[0x48, 0xf7, 0x03, 0x00, 0x00, 0x00, 0x80], |_, m| {
        m.dev_set(OFF, 8, 1 << 63)
    });
    done(&r, 7);
    assert_eq!(r.cpu.rflags, 0x2 | SF | PF);
    let r = run64(&[0x66, 0xf7, 0x03, 0x01, 0x00], |_, m| {
        m.dev_set(OFF, 2, 0x0003)
    });
    done(&r, 5);
    assert_eq!(r.cpu.rflags, 0x2);
    assert_eq!(r.mem.log, [Ev::R(g, 2)]);
}

#[test]
fn unary_ops() {
    let g = PAGE_GPA + OFF;
    // (bytes, size, device value, result, flags after, starting CF)
    let cases: &[(&[u8], u8, u64, u64, u64, bool)] = &[
        (&[0xf6, 0x1b], 1, 0x80, 0x80, CF | OF | SF, false), // neg byte
        (&[0x66, 0xf7, 0x1b], 2, 0, 0, ZF | PF, true),       // neg word 0
        (&[0xf7, 0x1b], 4, 1, 0xffff_ffff, CF | SF | PF | AF, false), // neg dword
        (
            &[0x48, 0xf7, 0x1b],
            8,
            5,
            5u64.wrapping_neg(),
            CF | SF | AF,
            false,
        ), // neg qword
        (&[0xf6, 0x13], 1, 0x5a, 0xa5, CF, true),            // not byte (flags kept)
        (&[0x48, 0xf7, 0x13], 8, 0, u64::MAX, 0, false),     // not qword
        (&[0xfe, 0x03], 1, 0x7f, 0x80, OF | SF | AF | CF, true), // inc byte keeps CF
        (&[0x66, 0xff, 0x03], 2, 0xffff, 0, ZF | AF | PF, false), // inc word
        (&[0xff, 0x0b], 4, 0, 0xffff_ffff, SF | AF | PF, false), // dec dword
        (
            &[0x48, 0xff, 0x0b],
            8,
            1 << 63,
            (1 << 63) - 1,
            OF | AF | PF | CF,
            true,
        ), // dec qword
    ];
    for &(bytes, size, dv, res, flags, cin) in cases {
        let r = run64(bytes, |c, m| {
            m.dev_set(OFF, size, dv);
            c.rflags = 0x2 | if cin { CF } else { 0 };
        });
        done(&r, bytes.len() as u8);
        assert_eq!(
            r.mem.log,
            [Ev::R(g, size), Ev::W(g, size, res)],
            "{bytes:x?}"
        );
        assert_eq!(r.cpu.rflags, 0x2 | flags, "{bytes:x?}");
        others_unchanged(&r, &[]);
    }
}

// ---------------------------------------------------------------- BT family

#[test]
fn bit_ops() {
    // (bytes, size, bit offset in EDX/imm, device offset accessed, write value fn)
    let g = |o: u64| PAGE_GPA + o;
    let base = 0x200u64;
    let cases: &[(&[u8], u64, u8, u64, Option<fn(u64, u64) -> u64>)] = &[
        (&[0x0f, 0xa3, 0x13], 5, 4, base, None), // bt [rbx], edx
        (
            &[0x0f, 0xab, 0x13],
            37,
            4,
            base + 4,
            Some(|v, b| v | 1 << b),
        ), // bts: unit 1
        (
            &[0x0f, 0xb3, 0x13],
            (-1i64) as u64,
            4,
            base - 4,
            Some(|v, b| v & !(1 << b)),
        ), // btr, negative
        (
            &[0x48, 0x0f, 0xbb, 0x13],
            70,
            8,
            base + 8,
            Some(|v, b| v ^ 1 << b),
        ), // btc qword
        (&[0x66, 0x0f, 0xa3, 0x13], 17, 2, base + 2, None), // bt word
        (&[0x0f, 0xba, 0x23, 35], 35, 4, base, None), // bt [rbx], 35 → bit 3
        (&[0x0f, 0xba, 0x2b, 1], 1, 4, base, Some(|v, b| v | 1 << b)), // bts imm
        (
            &[0x48, 0x0f, 0xba, 0x33, 63],
            63,
            8,
            base,
            Some(|v, b| v & !(1 << b)),
        ), // btr imm qword
        (
            &[0x66, 0x0f, 0xba, 0x3b, 31],
            31,
            2,
            base,
            Some(|v, b| v ^ 1 << b),
        ), // btc imm word: bit 15
    ];
    for &(bytes, off, size, at, wf) in cases {
        let bit = off & (u64::from(size) * 8 - 1);
        for dv in [0u64, u64::MAX] {
            let r = exec(bytes, M64, g(at), Access::Unknown, |c, m| {
                c.gpr[RBX as usize] = PAGE_LIN + base;
                c.gpr[RDX as usize] = off;
                c.rflags = 0x2 | ZF | SF | if dv == 0 { CF } else { 0 };
                m.dev_set(at, size, dv & mask(size));
            });
            done(&r, bytes.len() as u8);
            let dv = dv & mask(size);
            let mut want = std::vec![Ev::R(g(at), size)];
            if let Some(f) = wf {
                want.push(Ev::W(g(at), size, f(dv, bit) & mask(size)));
            }
            assert_eq!(r.mem.log, want, "{bytes:x?}");
            // Only CF changes, to the selected bit.
            assert_eq!(
                r.cpu.rflags,
                0x2 | ZF | SF | if dv >> bit & 1 == 1 { CF } else { 0 },
                "{bytes:x?}"
            );
        }
    }
}

// ---------------------------------------------------------------- XCHG, XADD, CMPXCHG, LOCK

#[test]
fn exchanges() {
    let g = PAGE_GPA + OFF;
    // xchg [rbx], edx; 8-bit and 64-bit forms.
    for (bytes, size) in [
        (&[0x87u8, 0x13][..], 4u8),
        (&[0x86, 0x13][..], 1),
        (&[0x48, 0x87, 0x13][..], 8),
        (&[0x66, 0x87, 0x13][..], 2),
    ] {
        let r = run64(bytes, |_, m| m.dev_set(OFF, 8, 0x8877_6655_4433_2211));
        done(&r, bytes.len() as u8);
        let dv = 0x8877_6655_4433_2211 & mask(size);
        assert_eq!(
            r.mem.log,
            [Ev::R(g, size), Ev::W(g, size, r.before.gpr[2] & mask(size))]
        );
        assert_eq!(r.cpu.gpr[2], merge(r.before.gpr[2], dv, size));
        assert_eq!(r.cpu.rflags, r.before.rflags);
    }
    // lock xadd [rbx], edx: memory gets the sum, EDX the old value, flags of the ADD.
    let r = run64(&[0xf0, 0x0f, 0xc1, 0x13], |c, m| {
        m.dev_set(OFF, 4, 0xffff_fffe);
        c.gpr[2] = 2;
    });
    done(&r, 4);
    assert_eq!(r.mem.log, [Ev::R(g, 4), Ev::W(g, 4, 0)]);
    assert_eq!(r.cpu.gpr[2], 0xffff_fffe);
    assert_eq!(r.cpu.rflags, 0x2 | CF | ZF | PF | AF);
    // xadd word and qword: sum written, old value in the register, ADD's flags.
    for (bytes, size) in [
        (&[0x66u8, 0x0f, 0xc1, 0x13][..], 2u8),
        (&[0x48, 0x0f, 0xc1, 0x13][..], 8),
    ] {
        let r = run64(bytes, |c, m| {
            m.dev_set(OFF, size, 0x8000_0000_0000_8000 & mask(size));
            c.gpr[2] = 0x8000_0000_0000_8000;
        });
        done(&r, 4);
        let (sum, flags) = reference(
            R::Add,
            size,
            0x8000_0000_0000_8000,
            0x8000_0000_0000_8000,
            false,
        );
        assert_eq!(r.mem.log, [Ev::R(g, size), Ev::W(g, size, sum)]);
        assert_eq!(
            r.cpu.gpr[2],
            merge(
                0x8000_0000_0000_8000,
                0x8000_0000_0000_8000 & mask(size),
                size
            )
        );
        assert_eq!(r.cpu.rflags, 0x2 | flags);
    }
    // xadd byte.
    let r = run64(&[0x0f, 0xc0, 0x13], |c, m| {
        m.dev_set(OFF, 1, 0x7f);
        c.gpr[2] = 0x01;
    });
    done(&r, 3);
    assert_eq!(r.mem.log, [Ev::R(g, 1), Ev::W(g, 1, 0x80)]);
    assert_eq!(r.cpu.rflags, 0x2 | OF | SF | AF);
}

#[test]
fn cmpxchg_success_and_failure() {
    let g = PAGE_GPA + OFF;
    for (bytes, size) in [
        (&[0xf0u8, 0x0f, 0xb1, 0x13][..], 4u8),
        (&[0x0f, 0xb0, 0x13][..], 1),
        (&[0xf0, 0x48, 0x0f, 0xb1, 0x13][..], 8),
        (&[0x66, 0x0f, 0xb1, 0x13][..], 2),
    ] {
        // Success: accumulator equals memory → memory = EDX, ZF set, RAX unchanged.
        let r = run64(bytes, |c, m| {
            m.dev_set(OFF, size, 0x1234_5678_9abc_def0 & mask(size));
            c.gpr[0] = 0x1234_5678_9abc_def0;
        });
        done(&r, bytes.len() as u8);
        assert_eq!(
            r.mem.log,
            [Ev::R(g, size), Ev::W(g, size, r.before.gpr[2] & mask(size))]
        );
        assert_eq!(r.cpu.rflags, 0x2 | ZF | PF);
        others_unchanged(&r, &[]);
        // Failure: no device write, accumulator loaded, flags of CMP acc, mem.
        let r = run64(bytes, |c, m| {
            m.dev_set(OFF, size, 5);
            c.gpr[0] = 3;
        });
        done(&r, bytes.len() as u8);
        assert_eq!(r.mem.log, [Ev::R(g, size)]);
        assert_eq!(r.cpu.gpr[0], merge(3, 5, size));
        assert_eq!(r.cpu.rflags, 0x2 | reference(R::Sub, size, 3, 5, false).1);
        others_unchanged(&r, &[0]);
    }
}

#[test]
fn locked_rmw_is_one_read_one_write() {
    let g = PAGE_GPA + OFF;
    let cases: &[&[u8]] = &[
        &[0xf0, 0x01, 0x13],             // lock add [rbx], edx
        &[0xf0, 0x48, 0x83, 0x0b, 0x01], // lock or qword [rbx], 1
        &[0xf0, 0x66, 0x21, 0x13],       // lock and [rbx], dx
        &[0xf0, 0x80, 0x33, 0xff],       // lock xor byte [rbx], 0xff
        &[0xf0, 0x29, 0x13],             // lock sub
        &[0xf0, 0x11, 0x13],             // lock adc
        &[0xf0, 0x19, 0x13],             // lock sbb
        &[0xf0, 0xf7, 0x1b],             // lock neg
        &[0xf0, 0xf7, 0x13],             // lock not
        &[0xf0, 0xff, 0x03],             // lock inc
        &[0xf0, 0xfe, 0x0b],             // lock dec byte
        &[0xf0, 0x0f, 0xab, 0x13],       // lock bts
        &[0xf0, 0x0f, 0xba, 0x33, 3],    // lock btr imm
        &[0xf0, 0x0f, 0xbb, 0x13],       // lock btc
        &[0xf0, 0x87, 0x13],             // lock xchg
        &[0x65, 0xf0, 0x01, 0x13],       // gs: lock add (prefix order free)
    ];
    for &bytes in cases {
        let r = run64(bytes, |c, _| c.gpr[2] = 1);
        done(&r, bytes.len() as u8);
        assert_eq!(r.mem.log.len(), 2, "{bytes:x?}");
        assert!(matches!(r.mem.log[0], Ev::R(a, _) if a == g), "{bytes:x?}");
        assert!(
            matches!(r.mem.log[1], Ev::W(a, _, _) if a == g),
            "{bytes:x?}"
        );
    }
}

#[test]
fn lock_on_unlockable_form_is_ud() {
    let cases: &[&[u8]] = &[
        &[0xf0, 0x89, 0x13],       // lock mov [rbx], edx
        &[0xf0, 0x8b, 0x13],       // lock mov edx, [rbx]
        &[0xf0, 0x39, 0x13],       // lock cmp
        &[0xf0, 0x85, 0x13],       // lock test
        &[0xf0, 0x0f, 0xa3, 0x13], // lock bt
        &[0xf0, 0x03, 0x13],       // lock add edx, [rbx] (register destination)
        &[0xf0, 0x0f, 0xb6, 0x13], // lock movzx
        &[0xf0, 0xa4],             // lock movsb
    ];
    for &bytes in cases {
        let r = run64(bytes, |_, _| {});
        assert_eq!(r.res, Err(Error::Fault(Exception::Ud)), "{bytes:x?}");
        assert!(r.mem.log.is_empty());
        assert_eq!(r.cpu.rip, r.before.rip);
    }
}

// ---------------------------------------------------------------- string instructions

/// MOVS/STOS/LODS set-up: device side at PAGE_LIN + off, RAM side at RAM_LIN + 0x1000.
fn string_cpu(c: &mut Cpu, src_dev: bool, off: u64) {
    let (dev, ram) = (PAGE_LIN + off, RAM_LIN + 0x1000);
    c.gpr[RSI as usize] = if src_dev { dev } else { ram };
    c.gpr[RDI as usize] = if src_dev { ram } else { dev };
}

#[test]
fn movs_single_each_size_both_directions() {
    let off = 0x400;
    for (bytes, size) in [
        (&[0xa4u8][..], 1u8),
        (&[0x66, 0xa5][..], 2),
        (&[0xa5][..], 4),
        (&[0x48, 0xa5][..], 8),
    ] {
        for df in [false, true] {
            // Device → RAM (read fault).
            let r = exec(bytes, M64, PAGE_GPA + off, Access::Read, |c, _| {
                string_cpu(c, true, off);
                c.rflags = 0x2 | if df { DF } else { 0 };
            });
            done(&r, bytes.len() as u8);
            assert_eq!(
                r.mem.log,
                [
                    Ev::R(PAGE_GPA + off, size),
                    Ev::GW(RAM_LIN + 0x1000, usize::from(size))
                ]
            );
            let v = Mem::new().dev_get(off, size);
            assert_eq!(
                &r.mem.ram[0x1000..0x1000 + usize::from(size)],
                &v.to_le_bytes()[..usize::from(size)]
            );
            let step = if df {
                u64::from(size).wrapping_neg()
            } else {
                u64::from(size)
            };
            assert_eq!(
                r.cpu.gpr[RSI as usize],
                r.before.gpr[RSI as usize].wrapping_add(step)
            );
            assert_eq!(
                r.cpu.gpr[RDI as usize],
                r.before.gpr[RDI as usize].wrapping_add(step)
            );
            others_unchanged(&r, &[RSI, RDI]);
            // RAM → device (write fault).
            let r = exec(bytes, M64, PAGE_GPA + off, Access::Write, |c, _| {
                string_cpu(c, false, off);
                c.rflags = 0x2 | if df { DF } else { 0 };
            });
            done(&r, bytes.len() as u8);
            let mut le = [0u8; 8];
            le[..usize::from(size)]
                .copy_from_slice(&Mem::new().ram[0x1000..0x1000 + usize::from(size)]);
            assert_eq!(
                r.mem.log,
                [
                    Ev::GR(RAM_LIN + 0x1000, usize::from(size)),
                    Ev::W(PAGE_GPA + off, size, u64::from_le_bytes(le))
                ]
            );
        }
    }
}

#[test]
fn rep_movs_completes_within_page() {
    let off = 0x400;
    // rep movsd, 16 dwords device → RAM, DF=0.
    let r = exec(&[0xf3, 0xa5], M64, PAGE_GPA + off, Access::Read, |c, _| {
        string_cpu(c, true, off);
        c.gpr[RCX as usize] = 16;
    });
    done(&r, 2);
    assert_eq!(r.cpu.gpr[RCX as usize], 0);
    assert_eq!(r.cpu.gpr[RSI as usize], PAGE_LIN + off + 64);
    assert_eq!(r.cpu.gpr[RDI as usize], RAM_LIN + 0x1000 + 64);
    assert_eq!(
        &r.mem.ram[0x1000..0x1040],
        &Mem::new().dev[off as usize..off as usize + 64]
    );
    let reads: Vec<_> = r
        .mem
        .log
        .iter()
        .filter(|e| matches!(e, Ev::R(..)))
        .copied()
        .collect();
    assert_eq!(
        reads,
        (0..16)
            .map(|i| Ev::R(PAGE_GPA + off + 4 * i, 4))
            .collect::<Vec<_>>()
    );
    // rep movsb RAM → device with DF=1: walks down.
    let r = exec(&[0xf3, 0xa4], M64, PAGE_GPA + off, Access::Write, |c, _| {
        string_cpu(c, false, off);
        c.gpr[RCX as usize] = 3;
        c.rflags = 0x2 | DF;
    });
    done(&r, 2);
    let ram = Mem::new().ram;
    assert_eq!(
        r.mem.writes(),
        [0, 1, 2]
            .map(|i| Ev::W(PAGE_GPA + off - i, 1, u64::from(ram[0x1000 - i as usize])))
            .to_vec()
    );
    assert_eq!(r.cpu.gpr[RDI as usize], PAGE_LIN + off - 3);
    // RCX = 0: nothing happens, RIP advances.
    let r = exec(&[0xf3, 0xa4], M64, PAGE_GPA + off, Access::Write, |c, _| {
        string_cpu(c, false, off);
        c.gpr[RCX as usize] = 0;
    });
    done(&r, 2);
    assert!(r.mem.log.is_empty());
    others_unchanged(&r, &[]);
}

#[test]
fn rep_batch_stops_at_page_end_and_leaves_rip() {
    // rep stosq from 0xff0: two qwords fit in the page, RCX = 5 → 3 left, RIP unchanged.
    let off = 0xff0;
    let r = exec(
        &[0xf3, 0x48, 0xab],
        M64,
        PAGE_GPA + off,
        Access::Write,
        |c, _| {
            c.gpr[RDI as usize] = PAGE_LIN + off;
            c.gpr[RCX as usize] = 5;
        },
    );
    assert_eq!(r.res, Ok(Outcome::RepPending { len: 3 }));
    assert_eq!(r.cpu.rip, r.before.rip);
    assert_eq!(r.cpu.gpr[RCX as usize], 3);
    assert_eq!(r.cpu.gpr[RDI as usize], PAGE_LIN + 0x1000);
    assert_eq!(
        r.mem.writes(),
        [
            Ev::W(PAGE_GPA + 0xff0, 8, r.before.gpr[0]),
            Ev::W(PAGE_GPA + 0xff8, 8, r.before.gpr[0])
        ]
    );
    // DF=1 going down from 0x8: three dwords at 8, 4, 0 fit, then the page start is passed.
    let r = exec(&[0xf3, 0xab], M64, PAGE_GPA + 8, Access::Write, |c, _| {
        c.gpr[RDI as usize] = PAGE_LIN + 8;
        c.gpr[RCX as usize] = 10;
        c.rflags = 0x2 | DF;
    });
    assert_eq!(r.res, Ok(Outcome::RepPending { len: 2 }));
    assert_eq!(r.cpu.gpr[RCX as usize], 7);
    assert_eq!(r.cpu.gpr[RDI as usize], PAGE_LIN - 4);
}

#[test]
fn rep_address_sizes() {
    // 67 f3 a4 in 64-bit mode: ESI/EDI/ECX; upper halves of RCX count nothing and are
    // cleared by the 32-bit update, as a 32-bit register write does.
    let off = 0x10;
    let r = exec(
        &[0x67, 0xf3, 0xa4],
        M64,
        PAGE_GPA + off,
        Access::Read,
        |c, _| {
            c.gpr[RSI as usize] = 0xffff_ffff_0000_0000 | (PAGE_LIN + off);
            c.gpr[RDI as usize] = 0xffff_ffff_0000_0000 | (RAM_LIN + 0x1000);
            c.gpr[RCX as usize] = 0x1_0000_0002;
        },
    );
    done(&r, 3);
    assert_eq!(r.cpu.gpr[RCX as usize], 0);
    assert_eq!(r.cpu.gpr[RSI as usize], PAGE_LIN + off + 2);
    assert_eq!(r.cpu.gpr[RDI as usize], RAM_LIN + 0x1002);
    // Real mode rep movsw: SI/DI/CX 16-bit, DS and ES bases, upper register bits kept.
    let r = exec(
        &[0xf3, 0xa5],
        M16,
        PAGE_GPA + 0x20,
        Access::Write,
        |c, _| {
            c.seg[Segment::Ds as usize] = RAM_LIN;
            c.seg[Segment::Es as usize] = 0x9_0000;
            c.gpr[RSI as usize] = 0xabcd_0000_1000;
            c.gpr[RDI as usize] = 0x5555_0000_0020;
            c.gpr[RCX as usize] = 0x7777_0000_0004;
            c.rip = 0x500;
        },
    );
    done(&r, 2);
    assert_eq!(r.cpu.gpr[RCX as usize], 0x7777_0000_0000);
    assert_eq!(r.cpu.gpr[RSI as usize], 0xabcd_0000_1008);
    assert_eq!(r.cpu.gpr[RDI as usize], 0x5555_0000_0028);
    assert_eq!(r.mem.writes().len(), 4);
    assert_eq!(r.mem.log[0], Ev::GR(RAM_LIN + 0x1000, 2));
    // 16-bit DI wraps within the segment: DI = 0xfffe, DF=0, two words: 0xfffe then 0x0000.
    // The device page offset of ES:0xfffe is 0xffe (ES base 0x10000-aligned), next 0x000 of
    // the following linear page: the batch stops after one.
    let r = exec(
        &[0xf3, 0xab],
        M16,
        PAGE_GPA + 0xffe,
        Access::Write,
        |c, _| {
            c.seg[Segment::Es as usize] = 0x1_0000;
            c.gpr[RDI as usize] = 0xfffe;
            c.gpr[RCX as usize] = 2;
        },
    );
    assert_eq!(r.res, Ok(Outcome::RepPending { len: 2 }));
    assert_eq!(r.cpu.gpr[RDI as usize] & 0xffff, 0);
    assert_eq!(r.cpu.gpr[RCX as usize] & 0xffff, 1);
    // 32-bit protected mode rep stosd with ECX.
    let r = exec(
        &[0xf3, 0xab],
        M32,
        PAGE_GPA + 0x100,
        Access::Write,
        |c, _| {
            c.gpr[RDI as usize] = PAGE_LIN + 0x100;
            c.gpr[RCX as usize] = 3;
        },
    );
    done(&r, 2);
    assert_eq!(r.mem.writes().len(), 3);
}

#[test]
fn stos_lods_and_prefixes() {
    let off = 0x80;
    // stosb/stosw/stosd/stosq single.
    for (bytes, size) in [
        (&[0xaau8][..], 1u8),
        (&[0x66, 0xab][..], 2),
        (&[0xab][..], 4),
        (&[0x48, 0xab][..], 8),
    ] {
        let r = exec(bytes, M64, PAGE_GPA + off, Access::Write, |c, _| {
            c.gpr[RDI as usize] = PAGE_LIN + off
        });
        done(&r, bytes.len() as u8);
        assert_eq!(
            r.mem.log,
            [Ev::W(PAGE_GPA + off, size, r.before.gpr[0] & mask(size))]
        );
        assert_eq!(r.cpu.gpr[RDI as usize], PAGE_LIN + off + u64::from(size));
    }
    // lodsb/w/d/q: accumulator loaded with register-write semantics.
    for (bytes, size) in [
        (&[0xacu8][..], 1u8),
        (&[0x66, 0xad][..], 2),
        (&[0xad][..], 4),
        (&[0x48, 0xad][..], 8),
    ] {
        let r = exec(bytes, M64, PAGE_GPA + off, Access::Read, |c, _| {
            c.gpr[RSI as usize] = PAGE_LIN + off
        });
        done(&r, bytes.len() as u8);
        assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + off, size)]);
        assert_eq!(
            r.cpu.gpr[0],
            merge(r.before.gpr[0], Mem::new().dev_get(off, size), size)
        );
        assert_eq!(r.cpu.gpr[RSI as usize], PAGE_LIN + off + u64::from(size));
    }
    // F2 acts as REP on STOS.
    let r = exec(&[0xf2, 0xaa], M64, PAGE_GPA + off, Access::Write, |c, _| {
        c.gpr[RDI as usize] = PAGE_LIN + off;
        c.gpr[RCX as usize] = 4;
    });
    done(&r, 2);
    assert_eq!(r.mem.writes().len(), 4);
    // rep lodsd reads every element (the guest sees the last).
    let r = exec(&[0xf3, 0xad], M64, PAGE_GPA + off, Access::Read, |c, _| {
        c.gpr[RSI as usize] = PAGE_LIN + off;
        c.gpr[RCX as usize] = 3;
    });
    done(&r, 2);
    assert_eq!(r.mem.log.len(), 3);
    assert_eq!(r.cpu.gpr[0], Mem::new().dev_get(off + 8, 4));
    // Segment override on MOVS applies to the source: fs: movsb with FS base.
    let r = exec(&[0x64, 0xa4], M64, PAGE_GPA + off, Access::Read, |c, _| {
        c.seg[Segment::Fs as usize] = 0x10_0000;
        c.gpr[RSI as usize] = PAGE_LIN + off - 0x10_0000;
        c.gpr[RDI as usize] = RAM_LIN;
    });
    done(&r, 2);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + off, 1), Ev::GW(RAM_LIN, 1)]);
    // ... but not to STOS's ES destination.
    let r = exec(&[0x64, 0xaa], M64, PAGE_GPA + off, Access::Write, |c, _| {
        c.seg[Segment::Fs as usize] = 0x10_0000;
        c.gpr[RDI as usize] = PAGE_LIN + off;
    });
    done(&r, 2);
}

#[test]
fn movs_side_selection() {
    let off = 0x40;
    // Unknown access kind: only the source's offset matches → source is the device.
    let r = exec(&[0xa4], M64, PAGE_GPA + off, Access::Unknown, |c, _| {
        c.gpr[RSI as usize] = PAGE_LIN + off;
        c.gpr[RDI as usize] = RAM_LIN + 0x1001;
    });
    done(&r, 1);
    assert_eq!(r.mem.log[0], Ev::R(PAGE_GPA + off, 1));
    // Only the destination matches.
    let r = exec(&[0xa4], M64, PAGE_GPA + off, Access::Unknown, |c, _| {
        c.gpr[RSI as usize] = RAM_LIN + 0x1001;
        c.gpr[RDI as usize] = PAGE_LIN + off;
    });
    done(&r, 1);
    assert_eq!(
        r.mem.log[1],
        Ev::W(PAGE_GPA + off, 1, u64::from(Mem::new().ram[0x1001]))
    );
    // Both could be: refused.
    let r = exec(&[0xa4], M64, PAGE_GPA + off, Access::Unknown, |c, _| {
        c.gpr[RSI as usize] = PAGE_LIN + off;
        c.gpr[RDI as usize] = RAM_LIN + off;
    });
    assert_eq!(r.res, Err(Error::Ambiguous));
    // A write fault whose destination is not at the faulting address: outside.
    let r = exec(&[0xa4], M64, PAGE_GPA + off, Access::Write, |c, _| {
        c.gpr[RSI as usize] = PAGE_LIN + off;
        c.gpr[RDI as usize] = RAM_LIN + 0x1001;
    });
    assert_eq!(
        r.res,
        Err(Error::OutsideFaultPage {
            linear: RAM_LIN + 0x1001,
            size: 1
        })
    );
    assert!(r.mem.log.is_empty());
}

#[test]
fn string_fault_midway_keeps_completed_iterations() {
    // rep movsd device → RAM where RAM ends after 2 elements: #PF from guest_write, registers
    // describe 2 completed iterations, RIP stays.
    let off = 0x40;
    let r = exec(&[0xf3, 0xa5], M64, PAGE_GPA + off, Access::Read, |c, _| {
        c.gpr[RSI as usize] = PAGE_LIN + off;
        c.gpr[RDI as usize] = RAM_LIN + RAM_LEN as u64 - 8;
        c.gpr[RCX as usize] = 5;
    });
    assert_eq!(
        r.res,
        Err(Error::Fault(Exception::Pf {
            linear: RAM_LIN + RAM_LEN as u64,
            error_code: 0
        }))
    );
    assert_eq!(r.cpu.rip, r.before.rip);
    assert_eq!(r.cpu.gpr[RCX as usize], 3);
    assert_eq!(r.cpu.gpr[RSI as usize], PAGE_LIN + off + 8);
    assert_eq!(r.cpu.gpr[RDI as usize], RAM_LIN + RAM_LEN as u64);
    // Non-canonical RAM-side address in 64-bit mode: #GP(0) before any access.
    let r = exec(&[0xa4], M64, PAGE_GPA + off, Access::Read, |c, _| {
        c.gpr[RSI as usize] = PAGE_LIN + off;
        c.gpr[RDI as usize] = 0x8000_0000_0000_0000;
    });
    assert_eq!(r.res, Err(Error::Fault(Exception::Gp(0))));
    assert!(r.mem.log.is_empty());
}

// ---------------------------------------------------------------- refusals and errors

#[test]
fn malformed_instructions() {
    // Truncated: an opcode that needs a ModRM byte, an imm32 cut short.
    for bytes in [&[0x8b][..], &[0xc7, 0x03, 0x78, 0x56], &[0x66], &[]] {
        assert_eq!(
            run64(bytes, |_, _| {}).res,
            Err(Error::Truncated),
            "{bytes:x?}"
        );
    }
    // 14 prefixes + 2-byte mov = 16 bytes: longer than 15 → #GP(0) (the emulator is given at
    // most 15 bytes; extra bytes are ignored).
    let mut long = std::vec![0x66u8; 14];
    long.extend([0x8b, 0x03]);
    assert_eq!(
        run64(&long, |_, _| {}).res,
        Err(Error::Fault(Exception::Gp(0)))
    );
    // Exactly 15 bytes is fine: 13 prefixes + mov eax,[rbx] = 15.
    let mut ok = std::vec![0x66u8; 13];
    ok.extend([0x8b, 0x03]);
    let r = run64(&ok, |_, _| {});
    done(&r, 15);
    // Invalid opcodes in 64-bit mode: PUSH ES, SALC (followed by NOPs: the caller supplies
    // 15 bytes when it can, and iced asks for more before calling a short buffer invalid).
    for first in [0x06u8, 0xd6] {
        let mut bytes = [0x90u8; 15];
        bytes[0] = first;
        assert_eq!(
            run64(&bytes, |_, _| {}).res,
            Err(Error::Fault(Exception::Ud)),
            "{bytes:x?}"
        );
    }
}

#[test]
fn unsupported_forms() {
    let cases: &[(&[u8], Mnemonic)] = &[
        (&[0x66, 0x0f, 0x6f, 0x03], Mnemonic::Movdqa), // SSE load
        (&[0x0f, 0x11, 0x03], Mnemonic::Movups),       // SSE store
        (&[0xf2, 0x0f, 0x11, 0x03], Mnemonic::Movsd),  // SSE MOVSD (not the string op)
        (&[0x66, 0x0f, 0x7e, 0x03], Mnemonic::Movd),   // movd [rbx], xmm0
        (&[0xc5, 0xfe, 0x6f, 0x03], Mnemonic::Vmovdqu), // AVX
        (&[0x0f, 0xc3, 0x03], Mnemonic::Movnti),
        (&[0x8e, 0x1b], Mnemonic::Mov), // mov ds, [rbx]
        (&[0x8c, 0x1b], Mnemonic::Mov), // mov [rbx], ds
        (&[0xa6], Mnemonic::Cmpsb),
        (&[0xae], Mnemonic::Scasb),
        (&[0x6c], Mnemonic::Insb),
        (&[0x0f, 0xc7, 0x0b], Mnemonic::Cmpxchg8b),
        (&[0xd1, 0x23], Mnemonic::Shl),
        (&[0xff, 0x33], Mnemonic::Push),
        (&[0x0f, 0x94, 0x03], Mnemonic::Sete),
        (&[0x0f, 0x0b], Mnemonic::Ud2),
        (&[0xd9, 0x03], Mnemonic::Fld),
    ];
    for &(bytes, m) in cases {
        let r = run64(bytes, |_, _| {});
        assert_eq!(r.res, Err(Error::Unsupported(m)), "{bytes:x?}");
        assert!(r.mem.log.is_empty());
        assert_eq!(r.cpu.rip, r.before.rip);
        others_unchanged(&r, &[]);
    }
    // Encodings iced is built without: EVEX vmovups zmm0, [rbx]; XOP vphaddbd; 3DNow! pfadd.
    for bytes in [
        &[0x62u8, 0xf1, 0x7c, 0x48, 0x10, 0x03][..],
        &[0x8f, 0xe9, 0x78, 0xc2, 0x03],
        &[0x0f, 0x0f, 0x03, 0x9e],
    ] {
        let mut b = [0x90u8; 15];
        b[..bytes.len()].copy_from_slice(bytes);
        let r = run64(&b, |_, _| {});
        assert_eq!(r.res, Err(Error::UnsupportedEncoding), "{bytes:x?}");
        assert!(r.mem.log.is_empty());
    }
    // ... but POP m (8F /0) is an ordinary unsupported instruction, and so is BOUND in 32-bit code.
    assert_eq!(
        run64(&[0x8f, 0x03], |_, _| {}).res,
        Err(Error::Unsupported(Mnemonic::Pop))
    );
    let r = exec(&[0x62, 0x03], M32, PAGE_GPA + OFF, Access::Read, |_, _| {});
    assert_eq!(r.res, Err(Error::Unsupported(Mnemonic::Bound)));
    // Register-only forms of supported mnemonics cannot have faulted on MMIO.
    for bytes in [&[0x01u8, 0xd8][..], &[0x89, 0xd8], &[0x87, 0xd8]] {
        assert_eq!(
            run64(bytes, |_, _| {}).res,
            Err(Error::NoMemoryOperand),
            "{bytes:x?}"
        );
    }
}

#[test]
fn operand_must_hit_the_faulting_page() {
    // Offset mismatch.
    let r = exec(
        &[0x8b, 0x03],
        M64,
        PAGE_GPA + OFF + 8,
        Access::Read,
        |_, _| {},
    );
    assert_eq!(
        r.res,
        Err(Error::OutsideFaultPage {
            linear: PAGE_LIN + OFF,
            size: 4
        })
    );
    assert!(r.mem.log.is_empty());
    // Access covering the faulting byte is accepted (fault reported inside the access).
    let r = exec(
        &[0x8b, 0x03],
        M64,
        PAGE_GPA + OFF + 2,
        Access::Read,
        |_, _| {},
    );
    done(&r, 2);
    assert_eq!(r.mem.log, [Ev::R(PAGE_GPA + OFF, 4)]);
    // Crossing the page end.
    let r = exec(
        &[0x8b, 0x03],
        M64,
        PAGE_GPA + 0xffe,
        Access::Read,
        |c, _| c.gpr[RBX as usize] = PAGE_LIN + 0xffe,
    );
    assert_eq!(
        r.res,
        Err(Error::OutsideFaultPage {
            linear: PAGE_LIN + 0xffe,
            size: 4
        })
    );
    // BT with a register offset pointing into another unit than the faulting one.
    let r = exec(
        &[0x0f, 0xab, 0x13],
        M64,
        PAGE_GPA + OFF,
        Access::Write,
        |c, _| c.gpr[2] = 64,
    );
    assert_eq!(
        r.res,
        Err(Error::OutsideFaultPage {
            linear: PAGE_LIN + OFF + 8,
            size: 4
        })
    );
    assert!(r.mem.log.is_empty());
}

#[test]
fn device_errors_propagate_without_side_effects() {
    let r = run64(&[0x8b, 0x03], |_, m| m.fail_device = true);
    assert_eq!(r.res, Err(Error::Device(7)));
    assert_eq!(r.cpu.rip, r.before.rip);
    others_unchanged(&r, &[]);
    let r = run64(&[0x01, 0x13], |c, m| {
        m.fail_device = true;
        c.rflags = 0x2;
    });
    assert_eq!(r.res, Err(Error::Device(7)));
    assert_eq!(r.cpu.rflags, 0x2);
}

#[test]
fn random_bytes_never_escape_the_faulting_page() {
    // Hostile input: random prefixes, opcodes (mostly ones the emulator handles), ModRM/SIB,
    // displacements, registers, flags, modes and faulting offsets. The mock device asserts
    // that every access stays in the faulting page and fits its size; here: no panic, RIP
    // unchanged on error and advanced by the decoded length on completion.
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let prefixes = [
        0x66u8, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x48, 0x41, 0x4c,
    ];
    let opcodes: &[&[u8]] = &[
        &[0x88],
        &[0x89],
        &[0x8a],
        &[0x8b],
        &[0xc6],
        &[0xc7],
        &[0xa0],
        &[0xa1],
        &[0xa2],
        &[0xa3],
        &[0x0f, 0xb6],
        &[0x0f, 0xb7],
        &[0x0f, 0xbe],
        &[0x0f, 0xbf],
        &[0x63],
        &[0x00],
        &[0x01],
        &[0x02],
        &[0x03],
        &[0x08],
        &[0x11],
        &[0x19],
        &[0x21],
        &[0x29],
        &[0x31],
        &[0x39],
        &[0x3b],
        &[0x80],
        &[0x81],
        &[0x83],
        &[0x84],
        &[0x85],
        &[0xf6],
        &[0xf7],
        &[0xfe],
        &[0xff],
        &[0x86],
        &[0x87],
        &[0x0f, 0xa3],
        &[0x0f, 0xab],
        &[0x0f, 0xb3],
        &[0x0f, 0xbb],
        &[0x0f, 0xba],
        &[0x0f, 0xb0],
        &[0x0f, 0xb1],
        &[0x0f, 0xc0],
        &[0x0f, 0xc1],
        &[0xa4],
        &[0xa5],
        &[0xaa],
        &[0xab],
        &[0xac],
        &[0xad],
        &[0x62],
        &[0x8f],
        &[0xc4],
        &[0xc5],
    ];
    let modes = [
        M64,
        M32,
        M16,
        CpuMode::Long {
            cs_l: false,
            cs_d: true,
        },
    ];
    let mut completed = 0;
    for _ in 0..10_000 {
        let mut b = [0u8; 15];
        for x in b.iter_mut() {
            *x = rng.next() as u8;
        }
        let mut i = 0;
        for _ in 0..rng.next() % 4 {
            b[i] = prefixes[(rng.next() % prefixes.len() as u64) as usize];
            i += 1;
        }
        if !rng.next().is_multiple_of(8) {
            let op = opcodes[(rng.next() % opcodes.len() as u64) as usize];
            b[i..i + op.len()].copy_from_slice(op);
        }
        let len = 1 + (rng.next() % 15) as usize;
        let mode = modes[(rng.next() % 4) as usize];
        let access = [Access::Read, Access::Write, Access::Unknown][(rng.next() % 3) as usize];
        let off = [0, 0x100, 0xffc, rng.next() % 4096][(rng.next() % 4) as usize];
        let r = exec(&b[..len], mode, PAGE_GPA + off, access, |c, _| {
            for g in c.gpr.iter_mut() {
                *g = match rng.next() % 5 {
                    0 => PAGE_LIN + rng.next() % 4096,
                    4 => PAGE_LIN + off,
                    1 => RAM_LIN + rng.next() % (RAM_LEN as u64),
                    2 => rng.next() % 8,
                    _ => rng.val(),
                };
            }
            c.rflags = 0x2 | (rng.next() & (STATUS | DF));
            c.seg = [0, 0, 0, 0, rng.next() % 3 * 0x1000, 0];
        });
        match r.res {
            Ok(Outcome::Completed { len }) => {
                completed += 1;
                let m = if mode.bitness() == 64 {
                    u64::MAX
                } else if mode.bitness() == 32 {
                    mask(4)
                } else {
                    mask(2)
                };
                assert_eq!(r.cpu.rip, r.before.rip.wrapping_add(u64::from(len)) & m);
            }
            _ => assert_eq!(r.cpu.rip, r.before.rip),
        }
    }
    // The generator must reach the emulation paths, not only the refusals.
    assert!(completed > 100, "only {completed} completed");
}
