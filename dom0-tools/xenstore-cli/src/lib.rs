//! Xen-compatible xenstore tools for ferrovisor's dom0 and domUs.
//!
//! * [`cli`]: the `xenstore` multicall (`xenstore read ...`, or `xenstore-read ...` through a
//!   symlink), behaving like Xen's `xenstore-*` tools.
//! * [`ls`]: `xenstore-ls` formatting.
//! * [`sanitise`]: Xen's quoting of binary values.
//! * [`check`]: `xs-check`, a self-check of the store as dom0 or a domU sees it.
#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod ls;
pub mod sanitise;
