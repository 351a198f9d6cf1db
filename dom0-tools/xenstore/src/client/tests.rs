//! The client over both transports, against a scripted fake xenstored.
//!
//! The xenbus transport is tested over a `SOCK_SEQPACKET` socketpair, which keeps write
//! boundaries: the fake checks that every write carries exactly one whole message, as the
//! kernel's device expects.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::*;
use crate::wire::{Decoder, Header};

/// One end for the client, one for the fake, keeping message boundaries.
fn seqpacket_pair() -> (File, File) {
    let (a, b): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    (File::from(a), File::from(b))
}

/// What the fake does with one request: the messages to send back, each in its own write.
type Script = fn(&Message) -> Vec<Message>;

fn reply(req: &Message, ty: MsgType, payload: &[u8]) -> Message {
    Message::new(ty, req.req_id, req.tx_id, payload)
}

fn error(req: &Message, name: &str) -> Message {
    let mut p = name.as_bytes().to_vec();
    p.push(0);
    reply(req, MsgType::Error, &p)
}

/// A small store: `/a` = "hello", everything else missing; a watch fires once at once;
/// reading `/a` is preceded by an event for `/a/b`; committing transaction 7 conflicts.
fn store(req: &Message) -> Vec<Message> {
    let s: Vec<String> = split_strings(&req.payload)
        .into_iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    match req.msg_type() {
        Some(MsgType::Read) if s[0] == "/a" => vec![
            Message::watch_event("/a/b", b"tok"),
            reply(req, MsgType::Read, b"hello"),
        ],
        Some(MsgType::Read) => vec![error(req, "ENOENT")],
        Some(MsgType::Watch) => vec![
            reply(req, MsgType::Watch, b"OK\0"),
            Message::watch_event(&s[0], s[1].as_bytes()),
        ],
        Some(MsgType::Write) => vec![reply(req, MsgType::Write, b"OK\0")],
        Some(MsgType::TransactionStart) => vec![reply(req, MsgType::TransactionStart, b"7\0")],
        Some(MsgType::TransactionEnd) if req.tx_id == 7 => vec![error(req, "EAGAIN")],
        _ => vec![error(req, "ENOSYS")],
    }
}

/// Serves `script` on a seqpacket end until the client hangs up; fails if a write held
/// anything but exactly one message.
fn fake_xenbus(mut end: File, script: Script) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut served = 0;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = end.read(&mut buf).unwrap();
            if n == 0 {
                return served;
            }
            assert!(n >= HEADER_LEN, "a write of {n} bytes: not a whole header");
            let h = Header::decode(buf[..HEADER_LEN].try_into().unwrap());
            assert_eq!(
                n,
                HEADER_LEN + h.len as usize,
                "a write must hold exactly one whole message"
            );
            let req = Message {
                ty: h.ty,
                req_id: h.req_id,
                tx_id: h.tx_id,
                payload: buf[HEADER_LEN..n].to_vec(),
            };
            for m in script(&req) {
                end.write_all(&m.encode()).unwrap();
            }
            served += 1;
        }
    })
}

/// Serves `script` on a stream socket (messages may arrive in pieces).
fn fake_socket(mut end: UnixStream, script: Script) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut served = 0;
        let mut d = Decoder::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(req) = d.next_message().unwrap() {
                for m in script(&req) {
                    end.write_all(&m.encode()).unwrap();
                }
                served += 1;
            }
            let n = end.read(&mut buf).unwrap();
            if n == 0 {
                return served;
            }
            d.push(&buf[..n]);
        }
    })
}

fn exercise(mut c: Client) {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.watch("/w", "tok").unwrap();
    assert_eq!(c.read_watch().unwrap(), ("/w".into(), "tok".into()));
    // An event arriving before a reply is queued for later.
    assert_eq!(c.read(0, "/a").unwrap(), b"hello");
    assert_eq!(c.queued_watches(), 1);
    assert_eq!(c.read_watch().unwrap(), ("/a/b".into(), "tok".into()));
    let e = c.read(0, "/missing").unwrap_err();
    assert_eq!(e.name(), Some("ENOENT"));
    c.write(0, "/x", b"1").unwrap();
    let tx = c.transaction_start().unwrap();
    assert_eq!(tx, 7);
    assert!(c.transaction_end(tx, true).unwrap_err().is_again());
    assert_eq!(
        c.request(MsgType::Introduce, 0, b"1\0").unwrap_err().name(),
        Some("ENOSYS")
    );
}

