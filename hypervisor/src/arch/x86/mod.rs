//! x86-64 host support: CPU identification, descriptor tables, exceptions, ports, power.
pub mod cpu;
pub mod exceptions;
pub mod gdt;
pub mod percpu_shim;
pub mod pic;
pub mod port;
pub mod power;
pub mod regs;
pub mod rtc;
pub mod tsc;
pub mod xcr;
