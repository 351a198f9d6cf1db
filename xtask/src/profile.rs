//! `cargo xtask bench --profile`: where the emulated CPUs spend their time, guests included.
//!
//! QEMU runs with its gdbstub on a local port; a thread stops the machine about every
//! 15 ms (gdb's interrupt), reads every emulated CPU's RIP and the first 32 words of its stack
//! (return addresses in the kernel's range give the callers) and lets it run again. No
//! guest or hypervisor change is needed, and what runs in a guest is seen as well as what
//! runs in the hypervisor. Each bench run writes `profile.samples` (one line per CPU and
//! sample: seconds, CPU, RIP, stack words) and `profile.md` (the functions most often seen
//! per CPU) next to its console log. Hypervisor addresses are named from its ELF symbol
//! table; Linux addresses from a `nm`-style list (`address type name` per line, as
//! `/proc/kallsyms` or `nm vmlinux` print it) named by `FERROVISOR_KALLSYMS`, else left as
//! addresses. Stopping the machine 60 times a second slows it: compare profiles with
//! profiles, never with unprofiled figures.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether `--profile` was given (set once by the bench).
pub static ENABLED: AtomicBool = AtomicBool::new(false);

/// Samplers running, by the bench run directory they write to.
static RUNNING: Mutex<Vec<(PathBuf, Sampler)>> = Mutex::new(Vec::new());

/// Time between samples.
const PERIOD: Duration = Duration::from_millis(15);
/// Stack words read per sample.
const STACK_WORDS: usize = 32;

/// A free local TCP port for a gdbstub (there is a small window in which another
/// process could take it; QEMU then fails to start and says so).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts sampling the gdbstub at `port` into `dir/profile.samples`.
pub fn start(port: u16, dir: &Path) {
    let stop = Arc::new(AtomicBool::new(false));
    let out = dir.join("profile.samples");
    let flag = stop.clone();
    let handle = std::thread::spawn(move || sample(port, &out, &flag));
    RUNNING.lock().unwrap().push((
        dir.to_path_buf(),
        Sampler {
            stop,
            handle: Some(handle),
        },
    ));
}

/// Stops the sampler started for `dir` or a directory inside it (if there is one) and
/// writes `profile.md` next to its samples.
pub fn finish(dir: &Path, hypervisor: &Path) -> Result<()> {
    let (dir, sampler) = {
        let mut running = RUNNING.lock().unwrap();
        let Some(i) = running.iter().position(|(d, _)| d.starts_with(dir)) else {
            return Ok(());
        };
        running.remove(i)
    };
    let dir = dir.as_path();
    let samples = sampler.finish()?;
    let kallsyms = std::env::var_os("FERROVISOR_KALLSYMS").map(PathBuf::from);
    let text = report(
        &std::fs::read_to_string(dir.join("profile.samples"))?,
        &Symbols::from_elf(&std::fs::read(hypervisor)?)?,
        &match &kallsyms {
            Some(p) => Symbols::from_nm(&std::fs::read_to_string(p)?),
            None => Symbols::default(),
        },
    );
    std::fs::write(dir.join("profile.md"), text)?;
    eprintln!(
        "xtask: profile: {samples} samples in {}",
        crate::util::display_rel(&dir.join("profile.md"))
    );
    Ok(())
}

struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<usize>>>,
}

impl Sampler {
    fn finish(mut self) -> Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the profile sampler panicked"),
            None => Ok(0),
        }
    }
}

