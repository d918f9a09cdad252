//! The local sandbox's seccomp filter: which system calls a script may not
//! make, kept as data in `src/data/seccomp.json` (the JSON that
//! firecracker's `seccompiler` reads), compiled to classic BPF once per
//! process and handed to the sandbox's init as memory files
//! (`sandbox-init --seccomp-fd`), which installs the programs once it has
//! mounted the environment's view ([`super::view`]), before it starts
//! anything: every process of the sandbox but the init's set-up runs
//! under them.
//!
//! Refused calls return an error (EPERM, or ENOSYS for `clone3`) instead
//! of killing the script, so that libraries which probe for a feature fall
//! back. The data file's filters:
//! - `refused`: every architecture; answered with EPERM;
//! - `refused_<arch>` (such as `refused_x86_64`): calls that exist only on
//!   that architecture, merged into `refused` there;
//! - `enosys`: answered with ENOSYS (a second program, since a seccompiler
//!   filter has one match action).
//!
//! The compiled programs check the architecture (any other one, such as
//! i386 through `int 0x80`, kills the process); on x86_64 a three-instruction
//! prefix also refuses x32 calls (numbers with bit 30 set), which the
//! architecture check cannot tell apart.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The filter, as seccompiler's JSON.
const FILTER_JSON: &str = include_str!("../data/seccomp.json");

/// Why the filter could not be made or applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SeccompError {
    /// The data file does not compile (a defect caught by the unit tests).
    #[error("src/data/seccomp.json: {0}")]
    Data(String),
    /// This architecture has no syscall table in seccompiler.
    #[error(
        "the local sandbox's seccomp filter has no rules for the {0} architecture (seccompiler knows x86_64, aarch64 and riscv64); use --backend docker"
    )]
    Arch(String),
    /// Writing the programs for a run failed.
    #[error("seccomp filter: {0}")]
    Io(String),
}

/// `struct sock_filter` fields, for the hand-written x32 prefix.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// x32 system calls are the x86_64 ones with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// One `struct sock_filter` as the kernel reads it (8 bytes, native order).
fn instruction(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&code.to_ne_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..8].copy_from_slice(&k.to_ne_bytes());
    b
}

/// Compiles the data file for `arch` (as in `std::env::consts::ARCH`):
/// the programs in the order bwrap should install them, each as the bytes
/// of its `sock_filter` array.
pub fn compile(arch: &str) -> Result<Vec<Vec<u8>>, SeccompError> {
    let target = seccompiler::TargetArch::try_from(arch)
        .map_err(|_| SeccompError::Arch(arch.to_string()))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(FILTER_JSON).map_err(|e| SeccompError::Data(e.to_string()))?;
    let filters = doc
        .as_object_mut()
        .ok_or_else(|| SeccompError::Data("expected an object of filters".into()))?;
    // Architecture-specific refusals join the common ones; the other
    // architectures' names would not compile here.
    let specific: Vec<String> = filters
        .keys()
        .filter(|k| k.starts_with("refused_"))
        .cloned()
        .collect();
    for key in specific {
        let extra = filters.remove(&key).unwrap_or_default();
        if key != format!("refused_{arch}") {
            continue;
        }
        let rules = extra["filter"].as_array().cloned().unwrap_or_default();
        filters
            .get_mut("refused")
            .and_then(|f| f["filter"].as_array_mut())
            .ok_or_else(|| SeccompError::Data("no 'refused' filter".into()))?
            .extend(rules);
    }
    let text = serde_json::to_vec(&doc).map_err(|e| SeccompError::Data(e.to_string()))?;
    let mut map = seccompiler::compile_from_json(text.as_slice(), target)
        .map_err(|e| SeccompError::Data(e.to_string()))?;
    let mut programs = Vec::new();
    for name in ["refused", "enosys"] {
        let program = map
            .remove(name)
            .ok_or_else(|| SeccompError::Data(format!("no '{name}' filter")))?;
        let mut bytes = Vec::with_capacity(8 * (program.len() + 3));
        if name == "refused" && arch == "x86_64" {
            // nr >= X32_SYSCALL_BIT: refused; else on to seccompiler's
            // program, whose architecture check comes first.
            bytes.extend(instruction(BPF_LD_W_ABS, 0, 0, 0));
            bytes.extend(instruction(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT));
            bytes.extend(instruction(
                BPF_RET_K,
                0,
                0,
                SECCOMP_RET_ERRNO | libc::EPERM as u32,
            ));
        }
        for i in &program {
            bytes.extend(instruction(i.code, i.jt, i.jf, i.k));
        }
        programs.push(bytes);
    }
    Ok(programs)
}

