//! The loop against a fake `/dev/xen`: rings in ordinary memory, ports over a socket pair.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use xenstore::wire::{join_strings, Decoder, Message, MsgType};

use super::*;
use crate::ring::tests::{guest_recv, guest_send, heap_page, Guest};

#[derive(Default)]
struct State {
    /// Guest handles of mapped pages by domain (0: dom0's kernel ring).
    guests: BTreeMap<u16, Guest>,
    grants: Vec<(u16, u32)>,
    binds: Vec<(u16, u32, u32)>,
    unbound: Vec<u32>,
    notified: Vec<u32>,
    pending: VecDeque<u32>,
    status: BTreeMap<u16, DomainStatus>,
    next_port: u32,
}

struct Fake {
    st: Rc<RefCell<State>>,
    rx: UnixStream,
}

const KERNEL_PORT: u32 = 3;

impl Platform for Fake {
    fn evtchn_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
    fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> io::Result<u32> {
        let mut s = self.st.borrow_mut();
        s.next_port += 1;
        let local = 100 + s.next_port;
        s.binds.push((remote_dom, remote_port, local));
        Ok(local)
    }
    fn bind_virq(&mut self, virq: u32) -> io::Result<u32> {
        assert_eq!(virq, VIRQ_DOM_EXC);
        Ok(50)
    }
    fn unbind(&mut self, port: u32) {
        self.st.borrow_mut().unbound.push(port);
    }
    fn notify(&mut self, port: u32) -> io::Result<()> {
        self.st.borrow_mut().notified.push(port);
        Ok(())
    }
    fn pending(&mut self) -> io::Result<u32> {
        let mut b = [0u8];
        (&self.rx).read_exact(&mut b)?;
        Ok(self
            .st
            .borrow_mut()
            .pending
            .pop_front()
            .expect("a port per byte"))
    }
    fn unmask(&mut self, _: u32) -> io::Result<()> {
        Ok(())
    }
    fn map_grant(&mut self, domid: u16, gref: u32) -> io::Result<Box<dyn crate::ring::SharedPage>> {
        let (page, g) = heap_page();
        let mut s = self.st.borrow_mut();
        s.grants.push((domid, gref));
        s.guests.insert(domid, g);
        Ok(Box::new(page))
    }
    fn local_ring(&mut self) -> io::Result<(Box<dyn crate::ring::SharedPage>, u32)> {
        let (page, g) = heap_page();
        self.st.borrow_mut().guests.insert(0, g);
        Ok((Box::new(page), KERNEL_PORT))
    }
    fn domain_status(&mut self, domid: u16) -> io::Result<DomainStatus> {
        Ok(self
            .st
            .borrow()
            .status
            .get(&domid)
            .copied()
            .unwrap_or(DomainStatus::Running))
    }
}

struct Bed {
    d: Daemon,
    st: Rc<RefCell<State>>,
    /// The test's handle to raise ports (shares the socket pair with the fake).
    kick: UnixStream,
    dir: PathBuf,
    decoders: BTreeMap<u16, Decoder>,
}

