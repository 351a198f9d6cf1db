//! Virtual block (vbd) and network (vif) devices, served by dom0's `xen-blkback` and
//! `xen-netback`: the xenstore nodes of `xen-pvh-abi.md` §10, the hotplug step Xen's
//! scripts do (loop device, bridge port), and removal as libxl does it.
//!
//! Adding (libxl `device_disk_add` / `libxl__device_nic_add`): the frontend and backend
//! directories are written in one transaction; xl waits for the backend to reach
//! InitWait (10 s), then for a vif bridges the interface netback created and writes
//! `hotplug-status=connected`. It does not wait for the frontend.
//!
//! Removing (libxl `libxl__initiate_device_generic_remove`): in one transaction the
//! frontend directory is removed when forced, the backend gets `online=0` and
//! `state=5`; xl waits up to 10 s for `state=6` (a forced removal needs no frontend:
//! Linux's backend unregisters when the frontend directory vanishes), then detaches the
//! loop device / bridge port and removes both directories.

use crate::hotplug::{Host, Target};
use crate::store::{Access, Perm, Store};
use anyhow::{bail, Context, Result};
use std::time::Instant;
use xlcfg::device::format_mac;
use xlcfg::{DiskSpec, VifSpec};

/// The backend domain: always dom0.
pub const BACKEND: u16 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vbd,
    Vif,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vbd => "vbd",
            Kind::Vif => "vif",
        }
    }
}

/// How hard to remove (libxl's `LIBXL__FORCE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Force {
    /// Ask the frontend; fail if it has not let go within the timeout.
    Off,
    /// Ask the frontend; force after the timeout.
    Auto,
    /// Remove the frontend directory at once (domain destroy, `block-detach -f`).
    On,
}

pub fn fe_path(domid: u16, kind: Kind, devid: u32) -> String {
    format!("/local/domain/{domid}/device/{}/{devid}", kind.name())
}

pub fn be_path(domid: u16, kind: Kind, devid: u32) -> String {
    format!(
        "/local/domain/{BACKEND}/backend/{}/{domid}/{devid}",
        kind.name()
    )
}

fn be_dir(domid: u16, kind: Kind) -> String {
    format!("/local/domain/{BACKEND}/backend/{}/{domid}", kind.name())
}

/// Frontend: owned by the guest, readable by the backend domain.
pub fn fe_perms(domid: u16) -> [Perm; 2] {
    [
        Perm {
            domid,
            access: Access::None,
        },
        Perm {
            domid: BACKEND,
            access: Access::Read,
        },
    ]
}

/// Backend: owned by the backend domain, readable by the guest.
pub fn be_perms(domid: u16) -> [Perm; 2] {
    [
        Perm {
            domid: BACKEND,
            access: Access::None,
        },
        Perm {
            domid,
            access: Access::Read,
        },
    ]
}

fn state_name(s: u32) -> &'static str {
    match s {
        1 => "Initialising",
        2 => "InitWait",
        3 => "Initialised",
        4 => "Connected",
        5 => "Closing",
        6 => "Closed",
        _ => "Unknown",
    }
}

fn read_u32(store: &mut dyn Store, path: &str) -> Result<Option<u32>> {
    Ok(store
        .read_str(path)?
        .and_then(|s| s.trim().parse::<u32>().ok()))
}

/// Writes both directories in one transaction (retried on conflicts); fails when the
/// device already exists.
pub(crate) fn write_device(
    store: &mut dyn Store,
    domid: u16,
    kind: Kind,
    devid: u32,
    fe: &[(&str, String)],
    be: &[(&str, String)],
) -> Result<()> {
    let (fep, bep) = (fe_path(domid, kind, devid), be_path(domid, kind, devid));
    for _ in 0..16 {
        store.transaction_start()?;
        let r = (|| -> Result<()> {
            if store.read(&format!("{bep}/state"))?.is_some()
                || store.read(&format!("{fep}/state"))?.is_some()
            {
                bail!("{} {devid} of domain {domid} already exists", kind.name());
            }
            store.mkdir(&fep)?;
            store.set_perms(&fep, &fe_perms(domid))?;
            store.write(&format!("{fep}/backend"), bep.as_bytes())?;
            for (k, v) in fe {
                store.write(&format!("{fep}/{k}"), v.as_bytes())?;
            }
            store.mkdir(&bep)?;
            store.set_perms(&bep, &be_perms(domid))?;
            store.write(&format!("{bep}/frontend"), fep.as_bytes())?;
            for (k, v) in be {
                store.write(&format!("{bep}/{k}"), v.as_bytes())?;
            }
            Ok(())
        })();
        match r {
            Err(e) => {
                let _ = store.transaction_end(false);
                return Err(e);
            }
            Ok(()) => {
                if store.transaction_end(true)? {
                    return Ok(());
                }
            }
        }
    }
    bail!(
        "xenstore transactions kept conflicting while adding {} {devid}",
        kind.name()
    )
}

/// The message the backend left with `xenbus_dev_error`, if any.
fn backend_error(store: &mut dyn Store, domid: u16, kind: Kind, devid: u32) -> String {
    let p = format!(
        "/local/domain/{BACKEND}/error/backend/{}/{domid}/{devid}/error",
        kind.name()
    );
    match store.read_str(&p) {
        Ok(Some(e)) if !e.is_empty() => format!(": {e}"),
        _ => String::new(),
    }
}