/// This machine's programs, compiled on first use.
fn programs() -> Result<&'static [Vec<u8>], SeccompError> {
    static PROGRAMS: OnceLock<Result<Vec<Vec<u8>>, SeccompError>> = OnceLock::new();
    PROGRAMS
        .get_or_init(|| compile(std::env::consts::ARCH))
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// One run's copies of the programs: memory files, close-on-exec here,
/// whose numbers the init gets after [`Filters::pre_exec`] clears that
/// flag in bwrap's child (so concurrent runs never inherit each other's).
pub struct Filters {
    files: Vec<File>,
}

impl Filters {
    /// Writes this machine's programs into fresh memory files.
    pub fn new() -> Result<Self, SeccompError> {
        let io = |e: std::io::Error| SeccompError::Io(e.to_string());
        let mut files = Vec::new();
        for program in programs()? {
            // SAFETY: the name is a valid NUL-terminated string and the
            // flags are plain bits; the result is checked before use.
            let fd =
                unsafe { libc::memfd_create(c"scriptbox-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(io(std::io::Error::last_os_error()));
            }
            // SAFETY: memfd_create just returned this descriptor, owned by
            // no one else.
            let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            // Never 0-2: the child's standard streams are put there before
            // pre_exec, and would replace the program.
            if fd <= 2 {
                // SAFETY: fcntl duplicates a descriptor we own; checked.
                let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
                if dup < 0 {
                    return Err(io(std::io::Error::last_os_error()));
                }
                // SAFETY: a fresh descriptor from fcntl, owned by no one else.
                file = File::from(unsafe { OwnedFd::from_raw_fd(dup) });
            }
            file.write_all(program).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            files.push(file);
        }
        Ok(Self { files })
    }

    /// The descriptor numbers, for `sandbox-init --seccomp-fd`.
    pub fn fds(&self) -> Vec<i32> {
        self.files.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Lets bwrap (and the init it starts) inherit `fds` (from [`Filters::fds`]); for a pre_exec
    /// closure, so only async-signal-safe calls.
    pub fn pre_exec(fds: &[i32]) -> std::io::Result<()> {
        for &fd in fds {
            // SAFETY: fcntl on a descriptor this process holds open (the
            // parent keeps the Filters until the child has started).
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Installs `bytes`, one of the programs [`Filters`] hands over (a
/// `sock_filter` array), on this process and everything it starts, with
/// no-new-privileges set (the kernel requires one or the other). The
/// sandbox's init calls it once its set-up is done.
pub fn install(bytes: &[u8]) -> Result<(), SeccompError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return Err(SeccompError::Io(format!(
            "{} bytes, expected a whole number of 8-byte instructions",
            bytes.len()
        )));
    }
    let program: Vec<seccompiler::sock_filter> = bytes
        .chunks_exact(8)
        .map(|b| seccompiler::sock_filter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect();
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| SeccompError::Io(format!("installing the filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_compiles_for_every_architecture_seccompiler_knows() {
        for arch in ["x86_64", "aarch64", "riscv64"] {
            let programs = compile(arch).unwrap();
            assert_eq!(programs.len(), 2, "{arch}");
            for p in &programs {
                assert!(!p.is_empty() && p.len() % 8 == 0, "{arch}");
            }
        }
        // The x86_64-only names join the common list there alone.
        assert!(compile("x86_64").unwrap()[0].len() > compile("aarch64").unwrap()[0].len());
        assert!(matches!(compile("sparc"), Err(SeccompError::Arch(_))));
    }

    #[test]
    fn the_x32_prefix_refuses_numbers_with_bit_30() {
        let p = &compile("x86_64").unwrap()[0];
        assert_eq!(&p[0..8], &instruction(BPF_LD_W_ABS, 0, 0, 0));
        assert_eq!(
            &p[8..16],
            &instruction(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT)
        );
        assert_eq!(
            &p[16..24],
            &instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | 1)
        );
    }
}
