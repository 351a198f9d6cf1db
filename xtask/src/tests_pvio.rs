//! PV block and network under QEMU TCG: Linux's own blkback/netback in dom0 serve
//! blkfront/netfront in Linux domUs that xl creates with `disk=` and `vif=`.
//!
//! Each test boots dom0 and types one or two `pvio-test <name>` commands
//! (tests/linux/pvio-test); that script creates domUs whose half of the test
//! (tests/linux/fvtest) is named on their kernel command line, and prints one line per
//! result, with what each domain computed: checksums from the writer, from dom0 and
//! from a second reader; ping counts; what is left behind (backend devices, loop
//! devices, bridge ports); free memory before and after. The checks below compare
//! those values; none of them is a line the hypervisor prints about itself.

macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?dom0: ", $p)
    };
}

use crate::build::Profile;
use crate::spec::{Emulator, QemuBoot, Test};
use crate::tests_multi::same_kib;

/// dom0 with 512 MiB; room for two 128 MiB domUs beside it.
const CMDLINE: &str = crate::tests_dom0::QEMU_CMDLINE;
const MEMORY_MIB: u32 = 1536;

/// Comma-separated values that must all be the same 32-digit md5 sum.
fn same_md5s(text: &str) -> Result<(), String> {
    let sums: Vec<&str> = text.split(',').collect();
    if sums.len() < 2 {
        return Err("fewer than two checksums".into());
    }
    if let Some(bad) = sums
        .iter()
        .find(|s| s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!("{bad:?} is not an md5 sum"));
    }
    if sums.iter().any(|s| *s != sums[0]) {
        return Err("the checksums differ".into());
    }
    Ok(())
}

/// `before,after` free memory (MiB) that must be equal: every frame came back.
fn same_free(text: &str) -> Result<(), String> {
    match text.split_once(',') {
        Some((a, b)) if !a.is_empty() && a == b => Ok(()),
        _ => Err("free memory differs before and after".into()),
    }
}

/// Comma-separated counts that must all be 0 (domains still listed, dom0's backend
/// devices, bound loop devices, bridge ports).
fn all_zero(text: &str) -> Result<(), String> {
    if !text.is_empty() && text.split(',').all(|v| v == "0") {
        Ok(())
    } else {
        Err("something was left behind (domain, backend, loop device or bridge port)".into())
    }
}

/// Comma-separated ping counts that must all be 3 (every echo answered).
fn all_three(text: &str) -> Result<(), String> {
    if !text.is_empty() && text.split(',').all(|v| v == "3") {
        Ok(())
    } else {
        Err("a ping went unanswered".into())
    }
}

/// Typed before a `pvio-test` run: the host's free memory in KiB, as dom0 reads it
/// (`xl info --kib`), into `$k0`, once it has held still for a second (up to 10 s). Right
/// after an earlier domU's destruction, a page of it that dom0's xenstored or xenconsoled
/// still maps comes back only at their unmap: read before that, the baseline would be a
/// frame short and the check after the run would see one frame too many come back.
const KIB_BASELINE: &str = concat!(
    "kib() { xl info --kib | awk '/^free_memory/ { print $3 }'; }; ",
    "k0=$(kib); i=0; while [ $i -lt 10 ]; do sleep 1; k1=$(kib); ",
    "[ \"$k1\" = \"$k0\" ] && break; k0=$k1; i=$((i+1)); done; "
);

/// Typed after a `pvio-test` run whose domUs are gone: waits (up to 20 s) until the free
/// memory is back to `$k0`, then prints `dom0: <NAME>_FREE_KIB=<before>,<now>` and the
/// domains xenstore still has under `/local/domain` (`dom0: <NAME>_XS_DOMAINS=0,` once
/// every domU's home is gone). Exact to the KiB, so a single frame a daemon in dom0
/// kept mapped (a dead domU's xenstore or console ring) would show.
macro_rules! kib_check {
    ($name:literal) => {
        concat!(
            "i=0; while [ \"$(kib)\" != \"$k0\" ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.2; done; ",
            "echo \"dom0: ", $name, "_FREE_KIB=$k0,$(kib)\"; ",
            "echo \"dom0: ", $name, "_XS_DOMAINS=$(xenstore-list /local/domain | tr '\\n' ,)\"\n"
        )
    };
}

