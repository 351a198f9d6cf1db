use super::*;

#[derive(Default)]
struct MockHost {
    introduced: Vec<(ConnId, u16, u64, u32)>,
    released: Vec<(ConnId, u16)>,
    fail: Option<Errno>,
}

impl DomainHost for MockHost {
    fn introduce(&mut self, conn: ConnId, domid: u16, gfn: u64, port: u32) -> Result<(), Errno> {
        if let Some(e) = self.fail {
            return Err(e);
        }
        self.introduced.push((conn, domid, gfn, port));
        Ok(())
    }
    fn release(&mut self, conn: ConnId, domid: u16) {
        self.released.push((conn, domid));
    }
}

struct T {
    s: Store,
    host: MockHost,
    dom0: ConnId,
    /// Everything sent that was not the reply of the last request.
    events: Vec<(ConnId, Message)>,
}

fn p(path: &str) -> Vec<u8> {
    join_strings(&[path])
}

impl T {
    fn new() -> T {
        T::with_quotas(Quotas::default())
    }
    fn with_quotas(q: Quotas) -> T {
        let mut s = Store::new(q);
        let dom0 = s.add_connection(0, ConnKind::Socket);
        T {
            s,
            host: MockHost::default(),
            dom0,
            events: Vec::new(),
        }
    }
    fn req(
        &mut self,
        conn: ConnId,
        ty: MsgType,
        tx: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let out = self
            .s
            .handle(conn, &Message::new(ty, 77, tx, payload), &mut self.host);
        let (to, reply) = out[0].clone();
        assert_eq!(to, conn);
        assert_eq!((reply.req_id, reply.tx_id), (77, tx));
        self.events.extend(out.into_iter().skip(1));
        match reply.error_name() {
            Some(e) => Err(e),
            None => {
                assert_eq!(reply.ty, ty as u32);
                Ok(reply.payload)
            }
        }
    }
    fn write(&mut self, c: ConnId, tx: u32, path: &str, v: &str) -> Result<(), String> {
        let mut pl = p(path);
        pl.extend_from_slice(v.as_bytes());
        self.req(c, MsgType::Write, tx, &pl)
            .map(|r| assert_eq!(r, b"OK\0"))
    }
    fn read(&mut self, c: ConnId, tx: u32, path: &str) -> Result<String, String> {
        self.req(c, MsgType::Read, tx, &p(path))
            .map(|v| String::from_utf8(v).unwrap())
    }
    fn dir(&mut self, c: ConnId, path: &str) -> Result<Vec<String>, String> {
        self.req(c, MsgType::Directory, 0, &p(path)).map(|v| {
            split_strings(&v)
                .iter()
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect()
        })
    }
    fn set_perms(&mut self, c: ConnId, path: &str, perms: &[&str]) -> Result<(), String> {
        let mut items = vec![path];
        items.extend_from_slice(perms);
        self.req(c, MsgType::SetPerms, 0, &join_strings(&items))
            .map(drop)
    }
    fn get_perms(&mut self, c: ConnId, path: &str) -> Result<Vec<String>, String> {
        self.req(c, MsgType::GetPerms, 0, &p(path)).map(|v| {
            split_strings(&v)
                .iter()
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect()
        })
    }
    fn watch(&mut self, c: ConnId, path: &str, token: &str) -> Result<(), String> {
        self.req(c, MsgType::Watch, 0, &join_strings(&[path, token]))
            .map(drop)
    }
    fn tx_start(&mut self, c: ConnId) -> u32 {
        let r = self.req(c, MsgType::TransactionStart, 0, b"\0").unwrap();
        std::str::from_utf8(&r[..r.len() - 1])
            .unwrap()
            .parse()
            .unwrap()
    }
    fn tx_end(&mut self, c: ConnId, tx: u32, commit: bool) -> Result<(), String> {
        self.req(
            c,
            MsgType::TransactionEnd,
            tx,
            if commit { b"T\0" } else { b"F\0" },
        )
        .map(drop)
    }
    /// Events delivered to `c` since the last call, as (path, token).
    fn take_events(&mut self, c: ConnId) -> Vec<(String, String)> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.events.drain(..).partition(|(to, _)| *to == c);
        self.events = rest;
        mine.into_iter()
            .map(|(_, m)| {
                assert_eq!(m.ty, MsgType::WatchEvent as u32);
                assert_eq!((m.req_id, m.tx_id), (0, 0));
                let s = split_strings(&m.payload);
                (
                    String::from_utf8(s[0].to_vec()).unwrap(),
                    String::from_utf8(s[1].to_vec()).unwrap(),
                )
            })
            .collect()
    }
    /// Introduces domain `d` with its home dir made by the toolstack (owned by `d`, readable
    /// by nobody else), returns its ring connection.
    fn domu(&mut self, d: u16) -> ConnId {
        let dom0 = self.dom0;
        let home = path::home(d);
        self.req(dom0, MsgType::Mkdir, 0, &p(&home)).unwrap();
        self.set_perms(dom0, &home, &[&format!("n{d}")]).unwrap();
        self.req(
            dom0,
            MsgType::Introduce,
            0,
            &join_strings(&[d.to_string(), "4096".into(), "9".into()]),
        )
        .unwrap();
        let c = self.host.introduced.last().unwrap().0;
        assert_eq!(self.s.connection_domid(c), Some(d));
        self.events.clear();
        c
    }
}

