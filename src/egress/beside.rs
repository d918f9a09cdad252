//! Starting the relay beside the script, inside the sandbox: the sandbox's
//! first command is `scriptbox egress-relay --config F -- CMD...`, which
//! binds the relay's sockets (port 53 needs the privilege to, which only
//! this step has), forks, and becomes CMD (the script) while the forked
//! child serves the relay. The script stays the direct child of whatever
//! started the sandbox, so its exit status is reported unchanged; the
//! relay dies with it (parent-death signal).
//!
//! Privileges end here, on both sides of the fork: the relay drops to the
//! run's uid (when it started as root) or clears its capabilities (in a
//! user namespace), and the command is executed with no ambient
//! capabilities, so nothing the relay needed reaches the script.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use super::EgressError;
use super::relay::Relay;

/// Runs `relay` in a forked child and executes `command` in this process.
/// Returns only when something failed before the command started.
///
/// Must be called while this process has one thread: `fork` copies only
/// the calling thread (the hidden command calls it before starting any
/// runtime).
pub fn serve_beside(relay: Relay, drop_to: Option<u32>, command: &[OsString]) -> EgressError {
    let io = |what: &str| EgressError::Io(format!("{what}: {}", std::io::Error::last_os_error()));
    let Some(program) = command.first() else {
        return EgressError::Io("no command to run beside the relay".into());
    };
    let argv: Result<Vec<CString>, _> = command
        .iter()
        .map(|a| CString::new(a.as_bytes().to_vec()))
        .collect();
    let Ok(argv) = argv else {
        return EgressError::Io("a command argument holds a NUL byte".into());
    };
    let Ok(program) = CString::new(program.as_bytes().to_vec()) else {
        return EgressError::Io("the command holds a NUL byte".into());
    };
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: getpid takes no arguments.
    let script_pid = unsafe { libc::getpid() };
    // SAFETY: this process has a single thread (the caller's contract), so
    // the child may run arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return io("fork");
    }
    if pid == 0 {
        let code = match relay_child(relay, drop_to, script_pid) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        // SAFETY: ends this (child) process without running the parent's
        // exit handlers twice.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: prctl with these arguments only clears this process's
    // ambient capability set; execvp reads NUL-terminated strings that
    // outlive the call.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::execvp(program.as_ptr(), pointers.as_ptr());
    }
    io(&format!("executing {}", program.to_string_lossy()))
}

/// The forked relay: tied to the script's life, away from its output,
/// without privileges, serving until killed.
fn relay_child(
    relay: Relay,
    drop_to: Option<u32>,
    script_pid: libc::pid_t,
) -> Result<(), EgressError> {
    let io = |what: &str| EgressError::Io(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != script_pid {
            return Err(EgressError::Io(
                "the script ended before the relay started".into(),
            ));
        }
    }
    detach_stdio()?;
    drop_privileges(drop_to).map_err(|()| io("dropping privileges"))?;
    relay.run()
}

/// The relay writes nothing into the script's output.
fn detach_stdio() -> Result<(), EgressError> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| EgressError::Io(format!("/dev/null: {e}")))?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(EgressError::Io("redirecting the relay's stdio".into()));
        }
    }
    Ok(())
}

/// Root (the local sandbox run by root) becomes `uid`; anyone else (a
/// user namespace's caps from bwrap) loses every capability. Then no new
/// privileges, ever.
fn drop_privileges(drop_to: Option<u32>) -> Result<(), ()> {
    // SAFETY: each call changes only this process's credentials, and
    // capset reads the two local structs it is given.
    unsafe {
        if let Some(uid) = drop_to.filter(|_| libc::geteuid() == 0)
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0)
        {
            return Err(());
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(());
        }
    }
    Ok(())
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` (the libc crate does not define it).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
