//! Sub-ops that touch two domains' tables: `bind_interdomain` and `close`.
//!
//! The caller holds both domains' event locks (Xen takes the lower-addressed domain first;
//! any fixed order works, e.g. by domid) and passes the remote table, or `None` when the
//! remote domain is the local one (loopback: dom0's local xenstore connection).

use crate::{Errno, EventChannels, Kick, Port, SharedBits, State};

/// `EVTCHNOP_bind_interdomain` by `local` to `remote_port` of `remote` (`None` = loopback).
///
/// The caller resolves `remote_dom` (`DOMID_SELF` → caller) and looks it up (`-ESRCH`).
/// Then, in Xen's order: local `get_free_port` errors (`-ENOSPC`; `-EINVAL` if dying);
/// `-EINVAL` if `remote_port` is not valid in the remote table; `-EINVAL` unless it is
/// unbound **and** reserved for `local`'s domid. On success both ends become interdomain
/// (the remote end keeps its notify vCPU, the local one starts on vCPU 0) and, as Xen does to
/// cover notifications lost while the remote port was unbound, the **local** port is set
/// pending; the returned kick is for `local`'s vCPUs.
pub fn bind_interdomain(
    local: &mut EventChannels,
    remote: Option<&mut EventChannels>,
    remote_port: Port,
    local_bits: &mut impl SharedBits,
) -> Result<(Port, Kick), Errno> {
    let ldom = local.domid();
    let lport = local.get_free_port(local_bits)?;
    let check = |t: &EventChannels| -> Result<(), Errno> {
        match t.state(remote_port) {
            Some(State::Unbound { remote_dom }) if remote_dom == ldom => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    };
    match remote {
        None => {
            check(local)?;
            local.occupy(
                lport,
                State::Interdomain {
                    remote_dom: ldom,
                    remote_port,
                },
                0,
            );
            local.set_state(
                remote_port,
                State::Interdomain {
                    remote_dom: ldom,
                    remote_port: lport,
                },
            );
        }
        Some(r) => {
            debug_assert_ne!(r.domid(), ldom, "loopback must pass None");
            check(r)?;
            local.occupy(
                lport,
                State::Interdomain {
                    remote_dom: r.domid(),
                    remote_port,
                },
                0,
            );
            r.set_state(
                remote_port,
                State::Interdomain {
                    remote_dom: ldom,
                    remote_port: lport,
                },
            );
        }
    }
    let kick = local.set_pending(lport, local_bits);
    Ok((lport, kick))
}

/// `EVTCHNOP_close` of `port` in `local` (Xen's `evtchn_close`).
///
/// `-EINVAL` for an invalid, free or reserved (0) port. The port's pending bit is cleared
/// and its notify vCPU reset to 0. A VIRQ is unbound; an interdomain port's peer becomes
/// unbound, reserved for `local`'s domid (so the peer may re-bind later).
///
/// For an interdomain port to another domain ([`EventChannels::peer_of`] is `Some(d)`), the
/// caller must pass `d`'s table locked; if it passes none or a different domain's (the port
/// was closed and re-bound while the caller re-ordered its locks) the result is `-EINVAL`,
/// which Xen returns in the same race. Otherwise `remote` is ignored.
pub fn close(
    local: &mut EventChannels,
    port: Port,
    remote: Option<&mut EventChannels>,
    local_bits: &mut impl SharedBits,
) -> Result<(), Errno> {
    let ldom = local.domid();
    let state = local.state(port).ok_or(Errno::EINVAL)?;
    match state {
        State::Free | State::Reserved => return Err(Errno::EINVAL),
        State::Unbound { .. } | State::Ipi => {}
        State::Virq { virq } => local.unmap_virq(port, virq),
        State::Interdomain {
            remote_dom,
            remote_port,
        } => {
            let unbound = State::Unbound { remote_dom: ldom };
            if remote_dom == ldom {
                debug_assert_eq!(
                    local.state(remote_port),
                    Some(State::Interdomain {
                        remote_dom: ldom,
                        remote_port: port
                    })
                );
                local.set_state(remote_port, unbound);
            } else {
                let r = match remote {
                    Some(r) if r.domid() == remote_dom => r,
                    _ => return Err(Errno::EINVAL),
                };
                debug_assert_eq!(
                    r.state(remote_port),
                    Some(State::Interdomain {
                        remote_dom: ldom,
                        remote_port: port
                    })
                );
                r.set_state(remote_port, unbound);
            }
        }
    }
    local.free(port, local_bits);
    Ok(())
}
