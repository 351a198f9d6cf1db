//! Xenstore for ferrovisor's dom0.
//!
//! * [`wire`]: the message header, message types, error names, payload limits and the
//!   ring-index arithmetic of `xenstore_domain_interface` (X `xen/include/public/io/xs_wire.h`).
//! * [`perms`]: node permissions (`n`/`r`/`w`/`b` + domid).
//! * [`core`]: the store itself, pure and without I/O: tree, connections, watches,
//!   transactions, domain introduction and quotas. `xenstored` drives it.
//! * [`client`]: a blocking client over xenstored's Unix socket or `/dev/xen/xenbus`
//!   ([`transport`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod core;
pub mod perms;
pub mod transport;
pub mod wire;

pub use client::{Client, Error};
pub use perms::{Access, Perm};
pub use transport::Transport;
pub use wire::{Errno, Message, MsgType};
