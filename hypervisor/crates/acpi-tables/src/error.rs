//! The one error type of this crate; every variant carries the offending values.
//!
//! All of them are detected before anything is written, so the output buffer is unchanged when
//! [`build`](crate::build) fails.

use core::fmt;

/// Why the ACPI tables could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AcpiError {
    /// `vcpus` was 0; a guest needs at least its boot vCPU in the MADT.
    NoVcpus,
    /// `vcpus` is above [`MAX_VCPUS`](crate::MAX_VCPUS).
    TooManyVcpus {
        /// Requested vCPU count.
        vcpus: u32,
        /// Largest accepted count.
        max: u32,
    },
    /// `base_gpa` is not 16-byte aligned (the RSDP alignment ACPI requires).
    MisalignedBase {
        /// Requested base.
        base_gpa: u64,
    },
    /// The tables would not end at or below 4 GiB (the 32-bit `DSDT` field and Xen's PVH
    /// convention keep them there), or `base_gpa + len` overflows.
    AboveFourGiB {
        /// Requested base.
        base_gpa: u64,
        /// Bytes the tables need.
        len: usize,
    },
    /// `out` is shorter than the tables.
    BufferTooSmall {
        /// Bytes the tables need ([`size_needed`](crate::size_needed)).
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiError::NoVcpus => f.write_str("no vCPUs to describe in the MADT"),
            AcpiError::TooManyVcpus { vcpus, max } => {
                write!(f, "{vcpus} vCPUs requested, at most {max} supported")
            }
            AcpiError::MisalignedBase { base_gpa } => {
                write!(f, "ACPI base {base_gpa:#x} is not 16-byte aligned")
            }
            AcpiError::AboveFourGiB { base_gpa, len } => {
                write!(
                    f,
                    "ACPI tables at {base_gpa:#x} ({len:#x} bytes) do not end below 4 GiB"
                )
            }
            AcpiError::BufferTooSmall { needed, given } => {
                write!(
                    f,
                    "ACPI tables need {needed:#x} bytes, buffer has {given:#x}"
                )
            }
        }
    }
}