/// Waits for a new backend to reach InitWait (or beyond, if the frontend is quick).
fn wait_backend_up(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    kind: Kind,
    devid: u32,
) -> Result<()> {
    let t = host.timeouts();
    let path = format!("{}/state", be_path(domid, kind, devid));
    let start = Instant::now();
    loop {
        match read_u32(store, &path)? {
            Some(2..=4) => return Ok(()),
            Some(s @ 5..) => bail!(
                "{} {devid}: the backend went to {}{}",
                kind.name(),
                state_name(s),
                backend_error(store, domid, kind, devid)
            ),
            None => bail!("{} {devid}: the backend directory vanished", kind.name()),
            Some(_) => {}
        }
        if start.elapsed() >= t.up {
            let module = match kind {
                Kind::Vbd => "xen-blkback",
                Kind::Vif => "xen-netback",
            };
            bail!(
                "{} {devid}: the backend did not reach InitWait within {} s (is {module} loaded in dom0?)",
                kind.name(),
                t.up.as_secs_f32()
            );
        }
        host.sleep(t.poll);
    }
}

/// Attaches one disk to `domid` (paused or running). On failure nothing of it is left.
pub fn add_disk(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    d: &DiskSpec,
) -> Result<()> {
    let devid = d.devid;
    let what = || format!("disk {} ({})", d.vdev, d.target);
    if store
        .read(&format!("{}/state", be_path(domid, Kind::Vbd, devid)))?
        .is_some()
    {
        bail!("{}: domain {domid} already has a disk {devid}", what());
    }
    if let Some((other, mode)) = shared_with(store, &d.target, d.readonly)? {
        bail!(
            "{}: already attached to domain {other} with mode {mode}; a disk is shared only \
             read-only by every domain",
            what()
        );
    }
    let target = host.target(&d.target).with_context(what)?;
    let (node, major, minor, lp) = match target {
        Target::Block { major, minor } => (d.target.clone(), major, minor, None),
        Target::File => {
            let l = host
                .loop_attach(&d.target, d.readonly)
                .with_context(|| format!("{}: setting up a loop device", what()))?;
            (l.node.clone(), l.major, l.minor, Some(l.node))
        }
    };
    let mut be = vec![
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("removable", "0".into()),
        ("bootable", "1".into()),
        ("dev", d.vdev.clone()),
        ("type", "phy".into()),
        ("mode", if d.readonly { "r" } else { "w" }.into()),
        ("device-type", "disk".into()),
        ("discard-enable", if d.discard { "1" } else { "0" }.into()),
        ("params", d.target.clone()),
        // What Xen's block script writes; present before blkback sees the directory.
        ("physical-device", format!("{major:x}:{minor:x}")),
        ("physical-device-path", node),
        ("hotplug-status", "connected".into()),
        ("state", "1".into()),
    ];
    if d.direct_io_safe {
        be.push(("direct-io-safe", "1".into()));
    }
    if let Some(l) = &lp {
        be.push(("node", l.clone()));
    }
    let fe = [
        ("backend-id", BACKEND.to_string()),
        ("state", "1".into()),
        ("virtual-device", devid.to_string()),
        ("device-type", "disk".into()),
    ];
    if let Err(e) = write_device(store, domid, Kind::Vbd, devid, &fe, &be) {
        if let Some(l) = &lp {
            let _ = host.loop_detach(l, &d.target);
        }
        return Err(e.context(what()));
    }
    if let Err(e) = wait_backend_up(store, host, domid, Kind::Vbd, devid) {
        let _ = remove(store, host, domid, Kind::Vbd, devid, Force::On);
        return Err(e.context(what()));
    }
    Ok(())
}

/// A domain that already has `target` as a disk in a mode that conflicts with this
/// attachment (either side read-write), as Xen's block script refuses it: (domid, mode).
fn shared_with(
    store: &mut dyn Store,
    target: &str,
    readonly: bool,
) -> Result<Option<(u16, String)>> {
    let dir = be_dir_all(Kind::Vbd);
    for dom in store.directory(&dir)? {
        let Ok(domid) = dom.parse::<u16>() else {
            continue;
        };
        for dev in store.directory(&format!("{dir}/{dom}"))? {
            let base = format!("{dir}/{dom}/{dev}");
            let params = store.read(&format!("{base}/params"))?;
            if params.as_deref() != Some(target.as_bytes()) {
                continue;
            }
            let mode = store
                .read(&format!("{base}/mode"))?
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .unwrap_or_else(|| "w".into());
            if !readonly || mode != "r" {
                return Ok(Some((domid, mode)));
            }
        }
    }
    Ok(None)
}

/// dom0's backend directory for every domain's devices of `kind`.
fn be_dir_all(kind: Kind) -> String {
    format!("/local/domain/{BACKEND}/backend/{}", kind.name())
}

/// The dom0 interface name of a vif.
pub fn vif_ifname(domid: u16, devid: u32, vifname: Option<&str>) -> String {
    vifname.map_or_else(|| format!("vif{domid}.{devid}"), str::to_string)
}

/// Attaches one vif (handle `devid`, address `mac`) to `domid`, bridges its dom0
/// interface and lets netback connect. On failure nothing of it is left.
pub fn add_vif(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    v: &VifSpec,
    devid: u32,
    mac: [u8; 6],
) -> Result<()> {
    let what = || format!("vif {devid} ({})", format_mac(&mac));
    if !host.is_bridge(&v.bridge) {
        bail!(
            "{}: bridge {} does not exist in dom0 (create it first, e.g. `ip link add {0} type bridge`)",
            what(),
            v.bridge
        );
    }
    if let Some(n) = &v.vifname {
        if host.netdev_exists(n) {
            bail!("{}: an interface named {n} already exists in dom0", what());
        }
    }
    let mtu = host
        .mtu(&v.bridge)
        .with_context(|| format!("{}: reading the MTU of {}", what(), v.bridge))?;
    let mut be = vec![
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("script", v.script.clone()),
        ("mac", format_mac(&mac)),
        ("bridge", v.bridge.clone()),
        ("handle", devid.to_string()),
        ("type", "vif".into()),
        // Empty until the interface is bridged: netback holds Connected until
        // it reads `connected` here.
        ("hotplug-status", String::new()),
        ("state", "1".into()),
    ];
    if let Some(ip) = &v.ip {
        be.push(("ip", ip.clone()));
    }
    if let Some(n) = &v.vifname {
        be.push(("vifname", n.clone()));
    }
    let fe = [
        ("backend-id", BACKEND.to_string()),
        ("state", "1".into()),
        ("handle", devid.to_string()),
        ("mac", format_mac(&mac)),
        ("mtu", mtu.to_string()),
        ("trusted", "1".into()),
    ];
    write_device(store, domid, Kind::Vif, devid, &fe, &be).with_context(what)?;
    if let Err(e) = vif_online(store, host, domid, devid, v, mtu) {
        let _ = remove(store, host, domid, Kind::Vif, devid, Force::On);
        return Err(e.context(what()));
    }
    Ok(())
}

