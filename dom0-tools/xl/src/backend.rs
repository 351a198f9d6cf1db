//! The real hypervisor (`xenctrl`) and xenstore behind the `Hv` and `Store` traits.

use crate::hv::{CreateSpec, DomainInfo, Hv, MemmapEntry, PhysInfo, SchedParams, VcpuInfo};
use crate::store::{Access, Perm, Store, StoreError, StoreResult};
use anyhow::{Context, Result};
use std::io;
use xenctrl::Toolstack;

/// Opens `/dev/xen/privcmd` through `xenctrl`.
pub fn open_hv() -> Result<Box<dyn Hv>> {
    Ok(Box::new(Toolstack::open().context(
        "opening the hypervisor interface (is this dom0 with /dev/xen/privcmd?)",
    )?))
}

/// Connects to xenstored.
pub fn open_store() -> Result<Box<dyn Store + Send>> {
    let c = xenstore::Client::connect()
        .context("connecting to xenstored (is it running? /var/run/xenstored/socket)")?;
    Ok(Box::new(RealStore { c, tx: 0 }))
}

/// The `xenstore` crate's client; `tx` is the open transaction (0: none).
struct RealStore {
    c: xenstore::Client,
    tx: u32,
}

fn xerr(op: &'static str, path: &str, e: &xenstore::Error) -> StoreError {
    StoreError {
        op,
        path: path.to_string(),
        name: e.name().map_or_else(|| e.to_string(), str::to_string),
    }
}

fn is_enoent(e: &xenstore::Error) -> bool {
    e.name() == Some("ENOENT")
}

fn to_perm(p: &Perm) -> xenstore::Perm {
    let access = match p.access {
        Access::None => xenstore::Access::None,
        Access::Read => xenstore::Access::Read,
        Access::Write => xenstore::Access::Write,
        Access::Both => xenstore::Access::Both,
    };
    xenstore::Perm::new(p.domid, access)
}

impl Store for RealStore {
    fn read(&mut self, path: &str) -> StoreResult<Option<Vec<u8>>> {
        match self.c.read(self.tx, path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_enoent(&e) => Ok(None),
            Err(e) => Err(xerr("read", path, &e)),
        }
    }
    fn write(&mut self, path: &str, value: &[u8]) -> StoreResult<()> {
        self.c
            .write(self.tx, path, value)
            .map_err(|e| xerr("write", path, &e))
    }
    fn mkdir(&mut self, path: &str) -> StoreResult<()> {
        self.c
            .mkdir(self.tx, path)
            .map_err(|e| xerr("mkdir", path, &e))
    }
    fn rm(&mut self, path: &str) -> StoreResult<()> {
        match self.c.rm(self.tx, path) {
            Err(e) if !is_enoent(&e) => Err(xerr("rm", path, &e)),
            _ => Ok(()),
        }
    }
    fn directory(&mut self, path: &str) -> StoreResult<Vec<String>> {
        match self.c.directory(self.tx, path) {
            Ok(v) => Ok(v),
            Err(e) if is_enoent(&e) => Ok(Vec::new()),
            Err(e) => Err(xerr("directory", path, &e)),
        }
    }
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> StoreResult<()> {
        let p: Vec<_> = perms.iter().map(to_perm).collect();
        self.c
            .set_perms(self.tx, path, &p)
            .map_err(|e| xerr("set_perms", path, &e))
    }
    fn introduce(&mut self, domid: u16, gfn: u64, port: u32) -> StoreResult<()> {
        self.c
            .introduce(domid, gfn, port)
            .map_err(|e| xerr("introduce", &format!("domain {domid}"), &e))
    }
    fn release(&mut self, domid: u16) -> StoreResult<()> {
        self.c
            .release(domid)
            .map_err(|e| xerr("release", &format!("domain {domid}"), &e))
    }
    fn watch(&mut self, path: &str, token: &str) -> StoreResult<()> {
        self.c
            .watch(path, token)
            .map_err(|e| xerr("watch", path, &e))
    }
    fn read_watch(&mut self) -> StoreResult<(String, String)> {
        self.c.read_watch().map_err(|e| xerr("read_watch", "", &e))
    }
    fn transaction_start(&mut self) -> StoreResult<()> {
        self.tx = self
            .c
            .transaction_start()
            .map_err(|e| xerr("transaction_start", "", &e))?;
        Ok(())
    }
    fn transaction_end(&mut self, commit: bool) -> StoreResult<bool> {
        let tx = std::mem::take(&mut self.tx);
        match self.c.transaction_end(tx, commit) {
            Ok(()) => Ok(true),
            Err(e) if e.is_again() => Ok(false),
            Err(e) => Err(xerr("transaction_end", "", &e)),
        }
    }
}