#[test]
fn initial_tree_matches_xen() {
    let mut t = T::new();
    let d0 = t.dom0;
    assert_eq!(t.dir(d0, "/").unwrap(), ["local", "tool"]);
    assert_eq!(t.dir(d0, "/local/domain").unwrap(), ["0"]);
    assert_eq!(t.read(d0, 0, "/local/domain/0/name").unwrap(), "Domain-0");
    assert_eq!(t.read(d0, 0, "/local/domain/0/domid").unwrap(), "0");
    for p in ["/", "/local", "/local/domain", "/tool", "/local/domain/0"] {
        assert_eq!(t.get_perms(d0, p).unwrap(), ["n0"], "{p}");
    }
}

#[test]
fn read_write_mkdir_rm_directory() {
    let mut t = T::new();
    let d0 = t.dom0;
    assert_eq!(t.read(d0, 0, "/a/b"), Err("ENOENT".into()));
    t.write(d0, 0, "/a/b/c", "v").unwrap();
    assert_eq!(t.read(d0, 0, "/a/b/c").unwrap(), "v");
    assert_eq!(
        t.read(d0, 0, "/a/b").unwrap(),
        "",
        "parents are created empty"
    );
    t.write(d0, 0, "/a/b/c", "").unwrap();
    assert_eq!(t.read(d0, 0, "/a/b/c").unwrap(), "");
    // Binary values survive, NULs included.
    let mut pl = p("/a/bin");
    pl.extend_from_slice(b"x\0y");
    t.req(d0, MsgType::Write, 0, &pl).unwrap();
    assert_eq!(t.req(d0, MsgType::Read, 0, &p("/a/bin")).unwrap(), b"x\0y");
    t.write(d0, 0, "/a/d", "1").unwrap();
    assert_eq!(t.dir(d0, "/a").unwrap(), ["b", "bin", "d"]);
    t.req(d0, MsgType::Mkdir, 0, &p("/a/d")).unwrap();
    assert_eq!(
        t.read(d0, 0, "/a/d").unwrap(),
        "1",
        "mkdir keeps an existing value"
    );
    t.req(d0, MsgType::Mkdir, 0, &p("/m/n")).unwrap();
    assert_eq!(t.dir(d0, "/m").unwrap(), ["n"]);
    t.req(d0, MsgType::Rm, 0, &p("/a/b")).unwrap();
    assert_eq!(t.read(d0, 0, "/a/b/c"), Err("ENOENT".into()));
    assert_eq!(t.dir(d0, "/a").unwrap(), ["bin", "d"]);
    // Removing a missing node is fine if its parent exists, ENOENT otherwise.
    t.req(d0, MsgType::Rm, 0, &p("/a/zz")).unwrap();
    assert_eq!(t.req(d0, MsgType::Rm, 0, &p("/q/zz")), Err("ENOENT".into()));
    assert_eq!(t.req(d0, MsgType::Rm, 0, &p("/")), Err("EINVAL".into()));
    // Relative paths are below the caller's home.
    t.write(d0, 0, "rel/x", "r").unwrap();
    assert_eq!(t.read(d0, 0, "/local/domain/0/rel/x").unwrap(), "r");
    // Malformed requests.
    assert_eq!(
        t.req(d0, MsgType::Write, 0, b"/nonul"),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(d0, MsgType::Read, 0, b"/a//b\0"),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(d0, MsgType::Read, 0, b"/a\0b\0"),
        Err("EINVAL".into())
    );
}

