//! Exports the absolute path of `guest.ld` to the build scripts of the guest crates.
//!
//! `cargo:rustc-link-arg` does not propagate from a dependency to its dependents, so each
//! guest has a one-line build.rs that includes `guest-build.rs`, which reads this value
//! (`DEP_GUEST_RT_LINKER_SCRIPT`, thanks to `links = "guest_rt"`).
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guest.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    println!("cargo::metadata=linker_script={}", script.display());
}
