//! The bounds of the values a user gives bytejail, in one place: the CLI's flags and the fields
//! of a `bytejail batch` line are checked by the same functions, so that a value refused on the
//! command line is refused in a job line too, with the same limit in the message.
//!
//! Every check returns the value in the type the run options use, or one line saying what is
//! wrong and the limit; callers prefix it with the flag or field it came from.

use std::time::Duration;

use crate::abi;
use crate::units;

/// Longest timeout (`--timeout`, `timeout_ms`): a limit beyond a day is a mistake, not a plan.
pub const MAX_TIMEOUT: Duration = units::MAX_DURATION;

/// Largest output limit (`--max-output`, `max_output`): the host holds the output in memory
/// (and hex-encodes it for JSON), so this bounds what one job can make it buffer.
pub const MAX_OUTPUT: SizeBound = SizeBound {
    min: 0,
    max: 1 << 30,
    max_text: "1GiB",
};

/// Guest stack sizes (`--stack`): room for a few frames up to deeper than any sane recursion.
pub const STACK: SizeBound = SizeBound {
    min: abi::MIN_STACK,
    max: 1 << 30,
    max_text: "1GiB",
};

/// Scratch sizes (`--scratch`): at least one byte, at most what the runner maps for a guest.
pub const SCRATCH: SizeBound = SizeBound {
    min: 1,
    max: abi::MAX_REGION,
    max_text: "16GiB",
};

/// The guest's own memory (`--memory`): at least 64 KiB, at most 64 GiB.
pub const MEMORY: SizeBound = SizeBound {
    min: 64 << 10,
    max: 64 << 30,
    max_text: "64GiB",
};

/// The largest file a guest may write (`--max-file-size`).
pub const FILE_SIZE: SizeBound = SizeBound {
    min: 0,
    max: 64 << 30,
    max_text: "64GiB",
};

/// Processes and threads of one job (`--max-procs`), the worker included.
pub const MAX_PROCS: std::ops::RangeInclusive<u32> = 1..=4096;

/// Descriptors a guest may hold (`--max-open-files`): the worker's own and a few, up to a
/// bound that keeps one job from holding a large share of the machine's.
pub const OPEN_FILES: std::ops::RangeInclusive<u64> = abi::MIN_OPEN_FILES..=65536;

/// A size in bytes that must lie in `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeBound {
    /// Smallest accepted size in bytes.
    pub min: usize,
    /// Largest accepted size in bytes.
    pub max: usize,
    /// `max` as people write it, e.g. `1GiB`.
    pub max_text: &'static str,
}

impl SizeBound {
    /// Checks a number of bytes, given as any unsigned integer a caller may hold (a JSON
    /// number is a `u64`): nothing is truncated before the comparison.
    pub fn check(&self, bytes: u64) -> Result<usize, String> {
        if bytes < self.min as u64 {
            Err(format!(
                "{bytes} bytes is under the minimum of {} bytes",
                self.min
            ))
        } else if bytes > self.max as u64 {
            Err(format!(
                "{bytes} bytes is over the limit of {} ({} bytes)",
                self.max_text, self.max
            ))
        } else {
            // At most `max`, which is a usize.
            Ok(bytes as usize)
        }
    }

    /// Parses a size as the CLI's flags take it (`4096`, `64KiB`, `1.5MiB`) and checks it.
    pub fn parse(&self, text: &str) -> Result<usize, String> {
        let bytes = units::parse_size(text)?;
        self.check(bytes as u64)
    }
}

/// Parses a timeout as `--timeout` takes it (`300ms`, `2s`): more than 0, at most
/// [`MAX_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    // `parse_duration` refuses zero and anything over `units::MAX_DURATION`, which is
    // `MAX_TIMEOUT`.
    units::parse_duration(text)
}

