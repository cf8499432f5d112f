//! The bounds of the values a user gives bytejail, in one place: the CLI's flags and the fields
//! of a `bytejail batch` line are checked by the same functions, so that a value refused on the
//! command line is refused in a job line too, with the same limit in the message.
//!
//! Every check returns the value in the type the run options use, or a [`BoundError`] whose
//! message is one line saying what is wrong and the limit; callers prefix it with the flag or
//! field it came from.

use std::path::PathBuf;
use std::time::Duration;

use crate::abi;
use crate::units::{self, UnitError};

/// Why a value was refused. Its `Display` is the one-line message the CLI shows after the flag's
/// name (and `bytejail batch` after the field's); paths are shown as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoundError {
    /// A duration or size that does not parse.
    #[error(transparent)]
    Unit(#[from] UnitError),
    /// A size under its bound's minimum.
    #[error("{bytes} bytes is under the minimum of {min} bytes")]
    UnderMinimum {
        /// The size given.
        bytes: u64,
        /// The smallest accepted.
        min: usize,
    },
    /// A size over its bound's maximum.
    #[error("{bytes} bytes is over the limit of {max_text} ({max} bytes)")]
    OverLimit {
        /// The size given.
        bytes: u64,
        /// The largest accepted.
        max: usize,
        /// `max` as people write it.
        max_text: &'static str,
    },
    /// A timeout of 0 ms.
    #[error("the timeout must be greater than 0 ms")]
    ZeroTimeout,
    /// A timeout over [`MAX_TIMEOUT`].
    #[error("{ms} ms is over the limit of 24h ({max_ms} ms)")]
    TimeoutOverLimit {
        /// The timeout given.
        ms: u64,
        /// [`MAX_TIMEOUT`] in milliseconds.
        max_ms: u128,
    },
    /// An offset that is neither decimal nor `0x`-hex, or does not fit an address.
    #[error("expected a decimal or 0x-hex offset, e.g. 16 or 0x10")]
    BadOffset,
    /// An entry offset at or past the end of the code.
    #[error("offset 0x{entry:x} is outside the code ({code_len} byte{})", if *.code_len == 1 { "" } else { "s" })]
    EntryOutsideCode {
        /// The offset given.
        entry: usize,
        /// The code's length in bytes.
        code_len: usize,
    },
    /// A granted path that is not absolute.
    #[error("{} is a relative path; grant an absolute one", .path.display())]
    RelativeGrant {
        /// The path as given.
        path: PathBuf,
    },
    /// A granted path with a `..` component.
    #[error("{} has a `..` component; name the path itself", .path.display())]
    ParentInGrant {
        /// The path as given.
        path: PathBuf,
    },
    /// A grant of `/`.
    #[error("/ is the whole file system; grant directories below it")]
    RootGrant,
    /// A granted path longer than [`abi::MAX_GRANT_PATH`].
    #[error("{} is {len} bytes long; the limit is {max} bytes", .path.display())]
    GrantTooLong {
        /// The path as given.
        path: PathBuf,
        /// Its normalised length.
        len: usize,
        /// [`abi::MAX_GRANT_PATH`].
        max: usize,
    },
    /// A granted path with a NUL byte.
    #[error("{} holds a NUL byte", .path.display())]
    NulInGrant {
        /// The path as given.
        path: PathBuf,
    },
    /// A granted path that is or passes through a symbolic link.
    #[error("{} is or passes through a symbolic link; grant the real path, {}", .path.display(), .real.display())]
    SymlinkGrant {
        /// The path as given.
        path: PathBuf,
        /// What it resolves to.
        real: PathBuf,
    },
    /// A granted path on a kernel file system (proc, sysfs, cgroup, ...).
    #[error("{} is on {kind}, the kernel's view of the host; grant files of a real file system", .path.display())]
    KernelFileSystem {
        /// The path as given.
        path: PathBuf,
        /// The file system's name.
        kind: &'static str,
    },
    /// A granted path that is a device, FIFO or socket.
    #[error("{} is neither a file nor a directory", .path.display())]
    NotFileOrDirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// A granted path that could not be looked at (missing, no permission).
    #[error("{}: {message}", .path.display())]
    GrantUnreadable {
        /// The path as given.
        path: PathBuf,
        /// The system's error message.
        message: String,
    },
    /// More paths granted than [`abi::MAX_GRANTS`].
    #[error("{total} paths granted; the limit is {max} (--allow-read and --allow-write together)")]
    TooManyGrants {
        /// Paths granted.
        total: usize,
        /// [`abi::MAX_GRANTS`].
        max: usize,
    },
    /// One grant of a set refused, with the flag that granted it.
    #[error("{flag} {refused}")]
    InGrant {
        /// `--allow-read` or `--allow-write`.
        flag: &'static str,
        /// Why it was refused.
        refused: Box<BoundError>,
    },
    /// Two grants of which one lies inside the other (or the same path twice).
    #[error("{flag_a} {} and {flag_b} {} overlap; grant each path once, none inside another", .a.display(), .b.display())]
    OverlappingGrants {
        /// The flag of the first.
        flag_a: &'static str,
        /// The first path.
        a: PathBuf,
        /// The flag of the second.
        flag_b: &'static str,
        /// The second path.
        b: PathBuf,
    },
}