#[test]
fn unknown_and_unsupported_types_get_enosys() {
    let mut t = T::new();
    let out = t.s.handle(
        t.dom0,
        &Message {
            ty: 20,
            req_id: 5,
            tx_id: 0,
            payload: vec![],
        },
        &mut t.host,
    );
    assert_eq!(out[0].1.error_name().as_deref(), Some("ENOSYS"));
    let out = t.s.handle(
        t.dom0,
        &Message {
            ty: 999,
            req_id: 5,
            tx_id: 0,
            payload: vec![],
        },
        &mut t.host,
    );
    assert_eq!(out[0].1.error_name().as_deref(), Some("ENOSYS"));
    assert_eq!(
        t.req(t.dom0, MsgType::WatchEvent, 0, b"a\0b\0"),
        Err("ENOSYS".into())
    );
}

#[test]
fn directory_part_pages_long_lists() {
    let mut t = T::new();
    let d0 = t.dom0;
    let names: Vec<String> = (0..300)
        .map(|i| format!("child-with-a-long-name-{i:04}"))
        .collect();
    for n in &names {
        t.write(d0, 0, &format!("/big/{n}"), "").unwrap();
    }
    assert_eq!(t.dir(d0, "/big"), Err("E2BIG".into()));
    let mut got = Vec::new();
    let mut off = 0usize;
    let mut gen = None;
    loop {
        let r = t
            .req(
                d0,
                MsgType::DirectoryPart,
                0,
                &join_strings(&["/big".to_string(), off.to_string()]),
            )
            .unwrap();
        assert!(r.len() <= PAYLOAD_MAX);
        let parts = split_strings(&r);
        let g = parts[0].to_vec();
        assert_eq!(
            *gen.get_or_insert(g.clone()),
            g,
            "generation stable while unchanged"
        );
        let mut done = false;
        for name in &parts[1..] {
            if name.is_empty() {
                done = true;
                break;
            }
            off += name.len() + 1;
            got.push(String::from_utf8(name.to_vec()).unwrap());
        }
        if done {
            break;
        }
    }
    assert_eq!(got, names);
}

#[test]
fn perms_strings_and_who_may_set_them() {
    let mut t = T::new();
    let d0 = t.dom0;
    let c5 = t.domu(5);
    assert_eq!(t.get_perms(d0, "/local/domain/5").unwrap(), ["n5"]);
    // Owner may change perms on its own node, not hand it to someone else.
    t.write(c5, 0, "data", "x").unwrap();
    assert_eq!(
        t.get_perms(c5, "data").unwrap(),
        ["n5"],
        "inherits its parent's perms"
    );
    t.set_perms(c5, "data", &["n5", "r7"]).unwrap();
    assert_eq!(
        t.get_perms(d0, "/local/domain/5/data").unwrap(),
        ["n5", "r7"]
    );
    assert_eq!(t.set_perms(c5, "data", &["n7"]), Err("EPERM".into()));
    // Not the owner: EACCES.
    assert_eq!(t.set_perms(c5, "/tool", &["b5"]), Err("EACCES".into()));
    // Bad strings and empty lists.
    assert_eq!(t.set_perms(d0, "/tool", &["x0"]), Err("EINVAL".into()));
    assert_eq!(t.set_perms(d0, "/tool", &[]), Err("EINVAL".into()));
    assert_eq!(t.set_perms(d0, "/nope", &["n0"]), Err("ENOENT".into()));
    // Too many entries for a domU.
    let many: Vec<String> = std::iter::once("n5".to_string())
        .chain((1..=6).map(|i| format!("r{i}")))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(t.set_perms(c5, "data", &many), Err("ENOSPC".into()));
    t.set_perms(d0, "/local/domain/5/data", &many).unwrap();
}

