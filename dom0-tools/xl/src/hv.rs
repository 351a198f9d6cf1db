//! Hypervisor access behind a trait (the calls of `xenctrl::Toolstack` that xl uses),
//! so `create` and the formatters are tested against a fake.

use std::io;
pub use xen_abi::fvctl::{DomainInfo, MemmapEntry, PhysInfo, SchedParams, VcpuInfo};

/// What `create_domain` needs.
pub use xenctrl::CreateSpec;

pub trait Hv {
    fn create_domain(&mut self, spec: &CreateSpec) -> io::Result<u16>;
    fn populate(&mut self, domid: u16, target_kib: u64) -> io::Result<()>;
    fn copy_to(&mut self, domid: u16, gpa: u64, data: &[u8]) -> io::Result<()>;
    fn set_memmap(&mut self, domid: u16, map: &[MemmapEntry]) -> io::Result<()>;
    fn set_vcpu_boot(&mut self, domid: u16, vcpu: u32, rip: u64, rbx: u64) -> io::Result<()>;
    fn seed_grant(
        &mut self,
        domid: u16,
        gref: u32,
        flags: u16,
        to: u16,
        frame: u64,
    ) -> io::Result<()>;
    fn pause(&mut self, domid: u16) -> io::Result<()>;
    fn unpause(&mut self, domid: u16) -> io::Result<()>;
    fn destroy(&mut self, domid: u16) -> io::Result<()>;
    fn shutdown(&mut self, domid: u16, reason: u32) -> io::Result<()>;
    fn domain_info(&mut self, domid: u16) -> io::Result<Option<DomainInfo>>;
    fn list_domains(&mut self) -> io::Result<Vec<DomainInfo>>;
    fn console_read(&mut self, pos: u64, max: usize) -> io::Result<(Vec<u8>, u64)>;
    fn physinfo(&mut self) -> io::Result<PhysInfo>;
    fn sched_get(&mut self, domid: u16) -> io::Result<SchedParams>;
    fn sched_set(&mut self, domid: u16, weight: u16, cap: u16) -> io::Result<()>;
    fn vcpu_info(&mut self, domid: u16, vcpu: u32) -> io::Result<VcpuInfo>;
    fn set_affinity(&mut self, domid: u16, vcpu: u32, hard: u64, soft: u64) -> io::Result<()>;
    fn set_hvm_param(&mut self, domid: u16, index: u32, value: u64) -> io::Result<()>;
    fn alloc_unbound(&mut self, domid: u16, remote: u16) -> io::Result<u32>;
}

