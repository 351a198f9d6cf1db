//! What Xen's hotplug scripts (`block`, `vif-bridge`) do in the backend domain, done by
//! xl itself: loop devices for image files, the bridge port for a vif. Behind the `Host`
//! trait so the device logic runs against a fake in tests.
#![allow(unsafe_code)]

use std::io;
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

/// What a disk target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A block device with these numbers.
    Block { major: u32, minor: u32 },
    /// A regular file (served through a loop device).
    File,
}

/// A bound loop device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loop {
    pub node: String,
    pub major: u32,
    pub minor: u32,
}

/// How long to wait for backends (libxl: `LIBXL_INIT_TIMEOUT`, `LIBXL_DESTROY_TIMEOUT`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For a new backend to reach InitWait and, for a vif, its interface to appear.
    pub up: Duration,
    /// For a backend to reach Closed when removed.
    pub close: Duration,
    /// Between two looks.
    pub poll: Duration,
}

/// dom0's kernel facilities the device code uses.
pub trait Host {
    fn timeouts(&self) -> Timeouts;
    fn sleep(&mut self, d: Duration);
    /// What `path` is (an error when neither a block device nor a regular file).
    fn target(&mut self, path: &str) -> io::Result<Target>;
    /// Binds a free loop device to `file`, read-only when asked.
    fn loop_attach(&mut self, file: &str, read_only: bool) -> io::Result<Loop>;
    /// Unbinds a loop device xl bound to `file`.
    fn loop_detach(&mut self, node: &str, file: &str) -> io::Result<()>;
    fn netdev_exists(&mut self, name: &str) -> bool;
    fn is_bridge(&mut self, name: &str) -> bool;
    fn mtu(&mut self, name: &str) -> io::Result<u32>;
    fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()>;
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn set_up(&mut self, name: &str) -> io::Result<()>;
    /// The bridge `name` is a port of, if any.
    fn bridge_of(&mut self, name: &str) -> Option<String>;
    fn bridge_add(&mut self, bridge: &str, dev: &str) -> io::Result<()>;
    fn bridge_del(&mut self, bridge: &str, dev: &str) -> io::Result<()>;
}

/// The real thing: sysfs and the ioctls in `linux`.
pub struct RealHost;

