#!/usr/bin/env python3
"""Writes runner/syscalls.rs: the x86_64, i386 and x32 syscall tables, from the kernel's own.

The inputs are copies of Linux's arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl
(scripts/data/ holds them; each file's header says where it came from and which kernel it is).
Their format is the kernel's: `<number> <abi> <name> [<entry point> [<compat entry> [noreturn]]]`
per line, `#` comments. From them:

  x86_64  the `common` and `64` rows of syscall_64.tbl;
  x32     the `common` and `x32` rows of syscall_64.tbl, each number with bit 30 set
          (`__X32_SYSCALL_BIT`), as the kernel's x32 entry sees it;
  i386    the rows of syscall_32.tbl (`int 0x80`, also from 64-bit code).

Usage (from the repository root):

  python3 scripts/gen-syscall-tables.py scripts/data/syscall_64.tbl scripts/data/syscall_32.tbl \\
      -o runner/syscalls.rs
  ... --check            compare with runner/syscalls.rs instead of writing it (exit 1: stale)
  ... --check-headers /usr/include/x86_64-linux-gnu/asm
                         also check every __NR_ name in unistd_{64,32,x32}.h against the tables

Only the Python 3 standard library is needed. The output is already rustfmt-clean.
"""

import argparse
import re
import sys
from pathlib import Path

X32_SYSCALL_BIT = 0x4000_0000
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
REGENERATE = (
    "python3 scripts/gen-syscall-tables.py scripts/data/syscall_64.tbl "
    "scripts/data/syscall_32.tbl -o runner/syscalls.rs"
)


class TableError(Exception):
    """An input table breaks the kernel's format or an invariant the tables rely on."""


def parse_tbl(path, abis):
    """Returns (rows, sources): rows as (number, abi, name) in file order, and the
    `# bytejail-source:` lines of the file's header."""
    rows = []
    sources = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("# bytejail-source:"):
            sources.append(stripped[len("# bytejail-source:"):].strip())
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < 3:
            raise TableError(f"{path}:{lineno}: expected `<number> <abi> <name> ...`: {line!r}")
        number, abi, name = fields[:3]
        if not number.isdigit():
            raise TableError(f"{path}:{lineno}: `{number}` is not a syscall number")
        if abi not in abis:
            raise TableError(f"{path}:{lineno}: abi `{abi}`; this file may only use {sorted(abis)}")
        if not NAME_RE.match(name):
            raise TableError(f"{path}:{lineno}: `{name}` is not a syscall name")
        rows.append((int(number), abi, name))
    if not sources:
        raise TableError(f"{path}: no `# bytejail-source:` line says where the table came from")
    return rows, sources


def build_tables(tbl64, tbl32):
    """Returns ({abi: [(nr, name)] ascending}, sources) for the three ABIs."""
    rows64, sources64 = parse_tbl(tbl64, {"common", "64", "x32"})
    rows32, sources32 = parse_tbl(tbl32, {"i386"})
    for nr, abi, name in rows64:
        # Upstream reserves 512-547 for the x32-only rows, and only them.
        if (abi == "x32") != (512 <= nr <= 547):
            raise TableError(f"{tbl64}: {nr} {abi} {name}: x32-only rows are exactly 512-547")
    tables = {
        "X86_64": [(nr, name) for nr, abi, name in rows64 if abi in ("common", "64")],
        "X32": [(X32_SYSCALL_BIT | nr, name) for nr, abi, name in rows64 if abi in ("common", "x32")],
        "I386": [(nr, name) for nr, _, name in rows32],
    }
    for abi, table in tables.items():
        table.sort()
        numbers = [nr for nr, _ in table]
        names = [name for _, name in table]
        duplicate_numbers = sorted({n for n in numbers if numbers.count(n) > 1})
        duplicate_names = sorted({n for n in names if names.count(n) > 1})
        if duplicate_numbers or duplicate_names:
            raise TableError(
                f"{abi}: duplicate numbers {duplicate_numbers} or names {duplicate_names}; "
                "name() and number() need both unique"
            )
    return tables, sources64 + sources32


