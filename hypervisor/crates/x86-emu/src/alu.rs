//! Integer arithmetic with the SDM's RFLAGS results (CF, PF, AF, ZF, SF, OF).

/// Carry flag.
pub const CF: u64 = 1 << 0;
/// Parity flag (even number of set bits in the result's low byte).
pub const PF: u64 = 1 << 2;
/// Auxiliary carry (carry or borrow out of bit 3).
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Direction flag (string operations step down when set).
pub const DF: u64 = 1 << 10;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// The six status flags the arithmetic instructions write.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// A two-operand or one-operand integer operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `a + b`
    Add,
    /// `a + b + CF`
    Adc,
    /// `a - b` (also CMP)
    Sub,
    /// `a - b - CF`
    Sbb,
    /// `a & b` (also TEST)
    And,
    /// `a | b`
    Or,
    /// `a ^ b`
    Xor,
    /// `a + 1`, CF unchanged
    Inc,
    /// `a - 1`, CF unchanged
    Dec,
    /// `0 - a`, CF = (a != 0)
    Neg,
}

/// All ones in the low `size` bytes (`size` is 1, 2, 4 or 8).
pub fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
pub fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - u32::from(size.clamp(1, 8)) * 8;
    (((v << shift) as i64) >> shift) as u64
}

/// Computes `op` on `size`-byte operands; returns the result (masked to `size`) and the new
/// RFLAGS (`rflags` with the status flags the operation defines replaced). The logical
/// operations clear AF, which the SDM leaves undefined.
pub fn alu(op: Op, size: u8, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let sign = 1u64 << (u32::from(size) * 8 - 1);
    let (a, b) = (a & m, b & m);
    let cin = rflags & CF;
    let add = |a: u64, b: u64, c: u64| {
        let wide = u128::from(a) + u128::from(b) + u128::from(c);
        let r = wide as u64 & m;
        (
            r,
            wide > u128::from(m),
            (a ^ r) & (b ^ r) & sign != 0,
            (a ^ b ^ r) & 0x10 != 0,
        )
    };
    let sub = |a: u64, b: u64, c: u64| {
        let r = a.wrapping_sub(b).wrapping_sub(c) & m;
        let borrow = u128::from(a) < u128::from(b) + u128::from(c);
        (
            r,
            borrow,
            (a ^ b) & (a ^ r) & sign != 0,
            (a ^ b ^ r) & 0x10 != 0,
        )
    };
    let (r, cf, of, af) = match op {
        Op::Add => add(a, b, 0),
        Op::Adc => add(a, b, cin),
        Op::Sub => sub(a, b, 0),
        Op::Sbb => sub(a, b, cin),
        Op::And => (a & b, false, false, false),
        Op::Or => (a | b, false, false, false),
        Op::Xor => (a ^ b, false, false, false),
        Op::Inc => {
            let (r, _, of, af) = add(a, 1, 0);
            (r, cin != 0, of, af)
        }
        Op::Dec => {
            let (r, _, of, af) = sub(a, 1, 0);
            (r, cin != 0, of, af)
        }
        Op::Neg => sub(0, a, 0),
    };
    let mut f = rflags & !STATUS;
    let set = |f: &mut u64, bit: u64, on: bool| {
        if on {
            *f |= bit;
        }
    };
    set(&mut f, CF, cf);
    set(&mut f, PF, (r as u8).count_ones().is_multiple_of(2));
    set(&mut f, AF, af);
    set(&mut f, ZF, r == 0);
    set(&mut f, SF, r & sign != 0);
    set(&mut f, OF, of);
    (r, f)
}
