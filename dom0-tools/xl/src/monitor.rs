//! The background monitor `xl create` leaves per domain (as Xen's xl does): it waits for
//! the domain to shut down and applies `on_poweroff` / `on_reboot` / `on_crash` /
//! `on_watchdog`: the teardown removes the domain's devices (backends closed, loop devices
//! and bridge ports released) before destroying it, then forgets it in xenstore. Device
//! problems go to `/var/log/xen/xl-monitor.log`.

use crate::create;
use crate::hv::DomainInfo;
use anyhow::{Context, Result};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use xen_abi::fvctl::dominfo;
use xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, SHUTDOWN_WATCHDOG};
use xlcfg::{Action, DomainConfig};

/// Starts `xl __monitor DOMID CONFIG OVERRIDES...` detached from the terminal.
pub fn spawn(domid: u16, config: &str, overrides: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding xl's own path")?;
    let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.into());
    Command::new(exe)
        .arg("__monitor")
        .arg(domid.to_string())
        .arg(config)
        .args(overrides)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the domain monitor")?;
    Ok(())
}

/// What the monitor sees.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Running,
    /// Destroyed by someone else (xl destroy).
    Gone,
    /// Shut down: apply this action.
    ShutDown(Action, &'static str),
}

/// Classifies the domain's state for the monitor.
pub fn classify(domid: u16, info: Option<DomainInfo>, cfg: &DomainConfig) -> Seen {
    let Some(d) = info.filter(|d| d.domid == domid) else {
        return Seen::Gone;
    };
    if d.flags & dominfo::DYING != 0 {
        return Seen::Gone;
    }
    if d.flags & dominfo::SHUTDOWN == 0 {
        return Seen::Running;
    }
    match d.shutdown_reason {
        SHUTDOWN_POWEROFF => Seen::ShutDown(cfg.on_poweroff, "poweroff"),
        SHUTDOWN_REBOOT => Seen::ShutDown(cfg.on_reboot, "reboot"),
        SHUTDOWN_CRASH => Seen::ShutDown(cfg.on_crash, "crash"),
        SHUTDOWN_WATCHDOG => Seen::ShutDown(cfg.on_watchdog, "watchdog"),
        // Suspend / soft reset are not supported: treat as poweroff.
        _ => Seen::ShutDown(cfg.on_poweroff, "shutdown"),
    }
}

fn log(msg: &str) {
    let _ = std::fs::create_dir_all("/var/log/xen");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/xen/xl-monitor.log")
    {
        let _ = std::io::Write::write_all(&mut f, format!("{msg}\n").as_bytes());
    }
}

/// The monitor's main loop.
pub fn run(mut domid: u16, config: &str, overrides: &[String]) -> Result<()> {
    let mut hv = crate::backend::open_hv()?;
    let mut st = crate::backend::open_store()?;
    let mut host = crate::hotplug::RealHost;
    let mut teardown =
        |hv: &mut dyn crate::hv::Hv, st: &mut dyn crate::store::Store, domid: u16| {
            for e in create::teardown(hv, st, &mut host, domid) {
                log(&format!("domain {domid}: {e}"));
            }
        };
    // A second connection blocks in read_watch and wakes the loop; a poll every
    // 2 s covers a xenstored that does not fire @releaseDomain.
    let (tx, rx) = mpsc::channel();
    if let Ok(mut w) = crate::backend::open_store() {
        std::thread::spawn(move || {
            if w.watch("@releaseDomain", "xl-monitor").is_err() {
                return;
            }
            while w.read_watch().is_ok() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    let read_cfg = || -> Result<DomainConfig> {
        let text = std::fs::read_to_string(config)?;
        Ok(xlcfg::parse_with_overrides(config, &text, overrides)?)
    };
    let mut cfg = read_cfg()?;
    loop {
        let _ = rx.recv_timeout(Duration::from_secs(2));
        match classify(domid, hv.domain_info(domid)?, &cfg) {
            Seen::Running => {}
            Seen::Gone => {
                teardown(&mut *hv, &mut *st, domid);
                return Ok(());
            }
            Seen::ShutDown(action, why) => {
                log(&format!(
                    "domain {domid} ({}) {why}: {}",
                    cfg.name,
                    action.as_str()
                ));
                match action {
                    Action::Preserve => return Ok(()),
                    Action::Destroy => {
                        teardown(&mut *hv, &mut *st, domid);
                        return Ok(());
                    }
                    Action::Restart => {
                        // The new domain keeps the generated MACs (libxl keeps them in
                        // the saved config).
                        let keep = crate::device::vif_macs(&mut *st, domid);
                        teardown(&mut *hv, &mut *st, domid);
                        // Wait for the old domain to be gone so its memory is free again
                        // (xenconsoled unmaps its console page on @releaseDomain).
                        for _ in 0..100 {
                            if hv.domain_info(domid)?.is_none_or(|d| d.domid != domid) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        cfg = read_cfg()?;
                        let created = crate::prepare(config, overrides).and_then(|p| {
                            crate::cmd_create(
                                &mut *hv,
                                &mut *st,
                                &mut crate::hotplug::RealHost,
                                &p,
                                false,
                                &keep,
                            )
                        });
                        match created {
                            Ok(id) => {
                                log(&format!("domain {} restarted as {id}", cfg.name));
                                domid = id;
                            }
                            Err(e) => {
                                log(&format!("restarting {} failed: {e:#}", cfg.name));
                                return Err(e);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_reasons_map_to_actions() {
        let cfg = xlcfg::parse_with_overrides(
            "t",
            "name='a'\nkernel='k'\non_poweroff='preserve'\non_crash='restart'\n",
            &[],
        )
        .unwrap();
        let d = |flags, reason| {
            Some(DomainInfo {
                domid: 4,
                flags,
                shutdown_reason: reason,
                ..Default::default()
            })
        };
        assert_eq!(classify(4, d(dominfo::RUNNING, 0), &cfg), Seen::Running);
        assert_eq!(classify(4, None, &cfg), Seen::Gone);
        // DOMAIN_INFO answers the next domain when 4 is gone.
        assert_eq!(
            classify(
                4,
                Some(DomainInfo {
                    domid: 5,
                    ..Default::default()
                }),
                &cfg
            ),
            Seen::Gone
        );
        assert_eq!(classify(4, d(dominfo::DYING, 0), &cfg), Seen::Gone);
        assert_eq!(
            classify(4, d(dominfo::SHUTDOWN, SHUTDOWN_POWEROFF), &cfg),
            Seen::ShutDown(Action::Preserve, "poweroff")
        );
        assert_eq!(
            classify(4, d(dominfo::SHUTDOWN, SHUTDOWN_REBOOT), &cfg),
            Seen::ShutDown(Action::Restart, "reboot")
        );
        assert_eq!(
            classify(4, d(dominfo::SHUTDOWN, SHUTDOWN_CRASH), &cfg),
            Seen::ShutDown(Action::Restart, "crash")
        );
        assert_eq!(
            classify(4, d(dominfo::SHUTDOWN, SHUTDOWN_WATCHDOG), &cfg),
            Seen::ShutDown(Action::Destroy, "watchdog")
        );
    }
}