#[test]
fn permissions_are_enforced_for_domus() {
    let mut t = T::new();
    let d0 = t.dom0;
    let c5 = t.domu(5);
    let c6 = t.domu(6);
    t.write(c5, 0, "secret", "s").unwrap();
    // Dom0 sees everything; the owner too.
    assert_eq!(t.read(d0, 0, "/local/domain/5/secret").unwrap(), "s");
    assert_eq!(t.read(c5, 0, "secret").unwrap(), "s");
    assert_eq!(t.read(c5, 0, "/local/domain/5/secret").unwrap(), "s");
    // Another domU: EACCES for existing and missing nodes alike in a dir it cannot read.
    assert_eq!(
        t.read(c6, 0, "/local/domain/5/secret"),
        Err("EACCES".into())
    );
    assert_eq!(
        t.read(c6, 0, "/local/domain/5/missing"),
        Err("EACCES".into())
    );
    assert_eq!(
        t.write(c6, 0, "/local/domain/5/secret", "x"),
        Err("EACCES".into())
    );
    assert_eq!(
        t.write(c6, 0, "/local/domain/5/new", "x"),
        Err("EACCES".into())
    );
    assert_eq!(
        t.req(c6, MsgType::Rm, 0, &p("/local/domain/5/secret")),
        Err("EACCES".into())
    );
    assert_eq!(t.dir(c6, "/local/domain/5"), Err("EACCES".into()));
    assert_eq!(
        t.get_perms(c6, "/local/domain/5/secret"),
        Err("EACCES".into())
    );
    // Root-owned dirs are off limits for writing.
    assert_eq!(t.write(c5, 0, "/tool/x", "1"), Err("EACCES".into()));
    assert_eq!(t.read(c5, 0, "/local/domain/0/name"), Err("EACCES".into()));
    // Grant read to 6: it can read but not write.
    t.set_perms(c5, "secret", &["n5", "r6"]).unwrap();
    assert_eq!(t.read(c6, 0, "/local/domain/5/secret").unwrap(), "s");
    assert_eq!(
        t.write(c6, 0, "/local/domain/5/secret", "x"),
        Err("EACCES".into())
    );
    // Write-only grant: writes allowed, reads not.
    t.set_perms(c5, "secret", &["n5", "w6"]).unwrap();
    t.write(c6, 0, "/local/domain/5/secret", "w").unwrap();
    assert_eq!(
        t.read(c6, 0, "/local/domain/5/secret"),
        Err("EACCES".into())
    );
    assert_eq!(t.read(c5, 0, "secret").unwrap(), "w");
    // A domU creating below a node it may write owns what it creates.
    t.set_perms(d0, "/local/domain/5", &["n5", "b6"]).unwrap();
    t.write(c6, 0, "/local/domain/5/from6/leaf", "z").unwrap();
    assert_eq!(
        t.get_perms(d0, "/local/domain/5/from6").unwrap(),
        ["n6", "b6"]
    );
    assert_eq!(
        t.get_perms(d0, "/local/domain/5/from6/leaf").unwrap(),
        ["n6", "b6"]
    );
    // Dom0 creating keeps the inherited owner.
    t.write(d0, 0, "/local/domain/5/byd0", "").unwrap();
    assert_eq!(
        t.get_perms(d0, "/local/domain/5/byd0").unwrap(),
        ["n5", "b6"]
    );
    // Privileged requests.
    for ty in [
        MsgType::Introduce,
        MsgType::Release,
        MsgType::IsDomainIntroduced,
        MsgType::Control,
    ] {
        assert_eq!(t.req(c5, ty, 0, b"5\0"), Err("EACCES".into()), "{ty:?}");
    }
    // Special paths can't be read as nodes.
    assert_eq!(t.read(c5, 0, "@releaseDomain"), Err("EINVAL".into()));
}

#[test]
fn read_only_socket_cannot_modify() {
    let mut t = T::new();
    let ro = t.s.add_connection(0, ConnKind::SocketReadOnly);
    assert_eq!(t.read(ro, 0, "/local/domain/0/name").unwrap(), "Domain-0");
    assert_eq!(t.write(ro, 0, "/x", "1"), Err("EROFS".into()));
    assert_eq!(t.req(ro, MsgType::Rm, 0, &p("/tool")), Err("EROFS".into()));
    assert_eq!(
        t.req(ro, MsgType::TransactionStart, 0, b"\0"),
        Err("EROFS".into())
    );
}

