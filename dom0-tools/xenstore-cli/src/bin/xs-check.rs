//! `xs-check --dom0|--domu [--base PATH] [--quota-max N] [--timeout SECS]`: checks xenstore as
//! dom0 or a domU sees it, one line per check, then `xs-check: N checks passed` (exit 0) or
//! `xs-check: FAIL: ...` (exit 1). Connects like libxenstore: `$XENSTORED_PATH`, else the
//! socket if it exists, else `/dev/xen/xenbus`.

use std::time::Duration;

use xenstore::Client;
use xenstore_cli::check::{run, Config, Role};

const USAGE: &str = "usage: xs-check --dom0|--domu [--base PATH] [--quota-max N] [--timeout SECS]";

fn parse(args: &[String]) -> Result<Config, String> {
    let mut role = None;
    let mut base = None;
    let mut quota_max = None;
    let mut timeout = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--dom0" => role = Some(Role::Dom0),
            "--domu" => role = Some(Role::DomU),
            "--base" => base = Some(value("--base")?),
            "--quota-max" => {
                let v = value("--quota-max")?;
                quota_max = Some(v.parse().map_err(|_| format!("bad --quota-max {v:?}"))?);
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let s: u64 = v.parse().map_err(|_| format!("bad --timeout {v:?}"))?;
                timeout = Some(Duration::from_secs(s.max(1)));
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut cfg = Config::new(role.ok_or_else(|| format!("say --dom0 or --domu\n{USAGE}"))?);
    cfg.base = base;
    if let Some(q) = quota_max {
        cfg.quota_max = q;
    }
    if let Some(t) = timeout {
        cfg.timeout = t;
    }
    Ok(cfg)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(m) => {
            eprintln!("{m}");
            std::process::exit(2);
        }
    };
    let mut c = match Client::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("xs-check: FAIL: connecting to xenstore: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    match run(&mut c, &cfg, &mut out) {
        Ok(n) => println!("xs-check: {n} checks passed"),
        Err(failures) => {
            let names: Vec<&str> = failures
                .iter()
                .map(|f| f.split(':').next().unwrap_or(f))
                .collect();
            println!(
                "xs-check: FAIL: {} check(s) failed: {}",
                failures.len(),
                names.join(", ")
            );
            std::process::exit(1);
        }
    }
}
