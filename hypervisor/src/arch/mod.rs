//! Architecture code: the only home (with the boot crate and the VMX/SVM backends) of
//! inline assembly and privileged instructions.
pub mod x86;