#[test]
fn watches_fire_on_registration_and_on_changes_below() {
    let mut t = T::new();
    let d0 = t.dom0;
    let w = t.s.add_connection(0, ConnKind::Socket);
    t.watch(w, "/a", "tok").unwrap();
    assert_eq!(t.take_events(w), [("/a".into(), "tok".into())]);
    t.write(d0, 0, "/a/b/c", "1").unwrap();
    assert_eq!(t.take_events(w), [("/a/b/c".into(), "tok".into())]);
    t.write(d0, 0, "/ab", "1").unwrap();
    assert!(t.take_events(w).is_empty(), "/ab is not below /a");
    t.write(d0, 0, "/a", "v").unwrap();
    assert_eq!(t.take_events(w), [("/a".into(), "tok".into())]);
    // Watch below a removed subtree: fires with the watch's own path.
    t.watch(w, "/a/b/c/d", "deep").unwrap();
    t.take_events(w);
    t.req(d0, MsgType::Rm, 0, &p("/a/b")).unwrap();
    let mut ev = t.take_events(w);
    ev.sort();
    assert_eq!(
        ev,
        [
            ("/a/b".into(), "tok".into()),
            ("/a/b/c/d".into(), "deep".into())
        ]
    );
    // Mkdir of an existing node changes nothing and fires nothing.
    t.req(d0, MsgType::Mkdir, 0, &p("/a")).unwrap();
    assert!(t.take_events(w).is_empty());
    // Perms changes fire.
    t.set_perms(d0, "/a", &["n0"]).unwrap();
    assert_eq!(t.take_events(w), [("/a".into(), "tok".into())]);
    // Duplicate watch, unwatch.
    assert_eq!(t.watch(w, "/a", "tok"), Err("EEXIST".into()));
    t.req(w, MsgType::Unwatch, 0, &join_strings(&["/a", "tok"]))
        .unwrap();
    assert_eq!(
        t.req(w, MsgType::Unwatch, 0, &join_strings(&["/a", "tok"])),
        Err("ENOENT".into())
    );
    t.write(d0, 0, "/a", "again").unwrap();
    assert!(t.take_events(w).is_empty());
    // RESET_WATCHES drops the rest.
    t.watch(w, "/", "root").unwrap();
    t.take_events(w);
    t.req(w, MsgType::ResetWatches, 0, b"").unwrap();
    t.write(d0, 0, "/z", "1").unwrap();
    assert!(t.take_events(w).is_empty());
}

#[test]
fn relative_watches_report_relative_paths_and_respect_perms() {
    let mut t = T::new();
    let d0 = t.dom0;
    let c5 = t.domu(5);
    let c6 = t.domu(6);
    t.watch(c5, "device", "dev").unwrap();
    assert_eq!(t.take_events(c5), [("device".into(), "dev".into())]);
    t.write(d0, 0, "/local/domain/5/device/vif/0/state", "1")
        .unwrap();
    assert_eq!(
        t.take_events(c5),
        [("device/vif/0/state".into(), "dev".into())]
    );
    // Domain 6 watching domain 5's dir gets the first event but not the unreadable changes.
    t.watch(c6, "/local/domain/5", "spy").unwrap();
    assert_eq!(t.take_events(c6).len(), 1);
    t.write(d0, 0, "/local/domain/5/device/vif/0/state", "2")
        .unwrap();
    assert!(t.take_events(c6).is_empty());
    assert_eq!(t.take_events(c5).len(), 1);
}