/// vif-bridge's `online` step: the interface netback made is renamed (vifname), given
/// the bridge's MTU, added to the bridge and brought up; then `hotplug-status`.
fn vif_online(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    devid: u32,
    v: &VifSpec,
    mtu: u32,
) -> Result<()> {
    wait_backend_up(store, host, domid, Kind::Vif, devid)?;
    let t = host.timeouts();
    let made = vif_ifname(domid, devid, None);
    let start = Instant::now();
    while !host.netdev_exists(&made) {
        if start.elapsed() >= t.up {
            bail!(
                "netback did not create interface {made} within {} s",
                t.up.as_secs_f32()
            );
        }
        host.sleep(t.poll);
    }
    let dev = match &v.vifname {
        Some(n) => {
            host.rename(&made, n)
                .with_context(|| format!("renaming {made} to {n}"))?;
            n.clone()
        }
        None => made,
    };
    host.set_mtu(&dev, mtu)
        .with_context(|| format!("setting the MTU of {dev} to {mtu}"))?;
    host.bridge_add(&v.bridge, &dev)
        .with_context(|| format!("adding {dev} to bridge {}", v.bridge))?;
    host.set_up(&dev)
        .with_context(|| format!("bringing {dev} up"))?;
    store.write(
        &format!("{}/hotplug-status", be_path(domid, Kind::Vif, devid)),
        b"connected",
    )?;
    Ok(())
}

/// Attaches every disk and vif of a config, in order. `macs` gives the address of each
/// vif without one (by devid). On failure the caller tears the domain down.
pub fn add_all(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    cfg: &xlcfg::DomainConfig,
    macs: &dyn Fn(u32) -> [u8; 6],
) -> Result<()> {
    for d in &cfg.disks {
        add_disk(store, host, domid, d)?;
    }
    for (i, v) in cfg.vifs.iter().enumerate() {
        let devid = v.devid.unwrap_or(i as u32);
        let mac = v.mac.unwrap_or_else(|| macs(devid));
        add_vif(store, host, domid, v, devid, mac)?;
    }
    Ok(())
}

/// The devices of a domain, from the backend side (dom0's, not guest-writable).
pub fn devids(store: &mut dyn Store, domid: u16, kind: Kind) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = store
        .directory(&be_dir(domid, kind))?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// What removal needs to know, read before anything is removed.
struct Removal {
    kind: Kind,
    devid: u32,
    /// The backend existed and had been probed (state ≥ 2): wait for it to close.
    wait: bool,
    loop_node: Option<String>,
    params: String,
    bridge: Option<String>,
    vifname: Option<String>,
}

fn begin_remove(
    store: &mut dyn Store,
    domid: u16,
    kind: Kind,
    devid: u32,
    force: bool,
) -> Result<Removal> {
    let bep = be_path(domid, kind, devid);
    let rd = |s: &mut dyn Store, k: &str| s.read_str(&format!("{bep}/{k}")).ok().flatten();
    let mut r = Removal {
        kind,
        devid,
        wait: false,
        loop_node: rd(store, "node").filter(|n| n.starts_with("/dev/loop")),
        params: rd(store, "params").unwrap_or_default(),
        bridge: rd(store, "bridge"),
        vifname: rd(store, "vifname"),
    };
    for _ in 0..16 {
        store.transaction_start()?;
        let res = (|| -> Result<bool> {
            if force {
                store.rm(&fe_path(domid, kind, devid))?;
            }
            let Some(state) = read_u32(store, &format!("{bep}/state"))? else {
                return Ok(false);
            };
            store.write(&format!("{bep}/online"), b"0")?;
            if state != 6 {
                store.write(&format!("{bep}/state"), b"5")?;
            }
            Ok(state >= 2 && state != 6)
        })();
        match res {
            Err(e) => {
                let _ = store.transaction_end(false);
                return Err(e);
            }
            Ok(wait) => {
                if store.transaction_end(true)? {
                    r.wait = wait;
                    return Ok(r);
                }
            }
        }
    }
    bail!(
        "xenstore transactions kept conflicting while removing {} {devid}",
        kind.name()
    )
}

/// Waits until every backend in `rs` that needs it is Closed (or gone); returns those
/// still open at the deadline.
fn wait_closed(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    rs: &[Removal],
) -> Vec<usize> {
    let t = host.timeouts();
    let start = Instant::now();
    let mut open: Vec<usize> = (0..rs.len()).filter(|&i| rs[i].wait).collect();
    loop {
        open.retain(|&i| {
            let p = format!("{}/state", be_path(domid, rs[i].kind, rs[i].devid));
            !matches!(read_u32(store, &p), Ok(None) | Ok(Some(6)))
        });
        if open.is_empty() || start.elapsed() >= t.close {
            return open;
        }
        host.sleep(t.poll);
    }
}