def parse_unistd(path):
    """`#define __NR_name N` (or `(__X32_SYSCALL_BIT + N)`) -> {name: number with the bit}."""
    found = {}
    for match in re.finditer(
        r"^#define __NR_(\w+)\s+(\(__X32_SYSCALL_BIT \+ )?(\d+)\)?\s*$",
        Path(path).read_text(),
        re.MULTILINE,
    ):
        found[match.group(1)] = int(match.group(3)) | (X32_SYSCALL_BIT if match.group(2) else 0)
    if not found:
        raise TableError(f"{path}: no __NR_ definitions")
    return found


def check_headers(tables, directory):
    """Every __NR_ in the uapi headers must be in the tables with the same number. Names the
    headers lack are newer than the headers' kernel: listed, not an error."""
    problems = []
    for abi, header in (("X86_64", "unistd_64.h"), ("I386", "unistd_32.h"), ("X32", "unistd_x32.h")):
        by_name = {name: nr for nr, name in tables[abi]}
        defined = parse_unistd(Path(directory) / header)
        for name, nr in sorted(defined.items(), key=lambda item: item[1]):
            if by_name.get(name) != nr:
                problems.append(f"{header}: __NR_{name} = {nr:#x}, the {abi} table says {by_name.get(name)}")
        newer = [name for _, name in tables[abi] if name not in defined]
        print(f"{header}: {len(defined)} names agree; {len(newer)} newer in the table: {' '.join(newer)}",
              file=sys.stderr)
    return problems


def names_string(tables):
    """Every name of the three tables, each once, concatenated; and where each one starts."""
    names = sorted({name for table in tables.values() for _, name in table})
    at, offset = {}, 0
    for name in names:
        at[name] = offset
        offset += len(name)
    if offset > 0xFFFF or max(map(len, names)) > 0xFF:
        raise TableError(f"the names take {offset} bytes: more than a row's u16 offset reaches")
    return "".join(names), at


def rust_names(text):
    lines = ["const NAMES: &str = concat!("]
    width = 88
    for start in range(0, len(text), width):
        lines.append(f'    "{text[start:start + width]}",')
    lines.append(");")
    return "\n".join(lines)


def rust_table(ident, entries, at):
    lines = [f"static {ident}: [Row; {len(entries)}] = ["]
    for nr, name in entries:
        number = f"0x{nr:x}" if nr >= X32_SYSCALL_BIT else str(nr)
        lines.append(f'    row({number}, {at[name]}, "{name}"),')
    lines.append("];")
    return "\n".join(lines)


def render(tables, sources):
    x86_64_max = tables["X86_64"][-1][0]
    last_name = tables["X86_64"][-1][1]
    source_lines = "\n".join(f"//! - {source}" for source in sources)
    text, at = names_string(tables)
    blocks = [rust_names(text)]
    for abi in ("X86_64", "I386", "X32"):
        table = tables[abi]
        blocks.append(rust_table(abi, table, at))
        blocks.append(rust_table(f"{abi}_BY_NAME", sorted(table, key=lambda e: e[1]), at))
    return TEMPLATE.format(
        sources=source_lines,
        regenerate=REGENERATE,
        x86_64_max=x86_64_max,
        last_name=last_name,
        tables="\n\n".join(blocks),
    )