impl Hv for Toolstack {
    fn create_domain(&mut self, s: &CreateSpec) -> io::Result<u16> {
        Toolstack::create_domain(self, s)
    }
    fn populate(&mut self, domid: u16, target_kib: u64) -> io::Result<()> {
        Toolstack::populate(self, domid, target_kib)
    }
    fn copy_to(&mut self, domid: u16, gpa: u64, data: &[u8]) -> io::Result<()> {
        Toolstack::copy_to(self, domid, gpa, data)
    }
    fn set_memmap(&mut self, domid: u16, map: &[MemmapEntry]) -> io::Result<()> {
        Toolstack::set_memmap(self, domid, map)
    }
    fn set_vcpu_boot(&mut self, domid: u16, vcpu: u32, rip: u64, rbx: u64) -> io::Result<()> {
        Toolstack::set_vcpu_boot(self, domid, vcpu, rip, rbx)
    }
    fn seed_grant(
        &mut self,
        domid: u16,
        gref: u32,
        flags: u16,
        to: u16,
        frame: u64,
    ) -> io::Result<()> {
        Toolstack::seed_grant(self, domid, gref, flags, to, frame)
    }
    fn pause(&mut self, domid: u16) -> io::Result<()> {
        Toolstack::pause(self, domid)
    }
    fn unpause(&mut self, domid: u16) -> io::Result<()> {
        Toolstack::unpause(self, domid)
    }
    fn destroy(&mut self, domid: u16) -> io::Result<()> {
        Toolstack::destroy(self, domid)
    }
    fn shutdown(&mut self, domid: u16, reason: u32) -> io::Result<()> {
        Toolstack::shutdown(self, domid, reason)
    }
    fn domain_info(&mut self, domid: u16) -> io::Result<Option<DomainInfo>> {
        Toolstack::domain_info(self, domid)
    }
    fn list_domains(&mut self) -> io::Result<Vec<DomainInfo>> {
        Toolstack::list_domains(self)
    }
    fn console_read(&mut self, pos: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
        Toolstack::console_read(self, pos, max)
    }
    fn physinfo(&mut self) -> io::Result<PhysInfo> {
        Toolstack::physinfo(self)
    }
    fn sched_get(&mut self, domid: u16) -> io::Result<SchedParams> {
        Toolstack::sched_get(self, domid)
    }
    fn sched_set(&mut self, domid: u16, weight: u16, cap: u16) -> io::Result<()> {
        Toolstack::sched_set(self, domid, weight, cap)
    }
    fn vcpu_info(&mut self, domid: u16, vcpu: u32) -> io::Result<VcpuInfo> {
        Toolstack::vcpu_info(self, domid, vcpu)
    }
    fn set_affinity(&mut self, domid: u16, vcpu: u32, hard: u64, soft: u64) -> io::Result<()> {
        Toolstack::set_affinity(self, domid, vcpu, hard, soft)
    }
    fn set_hvm_param(&mut self, domid: u16, index: u32, value: u64) -> io::Result<()> {
        Toolstack::set_hvm_param(self, domid, index, value)
    }
    fn alloc_unbound(&mut self, domid: u16, remote: u16) -> io::Result<u32> {
        Toolstack::alloc_unbound(self, domid, remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create;

    /// Against a running xenstored (`xenstored -N --socket PATH`) named by
    /// `XL_TEST_XENSTORED`; skipped without it.
    #[test]
    fn layout_and_teardown_against_a_real_xenstored() {
        let Ok(sock) = std::env::var("XL_TEST_XENSTORED") else {
            return;
        };
        let c = xenstore::Client::connect_to(std::path::Path::new(&sock)).unwrap();
        let mut st = RealStore { c, tx: 0 };
        let cfg = xlcfg::parse_with_overrides("t", "name='x'\nkernel='k'\nvcpus=2\n", &[]).unwrap();
        let k = crate::image::tests::tiny_kernel(&[0x90; 16], 16, Some(0x10_0000));
        let img = crate::image::build(&k, None, "", 16 << 20, 2).unwrap();
        create::write_store(&mut st, &cfg, 7, [9; 16], 1, &img, 3, 4).unwrap();
        assert_eq!(st.read_str("/local/domain/7/name").unwrap().unwrap(), "x");
        assert_eq!(
            st.read_str("/local/domain/7/console/port")
                .unwrap()
                .unwrap(),
            "3"
        );
        assert_eq!(st.read_str("/local/domain/7/memory/target").unwrap(), None);
        let perms = |st: &mut RealStore, p: &str| {
            st.c.get_perms(0, p)
                .unwrap()
                .iter()
                .map(|p| format!("{}{}", p.access.letter(), p.domid))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(perms(&mut st, "/local/domain/7"), "n0,r7");
        assert_eq!(perms(&mut st, "/local/domain/7/console/ring-ref"), "n0,r7");
        assert_eq!(perms(&mut st, "/local/domain/7/control/shutdown"), "n7");
        assert_eq!(perms(&mut st, "/local/domain/7/data"), "n7");
        let mut hv = crate::hv::fake::FakeHv::new(64);
        create::teardown(
            &mut hv,
            &mut st,
            &mut crate::hotplug::fake::FakeHost::default(),
            7,
        );
        assert!(st.directory("/local/domain/7").unwrap().is_empty());
        assert_eq!(st.read("/local/domain/7/name").unwrap(), None);
        assert!(st.directory("/vm").unwrap().is_empty());
    }

    /// Device nodes in a real transaction and their permissions; skipped without
    /// `XL_TEST_XENSTORED`.
    #[test]
    fn device_nodes_against_a_real_xenstored() {
        let Ok(sock) = std::env::var("XL_TEST_XENSTORED") else {
            return;
        };
        use crate::device::{self, Kind};
        let c = xenstore::Client::connect_to(std::path::Path::new(&sock)).unwrap();
        let mut st = RealStore { c, tx: 0 };
        st.mkdir("/local/domain/8/device").unwrap();
        let fe = [
            ("state", "1".to_string()),
            ("virtual-device", "51712".into()),
        ];
        let be = [
            ("state", "1".to_string()),
            ("physical-device", "7:0".into()),
        ];
        device::write_device(&mut st, 8, Kind::Vbd, 51712, &fe, &be).unwrap();
        let perms = |st: &mut RealStore, p: &str| {
            st.c.get_perms(0, p)
                .unwrap()
                .iter()
                .map(|p| format!("{}{}", p.access.letter(), p.domid))
                .collect::<Vec<_>>()
                .join(",")
        };
        let fep = "/local/domain/8/device/vbd/51712";
        let bep = "/local/domain/0/backend/vbd/8/51712";
        assert_eq!(perms(&mut st, fep), "n8,r0");
        assert_eq!(perms(&mut st, &format!("{fep}/virtual-device")), "n8,r0");
        assert_eq!(perms(&mut st, bep), "n0,r8");
        assert_eq!(perms(&mut st, &format!("{bep}/physical-device")), "n0,r8");
        assert_eq!(
            st.read_str(&format!("{fep}/backend")).unwrap().unwrap(),
            bep
        );
        assert_eq!(
            st.read_str(&format!("{bep}/frontend")).unwrap().unwrap(),
            fep
        );
        // A second add of the same device is refused, inside the transaction.
        assert!(device::write_device(&mut st, 8, Kind::Vbd, 51712, &fe, &be).is_err());
        assert_eq!(st.tx, 0);
        let errs = device::remove_all(&mut st, &mut crate::hotplug::fake::FakeHost::default(), 8);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(st.read(&format!("{bep}/state")).unwrap(), None);
        assert_eq!(st.read(&format!("{fep}/state")).unwrap(), None);
        assert!(st.directory("/local/domain/0/backend").unwrap().is_empty());
        st.rm("/local/domain/8").unwrap();
    }
}
