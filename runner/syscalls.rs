//! TEMPORARY stand-in with the agreed API (a few names only) so that runner/policy.rs builds; the
//! generated tables replace this file wholesale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Abi {
    X86_64,
    I386,
    X32,
}
impl Abi {
    pub fn name(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::I386 => "i386",
            Abi::X32 => "x32",
        }
    }
}
const T64: &[(u32, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (12, "brk"),
    (15, "rt_sigreturn"),
    (39, "getpid"),
    (41, "socket"),
    (60, "exit"),
    (110, "getppid"),
    (165, "mount"),
    (186, "gettid"),
    (231, "exit_group"),
];
const T32: &[(u32, &str)] = &[
    (1, "exit"),
    (3, "read"),
    (4, "write"),
    (20, "getpid"),
    (45, "brk"),
    (64, "getppid"),
    (119, "sigreturn"),
    (224, "gettid"),
    (252, "exit_group"),
    (359, "socket"),
];
pub fn table(abi: Abi) -> &'static [(u32, &'static str)] {
    match abi {
        Abi::X86_64 => T64,
        Abi::I386 => T32,
        Abi::X32 => &[],
    }
}
pub fn name(abi: Abi, nr: u32) -> Option<&'static str> {
    match abi {
        Abi::X32 => T64.iter().find(|e| e.0 | 0x4000_0000 == nr).map(|e| e.1),
        _ => table(abi).iter().find(|e| e.0 == nr).map(|e| e.1),
    }
}
pub fn number(abi: Abi, n: &str) -> Option<u32> {
    match abi {
        Abi::X32 => T64.iter().find(|e| e.1 == n).map(|e| e.0 | 0x4000_0000),
        _ => table(abi).iter().find(|e| e.1 == n).map(|e| e.0),
    }
}
pub const X86_64_MAX: u32 = 470;