TEMPLATE = '''\
//! Syscall names and numbers of the three x86 syscall ABIs a 64-bit Linux process can reach:
//! x86_64 (`syscall`), i386 (`int 0x80`, which 64-bit code may use too) and x32 (`syscall`
//! with bit 30 of the number set).
//!
//! Generated from the kernel's own tables by `scripts/gen-syscall-tables.py`; do not edit by
//! hand. The inputs are checked in under `scripts/data/`, each with a header saying where it
//! came from:
{sources}
//!
//! The x86_64 table holds the `common` and `64` rows of `syscall_64.tbl`, the x32 table its
//! `common` and `x32` rows (numbers with [`X32_SYSCALL_BIT`]), the i386 table `syscall_32.tbl`.
//! To move to a newer kernel, replace the inputs and regenerate, from the repository root:
//!
//! ```text
//! {regenerate}
//! ```
//!
//! (`--check` compares instead of writing; `--check-headers /usr/include/x86_64-linux-gnu/asm`
//! also checks the tables against the installed uapi headers.)

use serde::{{Deserialize, Serialize}};

/// An x86 syscall ABI: the table a syscall number belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Abi {{
    /// The native 64-bit ABI: `syscall` with the number in `rax`.
    X86_64,
    /// The ia32 ABI: `int 0x80` (or `sysenter`) with the number in `eax`; pointers are
    /// truncated to 32 bits.
    I386,
    /// The x32 ABI: `syscall` with [`X32_SYSCALL_BIT`] set in the number.
    X32,
}}

impl Abi {{
    /// Every ABI.
    pub const ALL: [Abi; 3] = [Abi::X86_64, Abi::I386, Abi::X32];

    /// The name reports use: `"x86_64"`, `"i386"` or `"x32"`.
    pub fn name(self) -> &'static str {{
        match self {{
            Abi::X86_64 => "x86_64",
            Abi::I386 => "i386",
            Abi::X32 => "x32",
        }}
    }}
}}

/// Bit 30 of a syscall number marks an x32 call (the kernel's `__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Highest x86_64 syscall number in the table (`{last_name}`).
pub const X86_64_MAX: u32 = {x86_64_max};

/// The name of syscall `nr` in `abi` (for [`Abi::X32`], `nr` includes [`X32_SYSCALL_BIT`]);
/// `None` for a number the table does not assign.
pub fn name(abi: Abi, nr: u32) -> Option<&'static str> {{
    let rows = rows(abi);
    rows.binary_search_by_key(&nr, |row| row.nr)
        .ok()
        .map(|i| rows[i].name())
}}

/// The number of syscall `name` in `abi` (for [`Abi::X32`] with [`X32_SYSCALL_BIT`]), for the
/// names a seccomp profile uses; `None` for a name the ABI does not have.
pub fn number(abi: Abi, name: &str) -> Option<u32> {{
    let by_name = by_name(abi);
    by_name
        .binary_search_by(|row| row.name().cmp(name))
        .ok()
        .map(|i| by_name[i].nr)
}}

/// Every `(nr, name)` of `abi`, ascending by number.
pub fn table(
    abi: Abi,
) -> impl DoubleEndedIterator<Item = (u32, &'static str)> + ExactSizeIterator + Clone {{
    rows(abi).iter().map(|row| (row.nr, row.name()))
}}

/// A syscall of one table: its number, and where its name is in [`NAMES`]. The tables hold
/// offsets rather than `&str`s because a pointer in a static is a relocation: the dynamic
/// loader writes every page that holds one at each start of the (position-independent)
/// binary, which for six tables of `(u32, &str)` was 14 pages copied before `main`.
#[derive(Clone, Copy)]
struct Row {{
    nr: u32,
    at: u16,
    len: u8,
}}

/// The row of syscall `nr` whose name is at `at` in [`NAMES`]. Evaluated by the compiler
/// alone (every row is in a `static`), which refuses to build a table whose offset does not
/// point at that name: only the number, the offset and the length are kept.
const fn row(nr: u32, at: u16, name: &str) -> Row {{
    let name = name.as_bytes();
    let names = NAMES.as_bytes();
    let at = at as usize;
    assert!(name.len() <= u8::MAX as usize && at + name.len() <= names.len());
    let mut i = 0;
    while i < name.len() {{
        assert!(
            names[at + i] == name[i],
            "a row's offset does not point at its name"
        );
        i += 1;
    }}
    Row {{
        nr,
        at: at as u16,
        len: name.len() as u8,
    }}
}}

impl Row {{
    fn name(self) -> &'static str {{
        let at = usize::from(self.at);
        &NAMES[at..at + usize::from(self.len)]
    }}
}}

/// The rows of `abi`, ascending by number.
fn rows(abi: Abi) -> &'static [Row] {{
    match abi {{
        Abi::X86_64 => &X86_64,
        Abi::I386 => &I386,
        Abi::X32 => &X32,
    }}
}}

/// The rows of `abi`, ascending by name.
fn by_name(abi: Abi) -> &'static [Row] {{
    match abi {{
        Abi::X86_64 => &X86_64_BY_NAME,
        Abi::I386 => &I386_BY_NAME,
        Abi::X32 => &X32_BY_NAME,
    }}
}}

/// Every name of the three tables, each once, in order, concatenated.
{tables}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn well_known_x86_64_numbers() {{
        for (nr, expected) in [
            (0, "read"),
            (1, "write"),
            (15, "rt_sigreturn"),
            (39, "getpid"),
            (41, "socket"),
            (60, "exit"),
            (231, "exit_group"),
            (335, "uretprobe"),
            (336, "uprobe"),
        ] {{
            assert_eq!(name(Abi::X86_64, nr), Some(expected), "x86_64 {{nr}}");
            assert_eq!(number(Abi::X86_64, expected), Some(nr), "x86_64 {{expected}}");
        }}
    }}

    #[test]
    fn well_known_i386_numbers() {{
        for (nr, expected) in [
            (1, "exit"),
            (3, "read"),
            (4, "write"),
            (20, "getpid"),
            (102, "socketcall"),
            (119, "sigreturn"),
            (173, "rt_sigreturn"),
            (252, "exit_group"),
        ] {{
            assert_eq!(name(Abi::I386, nr), Some(expected), "i386 {{nr}}");
            assert_eq!(number(Abi::I386, expected), Some(nr), "i386 {{expected}}");
        }}
        // The native-only calls do not exist here.
        assert_eq!(number(Abi::I386, "uretprobe"), None);
        assert_eq!(number(Abi::I386, "socket"), Some(359));
    }}

    #[test]
    fn x32_numbers_carry_the_bit_and_use_their_own_rows() {{
        assert_eq!(number(Abi::X32, "read"), Some(X32_SYSCALL_BIT));
        assert_eq!(number(Abi::X32, "write"), Some(X32_SYSCALL_BIT | 1));
        assert_eq!(number(Abi::X32, "exit"), Some(X32_SYSCALL_BIT | 60));
        // `64` rows (readv 19, rt_sigreturn 15) are x32 rows 512 and up.
        assert_eq!(number(Abi::X32, "readv"), Some(X32_SYSCALL_BIT | 515));
        assert_eq!(
            number(Abi::X32, "rt_sigreturn"),
            Some(X32_SYSCALL_BIT | 513)
        );
        assert_eq!(name(Abi::X32, X32_SYSCALL_BIT | 19), None);
        assert_eq!(name(Abi::X32, 0), None, "x32 numbers always have the bit");
        // And the x32-only rows are not x86_64 calls.
        assert_eq!(name(Abi::X86_64, 515), None);
        assert!(table(Abi::X32).all(|(nr, _)| nr & X32_SYSCALL_BIT != 0));
    }}

    #[test]
    fn tables_are_sorted_without_duplicates_and_round_trip() {{
        for abi in Abi::ALL {{
            let table: Vec<(u32, &str)> = table(abi).collect();
            assert!(!table.is_empty());
            for pair in table.windows(2) {{
                assert!(
                    pair[0].0 < pair[1].0,
                    "{{abi:?}}: {{pair:?}} out of order or duplicate"
                );
            }}
            assert_eq!(by_name(abi).len(), table.len());
            for pair in by_name(abi).windows(2) {{
                let names = [pair[0].name(), pair[1].name()];
                assert!(names[0] < names[1], "{{abi:?}}: duplicate name in {{names:?}}");
            }}
            for (nr, entry) in table {{
                assert_eq!(name(abi, nr), Some(entry), "{{abi:?}} {{nr}}");
                assert_eq!(number(abi, entry), Some(nr), "{{abi:?}} {{entry}}");
            }}
        }}
    }}

    #[test]
    fn every_name_is_a_whole_syscall_name() {{
        // A row's offset and length cut its name out of NAMES: a slip would read a
        // neighbour's letters (or fall between two names) and still look like a name.
        for abi in Abi::ALL {{
            for (_, name) in table(abi) {{
                assert!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b == b'_' || b.is_ascii_lowercase() || b.is_ascii_digit()),
                    "{{abi:?}}: {{name:?}}"
                );
            }}
        }}
        assert_eq!(name(Abi::X86_64, 0), Some("read"));
        assert_eq!(name(Abi::X86_64, 1), Some("write"));
        assert_eq!(name(Abi::X86_64, 2), Some("open"));
        assert_eq!(name(Abi::X86_64, 257), Some("openat"));
        assert_eq!(name(Abi::X86_64, 437), Some("openat2"));
    }}

    #[test]
    fn unassigned_numbers_and_unknown_names_are_none() {{
        // x86_64 skips 337-423 (upstream keeps 387-423 in step with the other arches).
        assert_eq!(name(Abi::X86_64, 400), None);
        assert_eq!(name(Abi::X86_64, X86_64_MAX + 1), None);
        assert_eq!(name(Abi::I386, 222), None);
        assert_eq!(number(Abi::X86_64, "no_such_syscall"), None);
        assert_eq!(number(Abi::X86_64, ""), None);
    }}

    #[test]
    fn x86_64_max_is_the_last_entry_and_covers_linux_6_18() {{
        assert_eq!(
            table(Abi::X86_64).next_back().map(|(nr, _)| nr),
            Some(X86_64_MAX)
        );
        const _: () = assert!(X86_64_MAX >= 470, "the table predates Linux 6.19");
        // Every number up to the maximum is assigned but the 337-423 gap.
        let assigned = (0..=X86_64_MAX)
            .filter(|nr| name(Abi::X86_64, *nr).is_some())
            .count() as u32;
        assert_eq!(assigned, X86_64_MAX + 1 - (423 - 337 + 1));
    }}

    #[test]
    fn abi_names_match_their_json_form() {{
        for abi in Abi::ALL {{
            let json = serde_json::to_value(abi).unwrap();
            assert_eq!(json, serde_json::Value::from(abi.name()));
        }}
        assert_eq!(Abi::X86_64.name(), "x86_64");
        assert_eq!(Abi::I386.name(), "i386");
        assert_eq!(Abi::X32.name(), "x32");
    }}
}}
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tbl64", help="the kernel's arch/x86/entry/syscalls/syscall_64.tbl")
    parser.add_argument("tbl32", help="the kernel's arch/x86/entry/syscalls/syscall_32.tbl")
    parser.add_argument("-o", "--output", default="runner/syscalls.rs", help="the Rust module to write")
    parser.add_argument("--check", action="store_true", help="compare with --output; exit 1 if it differs")
    parser.add_argument("--check-headers", metavar="DIR", help="check against DIR/unistd_{64,32,x32}.h")
    args = parser.parse_args()

    try:
        tables, sources = build_tables(args.tbl64, args.tbl32)
        problems = check_headers(tables, args.check_headers) if args.check_headers else []
    except (TableError, OSError) as error:
        print(f"gen-syscall-tables: {error}", file=sys.stderr)
        return 2
    if problems:
        print("gen-syscall-tables: the tables disagree with the headers:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1

    text = render(tables, sources)
    output = Path(args.output)
    if args.check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            print(f"gen-syscall-tables: {output} is stale; regenerate with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"gen-syscall-tables: {output} is up to date", file=sys.stderr)
        return 0
    output.write_text(text)
    counts = ", ".join(f"{abi} {len(table)}" for abi, table in tables.items())
    print(f"gen-syscall-tables: wrote {output} ({counts} syscalls)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
