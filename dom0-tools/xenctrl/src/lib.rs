//! dom0 access to the hypervisor (being written).
