//! `hvm_op` (34): HVM parameters, above all the event-channel callback vector.

use super::guest_access::{read_arg, write_arg};
use super::Cx;
use super::Reply;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::hvm::hvm_op::{
    XenHvmEvtchnUpcallVector, XenHvmParam, HVMOP_GET_PARAM, HVMOP_SET_EVTCHN_UPCALL_VECTOR,
    HVMOP_SET_PARAM,
};
use xen_abi::hvm::params::*;

/// Callback type 2: a vector injected directly (bits 63..56 of HVM_PARAM_CALLBACK_IRQ).
const CALLBACK_TYPE_VECTOR: u64 = 2;

/// Xen's `hvm_allow_set_param`: the parameters a domain may set on itself; every other
/// one is the toolstack's (`-EPERM` when a domain sets its own).
fn guest_may_set(index: u32) -> bool {
    matches!(
        index,
        HVM_PARAM_CALLBACK_IRQ
            | HVM_PARAM_VM86_TSS
            | HVM_PARAM_VM86_TSS_SIZED
            | HVM_PARAM_ACPI_IOPORTS_LOCATION
            | HVM_PARAM_VM_GENERATION_ID_ADDR
            | HVM_PARAM_STORE_EVTCHN
            | HVM_PARAM_CONSOLE_EVTCHN
            | HVM_PARAM_X87_FIP_WIDTH
    )
}

/// Xen: parameters that may be changed only once (a different non-zero value after a
/// non-zero one is `-EEXIST`).
fn set_once(index: u32) -> bool {
    matches!(
        index,
        HVM_PARAM_VIRIDIAN
            | HVM_PARAM_IOREQ_SERVER_PFN
            | HVM_PARAM_NR_IOREQ_SERVER_PAGES
            | HVM_PARAM_ALTP2M
            | HVM_PARAM_MCA_CAP
    )
}

/// `HYPERVISOR_hvm_op(op, arg)`.
pub fn hvm_op<B: Backend>(cx: &mut Cx<'_, B>, op: u64, arg: u64) -> Result<Reply, Errno> {
    match op {
        HVMOP_SET_PARAM | HVMOP_GET_PARAM => {
            let mut p: XenHvmParam = read_arg(cx, arg)?;
            // The control domain sets other domains' parameters while building them.
            let d = cx.target(p.domid)?;
            if p.index >= HVM_NR_PARAMS {
                return Err(Errno::EINVAL);
            }
            if op == HVMOP_GET_PARAM {
                p.value = d.st.lock().hvm_params[p.index as usize];
                write_arg(cx, arg, &p)?;
                return Ok(Reply::Value(0));
            }
            // Xen's hvm_allow_set_param, in its order: the toolstack-owned parameters a
            // domain may not set on itself, then the set-once ones.
            if d.id == cx.dom.id && !guest_may_set(p.index) {
                return Err(Errno::EPERM);
            }
            let old = d.st.lock().hvm_params[p.index as usize];
            if set_once(p.index) && old != 0 && p.value != old {
                return Err(Errno::EEXIST);
            }
            if p.index == HVM_PARAM_CALLBACK_IRQ {
                // Only the vector form reaches a PVH guest; GSI/INTx forms need an
                // emulated interrupt controller and are recorded but never delivered.
                let mut st = d.st.lock();
                st.callback_vector = (p.value >> 56 == CALLBACK_TYPE_VECTOR
                    && p.value as u8 >= 0x10)
                    .then_some(p.value as u8);
            }
            d.st.lock().hvm_params[p.index as usize] = p.value;
            Ok(Reply::Value(0))
        }
        HVMOP_SET_EVTCHN_UPCALL_VECTOR => {
            // Xen's order: the vector, then the vCPU.
            let a: XenHvmEvtchnUpcallVector = read_arg(cx, arg)?;
            if a.vector < 0x10 {
                return Err(Errno::EINVAL);
            }
            let v = cx.dom.vcpu(a.vcpu).ok_or(Errno::ENOENT)?;
            log::debug!(
                "d{}: vCPU {} takes event upcalls on LAPIC vector {:#x}",
                cx.dom.id,
                a.vcpu,
                a.vector
            );
            let pending = {
                let mut st = cx.dom.st.lock();
                st.upcall_vector[a.vcpu as usize] = a.vector;
                super::shared_info::upcall_pending(&cx.dom.mem, &st, a.vcpu)
            };
            // An upcall already pending is delivered through the new vector.
            if pending {
                v.post_ipi(a.vector);
                cx.hv.wake(cx.dom, v);
            }
            Ok(Reply::Value(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}