/// A timeout given in whole milliseconds (`timeout_ms`): more than 0, at most [`MAX_TIMEOUT`].
pub fn timeout_from_ms(ms: u64) -> Result<Duration, String> {
    let max_ms = MAX_TIMEOUT.as_millis();
    if ms == 0 {
        Err("the timeout must be greater than 0 ms".into())
    } else if u128::from(ms) > max_ms {
        Err(format!("{ms} ms is over the limit of 24h ({max_ms} ms)"))
    } else {
        Ok(Duration::from_millis(ms))
    }
}

/// Parses a code offset as `--entry` takes it: decimal or `0x`-hex.
pub fn parse_offset(text: &str) -> Result<usize, String> {
    abi::parse_u64(text.trim())
        .and_then(|offset| usize::try_from(offset).ok())
        .ok_or_else(|| "expected a decimal or 0x-hex offset, e.g. 16 or 0x10".to_string())
}

/// Checks that `entry` lies inside `code_len` bytes of code.
pub fn check_entry(entry: usize, code_len: usize) -> Result<usize, String> {
    if entry < code_len {
        Ok(entry)
    } else {
        Err(format!(
            "offset 0x{entry:x} is outside the code ({code_len} byte{})",
            if code_len == 1 { "" } else { "s" }
        ))
    }
}

