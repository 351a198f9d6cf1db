//! Emulator processes that never outlive xtask.
//!
//! An emulator is started in a process group of its own, so that a timeout
//! can kill it and anything it started in one call, and with the parent-death
//! signal set, so that it dies with xtask even when xtask is killed hard (a
//! Ctrl-C in the terminal, CI's time limit).
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use anyhow::{Context, Result};

/// A running emulator in its own process group (whose id is its pid).
pub struct Group {
    pub child: Child,
    pgid: libc::pid_t,
}

/// Whether xtask runs as root (it may then install packages itself).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Spawns `cmd` as the leader of a new process group, set to receive SIGKILL
/// when the thread that spawned it exits. Spawn from the main thread: the
/// kernel delivers the parent-death signal when the spawning *thread* ends.
pub fn spawn_group(cmd: &mut Command) -> Result<Group> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit), touching no memory
    // shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
    let pgid = child.id() as libc::pid_t;
    Ok(Group { child, pgid })
}

impl Group {
    /// The process group id, for killing from another thread.
    pub fn killer(&self) -> Killer {
        Killer { pgid: self.pgid }
    }
}

/// Kills a process group; cheap to copy into threads.
#[derive(Clone, Copy)]
pub struct Killer {
    pgid: libc::pid_t,
}

impl Killer {
    /// SIGKILLs every process of the group. Harmless when it is already gone.
    pub fn kill(&self) {
        if self.pgid > 0 {
            // SAFETY: kill has no memory-safety preconditions; a negative pid
            // addresses the group we created, and ESRCH (already gone) is fine.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    /// Whatever happened, leave no emulator behind.
    fn drop(&mut self) {
        self.killer().kill();
        let _ = self.child.wait();
    }
}