impl From<BoundError> for String {
    fn from(error: BoundError) -> String {
        error.to_string()
    }
}

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
    pub fn check(&self, bytes: u64) -> Result<usize, BoundError> {
        if bytes < self.min as u64 {
            Err(BoundError::UnderMinimum {
                bytes,
                min: self.min,
            })
        } else if bytes > self.max as u64 {
            Err(BoundError::OverLimit {
                bytes,
                max: self.max,
                max_text: self.max_text,
            })
        } else {
            // At most `max`, which is a usize.
            Ok(bytes as usize)
        }
    }

    /// Parses a size as the CLI's flags take it (`4096`, `64KiB`, `1.5MiB`) and checks it.
    pub fn parse(&self, text: &str) -> Result<usize, BoundError> {
        let bytes = units::parse_size(text)?;
        self.check(bytes as u64)
    }
}

/// Parses a timeout as `--timeout` takes it (`300ms`, `2s`): more than 0, at most
/// [`MAX_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration, BoundError> {
    // `parse_duration` refuses zero and anything over `units::MAX_DURATION`, which is
    // `MAX_TIMEOUT`.
    Ok(units::parse_duration(text)?)
}

/// A timeout given in whole milliseconds (`timeout_ms`): more than 0, at most [`MAX_TIMEOUT`].
pub fn timeout_from_ms(ms: u64) -> Result<Duration, BoundError> {
    let max_ms = MAX_TIMEOUT.as_millis();
    if ms == 0 {
        Err(BoundError::ZeroTimeout)
    } else if u128::from(ms) > max_ms {
        Err(BoundError::TimeoutOverLimit { ms, max_ms })
    } else {
        Ok(Duration::from_millis(ms))
    }
}

/// Parses a code offset as `--entry` takes it: decimal or `0x`-hex.
pub fn parse_offset(text: &str) -> Result<usize, BoundError> {
    abi::parse_u64(text.trim())
        .and_then(|offset| usize::try_from(offset).ok())
        .ok_or(BoundError::BadOffset)
}

/// Checks that `entry` lies inside `code_len` bytes of code.
pub fn check_entry(entry: usize, code_len: usize) -> Result<usize, BoundError> {
    if entry < code_len {
        Ok(entry)
    } else {
        Err(BoundError::EntryOutsideCode { entry, code_len })
    }
}