fn dev_major(rdev: u64) -> u32 {
    (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32
}

fn sys_net(name: &str, attr: &str) -> String {
    format!("/sys/class/net/{name}/{attr}")
}

impl RealHost {
    fn ifindex(name: &str) -> io::Result<i32> {
        std::fs::read_to_string(sys_net(name, "ifindex"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ifindex"))
    }

    fn try_loop(file: &str, read_only: bool) -> io::Result<Loop> {
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let backing = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(file)?;
        let n = crate::linux::loop_get_free(&control)?;
        let node = format!("/dev/loop{n}");
        let dev = crate::linux::open_loop(&node, read_only)?;
        crate::linux::loop_set_fd(&dev, &backing)?;
        if let Err(e) = crate::linux::loop_set_status(&dev, file) {
            let _ = crate::linux::loop_clr_fd(&dev);
            return Err(e);
        }
        let md = std::fs::metadata(&node)?;
        Ok(Loop {
            node,
            major: dev_major(md.st_rdev()),
            minor: dev_minor(md.st_rdev()),
        })
    }
}

impl Host for RealHost {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            up: Duration::from_secs(10),
            close: Duration::from_secs(10),
            // A backend reaches InitWait, and netback's interface appears, within a few
            // ms of dom0 CPU: 100 ms polls cost `xl create` up to 0.1 s per wait (three
            // for a disk and a vif), 20 ms polls at most a fifth of that, for a xenstore
            // read or a stat each.
            poll: Duration::from_millis(20),
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn target(&mut self, path: &str) -> io::Result<Target> {
        let md = std::fs::metadata(path)?;
        let ft = md.file_type();
        if ft.is_block_device() {
            Ok(Target::Block {
                major: dev_major(md.st_rdev()),
                minor: dev_minor(md.st_rdev()),
            })
        } else if ft.is_file() {
            Ok(Target::File)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither a block device nor a regular file",
            ))
        }
    }

    fn loop_attach(&mut self, file: &str, read_only: bool) -> io::Result<Loop> {
        // Another process may take the free device between GET_FREE and SET_FD.
        let mut last = None;
        for _ in 0..8 {
            match Self::try_loop(file, read_only) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)))
    }

    fn loop_detach(&mut self, node: &str, file: &str) -> io::Result<()> {
        let Some(name) = node.strip_prefix("/dev/") else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a /dev node",
            ));
        };
        // Only unbind it if it still serves this file (it may have been detached and
        // reused by someone else meanwhile).
        match std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) {
            Ok(b) => {
                let want = std::fs::canonicalize(file)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| file.to_string());
                let b = b.trim();
                if b != want && b != file && b.trim_end_matches(" (deleted)") != want {
                    return Err(io::Error::other(format!(
                        "{node} now serves {b}, not {file}; left alone"
                    )));
                }
            }
            // Not bound any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let dev = std::fs::File::open(node)?;
        match crate::linux::loop_clr_fd(&dev) {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
            r => r,
        }
    }

    fn netdev_exists(&mut self, name: &str) -> bool {
        !name.contains('/') && Path::new(&sys_net(name, "ifindex")).exists()
    }

    fn is_bridge(&mut self, name: &str) -> bool {
        !name.contains('/') && Path::new(&sys_net(name, "bridge")).is_dir()
    }

    fn mtu(&mut self, name: &str) -> io::Result<u32> {
        std::fs::read_to_string(sys_net(name, "mtu"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad mtu"))
    }

    fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()> {
        crate::linux::set_mtu(name, mtu)
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        crate::linux::rename(from, to)
    }

    fn set_up(&mut self, name: &str) -> io::Result<()> {
        crate::linux::set_up(name)
    }

    fn bridge_of(&mut self, name: &str) -> Option<String> {
        let link = std::fs::read_link(sys_net(name, "brport/bridge")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    fn bridge_add(&mut self, bridge: &str, dev: &str) -> io::Result<()> {
        crate::linux::bridge_if(bridge, Self::ifindex(dev)?, true)
    }

    fn bridge_del(&mut self, bridge: &str, dev: &str) -> io::Result<()> {
        crate::linux::bridge_if(bridge, Self::ifindex(dev)?, false)
    }
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct NetDev {
        pub mtu: u32,
        pub up: bool,
        pub master: Option<String>,
    }

    /// A fake dom0: files, block devices, loop devices, interfaces and bridges.
    pub struct FakeHost {
        pub targets: BTreeMap<String, Target>,
        /// Bound loops: node → (file, read-only).
        pub loops: BTreeMap<String, (String, bool)>,
        pub netdevs: BTreeMap<String, NetDev>,
        /// Bridges and their MTU.
        pub bridges: BTreeMap<String, u32>,
        /// netback creates `vif*` interfaces as soon as they are looked for.
        pub auto_vif: bool,
        /// `bridge_del` finds the interface gone (netback unregistered it meanwhile).
        pub vanish_on_bridge_del: bool,
        /// `bridge_del` fails with EINVAL this many more times, the port staying.
        pub bridge_del_failures: u32,
        /// Fail the call with this name.
        pub fail: Option<&'static str>,
        pub calls: Vec<String>,
    }

    impl Default for FakeHost {
        fn default() -> Self {
            let mut h = FakeHost {
                targets: BTreeMap::new(),
                loops: BTreeMap::new(),
                netdevs: BTreeMap::new(),
                bridges: BTreeMap::new(),
                auto_vif: true,
                vanish_on_bridge_del: false,
                bridge_del_failures: 0,
                fail: None,
                calls: Vec::new(),
            };
            h.targets.insert("/img/a.img".into(), Target::File);
            h.targets.insert("/img/b.img".into(), Target::File);
            h.targets.insert(
                "/dev/sdb".into(),
                Target::Block {
                    major: 8,
                    minor: 16,
                },
            );
            h.bridges.insert("xenbr0".into(), 1500);
            h.bridges.insert("br9".into(), 9000);
            h
        }
    }

    impl FakeHost {
        fn step(&mut self, name: &'static str, detail: String) -> io::Result<()> {
            self.calls.push(format!("{name} {detail}"));
            if self.fail == Some(name) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            Ok(())
        }

        fn dev(&mut self, name: &str) -> io::Result<&mut NetDev> {
            self.netdevs
                .get_mut(name)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
        }

        /// Interfaces enslaved to a bridge.
        pub fn ports(&self) -> Vec<(String, String)> {
            self.netdevs
                .iter()
                .filter_map(|(n, d)| d.master.clone().map(|m| (n.clone(), m)))
                .collect()
        }
    }

    impl Host for FakeHost {
        fn timeouts(&self) -> Timeouts {
            Timeouts {
                up: Duration::from_millis(30),
                close: Duration::from_millis(30),
                poll: Duration::from_millis(1),
            }
        }
        fn sleep(&mut self, d: Duration) {
            std::thread::sleep(d);
        }
        fn target(&mut self, path: &str) -> io::Result<Target> {
            self.targets
                .get(path)
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }
        fn loop_attach(&mut self, file: &str, read_only: bool) -> io::Result<Loop> {
            self.step("loop_attach", format!("{file} {read_only}"))?;
            let n = (0..).find(|n| !self.loops.contains_key(&format!("/dev/loop{n}")));
            let n: u32 = n.expect("a free number");
            let node = format!("/dev/loop{n}");
            self.loops.insert(node.clone(), (file.into(), read_only));
            Ok(Loop {
                node,
                major: 7,
                minor: n,
            })
        }
        fn loop_detach(&mut self, node: &str, file: &str) -> io::Result<()> {
            self.step("loop_detach", format!("{node} {file}"))?;
            match self.loops.get(node) {
                Some((f, _)) if f == file => {
                    self.loops.remove(node);
                    Ok(())
                }
                Some(_) => Err(io::Error::from_raw_os_error(libc::EBUSY)),
                None => Ok(()),
            }
        }
        fn netdev_exists(&mut self, name: &str) -> bool {
            if self.auto_vif && name.starts_with("vif") && !self.netdevs.contains_key(name) {
                self.netdevs.insert(
                    name.into(),
                    NetDev {
                        mtu: 1500,
                        ..Default::default()
                    },
                );
            }
            self.netdevs.contains_key(name)
        }
        fn is_bridge(&mut self, name: &str) -> bool {
            self.bridges.contains_key(name)
        }
        fn mtu(&mut self, name: &str) -> io::Result<u32> {
            if let Some(m) = self.bridges.get(name) {
                return Ok(*m);
            }
            Ok(self.dev(name)?.mtu)
        }
        fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()> {
            self.step("set_mtu", format!("{name} {mtu}"))?;
            self.dev(name)?.mtu = mtu;
            Ok(())
        }
        fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
            self.step("rename", format!("{from} {to}"))?;
            let d = self
                .netdevs
                .remove(from)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
            self.netdevs.insert(to.into(), d);
            Ok(())
        }
        fn set_up(&mut self, name: &str) -> io::Result<()> {
            self.step("set_up", name.into())?;
            self.dev(name)?.up = true;
            Ok(())
        }
        fn bridge_of(&mut self, name: &str) -> Option<String> {
            self.netdevs.get(name).and_then(|d| d.master.clone())
        }
        fn bridge_add(&mut self, bridge: &str, dev: &str) -> io::Result<()> {
            self.step("bridge_add", format!("{bridge} {dev}"))?;
            self.dev(dev)?.master = Some(bridge.into());
            Ok(())
        }
        fn bridge_del(&mut self, bridge: &str, dev: &str) -> io::Result<()> {
            if self.vanish_on_bridge_del {
                // The interface is unregistered under us, as netback does.
                self.netdevs.remove(dev);
            }
            self.step("bridge_del", format!("{bridge} {dev}"))?;
            if self.bridge_del_failures > 0 {
                self.bridge_del_failures -= 1;
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.dev(dev)?.master = None;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        // makedev(7, 3) and makedev(259, 0x12345).
        assert_eq!((dev_major(0x703), dev_minor(0x703)), (7, 3));
        let big = (0x12345u64 & 0xff) | ((0x12345u64 & !0xff) << 12) | (259 << 8);
        assert_eq!((dev_major(big), dev_minor(big)), (259, 0x12345));
    }

    /// A real loop device on a temporary file; only as root with /dev/loop-control.
    #[test]
    fn real_loop_attach_and_detach() {
        // SAFETY: geteuid has no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !Path::new("/dev/loop-control").exists() {
            eprintln!("skipped: needs root and /dev/loop-control");
            return;
        }
        let dir = std::env::temp_dir().join(format!("xl-loop-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("disk.img");
        std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
        let file = file.to_string_lossy().into_owned();
        let mut h = RealHost;
        assert_eq!(h.target(&file).unwrap(), Target::File);
        for ro in [false, true] {
            let l = match h.loop_attach(&file, ro) {
                Ok(l) => l,
                Err(e) => {
                    // Containers may show /dev/loop-control without usable loop devices.
                    eprintln!("skipped: loop_attach: {e}");
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
            };
            assert_eq!(l.major, 7);
            let name = l.node.trim_start_matches("/dev/");
            let sys = format!("/sys/block/{name}/ro");
            if let Ok(v) = std::fs::read_to_string(&sys) {
                assert_eq!(v.trim(), if ro { "1" } else { "0" }, "{sys}");
            }
            assert_eq!(
                h.target(&l.node).unwrap(),
                Target::Block {
                    major: 7,
                    minor: l.minor
                }
            );
            // Not detached when asked about another file.
            assert!(h.loop_detach(&l.node, "/nonexistent").is_err());
            h.loop_detach(&l.node, &file).unwrap();
            let bf = format!("/sys/block/{name}/loop/backing_file");
            assert!(!Path::new(&bf).exists(), "{bf} still bound");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
