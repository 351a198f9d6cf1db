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
fn disks_and_vifs_are_kept_raw_but_not_supported() {
    let c = parse(
        "name='a'\nkernel='k'\ndisk = [ 'phy:/dev/vg/x,xvda,w',\n  'file:/a.img,xvdb,r', ]\nvif=['bridge=xenbr0']\n",
    )
    .unwrap();
    assert_eq!(c.disks, ["phy:/dev/vg/x,xvda,w", "file:/a.img,xvdb,r"]);
    assert_eq!(c.vifs, ["bridge=xenbr0"]);
    let e = c.check_supported().unwrap_err();
    assert!(e.contains("not supported yet"), "{e}");
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
    let c = o(&["vif=['a']", "vif+=['b']"]).unwrap();
    assert_eq!(c.vifs, ["a", "b"]);
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
