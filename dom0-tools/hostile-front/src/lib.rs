//! The pure half of `fv-hostile-front` (the binary, src/main.rs): the PV block and
//! network ring layouts and index arithmetic, testable on the host.
#![forbid(unsafe_code)]

pub mod layout;
