//! PV console ring page shared between a guest and its console backend.
//!
//! Source: `xen/include/public/io/console.h`, interface version 0x00040d00.

/// Size of the input ring (backend to guest).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the output ring (guest to backend).
pub const XENCONS_OUT_SIZE: usize = 2048;
/// `connection` value: connected (the steady state of a zeroed page).
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// `connection` value: disconnected.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// `XENCONS_RING_IDX`: free-running ring index.
pub type XenconsRingIdx = u32;

/// `MASK_XENCONS_IDX` for the input ring.
pub const fn mask_in_idx(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}
/// `MASK_XENCONS_IDX` for the output ring.
pub const fn mask_out_idx(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}

/// `struct xencons_interface`, at the start of the console page.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct XenconsInterface {
    /// Input ring (backend produces, guest consumes).
    pub input: [u8; XENCONS_IN_SIZE],
    /// Output ring (guest produces, backend consumes).
    pub output: [u8; XENCONS_OUT_SIZE],
    /// Written by the guest: input consumer index.
    pub in_cons: XenconsRingIdx,
    /// Written by the backend: input producer index.
    pub in_prod: XenconsRingIdx,
    /// Written by the backend: output consumer index.
    pub out_cons: XenconsRingIdx,
    /// Written by the guest: output producer index.
    pub out_prod: XenconsRingIdx,
    /// Written by the backend: `XENCONSOLE_*` (newer Xen only; Linux 6.1 ignores it).
    pub connection: u8,
    /// Padding.
    pub _pad0: [u8; 3],
}
assert_layout!(XenconsInterface, size = 3092, align = 4,
    input @ 0, output @ 1024, in_cons @ 3072, in_prod @ 3076, out_cons @ 3080, out_prod @ 3084,
    connection @ 3088, _pad0 @ 3089);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_masks() {
        assert_eq!(mask_out_idx(2048 + 5), 5);
        assert_eq!(mask_in_idx(u32::MAX), 1023);
    }
}
