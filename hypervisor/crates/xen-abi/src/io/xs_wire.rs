//! Xenstore wire protocol: message header, message types and the shared ring page.
//!
//! Source: `xen/include/public/io/xs_wire.h`, interface version 0x00040d00.

/// Message types (`enum xsd_sockmsg_type`).
pub mod msg_type {
    /// Control / debug.
    pub const XS_CONTROL: u32 = 0;
    /// Old name of [`XS_CONTROL`].
    pub const XS_DEBUG: u32 = XS_CONTROL;
    /// List children.
    pub const XS_DIRECTORY: u32 = 1;
    /// Read a value.
    pub const XS_READ: u32 = 2;
    /// Get permissions.
    pub const XS_GET_PERMS: u32 = 3;
    /// Add a watch.
    pub const XS_WATCH: u32 = 4;
    /// Remove a watch.
    pub const XS_UNWATCH: u32 = 5;
    /// Start a transaction.
    pub const XS_TRANSACTION_START: u32 = 6;
    /// End a transaction.
    pub const XS_TRANSACTION_END: u32 = 7;
    /// Introduce a domain.
    pub const XS_INTRODUCE: u32 = 8;
    /// Release a domain.
    pub const XS_RELEASE: u32 = 9;
    /// Get a domain's home path.
    pub const XS_GET_DOMAIN_PATH: u32 = 10;
    /// Write a value.
    pub const XS_WRITE: u32 = 11;
    /// Create a node.
    pub const XS_MKDIR: u32 = 12;
    /// Remove a subtree.
    pub const XS_RM: u32 = 13;
    /// Set permissions.
    pub const XS_SET_PERMS: u32 = 14;
    /// Watch event (server to client).
    pub const XS_WATCH_EVENT: u32 = 15;
    /// Error reply (payload `"E<NAME>\0"`).
    pub const XS_ERROR: u32 = 16;
    /// Is a domain introduced?
    pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
    /// Resume a domain.
    pub const XS_RESUME: u32 = 18;
    /// Set a domain's target.
    pub const XS_SET_TARGET: u32 = 19;
    /// Reset all watches of the connection (20, `XS_RESTRICT`, was removed).
    pub const XS_RESET_WATCHES: u32 = 21;
    /// Partial directory listing.
    pub const XS_DIRECTORY_PART: u32 = 22;
    /// Get features.
    pub const XS_GET_FEATURE: u32 = 23;
    /// Set features.
    pub const XS_SET_FEATURE: u32 = 24;
    /// Get quota.
    pub const XS_GET_QUOTA: u32 = 25;
    /// Set quota.
    pub const XS_SET_QUOTA: u32 = 26;
    /// Number of valid types.
    pub const XS_TYPE_COUNT: u32 = 27;
    /// Guaranteed invalid type.
    pub const XS_INVALID: u32 = 0xffff;
}

/// Error names a server may return in `XS_ERROR` payloads, in the header's table order.
pub const XSD_ERRORS: &[&str] = &[
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
];

/// Index of the path in a watch event payload.
pub const XS_WATCH_PATH: usize = 0;
/// Index of the token in a watch event payload.
pub const XS_WATCH_TOKEN: usize = 1;

/// Size of each ring.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Maximum payload length of a message.
pub const XENSTORE_PAYLOAD_MAX: u32 = 4096;
/// Maximum absolute path length.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Maximum relative path length.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// Server feature: reconnection.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// Server feature: error field.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// Server feature: watch depth.
pub const XENSTORE_SERVER_FEATURE_WATCHDEPTH: u32 = 4;
/// Server feature: `DOMID_ANY` permissions.
pub const XENSTORE_SERVER_FEATURE_DOMID_ANY: u32 = 8;
/// `connection`: steady state.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: reconnect in progress.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error`: none.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation.
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// `XENSTORE_RING_IDX`: free-running ring index.
pub type XenstoreRingIdx = u32;

/// `MASK_XENSTORE_IDX`.
pub const fn mask_xenstore_idx(idx: XenstoreRingIdx) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

zc_struct! {
    /// `struct xsd_sockmsg`: message header, followed by `len` payload bytes.
    pub struct XsdSockmsg {
        /// `XS_*` type.
        pub ty: u32,
        /// Request id, echoed in the reply.
        pub req_id: u32,
        /// Transaction id (0 = none), echoed in the reply.
        pub tx_id: u32,
        /// Payload length (at most [`XENSTORE_PAYLOAD_MAX`]).
        pub len: u32,
    }
}
assert_layout!(XsdSockmsg, size = 16, align = 4, ty @ 0, req_id @ 4, tx_id @ 8, len @ 12);

/// `struct xenstore_domain_interface`: the xenstore ring page.
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
pub struct XenstoreDomainInterface {
    /// Requests (guest produces, server consumes).
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events (server produces, guest consumes).
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Written by the server.
    pub req_cons: XenstoreRingIdx,
    /// Written by the guest.
    pub req_prod: XenstoreRingIdx,
    /// Written by the guest.
    pub rsp_cons: XenstoreRingIdx,
    /// Written by the server.
    pub rsp_prod: XenstoreRingIdx,
    /// Written by the server: `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// Written by the server: `XENSTORE_ERROR_*`.
    pub error: u32,
    /// Written by the server: event-channel port (newer servers).
    pub evtchn_port: u32,
}
assert_layout!(XenstoreDomainInterface, size = 2080, align = 4,
    req @ 0, rsp @ 1024, req_cons @ 2048, req_prod @ 2052, rsp_cons @ 2056, rsp_prod @ 2060,
    server_features @ 2064, connection @ 2068, error @ 2072, evtchn_port @ 2076);

#[cfg(test)]
mod tests {
    use super::msg_type::*;
    use super::*;

    #[test]
    fn message_types() {
        assert_eq!(XS_WATCH_EVENT, 15);
        assert_eq!(XS_RESET_WATCHES, 21);
        assert_eq!(XS_DIRECTORY_PART, 22);
        assert_eq!(XSD_ERRORS.len(), 16);
        assert_eq!(mask_xenstore_idx(1024 + 7), 7);
    }
}
