//! `xs-check --domu` against the real store core, serving domain 5 over a seqpacket socketpair
//! that stands in for `/dev/xen/xenbus` (one message per write), with the home our toolstack
//! writes (after libxl: home `n0 r5`, `data` and `control/shutdown` owned by the domain).
//! Broken setups show that each domU check can fail.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use xenstore::core::{ConnKind, NoRings, Quotas, Store};
use xenstore::transport::{Transport, Xenbus};
use xenstore::wire::{join_strings, Decoder, Message, MsgType};

use super::*;

fn dom0(s: &mut Store, conn: u32, ty: MsgType, items: &[&str]) {
    let out = s.handle(
        conn,
        &Message::new(ty, 1, 0, join_strings(items)),
        &mut NoRings,
    );
    let reply = &out[0].1;
    assert!(reply.error_name().is_none(), "{ty:?} {items:?}: {reply:?}");
}

fn write(s: &mut Store, conn: u32, path: &str, val: &str) {
    let mut p = join_strings(&[path]);
    p.extend_from_slice(val.as_bytes());
    let out = s.handle(conn, &Message::new(MsgType::Write, 1, 0, p), &mut NoRings);
    assert!(out[0].1.error_name().is_none(), "write {path}");
}

/// What to get wrong in the domain's setup.
#[derive(Default, Clone, Copy)]
struct Breakage {
    no_console_port: bool,
    dom0_home_writable: bool,
    nodes_quota: Option<usize>,
}

/// A store with domain 5 set up like a PVH domU, served on a xenbus-like socket.
fn domu_store(b: Breakage) -> (Client, JoinHandle<()>) {
    let quotas = Quotas {
        nodes: b.nodes_quota.unwrap_or(Quotas::default().nodes),
        ..Quotas::default()
    };
    let mut s = Store::new(quotas);
    let d0 = s.add_connection(0, ConnKind::Socket);
    let h = "/local/domain/5";
    use MsgType::{Mkdir, SetPerms};
    dom0(&mut s, d0, Mkdir, &[h]);
    dom0(&mut s, d0, SetPerms, &[h, "n0", "r5"]);
    write(&mut s, d0, &format!("{h}/name"), "guest");
    write(&mut s, d0, &format!("{h}/domid"), "5");
    write(
        &mut s,
        d0,
        &format!("{h}/control/platform-feature-xs_reset_watches"),
        "1",
    );
    write(&mut s, d0, &format!("{h}/control/shutdown"), "");
    dom0(
        &mut s,
        d0,
        SetPerms,
        &[&format!("{h}/control/shutdown"), "n5", "r0"],
    );
    dom0(&mut s, d0, Mkdir, &[&format!("{h}/data")]);
    dom0(&mut s, d0, SetPerms, &[&format!("{h}/data"), "n5", "r0"]);
    write(&mut s, d0, &format!("{h}/console/ring-ref"), "2170");
    if !b.no_console_port {
        write(&mut s, d0, &format!("{h}/console/port"), "2");
    }
    write(&mut s, d0, &format!("{h}/memory/static-max"), "524288");
    if b.dom0_home_writable {
        dom0(&mut s, d0, SetPerms, &["/local/domain/0", "b5"]);
    }
    let d5 = s.add_connection(5, ConnKind::Ring);
    let _ = s.attach_domain(5, d5);

    let (a, z): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let mut end = File::from(z);
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match end.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut d = Decoder::new();
            d.push(&buf[..n]);
            let m = d
                .next_message()
                .unwrap()
                .expect("one whole message per write");
            assert_eq!(d.pending(), 0, "more than one message in a write");
            for (to, reply) in s.handle(d5, &m, &mut NoRings) {
                if to == d5 {
                    end.write_all(&reply.encode()).unwrap();
                }
            }
        }
    });
    let c = Client::from_transport(Transport::Xenbus(Xenbus::from_file(File::from(a))));
    (c, server)
}

fn check(b: Breakage) -> (Result<usize, Vec<String>>, String) {
    let (mut c, server) = domu_store(b);
    let mut out = Vec::new();
    let r = run(&mut c, &Config::new(Role::DomU), &mut out);
    drop(c);
    server.join().unwrap();
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn domu_passes_on_a_sound_store() {
    let (r, out) = check(Breakage::default());
    eprintln!("{out}");
    assert_eq!(r, Ok(5), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "xs-check: role domu domid 5 via xenbus base data/xs-check"
    );
    for (line, name) in lines[1..]
        .iter()
        .zip(["watch", "transaction", "eacces", "quota", "home"])
    {
        assert!(
            line.starts_with(&format!("xs-check: ok {name}: ")),
            "{line}"
        );
    }
    assert!(!out.contains("FAIL") && !out.contains("panic"));
    assert!(out.contains("platform-feature-xs_reset_watches=1"), "{out}");
    assert!(
        out.contains("ok watch: fired at registration and for data/xs-check/watch/child"),
        "{out}"
    );
}

#[test]
fn domu_checks_fail_when_the_store_is_wrong() {
    let (r, out) = check(Breakage {
        no_console_port: true,
        ..Breakage::default()
    });
    assert_eq!(r.unwrap_err().len(), 1, "{out}");
    assert!(
        out.contains("xs-check: FAIL: home: read /local/domain/5/console/port: ENOENT"),
        "{out}"
    );

    let (r, out) = check(Breakage {
        dom0_home_writable: true,
        ..Breakage::default()
    });
    assert_eq!(r.unwrap_err().len(), 1, "{out}");
    assert!(
        out.contains(
            "xs-check: FAIL: eacces: write /local/domain/0/xs-check succeeded, want EACCES"
        ),
        "{out}"
    );

    let (r, out) = check(Breakage {
        nodes_quota: Some(5000),
        ..Breakage::default()
    });
    assert_eq!(r.unwrap_err().len(), 1, "{out}");
    assert!(
        out.contains("xs-check: FAIL: quota: no ENOSPC after 1100 new nodes"),
        "{out}"
    );
}
