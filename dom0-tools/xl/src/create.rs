//! `xl create`: config → boot image → domain → xenstore → devices → running, and the reverse
//! (`teardown`) when any step fails or the domain goes away.

use crate::device;
use crate::hotplug::Host;
use crate::hv::{CreateSpec, Hv};
use crate::image::{self, BootImage};
use crate::store::{Access, Perm, Store};
use anyhow::{bail, Context, Result};
use xen_abi::hvm::params::{
    HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN,
};
use xlcfg::DomainConfig;

const GTF_PERMIT_ACCESS: u16 = xen_abi::grant_table::GTF_PERMIT_ACCESS;
/// libxl's defaults for a domU.
const MAX_GRANT_FRAMES: u32 = 32;
const MAX_MAPTRACK_FRAMES: u32 = 1024;
const MAX_EVTCHN_PORT: u32 = 1023;

/// The files a config names, read by the caller (so tests need no disk).
pub struct Inputs<'a> {
    pub kernel: &'a [u8],
    pub ramdisk: Option<&'a [u8]>,
    /// A 16-byte random UUID used when the config gives none.
    pub fresh_uuid: [u8; 16],
    /// Seconds since the epoch, for `/vm/<uuid>/start_time`.
    pub now: u64,
    /// The MAC of each vif (by devid) the config gives none.
    pub macs: std::collections::BTreeMap<u32, [u8; 6]>,
}

/// The name of every domain, as xl shows them (xenstore `name`, `Domain-0` for 0).
pub fn domain_name(store: &mut dyn Store, domid: u16) -> String {
    match store.read_str(&format!("/local/domain/{domid}/name")) {
        Ok(Some(n)) if !n.is_empty() => n,
        _ if domid == 0 => "Domain-0".to_string(),
        _ => String::new(),
    }
}

/// Resolves a domain given by name or id.
pub fn resolve(hv: &mut dyn Hv, store: &mut dyn Store, spec: &str) -> Result<u16> {
    if let Ok(id) = spec.parse::<u16>() {
        if hv.domain_info(id)?.is_some_and(|d| d.domid == id) {
            return Ok(id);
        }
        bail!("domain {id} does not exist");
    }
    for d in hv.list_domains()? {
        if domain_name(store, d.domid) == spec {
            return Ok(d.domid);
        }
    }
    bail!("no domain named `{spec}`")
}

/// Checks what can be checked before anything is created.
pub fn precheck(hv: &mut dyn Hv, store: &mut dyn Store, cfg: &DomainConfig) -> Result<()> {
    cfg.check_supported().map_err(anyhow::Error::msg)?;
    for d in hv.list_domains()? {
        if domain_name(store, d.domid) == cfg.name {
            bail!("domain `{}` already exists (id {})", cfg.name, d.domid);
        }
    }
    let phys = hv.physinfo().context("reading host memory (physinfo)")?;
    let want_kib = (cfg.memory_mib.div_ceil(2) * 2) << 10;
    if want_kib > phys.free_kib {
        bail!(
            "not enough free memory: `{}` wants {} MiB, the host has {} MiB free",
            cfg.name,
            want_kib >> 10,
            phys.free_kib >> 10
        );
    }
    Ok(())
}

/// What `create` made (the ports are for callers that report them; tests check them).
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Created {
    pub domid: u16,
    pub console_port: u32,
    pub store_port: u32,
}

