//! Runs `xenstored -N` on a temporary socket and drives it with the client library.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xenstore::wire::{Header, Message, MsgType};
use xenstore::{Access, Client, Perm};

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(name: &str, extra: &[&str]) -> Daemon {
        let dir =
            std::env::temp_dir().join(format!("xenstored-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A stale socket file must not stop the daemon.
        std::fs::write(dir.join("socket"), b"stale").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_xenstored"))
            .arg("-N")
            .arg("--socket")
            .arg(dir.join("socket"))
            .arg("--pid-file")
            .arg(dir.join("pid"))
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("start xenstored");
        let d = Daemon { child, dir };
        let t0 = Instant::now();
        while Client::connect_to(&d.socket()).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "xenstored did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }
    fn client(&self) -> Client {
        Client::connect_to(&self.socket()).unwrap()
    }
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn timeout(c: &Client) {
    c.socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

#[test]
fn basic_operations_and_initial_tree() {
    let d = Daemon::start("basic", &[]);
    // The socket may be up a moment before the pid file is written: read it until whole.
    let mut pid = None;
    for _ in 0..500 {
        pid = std::fs::read_to_string(d.dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if pid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = pid.expect("no pid file within 5 s");
    assert_eq!(pid, d.child.id());
    let mut c = d.client();
    timeout(&c);
    assert_eq!(c.read(0, "/local/domain/0/name").unwrap(), b"Domain-0");
    assert_eq!(c.directory(0, "/").unwrap(), ["local", "tool"]);
    c.write(0, "/vm/a/b", b"hello").unwrap();
    assert_eq!(c.read(0, "/vm/a/b").unwrap(), b"hello");
    assert_eq!(c.directory(0, "/vm/a").unwrap(), ["b"]);
    c.mkdir(0, "/vm/dir").unwrap();
    c.rm(0, "/vm/a").unwrap();
    let e = c.read(0, "/vm/a/b").unwrap_err();
    assert_eq!(e.name(), Some("ENOENT"));
    assert_eq!(e.errno(), Some(xenstore::Errno::ENOENT));
    assert_eq!(c.get_domain_path(7).unwrap(), "/local/domain/7");
    assert!(!c.is_domain_introduced(7).unwrap());
    c.set_perms(
        0,
        "/vm/dir",
        &[Perm::new(3, Access::None), Perm::new(4, Access::Read)],
    )
    .unwrap();
    assert_eq!(
        c.get_perms(0, "/vm/dir").unwrap(),
        [Perm::new(3, Access::None), Perm::new(4, Access::Read)]
    );
}

#[test]
fn watch_fires_on_write_from_another_client() {
    let d = Daemon::start("watch", &[]);
    let mut w = d.client();
    let mut c = d.client();
    timeout(&w);
    w.watch("/data", "tok").unwrap();
    assert_eq!(
        w.read_watch().unwrap(),
        ("/data".to_string(), "tok".to_string())
    );
    c.write(0, "/data/x", b"1").unwrap();
    assert_eq!(
        w.read_watch().unwrap(),
        ("/data/x".to_string(), "tok".to_string())
    );
    // Events arriving while the watcher waits for a reply are queued, not lost.
    c.write(0, "/data/y", b"2").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(w.read(0, "/data/y").unwrap(), b"2");
    assert_eq!(w.queued_watches(), 1);
    assert_eq!(w.read_watch().unwrap().0, "/data/y");
    w.unwatch("/data", "tok").unwrap();
    // Introducing (without /dev/xen: recorded, not served) fires @introduceDomain.
    w.watch("@introduceDomain", "in").unwrap();
    assert_eq!(w.read_watch().unwrap().0, "@introduceDomain");
    c.introduce(5, 0x1234, 3).unwrap();
    assert_eq!(
        w.read_watch().unwrap(),
        ("@introduceDomain".to_string(), "in".to_string())
    );
    assert!(c.is_domain_introduced(5).unwrap());
    w.watch("@releaseDomain", "out").unwrap();
    assert_eq!(w.read_watch().unwrap().0, "@releaseDomain");
    c.release(5).unwrap();
    assert_eq!(
        w.read_watch().unwrap(),
        ("@releaseDomain".to_string(), "out".to_string())
    );
    assert!(!c.is_domain_introduced(5).unwrap());
}

#[test]
fn transaction_conflict_gives_eagain_and_retry_succeeds() {
    let d = Daemon::start("tx", &[]);
    let mut a = d.client();
    let mut b = d.client();
    timeout(&a);
    a.write(0, "/counter", b"0").unwrap();
    let tx = a.transaction_start().unwrap();
    let v = a.read(tx, "/counter").unwrap();
    a.write(tx, "/counter", &[v[0] + 1]).unwrap();
    b.write(0, "/counter", b"5").unwrap();
    let e = a.transaction_end(tx, true).unwrap_err();
    assert!(e.is_again(), "{e}");
    assert_eq!(e.name(), Some("EAGAIN"));
    let tx = a.transaction_start().unwrap();
    let v = a.read(tx, "/counter").unwrap();
    a.write(tx, "/counter", &[v[0] + 1]).unwrap();
    a.transaction_end(tx, true).unwrap();
    assert_eq!(b.read(0, "/counter").unwrap(), b"6");
    // Abort leaves nothing behind; an ended id is unknown.
    let tx = a.transaction_start().unwrap();
    a.write(tx, "/gone", b"x").unwrap();
    a.transaction_end(tx, false).unwrap();
    assert_eq!(b.read(0, "/gone").unwrap_err().name(), Some("ENOENT"));
    assert_eq!(
        a.transaction_end(tx, true).unwrap_err().name(),
        Some("ENOENT")
    );
}

#[test]
fn read_only_socket_refuses_writes() {
    let d = Daemon::start("ro", &["--ro-socket"]);
    let mut ro = Client::connect_to(&d.dir.join("socket_ro")).unwrap();
    timeout(&ro);
    assert_eq!(ro.read(0, "/local/domain/0/domid").unwrap(), b"0");
    assert_eq!(ro.write(0, "/x", b"1").unwrap_err().name(), Some("EROFS"));
}

fn raw(sock: &Path) -> UnixStream {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn hostile_clients_are_dropped_and_others_keep_working() {
    let mut d = Daemon::start("hostile", &[]);
    // Oversized length: that connection is closed.
    let mut bad = raw(&d.socket());
    let h = Header {
        ty: MsgType::Write as u32,
        req_id: 1,
        tx_id: 0,
        len: 100_000,
    };
    bad.write_all(&h.encode()).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        bad.read(&mut buf).unwrap_or(0),
        0,
        "connection should be closed"
    );
    // Unknown type: an error reply, connection kept.
    let mut odd = raw(&d.socket());
    odd.write_all(
        &Message {
            ty: 1234,
            req_id: 9,
            tx_id: 0,
            payload: vec![1, 2, 3],
        }
        .encode(),
    )
    .unwrap();
    odd.read_exact(&mut buf).unwrap();
    let h = Header::decode(&buf);
    assert_eq!((h.ty, h.req_id), (MsgType::Error as u32, 9));
    let mut p = vec![0u8; h.len as usize];
    odd.read_exact(&mut p).unwrap();
    assert_eq!(p, b"ENOSYS\0");
    // A client that floods requests and never reads its replies stalls only itself.
    let mut flood = raw(&d.socket());
    flood.set_nonblocking(true).unwrap();
    let req = Message::new(MsgType::Read, 1, 0, b"/local/domain/0/name\0".to_vec()).encode();
    for _ in 0..20_000 {
        if flood.write_all(&req).is_err() {
            break;
        }
    }
    // Half a message then silence: harmless.
    let mut half = raw(&d.socket());
    half.write_all(&req[..10]).unwrap();
    let mut c = d.client();
    timeout(&c);
    for i in 0..50 {
        c.write(0, "/still", format!("{i}").as_bytes()).unwrap();
    }
    assert_eq!(c.read(0, "/still").unwrap(), b"49");
    assert!(d.alive());
    drop(flood);
    drop(half);
    assert_eq!(c.read(0, "/still").unwrap(), b"49");
    assert!(d.alive());
}