/// Checks a path a user grants a profile guest (`--allow-read`, `--allow-write`, the batch
/// fields `allow_read`, `allow_write`): absolute, without `..`, not `/` itself, at most
/// [`abi::MAX_GRANT_PATH`] bytes, and an existing file or directory. Returns it normalised
/// (no `.` components, no repeated or trailing `/`): the path the guest sees it at.
pub fn check_grant(path: &std::path::Path) -> Result<std::path::PathBuf, String> {
    use std::path::{Component, PathBuf};
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("{shown} is a relative path; grant an absolute one"));
    }
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => normal.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "{shown} has a `..` component; name the path itself"
                ));
            }
        }
    }
    if normal.as_os_str() == "/" {
        return Err("/ is the whole file system; grant directories below it".into());
    }
    let len = normal.as_os_str().len();
    if len > abi::MAX_GRANT_PATH {
        return Err(format!(
            "{shown} is {len} bytes long; the limit is {} bytes",
            abi::MAX_GRANT_PATH
        ));
    }
    if std::os::unix::ffi::OsStrExt::as_bytes(normal.as_os_str()).contains(&0) {
        return Err(format!("{shown} holds a NUL byte"));
    }
    // The worker mounts the path by name: a symbolic link on the way would let whoever can
    // change it choose what a later job sees.
    match std::fs::canonicalize(&normal) {
        Ok(real) if real != normal => {
            return Err(format!(
                "{shown} is or passes through a symbolic link; grant the real path, {}",
                real.display()
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    if let Some(kind) = kernel_file_system(&normal) {
        return Err(format!(
            "{shown} is on {kind}, the kernel's view of the host; grant files of a real file \
             system"
        ));
    }
    match std::fs::metadata(&normal) {
        Ok(meta) if meta.is_file() || meta.is_dir() => Ok(normal),
        Ok(_) => Err(format!("{shown} is neither a file nor a directory")),
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// The name of the kernel file system `path` is on (proc, sysfs, cgroup, debugfs, ...), if it
/// is on one: such a grant would show the host's processes and settings, not files.
#[allow(unsafe_code)] // statfs
fn kernel_file_system(path: &std::path::Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let mut c_path = path.as_os_str().as_bytes().to_vec();
    c_path.push(0);
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a local statfs.
    if unsafe { libc::statfs(c_path.as_ptr().cast(), &mut fs) } != 0 {
        return None;
    }
    const KINDS: [(i64, &str); 12] = [
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0xcafe_4a11, "bpf"),
        (0x1cd1, "devpts"),
        (0x6165_676c, "pstore"),
        (0x4249_4e4d, "binfmt_misc"),
        (0x6e73_6673, "nsfs"),
    ];
    KINDS
        .iter()
        .find(|(magic, _)| fs.f_type as i64 == *magic)
        .map(|(_, name)| *name)
}

/// Checks a whole set of grants (each as [`check_grant`]): at most [`abi::MAX_GRANTS`]
/// together, and none inside another or named twice (a mount point made inside a granted
/// directory would be made in the host's file system).
pub fn check_grants(
    read: &[std::path::PathBuf],
    write: &[std::path::PathBuf],
) -> Result<(), String> {
    let total = read.len() + write.len();
    if total > abi::MAX_GRANTS {
        return Err(format!(
            "{total} paths granted; the limit is {} (--allow-read and --allow-write together)",
            abi::MAX_GRANTS
        ));
    }
    let all = read
        .iter()
        .map(|p| (p, "--allow-read"))
        .chain(write.iter().map(|p| (p, "--allow-write")))
        .map(|(path, flag)| {
            check_grant(path)
                .map(|path| (path, flag))
                .map_err(|e| format!("{flag} {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (a, flag_a)) in all.iter().enumerate() {
        for (b, flag_b) in &all[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(format!(
                    "{flag_a} {} and {flag_b} {} overlap; grant each path once, none inside \
                     another",
                    a.display(),
                    b.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_at_and_over_their_bounds() {
        assert_eq!(MAX_OUTPUT.check(1 << 30), Ok(1 << 30));
        assert!(MAX_OUTPUT.check((1 << 30) + 1).is_err());
        let far = MAX_OUTPUT.check(u64::MAX).unwrap_err();
        assert!(far.contains(&u64::MAX.to_string()), "{far}");
        assert!(far.contains("1GiB"), "{far}");
        assert_eq!(MAX_OUTPUT.parse("1GiB"), Ok(1 << 30));
        assert!(MAX_OUTPUT.parse("1TiB").is_err());
        assert_eq!(STACK.check(64), Ok(64));
        assert!(STACK.check(63).is_err());
        assert!(SCRATCH.check(0).is_err());
    }

    #[test]
    fn timeouts_at_and_over_their_bound() {
        let day_ms = 24 * 60 * 60 * 1000;
        assert_eq!(timeout_from_ms(day_ms), Ok(Duration::from_secs(86_400)));
        assert!(timeout_from_ms(day_ms + 1).is_err());
        assert!(timeout_from_ms(u64::MAX).is_err());
        assert!(timeout_from_ms(0).is_err());
        assert_eq!(parse_timeout("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_timeout("86400001ms").is_err());
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("0x10"), Ok(16));
        assert_eq!(parse_offset("16"), Ok(16));
        assert!(parse_offset("-1").is_err());
        assert_eq!(check_entry(2, 3), Ok(2));
        assert!(check_entry(3, 3).unwrap_err().contains("3 bytes"));
    }

    #[test]
    fn grants() {
        use std::path::{Path, PathBuf};
        assert_eq!(
            check_grant(Path::new("/etc//./hostname")),
            Ok("/etc/hostname".into())
        );
        assert!(check_grant(Path::new("etc/hostname"))
            .unwrap_err()
            .contains("relative"));
        assert!(check_grant(Path::new("/etc/../etc"))
            .unwrap_err()
            .contains(".."));
        assert!(check_grant(Path::new("/")).is_err());
        assert!(check_grant(Path::new("/no/such/path/here")).is_err());
        assert!(check_grant(Path::new("/dev/null"))
            .unwrap_err()
            .contains("neither"));
        let long = format!("/{}", "a".repeat(abi::MAX_GRANT_PATH));
        assert!(check_grant(Path::new(&long)).unwrap_err().contains("limit"));
        let etc = PathBuf::from("/etc");
        let hostname = PathBuf::from("/etc/hostname");
        let one = std::slice::from_ref(&etc);
        assert!(check_grants(one, &[hostname]).is_err());
        assert!(check_grants(one, one).is_err());
        assert!(check_grants(one, &[PathBuf::from("/tmp")]).is_ok());
        let many = vec![etc; abi::MAX_GRANTS + 1];
        assert!(check_grants(&many, &[]).unwrap_err().contains("limit"));
    }
}