/// Builds and (unless `paused`) starts the domain. On any failure after the domain
/// exists, destroys it and removes its xenstore nodes before returning the error.
pub fn create(
    hv: &mut dyn Hv,
    store: &mut dyn Store,
    host: &mut dyn Host,
    cfg: &DomainConfig,
    inputs: &Inputs<'_>,
    paused: bool,
) -> Result<Created> {
    precheck(hv, store, cfg)?;
    for v in &cfg.vifs {
        let id = v.devid.unwrap_or(0);
        if v.mac.is_none() && !inputs.macs.contains_key(&id) {
            bail!("no MAC address for vif {id}");
        }
    }
    let img = image::build(
        inputs.kernel,
        inputs.ramdisk,
        &cfg.cmdline,
        cfg.memory_mib << 20,
        cfg.vcpus,
    )
    .with_context(|| format!("kernel {}", cfg.kernel))?;
    let spec = CreateSpec {
        domid: 0,
        name: cfg.name.chars().take(32).collect(),
        max_vcpus: cfg.maxvcpus,
        max_mem_kib: (cfg.maxmem_mib << 10).max(img.ram >> 10),
        max_grant_frames: MAX_GRANT_FRAMES,
        max_maptrack_frames: MAX_MAPTRACK_FRAMES,
        max_evtchn_port: MAX_EVTCHN_PORT,
        weight: cfg.weight.unwrap_or(0),
        cap: cfg.cap.unwrap_or(0),
    };
    let domid = hv.create_domain(&spec).context("creating the domain")?;
    let uuid = cfg.uuid.unwrap_or(inputs.fresh_uuid);
    match build_domain(hv, store, host, cfg, &img, domid, uuid, inputs, paused) {
        Ok((console_port, store_port)) => Ok(Created {
            domid,
            console_port,
            store_port,
        }),
        Err(e) => {
            teardown(hv, store, host, domid);
            Err(e.context(format!(
                "creating `{}` failed; domain {domid} destroyed",
                cfg.name
            )))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_domain(
    hv: &mut dyn Hv,
    store: &mut dyn Store,
    host: &mut dyn Host,
    cfg: &DomainConfig,
    img: &BootImage,
    domid: u16,
    uuid: [u8; 16],
    inputs: &Inputs<'_>,
    paused: bool,
) -> Result<(u32, u32)> {
    hv.populate(domid, img.ram >> 10)
        .with_context(|| format!("giving the domain {} MiB", img.ram >> 20))?;
    for (gpa, data) in img
        .pieces()
        .flat_map(|(gpa, data)| image::nonzero_runs(gpa, data))
    {
        hv.copy_to(domid, gpa, data)
            .with_context(|| format!("copying {} bytes to {gpa:#x}", data.len()))?;
    }
    hv.set_memmap(domid, &img.memmap)
        .context("setting the memory map")?;
    hv.set_vcpu_boot(domid, 0, img.entry, image::START_INFO_GPA)
        .context("setting the boot vCPU")?;
    if let Some(mask) = cfg.cpus {
        for v in 0..cfg.maxvcpus {
            hv.set_affinity(domid, v, mask, u64::MAX)
                .with_context(|| format!("pinning vCPU {v}"))?;
        }
    }
    let console_port = hv
        .alloc_unbound(domid, 0)
        .context("console event channel")?;
    let store_port = hv
        .alloc_unbound(domid, 0)
        .context("xenstore event channel")?;
    for (idx, val) in [
        (HVM_PARAM_STORE_PFN, img.store_gfn),
        (HVM_PARAM_STORE_EVTCHN, u64::from(store_port)),
        (HVM_PARAM_CONSOLE_PFN, img.console_gfn),
        (HVM_PARAM_CONSOLE_EVTCHN, u64::from(console_port)),
    ] {
        hv.set_hvm_param(domid, idx, val)
            .with_context(|| format!("setting HVM param {idx}"))?;
    }
    hv.seed_grant(domid, 0, GTF_PERMIT_ACCESS, 0, img.console_gfn)
        .context("console grant")?;
    hv.seed_grant(domid, 1, GTF_PERMIT_ACCESS, 0, img.store_gfn)
        .context("xenstore grant")?;
    write_store(
        store,
        cfg,
        domid,
        uuid,
        inputs.now,
        img,
        console_port,
        store_port,
    )
    .context("writing xenstore")?;
    store
        .introduce(domid, img.store_gfn, store_port)
        .context("introducing the domain to xenstored")?;
    // As libxl: devices are added (backends up, hotplug done) while the domain is
    // still paused.
    let macs = |id: u32| inputs.macs.get(&id).copied().unwrap_or_default();
    device::add_all(store, host, domid, cfg, &macs)?;
    if !paused {
        hv.unpause(domid).context("starting the domain")?;
    }
    Ok((console_port, store_port))
}

/// Permissions as libxl sets them: owned by dom0, readable by the domain.
fn ro(domid: u16) -> [Perm; 2] {
    [
        Perm {
            domid: 0,
            access: Access::None,
        },
        Perm {
            domid,
            access: Access::Read,
        },
    ]
}

/// Owned by the domain (which may then write; dom0 is privileged).
fn rw(domid: u16) -> [Perm; 1] {
    [Perm {
        domid,
        access: Access::None,
    }]
}

/// Writes the nodes `docs/misc/xenstore-paths.pandoc` documents for a PVH domU.
#[allow(clippy::too_many_arguments)]
pub fn write_store(
    store: &mut dyn Store,
    cfg: &DomainConfig,
    domid: u16,
    uuid: [u8; 16],
    now: u64,
    img: &BootImage,
    console_port: u32,
    store_port: u32,
) -> Result<()> {
    let dom = format!("/local/domain/{domid}");
    let vm = format!("/vm/{}", xlcfg::format_uuid(&uuid));
    let libxl = format!("/libxl/{domid}");
    let ro = ro(domid);
    let rw = rw(domid);
    let none = [Perm {
        domid: 0,
        access: Access::None,
    }];

    store.rm(&dom)?;
    store.mkdir(&dom)?;
    store.set_perms(&dom, &ro)?;
    store.mkdir(&vm)?;
    store.set_perms(&vm, &ro)?;
    store.mkdir(&libxl)?;
    store.set_perms(&libxl, &none)?;

    let w = |s: &mut dyn Store, p: &str, v: &str| s.write(p, v.as_bytes());
    w(store, &format!("{vm}/name"), &cfg.name)?;
    w(store, &format!("{vm}/uuid"), &xlcfg::format_uuid(&uuid))?;
    w(store, &format!("{vm}/start_time"), &now.to_string())?;
    w(store, &format!("{dom}/vm"), &vm)?;
    w(store, &format!("{dom}/name"), &cfg.name)?;
    w(store, &format!("{dom}/domid"), &domid.to_string())?;
    // memory/target is left unset: ballooning is not implemented.
    w(
        store,
        &format!("{dom}/memory/static-max"),
        &(cfg.maxmem_mib << 10).to_string(),
    )?;
    for v in 0..cfg.maxvcpus {
        let state = if v < cfg.vcpus { "online" } else { "offline" };
        w(store, &format!("{dom}/cpu/{v}/availability"), state)?;
    }
    w(store, &format!("{dom}/store/port"), &store_port.to_string())?;
    w(
        store,
        &format!("{dom}/store/ring-ref"),
        &img.store_gfn.to_string(),
    )?;
    w(
        store,
        &format!("{dom}/console/port"),
        &console_port.to_string(),
    )?;
    w(
        store,
        &format!("{dom}/console/ring-ref"),
        &img.console_gfn.to_string(),
    )?;
    w(store, &format!("{dom}/console/limit"), "1048576")?;
    w(store, &format!("{dom}/console/type"), "xenconsoled")?;
    w(store, &format!("{dom}/console/output"), "pty")?;
    w(
        store,
        &format!("{dom}/control/platform-feature-multiprocessor-suspend"),
        "1",
    )?;
    w(
        store,
        &format!("{dom}/control/platform-feature-xs_reset_watches"),
        "1",
    )?;
    // Nodes the domain itself writes.
    for node in [
        "control/shutdown",
        "data",
        "drivers",
        "attr",
        "error",
        "device",
    ] {
        let p = format!("{dom}/{node}");
        if node == "device" {
            store.mkdir(&p)?;
            store.set_perms(&p, &ro)?;
        } else {
            if node.contains('/') {
                w(store, &p, "")?;
            } else {
                store.mkdir(&p)?;
            }
            store.set_perms(&p, &rw)?;
        }
    }
    for node in [
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
    ] {
        let p = format!("{dom}/{node}");
        w(store, &p, "")?;
        store.set_perms(&p, &rw)?;
    }
    w(store, &format!("{libxl}/type"), "pvh")?;
    w(store, &format!("{libxl}/dm-version"), "none")?;
    Ok(())
}

/// Destroys a domain and forgets it in xenstore; every step is attempted. As libxl's
/// `libxl__destroy_domid`: the domain is paused, its devices are removed (forced, the
/// backends closed, loop devices and bridge ports released), then it is destroyed.
/// Returns what went wrong with devices (the rest is best effort and silent).
pub fn teardown(
    hv: &mut dyn Hv,
    store: &mut dyn Store,
    host: &mut dyn Host,
    domid: u16,
) -> Vec<String> {
    let vm = store
        .read_str(&format!("/local/domain/{domid}/vm"))
        .ok()
        .flatten();
    if hv
        .domain_info(domid)
        .ok()
        .flatten()
        .is_some_and(|d| d.domid == domid)
    {
        let _ = hv.pause(domid);
    }
    let errs = device::remove_all(store, host, domid);
    let _ = hv.destroy(domid);
    let _ = store.release(domid);
    let _ = store.rm(&format!("/local/domain/{domid}"));
    let _ = store.rm(&format!("/libxl/{domid}"));
    if let Some(vm) = vm.filter(|v| v.starts_with("/vm/") && v.len() > 4) {
        let _ = store.rm(&vm);
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotplug::fake::FakeHost;
    use crate::hv::fake::FakeHv;
    use crate::image::tests::tiny_kernel;
    use crate::store::MemStore;

    fn cfg(text: &str) -> DomainConfig {
        xlcfg::parse_with_overrides("t.cfg", text, &[]).unwrap()
    }

    fn setup() -> (FakeHv, MemStore, Vec<u8>) {
        let mut st = MemStore {
            sim_backends: true,
            ..Default::default()
        };
        st.write("/local/domain/0/name", b"Domain-0").unwrap();
        (
            FakeHv::new(1024),
            st,
            tiny_kernel(&[0x90; 64], 4096, Some(0x10_0010)),
        )
    }

    fn inputs(k: &[u8]) -> Inputs<'_> {
        Inputs {
            kernel: k,
            ramdisk: None,
            fresh_uuid: [7; 16],
            now: 1000,
            macs: [(0, [0, 0x16, 0x3e, 0, 0, 1]), (1, [0, 0x16, 0x3e, 0, 0, 2])].into(),
        }
    }

    const CFG: &str = "name='g1'\nkernel='k'\nmemory=64\nvcpus=2\nmaxvcpus=3\ncpus='1'\n";

    #[test]
    fn create_builds_runs_and_publishes() {
        let (mut hv, mut st, k) = setup();
        let c = create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg(CFG),
            &inputs(&k),
            false,
        )
        .unwrap();
        assert_eq!(c.domid, 1);
        let d = &hv.domains[&1];
        assert_eq!(d.pause, 0, "unpaused");
        assert_eq!(d.boot, Some((0x10_0010, 0x6000)));
        assert_eq!(d.ram.len(), 64 << 20);
        assert_eq!(&d.ram[0x10_0000..0x10_0040], &[0x90; 64][..]);
        let cgfn = (64 << 8) - 2;
        assert_eq!(d.params[&HVM_PARAM_CONSOLE_PFN], cgfn);
        assert_eq!(d.params[&HVM_PARAM_STORE_PFN], cgfn + 1);
        assert_eq!(
            d.params[&HVM_PARAM_CONSOLE_EVTCHN],
            u64::from(c.console_port)
        );
        assert_eq!(d.params[&HVM_PARAM_STORE_EVTCHN], u64::from(c.store_port));
        assert_eq!(d.grants[&0], (GTF_PERMIT_ACCESS, 0, cgfn));
        assert_eq!(d.grants[&1], (GTF_PERMIT_ACCESS, 0, cgfn + 1));
        assert_eq!(d.memmap.last().unwrap().ty, 2);
        assert!(hv
            .calls
            .iter()
            .any(|c| c == "set_affinity 1 2 0x2 0xffffffffffffffff"));
        assert_eq!(st.introduced[&1], (cgfn + 1, c.store_port));
        let v = |p: &str| st.value(p).unwrap_or_else(|| panic!("{p} missing"));
        assert_eq!(v("/local/domain/1/name"), "g1");
        assert_eq!(v("/local/domain/1/domid"), "1");
        assert_eq!(
            v("/local/domain/1/console/port"),
            c.console_port.to_string()
        );
        assert_eq!(v("/local/domain/1/console/ring-ref"), cgfn.to_string());
        assert_eq!(v("/local/domain/1/console/type"), "xenconsoled");
        assert_eq!(v("/local/domain/1/memory/static-max"), "65536");
        assert!(st.value("/local/domain/1/memory/target").is_none());
        assert_eq!(v("/local/domain/1/cpu/1/availability"), "online");
        assert_eq!(v("/local/domain/1/cpu/2/availability"), "offline");
        assert_eq!(v("/local/domain/1/control/shutdown"), "");
        let vm = v("/local/domain/1/vm");
        assert_eq!(vm, "/vm/07070707-0707-0707-0707-070707070707");
        assert_eq!(v(&format!("{vm}/name")), "g1");
        // Permissions: the domain reads its tree, owns control/shutdown.
        assert_eq!(st.perms("/local/domain/1").unwrap(), &ro(1)[..]);
        assert_eq!(st.perms("/local/domain/1/name").unwrap(), &ro(1)[..]);
        assert_eq!(
            st.perms("/local/domain/1/control/shutdown").unwrap(),
            &rw(1)[..]
        );
        assert_eq!(st.perms("/local/domain/1/data").unwrap(), &rw(1)[..]);
        // Order: introduce after the grants, unpause last.
        assert_eq!(hv.calls.last().unwrap(), "unpause 1");
    }

    #[test]
    fn paused_create_leaves_it_paused() {
        let (mut hv, mut st, k) = setup();
        create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg(CFG),
            &inputs(&k),
            true,
        )
        .unwrap();
        assert_eq!(hv.domains[&1].pause, 1);
    }

    #[test]
    fn every_failing_step_leaves_nothing_behind() {
        for step in [
            "populate",
            "copy_to",
            "set_memmap",
            "set_vcpu_boot",
            "set_affinity",
            "alloc_unbound",
            "set_hvm_param",
            "seed_grant",
            "unpause",
        ] {
            let (mut hv, mut st, k) = setup();
            hv.fail = Some(step);
            let keys = |st: &MemStore| -> Vec<String> {
                st.nodes
                    .keys()
                    .filter(|k| *k != "/vm" && *k != "/libxl")
                    .cloned()
                    .collect()
            };
            let before = keys(&st);
            let e = create(
                &mut hv,
                &mut st,
                &mut FakeHost::default(),
                &cfg(CFG),
                &inputs(&k),
                false,
            )
            .unwrap_err();
            assert!(
                format!("{e:#}").contains("domain 1 destroyed"),
                "{step}: {e:#}"
            );
            assert_eq!(hv.domains.len(), 1, "{step}: only dom0 left");
            assert!(st.introduced.is_empty(), "{step}");
            let after = keys(&st);
            assert_eq!(before, after, "{step}: xenstore restored");
        }
        // A xenstore failure too.
        let (mut hv, mut st, k) = setup();
        st.fail_write_containing = Some("console/type".into());
        assert!(create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg(CFG),
            &inputs(&k),
            false
        )
        .is_err());
        assert_eq!(hv.domains.len(), 1);
        assert!(st.directory("/local/domain").unwrap() == ["0"]);
    }

    const CFG_DEV: &str = "name='g1'\nkernel='k'\nmemory=64\n\
        disk=['file:/img/a.img,xvda,w', 'phy:/dev/sdb,xvdb,r', '/img/b.img,,xvdc']\n\
        vif=['bridge=br9', 'mac=00:16:3e:aa:bb:cc,vifname=g1net']\n";

    #[test]
    fn create_attaches_devices_before_starting() {
        let (mut hv, mut st, k) = setup();
        let mut host = FakeHost::default();
        let c = create(
            &mut hv,
            &mut st,
            &mut host,
            &cfg(CFG_DEV),
            &inputs(&k),
            false,
        )
        .unwrap();
        assert_eq!(c.domid, 1);
        assert_eq!(hv.domains[&1].pause, 0);
        for (devid, mode, pdev) in [
            (51712, "w", "7:0"),
            (51728, "r", "8:10"),
            (51744, "w", "7:1"),
        ] {
            let be = format!("/local/domain/0/backend/vbd/1/{devid}");
            assert_eq!(st.value(&format!("{be}/mode")).unwrap(), mode);
            assert_eq!(st.value(&format!("{be}/physical-device")).unwrap(), pdev);
            assert_eq!(
                st.value(&format!(
                    "/local/domain/1/device/vbd/{devid}/virtual-device"
                ))
                .unwrap(),
                devid.to_string()
            );
        }
        assert_eq!(host.loops.len(), 2);
        // The generated MAC for vif 0, the configured one for vif 1.
        let mac = |i: u32| {
            st.value(&format!("/local/domain/1/device/vif/{i}/mac"))
                .unwrap()
        };
        assert_eq!(mac(0), "00:16:3e:00:00:01");
        assert_eq!(mac(1), "00:16:3e:aa:bb:cc");
        assert_eq!(
            st.value("/local/domain/0/backend/vif/1/1/hotplug-status")
                .unwrap(),
            "connected"
        );
        assert_eq!(host.netdevs["vif1.0"].master.as_deref(), Some("br9"));
        assert_eq!(host.netdevs["g1net"].master.as_deref(), Some("xenbr0"));
        // Teardown: devices, then the domain; nothing left.
        let errs = teardown(&mut hv, &mut st, &mut host, 1);
        assert!(errs.is_empty(), "{errs:?}");
        assert!(!hv.domains.contains_key(&1));
        let pause = hv.calls.iter().rposition(|c| c == "pause 1").unwrap();
        let destroy = hv.calls.iter().position(|c| c == "destroy 1").unwrap();
        assert!(pause < destroy);
        assert!(host.loops.is_empty());
        assert!(host.ports().is_empty());
        let left: Vec<_> = st
            .nodes
            .keys()
            .filter(|k| k.contains("/backend") || k.starts_with("/local/domain/1"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_failing_device_leaves_nothing_behind() {
        for case in [
            "loop_attach",
            "bridge_add",
            "set_up",
            "vif stuck",
            "vbd stuck",
            "store vif",
            "store vbd",
            "no bridge",
            "unpause",
        ] {
            let (mut hv, mut st, k) = setup();
            let mut host = FakeHost::default();
            let mut text = CFG_DEV.to_string();
            match case {
                "loop_attach" => {
                    // The second image file fails, after one loop and the phy disk.
                    host.targets.remove("/img/b.img");
                }
                "bridge_add" => host.fail = Some("bridge_add"),
                "set_up" => host.fail = Some("set_up"),
                "vif stuck" => st.stuck.push("/vif/1/1".into()),
                "vbd stuck" => st.stuck.push("/vbd/1/51744".into()),
                "store vif" => st.fail_write_containing = Some("vif/1/1/mac".into()),
                "store vbd" => st.fail_write_containing = Some("vbd/1/51728/params".into()),
                "no bridge" => text = text.replace("br9", "nobr"),
                _ => hv.fail = Some("unpause"),
            }
            let before = st.nodes.clone();
            let e =
                create(&mut hv, &mut st, &mut host, &cfg(&text), &inputs(&k), false).unwrap_err();
            assert!(
                format!("{e:#}").contains("domain 1 destroyed"),
                "{case}: {e:#}"
            );
            assert_eq!(hv.domains.len(), 1, "{case}: only dom0 left");
            assert!(
                !hv.calls.iter().any(|c| c == "unpause 1") || case == "unpause",
                "{case}"
            );
            let after: Vec<_> = st
                .nodes
                .keys()
                .filter(|k| !before.contains_key(*k))
                .collect();
            let after: Vec<_> = after
                .into_iter()
                .filter(|k| *k != "/vm" && *k != "/libxl")
                .collect();
            assert!(after.is_empty(), "{case}: {after:?}");
            assert!(host.loops.is_empty(), "{case}: {:?}", host.loops);
            assert!(host.ports().is_empty(), "{case}: {:?}", host.ports());
        }
    }

    #[test]
    fn refusals_before_anything_exists() {
        let (mut hv, mut st, k) = setup();
        // Too much memory.
        let e = create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg("name='a'\nkernel='k'\nmemory=4096\n"),
            &inputs(&k),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not enough free memory"), "{e}");
        // Duplicate name.
        create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg(CFG),
            &inputs(&k),
            false,
        )
        .unwrap();
        let e = create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg(CFG),
            &inputs(&k),
            false,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "domain `g1` already exists (id 1)");
        let e = create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg("name='Domain-0'\nkernel='k'\n"),
            &inputs(&k),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("already exists (id 0)"));
        // No PVH note.
        let bad = tiny_kernel(&[0x90; 8], 8, None);
        let e = create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg("name='b'\nkernel='/k'\n"),
            &inputs(&bad),
            false,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("kernel /k: not a PVH kernel"),
            "{e:#}"
        );
        // A bad disk item is refused by the parser, naming it.
        let e = xlcfg::parse_with_overrides("t.cfg", "name='c'\nkernel='k'\ndisk=['x']\n", &[])
            .unwrap_err();
        assert!(
            e.to_string().contains("`disk` item 1 (`x`): no vdev"),
            "{e}"
        );
        assert_eq!(hv.domains.len(), 2, "nothing created by the refusals");
        assert!(!hv
            .calls
            .iter()
            .any(|c| c.starts_with("create_domain b") || c.starts_with("create_domain c")));
    }

    #[test]
    fn resolve_by_name_or_id_and_teardown() {
        let (mut hv, mut st, k) = setup();
        create(
            &mut hv,
            &mut st,
            &mut FakeHost::default(),
            &cfg(CFG),
            &inputs(&k),
            false,
        )
        .unwrap();
        assert_eq!(resolve(&mut hv, &mut st, "g1").unwrap(), 1);
        assert_eq!(resolve(&mut hv, &mut st, "1").unwrap(), 1);
        assert_eq!(resolve(&mut hv, &mut st, "Domain-0").unwrap(), 0);
        assert!(resolve(&mut hv, &mut st, "7")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(resolve(&mut hv, &mut st, "nope")
            .unwrap_err()
            .to_string()
            .contains("no domain named"));
        teardown(&mut hv, &mut st, &mut FakeHost::default(), 1);
        assert!(!hv.domains.contains_key(&1));
        assert!(st.directory("/vm").unwrap().is_empty());
        assert!(st.directory("/libxl").unwrap().is_empty());
        assert!(st.value("/local/domain/1/name").is_none());
    }
}