#[test]
fn transactions_commit_abort_and_conflict() {
    let mut t = T::new();
    let d0 = t.dom0;
    let other = t.s.add_connection(0, ConnKind::Socket);
    let w = t.s.add_connection(0, ConnKind::Socket);
    t.write(d0, 0, "/t/x", "0").unwrap();
    t.watch(w, "/t", "tw").unwrap();
    t.take_events(w);

    // Commit: changes invisible outside until committed; events delivered at commit.
    let tx = t.tx_start(d0);
    assert_ne!(tx, 0);
    t.write(d0, tx, "/t/x", "1").unwrap();
    t.write(d0, tx, "/t/new/leaf", "n").unwrap();
    assert_eq!(t.read(d0, tx, "/t/x").unwrap(), "1");
    assert_eq!(t.read(d0, 0, "/t/x").unwrap(), "0");
    assert_eq!(t.read(d0, 0, "/t/new/leaf"), Err("ENOENT".into()));
    assert!(t.take_events(w).is_empty());
    t.tx_end(d0, tx, true).unwrap();
    assert_eq!(t.read(d0, 0, "/t/x").unwrap(), "1");
    assert_eq!(t.read(d0, 0, "/t/new/leaf").unwrap(), "n");
    assert_eq!(t.dir(d0, "/t").unwrap(), ["x", "new"]);
    assert_eq!(t.take_events(w).len(), 2);
    // The id is gone.
    assert_eq!(t.tx_end(d0, tx, true), Err("ENOENT".into()));
    assert_eq!(t.read(d0, tx, "/t/x"), Err("ENOENT".into()));

    // Abort.
    let tx = t.tx_start(d0);
    t.req(d0, MsgType::Rm, tx, &p("/t")).unwrap();
    assert_eq!(t.read(d0, tx, "/t/x"), Err("ENOENT".into()));
    assert_eq!(t.read(d0, tx, "/t/new/leaf"), Err("ENOENT".into()));
    t.tx_end(d0, tx, false).unwrap();
    assert_eq!(t.read(d0, 0, "/t/new/leaf").unwrap(), "n");
    assert!(t.take_events(w).is_empty());

    // Conflict on something read.
    let tx = t.tx_start(d0);
    t.read(d0, tx, "/t/x").unwrap();
    t.write(d0, tx, "/t/y", "mine").unwrap();
    t.write(other, 0, "/t/x", "theirs").unwrap();
    t.take_events(w);
    assert_eq!(t.tx_end(d0, tx, true), Err("EAGAIN".into()));
    assert_eq!(
        t.read(d0, 0, "/t/y"),
        Err("ENOENT".into()),
        "nothing of a failed commit lands"
    );
    assert!(t.take_events(w).is_empty());

    // Conflict on a node created meanwhile where the transaction saw none.
    let tx = t.tx_start(d0);
    assert_eq!(t.read(d0, tx, "/t/z"), Err("ENOENT".into()));
    t.write(other, 0, "/t/z", "1").unwrap();
    assert_eq!(t.tx_end(d0, tx, true), Err("EAGAIN".into()));

    // Unrelated writes don't conflict.
    let tx = t.tx_start(d0);
    t.read(d0, tx, "/t/x").unwrap();
    t.write(d0, tx, "/t/x", "2").unwrap();
    t.write(other, 0, "/elsewhere", "1").unwrap();
    t.tx_end(d0, tx, true).unwrap();
    assert_eq!(t.read(d0, 0, "/t/x").unwrap(), "2");

    // Two transactions writing the same node: the second commit fails.
    let a = t.tx_start(d0);
    let b = t.tx_start(other);
    t.write(d0, a, "/t/x", "a").unwrap();
    t.write(other, b, "/t/x", "b").unwrap();
    t.tx_end(d0, a, true).unwrap();
    assert_eq!(t.tx_end(other, b, true), Err("EAGAIN".into()));
    assert_eq!(t.read(d0, 0, "/t/x").unwrap(), "a");

    // Nested start, bad end argument, unknown id.
    let tx = t.tx_start(d0);
    assert_eq!(
        t.req(d0, MsgType::TransactionStart, tx, b"\0"),
        Err("EBUSY".into())
    );
    assert_eq!(
        t.req(d0, MsgType::TransactionEnd, tx, b"X\0"),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(d0, MsgType::TransactionEnd, 0, b"T\0"),
        Err("ENOENT".into())
    );
    assert_eq!(t.read(d0, 12345, "/t/x"), Err("ENOENT".into()));
    // Transactions are per connection.
    assert_eq!(t.read(other, tx, "/t/x"), Err("ENOENT".into()));
}

#[test]
fn introduce_release_and_special_watches() {
    let mut t = T::new();
    let d0 = t.dom0;
    t.watch(d0, "@introduceDomain", "in").unwrap();
    t.watch(d0, "@releaseDomain", "out").unwrap();
    t.take_events(d0);
    assert_eq!(
        t.req(d0, MsgType::IsDomainIntroduced, 0, b"3\0").unwrap(),
        b"F\0"
    );
    t.req(d0, MsgType::Introduce, 0, b"3\x0012345\x007\0")
        .unwrap();
    assert_eq!(t.host.introduced.len(), 1);
    let (conn, d, gfn, port) = t.host.introduced[0];
    assert_eq!((d, gfn, port), (3, 12345, 7));
    assert_eq!(t.s.connection_domid(conn), Some(3));
    assert_eq!(
        t.take_events(d0),
        [("@introduceDomain".into(), "in".into())]
    );
    assert_eq!(
        t.req(d0, MsgType::IsDomainIntroduced, 0, b"3\0").unwrap(),
        b"T\0"
    );
    // Introducing again while served is a no-op.
    t.req(d0, MsgType::Introduce, 0, b"3\x0012345\x007\0")
        .unwrap();
    assert_eq!(t.host.introduced.len(), 1);
    // The domain's relative paths are below its home.
    t.req(d0, MsgType::Mkdir, 0, &p("/local/domain/3")).unwrap();
    t.set_perms(d0, "/local/domain/3", &["n3"]).unwrap();
    t.write(conn, 0, "name", "guest").unwrap();
    assert_eq!(t.read(d0, 0, "/local/domain/3/name").unwrap(), "guest");
    assert_eq!(
        t.req(d0, MsgType::GetDomainPath, 0, b"3\0").unwrap(),
        b"/local/domain/3\0"
    );
    assert_eq!(
        t.req(conn, MsgType::GetDomainPath, 0, b"12\0").unwrap(),
        b"/local/domain/12\0"
    );
    // Bad arguments.
    assert_eq!(
        t.req(d0, MsgType::Introduce, 0, b"0\x001\x001\0"),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(d0, MsgType::Introduce, 0, b"32752\x001\x001\0"),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(d0, MsgType::Introduce, 0, b"4\x00x\x001\0"),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(d0, MsgType::Introduce, 0, b"4\x001\0"),
        Err("EINVAL".into())
    );
    t.host.fail = Some(Errno::EIO);
    assert_eq!(
        t.req(d0, MsgType::Introduce, 0, b"4\x001\x001\0"),
        Err("EIO".into())
    );
    assert!(!t.s.is_introduced(4));
    t.host.fail = None;
    t.take_events(d0);
    // Release.
    assert_eq!(t.req(d0, MsgType::Release, 0, b"0\0"), Err("EINVAL".into()));
    assert_eq!(t.req(d0, MsgType::Release, 0, b"9\0"), Err("ENOENT".into()));
    t.req(d0, MsgType::Release, 0, b"3\0").unwrap();
    assert_eq!(t.host.released, [(conn, 3)]);
    assert_eq!(t.take_events(d0), [("@releaseDomain".into(), "out".into())]);
    assert_eq!(
        t.req(d0, MsgType::IsDomainIntroduced, 0, b"3\0").unwrap(),
        b"F\0"
    );
    assert_eq!(t.s.connection_domid(conn), None);
}