/// Checks a path a user grants a profile guest (`--allow-read`, `--allow-write`, the batch
/// fields `allow_read`, `allow_write`): absolute, without `..`, not `/` itself, at most
/// [`abi::MAX_GRANT_PATH`] bytes, and an existing file or directory. Returns it normalised
/// (no `.` components, no repeated or trailing `/`): the path the guest sees it at.
pub fn check_grant(path: &std::path::Path) -> Result<PathBuf, BoundError> {
    use std::path::Component;
    let given = || path.to_path_buf();
    if !path.is_absolute() {
        return Err(BoundError::RelativeGrant { path: given() });
    }
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => normal.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(BoundError::ParentInGrant { path: given() });
            }
        }
    }
    if normal.as_os_str() == "/" {
        return Err(BoundError::RootGrant);
    }
    let len = normal.as_os_str().len();
    if len > abi::MAX_GRANT_PATH {
        return Err(BoundError::GrantTooLong {
            path: given(),
            len,
            max: abi::MAX_GRANT_PATH,
        });
    }
    if std::os::unix::ffi::OsStrExt::as_bytes(normal.as_os_str()).contains(&0) {
        return Err(BoundError::NulInGrant { path: given() });
    }
    // The worker mounts the path by name: a symbolic link on the way would let whoever can
    // change it choose what a later job sees.
    match std::fs::canonicalize(&normal) {
        Ok(real) if real != normal => {
            return Err(BoundError::SymlinkGrant {
                path: given(),
                real,
            });
        }
        Ok(_) => {}
        Err(e) => {
            return Err(BoundError::GrantUnreadable {
                path: given(),
                message: e.to_string(),
            })
        }
    }
    if let Some(kind) = kernel_file_system(&normal) {
        return Err(BoundError::KernelFileSystem {
            path: given(),
            kind,
        });
    }
    match std::fs::metadata(&normal) {
        Ok(meta) if meta.is_file() || meta.is_dir() => Ok(normal),
        Ok(_) => Err(BoundError::NotFileOrDirectory { path: given() }),
        Err(e) => Err(BoundError::GrantUnreadable {
            path: given(),
            message: e.to_string(),
        }),
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
) -> Result<(), BoundError> {
    let total = read.len() + write.len();
    if total > abi::MAX_GRANTS {
        return Err(BoundError::TooManyGrants {
            total,
            max: abi::MAX_GRANTS,
        });
    }
    let all = read
        .iter()
        .map(|p| (p, "--allow-read"))
        .chain(write.iter().map(|p| (p, "--allow-write")))
        .map(|(path, flag)| {
            check_grant(path)
                .map(|path| (path, flag))
                .map_err(|e| BoundError::InGrant {
                    flag,
                    refused: Box::new(e),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (a, flag_a)) in all.iter().enumerate() {
        for (b, flag_b) in &all[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(BoundError::OverlappingGrants {
                    flag_a,
                    a: a.clone(),
                    flag_b,
                    b: b.clone(),
                });
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
        let far = MAX_OUTPUT.check(u64::MAX).unwrap_err().to_string();
        assert!(far.contains(&u64::MAX.to_string()), "{far}");
        assert!(far.contains("1GiB"), "{far}");
        assert_eq!(MAX_OUTPUT.parse("1GiB"), Ok(1 << 30));
        assert!(MAX_OUTPUT.parse("1TiB").is_err());
        assert_eq!(STACK.check(64), Ok(64));
        assert!(STACK.check(63).is_err());
        assert!(SCRATCH.check(0).is_err());
    }

    #[test]
    fn errors_are_typed_and_name_their_limit() {
        assert_eq!(
            MAX_OUTPUT.check(u64::MAX),
            Err(BoundError::OverLimit {
                bytes: u64::MAX,
                max: 1 << 30,
                max_text: "1GiB"
            })
        );
        assert!(matches!(
            STACK.parse("lots"),
            Err(BoundError::Unit(UnitError::NotUnderstood { .. }))
        ));
        let nested = check_grants(&[std::path::PathBuf::from("relative")], &[]).unwrap_err();
        assert!(
            matches!(&nested, BoundError::InGrant { flag: "--allow-read", refused }
                if matches!(**refused, BoundError::RelativeGrant { .. })),
            "{nested:?}"
        );
        assert_eq!(
            nested.to_string(),
            "--allow-read relative is a relative path; grant an absolute one"
        );
        // Only the outermost message is shown: no error source repeats it.
        assert!(std::error::Error::source(&nested).is_none());
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
        assert!(check_entry(3, 3)
            .unwrap_err()
            .to_string()
            .contains("3 bytes"));
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
            .to_string()
            .contains("relative"));
        assert!(check_grant(Path::new("/etc/../etc"))
            .unwrap_err()
            .to_string()
            .contains(".."));
        assert!(check_grant(Path::new("/")).is_err());
        assert!(check_grant(Path::new("/no/such/path/here")).is_err());
        assert!(check_grant(Path::new("/dev/null"))
            .unwrap_err()
            .to_string()
            .contains("neither"));
        let long = format!("/{}", "a".repeat(abi::MAX_GRANT_PATH));
        assert!(check_grant(Path::new(&long))
            .unwrap_err()
            .to_string()
            .contains("limit"));
        let etc = PathBuf::from("/etc");
        let hostname = PathBuf::from("/etc/hostname");
        let one = std::slice::from_ref(&etc);
        assert!(check_grants(one, &[hostname]).is_err());
        assert!(check_grants(one, one).is_err());
        assert!(check_grants(one, &[PathBuf::from("/tmp")]).is_ok());
        let many = vec![etc; abi::MAX_GRANTS + 1];
        assert!(check_grants(&many, &[])
            .unwrap_err()
            .to_string()
            .contains("limit"));
    }
}