impl Bed {
    fn new(name: &str) -> Bed {
        let dir =
            std::env::temp_dir().join(format!("xenstored-unit-{}-{name}", std::process::id()));
        let st = Rc::new(RefCell::new(State::default()));
        let (tx, rx) = UnixStream::pair().unwrap();
        let fake = Fake { st: st.clone(), rx };
        let opts = Options {
            socket: dir.join("socket"),
            ro_socket: None,
        };
        let mut d = Daemon::new(&opts, Quotas::default(), Some(Box::new(fake))).unwrap();
        d.init_domains().unwrap();
        Bed {
            d,
            st,
            kick: tx,
            dir,
            decoders: BTreeMap::new(),
        }
    }
    fn raise(&self, port: u32) {
        self.st.borrow_mut().pending.push_back(port);
        (&self.kick).write_all(&[1]).unwrap();
    }
    fn spin(&mut self) {
        for _ in 0..8 {
            self.d.iterate(true).unwrap();
        }
    }
    fn guest(&self, domid: u16) -> Guest {
        self.st.borrow().guests[&domid].clone()
    }
    /// Sends a request from `domid`'s kernel and returns every message it gets back.
    fn call(&mut self, domid: u16, ty: MsgType, payload: &[u8]) -> Vec<Message> {
        guest_send(
            &self.guest(domid),
            &Message::new(ty, 42, 0, payload).encode(),
        );
        self.spin();
        self.recv(domid)
    }
    fn recv(&mut self, domid: u16) -> Vec<Message> {
        let bytes = guest_recv(&self.guest(domid));
        let dec = self.decoders.entry(domid).or_default();
        dec.push(&bytes);
        std::iter::from_fn(|| dec.next_message().unwrap()).collect()
    }
    fn ok(&mut self, domid: u16, ty: MsgType, payload: &[u8]) -> Vec<u8> {
        let r = self.call(domid, ty, payload);
        assert_eq!(r[0].ty, ty as u32, "{:?}", r[0].error_name());
        r[0].payload.clone()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn dom0_kernel_is_introduced_and_kicked() {
    let mut b = Bed::new("dom0");
    let local = {
        let s = b.st.borrow();
        let (dom, port, local) = s.binds[0];
        assert_eq!(
            (dom, port),
            (0, KERNEL_PORT),
            "loopback bind to the kernel's port"
        );
        assert_eq!(
            s.notified.last(),
            Some(&local),
            "notified after introducing dom0"
        );
        local
    };
    assert_eq!(
        b.ok(0, MsgType::Read, b"/local/domain/0/name\0"),
        b"Domain-0"
    );
    assert_eq!(b.ok(0, MsgType::IsDomainIntroduced, b"0\0"), b"T\0");
    // Consuming requests and producing replies both notify the kernel.
    assert!(
        b.st.borrow()
            .notified
            .iter()
            .filter(|p| **p == local)
            .count()
            >= 3
    );
    // Relative paths from dom0's kernel are below its home.
    b.ok(0, MsgType::Write, b"backend/x\0v");
    assert_eq!(b.ok(0, MsgType::Read, b"/local/domain/0/backend/x\0"), b"v");
}

#[test]
fn domu_is_served_through_grant_ref_1_and_released_on_death() {
    let mut b = Bed::new("domu");
    b.ok(0, MsgType::Mkdir, b"/local/domain/5\0");
    b.ok(0, MsgType::SetPerms, b"/local/domain/5\0n5\0");
    b.ok(0, MsgType::Watch, b"@releaseDomain\0gone\0");
    b.recv(0);
    b.ok(0, MsgType::Introduce, &join_strings(&["5", "65536", "9"]));
    let local5 = {
        let s = b.st.borrow();
        assert_eq!(s.grants, [(5, 1)]);
        let &(dom, port, local) = s.binds.last().unwrap();
        assert_eq!((dom, port), (5, 9));
        local
    };
    b.ok(5, MsgType::Write, b"data\0hello");
    assert_eq!(b.ok(5, MsgType::Read, b"data\0"), b"hello");
    assert_eq!(
        b.call(5, MsgType::Read, b"/local/domain/0/name\0")[0]
            .error_name()
            .as_deref(),
        Some("EACCES")
    );
    // A ring kick from the guest is taken and unmasked without harm.
    b.raise(local5);
    b.spin();
    // The domain dies: VIRQ_DOM_EXC, then @releaseDomain and the ring goes.
    b.st.borrow_mut().status.insert(5, DomainStatus::Gone);
    b.raise(50);
    b.spin();
    let ev = b.recv(0);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].ty, MsgType::WatchEvent as u32);
    assert_eq!(ev[0].payload, b"@releaseDomain\0gone\0");
    assert_eq!(b.st.borrow().unbound, [local5]);
    assert_eq!(b.ok(0, MsgType::IsDomainIntroduced, b"5\0"), b"F\0");
}

#[test]
fn hostile_ring_is_dropped_and_others_keep_working() {
    let mut b = Bed::new("hostile");
    for d in [6u16, 7] {
        b.ok(
            0,
            MsgType::Introduce,
            &join_strings(&[d.to_string(), "1".into(), "2".into()]),
        );
    }
    let g6 = b.guest(6);
    // Producer index far ahead of the consumer.
    g6.set_word(xenstore::wire::ring::REQ_PROD, 5000);
    b.spin();
    assert_eq!(b.st.borrow().unbound.len(), 1, "domain 6's port is unbound");
    // An oversized message header from 7: dropped too.
    let h = xenstore::wire::Header {
        ty: MsgType::Read as u32,
        req_id: 1,
        tx_id: 0,
        len: 5000,
    };
    guest_send(&b.guest(7), &h.encode());
    b.spin();
    assert_eq!(b.st.borrow().unbound.len(), 2);
    // Dom0 is fine; the domains stay introduced until released.
    assert_eq!(b.ok(0, MsgType::Read, b"/local/domain/0/domid\0"), b"0");
    assert_eq!(b.ok(0, MsgType::IsDomainIntroduced, b"6\0"), b"T\0");
    b.ok(0, MsgType::Release, b"6\0");
    assert_eq!(b.ok(0, MsgType::IsDomainIntroduced, b"6\0"), b"F\0");
}

#[test]
fn a_guest_that_never_reads_replies_only_stalls_itself() {
    let mut b = Bed::new("stall");
    b.ok(0, MsgType::Introduce, &join_strings(&["8", "1", "2"]));
    let g8 = b.guest(8);
    // Fill the request ring with small requests, never consuming responses.
    let req = Message::new(MsgType::GetDomainPath, 1, 0, b"8\0".to_vec()).encode();
    for _ in 0..(1024 / req.len()) {
        guest_send(&g8, &req);
    }
    b.spin();
    for _ in 0..5 {
        for _ in 0..(1024 / req.len()) {
            let used = g8
                .word(xenstore::wire::ring::REQ_PROD)
                .wrapping_sub(g8.word(xenstore::wire::ring::REQ_CONS));
            if used as usize + req.len() <= 1024 {
                guest_send(&g8, &req);
            }
        }
        b.spin();
    }
    assert_eq!(
        b.ok(0, MsgType::Read, b"/local/domain/0/name\0"),
        b"Domain-0"
    );
    // Once the guest reads, it gets every reply in order.
    let mut n = 0;
    for _ in 0..200 {
        n += b.recv(8).len();
        b.spin();
    }
    assert!(n > 20, "{n} replies");
    assert_eq!(b.st.borrow().unbound.len(), 0, "nobody was dropped");
}
