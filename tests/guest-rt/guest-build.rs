// Shared build script of every test guest. A guest's build.rs is the single line
//     include!("../../guest-rt/guest-build.rs");
// On the bare-metal target it links the guest's binary with guest-rt's linker script; on the
// host (`cargo test --workspace`) it does nothing, so the host stub links normally.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = std::env::var("DEP_GUEST_RT_LINKER_SCRIPT")
            .expect("guest-rt must be a direct dependency of the guest (it exports the linker script)");
        println!("cargo::rerun-if-changed={script}");
        println!("cargo::rustc-link-arg-bins=-T{script}");
        println!("cargo::rustc-link-arg-bins=-zmax-page-size=4096");
        println!("cargo::rustc-link-arg-bins=--no-dynamic-linker");
    }
}
