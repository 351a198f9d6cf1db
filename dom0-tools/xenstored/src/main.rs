//! `xenstored`: the xenstore daemon for ferrovisor's dom0.
//!
//! Serves dom0 processes on a Unix socket, dom0's kernel through `/dev/xen/xenbus_backend`, and
//! each domain introduced with INTRODUCE on its granted ring page. `-N` runs without `/dev/xen`
//! (socket only), for tests on a host.
#![deny(unsafe_code)]

mod daemon;
mod log;
mod platform;
mod ring;
#[cfg(feature = "xen")]
mod xen;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use xenstore::core::Quotas;

/// The xenstore daemon.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Run without /dev/xen: serve the Unix socket only (no dom0 ring, no domain rings).
    #[arg(short = 'N', long)]
    no_domain_init: bool,
    /// Stay in the foreground (the default; accepted for compatibility).
    #[arg(short = 'D', long, conflicts_with = "daemon")]
    foreground: bool,
    /// Detach from the terminal and run in the background.
    #[arg(long)]
    daemon: bool,
    /// Write the daemon's pid to this file.
    #[arg(short = 'F', long)]
    pid_file: Option<PathBuf>,
    /// Log to this file instead of stderr (e.g. /var/log/xen/xenstored.log).
    #[arg(short = 'L', long)]
    log_file: Option<PathBuf>,
    /// The read-write socket.
    #[arg(
        long,
        env = "XENSTORED_PATH",
        default_value = "/var/run/xenstored/socket"
    )]
    socket: PathBuf,
    /// Also listen on a read-only socket (`socket_ro` next to the socket).
    #[arg(long)]
    ro_socket: bool,
    /// Nodes per unprivileged domain.
    #[arg(short = 'E', long, default_value_t = Quotas::default().nodes)]
    entry_nb: usize,
    /// Largest value an unprivileged domain may write.
    #[arg(short = 'S', long, default_value_t = Quotas::default().entry_size)]
    entry_size: usize,
    /// Watches per unprivileged domain.
    #[arg(short = 'W', long, default_value_t = Quotas::default().watches)]
    watch_nb: usize,
    /// Open transactions per unprivileged domain.
    #[arg(short = 't', long, default_value_t = Quotas::default().transactions)]
    transaction: usize,
}

#[cfg(feature = "xen")]
fn open_platform() -> anyhow::Result<Box<dyn platform::Platform>> {
    Ok(Box::new(xen::XenPlatform::open()?))
}

#[cfg(not(feature = "xen"))]
fn open_platform() -> anyhow::Result<Box<dyn platform::Platform>> {
    anyhow::bail!(
        "built without /dev/xen support (cargo feature `xen`); run with -N for a socket-only store"
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(f) = &args.log_file {
        log::to_file(f).with_context(|| format!("opening log file {}", f.display()))?;
    }
    let quotas = Quotas {
        nodes: args.entry_nb,
        entry_size: args.entry_size,
        watches: args.watch_nb,
        transactions: args.transaction,
        ..Quotas::default()
    };
    let ro_socket = args
        .ro_socket
        .then(|| args.socket.with_file_name("socket_ro"));
    let opts = daemon::Options {
        socket: args.socket.clone(),
        ro_socket,
    };
    let platform = if args.no_domain_init {
        None
    } else {
        Some(open_platform()?)
    };
    let mut d = daemon::Daemon::new(&opts, quotas, platform)?;
    if !args.no_domain_init {
        d.init_domains()?;
    }
    if args.daemon && !args.foreground {
        nix::unistd::daemon(false, args.log_file.is_none()).context("daemonizing")?;
    }
    if let Some(p) = &args.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    log!("listening on {}", opts.socket.display());
    d.run(&|| false)
}
