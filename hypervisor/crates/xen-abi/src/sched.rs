//! `sched_op` hypercall sub-ops, argument structs and shutdown reasons.
//!
//! Source: `xen/include/public/sched.h`, interface version 0x00040d00.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{DomId, EvtchnPort, GuestHandle};

/// Yield the vCPU; argument NULL.
pub const SCHEDOP_YIELD: u64 = 0;
/// Block until an event is pending; argument NULL.
pub const SCHEDOP_BLOCK: u64 = 1;
/// Shut the calling domain down; argument [`SchedShutdown`]. Never returns on success.
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// Poll a set of ports; argument [`SchedPoll`].
pub const SCHEDOP_POLL: u64 = 3;
/// Shut another domain down (privileged); argument [`SchedRemoteShutdown`].
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
/// Set the shutdown code without shutting down; argument [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
/// Set up, kick or destroy a watchdog; argument [`SchedWatchdog`].
pub const SCHEDOP_WATCHDOG: u64 = 6;
/// Temporarily pin the vCPU (dom0 only); argument [`SchedPinOverride`].
pub const SCHEDOP_PIN_OVERRIDE: u64 = 7;

/// Shutdown reason: the domain exited normally (power off).
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Shutdown reason: restart.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// Shutdown reason: suspend (save state).
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// Shutdown reason: the guest crashed.
pub const SHUTDOWN_CRASH: u32 = 3;
/// Shutdown reason: watchdog expired.
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// Shutdown reason: soft reset (kexec) keeping the domain's resources.
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// Largest valid shutdown reason.
pub const SHUTDOWN_MAX: u32 = 5;

/// A decoded shutdown reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ShutdownReason {
    /// [`SHUTDOWN_POWEROFF`].
    Poweroff = SHUTDOWN_POWEROFF,
    /// [`SHUTDOWN_REBOOT`].
    Reboot = SHUTDOWN_REBOOT,
    /// [`SHUTDOWN_SUSPEND`].
    Suspend = SHUTDOWN_SUSPEND,
    /// [`SHUTDOWN_CRASH`].
    Crash = SHUTDOWN_CRASH,
    /// [`SHUTDOWN_WATCHDOG`].
    Watchdog = SHUTDOWN_WATCHDOG,
    /// [`SHUTDOWN_SOFT_RESET`].
    SoftReset = SHUTDOWN_SOFT_RESET,
}

impl ShutdownReason {
    /// Decodes a raw reason; `None` above [`SHUTDOWN_MAX`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            SHUTDOWN_POWEROFF => Self::Poweroff,
            SHUTDOWN_REBOOT => Self::Reboot,
            SHUTDOWN_SUSPEND => Self::Suspend,
            SHUTDOWN_CRASH => Self::Crash,
            SHUTDOWN_WATCHDOG => Self::Watchdog,
            SHUTDOWN_SOFT_RESET => Self::SoftReset,
            _ => return None,
        })
    }
}

/// `struct sched_shutdown` (`SCHEDOP_shutdown`, `SCHEDOP_shutdown_code`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedShutdown {
    /// IN: `SHUTDOWN_*` reason.
    pub reason: u32,
}
assert_layout!(SchedShutdown, size = 4, align = 4, reason @ 0);

/// `struct sched_poll` (`SCHEDOP_poll`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedPoll {
    /// IN: array of `nr_ports` ports to wait on (pending counts even if masked).
    pub ports: GuestHandle<EvtchnPort>,
    /// IN: number of ports.
    pub nr_ports: u32,
    /// Padding.
    pub _pad0: u32,
    /// IN: absolute system-time timeout in ns; 0 = none.
    pub timeout: u64,
}
assert_layout!(SchedPoll, size = 24, align = 8, ports @ 0, nr_ports @ 8, _pad0 @ 12, timeout @ 16);

/// `struct sched_remote_shutdown` (`SCHEDOP_remote_shutdown`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedRemoteShutdown {
    /// IN: domain to shut down.
    pub domain_id: DomId,
    /// Padding.
    pub _pad0: u16,
    /// IN: `SHUTDOWN_*` reason.
    pub reason: u32,
}
assert_layout!(SchedRemoteShutdown, size = 8, align = 4, domain_id @ 0, _pad0 @ 2, reason @ 4);

/// `struct sched_watchdog` (`SCHEDOP_watchdog`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedWatchdog {
    /// IN: watchdog id (0 allocates a new one, returned as the result).
    pub id: u32,
    /// IN: timeout in seconds (0 destroys the watchdog).
    pub timeout: u32,
}
assert_layout!(SchedWatchdog, size = 8, align = 4, id @ 0, timeout @ 4);

/// `struct sched_pin_override` (`SCHEDOP_pin_override`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedPinOverride {
    /// IN: physical CPU to pin to, or negative to undo.
    pub pcpu: i32,
}
assert_layout!(SchedPinOverride, size = 4, align = 4, pcpu @ 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_reasons() {
        let expect = [
            (0, ShutdownReason::Poweroff),
            (1, ShutdownReason::Reboot),
            (2, ShutdownReason::Suspend),
            (3, ShutdownReason::Crash),
            (4, ShutdownReason::Watchdog),
            (5, ShutdownReason::SoftReset),
        ];
        for (raw, r) in expect {
            assert_eq!(ShutdownReason::from_raw(raw), Some(r));
            assert_eq!(r as u32, raw);
        }
        assert_eq!(ShutdownReason::from_raw(SHUTDOWN_MAX + 1), None);
    }

    #[test]
    fn poll_decodes_from_guest_bytes() {
        let mut raw = [0u8; 24];
        raw[0..8].copy_from_slice(&0xdead_b000u64.to_le_bytes());
        raw[8..12].copy_from_slice(&3u32.to_le_bytes());
        raw[16..24].copy_from_slice(&1_000_000u64.to_le_bytes());
        let p = SchedPoll::read_from_bytes(&raw).unwrap();
        assert_eq!(p.ports.addr(), 0xdead_b000);
        assert_eq!(p.nr_ports, 3);
        assert_eq!(p.timeout, 1_000_000);
    }
}
