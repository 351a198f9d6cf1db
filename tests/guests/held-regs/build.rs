include!("../../guest-rt/guest-build.rs");