/// The sampling loop: returns how many CPU samples it wrote. The machine ending (the
/// stub's connection closing) ends it too.
fn sample(port: u16, out: &Path, stop: &AtomicBool) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline && !stop.load(Ordering::SeqCst) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => return Err(e).context("cannot reach QEMU's gdbstub"),
        }
    };
    let mut stub = Stub::new(stream);
    stub.request("QStartNoAckMode")?;
    stub.no_ack = true;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let (t0, mut written) = (Instant::now(), 0);
    let mut threads: Vec<String> = Vec::new();
    // The machine ending closes the connection: that ends the loop, it is no error.
    let mut one = |stub: &mut Stub, file: &mut std::io::BufWriter<std::fs::File>| -> Result<()> {
        stub.interrupt()?;
        if threads.is_empty() {
            // The list comes in parts (QEMU gives one CPU per answer): qfThreadInfo, then
            // qsThreadInfo until the answer `l` (end of list).
            let mut answer = stub.request("qfThreadInfo")?;
            while answer.starts_with('m') {
                threads.extend(thread_ids(&answer));
                answer = stub.request("qsThreadInfo")?;
            }
        }
        let t = t0.elapsed().as_secs_f64();
        for (i, id) in threads.iter().enumerate() {
            stub.request(&format!("Hg{id}"))?;
            let regs = parse_hex_bytes(&stub.request("g")?);
            let (Some(rsp), Some(rip)) = (word(&regs, 7), word(&regs, 16)) else {
                continue;
            };
            let stack = parse_hex_bytes(&stub.request(&format!("m{rsp:x},{:x}", STACK_WORDS * 8))?);
            let callers = (0..STACK_WORDS)
                .filter_map(|w| word(&stack, w))
                .filter(|&a| a >> 32 == 0xffff_ffff)
                .map(|a| format!(" {a:x}"))
                .collect::<String>();
            writeln!(file, "{t:.3} {i} {rip:x}{callers}")?;
            written += 1;
        }
        stub.send("c")
    };
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(PERIOD);
        if one(&mut stub, &mut file).is_err() {
            break;
        }
    }
    let _ = stub.interrupt().and_then(|()| stub.send("D"));
    file.flush()?;
    Ok(written)
}