fn leak_concat(a: &str, b: &str) -> &'static str {
    crate::tests_multi::leak(format!("{a}{b}"))
}

fn boot(name: &'static str, timeout: u64) -> Test {
    boot_with(name, CMDLINE, timeout)
}

/// [`boot`] with another hypervisor command line.
fn boot_with(name: &'static str, cmdline: &'static str, timeout: u64) -> Test {
    crate::tests_dom0::dom0_boot(name, Emulator::qemu_tcg(QemuBoot::Kernel), cmdline, timeout)
        .memory_mib(MEMORY_MIB)
        .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
        .expect_group(&[r"dom0: bridge xenbr0 up"])
}

/// A disk written by one domU, read by dom0 and (read-only) by another domU; data
/// written with fsync survives a destroy right after the fsync.
pub fn block() -> Test {
    boot("qemu-tcg/pvio/block", 900)
        .send(r"dom0: shell ready", "pvio-test blk\n")
        .expect_text(d0!(r"BLK_SUMS=(\S+)$"), same_md5s)
        .expect_value(d0!(r"BLK_RO=(\S+)$"), "1")
        .expect_text(d0!(r"BLK_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"BLK_FREE_MIB=(\S+)$"), same_free)
        .send(r"BLK_FREE_MIB=\S+\r?\n", "pvio-test fsync\n")
        .expect_text(d0!(r"FSYNC_SUMS=(\S+)$"), same_md5s)
        .expect_text(d0!(r"FSYNC_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"FSYNC_FREE_MIB=(\S+)$"), same_free)
        .send(r"FSYNC_FREE_MIB=\S+\r?\n", "poweroff -f\n")
        .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// Two domUs and dom0 on xenbr0: pings every way, 32 MiB over TCP between the domUs.
pub fn net() -> Test {
    boot("qemu-tcg/pvio/net", 900)
        .send(r"dom0: shell ready", "pvio-test net\n")
        .expect_text(d0!(r"NET_SUMS=(\S+)$"), same_md5s)
        .expect_text(d0!(r"NET_PINGS=(\S+)$"), all_three)
        .expect_text(d0!(r"NET_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"NET_FREE_MIB=(\S+)$"), same_free)
        .send(r"NET_FREE_MIB=\S+\r?\n", "poweroff -f\n")
        .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// [`net`] with QEMU's vCPUs taking turns on one host thread: each stops for a while at
/// arbitrary instructions, host code and guest code alike. Under it, QEMU 7.2's second
/// delivery of an interrupt injected through EVENTINJ (see `svm/vcpu.rs`) broke dom0
/// within seconds in every run; multi-threaded TCG met it once in about ten runs.
pub fn net_one_thread() -> Test {
    let mut t = net();
    t.name = "qemu-tcg/pvio/net-one-thread";
    let Emulator::Qemu { accel, .. } = &mut t.emulator else {
        unreachable!("pvio/net boots QEMU");
    };
    *accel = crate::qemu::Accel::TcgOneThread;
    t
}

/// Detach and re-attach of a disk and a vif on a running domU; a destroy in the middle
/// of heavy block and network I/O leaves dom0 working and every frame returned.
pub fn hotplug() -> Test {
    boot("qemu-tcg/pvio/hotplug-destroy", 900)
        .send(r"dom0: shell ready", "pvio-test hotplug\n")
        .expect_value(
            d0!(r"PV_FEATURES=(\S+)$"),
            "persistent:11,indirect:256,split-evtchn:1,rx-copy:1,blk-state:44",
        )
        .expect_value(
            d0!(r"HOTPLUG_EVENTS=(\S+)$"),
            "xvda:present,eth0:present,xvda:absent,xvda:present,eth0:absent,eth0:present,",
        )
        .expect_text(d0!(r"HOTPLUG_SUMS=(\S+)$"), same_md5s)
        .expect_value(d0!(r"HOTPLUG_PING=(\S+)$"), "2")
        .expect_text(d0!(r"HOTPLUG_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"HOTPLUG_FREE_MIB=(\S+)$"), same_free)
        .send(
            r"HOTPLUG_FREE_MIB=\S+\r?\n",
            leak_concat(KIB_BASELINE, "pvio-test destroy-io\n"),
        )
        .expect_text(d0!(r"DESTROY_IO_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"DESTROY_IO_FREE_MIB=(\S+)$"), same_free)
        .expect_value(d0!(r"DESTROY_IO_DOM0=(\S+)$"), "42")
        .send(r"DESTROY_IO_DOM0=\S+\r?\n", kib_check!("DESTROY_IO"))
        .expect_text(d0!(r"DESTROY_IO_FREE_KIB=(\d+,\d+)$"), same_kib)
        .expect_value(d0!(r"DESTROY_IO_XS_DOMAINS=([0-9,]+)$"), "0,")
        .send(r"DESTROY_IO_XS_DOMAINS=[0-9,]+\r?\n", "poweroff -f\n")
        .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// `name:count:count...` pairs (`blk:12:9,tx:3:5,rx:8:1`): every queue of every device
/// took at least one interrupt, and each device has `queues` of them.
fn every_queue_used(text: &str, queues: usize) -> Result<(), String> {
    for device in text.split(',') {
        let mut parts = device.split(':');
        let name = parts.next().unwrap_or_default();
        let counts: Vec<&str> = parts.collect();
        if counts.len() != queues {
            return Err(format!("{name}: {} queues, not {queues}", counts.len()));
        }
        if counts
            .iter()
            .any(|c| c.parse::<u64>().map_or(true, |n| n == 0))
        {
            return Err(format!("{name}: a queue took no interrupt"));
        }
    }
    Ok(())
}

/// Multiple queues and multi-page rings (dom0 and a domU with two vCPUs each on a
/// two-CPU machine; blkfront asked for a ring of four pages): what the frontends
/// negotiated, two 16 MiB halves of the disk written at once from the domU's two vCPUs
/// and checked by the domU and by dom0, every queue's interrupts, device events taken on
/// the second vCPU where Linux bound some of them, nothing left behind.
pub fn multi_queue() -> Test {
    multi_queue_named("qemu-tcg/pvio/multi-queue")
}

/// [`multi_queue`] against the hypervisor built with debug assertions and overflow
/// checks (`Profile::Checked`): the lock order and every `debug_assert!` checked while two
/// CPUs run two SMP Linux domains that share rings, grants and events.
pub fn multi_queue_checked() -> Test {
    multi_queue_named("qemu-tcg/checked/pvio-multi-queue").hypervisor(Profile::Checked)
}

fn multi_queue_named(name: &'static str) -> Test {
    boot_with(name, leak_concat(CMDLINE, " dom0_max_vcpus=2"), 900)
        .cpus(2)
        .send(r"dom0: shell ready", "pvio-test mq\n")
        .expect_value(
            d0!(r"MQ_NEGOTIATED=(\S+)$"),
            "blk-queues:2,ring-order:2,ring-refs:8,net-queues:2,net-queue-dirs:2",
        )
        .expect_text(d0!(r"MQ_SUMS_A=(\S+)$"), same_md5s)
        .expect_text(d0!(r"MQ_SUMS_B=(\S+)$"), same_md5s)
        .expect_text(d0!(r"MQ_IRQS=(\S+)$"), |t| every_queue_used(t, 2))
        .expect_text(d0!(r"MQ_CPU1=(\S+)$"), |t| match t.parse::<u64>() {
            Ok(n) if n > 0 => Ok(()),
            _ => Err("the domU's second vCPU took none of its devices' events".into()),
        })
        .expect_text(d0!(r"MQ_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"MQ_FREE_MIB=(\S+)$"), same_free)
        .send(r"MQ_FREE_MIB=\S+\r?\n", "poweroff -f\n")
        .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// A domU acting as a hostile frontend (dom0-tools/hostile-front, fvtest `hostile`):
/// its kernel frontends unloaded, it plays the frontend of hot-plugged disks and a vif
/// itself and sends a bad grant ref, too many segments, `req_prod` far ahead and a
/// grant revoked in flight to blkback, a bad grant ref and `req_prod` far ahead to
/// netback. Each attack must be refused (error response, halted ring or
/// disconnection) after an honest request worked; dom0's backends must have noticed;
/// dom0 must still work (toolstack, its own disk I/O, no BUG/Oops); the devices must
/// detach and the domain go without leaving anything behind.
pub fn hostile() -> Test {
    hostile_named("qemu-tcg/pvio/hostile-frontend")
}

/// [`hostile`] against the hypervisor built with debug assertions and overflow checks
/// (`Profile::Checked`): the lock order, every `debug_assert!` and guest-chosen
/// arithmetic are checked while dom0's backends, the toolstack and a hostile frontend
/// run.
pub fn hostile_checked() -> Test {
    hostile_named("qemu-tcg/checked/pvio-hostile-frontend").hypervisor(Profile::Checked)
}

fn hostile_named(name: &'static str) -> Test {
    boot(name, 1200)
        .send(
            r"dom0: shell ready",
            leak_concat(KIB_BASELINE, "pvio-test hostile\n"),
        )
        .expect_value(d0!(r"HOSTILE_FRONTENDS=(\S+)$"), "0")
        .expect_text(d0!(r"HOSTILE_RESULTS=(\S+)$"), hostile_refused)
        .expect_text(d0!(r"HOSTILE_SANITY=(\S+)$"), hostile_honest_ok)
        .expect_text(d0!(r"HOSTILE_DETECTED=(\S+)$"), hostile_detected)
        .expect_value(d0!(r"HOSTILE_OOPS=(\S+)$"), "0")
        .expect_value(d0!(r"HOSTILE_DOM0=(\S+)$"), "42")
        .expect_text(d0!(r"HOSTILE_DETACH=(\S+)$"), hostile_detached)
        .expect_text(d0!(r"HOSTILE_LEFT=(\S+)$"), all_zero)
        .expect_text(d0!(r"HOSTILE_FREE_MIB=(\S+)$"), same_free)
        .send(r"HOSTILE_FREE_MIB=\S+\r?\n", kib_check!("HOSTILE"))
        .expect_text(d0!(r"HOSTILE_FREE_KIB=(\d+,\d+)$"), same_kib)
        .expect_value(d0!(r"HOSTILE_XS_DOMAINS=([0-9,]+)$"), "0,")
        .send(r"HOSTILE_XS_DOMAINS=[0-9,]+\r?\n", "poweroff -f\n")
        .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// The hostile attacks in the order the test runs them, with the outcomes that show
/// the backend refused (fv-hostile-front's words): `halted` = no answer, not even to
/// an honest request after it; `completed` is fine only for a grant revoked in flight.
const HOSTILE_ATTACKS: &[(&str, &[&str])] = &[
    ("bad-gref", &["error-response", "disconnected"]),
    ("too-many-segs", &["error-response", "disconnected"]),
    ("far-ahead", &["halted", "disconnected"]),
    ("revoke", &["completed", "error-response", "disconnected"]),
    ("net-bad-gref", &["error-response", "disconnected"]),
    ("net-far-ahead", &["halted", "disconnected"]),
];

/// Comma-separated items, a trailing comma allowed.
fn hostile_items(text: &str) -> Vec<&str> {
    text.strip_suffix(',').unwrap_or(text).split(',').collect()
}

/// `name:outcome,...`: every attack, in order, refused.
fn hostile_refused(text: &str) -> Result<(), String> {
    let items = hostile_items(text);
    if items.len() != HOSTILE_ATTACKS.len() {
        return Err(format!(
            "{} results for {} attacks",
            items.len(),
            HOSTILE_ATTACKS.len()
        ));
    }
    for (item, (name, allowed)) in items.iter().zip(HOSTILE_ATTACKS) {
        match item.split_once(':') {
            Some((n, o)) if n == *name && allowed.contains(&o) => {}
            Some((n, o)) if n == *name => {
                return Err(format!("{name}: {o} (expected one of {allowed:?})"))
            }
            _ => return Err(format!("{item:?} where {name} was due")),
        }
    }
    Ok(())
}

/// The honest request before each attack was answered OKAY (the frontend works, so
/// the refusals are the backend's doing).
fn hostile_honest_ok(text: &str) -> Result<(), String> {
    let items = hostile_items(text);
    if items.len() == HOSTILE_ATTACKS.len() && items.iter().all(|s| *s == "ok") {
        Ok(())
    } else {
        Err("an honest request before an attack was not answered OKAY".into())
    }
}

/// `bogus,fatal,operstate`: blkback logged the bogus ring, netback the fatal error,
/// and the vif is no longer up.
fn hostile_detected(text: &str) -> Result<(), String> {
    let v: Vec<&str> = text.split(',').collect();
    let count = |s: &str| s.parse::<u32>().unwrap_or(0);
    match v[..] {
        [bogus, fatal, oper] if count(bogus) >= 1 && count(fatal) >= 1 && oper != "up" => Ok(()),
        _ => Err("blkback or netback did not report the attack, or the vif is still up".into()),
    }
}

/// One `ok`/`forced` per disk and the vif (never `stuck`).
fn hostile_detached(text: &str) -> Result<(), String> {
    let items: Vec<&str> = text.split(',').collect();
    if items.len() == 5 && items.iter().all(|s| matches!(*s, "ok" | "forced")) {
        Ok(())
    } else {
        Err("a poisoned device did not detach".into())
    }
}

#[cfg(test)]
mod hostile_checks {
    use super::*;

    #[test]
    fn hostile_checks_can_fail() {
        let good = "bad-gref:error-response,too-many-segs:error-response,far-ahead:halted,\
                    revoke:completed,net-bad-gref:error-response,net-far-ahead:halted,";
        assert!(hostile_refused(good).is_ok());
        assert!(
            hostile_refused(&good.replace("revoke:completed", "revoke:error-response")).is_ok()
        );
        assert!(
            hostile_refused(&good.replace("far-ahead:halted,r", "far-ahead:tolerated,r")).is_err()
        );
        assert!(
            hostile_refused(&good.replace("bad-gref:error-response,t", "bad-gref:accepted,t"))
                .is_err()
        );
        assert!(
            hostile_refused(&good.replace("net-far-ahead:halted", "net-far-ahead:no-connect"))
                .is_err()
        );
        assert!(hostile_refused(&good.replace("revoke:completed", "revoke:no-response")).is_err());
        assert!(hostile_refused("bad-gref:error-response").is_err());
        assert!(hostile_refused("").is_err());
        assert!(hostile_honest_ok("ok,ok,ok,ok,ok,ok,").is_ok());
        assert!(hostile_honest_ok("ok,ok,ok,ok,ok,none,").is_err());
        assert!(hostile_honest_ok("ok,ok,").is_err());
        assert!(hostile_detected("1,1,down").is_ok());
        assert!(hostile_detected("2,1,gone").is_ok());
        assert!(hostile_detected("0,1,down").is_err());
        assert!(hostile_detected("1,0,down").is_err());
        assert!(hostile_detected("1,1,up").is_err());
        assert!(hostile_detected("1,1").is_err());
        assert!(hostile_detached("ok,ok,forced,ok,forced").is_ok());
        assert!(hostile_detached("ok,ok,stuck,ok,ok").is_err());
        assert!(hostile_detached("ok,ok").is_err());
    }
}

pub fn all() -> Vec<Test> {
    vec![
        block(),
        net(),
        net_one_thread(),
        hotplug(),
        multi_queue(),
        multi_queue_checked(),
        hostile(),
        hostile_checked(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_can_fail() {
        let a = "0123456789abcdef0123456789abcdef";
        let b = "0123456789abcdef0123456789abcdee";
        assert!(same_md5s(&format!("{a},{a},{a}")).is_ok());
        assert!(same_md5s(&format!("{a},{b}")).is_err());
        assert!(same_md5s(&format!("{a},none")).is_err());
        assert!(same_md5s(a).is_err());
        assert!(same_kib("474248,474248").is_ok());
        assert!(same_kib("474248,474240").is_err());
        assert!(same_free("100,100").is_ok());
        assert!(every_queue_used("blk:12:9,tx:3:5,rx:8:1", 2).is_ok());
        assert!(every_queue_used("blk:12:0,tx:3:5,rx:8:1", 2).is_err());
        assert!(every_queue_used("blk:12,tx:3:5,rx:8:1", 2).is_err());
        assert!(every_queue_used("blk:12:9,tx::5,rx:8:1", 2).is_err());
        assert!(same_free("100,98").is_err());
        assert!(same_free(",").is_err());
        assert!(all_zero("0,0,0").is_ok());
        assert!(all_zero("0,1,0").is_err());
        assert!(all_three("3,3").is_ok());
        assert!(all_three("3,2").is_err());
    }
}
