//! The x86-emu crate's flag arithmetic (`x86_emu::alu`) against a reference written here
//! from the SDM's definitions in wide signed/unsigned integers.
//!
//! Input: operation, operand size, the two operands and RFLAGS. Checks: the result and all
//! six status flags (CF PF AF ZF SF OF) equal the reference's; no other RFLAGS bit changes;
//! `sign_extend` and `mask` agree with integer casts.

use x86_emu::alu::{alu, mask, sign_extend, Op, AF, CF, OF, PF, SF, STATUS, ZF};

use crate::input::Input;

/// `(result, CF, OF, AF)` of `op` on `bits`-bit operands, from the definitions.
fn reference(op: Op, bits: u32, a: u64, b: u64, cin: bool) -> (u64, bool, bool, bool) {
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let (a, b) = (a & m, b & m);
    let signed = |v: u64| -> i128 { ((v as i128) << (128 - bits)) >> (128 - bits) };
    let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
    let c = i128::from(cin);
    let (ua, ub) = (a as i128, b as i128);
    let add = |b: i128, ub: i128, c: i128| {
        let u = ua + ub + c;
        let s = signed(a) + b + c;
        let af = (ua & 0xf) + (ub & 0xf) + c > 0xf;
        ((u as u64) & m, u > m as i128, s < min || s > max, af)
    };
    let sub = |x: u64, y: u64, c: i128| {
        let (ux, uy) = (x as i128, y as i128);
        let s = signed(x) - signed(y) - c;
        let af = (ux & 0xf) < (uy & 0xf) + c;
        (
            ((ux - uy - c) as u64) & m,
            ux < uy + c,
            s < min || s > max,
            af,
        )
    };
    match op {
        Op::Add => add(signed(b), ub, 0),
        Op::Adc => add(signed(b), ub, c),
        Op::Sub => sub(a, b, 0),
        Op::Sbb => sub(a, b, c),
        Op::And => (a & b, false, false, false),
        Op::Or => (a | b, false, false, false),
        Op::Xor => (a ^ b, false, false, false),
        Op::Inc => {
            let (r, _, of, af) = add(1, 1, 0);
            (r, cin, of, af)
        }
        Op::Dec => {
            let (r, _, of, af) = sub(a, 1, 0);
            (r, cin, of, af)
        }
        Op::Neg => sub(0, a, 0),
    }
}

/// The ALU target.
pub fn target_x86_alu(data: &[u8]) {
    let mut inp = Input::new(data);
    let op = inp.pick(&[
        Op::Add,
        Op::Adc,
        Op::Sub,
        Op::Sbb,
        Op::And,
        Op::Or,
        Op::Xor,
        Op::Inc,
        Op::Dec,
        Op::Neg,
    ]);
    let size = inp.pick(&[1u8, 2, 4, 8]);
    let bits = u32::from(size) * 8;
    let (a, b, rflags) = (inp.u64(), inp.u64(), inp.u64());
    let (r, f) = alu(op, size, a, b, rflags);
    let (er, ecf, eof, eaf) = reference(op, bits, a, b, rflags & CF != 0);
    assert_eq!(r, er, "{op:?}/{size}: result of {a:#x}, {b:#x}");
    let sign = 1u64 << (bits - 1);
    let want = [
        (CF, ecf),
        (PF, (er as u8).count_ones().is_multiple_of(2)),
        (AF, eaf),
        (ZF, er == 0),
        (SF, er & sign != 0),
        (OF, eof),
    ];
    for (bit, on) in want {
        assert_eq!(
            f & bit != 0,
            on,
            "{op:?}/{size} {a:#x}, {b:#x}: flag {bit:#x}"
        );
    }
    assert_eq!(f & !STATUS, rflags & !STATUS, "a non-status flag changed");
    let m = mask(size);
    assert_eq!(m, if size == 8 { u64::MAX } else { (1 << bits) - 1 });
    let sx = match size {
        1 => a as u8 as i8 as i64,
        2 => a as u16 as i16 as i64,
        4 => a as u32 as i32 as i64,
        _ => a as i64,
    };
    assert_eq!(sign_extend(a, size), sx as u64);
}