#[test]
fn xenbus_transport_one_message_per_write() {
    let (mine, theirs) = seqpacket_pair();
    let fake = fake_xenbus(theirs, store);
    let c = Client::from_transport(Transport::Xenbus(Xenbus::from_file(mine)));
    assert!(c.socket().is_xenbus());
    exercise(c);
    assert_eq!(fake.join().unwrap(), 7);
}

#[test]
fn socket_transport_over_socketpair() {
    let (mine, theirs) = UnixStream::pair().unwrap();
    let fake = fake_socket(theirs, store);
    let c = Client::from_transport(Transport::Unix(mine));
    assert!(!c.socket().is_xenbus());
    exercise(c);
    assert_eq!(fake.join().unwrap(), 7);
}

#[test]
fn xenbus_read_timeout_and_late_reply_is_dropped() {
    let (mine, mut theirs) = seqpacket_pair();
    let mut c = Client::from_transport(Transport::Xenbus(Xenbus::from_file(mine)));
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(
        c.socket().read_timeout().unwrap(),
        Some(Duration::from_millis(100))
    );
    let e = c.read(0, "/slow").unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // The fake answers the first request late, then the second one.
    let mut buf = [0u8; 256];
    let n = theirs.read(&mut buf).unwrap();
    let h = Header::decode(buf[..HEADER_LEN].try_into().unwrap());
    assert_eq!(n, HEADER_LEN + h.len as usize);
    let late = Message::new(MsgType::Read, h.req_id, 0, b"late".to_vec());
    theirs.write_all(&late.encode()).unwrap();
    let t = std::thread::spawn(move || {
        let n = theirs.read(&mut buf).unwrap();
        let h = Header::decode(buf[..HEADER_LEN].try_into().unwrap());
        assert_eq!(n, HEADER_LEN + h.len as usize);
        let m = Message::new(MsgType::Read, h.req_id, 0, b"fresh".to_vec());
        theirs.write_all(&m.encode()).unwrap();
        theirs
    });
    assert_eq!(c.read(0, "/slow").unwrap(), b"fresh");
    drop(t.join().unwrap());
    // Without a timeout the wait would be forever; with the peer gone, it is end of file.
    c.set_read_timeout(None).unwrap();
    assert!(matches!(c.read(0, "/x").unwrap_err(), Error::Io(_)));
}

#[test]
fn connect_picks_socket_or_device_by_file_type() {
    let dir = std::env::temp_dir().join(format!("xs-client-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("socket");
    let _listener = UnixListener::bind(&sock).unwrap();
    let dev = dir.join("xenbus");
    std::fs::write(&dev, b"").unwrap();

    assert!(!Client::connect_path(&sock).unwrap().socket().is_xenbus());
    assert!(Client::connect_path(&dev).unwrap().socket().is_xenbus());
    assert!(Client::open_xenbus(&dev).unwrap().socket().is_xenbus());
    // connect_to means the socket, always.
    assert!(!Client::connect_to(&sock).unwrap().socket().is_xenbus());
    assert!(Client::connect_to(&dev).is_err());
    let e = Client::connect_path(&dir.join("nothing")).unwrap_err();
    assert!(e.to_string().contains("nothing"), "{e}");

    // $XENSTORED_PATH wins, whatever it names. (The only test touching the environment.)
    std::env::set_var(SOCKET_ENV, &sock);
    assert!(!Client::connect().unwrap().socket().is_xenbus());
    assert!(!Client::connect_socket().unwrap().socket().is_xenbus());
    std::env::set_var(SOCKET_ENV, &dev);
    assert!(Client::connect().unwrap().socket().is_xenbus());
    assert!(Client::connect_socket().is_err());
    std::env::remove_var(SOCKET_ENV);
    let _ = std::fs::remove_dir_all(&dir);
}
