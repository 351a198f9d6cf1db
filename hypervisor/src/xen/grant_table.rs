//! `grant_table_op` (20), version 1: the table's frames and their size. Mapping,
//! unmapping and copying grants (between domains) are not offered yet.

use super::guest_access::{read_arg, write_arg};
use super::Cx;
use super::Reply;
use crate::domain::MAX_GRANT_FRAMES;
use crate::hvm::Backend;
use crate::mm::phys;
use xen_abi::errno::Errno;
use xen_abi::grant_table::{
    GnttabGetVersion, GnttabQuerySize, GnttabSetVersion, GNTST_OKAY, GNTTABOP_GET_VERSION,
    GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION,
};

/// `HYPERVISOR_grant_table_op(cmd, uop, count)`.
pub fn grant_table_op<B: Backend>(
    cx: &mut Cx<'_, B>,
    cmd: u64,
    uop: u64,
    count: u64,
) -> Result<Reply, Errno> {
    match cmd {
        GNTTABOP_QUERY_SIZE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut q: GnttabQuerySize = read_arg(cx, uop)?;
            if !cx.is_self(q.dom) {
                return Err(Errno::ESRCH);
            }
            q.nr_frames = cx.dom.st.lock().grant_frames.len() as u32;
            q.max_nr_frames = MAX_GRANT_FRAMES as u32;
            q.status = GNTST_OKAY;
            write_arg(cx, uop, &q)?;
            Ok(Reply::Value(0))
        }
        GNTTABOP_SET_VERSION => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let v: GnttabSetVersion = read_arg(cx, uop)?;
            // Only version 1 exists here.
            if v.version != 1 {
                return Err(Errno::EINVAL);
            }
            Ok(Reply::Value(0))
        }
        GNTTABOP_GET_VERSION => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut v: GnttabGetVersion = read_arg(cx, uop)?;
            if !cx.is_self(v.dom) {
                return Err(Errno::ESRCH);
            }
            v.version = 1;
            write_arg(cx, uop, &v)?;
            Ok(Reply::Value(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Host frame `idx` of the domain's grant table, allocating frames up to it (zeroed, as
/// an empty table) on first use; None beyond the maximum or when memory is exhausted.
pub fn frame<B: Backend>(cx: &Cx<'_, B>, idx: u64) -> Option<u64> {
    let idx = usize::try_from(idx)
        .ok()
        .filter(|&i| i < MAX_GRANT_FRAMES)?;
    let mut st = cx.dom.st.lock();
    while st.grant_frames.len() <= idx {
        let f = phys::alloc_zeroed(1, 1)?;
        st.grant_frames.push(f);
    }
    Some(st.grant_frames[idx])
}
