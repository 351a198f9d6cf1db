use super::*;

const BASIC: &str = r#"
# A Debian domU
name = "deb1"
type = "pvh"
kernel = "/boot/vmlinuz"
ramdisk = '/boot/initrd.img'
root = "/dev/xvda1 ro"
extra = "console=hvc0"
memory = 256
vcpus = 2
"#;

fn parse(text: &str) -> Result<DomainConfig, ConfigError> {
    parse_with_overrides("d.cfg", text, &[])
}

#[test]
fn basic_config_and_defaults() {
    let c = parse(BASIC).unwrap();
    assert_eq!(c.name, "deb1");
    assert_eq!(c.kernel, "/boot/vmlinuz");
    assert_eq!(c.ramdisk.as_deref(), Some("/boot/initrd.img"));
    assert_eq!(c.cmdline, "root=/dev/xvda1 ro console=hvc0");
    assert_eq!(c.memory_mib, 256);
    assert_eq!(c.maxmem_mib, 256);
    assert_eq!(c.vcpus, 2);
    assert_eq!(c.maxvcpus, 2);
    assert_eq!(c.cpus, None);
    assert_eq!(c.on_poweroff, Action::Destroy);
    assert_eq!(c.on_reboot, Action::Restart);
    assert_eq!(c.on_crash, Action::Destroy);
    assert!(c.warnings.is_empty());
    assert!(c.check_supported().is_ok());
}

#[test]
fn cmdline_combination_rule() {
    let base = "name='a'\nkernel='k'\n";
    let c = |extra: &str| parse(&format!("{base}{extra}")).unwrap();
    assert_eq!(c("").cmdline, "");
    assert_eq!(c("root='/dev/x'").cmdline, "root=/dev/x");
    assert_eq!(c("extra='quiet'").cmdline, "quiet");
    assert_eq!(c("root='r'\nextra='e'").cmdline, "root=r e");
    let w = c("cmdline='console=hvc0'\nroot='r'\nextra='e'");
    assert_eq!(w.cmdline, "console=hvc0");
    assert_eq!(w.warnings.len(), 1);
}

#[test]
fn type_pv_and_hvm_are_rejected_clearly() {
    for ty in ["hvm", "pv"] {
        let e = parse(&format!("name='a'\nkernel='k'\ntype = \"{ty}\"\n")).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not supported"), "{e}");
        assert!(e.message.contains("pvh"), "{e}");
    }
    let e = parse("name='a'\nkernel='k'\ntype='weird'\n").unwrap_err();
    assert!(e.message.contains("unknown domain type"));
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = parse("name='a'\nkernel='k'\n\nseclabel = 'x:y'\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "d.cfg:4: unknown or unsupported setting `seclabel`"
    );
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        parse("kernel='k'").unwrap_err().to_string(),
        "d.cfg: `name` is required"
    );
    assert_eq!(
        parse("name='a'").unwrap_err().to_string(),
        "d.cfg: `kernel` is required"
    );
}

#[test]
fn actions() {
    let c = parse(
        "name='a'\nkernel='k'\non_poweroff='preserve'\non_reboot='destroy'\non_crash='restart'\n",
    )
    .unwrap();
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash),
        (Action::Preserve, Action::Destroy, Action::Restart)
    );
    for bad in ["rename-restart", "coredump-destroy", "coredump-restart"] {
        let e = parse(&format!("name='a'\nkernel='k'\non_crash='{bad}'\n")).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not supported"), "{e}");
        assert!(e.message.contains(bad), "{e}");
    }
    let e = parse("name='a'\nkernel='k'\non_crash='explode'\n").unwrap_err();
    assert!(e.message.contains("unknown action"));
}