/// The hotplug `remove` step and the nodes; every step is attempted.
fn finish_remove(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    r: &Removal,
) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(node) = &r.loop_node {
        if let Err(e) = host.loop_detach(node, &r.params) {
            errs.push(format!("detaching {node}: {e}"));
        }
    }
    if let Some(br) = &r.bridge {
        // netback unregisters the interface itself; take it off the bridge if it is
        // still there.
        let dev = vif_ifname(domid, r.devid, r.vifname.as_deref());
        let on_bridge = |h: &mut dyn Host| {
            h.netdev_exists(&dev) && h.bridge_of(&dev).as_deref() == Some(br.as_str())
        };
        // netback unregisters the interface on its own schedule once the backend has
        // closed, and the bridge then drops the port itself; the ioctl can fail with
        // EINVAL while that is under way. Retry until the port is gone, by either
        // hand, and report only a port still there after the close timeout.
        let start = Instant::now();
        while on_bridge(host) {
            match host.bridge_del(br, &dev) {
                Ok(()) => break,
                Err(e) if start.elapsed() >= host.timeouts().close => {
                    if on_bridge(host) {
                        errs.push(format!("removing {dev} from {br}: {e}"));
                    }
                    break;
                }
                Err(_) => host.sleep(host.timeouts().poll),
            }
        }
    }
    let fe_keep = format!("/local/domain/{domid}/device");
    let be_keep = format!("/local/domain/{BACKEND}");
    for (p, keep) in [
        (fe_path(domid, r.kind, r.devid), fe_keep),
        (be_path(domid, r.kind, r.devid), be_keep),
    ] {
        if let Err(e) = rm_cleanup(store, &p, &keep) {
            errs.push(e.to_string());
        }
    }
    errs
}

/// Removes `path` and then its parents that are left empty, up to (not including)
/// `keep` (libxl `libxl__xs_path_cleanup`).
fn rm_cleanup(store: &mut dyn Store, path: &str, keep: &str) -> Result<()> {
    store.rm(path)?;
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if parent.len() <= keep.len() || !parent.starts_with(keep) {
            break;
        }
        if !store.directory(parent)?.is_empty() {
            break;
        }
        store.rm(parent)?;
        p = parent;
    }
    Ok(())
}

/// Removes one device (block-detach, network-detach, undoing a failed add).
pub fn remove(
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
    kind: Kind,
    devid: u32,
    force: Force,
) -> Result<()> {
    let r = begin_remove(store, domid, kind, devid, force == Force::On)?;
    let mut stuck = !wait_closed(store, host, domid, std::slice::from_ref(&r)).is_empty();
    if stuck && force == Force::Off {
        bail!(
            "{} {devid} of domain {domid}: the guest did not release it within {} s (still in use?); it stays Closing and goes when the guest lets go; use -f to remove it now",
            kind.name(),
            host.timeouts().close.as_secs_f32()
        );
    }
    if stuck && force == Force::Auto {
        let r2 = begin_remove(store, domid, kind, devid, true)?;
        stuck = !wait_closed(store, host, domid, std::slice::from_ref(&r2)).is_empty();
    }
    let errs = finish_remove(store, host, domid, &r);
    if !errs.is_empty() {
        bail!("removing {} {devid}: {}", kind.name(), errs.join("; "));
    }
    if stuck {
        bail!(
            "{} {devid} of domain {domid}: the backend did not close within {} s; its nodes were removed anyway",
            kind.name(),
            host.timeouts().close.as_secs_f32()
        );
    }
    Ok(())
}

/// Removes every device of a dying domain, forced, waiting for all backends together
/// (libxl `libxl__devices_destroy`); best effort, returns what went wrong.
pub fn remove_all(store: &mut dyn Store, host: &mut dyn Host, domid: u16) -> Vec<String> {
    let mut errs = Vec::new();
    let mut rs = Vec::new();
    for kind in [Kind::Vbd, Kind::Vif] {
        for devid in devids(store, domid, kind).unwrap_or_default() {
            match begin_remove(store, domid, kind, devid, true) {
                Ok(r) => rs.push(r),
                Err(e) => errs.push(format!("{} {devid}: {e:#}", kind.name())),
            }
        }
    }
    for i in wait_closed(store, host, domid, &rs) {
        errs.push(format!(
            "{} {}: the backend did not close; removed anyway",
            rs[i].kind.name(),
            rs[i].devid
        ));
    }
    for r in &rs {
        errs.extend(finish_remove(store, host, domid, r));
    }
    for kind in [Kind::Vbd, Kind::Vif] {
        let _ = rm_cleanup(
            store,
            &be_dir(domid, kind),
            &format!("/local/domain/{BACKEND}"),
        );
    }
    errs
}

/// A row of block-list / network-list (libxl's diskinfo / nicinfo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevInfo {
    pub devid: u32,
    pub backend_id: u16,
    pub frontend_id: u16,
    /// Frontend state, event channel and ring refs; -1 when absent.
    pub state: i64,
    pub evtch: i64,
    pub rref: i64,
    pub rref_tx: i64,
    pub rref_rx: i64,
    pub mac: String,
    pub be_path: String,
    /// Backend `dev` (vbd) for naming.
    pub vdev: String,
}