#[test]
fn domain_status_fires_release_once_on_shutdown_and_releases_when_gone() {
    let mut t = T::new();
    let d0 = t.dom0;
    let c = t.domu(4);
    t.watch(d0, "@releaseDomain", "out").unwrap();
    t.watch(c, "x", "mine").unwrap();
    t.take_events(d0);
    let out = t.s.domain_status(4, DomainStatus::Running, &mut t.host);
    assert!(out.is_empty());
    let out = t.s.domain_status(4, DomainStatus::Shutdown, &mut t.host);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, d0);
    assert!(
        t.s.domain_status(4, DomainStatus::Shutdown, &mut t.host)
            .is_empty(),
        "only once"
    );
    // RESUME re-arms it.
    t.req(d0, MsgType::Resume, 0, b"4\0").unwrap();
    assert_eq!(
        t.s.domain_status(4, DomainStatus::Shutdown, &mut t.host)
            .len(),
        1
    );
    let out = t.s.domain_status(4, DomainStatus::Gone, &mut t.host);
    assert_eq!(out.len(), 1);
    assert_eq!(t.host.released, [(c, 4)]);
    assert!(!t.s.is_introduced(4));
    assert!(t
        .s
        .domain_status(4, DomainStatus::Gone, &mut t.host)
        .is_empty());
}

#[test]
fn special_watch_events_need_permission() {
    let mut t = T::new();
    let d0 = t.dom0;
    let c5 = t.domu(5);
    t.watch(c5, "@releaseDomain", "r").unwrap();
    assert_eq!(t.take_events(c5).len(), 1, "registration always fires");
    assert_eq!(t.get_perms(c5, "@releaseDomain"), Err("EACCES".into()));
    t.domu(6);
    t.req(d0, MsgType::Release, 0, b"6\0").unwrap();
    assert!(t.take_events(c5).is_empty(), "n0 hides it from domUs");
    t.set_perms(d0, "@releaseDomain", &["n0", "r5"]).unwrap();
    assert_eq!(t.get_perms(d0, "@releaseDomain").unwrap(), ["n0", "r5"]);
    assert_eq!(
        t.set_perms(c5, "@releaseDomain", &["b5"]),
        Err("EACCES".into())
    );
    t.domu(7);
    t.req(d0, MsgType::Release, 0, b"7\0").unwrap();
    assert_eq!(t.take_events(c5), [("@releaseDomain".into(), "r".into())]);
}

