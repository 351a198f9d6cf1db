//! The xenstore core state machine (`dom0-tools/xenstore/src/core`) driven by a sequence of
//! requests from dom0 (read-write and read-only sockets) and introduced guest domains, plus
//! connection loss and domain shutdown/death reports, with small quotas.
//!
//! Checks after every step: the first outgoing message is the reply, to the requester, with
//! its request and transaction ids, of the request's type or `ERROR` carrying a known error
//! name; replies fit the payload limit; watch events go to live connections as `path\0token\0`;
//! the tree is consistent: every node's children exist, their names are unique and valid, every
//! node has an owner, and the nodes reachable from `/` are all the nodes there are.

use xenstore::core::{ConnKind, DomainStatus, NoRings, Quotas, Store};
use xenstore::wire::{join_strings, PAYLOAD_MAX};
use xenstore::{Errno, Message, MsgType};

use crate::input::Input;

/// Operations per input (longer inputs are cut): the invariants are checked after each one.
const MAX_STEPS: u32 = 96;

/// Path and argument fragments requests are assembled from, besides raw bytes.
const WORDS: &[&[u8]] = &[
    b"/local/domain/1/data",
    b"/local/domain/1",
    b"/local/domain/2/device/vif/0/state",
    b"data",
    b"data/a",
    b"data/a/b",
    b"device",
    b"/tool",
    b"/tool/xenstored",
    b"/",
    b"/local/domain/0/name",
    b"@releaseDomain",
    b"@introduceDomain",
    b"1",
    b"2",
    b"0",
    b"4",
    b"r0",
    b"b1",
    b"n2",
    b"w1",
    b"T",
    b"F",
    b"tok",
    b"",
    b"12345",
];

fn arg(inp: &mut Input<'_>) -> Vec<u8> {
    let sel = inp.u8();
    if usize::from(sel) < WORDS.len() * 8 {
        WORDS[usize::from(sel) % WORDS.len()].to_vec()
    } else {
        let n = usize::from(inp.u8() % 24);
        inp.bytes(n).to_vec()
    }
}

fn check_tree(store: &Store) {
    let mut reachable = 0;
    let mut stack = vec!["/".to_string()];
    while let Some(p) = stack.pop() {
        reachable += 1;
        let n = store
            .node(&p)
            .unwrap_or_else(|| panic!("{p} is listed but missing"));
        assert!(!n.perms.is_empty(), "{p} has no owner");
        let mut names = std::collections::HashSet::new();
        for c in &n.children {
            assert!(
                !c.is_empty() && !c.contains('/'),
                "bad child name {c:?} of {p}"
            );
            assert!(names.insert(c), "{p} lists {c} twice");
            stack.push(if p == "/" {
                format!("/{c}")
            } else {
                format!("{p}/{c}")
            });
        }
    }
    assert_eq!(reachable, store.node_count(), "orphaned or unlisted nodes");
}

/// The xenstore core target.
pub fn target_xenstore_core(data: &[u8]) {
    let mut inp = Input::new(data);
    let quotas = Quotas {
        nodes: 4 + usize::from(inp.u8() % 16),
        entry_size: 64,
        watches: 3,
        transactions: 2,
        perms_per_node: 2,
        path_len: 48,
        outstanding: 20,
    };
    let mut store = Store::new(quotas);
    let mut host = NoRings;
    let dom0 = store.add_connection(0, ConnKind::Socket);
    let ro = store.add_connection(0, ConnKind::SocketReadOnly);
    let mut txs: Vec<u32> = vec![0];
    let mut steps = 0u32;
    while !inp.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let mut conns = vec![dom0, ro];
        conns.extend(
            store
                .introduced_domains()
                .into_iter()
                .filter_map(|(_, c)| c),
        );
        let sel = inp.u8();
        if sel >= 250 {
            // Connection loss and toolstack reports.
            let d = u16::from(inp.u8() % 4);
            match sel {
                250 => {
                    let c = conns[usize::from(inp.u8()) % conns.len()];
                    store.remove_connection(c);
                    if c == dom0 || c == ro {
                        return;
                    }
                }
                251 => drop(store.domain_status(d, DomainStatus::Shutdown, &mut host)),
                252 => drop(store.domain_status(d, DomainStatus::Gone, &mut host)),
                _ => drop(store.domain_status(d, DomainStatus::Running, &mut host)),
            }
            check_tree(&store);
            continue;
        }
        let conn = conns[usize::from(sel) % conns.len()];
        let ty = match inp.u8() {
            t @ 0..=219 => MsgType::ALL[usize::from(t) % MsgType::ALL.len()] as u32,
            _ => inp.u32(),
        };
        let tx_id = match inp.u8() % 4 {
            0 => txs[usize::from(inp.u8()) % txs.len()],
            1 => inp.u32(),
            _ => 0,
        };
        let nargs = usize::from(inp.u8() % 4);
        let args: Vec<Vec<u8>> = (0..nargs).map(|_| arg(&mut inp)).collect();
        let mut payload = join_strings(&args);
        if inp.u8().is_multiple_of(4) {
            payload.pop(); // no final NUL
        }
        let req_id = steps;
        let msg = Message {
            ty,
            req_id,
            tx_id,
            payload,
        };
        let out = store.handle(conn, &msg, &mut host);
        let (to, reply) = out.first().expect("no reply");
        assert_eq!(*to, conn, "reply to another connection");
        assert_eq!((reply.req_id, reply.tx_id), (req_id, tx_id));
        assert!(reply.payload.len() <= PAYLOAD_MAX, "oversized reply");
        if reply.ty == MsgType::Error as u32 {
            let name = reply.error_name().unwrap();
            assert!(Errno::from_name(&name).is_some(), "unknown error {name:?}");
        } else {
            assert_eq!(reply.ty, ty, "reply of another type");
            if ty == MsgType::TransactionStart as u32 {
                let id = std::str::from_utf8(reply.payload.strip_suffix(&[0]).unwrap())
                    .unwrap()
                    .parse()
                    .expect("transaction id");
                txs.push(id);
            }
        }
        let live: Vec<_> = {
            let mut l = vec![dom0, ro];
            l.extend(
                store
                    .introduced_domains()
                    .into_iter()
                    .filter_map(|(_, c)| c),
            );
            l
        };
        for (to, ev) in &out[1..] {
            assert!(
                live.contains(to) || *to == conn,
                "event for a dead connection"
            );
            assert_eq!(ev.ty, MsgType::WatchEvent as u32);
            assert!(ev.payload.ends_with(&[0]));
            assert_eq!(ev.payload.iter().filter(|&&b| b == 0).count(), 2);
        }
        check_tree(&store);
    }
}