/// Word `i` (little-endian, 8 bytes) of `bytes`.
fn word(bytes: &[u8], i: usize) -> Option<u64> {
    let b = bytes.get(i * 8..i * 8 + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The thread ids of a `qfThreadInfo` answer (`m1,2,3`).
fn thread_ids(answer: &str) -> Vec<String> {
    answer
        .strip_prefix('m')
        .map(|l| l.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Hex text to bytes (an error answer such as `E14` gives nothing).
fn parse_hex_bytes(s: &str) -> Vec<u8> {
    if !s.len().is_multiple_of(2) || s.starts_with('E') {
        return Vec::new();
    }
    (0..s.len() / 2)
        .map_while(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// One packet of the GDB remote protocol: `$data#checksum`.
fn frame(data: &str) -> Vec<u8> {
    let sum = data.bytes().fold(0u8, u8::wrapping_add);
    format!("${data}#{sum:02x}").into_bytes()
}

/// The payload of the first whole packet in `buf`, and how many bytes it used.
fn unframe(buf: &[u8]) -> Option<(String, usize)> {
    let start = buf.iter().position(|&b| b == b'$')?;
    let hash = start + buf[start..].iter().position(|&b| b == b'#')?;
    if buf.len() < hash + 3 {
        return None;
    }
    Some((
        String::from_utf8_lossy(&buf[start + 1..hash]).into_owned(),
        hash + 3,
    ))
}

/// A connection to a gdbstub.
struct Stub {
    stream: TcpStream,
    buf: Vec<u8>,
    no_ack: bool,
}

impl Stub {
    fn new(stream: TcpStream) -> Stub {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        Stub {
            stream,
            buf: Vec::new(),
            no_ack: false,
        }
    }

    fn send(&mut self, data: &str) -> Result<()> {
        self.stream.write_all(&frame(data))?;
        Ok(())
    }

    fn receive(&mut self) -> Result<String> {
        loop {
            if let Some((payload, used)) = unframe(&self.buf) {
                self.buf.drain(..used);
                if !self.no_ack {
                    self.stream.write_all(b"+")?;
                }
                return Ok(payload);
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the gdbstub closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn request(&mut self, data: &str) -> Result<String> {
        self.send(data)?;
        self.receive()
    }

    /// Stops the machine (gdb's interrupt) and waits for the stop reply.
    fn interrupt(&mut self) -> Result<()> {
        self.stream.write_all(&[3])?;
        self.receive().map(drop)
    }
}

/// Addresses to names.
#[derive(Default)]
pub struct Symbols(Vec<(u64, String)>);

impl Symbols {
    /// From `nm` / `/proc/kallsyms` text: `address type name [module]` per line; text
    /// symbols only.
    pub fn from_nm(text: &str) -> Symbols {
        let mut v: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (a, t, n) = (f.next()?, f.next()?, f.next()?);
                if !matches!(t, "t" | "T" | "w" | "W") {
                    return None;
                }
                Some((u64::from_str_radix(a, 16).ok()?, n.to_string()))
            })
            .collect();
        v.sort();
        Symbols(v)
    }

    /// From an ELF64 file's `.symtab` (function symbols).
    pub fn from_elf(elf: &[u8]) -> Result<Symbols> {
        let u16_at = |o| crate::util::le_field(elf, o, 2);
        let u32_at = |o| crate::util::le_field(elf, o, 4);
        let u64_at = |o| crate::util::le_field(elf, o, 8);
        if elf.get(..5) != Some(b"\x7fELF\x02") {
            bail!("not an ELF64 file");
        }
        let bad = || anyhow::anyhow!("truncated ELF");
        let shoff = u64_at(0x28).ok_or_else(bad)?;
        let shentsize = u16_at(0x3a).ok_or_else(bad)?;
        let shnum = u16_at(0x3c).ok_or_else(bad)?;
        // A section header's type, file offset, size, link and entry size.
        // Offsets come from the file: every sum is checked (None: a malformed file).
        let section = |i: usize| -> Option<(usize, usize, usize, usize, usize)> {
            let o = shoff.checked_add(i.checked_mul(shentsize)?)?;
            let field = |d: usize| o.checked_add(d);
            Some((
                u32_at(field(4)?)?,
                u64_at(field(0x18)?)?,
                u64_at(field(0x20)?)?,
                u32_at(field(0x28)?)?,
                u64_at(field(0x38)?)?,
            ))
        };
        let mut v = Vec::new();
        for i in 0..shnum {
            let Some((2, off, size, link, entsize)) = section(i) else {
                continue; // SHT_SYMTAB only
            };
            let (_, stroff, strsize, _, _) = section(link).ok_or_else(bad)?;
            let strtab = elf
                .get(stroff..stroff.checked_add(strsize).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            let end = off.checked_add(size).ok_or_else(bad)?;
            for s in (off..end).step_by(entsize.max(24)) {
                let (Some(name), Some(info), Some(value)) = (
                    u32_at(s),
                    s.checked_add(4).and_then(|o| elf.get(o)),
                    s.checked_add(8).and_then(u64_at),
                ) else {
                    break;
                };
                if info & 0xf != 2 || value == 0 {
                    continue; // STT_FUNC only
                }
                let name = strtab.get(name..).unwrap_or_default();
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                v.push((
                    value as u64,
                    demangle(&String::from_utf8_lossy(&name[..end])),
                ));
            }
        }
        v.sort();
        Ok(Symbols(v))
    }

    /// The symbol `address` falls in (the nearest one below it, within 64 KiB).
    pub fn name(&self, address: u64) -> Option<&str> {
        let i = self
            .0
            .partition_point(|(a, _)| *a <= address)
            .checked_sub(1)?;
        let (a, n) = &self.0[i];
        (address - a < 0x1_0000).then_some(n.as_str())
    }
}

/// A Rust symbol in the legacy mangling (`_ZN` + length-prefixed path + `17h<hash>E`) as a
/// path without the hash, e.g. `ferrovisor::schedule::wait_until`; other names unchanged.
fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else {
        return name.to_string();
    };
    let mut parts = Vec::new();
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&d| d > 0) {
        let Ok(len) = rest[..digits].parse::<usize>() else {
            break;
        };
        let Some(part) = rest.get(digits..digits + len) else {
            return name.to_string();
        };
        rest = &rest[digits + len..];
        if !(part.len() == 17 && part.starts_with('h') && rest == "E") {
            parts.push(part);
        }
    }
    let mut path = parts.join("::");
    for (from, to) in [
        ("$LT$", "<"),
        ("$GT$", ">"),
        ("$RF$", "&"),
        ("$BP$", "*"),
        ("$C$", ","),
        ("$u20$", " "),
        ("$u27$", "'"),
        ("$u5b$", "["),
        ("$u5d$", "]"),
        ("$u7b$", "{"),
        ("$u7d$", "}"),
        ("..", "::"),
    ] {
        path = path.replace(from, to);
    }
    path
}

/// `profile.md`: per CPU, the functions most often seen, and for the first ones the
/// callers most often found on the stack.
pub fn report(samples: &str, hypervisor: &Symbols, kernel: &Symbols) -> String {
    let name = |a: u64| -> String {
        if a >= 0xffff_ffff_8000_0000 {
            kernel
                .name(a)
                .map_or_else(|| format!("linux {a:#x}"), str::to_string)
        } else if let Some(n) = hypervisor.name(a) {
            format!("ferrovisor {n}")
        } else {
            "guest user space".to_string()
        }
    };
    let mut per_cpu: HashMap<String, (usize, HashMap<String, usize>)> = HashMap::new();
    let mut chains: HashMap<(String, String), usize> = HashMap::new();
    for line in samples.lines() {
        let mut f = line.split_whitespace();
        let (Some(_), Some(cpu), Some(rip)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(rip) = u64::from_str_radix(rip, 16) else {
            continue;
        };
        let here = name(rip);
        let e = per_cpu.entry(cpu.to_string()).or_default();
        e.0 += 1;
        *e.1.entry(here.clone()).or_default() += 1;
        if rip >= 0xffff_ffff_8000_0000 {
            let callers: Vec<String> = f
                .filter_map(|w| u64::from_str_radix(w, 16).ok())
                .filter_map(|a| kernel.name(a).map(str::to_string))
                .take(4)
                .collect();
            if !callers.is_empty() {
                *chains
                    .entry((
                        cpu.to_string(),
                        format!("{here} <- {}", callers.join(" <- ")),
                    ))
                    .or_default() += 1;
            }
        }
    }
    let mut out = String::from("# Profile (gdbstub samples)\n");
    let mut cpus: Vec<_> = per_cpu.into_iter().collect();
    cpus.sort_by(|a, b| a.0.cmp(&b.0));
    for (cpu, (n, hist)) in cpus {
        let _ = writeln!(out, "\n## CPU {cpu}: {n} samples\n");
        let mut top: Vec<_> = hist.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (s, k) in top.iter().take(30) {
            let _ = writeln!(out, "{k:6} {:5.1} %  {s}", 100.0 * *k as f64 / n as f64);
        }
        let mut ch: Vec<_> = chains.iter().filter(|((c, _), _)| *c == cpu).collect();
        ch.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !ch.is_empty() {
            let _ = writeln!(
                out,
                "\nCallers (stack words in Linux's text, nearest first):\n"
            );
        }
        for ((_, c), k) in ch.iter().take(15) {
            let _ = writeln!(out, "{k:6}  {c}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_frame_and_unframe() {
        assert_eq!(frame("g"), b"$g#67");
        assert_eq!(frame("QStartNoAckMode"), b"$QStartNoAckMode#b0");
        assert_eq!(unframe(b"+$OK#9a"), Some(("OK".to_string(), 7)));
        assert_eq!(unframe(b"$T05thread:01;#"), None, "checksum not in yet");
        assert_eq!(unframe(b"noise"), None);
        assert_eq!(thread_ids("m1,2,3"), ["1", "2", "3"]);
        assert!(thread_ids("l").is_empty());
        assert_eq!(parse_hex_bytes("0aff"), [0x0a, 0xff]);
        assert!(parse_hex_bytes("E14").is_empty());
        assert_eq!(word(&[1, 0, 0, 0, 0, 0, 0, 0, 2], 0), Some(1));
        assert_eq!(word(&[1, 0, 0], 0), None);
    }

    #[test]
    fn rust_names_demangled() {
        assert_eq!(
            demangle("_ZN10ferrovisor8schedule10wait_until17h649482ed7064672bE"),
            "ferrovisor::schedule::wait_until"
        );
        assert_eq!(
            demangle("_ZN10ferrovisor6domain6memory20GuestMemory$LT$F$GT$13for_each_page17hcea679e30f33192bE"),
            "ferrovisor::domain::memory::GuestMemory<F>::for_each_page"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
        assert_eq!(
            demangle("_ZN99short"),
            "_ZN99short",
            "a length past the end"
        );
    }

    #[test]
    fn names_from_nm_text() {
        let s = Symbols::from_nm(
            "ffffffff81000000 T _text\nffffffff81000100 t helper\n\
             ffffffff82000000 D some_data\nffffffffc0001000 t blkif_x [xen_blkback]\n",
        );
        assert_eq!(s.name(0xffff_ffff_8100_0010), Some("_text"));
        assert_eq!(s.name(0xffff_ffff_8100_0100), Some("helper"));
        assert_eq!(s.name(0xffff_ffff_c000_1008), Some("blkif_x"));
        assert_eq!(s.name(0xffff_ffff_8000_0000), None, "below every symbol");
        assert_eq!(s.name(0xffff_ffff_8200_0000), None, "data is not named");
    }

    #[test]
    fn report_counts_per_cpu_with_callers() {
        let k = Symbols::from_nm("ffffffff81000000 T memcpy\nffffffff81001000 T caller\n");
        let h = Symbols(vec![(0x20_0000, "wait_until".to_string())]);
        let text = report(
            "0.1 0 ffffffff81000004 ffffffff81001010\n0.2 0 ffffffff81000008\n\
             0.2 1 200010\n0.3 1 7f0000001000\n",
            &h,
            &k,
        );
        assert!(text.contains("## CPU 0: 2 samples"), "{text}");
        assert!(text.contains("     2 100.0 %  memcpy"), "{text}");
        assert!(text.contains("     1  memcpy <- caller"), "{text}");
        assert!(text.contains("ferrovisor wait_until"), "{text}");
        assert!(text.contains("guest user space"), "{text}");
    }

    /// A gdbstub that answers as QEMU's does: the thread list in parts (one CPU per
    /// answer, then `l`), registers and stack memory per thread; it hangs up after
    /// `stops` interrupts, as QEMU does when the machine ends.
    fn fake_stub(listener: std::net::TcpListener, stops: usize) -> Vec<String> {
        let (mut s, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let (mut buf, mut current, mut interrupts) = (Vec::new(), String::new(), 0);
        let mut chunk = [0u8; 4096];
        loop {
            // Interrupts come bare (0x03), requests framed; acks (`+`) are skipped.
            while let Some(at) = buf.iter().position(|&b| b == 3 || b == b'$') {
                if buf[at] == 3 {
                    buf.drain(..=at);
                    interrupts += 1;
                    if interrupts > stops {
                        return seen;
                    }
                    s.write_all(&frame("T05thread:01;")).unwrap();
                    continue;
                }
                let Some((req, used)) = unframe(&buf) else {
                    break;
                };
                buf.drain(..used);
                let reply = match req.as_str() {
                    "QStartNoAckMode" | "D" => "OK".to_string(),
                    "qfThreadInfo" => "m1".to_string(),
                    "qsThreadInfo" if !seen.iter().any(|r| r == "qsThreadInfo") => "m2".to_string(),
                    "qsThreadInfo" => "l".to_string(),
                    "c" => String::new(),
                    "g" => {
                        // RSP (word 7) and RIP (word 16) differ per thread.
                        let t: u64 = current.parse().unwrap();
                        (0..17u64)
                            .map(|w| match w {
                                7 => 0x8000 * t,
                                16 => 0xffff_ffff_8100_0000 + t,
                                _ => 0,
                            })
                            .flat_map(u64::to_le_bytes)
                            .map(|b| format!("{b:02x}"))
                            .collect()
                    }
                    r if r.starts_with("Hg") => {
                        current = r[2..].to_string();
                        "OK".to_string()
                    }
                    r if r.starts_with('m') => {
                        // One return address in the kernel's range, one outside it.
                        let words = [0xffff_ffff_8100_1000_u64, 0x1234];
                        (0..STACK_WORDS)
                            .flat_map(|i| words.get(i).copied().unwrap_or(0).to_le_bytes())
                            .map(|b| format!("{b:02x}"))
                            .collect()
                    }
                    _ => String::new(),
                };
                seen.push(req.clone());
                if req != "c" {
                    s.write_all(&frame(&reply)).unwrap();
                }
            }
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                return seen;
            }
            buf.extend(chunk[..n].iter().filter(|&&b| b != b'+'));
        }
    }

    #[test]
    fn sampler_reads_every_cpu_of_a_thread_list_in_parts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stub = std::thread::spawn(move || fake_stub(listener, 3));
        let out = std::env::temp_dir().join(format!("fv-profile-{}.samples", std::process::id()));
        let n = sample(port, &out, &AtomicBool::new(false)).unwrap();
        let seen = stub.join().unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(n, 6, "two CPUs on each of three stops:\n{text}");
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        for (i, l) in lines.iter().enumerate() {
            let cpu = i % 2;
            assert_eq!(l[1], cpu.to_string(), "{text}");
            assert_eq!(l[2], format!("ffffffff8100000{}", cpu + 1), "{text}");
            assert_eq!(
                &l[3..],
                ["ffffffff81001000"],
                "only kernel-range callers: {text}"
            );
        }
        // The list was read once, in its parts, before the first registers.
        let list: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .filter(|r| r.starts_with("q"))
            .collect();
        assert_eq!(list, ["qfThreadInfo", "qsThreadInfo", "qsThreadInfo"]);
    }

    #[test]
    fn hypervisor_symbols_from_its_elf() {
        // The xtask binary itself is an ELF64 with a symbol table on Linux hosts.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let s = Symbols::from_elf(&me).unwrap();
        assert!(s.0.len() > 100, "{} function symbols", s.0.len());
        assert!(Symbols::from_elf(b"not an elf").is_err());
    }
}