#[test]
fn node_quota_gives_enospc_to_that_domain_only() {
    let q = Quotas {
        nodes: 10,
        ..Quotas::default()
    };
    let mut t = T::with_quotas(q);
    let d0 = t.dom0;
    let c5 = t.domu(5);
    let c6 = t.domu(6);
    // Home dirs count for their owners: 1 each.
    for i in 0..9 {
        t.write(c5, 0, &format!("n{i}"), "").unwrap();
    }
    assert_eq!(t.write(c5, 0, "one-too-many", ""), Err("ENOSPC".into()));
    assert_eq!(
        t.req(c5, MsgType::Mkdir, 0, &p("a/b")),
        Err("ENOSPC".into())
    );
    // Overwriting is fine; others keep working; dom0 is not limited.
    t.write(c5, 0, "n0", "changed").unwrap();
    t.write(c6, 0, "fine", "").unwrap();
    for i in 0..20 {
        t.write(d0, 0, &format!("/dom0stuff/{i}"), "").unwrap();
    }
    // Removing frees quota.
    t.req(c5, MsgType::Rm, 0, &p("n0")).unwrap();
    t.write(c5, 0, "again", "").unwrap();
    // Within a transaction the count includes its own creations, and commit rechecks.
    t.req(c5, MsgType::Rm, 0, &p("again")).unwrap();
    let tx = t.tx_start(c5);
    t.write(c5, tx, "t1", "").unwrap();
    assert_eq!(t.write(c5, tx, "t2", ""), Err("ENOSPC".into()));
    t.tx_end(c5, tx, true).unwrap();
}

#[test]
fn entry_size_watch_and_transaction_quotas() {
    let mut t = T::new();
    let d0 = t.dom0;
    let c5 = t.domu(5);
    let big = "x".repeat(2049);
    assert_eq!(t.write(c5, 0, "big", &big), Err("ENOSPC".into()));
    t.write(c5, 0, "ok", &big[..2048]).unwrap();
    t.write(d0, 0, "/big", &big).unwrap();
    for i in 0..128 {
        t.watch(c5, "w", &format!("t{i}")).unwrap();
    }
    assert_eq!(t.watch(c5, "w", "t128"), Err("E2BIG".into()));
    for i in 0..200 {
        t.watch(d0, "/w", &format!("t{i}")).unwrap();
    }
    let txs: Vec<u32> = (0..10).map(|_| t.tx_start(c5)).collect();
    assert_eq!(
        t.req(c5, MsgType::TransactionStart, 0, b"\0"),
        Err("ENOSPC".into())
    );
    t.tx_end(c5, txs[0], false).unwrap();
    t.tx_start(c5);
    for _ in 0..20 {
        t.tx_start(d0);
    }
    // Path length below the home.
    let long = "p".repeat(2049);
    assert_eq!(t.write(c5, 0, &long, ""), Err("EINVAL".into()));
}

#[test]
fn removing_a_connection_drops_its_watches_and_transactions() {
    let mut t = T::new();
    let d0 = t.dom0;
    let w = t.s.add_connection(0, ConnKind::Socket);
    t.watch(w, "/", "all").unwrap();
    t.tx_start(w);
    t.take_events(w);
    t.s.remove_connection(w);
    t.write(d0, 0, "/x", "1").unwrap();
    assert!(t.events.is_empty());
    // A request on a removed connection is refused, not a panic.
    let out =
        t.s.handle(w, &Message::new(MsgType::Read, 1, 0, p("/x")), &mut t.host);
    assert_eq!(out[0].1.error_name().as_deref(), Some("EINVAL"));
}

#[test]
fn control_is_minimal_and_privileged() {
    let mut t = T::new();
    let d0 = t.dom0;
    t.req(d0, MsgType::Control, 0, b"print\0hello\0").unwrap();
    assert_eq!(
        t.req(d0, MsgType::Control, 0, b"check\0"),
        Err("EINVAL".into())
    );
}

#[test]
fn hostile_payloads_never_panic() {
    // Deterministic pseudo-random payloads for every type from a domU.
    let mut t = T::new();
    let c5 = t.domu(5);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 40) as usize;
        let alphabet = b"/a@\0b1T-F_";
        let payload: Vec<u8> = (0..len)
            .map(|k| alphabet[((x >> (k % 60)) as usize + k) % alphabet.len()])
            .collect();
        let ty = (x >> 40) as u32 % 24;
        let tx = if i % 7 == 0 { (x >> 50) as u32 % 3 } else { 0 };
        for c in [c5, t.dom0] {
            let out = t.s.handle(
                c,
                &Message {
                    ty,
                    req_id: i,
                    tx_id: tx,
                    payload: payload.clone(),
                },
                &mut t.host,
            );
            assert_eq!(out[0].0, c);
            assert_eq!(out[0].1.req_id, i);
        }
    }
}