/// The name in a `DomainInfo` (NUL-padded).
pub fn info_name(d: &DomainInfo) -> String {
    let end = d.name.iter().position(|&b| b == 0).unwrap_or(d.name.len());
    String::from_utf8_lossy(&d.name[..end]).into_owned()
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::BTreeMap;
    use xen_abi::fvctl::dominfo;

    /// A fake hypervisor: domains with RAM, recorded calls, injectable failures.
    #[derive(Default)]
    pub struct FakeHv {
        pub domains: BTreeMap<u16, FakeDom>,
        pub calls: Vec<String>,
        pub free_kib: u64,
        /// Fail the call whose name equals this.
        pub fail: Option<&'static str>,
        pub next_port: u32,
    }

    #[derive(Default)]
    pub struct FakeDom {
        pub info: DomainInfo,
        pub ram: Vec<u8>,
        pub memmap: Vec<MemmapEntry>,
        pub boot: Option<(u64, u64)>,
        pub grants: BTreeMap<u32, (u16, u16, u64)>,
        pub params: BTreeMap<u32, u64>,
        pub pause: u32,
    }

    impl FakeHv {
        pub fn new(free_mib: u64) -> Self {
            let mut hv = FakeHv {
                free_kib: free_mib << 10,
                next_port: 1,
                ..Default::default()
            };
            let mut d0 = FakeDom::default();
            d0.info.flags = dominfo::CONTROL | dominfo::RUNNING;
            d0.info.tot_kib = 1 << 20;
            d0.info.nr_vcpus = 2;
            d0.info.online_vcpus = 2;
            d0.info.cpu_time_ns = 12_345_000_000;
            d0.info.weight = 256;
            hv.domains.insert(0, d0);
            hv
        }
        fn step(&mut self, name: &'static str, detail: String) -> io::Result<()> {
            self.calls.push(format!("{name} {detail}"));
            if self.fail == Some(name) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(())
        }
        fn dom(&mut self, domid: u16) -> io::Result<&mut FakeDom> {
            self.domains
                .get_mut(&domid)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
        }
    }

    impl Hv for FakeHv {
        fn create_domain(&mut self, spec: &CreateSpec) -> io::Result<u16> {
            self.step("create_domain", spec.name.clone())?;
            let id = (1..).find(|i| !self.domains.contains_key(i)).unwrap();
            let mut d = FakeDom::default();
            d.info.domid = id;
            d.info.flags = dominfo::PAUSED | dominfo::CREATING;
            d.info.nr_vcpus = spec.max_vcpus;
            d.info.max_kib = spec.max_mem_kib;
            d.info.weight = spec.weight;
            d.info.name[..spec.name.len().min(32)]
                .copy_from_slice(&spec.name.as_bytes()[..spec.name.len().min(32)]);
            d.pause = 1;
            self.domains.insert(id, d);
            Ok(id)
        }
        fn populate(&mut self, domid: u16, target_kib: u64) -> io::Result<()> {
            self.step("populate", format!("{domid} {target_kib}"))?;
            let d = self.dom(domid)?;
            d.ram = vec![0; (target_kib << 10) as usize];
            d.info.tot_kib = target_kib;
            Ok(())
        }
        fn copy_to(&mut self, domid: u16, gpa: u64, data: &[u8]) -> io::Result<()> {
            self.step("copy_to", format!("{domid} {gpa:#x} {}", data.len()))?;
            let d = self.dom(domid)?;
            let end = gpa as usize + data.len();
            if end > d.ram.len() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            d.ram[gpa as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn set_memmap(&mut self, domid: u16, map: &[MemmapEntry]) -> io::Result<()> {
            self.step("set_memmap", format!("{domid}"))?;
            self.dom(domid)?.memmap = map.to_vec();
            Ok(())
        }
        fn set_vcpu_boot(&mut self, domid: u16, vcpu: u32, rip: u64, rbx: u64) -> io::Result<()> {
            self.step("set_vcpu_boot", format!("{domid} {vcpu} {rip:#x} {rbx:#x}"))?;
            self.dom(domid)?.boot = Some((rip, rbx));
            Ok(())
        }
        fn seed_grant(
            &mut self,
            domid: u16,
            gref: u32,
            flags: u16,
            to: u16,
            frame: u64,
        ) -> io::Result<()> {
            self.step("seed_grant", format!("{domid} {gref}"))?;
            self.dom(domid)?.grants.insert(gref, (flags, to, frame));
            Ok(())
        }
        fn pause(&mut self, domid: u16) -> io::Result<()> {
            self.step("pause", format!("{domid}"))?;
            self.dom(domid)?.pause += 1;
            Ok(())
        }
        fn unpause(&mut self, domid: u16) -> io::Result<()> {
            self.step("unpause", format!("{domid}"))?;
            let d = self.dom(domid)?;
            d.pause = d.pause.saturating_sub(1);
            if d.pause == 0 {
                d.info.flags &= !(dominfo::PAUSED | dominfo::CREATING);
                d.info.flags |= dominfo::BLOCKED;
            }
            Ok(())
        }
        fn destroy(&mut self, domid: u16) -> io::Result<()> {
            self.step("destroy", format!("{domid}"))?;
            self.domains
                .remove(&domid)
                .map(|_| ())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
        }
        fn shutdown(&mut self, domid: u16, reason: u32) -> io::Result<()> {
            self.step("shutdown", format!("{domid} {reason}"))?;
            let d = self.dom(domid)?;
            d.info.flags |= dominfo::SHUTDOWN;
            d.info.shutdown_reason = reason;
            Ok(())
        }
        fn domain_info(&mut self, domid: u16) -> io::Result<Option<DomainInfo>> {
            Ok(self.domains.get(&domid).map(|d| d.info))
        }
        fn list_domains(&mut self) -> io::Result<Vec<DomainInfo>> {
            Ok(self
                .domains
                .iter()
                .map(|(id, d)| {
                    let mut i = d.info;
                    i.domid = *id;
                    i
                })
                .collect())
        }
        fn console_read(&mut self, pos: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
            let text = b"(XEN) ferrovisor booting\n(XEN) dom0 built\n";
            let start = (pos as usize).min(text.len());
            let end = (start + max).min(text.len());
            Ok((text[start..end].to_vec(), end as u64))
        }
        fn physinfo(&mut self) -> io::Result<PhysInfo> {
            Ok(PhysInfo {
                nr_cpus: 2,
                cpu_khz: 2_400_000,
                total_kib: 4 << 20,
                free_kib: self.free_kib,
                virt: 1,
                nr_domains: self.domains.len() as u32,
                uptime_ns: 3_723_000_000_000,
            })
        }
        fn sched_get(&mut self, domid: u16) -> io::Result<SchedParams> {
            let d = self.dom(domid)?;
            Ok(SchedParams {
                weight: d.info.weight,
                cap: d.info.cap,
                _pad: 0,
            })
        }
        fn sched_set(&mut self, domid: u16, weight: u16, cap: u16) -> io::Result<()> {
            self.step("sched_set", format!("{domid} {weight} {cap}"))?;
            let d = self.dom(domid)?;
            d.info.weight = weight;
            d.info.cap = cap;
            Ok(())
        }
        fn vcpu_info(&mut self, domid: u16, vcpu: u32) -> io::Result<VcpuInfo> {
            let d = self.dom(domid)?;
            if vcpu >= d.info.nr_vcpus {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(VcpuInfo {
                vcpu,
                flags: xen_abi::fvctl::vcpuinfo::ONLINE | xen_abi::fvctl::vcpuinfo::RUNNING,
                cpu: vcpu,
                _pad: 0,
                cpu_time_ns: 1_500_000_000,
                hard_affinity: u64::MAX,
                soft_affinity: u64::MAX,
            })
        }
        fn set_affinity(&mut self, domid: u16, vcpu: u32, hard: u64, soft: u64) -> io::Result<()> {
            self.step(
                "set_affinity",
                format!("{domid} {vcpu} {hard:#x} {soft:#x}"),
            )
        }
        fn set_hvm_param(&mut self, domid: u16, index: u32, value: u64) -> io::Result<()> {
            self.step("set_hvm_param", format!("{domid} {index} {value}"))?;
            self.dom(domid)?.params.insert(index, value);
            Ok(())
        }
        fn alloc_unbound(&mut self, domid: u16, remote: u16) -> io::Result<u32> {
            self.step("alloc_unbound", format!("{domid} {remote}"))?;
            self.next_port += 1;
            Ok(self.next_port)
        }
    }
}