pub fn list(store: &mut dyn Store, domid: u16, kind: Kind) -> Result<Vec<DevInfo>> {
    let mut out = Vec::new();
    for devid in devids(store, domid, kind)? {
        let fep = fe_path(domid, kind, devid);
        let bep = be_path(domid, kind, devid);
        // Frontend values are the guest's: anything unparsable shows as -1.
        let mut num = |k: &str| -> i64 {
            store
                .read_str(&format!("{fep}/{k}"))
                .ok()
                .flatten()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(-1)
        };
        let (state, evtch, rref, rref_tx, rref_rx) = (
            num("state"),
            num("event-channel"),
            num("ring-ref"),
            num("tx-ring-ref"),
            num("rx-ring-ref"),
        );
        let rd = |s: &mut dyn Store, k: &str| {
            s.read_str(&format!("{bep}/{k}"))
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        out.push(DevInfo {
            devid,
            backend_id: BACKEND,
            frontend_id: domid,
            state,
            evtch,
            rref,
            rref_tx,
            rref_rx,
            mac: rd(store, "mac"),
            vdev: rd(store, "dev"),
            be_path: bep,
        });
    }
    Ok(out)
}

/// The device a `block-detach` argument names: a vdev name or number.
pub fn find_disk(store: &mut dyn Store, domid: u16, arg: &str) -> Result<u32> {
    let n = xlcfg::device::vdev_number(arg).map_err(anyhow::Error::msg)?;
    if !devids(store, domid, Kind::Vbd)?.contains(&n) {
        bail!("domain {domid} has no disk {arg}");
    }
    Ok(n)
}

/// The vif a `network-detach` argument names: a devid or a MAC.
pub fn find_vif(store: &mut dyn Store, domid: u16, arg: &str) -> Result<u32> {
    let ids = devids(store, domid, Kind::Vif)?;
    if let Ok(n) = arg.parse::<u32>() {
        if ids.contains(&n) {
            return Ok(n);
        }
        bail!("domain {domid} has no vif {n}");
    }
    let Some(mac) = xlcfg::device::parse_mac(arg) else {
        bail!("`{arg}` is neither a vif devid nor a MAC address");
    };
    let want = format_mac(&mac);
    for id in ids {
        if store
            .read_str(&format!("{}/mac", be_path(domid, Kind::Vif, id)))?
            .is_some_and(|m| m.eq_ignore_ascii_case(&want))
        {
            return Ok(id);
        }
    }
    bail!("domain {domid} has no vif with MAC {want}")
}

/// The next free vif handle (libxl `libxl__device_nextid`: one past the highest).
pub fn next_vif_devid(store: &mut dyn Store, domid: u16) -> Result<u32> {
    Ok(devids(store, domid, Kind::Vif)?.last().map_or(0, |m| m + 1))
}

/// The MACs of a domain's vifs by devid (kept across an `on_reboot=restart`).
pub fn vif_macs(store: &mut dyn Store, domid: u16) -> Vec<(u32, [u8; 6])> {
    let mut out = Vec::new();
    for id in devids(store, domid, Kind::Vif).unwrap_or_default() {
        if let Ok(Some(m)) = store.read_str(&format!("{}/mac", be_path(domid, Kind::Vif, id))) {
            if let Some(mac) = xlcfg::device::parse_mac(&m) {
                out.push((id, mac));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotplug::fake::FakeHost;
    use crate::store::MemStore;
    use std::collections::BTreeMap;

    const U: u16 = 3;

    fn world() -> (MemStore, FakeHost) {
        let mut st = MemStore {
            sim_backends: true,
            ..Default::default()
        };
        st.write("/local/domain/0/name", b"Domain-0").unwrap();
        st.mkdir(&format!("/local/domain/{U}/device")).unwrap();
        (st, FakeHost::default())
    }

    fn disk(s: &str) -> DiskSpec {
        xlcfg::device::parse_disk(s).unwrap()
    }

    fn vif(s: &str) -> VifSpec {
        xlcfg::device::parse_vif(s).unwrap()
    }

    /// The keys (and values) directly under `dir`.
    fn keys(st: &MemStore, dir: &str) -> BTreeMap<String, String> {
        let prefix = format!("{dir}/");
        st.nodes
            .iter()
            .filter_map(|(k, (v, _))| {
                let rest = k.strip_prefix(&prefix)?;
                (!rest.contains('/')).then(|| (rest.to_string(), String::from_utf8_lossy(v).into()))
            })
            .collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn device_nodes(st: &MemStore) -> Vec<String> {
        st.nodes
            .keys()
            .filter(|k| k.contains("/device/") || k.contains("/backend") || k.contains("/error/"))
            .cloned()
            .collect()
    }

    const MAC: [u8; 6] = [0, 0x16, 0x3e, 0x12, 0x34, 0x56];

    #[test]
    fn a_disk_is_shared_only_read_only() {
        let (mut st, mut host) = world();
        add_disk(&mut st, &mut host, U, &disk("file:/img/a.img,xvda,r")).unwrap();
        // Another read-only user is fine; a writer is not.
        add_disk(&mut st, &mut host, U + 1, &disk("file:/img/a.img,xvda,r")).unwrap();
        let e = add_disk(&mut st, &mut host, U + 2, &disk("file:/img/a.img,xvda,w")).unwrap_err();
        assert!(
            format!("{e:#}").contains("already attached to domain 3 with mode r"),
            "{e:#}"
        );
        // A disk attached read-write has no other user at all.
        add_disk(&mut st, &mut host, U + 2, &disk("file:/img/b.img,xvda,w")).unwrap();
        let e = add_disk(&mut st, &mut host, U + 3, &disk("file:/img/b.img,xvdb,r")).unwrap_err();
        assert!(format!("{e:#}").contains("with mode w"), "{e:#}");
        // The refusals left nothing behind.
        assert!(st
            .read("/local/domain/6/device/vbd/51728/state")
            .unwrap()
            .is_none());
    }

    #[test]
    fn vbd_on_an_image_file() {
        let (mut st, mut host) = world();
        add_disk(&mut st, &mut host, U, &disk("file:/img/a.img,xvda,w")).unwrap();
        let fe = "/local/domain/3/device/vbd/51712";
        let be = "/local/domain/0/backend/vbd/3/51712";
        assert_eq!(
            keys(&st, fe),
            kv(&[
                ("backend", be),
                ("backend-id", "0"),
                ("state", "1"),
                ("virtual-device", "51712"),
                ("device-type", "disk"),
            ])
        );
        assert_eq!(
            keys(&st, be),
            kv(&[
                ("frontend", fe),
                ("frontend-id", "3"),
                ("online", "1"),
                ("removable", "0"),
                ("bootable", "1"),
                // The fake backend probed it.
                ("state", "2"),
                ("dev", "xvda"),
                ("type", "phy"),
                ("mode", "w"),
                ("device-type", "disk"),
                ("discard-enable", "1"),
                ("params", "/img/a.img"),
                ("physical-device", "7:0"),
                ("physical-device-path", "/dev/loop0"),
                ("node", "/dev/loop0"),
                ("hotplug-status", "connected"),
            ])
        );
        // Frontend: the guest's, readable by dom0; backend: dom0's, readable by the guest.
        for p in [
            fe.to_string(),
            format!("{fe}/state"),
            format!("{fe}/backend"),
        ] {
            assert_eq!(st.perms(&p).unwrap(), &fe_perms(U)[..], "{p}");
        }
        for p in [
            be.to_string(),
            format!("{be}/mode"),
            format!("{be}/physical-device"),
        ] {
            assert_eq!(st.perms(&p).unwrap(), &be_perms(U)[..], "{p}");
        }
        assert_eq!(
            fe_perms(U)[0],
            Perm {
                domid: 3,
                access: Access::None
            }
        );
        assert_eq!(
            fe_perms(U)[1],
            Perm {
                domid: 0,
                access: Access::Read
            }
        );
        assert_eq!(
            be_perms(U)[0],
            Perm {
                domid: 0,
                access: Access::None
            }
        );
        assert_eq!(
            be_perms(U)[1],
            Perm {
                domid: 3,
                access: Access::Read
            }
        );
        // One transaction.
        assert_eq!(st.commits, 1);
        assert_eq!(host.loops["/dev/loop0"], ("/img/a.img".to_string(), false));

        // Read-only: the loop too; a second disk gets the next loop.
        add_disk(&mut st, &mut host, U, &disk("/img/b.img,,xvdb,r")).unwrap();
        assert_eq!(host.loops["/dev/loop1"], ("/img/b.img".to_string(), true));
        let be2 = "/local/domain/0/backend/vbd/3/51728";
        assert_eq!(st.value(&format!("{be2}/mode")).unwrap(), "r");
        assert_eq!(st.value(&format!("{be2}/physical-device")).unwrap(), "7:1");

        // The same vdev twice is refused before anything is set up.
        let e = add_disk(&mut st, &mut host, U, &disk("/img/b.img,,xvda")).unwrap_err();
        assert!(
            format!("{e:#}").contains("already has a disk 51712"),
            "{e:#}"
        );
        assert_eq!(host.loops.len(), 2);

        assert!(remove_all(&mut st, &mut host, U).is_empty());
        assert!(device_nodes(&st).is_empty(), "{:?}", device_nodes(&st));
        assert!(host.loops.is_empty());
    }

    #[test]
    fn vbd_on_a_block_device_and_bad_targets() {
        let (mut st, mut host) = world();
        add_disk(
            &mut st,
            &mut host,
            U,
            &disk("phy:/dev/sdb,xvdc,w,no-discard"),
        )
        .unwrap();
        let be = "/local/domain/0/backend/vbd/3/51744";
        let k = keys(&st, be);
        assert_eq!(k["physical-device"], "8:10");
        assert_eq!(k["physical-device-path"], "/dev/sdb");
        assert_eq!(k["params"], "/dev/sdb");
        assert_eq!(k["discard-enable"], "0");
        assert!(!k.contains_key("node"));
        assert!(host.loops.is_empty());
        // A target that does not exist: nothing written.
        let before = st.nodes.clone();
        let e = add_disk(&mut st, &mut host, U, &disk("/nope.img,,xvdd")).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("disk xvdd (/nope.img): "),
            "{e:#}"
        );
        assert_eq!(st.nodes, before);
        // A loop failure: nothing written either.
        host.fail = Some("loop_attach");
        let e = add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvdd")).unwrap_err();
        assert!(
            format!("{e:#}").contains("setting up a loop device"),
            "{e:#}"
        );
        assert_eq!(st.nodes, before);
    }

    #[test]
    fn transactions_are_retried_and_failures_undo() {
        let (mut st, mut host) = world();
        st.commit_conflicts = 2;
        add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvda")).unwrap();
        assert_eq!(st.commits, 1);
        assert_eq!(
            st.value("/local/domain/0/backend/vbd/3/51712/state")
                .unwrap(),
            "2"
        );
        remove_all(&mut st, &mut host, U);
        // A write failing inside the transaction: nothing left, the loop released.
        st.fail_write_containing = Some("physical-device".into());
        let before = st.nodes.clone();
        assert!(add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvda")).is_err());
        assert_eq!(st.nodes, before);
        assert!(host.loops.is_empty());
    }

    #[test]
    fn backend_that_never_probes() {
        let (mut st, mut host) = world();
        st.stuck.push("/vbd/".into());
        let before = st.nodes.clone();
        let e = add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvda")).unwrap_err();
        assert!(
            format!("{e:#}")
                .contains("did not reach InitWait within 0.03 s (is xen-blkback loaded in dom0?)"),
            "{e:#}"
        );
        assert_eq!(st.nodes, before);
        assert!(host.loops.is_empty());
        // A backend that fails (blkback cannot open the device) reports its error node.
        st.stuck.clear();
        st.write("/local/domain/0/backend/vbd/3/51712/state", b"5")
            .unwrap();
        st.write(
            "/local/domain/0/error/backend/vbd/3/51712/error",
            b"2 opening /dev/loop0",
        )
        .unwrap();
        st.rm("/local/domain/0/backend/vbd/3/51712/state").unwrap();
        let e = wait_backend_up(&mut st, &mut host, U, Kind::Vbd, 51712).unwrap_err();
        assert!(e.to_string().contains("vanished"), "{e}");
        st.write("/local/domain/0/backend/vbd/3/51712/state", b"5")
            .unwrap();
        let e = wait_backend_up(&mut st, &mut host, U, Kind::Vbd, 51712).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vbd 51712: the backend went to Closing: 2 opening /dev/loop0"
        );
    }

    #[test]
    fn vif_nodes_and_hotplug() {
        let (mut st, mut host) = world();
        add_vif(
            &mut st,
            &mut host,
            U,
            &vif("bridge=br9,ip=10.0.0.3"),
            0,
            MAC,
        )
        .unwrap();
        let fe = "/local/domain/3/device/vif/0";
        let be = "/local/domain/0/backend/vif/3/0";
        assert_eq!(
            keys(&st, fe),
            kv(&[
                ("backend", be),
                ("backend-id", "0"),
                ("state", "1"),
                ("handle", "0"),
                ("mac", "00:16:3e:12:34:56"),
                ("mtu", "9000"),
                ("trusted", "1"),
            ])
        );
        assert_eq!(
            keys(&st, be),
            kv(&[
                ("frontend", fe),
                ("frontend-id", "3"),
                ("online", "1"),
                ("state", "2"),
                ("script", "/etc/xen/scripts/vif-bridge"),
                ("mac", "00:16:3e:12:34:56"),
                ("bridge", "br9"),
                ("handle", "0"),
                ("type", "vif"),
                ("ip", "10.0.0.3"),
                ("hotplug-status", "connected"),
            ])
        );
        assert_eq!(st.perms(fe).unwrap(), &fe_perms(U)[..]);
        assert_eq!(
            st.perms(&format!("{be}/hotplug-status")).unwrap(),
            &be_perms(U)[..]
        );
        let d = &host.netdevs["vif3.0"];
        assert_eq!(
            (d.mtu, d.up, d.master.as_deref()),
            (9000, true, Some("br9"))
        );
        // Bridged and up before hotplug-status (netback connects on it).
        let pos = |c: &str| host.calls.iter().position(|x| x.starts_with(c)).unwrap();
        assert!(pos("set_mtu") < pos("bridge_add") && pos("bridge_add") < pos("set_up"));

        // vifname renames the interface.
        add_vif(
            &mut st,
            &mut host,
            U,
            &vif("vifname=web0"),
            1,
            [0, 0x16, 0x3e, 0, 0, 9],
        )
        .unwrap();
        assert!(host.netdevs.contains_key("web0") && !host.netdevs.contains_key("vif3.1"));
        assert_eq!(host.netdevs["web0"].master.as_deref(), Some("xenbr0"));
        assert_eq!(
            st.value("/local/domain/0/backend/vif/3/1/vifname").unwrap(),
            "web0"
        );

        assert!(remove_all(&mut st, &mut host, U).is_empty());
        assert!(device_nodes(&st).is_empty(), "{:?}", device_nodes(&st));
        assert!(host.ports().is_empty());
    }

    /// netback unregisters the interface while xl takes it off the bridge (the ioctl then
    /// fails): the port is gone either way, so the removal is clean.
    #[test]
    fn vif_vanishing_during_removal_is_not_an_error() {
        let (mut st, mut host) = world();
        add_vif(&mut st, &mut host, U, &vif("bridge=br9"), 0, MAC).unwrap();
        host.vanish_on_bridge_del = true;
        host.auto_vif = false;
        assert_eq!(remove_all(&mut st, &mut host, U), Vec::<String>::new());
        assert!(host.ports().is_empty() && !host.netdevs.contains_key("vif3.0"));
        assert!(device_nodes(&st).is_empty(), "{:?}", device_nodes(&st));
        // A port that really stays is still reported.
        let (mut st, mut host) = world();
        add_vif(&mut st, &mut host, U, &vif("bridge=br9"), 0, MAC).unwrap();
        host.fail = Some("bridge_del");
        let errs = remove_all(&mut st, &mut host, U);
        assert!(
            errs.len() == 1 && errs[0].contains("removing vif3.0 from br9"),
            "{errs:?}"
        );
    }

    /// The ioctl fails for a while (netback is tearing the interface down) but the port
    /// then goes: xl retries and the removal is clean, as seen once in CI.
    #[test]
    fn vif_bridge_del_failing_for_a_while_is_retried() {
        let (mut st, mut host) = world();
        add_vif(&mut st, &mut host, U, &vif("bridge=br9"), 0, MAC).unwrap();
        host.bridge_del_failures = 3;
        assert_eq!(remove_all(&mut st, &mut host, U), Vec::<String>::new());
        assert!(host.ports().is_empty());
        let tries = host
            .calls
            .iter()
            .filter(|c| c.starts_with("bridge_del"))
            .count();
        assert_eq!(tries, 4, "{:?}", host.calls);
    }

    #[test]
    fn vif_failures_leave_nothing() {
        for (what, msg) in [
            ("no bridge", "bridge nobr does not exist in dom0"),
            ("no netdev", "netback did not create interface vif3.0"),
            ("stuck", "did not reach InitWait"),
            ("bridge_add", "adding vif3.0 to bridge xenbr0"),
            ("set_up", "bringing vif3.0 up"),
            ("set_mtu", "setting the MTU of vif3.0"),
            ("store", "EIO"),
        ] {
            let (mut st, mut host) = world();
            let mut spec = vif("");
            match what {
                "no bridge" => spec.bridge = "nobr".into(),
                "no netdev" => host.auto_vif = false,
                "stuck" => st.stuck.push("/vif/".into()),
                "store" => st.fail_write_containing = Some("hotplug-status".into()),
                f => {
                    host.fail = Some(match f {
                        "bridge_add" => "bridge_add",
                        "set_up" => "set_up",
                        _ => "set_mtu",
                    })
                }
            }
            let before = st.nodes.clone();
            let e = add_vif(&mut st, &mut host, U, &spec, 0, MAC).unwrap_err();
            assert!(format!("{e:#}").contains(msg), "{what}: {e:#}");
            assert!(
                format!("{e:#}").starts_with("vif 0 (00:16:3e:12:34:56): "),
                "{what}: {e:#}"
            );
            assert_eq!(st.nodes, before, "{what}");
            assert!(host.ports().is_empty(), "{what}");
        }
    }

    #[test]
    fn detach_waits_for_the_frontend_or_forces() {
        let (mut st, mut host) = world();
        add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvda")).unwrap();
        let be = "/local/domain/0/backend/vbd/3/51712";
        let fe = "/local/domain/3/device/vbd/51712";
        // A frontend that does not let go: the safe detach fails and leaves it Closing.
        st.stuck.push("/vbd/".into());
        let e = remove(&mut st, &mut host, U, Kind::Vbd, 51712, Force::Off).unwrap_err();
        assert!(e.to_string().contains("did not release it"), "{e}");
        assert_eq!(st.value(&format!("{be}/state")).unwrap(), "5");
        assert_eq!(st.value(&format!("{be}/online")).unwrap(), "0");
        assert!(st.value(&format!("{fe}/state")).is_some());
        assert_eq!(host.loops.len(), 1);
        // Auto: forced after the timeout (the frontend directory goes first), and even a
        // backend that never closes ends with everything removed and an error said.
        let e = remove(&mut st, &mut host, U, Kind::Vbd, 51712, Force::Auto).unwrap_err();
        assert!(e.to_string().contains("removed anyway"), "{e}");
        assert!(device_nodes(&st).is_empty());
        assert!(host.loops.is_empty());
        // A cooperative backend: clean.
        st.stuck.clear();
        add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvda")).unwrap();
        remove(&mut st, &mut host, U, Kind::Vbd, 51712, Force::Off).unwrap();
        assert!(device_nodes(&st).is_empty());
        assert!(host.loops.is_empty());
    }

    #[test]
    fn lists_and_lookups() {
        let (mut st, mut host) = world();
        add_disk(&mut st, &mut host, U, &disk("/img/a.img,,xvda")).unwrap();
        add_vif(&mut st, &mut host, U, &vif(""), 0, MAC).unwrap();
        add_vif(&mut st, &mut host, U, &vif(""), 2, [0, 0x16, 0x3e, 0, 0, 2]).unwrap();
        // What a connected guest writes (and garbage, shown as -1).
        let fe = "/local/domain/3/device/vbd/51712";
        st.write(&format!("{fe}/state"), b"4").unwrap();
        st.write(&format!("{fe}/event-channel"), b"9").unwrap();
        st.write(&format!("{fe}/ring-ref"), b"8").unwrap();
        st.write("/local/domain/3/device/vif/0/tx-ring-ref", b"768")
            .unwrap();
        st.write("/local/domain/3/device/vif/0/rx-ring-ref", b"769")
            .unwrap();
        st.write("/local/domain/3/device/vif/0/event-channel", b"x")
            .unwrap();
        let b = list(&mut st, U, Kind::Vbd).unwrap();
        let mut out = crate::fmt::block_list_header();
        out += &crate::fmt::block_list_row(&b[0]);
        assert_eq!(
            out,
            "Vdev  BE  handle state evt-ch ring-ref BE-path                       \n\
             51712 0   3      4     9      8        /local/domain/0/backend/vbd/3/51712\n"
        );
        let n = list(&mut st, U, Kind::Vif).unwrap();
        let mut out = crate::fmt::network_list_header();
        for i in &n {
            out += &crate::fmt::network_list_row(i);
        }
        assert_eq!(
            out,
            "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                       \n\
             0   0  00:16:3e:12:34:56     0     1     -1   768/769         /local/domain/0/backend/vif/3/0\n\
             2   0  00:16:3e:00:00:02     2     1     -1    -1/-1          /local/domain/0/backend/vif/3/2\n"
        );
        assert_eq!(find_disk(&mut st, U, "xvda").unwrap(), 51712);
        assert_eq!(find_disk(&mut st, U, "51712").unwrap(), 51712);
        assert!(find_disk(&mut st, U, "xvdb")
            .unwrap_err()
            .to_string()
            .contains("no disk xvdb"));
        assert!(find_disk(&mut st, U, "bogus").is_err());
        assert_eq!(find_vif(&mut st, U, "2").unwrap(), 2);
        assert_eq!(find_vif(&mut st, U, "00:16:3E:12:34:56").unwrap(), 0);
        assert!(find_vif(&mut st, U, "1").is_err());
        assert!(find_vif(&mut st, U, "00:16:3e:99:99:99").is_err());
        assert!(find_vif(&mut st, U, "eth0")
            .unwrap_err()
            .to_string()
            .contains("neither"));
        assert_eq!(next_vif_devid(&mut st, U).unwrap(), 3);
        assert_eq!(
            vif_macs(&mut st, U),
            [(0, MAC), (2, [0, 0x16, 0x3e, 0, 0, 2])]
        );
    }
}