#[test]
fn numbers_ranges_and_types() {
    let e = parse("name='a'\nkernel='k'\nmemory='lots'\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("not a number"));
    // Quoted numbers are fine (xl keeps every atom as text).
    assert_eq!(
        parse("name='a'\nkernel='k'\nmemory='0x100'\n")
            .unwrap()
            .memory_mib,
        256
    );
    let e = parse("name='a'\nkernel='k'\nvcpus=0\n").unwrap_err();
    assert!(e.message.contains("out of range"));
    let e = parse("name='a'\nkernel='k'\nmemory=[1]\n").unwrap_err();
    assert!(e.message.contains("not a list"));
    let e = parse("name='a'\nkernel='k'\nmemory=512\nmaxmem=256\n").unwrap_err();
    assert_eq!(e.line, 4);
    let e = parse("name='a'\nkernel='k'\nvcpus=4\nmaxvcpus=2\n").unwrap_err();
    assert_eq!(e.line, 4);
    let c = parse("name='a'\nkernel='k'\nvcpus=2\nmaxvcpus=4\nmemory=128\nmaxmem=512\n").unwrap();
    assert_eq!(
        (c.vcpus, c.maxvcpus, c.memory_mib, c.maxmem_mib),
        (2, 4, 128, 512)
    );
}

#[test]
fn names_are_checked() {
    for bad in ["''", "'a/b'", "'12'"] {
        let e = parse(&format!("kernel='k'\nname={bad}\n")).unwrap_err();
        assert_eq!(e.line, 2, "{bad}: {e}");
    }
}

#[test]
fn cpusets() {
    assert_eq!(parse_cpuset("0-1").unwrap(), 0b11);
    assert_eq!(parse_cpuset("all").unwrap(), u64::MAX);
    assert_eq!(parse_cpuset("0,2-3").unwrap(), 0b1101);
    assert_eq!(parse_cpuset("0-3,^1").unwrap(), 0b1101);
    assert_eq!(parse_cpuset("all,^0").unwrap(), u64::MAX - 1);
    assert_eq!(parse_cpuset("0-63").unwrap(), u64::MAX);
    assert_eq!(parse_cpuset("63").unwrap(), 1 << 63);
    for bad in ["", "x", "3-1", "64", "^1", "0,,1", "0-1,^0-1", "1-"] {
        assert!(parse_cpuset(bad).is_err(), "{bad}");
    }
    let c = parse("name='a'\nkernel='k'\ncpus='0-1'\n").unwrap();
    assert_eq!(c.cpus, Some(0b11));
    let c = parse("name='a'\nkernel='k'\ncpus=['2', '4']\n").unwrap();
    assert_eq!(c.cpus, Some(0b10100));
    assert_eq!(
        parse("name='a'\nkernel='k'\ncpus='all'\n").unwrap().cpus,
        None
    );
    let e = parse("name='a'\nkernel='k'\ncpus='99'\n").unwrap_err();
    assert_eq!(e.line, 3);
}

#[test]
fn disks_and_vifs_are_typed() {
    let c = parse(
        "name='a'\nkernel='k'\ndisk = [ 'phy:/dev/vg/x,xvda,w',\n  'file:/a.img,xvdb,r', ]\nvif=['bridge=xenbr0']\n",
    )
    .unwrap();
    assert_eq!(c.disks.len(), 2);
    assert_eq!(c.disks[0].target, "/dev/vg/x");
    assert_eq!(c.disks[0].devid, 51712);
    assert!(!c.disks[0].readonly);
    assert_eq!(c.disks[1].target, "/a.img");
    assert_eq!(c.disks[1].devid, 51728);
    assert!(c.disks[1].readonly);
    assert_eq!(c.vifs.len(), 1);
    assert_eq!(c.vifs[0].bridge, "xenbr0");
    assert_eq!(c.vifs[0].devid, Some(0));
    assert!(c.check_supported().is_ok());
}

#[test]
fn disk_and_vif_errors_name_item_and_line() {
    let e = parse("name='a'\nkernel='k'\n\ndisk=['/a,qcow2,xvda']\n").unwrap_err();
    assert_eq!(e.line, 4);
    assert!(
        e.message
            .starts_with("`disk` item 1 (`/a,qcow2,xvda`): disk format `qcow2`"),
        "{e}"
    );
    let e = parse("name='a'\nkernel='k'\ndisk=['/a,,xvda','/b,,xvda']\n").unwrap_err();
    assert!(e.message.contains("item 2"), "{e}");
    assert!(e.message.contains("same device as xvda"), "{e}");
    let e = parse("name='a'\nkernel='k'\nvif=['mac=00:16:3e:00:00:01','mac=00:16:3e:00:00:01']\n")
        .unwrap_err();
    assert!(
        e.message.contains("MAC 00:16:3e:00:00:01 is used twice"),
        "{e}"
    );
    let e = parse("name='a'\nkernel='k'\nvif=['','devid=0']\n").unwrap_err();
    assert!(e.message.contains("item 2"), "{e}");
    // An automatic devid continues after explicit ones.
    let c = parse("name='a'\nkernel='k'\nvif=['devid=3','','vifname=x']\n").unwrap();
    let ids: Vec<_> = c.vifs.iter().map(|v| v.devid).collect();
    assert_eq!(ids, [Some(3), Some(4), Some(5)]);
    let e = parse("name='a'\nkernel='k'\nvif=['vifname=x','vifname=x']\n").unwrap_err();
    assert!(e.message.contains("vifname x is used twice"), "{e}");
    let e = parse("name='a'\nkernel='k'\nvif=['rate=10Mb/s']\n").unwrap_err();
    assert!(
        e.message.contains("unsupported vif parameter `rate`"),
        "{e}"
    );
}

#[test]
fn uuids() {
    let u = "5a3b1c2d-0000-4e5f-8a9b-0123456789ab";
    let c = parse(&format!("name='a'\nkernel='k'\nuuid='{u}'\n")).unwrap();
    assert_eq!(format_uuid(&c.uuid.unwrap()), u);
    let e = parse("name='a'\nkernel='k'\nuuid='nope'\n").unwrap_err();
    assert!(e.message.contains("bad uuid"));
    assert!(parse_uuid("5a3b1c2d-0000-4e5f-8a9b-0123456789aZ").is_none());
    assert!(parse_uuid("5a3b1c2d00004e5f8a9b0123456789ab").is_none());
}

#[test]
fn command_line_overrides() {
    let o = |v: &[&str]| {
        parse_with_overrides(
            "d.cfg",
            BASIC,
            &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let c = o(&["memory=512", "name=other", "extra=\"quiet\""]).unwrap();
    assert_eq!(c.memory_mib, 512);
    assert_eq!(c.name, "other");
    assert_eq!(c.cmdline, "root=/dev/xvda1 ro quiet");
    let c = o(&["vif=['bridge=a']", "vif+=['bridge=b']"]).unwrap();
    let b: Vec<_> = c.vifs.iter().map(|v| v.bridge.as_str()).collect();
    assert_eq!(b, ["a", "b"]);
    let e = o(&["memory"]).unwrap_err();
    assert_eq!(e.to_string(), "<command line>:1: `memory` is not key=value");
    let e = o(&["memory=1", "bogus=1"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "<command line>:2: unknown or unsupported setting `bogus`"
    );
    let e = o(&["memory=1", "name='x"]).unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(e.file, "<command line>");
}

#[test]
fn semicolons_and_file_errors_locate() {
    let c = parse("name='a'; kernel='k'; memory=64;\n").unwrap();
    assert_eq!(c.memory_mib, 64);
    let e = parse("name='a'\nkernel='k'\nmemory = 64 vcpus=1\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "d.cfg:3: unexpected `v` after the value of `memory`"
    );
}

#[test]
fn the_example_domu_config_parses() {
    let text = include_str!("../../../tests/linux/example.cfg");
    let c = parse_with_overrides("example.cfg", text, &[]).unwrap();
    assert_eq!(c.name, "example");
    assert_eq!(c.kernel, "/usr/lib/ferrovisor/vmlinuz");
    assert_eq!(c.cmdline, "console=hvc0");
    assert_eq!(c.memory_mib, 128);
    assert!(c.check_supported().is_ok());
}

mod devices {
    use crate::device::*;

    fn disk(s: &str) -> DiskSpec {
        parse_disk(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_disk(s).unwrap_err()
    }

    #[test]
    fn every_disk_form() {
        let want = DiskSpec {
            target: "/dev/loop0".into(),
            vdev: "xvda".into(),
            devid: 51712,
            readonly: false,
            discard: true,
            direct_io_safe: false,
        };
        for s in [
            "phy:/dev/loop0,xvda,w",
            "/dev/loop0,raw,xvda,rw",
            "/dev/loop0,,xvda",
            "/dev/loop0,,xvda,",
            "loop0,,xvda",
            "raw:/dev/loop0,xvda,w",
            "tap:aio:/dev/loop0,xvda,w",
            "format=raw, vdev=xvda, access=rw, target=/dev/loop0",
            "vdev=xvda,target=/dev/loop0",
            "/dev/loop0,,xvda:disk,w",
            "/dev/loop0,raw,xvda,rw,devtype=disk,backend=0,backendtype=phy",
            " /dev/loop0, raw, xvda, w",
            "/dev/loop0,,,w,vdev=xvda",
        ] {
            assert_eq!(disk(s), want, "{s}");
        }
        let f = disk("file:/var/lib/x/disk.img,xvdb,r");
        assert_eq!(
            (f.target.as_str(), f.devid, f.readonly),
            ("/var/lib/x/disk.img", 51728, true)
        );
        assert!(disk("/a,,xvda,ro").readonly);
        assert!(disk("access=r,vdev=xvdc,target=/a").readonly);
        // target= takes the rest, commas included.
        let t = disk("vdev=xvda, access=w, target=/srv/a,b c,d.img");
        assert_eq!(t.target, "/srv/a,b c,d.img");
        // An empty positional target may be given before target=.
        assert_eq!(disk(",raw,xvda,w,target=/x").target, "/x");
        let d = disk("/a,,xvda,no-discard,direct-io-safe");
        assert!(!d.discard && d.direct_io_safe);
    }

    #[test]
    fn disk_errors() {
        for (s, msg) in [
            ("/a,xvda,w", "`xvda` is not a disk format"),
            ("/a,qcow2,xvda", "disk format `qcow2` is not supported"),
            ("qcow2:/a,xvda,w", "disk format `qcow2` is not supported"),
            ("format=vhd,vdev=xvda,target=/a", "disk format `vhd`"),
            (
                "format=bogus,vdev=xvda,target=/a",
                "unknown disk format `bogus`",
            ),
            ("/a,,hdc,cdrom", "cdrom devices are not supported"),
            ("/a,,hdc:cdrom,r", "cdrom devices are not supported"),
            ("devtype=cdrom,vdev=xvda,target=/a", "cdrom"),
            (",hdc:cdrom,r", "cdrom"),
            (
                "devtype=floppy,vdev=xvda,target=/a",
                "unknown devtype `floppy`",
            ),
            ("/a,,xvda,x", "unknown access `x`"),
            ("/a,,xvda,w,w", "too many positional parameters"),
            ("/a,,bogus", "`bogus` is not a virtual disk name"),
            ("/a,,xvd", "not a virtual disk name"),
            ("/a,,xvda01", "not a virtual disk name"),
            ("/a,,xvda256", "not a virtual disk name"),
            ("/a,,hde", "not a virtual disk name"),
            ("/a,,sdq", "not a virtual disk name"),
            ("/a,raw", "no vdev"),
            (",,xvda", "no target"),
            ("vdev=xvda", "no target"),
            ("/a,,xvda,backend=dd", "driver domains are not supported"),
            (
                "/a,,xvda,backendtype=qdisk",
                "backendtype=qdisk is not supported",
            ),
            (
                "/a,,xvda,script=block-iscsi",
                "hotplug scripts are not supported",
            ),
            ("iscsi:/a,xvda,w", "hotplug scripts are not supported"),
            ("weird:/a,xvda,w", "unknown deprecated disk prefix `weird:`"),
            ("/a,,xvda,colo", "COLO"),
            ("/a,,xvda,frob=1", "unknown disk parameter `frob`"),
            ("/a,,xvda,vdev=xvdb", "vdev specified twice"),
            ("/a,,xvda,target=/b", "target specified twice"),
            ("/a,,xvda,specification=virtio", "specification=virtio"),
        ] {
            let e = err(s);
            assert!(e.contains(msg), "{s}: {e}");
        }
    }

    #[test]
    fn vdev_numbers() {
        for (v, n) in [
            ("xvda", 202 << 8),
            ("xvdb", (202 << 8) | 16),
            ("xvda1", (202 << 8) | 1),
            ("xvdp15", (202 << 8) | (15 << 4) | 15),
            ("xvdq", (1 << 28) | (16 << 8)),
            ("xvda16", (1 << 28) | 16),
            ("xvdz", (1 << 28) | (25 << 8)),
            ("xvdaa", (1 << 28) | (26 << 8)),
            ("xvdtq37", (1 << 28) | (536 << 8) | 37),
            ("d0p0", 202 << 8),
            ("d1p2", (202 << 8) | (1 << 4) | 2),
            ("d536p37", (1 << 28) | (536 << 8) | 37),
            ("hda", 3 << 8),
            ("hdb1", (3 << 8) | (1 << 6) | 1),
            ("hdc2", (22 << 8) | 2),
            ("hdd", (22 << 8) | (1 << 6)),
            ("sda", 8 << 8),
            ("sdb3", (8 << 8) | (1 << 4) | 3),
            ("51712", 51712),
            ("0xca00", 51712),
            ("0145000", 51712),
        ] {
            assert_eq!(vdev_number(v), Ok(n), "{v}");
        }
        for v in [
            "", "xvd", "xvdA", "xvda0", "hde", "hda64", "sda16", "d0", "dxp1", "0", "xyz",
        ] {
            assert!(vdev_number(v).is_err(), "{v}");
        }
    }

    #[test]
    fn vif_forms() {
        let v = parse_vif("mac=00:16:3e:01:02:03,bridge=xenbr1").unwrap();
        assert_eq!(v.mac, Some([0, 0x16, 0x3e, 1, 2, 3]));
        assert_eq!(v.bridge, "xenbr1");
        assert_eq!(v.script, VIF_BRIDGE_SCRIPT);
        let d = parse_vif("").unwrap();
        assert_eq!((d.bridge.as_str(), d.mac, d.devid), ("xenbr0", None, None));
        let f = parse_vif(
            " mac=00:16:3E:AA:bb:0c , ip=10.0.0.2, script=vif-bridge, type=vif, vifname=web0, model=e1000, backend=0, devid=2",
        )
        .unwrap();
        assert_eq!(f.mac, Some([0, 0x16, 0x3e, 0xaa, 0xbb, 0x0c]));
        assert_eq!(f.ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(f.vifname.as_deref(), Some("web0"));
        assert_eq!(f.devid, Some(2));
        assert_eq!(f.script, VIF_BRIDGE_SCRIPT);
        assert_eq!(
            parse_vif("script=/usr/local/etc/vif-bridge")
                .unwrap()
                .script,
            "/usr/local/etc/vif-bridge"
        );
        assert_eq!(parse_vif("netdev=br9").unwrap().bridge, "br9");
    }

    #[test]
    fn vif_errors() {
        for (s, msg) in [
            ("mac=00:16:3e:01:02", "bad MAC address"),
            ("mac=00:16:3e:01:02:zz", "bad MAC address"),
            ("mac=01:16:3e:01:02:03", "multicast"),
            ("bridge=", "bad bridge name"),
            ("bridge=a/b", "bad bridge name"),
            ("vifname=waytoolongname0123", "bad vifname"),
            ("script=vif-route", "only bridged vifs"),
            ("type=ioemu", "emulated NICs are not supported"),
            ("type=x", "unknown vif type"),
            ("backend=dd", "driver domains are not supported"),
            ("devid=x", "bad devid"),
            ("rate=10Mb/s", "unknown or unsupported vif parameter `rate`"),
            ("mtu=9000", "parameter `mtu`"),
            ("bridge", "`bridge` is not key=value"),
        ] {
            let e = parse_vif(s).unwrap_err();
            assert!(e.contains(msg), "{s}: {e}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            format_mac(&[0, 0x16, 0x3e, 0xa, 0xbc, 0xff]),
            "00:16:3e:0a:bc:ff"
        );
        assert_eq!(xen_mac([0xff, 1, 2]), [0, 0x16, 0x3e, 0x7f, 1, 2]);
        assert_eq!(
            parse_mac("00-16-3e-00-00-01"),
            Some([0, 0x16, 0x3e, 0, 0, 1])
        );
        assert_eq!(parse_mac("0:16:3e:0:0:1"), Some([0, 0x16, 0x3e, 0, 0, 1]));
        assert_eq!(parse_mac("000:16:3e:0:0:1"), None);
    }
}
