//! ferrovisor's fuzz targets: one plain function `target_*(data: &[u8])` per parser or state
//! machine, checking the invariants each crate promises (round trips, accounting, no panic)
//! and panicking when one breaks.
//!
//! The same functions run three ways:
//! * `cargo test --workspace` replays every file under `fuzz/corpus/<target>/` (the
//!   regression pass, see `tests` below);
//! * `cargo xtask fuzz [TARGET]` runs them under libFuzzer (`fuzz/libfuzzer/`, outside the
//!   workspace);
//! * [`run`] calls one by name (for reproducing a crash file by hand).
//!
//! See `docs/fuzzing.md`.

pub mod input;

mod acpi;
mod boot;
mod evtchn;
mod grant;
mod pvh;
mod x86alu;
mod x86emu;
mod xenstore_core;
mod xenstore_wire;
mod xlcfg;

pub use acpi::target_acpi;
pub use boot::{target_mb1, target_mb2};
pub use evtchn::target_evtchn;
pub use grant::target_grant;
pub use pvh::{target_bzimage, target_pvh_elf, target_xz};
pub use x86alu::target_x86_alu;
pub use x86emu::target_x86_emu;
pub use xenstore_core::target_xenstore_core;
pub use xenstore_wire::target_xenstore_wire;
pub use xlcfg::target_xlcfg;

/// A target: its name (the corpus directory and the libFuzzer binary) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("mb1", target_mb1),
    ("mb2", target_mb2),
    ("pvh_elf", target_pvh_elf),
    ("bzimage", target_bzimage),
    ("xz", target_xz),
    ("acpi", target_acpi),
    ("x86_emu", target_x86_emu),
    ("x86_alu", target_x86_alu),
    ("evtchn", target_evtchn),
    ("grant", target_grant),
    ("xenstore_core", target_xenstore_core),
    ("xenstore_wire", target_xenstore_wire),
    ("xlcfg", target_xlcfg),
];

/// Runs target `name` on `data`; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => {
            f(data);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
