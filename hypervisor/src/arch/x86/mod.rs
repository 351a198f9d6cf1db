//! x86-64 host support: CPU identification, descriptor tables, exceptions, interrupts and
//! the local APIC, per-CPU data, AP start-up and cross-CPU calls, extended-state switching, ports, power.
pub mod cpu;
pub mod cr4;
pub mod exceptions;
pub mod fpu;
pub mod gdt;
pub mod held;
pub mod ioapic;
pub mod irq;
pub mod lapic;
pub mod msi;
pub mod pci;
pub mod percpu;
pub mod pic;
pub mod port;
pub mod power;
pub mod regs;
pub mod rtc;
pub mod smp;
pub mod spec;
pub mod strings;
pub mod tsc;
pub mod xcr;
