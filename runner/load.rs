//! Loading guest code: raw bytes, hex text, GNU as and NASM sources, ELF objects.
//!
//! Whatever the format, the result is one blob of position-independent x86-64 code: the bytes of
//! a `.bin` file, the bytes spelled by a `.hex` file, or the `.text` section of an ELF object,
//! executable or shared object, including the object the system assembler makes from a `.s`,
//! `.S` or `.asm` source. Every error is an [`InputError`] on one line naming the file and, where
//! one applies, the position or the limit.
//!
//! Files are read with a bound, so a huge or endless file costs at most a little more than the
//! limit: raw code is read up to `max_code + 1` bytes, text formats up to a small multiple of it.
//! ELF files are not read whole: only their headers, symbols and `.text` are, and `.text` only
//! once its size is known to be within the limit. Only regular files (and standard input as
//! `-`) are read: a FIFO, socket or device is refused at once, never waited on.
//!
//! An assembly source is untrusted too: it is copied into a private directory and assembled
//! there in the toolchain's sandbox ([`crate::toolchain`]), which lets it read nothing of the
//! host but the toolchain, the system headers and the include directories the user named, and
//! bounds what it writes by `max_code`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{
    Architecture, Endianness, Object, ObjectKind, ObjectSection, ObjectSymbol, ReadCache, ReadRef,
    RelocationTarget, SectionKind, SymbolKind, SymbolSection,
};

use crate::error::InputError;
use crate::toolchain::Ended;

/// The name standard input goes by in messages.
const STDIN_NAME: &str = "<stdin>";

const ELF_MAGIC: &[u8] = b"\x7fELF";

const FORMAT_HINT: &str = "use .bin .hex .s .S .asm .o or --format bin|hex|gas|nasm|elf";

const RELOCATION_HINT: &str = "bytejail runs a single position-independent code blob: \
                               keep data in .text and use rip-relative addressing";

/// A format guest code can come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Raw machine code.
    Bin,
    /// Machine code as hex text; see [`parse_hex`].
    Hex,
    /// GNU assembler source, assembled with the system `as --64` (`.S` files go through the C
    /// preprocessor first).
    Gas,
    /// NASM source, assembled with `nasm -f elf64`.
    Nasm,
    /// An ELF64 x86-64 object, executable or shared object; its `.text` section is the code.
    Elf,
}

impl Format {
    /// The format named on the command line (`--format`): `bin`, `hex`, `gas`, `nasm` or `elf`,
    /// in any case.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "bin" => Some(Format::Bin),
            "hex" => Some(Format::Hex),
            "gas" => Some(Format::Gas),
            "nasm" => Some(Format::Nasm),
            "elf" => Some(Format::Elf),
            _ => None,
        }
    }

    /// The format a file's extension stands for: `.bin`; `.hex`; `.s` and `.S` (GNU as);
    /// `.asm` and `.nasm`; `.o`, `.elf` and `.so`. Case does not matter (`.S` and `.s` are both
    /// GNU as; [`load_path`] preprocesses `.S` only).
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?;
        match extension.to_ascii_lowercase().as_str() {
            "bin" => Some(Format::Bin),
            "hex" => Some(Format::Hex),
            "s" => Some(Format::Gas),
            "asm" | "nasm" => Some(Format::Nasm),
            "o" | "elf" | "so" => Some(Format::Elf),
            _ => None,
        }
    }

    /// The name [`Format::from_name`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Format::Bin => "bin",
            Format::Hex => "hex",
            Format::Gas => "gas",
            Format::Nasm => "nasm",
            Format::Elf => "elf",
        }
    }

    /// What a file in this format is called in messages.
    fn noun(self) -> &'static str {
        match self {
            Format::Bin => "code",
            Format::Hex => "hex text",
            Format::Gas | Format::Nasm => "assembly source",
            Format::Elf => "ELF file",
        }
    }

    /// The most bytes of this format read to get at most `max_code` bytes of code.
    fn read_limit(self, max_code: usize) -> usize {
        match self {
            Format::Bin => max_code,
            // Hex spends up to 6 characters a byte (`0xb0, `), and comments need room too.
            // Assembly source has no fixed ratio; the same bound is generous for real sources.
            Format::Hex | Format::Gas | Format::Nasm => {
                max_code.saturating_mul(8).saturating_add(1 << 20)
            }
            // Only for standard input: ELF files on disk are never read whole.
            Format::Elf => max_code.saturating_mul(4).saturating_add(16 << 20),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How code is loaded: the size bound, and what the assembler may read.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Largest code accepted, in bytes (`--max-code`). It also bounds every file the assembler
    /// writes while it writes it (see [`crate::toolchain`]).
    pub max_code: usize,
    /// Directories the assembler may read includes from (`--include-dir`), besides the source
    /// itself and the system's toolchain and headers.
    pub include_dirs: Vec<PathBuf>,
    /// Whether the assembler and preprocessor run in their sandbox ([`crate::toolchain`]). On by
    /// default; off only to show what the sandbox stops (a twin test): without it a source reads
    /// any file bytejail can, and its processes may outlive bytejail.
    pub toolchain_sandbox: bool,
    /// The syntax GNU as reads a source in (`--syntax`); NASM has only its own.
    pub syntax: Syntax,
}

/// The syntax of a GNU as source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Syntax {
    /// AT&T, GNU as's own default: `mov $42, %eax`.
    #[default]
    Att,
    /// Intel without register prefixes, as `.intel_syntax noprefix` reads it: `mov eax, 42`.
    /// Given to `as` as `-msyntax=intel -mnaked-reg`, so the source's lines keep their
    /// numbers; a `.att_syntax` in the source still switches back.
    Intel,
}

impl LoadOptions {
    /// Code of at most `max_code` bytes, no include directories, the sandbox on.
    pub fn new(max_code: usize) -> LoadOptions {
        LoadOptions {
            max_code,
            include_dirs: Vec::new(),
            toolchain_sandbox: true,
            syntax: Syntax::Att,
        }
    }
}

impl Default for LoadOptions {
    /// As [`LoadOptions::new`] with the CLI's default `--max-code` (16 MiB).
    fn default() -> LoadOptions {
        LoadOptions::new(crate::abi::DEFAULT_MAX_CODE)
    }
}

/// Loads guest code from `path` (`-` for standard input): [`load_path_with`] with
/// [`LoadOptions::new`]`(max_code)`.
pub fn load_path(
    path: &Path,
    format: Option<Format>,
    max_code: usize,
) -> Result<Vec<u8>, InputError> {
    load_path_with(path, format, &LoadOptions::new(max_code))
}

/// Loads guest code from `path` (`-` for standard input).
///
/// The format is `format` when given; else the one the extension names
/// ([`Format::from_path`]); else ELF if the file starts with the ELF magic; else an error.
/// Standard input is raw bytes unless `format` says otherwise. Assembly sources are read (with
/// the same bound as hex text), copied into a private directory and assembled there in the
/// toolchain's sandbox; messages name `path`. `.S` files go through the C preprocessor
/// (`cc -E`) first. Only regular files are read: FIFOs, sockets and devices are refused at
/// once, never waited on.
///
/// The code must be non-empty and at most `options.max_code` bytes ([`InputError::TooLarge`]
/// with `--max-code` otherwise).
pub fn load_path_with(
    path: &Path,
    format: Option<Format>,
    options: &LoadOptions,
) -> Result<Vec<u8>, InputError> {
    let max_code = options.max_code;
    if is_stdin(path) {
        let format = format.unwrap_or(Format::Bin);
        let bytes = read_limited(path, format.read_limit(max_code))?
            .map_err(|size| over_read_limit(STDIN_NAME, format, size, max_code))?;
        return load_bytes_with(&bytes, format, STDIN_NAME, options);
    }
    let name = path.display().to_string();
    let format = match format.or_else(|| Format::from_path(path)) {
        Some(format) => format,
        None => sniff_format(path, &name)?,
    };
    match format {
        Format::Bin | Format::Hex => {
            let bytes = read_limited(path, format.read_limit(max_code))?
                .map_err(|size| over_read_limit(&name, format, size, max_code))?;
            load_bytes(&bytes, format, &name, max_code)
        }
        Format::Elf => {
            let code = elf_file_text(open_file(path)?, &name, max_code)?;
            check_code(&code, &name, max_code)?;
            Ok(code)
        }
        Format::Gas | Format::Nasm => {
            let source = read_limited(path, format.read_limit(max_code))?
                .map_err(|size| over_read_limit(&name, format, size, max_code))?;
            let preprocess =
                format == Format::Gas && path.extension().is_some_and(|ext| ext == "S");
            let code = assemble_source(&source, format, preprocess, &name, options)?;
            check_code(&code, &name, max_code)?;
            Ok(code)
        }
    }
}

/// Loads guest code in `format` from memory; `name` stands for it in messages:
/// [`load_bytes_with`] with [`LoadOptions::new`]`(max_code)`.
pub fn load_bytes(
    bytes: &[u8],
    format: Format,
    name: &str,
    max_code: usize,
) -> Result<Vec<u8>, InputError> {
    load_bytes_with(bytes, format, name, &LoadOptions::new(max_code))
}

/// Loads guest code in `format` from memory; `name` stands for it in messages.
///
/// Assembly sources from memory are never run through the C preprocessor. The code must be
/// non-empty and at most `options.max_code` bytes.
pub fn load_bytes_with(
    bytes: &[u8],
    format: Format,
    name: &str,
    options: &LoadOptions,
) -> Result<Vec<u8>, InputError> {
    let max_code = options.max_code;
    let code = match format {
        Format::Bin => {
            check_code(bytes, name, max_code)?;
            return Ok(bytes.to_vec());
        }
        Format::Hex => parse_hex(hex_text(bytes, name)?, name)?,
        Format::Gas | Format::Nasm => assemble_source(bytes, format, false, name, options)?,
        Format::Elf => elf_text(bytes, name, max_code)?,
    };
    check_code(&code, name, max_code)?;
    Ok(code)
}

/// Parses hex text into bytes; `what` names the text in messages (a file name, `--hex`).
///
/// Accepted: pairs of hex digits in either case, in runs of any length (`b02ac3`); whitespace and
/// commas between runs; a `0x`/`0X` prefix at the start of a run and a `\x` prefix anywhere
/// between pairs (`0xb0,0x2a`, `\xb0\x2a\xc3`, `0xb02ac3`); comments from `#`, `;` or `//` to
/// the end of the line. Every run must have an even number of digits (`b 0` is an error, not
/// `b0`), except that a single digit after a prefix is one byte, as in C (`0x0`, `\x7`). C
/// string literals, as shellcode is often pasted, stand for their bytes and may be
/// concatenated: `"\x6a\x3b" "\x58"` (the escapes are C's). Errors give the line and column
/// (counted in characters from 1). The result may be empty.
pub fn parse_hex(text: &str, what: &str) -> Result<Vec<u8>, InputError> {
    if let Some(bytes) = parse_plain_hex(text.as_bytes()) {
        return Ok(bytes);
    }
    let mut bytes = Vec::with_capacity(text.len() / 2);
    for (line_index, line) in text.split('\n').enumerate() {
        parse_hex_line(line, line_index + 1, what, &mut bytes)?;
    }
    Ok(bytes)
}

/// Assembles `source` (GNU as or NASM) and returns its `.text` section.
///
/// Runs `as --64` or `nasm -f elf64` in a private directory, in the toolchain's sandbox;
/// assembler messages call the source `source.s` or `source.asm`. Sources are not run through the C preprocessor. Fails with a
/// message naming the Debian package to install when the assembler is missing, with the
/// assembler's first messages when it rejects the source, and as [`text_of_elf`] does for the
/// object it makes. No size limit applies here: [`load_bytes`] enforces `max_code`.
pub fn assemble(source: &str, format: Format) -> Result<Vec<u8>, InputError> {
    let name = match format {
        Format::Nasm => "source.asm",
        _ => "source.s",
    };
    assemble_source(
        source.as_bytes(),
        format,
        false,
        name,
        &LoadOptions::new(usize::MAX),
    )
}

/// The bytes of the `.text` section of an ELF64 x86-64 relocatable object, executable or shared
/// object; `name` stands for it in messages.
///
/// Fails when `bytes` is not such an ELF file, has no `.text` or an empty one, or (for a
/// relocatable object) has relocations against `.text`: those would need a linker, and bytejail
/// runs the section as it is.
pub fn text_of_elf(bytes: &[u8], name: &str) -> Result<Vec<u8>, InputError> {
    elf_text(bytes, name, usize::MAX)
}

/// Reads the guest's input from `path` (`-` for standard input): raw bytes, possibly none, at
/// most `max_input` of them ([`InputError::TooLarge`] with `--max-input` otherwise).
pub fn read_input(path: &Path, max_input: usize) -> Result<Vec<u8>, InputError> {
    read_limited(path, max_input)?.map_err(|size| InputError::TooLarge {
        what: format!(
            "`{}`: input",
            if is_stdin(path) {
                STDIN_NAME.into()
            } else {
                path.display().to_string()
            }
        ),
        size,
        limit: max_input,
        flag: "--max-input",
    })
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Fails unless `code` is non-empty and at most `max_code` bytes.
fn check_code(code: &[u8], name: &str, max_code: usize) -> Result<(), InputError> {
    if code.is_empty() {
        return Err(InputError::Invalid(format!("`{name}`: the code is empty")));
    }
    if code.len() > max_code {
        return Err(code_too_large(name, Some(code.len()), max_code));
    }
    Ok(())
}

fn code_too_large(name: &str, size: Option<usize>, max_code: usize) -> InputError {
    InputError::TooLarge {
        what: format!("`{name}`: code"),
        size,
        limit: max_code,
        flag: "--max-code",
    }
}

/// The error for a file longer than `format.read_limit(max_code)`.
fn over_read_limit(name: &str, format: Format, size: Option<usize>, max_code: usize) -> InputError {
    if format == Format::Bin {
        return code_too_large(name, size, max_code);
    }
    InputError::Invalid(format!(
        "`{name}`: the {} is over {} bytes, too large to hold at most {max_code} bytes of code \
         (--max-code)",
        format.noun(),
        format.read_limit(max_code),
    ))
}

// ---------------------------------------------------------------------------------------------
// Reading files

/// Opens `path` for reading: regular files only (and the memory devices that never block, such
/// as `/dev/null`). The open is non-blocking and the check is on the open descriptor (`fstat`),
/// so a FIFO without a writer, a socket or another device is refused at once rather than waited
/// on, and nothing can be swapped in between a check and the open.
/// (`O_NONBLOCK` changes nothing for reading a regular file.) Directories are refused here:
/// `read` on one fails only later, and an assembler would report it in its own words.
fn open_file(path: &Path) -> Result<File, InputError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let unreadable = |source| InputError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        // A socket cannot be opened at all; say what it is rather than "no such device".
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
            let socket = std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
            return Err(if socket {
                not_regular(path, "a socket")
            } else {
                unreadable(err)
            });
        }
        Err(err) => return Err(unreadable(err)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    let kind = meta.file_type();
    if kind.is_char_device() && never_blocks(meta.rdev()) {
        // Read with the same bound as a file: /dev/null is empty input, /dev/zero endless.
        return Ok(file);
    }
    if kind.is_dir() {
        return Err(unreadable(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "not a regular file"
        };
        return Err(not_regular(path, what));
    }
    Ok(file)
}

/// Whether a character device is one of the kernel's memory devices whose reads never block:
/// `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom` (major 1, minors 3, 5,
/// 7, 8, 9; see devices.txt). `/dev/mem` and friends (minors 1, 2, 4) are not among them.
fn never_blocks(rdev: u64) -> bool {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    major == 1 && matches!(minor, 3 | 5 | 7 | 8 | 9)
}

fn not_regular(path: &Path, what: &str) -> InputError {
    InputError::Invalid(format!(
        "`{}`: is {what}; bytejail reads only regular files, or standard input given as `-`",
        path.display()
    ))
}

/// Reads all of `path` (`-` for standard input) if it holds at most `limit` bytes. `Ok(Err(size))`
/// when it holds more: `size` is the file's length when known (a regular file), else `limit + 1`,
/// the most that was read.
fn read_limited(path: &Path, limit: usize) -> Result<Result<Vec<u8>, Option<usize>>, InputError> {
    if is_stdin(path) {
        let stdin = io::stdin();
        // The length of a regular file redirected to stdin; pipes and terminals have none.
        let known_len = stdin
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|meta| meta.len());
        let bytes = read_bounded(stdin.lock(), limit).map_err(|source| InputError::Unreadable {
            path: PathBuf::from(STDIN_NAME),
            source,
        })?;
        return Ok(bytes.ok_or_else(|| over_size(known_len, limit)));
    }
    let file = open_file(path)?;
    let known_len = file
        .metadata()
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|meta| meta.len());
    if known_len.is_some_and(|len| len > limit as u64) {
        return Ok(Err(over_size(known_len, limit)));
    }
    // Bounded all the same: the file may grow, or not be a regular file at all (/dev/zero).
    let bytes = read_bounded(&file, limit).map_err(|source| InputError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes.ok_or_else(|| over_size(known_len, limit)))
}

/// The size to report for a source over `limit`: its length when that is known and indeed
/// over the limit (a file may change while read), else unknown.
fn over_size(known_len: Option<u64>, limit: usize) -> Option<usize> {
    known_len
        .map(|len| usize::try_from(len).unwrap_or(usize::MAX))
        .filter(|len| *len > limit)
}

/// Reads everything from `reader` if it is at most `limit` bytes; None if there is more. Never
/// holds more than `limit + 1` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut bytes = Vec::new();
    reader.take(cap).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

/// Decides the format of a file whose extension says nothing: ELF by its magic, else an error.
fn sniff_format(path: &Path, name: &str) -> Result<Format, InputError> {
    let file = open_file(path)?;
    let mut magic = Vec::with_capacity(ELF_MAGIC.len());
    file.take(ELF_MAGIC.len() as u64)
        .read_to_end(&mut magic)
        .map_err(|source| InputError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if magic == ELF_MAGIC {
        return Ok(Format::Elf);
    }
    let extension = match path.extension() {
        Some(ext) => format!("extension `.{}`", ext.to_string_lossy()),
        None => "no extension".to_string(),
    };
    Err(InputError::Invalid(format!(
        "`{name}`: unknown code format ({extension}); {FORMAT_HINT}"
    )))
}

// ---------------------------------------------------------------------------------------------
// Hex

/// The hex text in `bytes`, or an error at the first byte that is not UTF-8.
fn hex_text<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str, InputError> {
    std::str::from_utf8(bytes).map_err(|err| {
        let valid = &bytes[..err.valid_up_to()];
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        // The prefix is valid UTF-8, so this counts its characters.
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        let byte = bytes.get(err.valid_up_to()).copied().unwrap_or(0);
        InputError::Invalid(format!(
            "`{name}`: bad hex digit (byte 0x{byte:02x}, not text) at line {line}, column {column}; \
             for raw bytes use .bin or --format bin"
        ))
    })
}

/// Parses one line of hex text (see [`parse_hex`]) onto `out`.
fn parse_hex_line(
    line: &str,
    line_no: usize,
    what: &str,
    out: &mut Vec<u8>,
) -> Result<(), InputError> {
    let bytes = line.as_bytes();
    // Column (1-based, in characters) of byte index `i`; only computed for messages.
    let column = |i: usize| line.get(..i).map_or(i, |before| before.chars().count()) + 1;
    let mut i = 0;
    // True at the start of a run, where `0x` is a prefix rather than a digit and a letter.
    let mut run_start = true;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c.is_ascii_whitespace() || c == b',' {
            i += 1;
            run_start = true;
            continue;
        }
        if c == b'#' || c == b';' || (c == b'/' && next == Some(b'/')) {
            break;
        }
        if c == b'"' {
            i = parse_c_string(line, i, line_no, what, out)?;
            run_start = true;
            continue;
        }
        if !c.is_ascii() {
            // Unicode whitespace separates like ASCII whitespace; anything else is an error.
            let ch = char_at(line, i);
            if ch.is_whitespace() {
                i += ch.len_utf8();
                run_start = true;
                continue;
            }
            return Err(bad_hex_digit(what, ch, line_no, column(i)));
        }
        let prefix_at = i;
        let prefixed =
            matches!(next, Some(b'x' | b'X')) && (c == b'\\' || (c == b'0' && run_start));
        if prefixed {
            i += 2;
        }
        run_start = false;
        let digits_at = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        let digits = line.get(digits_at..i).unwrap_or_default();
        if digits.is_empty() {
            if prefixed {
                return Err(InputError::Invalid(format!(
                    "`{what}`: `{}` is not followed by hex digits at line {line_no}, column {}",
                    line.get(prefix_at..prefix_at + 2).unwrap_or_default(),
                    column(prefix_at)
                )));
            }
            return Err(bad_hex_digit(what, char_at(line, i), line_no, column(i)));
        }
        // A run ends at a separator, a comment, a `\x` or the end of the line; a stray character
        // is the real mistake, so report it before the digit count.
        if !ends_run(line, i) {
            return Err(bad_hex_digit(what, char_at(line, i), line_no, column(i)));
        }
        // `0x0` and `\x0` as in C: one digit after a prefix is unambiguous.
        if prefixed && digits.len() == 1 {
            out.push(hex_value(bytes[digits_at]));
            continue;
        }
        if digits.len() % 2 != 0 {
            let shown = if digits.len() > 16 {
                format!("{}...", digits.get(..16).unwrap_or_default())
            } else {
                digits.to_string()
            };
            return Err(InputError::Invalid(format!(
                "`{what}`: odd number of hex digits in `{shown}` at line {line_no}, column {}",
                column(digits_at)
            )));
        }
        out.extend(digits.as_bytes().chunks_exact(2).map(|pair| {
            // Both are ASCII hex digits, checked above.
            (hex_value(pair[0]) << 4) | hex_value(pair[1])
        }));
    }
    Ok(())
}

/// Parses the C string literal that starts with the `"` at byte `start` of `line` onto `out`,
/// and returns the byte index after its closing quote.
///
/// The escapes are C's: `\xHH` (one or two hex digits), octal `\0` to `\377`, `\n`, `\t`,
/// `\r`, `\a`, `\b`, `\f`, `\v`, `\\`, `\"`, `\'`, `\?`; any other character stands for
/// its own UTF-8 bytes, as shellcode strings such as `"\x68//sh"` use it. C reads every hex
/// digit after `\x` as one number, so `\x6a3b` is refused rather than read as two bytes, and
/// a string ends on its own line.
fn parse_c_string(
    line: &str,
    start: usize,
    line_no: usize,
    what: &str,
    out: &mut Vec<u8>,
) -> Result<usize, InputError> {
    let column = |i: usize| line.get(..i).map_or(i, |before| before.chars().count()) + 1;
    let error = |message: String, at: usize| {
        InputError::Invalid(format!(
            "`{what}`: {message} at line {line_no}, column {}",
            column(at)
        ))
    };
    let bytes = line.as_bytes();
    let mut i = start + 1;
    loop {
        let Some(&c) = bytes.get(i) else {
            return Err(error("string without its closing `\"`".into(), start));
        };
        match c {
            b'"' => return Ok(i + 1),
            b'\\' => {
                let escape_at = i;
                let Some(&kind) = bytes.get(i + 1) else {
                    return Err(error("string without its closing `\"`".into(), start));
                };
                i += 2;
                let simple = match kind {
                    b'n' => Some(b'\n'),
                    b't' => Some(b'\t'),
                    b'r' => Some(b'\r'),
                    b'a' => Some(0x07),
                    b'b' => Some(0x08),
                    b'f' => Some(0x0c),
                    b'v' => Some(0x0b),
                    b'\\' | b'"' | b'\'' | b'?' => Some(kind),
                    _ => None,
                };
                if let Some(byte) = simple {
                    out.push(byte);
                    continue;
                }
                match kind {
                    b'x' | b'X' => {
                        let digits = bytes[i..]
                            .iter()
                            .take_while(|b| b.is_ascii_hexdigit())
                            .count();
                        match digits {
                            0 => {
                                return Err(error(
                                    "`\\x` is not followed by hex digits".into(),
                                    escape_at,
                                ))
                            }
                            1 | 2 => {
                                out.push(
                                    bytes[i..i + digits]
                                        .iter()
                                        .fold(0, |value, &d| (value << 4) | hex_value(d)),
                                );
                                i += digits;
                            }
                            _ => {
                                return Err(error(
                                    format!(
                                        "`{}` in a string is one number in C (write `\\x` \
                                         before each byte)",
                                        line.get(escape_at..i + digits).unwrap_or_default(),
                                    ),
                                    escape_at,
                                ))
                            }
                        }
                    }
                    b'0'..=b'7' => {
                        let digits = 1 + bytes[i..]
                            .iter()
                            .take(2)
                            .take_while(|b| matches!(b, b'0'..=b'7'))
                            .count();
                        let value = bytes[i - 1..i - 1 + digits]
                            .iter()
                            .fold(0u32, |value, &d| (value << 3) | u32::from(d - b'0'));
                        let byte = u8::try_from(value).map_err(|_| {
                            error(
                                format!(
                                    "octal escape `{}` is more than a byte",
                                    line.get(escape_at..i - 1 + digits).unwrap_or_default()
                                ),
                                escape_at,
                            )
                        })?;
                        out.push(byte);
                        i += digits - 1;
                    }
                    _ => {
                        return Err(error(
                            format!(
                                "unknown escape `\\{}` in a string",
                                char_at(line, escape_at + 1).escape_debug()
                            ),
                            escape_at,
                        ))
                    }
                }
            }
            _ => {
                let ch = char_at(line, i);
                let mut utf8 = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                i += ch.len_utf8();
            }
        }
    }
}

/// What a byte is to [`parse_plain_hex`]: a digit's value, a separator, or anything else.
const PLAIN_HEX: [u8; 256] = {
    let mut table = [PLAIN_OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        table[i] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b',' => PLAIN_SEPARATOR,
            _ if c.is_ascii_whitespace() => PLAIN_SEPARATOR,
            _ => PLAIN_OTHER,
        };
        i += 1;
    }
    table
};
const PLAIN_SEPARATOR: u8 = 0x10;
const PLAIN_OTHER: u8 = 0x20;

/// The common spelling of hex, decoded by table: runs of an even number of digits between
/// ASCII whitespace and commas (`b02ac3`, `b0 2a c3`, a batch's `input_hex`). `None` for
/// anything else (prefixes, comments, strings, odd runs, bad digits), which [`parse_hex`]'s
/// general parser then reads, with its messages; on the texts taken here both give the same
/// bytes. The general parser goes character by character at 70-80 MB/s; this runs at memory
/// speed, which a 1 MiB input in a batch line needs (2 MiB of hex).
fn parse_plain_hex(text: &[u8]) -> Option<Vec<u8>> {
    // One run without separators (a batch's `input_hex`): checked and decoded with SIMD where
    // the CPU has it (faster-hex takes the same digits, either case); a run it refuses
    // (separators, anything else) goes on below.
    if text.len() % 2 == 0 && text.len() > SHORT_DIGITS {
        let mut bytes = vec![0; text.len() / 2];
        if faster_hex::hex_decode(text, &mut bytes).is_ok() {
            return Some(bytes);
        }
    }
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut i = 0;
    while i < text.len() {
        // Pairs of digits, the bulk of the text.
        while let Some(&[high, low]) = text.get(i..i + 2) {
            let (high, low) = (PLAIN_HEX[usize::from(high)], PLAIN_HEX[usize::from(low)]);
            if (high | low) > 0xf {
                break;
            }
            out.push(high << 4 | low);
            i += 2;
        }
        let Some(&c) = text.get(i) else { break };
        // Not a pair: a separator ends the run (a run's digits come in pairs here), anything
        // else is left to the general parser.
        if PLAIN_HEX[usize::from(c)] != PLAIN_SEPARATOR {
            return None;
        }
        i += 1;
    }
    Some(out)
}

/// Up to this many digits hex is checked and decoded a byte at a time, without faster-hex:
/// its first call in a process asks the CPU what it has (two `cpuid`s and an `xgetbv`, VM exits
/// under a hypervisor: about 25 µs of a one-job `bytejail batch` here), more than a byte at a
/// time takes over short hex. A job's code is mostly short.
pub(crate) const SHORT_DIGITS: usize = 1024;

/// Whether `text` is all hex digits, either case (faster-hex's `hex_check`, but for short text).
pub(crate) fn all_hex_digits(text: &[u8]) -> bool {
    if text.len() <= SHORT_DIGITS {
        text.iter().all(u8::is_ascii_hexdigit)
    } else {
        faster_hex::hex_check(text)
    }
}

/// The bytes an even run of hex digits (nothing else, either case) spells, as [`parse_hex`]
/// gives them; for text already checked to be such a run (a batch's `input_hex`, checked as
/// its line is parsed), which is then not checked again.
pub(crate) fn decode_hex_digits(digits: &[u8]) -> Vec<u8> {
    debug_assert!(digits.len() % 2 == 0 && all_hex_digits(digits));
    if digits.len() <= SHORT_DIGITS {
        return digits
            .chunks_exact(2)
            .map(|pair| PLAIN_HEX[usize::from(pair[0])] << 4 | PLAIN_HEX[usize::from(pair[1])])
            .collect();
    }
    let mut bytes = decoded_buffer(digits.len() / 2);
    // Safe whatever `digits` holds (other bytes decode to unspecified values, never read
    // outside either slice); checked by the caller.
    faster_hex::hex_decode_unchecked(digits, &mut bytes);
    bytes
}

/// The bytes an even run of hex digits (either case) spells, as [`parse_hex`] gives them;
/// `None` when `digits` is of odd length or holds anything but hex digits. Checks and decodes
/// a slice at a time, the check's slice still in the cache when it is decoded: one pass over
/// megabytes of hex instead of a check over all of it, then a decode over all of it.
pub(crate) fn decode_hex_run(digits: &[u8]) -> Option<Vec<u8>> {
    /// Digits checked, then decoded, at a time: well inside a core's L1 data cache.
    const SLICE: usize = 16 << 10;
    if digits.len() % 2 != 0 {
        return None;
    }
    let mut bytes = decoded_buffer(digits.len() / 2);
    for (digits, bytes) in digits.chunks(SLICE).zip(bytes.chunks_mut(SLICE / 2)) {
        if !faster_hex::hex_check(digits) {
            return None;
        }
        faster_hex::hex_decode_unchecked(digits, bytes);
    }
    Some(bytes)
}

/// A run of hex digits decoded as it arrives, in pieces of any length: a batch line's
/// `input_hex` decoded while the line is read (a 1 MiB input is 2 MiB of digits, which are then
/// never held as text). The digits' letters must all be of one case, so that
/// [`HexRun::write_digits`] can give the text back exactly when the line turns out to need it.
#[derive(Default)]
pub(crate) struct HexRun {
    bytes: Vec<u8>,
    /// A digit whose pair has not come yet.
    pending: Option<u8>,
    /// The case of the letters taken: `None` until the first letter is taken.
    upper: Option<bool>,
    /// How much of `bytes` is faulted in ahead.
    populated: usize,
}

impl HexRun {
    /// Digits checked, then decoded, at a time: well inside a core's L1 data cache.
    pub(crate) const SLICE: usize = 16 << 10;
    /// The first allocation: a long run grows by doubling from here, the pages it does not
    /// reach never touched.
    const FIRST_CAPACITY: usize = 256 << 10;

    /// Takes the leading digits of `digits`, a slice of [`HexRun::SLICE`] at a time: stops at
    /// the first slice that holds anything but hex digits of the run's case (so a run's end is
    /// found within a slice of it; the caller looks there). Returns how many bytes it took.
    pub(crate) fn push(&mut self, digits: &[u8]) -> usize {
        let mut taken = 0;
        if let Some(high) = self.pending {
            let Some(&low) = digits.first() else {
                return 0;
            };
            if !self.check(&[low]) {
                return 0;
            }
            self.reserve(1, digits.len() / 2);
            self.bytes.push((hex_value(high) << 4) | hex_value(low));
            self.pending = None;
            taken = 1;
        }
        for slice in digits[taken..].chunks(Self::SLICE) {
            // Only the last slice can be odd: its last digit waits for its pair.
            let even = slice.len() & !1;
            let at = self.bytes.len();
            self.reserve(even / 2, (digits.len() - taken) / 2);
            self.bytes.resize(at + even / 2, 0);
            let odd = slice.get(even..).unwrap_or_default();
            let case = self.upper;
            if !self.decode(&slice[..even], at) || !self.check(odd) {
                // Nothing of the slice taken, the case of its letters included.
                self.bytes.truncate(at);
                self.upper = case;
                break;
            }
            self.pending = odd.first().copied();
            taken += slice.len();
        }
        taken
    }

    /// Checks `digits` (even in number) and decodes them into `bytes[at..]`, in one pass (see
    /// [`decode_digits`]): `false` if they are not all hex digits of the run's case (the first
    /// letters set it), and the bytes written then mean nothing.
    fn decode(&mut self, digits: &[u8], at: usize) -> bool {
        let out = &mut self.bytes[at..];
        let upper = match self.upper {
            Some(upper) => return decode_digits(digits, out, upper),
            None => [false, true]
                .into_iter()
                .find(|&upper| decode_digits(digits, out, upper)),
        };
        upper
            .inspect(|&upper| self.set_case(digits, upper))
            .is_some()
    }

    /// Whether `digits` are all hex digits of the run's case (the first letters set it).
    fn check(&mut self, digits: &[u8]) -> bool {
        let upper = match self.upper {
            Some(upper) => return all_digits(digits, upper),
            None => [false, true]
                .into_iter()
                .find(|&upper| all_digits(digits, upper)),
        };
        upper
            .inspect(|&upper| self.set_case(digits, upper))
            .is_some()
    }

    /// The run's case is that of `digits`, taken as digits of that case, unless they have no
    /// letter (they are then digits of either case).
    fn set_case(&mut self, digits: &[u8], upper: bool) {
        if upper || !all_digits(digits, true) {
            self.upper = Some(upper);
        }
    }

    /// Room for `more` bytes, exactly (a run that ends at a power of two stays in its
    /// allocation), faulted in with one call per `ahead` bytes (see [`POPULATE_FROM`]): what the
    /// caller expects to write, at most.
    fn reserve(&mut self, more: usize, ahead: usize) {
        let need = self.bytes.len() + more;
        if need > self.bytes.capacity() {
            let at_least = need.max(Self::FIRST_CAPACITY) - self.bytes.len();
            self.bytes.reserve(at_least);
        }
        if need > self.populated && self.bytes.capacity() >= POPULATE_FROM {
            let spare = self.bytes.spare_capacity_mut();
            let ahead = spare.len().min(ahead.max(more));
            crate::sys::populate(&mut spare[..ahead]);
            self.populated = self.bytes.len() + ahead;
        }
    }

    /// Bytes taken so far, as digits (the pending one included).
    pub(crate) fn digits_taken(&self) -> usize {
        self.bytes.len() * 2 + usize::from(self.pending.is_some())
    }

    /// Whether the digits taken pair up.
    pub(crate) fn is_even(&self) -> bool {
        self.pending.is_none()
    }

    /// The bytes decoded (the pending digit, if any, left out).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes decoded (see [`HexRun::is_even`]).
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Appends the digits taken to `out`, exactly as they came.
    pub(crate) fn write_digits(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.resize(at + self.bytes.len() * 2, 0);
        let encoded = if self.upper == Some(true) {
            faster_hex::hex_encode_upper(&self.bytes, &mut out[at..])
        } else {
            faster_hex::hex_encode(&self.bytes, &mut out[at..])
        };
        debug_assert!(encoded.is_ok(), "room for two digits a byte");
        out.extend(self.pending);
    }
}

/// Checks that `digits` (even in number) are all hex digits with letters of one case (as
/// [`all_digits`]) and decodes them into `out` (half as long), in one pass with AVX2 where the
/// CPU and the kernel have it: about half the time of a check then a decode, which on a 1 MiB
/// input (2 MiB of digits) is about 0.1 ms. `false` if they are not, and `out` then means
/// nothing.
fn decode_digits(digits: &[u8], out: &mut [u8], upper: bool) -> bool {
    debug_assert_eq!(digits.len(), out.len() * 2);
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        return avx2::decode_digits(digits, out, upper);
    }
    all_digits(digits, upper) && {
        faster_hex::hex_decode_unchecked(digits, out);
        true
    }
}

/// Hex digits checked and decoded with AVX2 (see [`decode_digits`]).
#[cfg(target_arch = "x86_64")]
#[allow(
    unsafe_code,
    reason = "cpuid, xgetbv and AVX2 intrinsics, used only where cpuid says AVX2 is there"
)]
mod avx2 {
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Whether the CPU has AVX2 and the kernel saves its registers, as
    /// `is_x86_feature_detected!("avx2")` decides it, without the standard library's full
    /// detection (about ten `cpuid`s, each a VM exit under a hypervisor: 7.5 us on this
    /// project's machines, more on some): glibc's answer from the `cpuid`s it ran at start
    /// ([`glibc_avx2`]), else two `cpuid`s ([`cpuid_avx2`]). Asked once, then remembered.
    pub(super) fn available() -> bool {
        /// 0: not asked yet; 1: no; 2: yes.
        static AVX2: AtomicU8 = AtomicU8::new(0);
        match AVX2.load(Ordering::Relaxed) {
            1 => return false,
            2 => return true,
            _ => {}
        }
        let available = glibc_avx2().unwrap_or_else(cpuid_avx2);
        AVX2.store(if available { 2 } else { 1 }, Ordering::Relaxed);
        available
    }

    /// AVX2 as glibc found it usable at start (`CPU_FEATURE_ACTIVE (AVX2)`: the bit of leaf 7
    /// among its usable features, see [`crate::sys::glibc_cpuid_leaf`]): no `cpuid` of its own.
    pub(super) fn glibc_avx2() -> Option<bool> {
        /// `CPUID_INDEX_7`: leaf 7, subleaf 0.
        const INDEX_7: u32 = 1;
        crate::sys::glibc_cpuid_leaf(INDEX_7).map(|leaf| leaf.active[1] & (1 << 5) != 0)
    }

    /// CPUID.1:ECX.OSXSAVE and .AVX, XCR0 saving the SSE and AVX state, and
    /// CPUID.7.0:EBX.AVX2: two `cpuid`s.
    pub(super) fn cpuid_avx2() -> bool {
        // SAFETY: cpuid leaf 1 exists on every x86-64 CPU. (`__cpuid` is a safe function from
        // Rust 1.89 on; the block keeps older compilers in `rust-version` building.)
        #[allow(unused_unsafe)]
        let ecx = unsafe { __cpuid(1) }.ecx;
        let (osxsave, avx) = (ecx & (1 << 27) != 0, ecx & (1 << 28) != 0);
        osxsave
            && avx
            && {
                let (eax, _edx): (u32, u32);
                // SAFETY: xgetbv exists when the kernel set CR4.OSXSAVE (the OSXSAVE bit); it
                // reads XCR0 into eax:edx and touches nothing else.
                unsafe {
                    std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") _edx,
                    options(nomem, nostack, preserves_flags));
                }
                eax & 0b110 == 0b110
            }
            && {
                // SAFETY: leaf 7 exists on every CPU with AVX (their highest basic leaf is 0xd
                // or more).
                #[allow(unused_unsafe)]
                let ebx = unsafe { __cpuid_count(7, 0) }.ebx;
                ebx & (1 << 5) != 0
            }
    }

    /// [`super::decode_digits`] with AVX2, which [`available`] said the CPU has.
    pub(super) fn decode_digits(digits: &[u8], out: &mut [u8], upper: bool) -> bool {
        assert!(available() && digits.len() == out.len() * 2);
        // SAFETY: the CPU has AVX2 (asserted above), and the slices are of the lengths
        // `decode_blocks` needs.
        unsafe { decode_blocks(digits, out, upper) }
    }

    /// Decodes 64 digits at a time: each byte's value as a digit (`b - '0'`) and as a letter
    /// (`b - 'a' + 10`, or `'A'`, 10 below it), the smaller of the two being its value when it
    /// is either (the other is then over 15); pairs of values multiplied and added into bytes
    /// (`maddubs`, 16 x high + low) and packed. The rest, under 64 digits, one pair at a time.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2; `digits` must be twice as long as `out`.
    #[target_feature(enable = "avx2")]
    unsafe fn decode_blocks(digits: &[u8], out: &mut [u8], upper: bool) -> bool {
        let letter = if upper { b'A' } else { b'a' };
        let zero = _mm256_set1_epi8(b'0' as i8);
        let first = _mm256_set1_epi8(letter as i8);
        let (nine, five, ten) = (
            _mm256_set1_epi8(9),
            _mm256_set1_epi8(5),
            _mm256_set1_epi8(10),
        );
        // Byte 0 (the high digit) times 16, byte 1 times 1.
        let weights = _mm256_set1_epi16(0x0110);
        let mut valid = _mm256_set1_epi8(-1);
        let blocks = digits.chunks_exact(64);
        let rest = blocks.remainder();
        let mut outs = out.chunks_exact_mut(32);
        for (block, out) in blocks.zip(&mut outs) {
            let mut pairs = [_mm256_setzero_si256(); 2];
            for (half, pair) in block.chunks_exact(32).zip(&mut pairs) {
                // SAFETY: `half` is 32 bytes; an unaligned load reads exactly those.
                let v = unsafe { _mm256_loadu_si256(half.as_ptr().cast()) };
                let digit = _mm256_sub_epi8(v, zero);
                let letter = _mm256_sub_epi8(v, first);
                let is_digit = _mm256_cmpeq_epi8(_mm256_min_epu8(digit, nine), digit);
                let is_letter = _mm256_cmpeq_epi8(_mm256_min_epu8(letter, five), letter);
                valid = _mm256_and_si256(valid, _mm256_or_si256(is_digit, is_letter));
                // Saturating: `'7'` - `'A'` + 10 must not wrap round to 0.
                let as_letter = _mm256_add_epi8(_mm256_subs_epu8(v, first), ten);
                let value = _mm256_min_epu8(digit, as_letter);
                *pair = _mm256_maddubs_epi16(value, weights);
            }
            // Packing works within 128-bit lanes: the quarters put back in order.
            let bytes =
                _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs[0], pairs[1]), 0b11_01_10_00);
            // SAFETY: `out` is 32 bytes; an unaligned store writes exactly those.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes) };
        }
        let blocks_valid = _mm256_movemask_epi8(valid) == -1;
        let rest_out = outs.into_remainder();
        blocks_valid && super::all_digits(rest, upper) && {
            for (byte, pair) in rest_out.iter_mut().zip(rest.chunks_exact(2)) {
                *byte = (super::hex_value(pair[0]) << 4) | super::hex_value(pair[1]);
            }
            true
        }
    }
}

/// Whether `digits` are all hex digits with letters of one case: `0`-`9`, then `a`-`f`, or
/// `A`-`F` if `upper`. Looks at every byte, with no branch per byte (the compiler makes it
/// SIMD): a run's digits are checked whole, not searched.
fn all_digits(digits: &[u8], upper: bool) -> bool {
    let letter = if upper { b'A' } else { b'a' };
    digits.iter().fold(true, |all, &b| {
        all & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(letter) < 6))
    })
}

/// `len` zero bytes to decode into, faulted in with one call when large (see
/// [`POPULATE_FROM`]) instead of a page fault per 4 KiB (a 1 MiB input: 256).
fn decoded_buffer(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    if bytes.capacity() >= POPULATE_FROM {
        crate::sys::populate(bytes.spare_capacity_mut());
    }
    bytes.resize(len, 0);
    bytes
}

/// Buffers from this size on are faulted in with one call ([`crate::sys::populate`]) before
/// they are filled.
pub(crate) const POPULATE_FROM: usize = 64 << 10;

/// Whether a run of hex digits may end at byte `i` of `line`.
fn ends_run(line: &str, i: usize) -> bool {
    let rest = &line.as_bytes()[i.min(line.len())..];
    match rest {
        [] => true,
        [c, ..] if c.is_ascii_whitespace() || matches!(c, b',' | b'#' | b';' | b'"') => true,
        [b'/', b'/', ..] | [b'\\', b'x' | b'X', ..] => true,
        _ => char_at(line, i).is_whitespace(),
    }
}

/// The character starting at byte `i` of `line` (U+FFFD if there is none).
fn char_at(line: &str, i: usize) -> char {
    line.get(i..)
        .and_then(|rest| rest.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn bad_hex_digit(what: &str, ch: char, line: usize, column: usize) -> InputError {
    InputError::Invalid(format!(
        "`{what}`: bad hex digit `{}` at line {line}, column {column}",
        ch.escape_debug()
    ))
}

/// The value of an ASCII hex digit (0 for anything else, which callers rule out).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Assemblers

/// An external program and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
struct Tool {
    program: &'static str,
    package: &'static str,
}

const AS: Tool = Tool {
    program: "as",
    package: "binutils",
};
const NASM: Tool = Tool {
    program: "nasm",
    package: "nasm",
};
const CC: Tool = Tool {
    program: "cc",
    package: "gcc",
};

impl Tool {
    fn not_found(&self) -> InputError {
        InputError::Invalid(format!(
            "`{}` not found: install {} (apt-get install {})",
            self.program, self.package, self.package
        ))
    }
}

/// Messages from a failing tool kept in an error: the first few lines, each cut to a length.
const TOOL_MESSAGE_LINES: usize = 3;
const TOOL_MESSAGE_LINE_CHARS: usize = 200;

/// How long an assembler or preprocessor may run before bytejail kills it (and everything it
/// started); also each of its processes' `RLIMIT_CPU`.
const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Room for headers, symbols and relocations in an object file next to `max_code` bytes of code.
const OBJECT_SLACK: u64 = 16 << 20;

/// The largest object file an assembler may write for at most `max_code` bytes of code.
fn object_limit(max_code: usize) -> u64 {
    (max_code as u64)
        .saturating_mul(2)
        .saturating_add(OBJECT_SLACK)
}

/// The largest preprocessed source `cc -E` may write: a source's own bound, plus the system
/// headers it includes.
fn preprocessed_limit(max_code: usize) -> u64 {
    (Format::Gas.read_limit(max_code) as u64).saturating_add(OBJECT_SLACK)
}

/// The address-space limit of each toolchain process: plenty for real sources, far from what a
/// `.skip 0x100000000` or a runaway `.rept` asks for.
fn memory_limit(max_code: usize) -> u64 {
    (1u64 << 30).saturating_add((max_code as u64).saturating_mul(16))
}

/// One toolchain run of [`run_tool`].
struct ToolRun<'a> {
    tool: Tool,
    args: &'a [&'a OsStr],
    /// The private directory it runs in.
    dir: &'a Path,
    /// The file it writes, and the most bytes it may hold.
    output: &'a str,
    max_output: u64,
    /// Replacements in its messages: the private file names by the name the user knows.
    aliases: &'a [(&'a str, &'a str)],
}

/// Runs a tool in its sandbox (see [`crate::toolchain`]) and fails with its first messages,
/// naming the source `name`, unless it succeeds.
fn run_tool(run: &ToolRun, name: &str, options: &LoadOptions) -> Result<(), InputError> {
    let tool = run.tool;
    // Messages go to anonymous files rather than pipes, so the wait below needs no reader.
    let capture = || {
        tempfile::tempfile().map_err(|err| {
            InputError::Invalid(format!(
                "cannot capture `{}`'s messages: {err}",
                tool.program
            ))
        })
    };
    let (mut stdout, mut stderr) = (capture()?, capture()?);
    let job = crate::toolchain::Job {
        program: tool.program,
        args: run.args,
        dir: run.dir,
        read_dirs: &options.include_dirs,
        max_file: run.max_output,
        max_memory: memory_limit(options.max_code),
        timeout: TOOL_TIMEOUT,
        stdout: &stdout,
        stderr: &stderr,
        sandbox: options.toolchain_sandbox,
    };
    let ended = crate::toolchain::run(&job).map_err(|err| match err {
        crate::toolchain::RunError::NotFound => tool.not_found(),
        crate::toolchain::RunError::Failed(what, err) => InputError::Invalid(format!(
            "`{name}`: `{}` could not be run in its sandbox: {what}: {err}",
            tool.program
        )),
    })?;
    let status = match ended {
        Ended::Exited(0) => return Ok(()),
        Ended::TimedOut => {
            return Err(InputError::Invalid(format!(
                "`{name}`: {} did not finish within {} s; it was killed",
                tool.program,
                TOOL_TIMEOUT.as_secs()
            )))
        }
        Ended::Exited(code) => format!("exit status {code}"),
        Ended::Signaled(signal) => format!("killed by signal {signal}"),
    };
    // Past the file-size limit the tool gets SIGXFSZ, or EFBIG if it ignores that.
    let written = std::fs::metadata(run.dir.join(run.output)).map_or(0, |meta| meta.len());
    if ended == Ended::Signaled(libc::SIGXFSZ) || written >= run.max_output {
        return Err(InputError::Invalid(format!(
            "`{name}`: {}'s output grew past {} bytes, too large to hold at most {} bytes of \
             code (--max-code); it was stopped there",
            tool.program, run.max_output, options.max_code
        )));
    }
    let read_all = |file: &mut std::fs::File| {
        let mut bytes = Vec::new();
        let _ = file
            .rewind()
            .and_then(|()| file.take(1 << 20).read_to_end(&mut bytes));
        bytes
    };
    let (stdout, stderr) = (read_all(&mut stdout), read_all(&mut stderr));
    // GNU tools write errors to stderr, but look at stdout too in case a tool does not.
    let detail = summarize_messages(&stderr, run.aliases)
        .or_else(|| summarize_messages(&stdout, run.aliases))
        .unwrap_or_else(|| format!("no message, {status}"));
    // A read the sandbox stopped: say where reads may come from.
    let blocked = [
        "Permission denied",
        "file not found",
        "No such file",
        "unable to open",
    ];
    let hint = if options.toolchain_sandbox && blocked.iter().any(|text| detail.contains(text)) {
        " (the assembler may read only the source, the system's toolchain and headers, and \
         --include-dir directories)"
    } else {
        ""
    };
    Err(InputError::Invalid(format!(
        "`{name}`: {} failed: {detail}{hint}",
        tool.program
    )))
}

/// The first lines of a tool's messages on one line, or None if there are none.
fn summarize_messages(text: &[u8], aliases: &[(&str, &str)]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        // GNU as starts with "FILE: Assembler messages:", which says nothing.
        .filter(|line| !line.is_empty() && !line.ends_with("Assembler messages:"))
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut summary = lines
        .iter()
        .take(TOOL_MESSAGE_LINES)
        .map(|line| {
            let mut line = (*line).to_string();
            for (from, to) in aliases {
                line = line.replace(from, to);
            }
            if line.chars().count() > TOOL_MESSAGE_LINE_CHARS {
                let cut: String = line.chars().take(TOOL_MESSAGE_LINE_CHARS).collect();
                format!("{cut}...")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if lines.len() > TOOL_MESSAGE_LINES {
        let more = lines.len() - TOOL_MESSAGE_LINES;
        summary.push_str(&format!(" (and {more} more)"));
    }
    Some(summary)
}

/// The start of every private assembly directory's name; the process's id follows, then a
/// dash and a random part (see [`sweep_stale_dirs`]).
const TEMP_PREFIX: &str = "bytejail-asm-";

/// How long a leftover assembly directory must have gone untouched before
/// [`sweep_stale_dirs`] removes it: far longer than both tools of one run may take
/// ([`TOOL_TIMEOUT`] each).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 60);

fn temp_dir(name: &str) -> Result<tempfile::TempDir, InputError> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sweep_stale_dirs(&std::env::temp_dir(), STALE_AFTER));
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|err| {
            InputError::Invalid(format!(
                "`{name}`: cannot create a temporary directory to assemble in: {err}"
            ))
        })
}

/// Removes what killed bytejail processes left in `tmp`. A bytejail killed while it assembled
/// (SIGKILL runs no destructor) leaves its private directory behind, with a copy of the source.
/// The first assembly of each process removes every such directory that is this user's, names
/// a process that no longer exists, and has not changed for `stale_after`. The age keeps the
/// directory of a run still under way safe even where the name's process id means nothing
/// here (another PID namespace sharing this directory). Best effort: what cannot be read or
/// removed stays.
fn sweep_stale_dirs(tmp: &Path, stale_after: std::time::Duration) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let uid = crate::sys::geteuid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0 && pid as u32 != std::process::id())
        else {
            continue;
        };
        // Not followed: a symbolic link of that name is not ours to judge.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age >= stale_after);
        if meta.is_dir() && meta.uid() == uid && old && crate::sys::no_such_process(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The include directories as the tools get them: absolute (the tools run in their private
/// directory), each checked to be a directory. An error names the directory and the flag.
fn include_dirs(options: &LoadOptions) -> Result<Vec<PathBuf>, InputError> {
    options
        .include_dirs
        .iter()
        .map(|dir| {
            let bad = |reason: String| {
                InputError::Invalid(format!(
                    "include directory `{}`: {reason} (--include-dir)",
                    dir.display()
                ))
            };
            let absolute = std::fs::canonicalize(dir).map_err(|err| bad(err.to_string()))?;
            if !absolute.is_dir() {
                return Err(bad("not a directory".to_string()));
            }
            Ok(absolute)
        })
        .collect()
}

/// Assembles `source` (GNU as, preprocessed first if `preprocess`, or NASM) in a private
/// directory that holds a copy of it, in the toolchain's sandbox, and returns the `.text` of
/// the result. Messages call the source `name`.
fn assemble_source(
    source: &[u8],
    format: Format,
    preprocess: bool,
    name: &str,
    options: &LoadOptions,
) -> Result<Vec<u8>, InputError> {
    let file_name = match format {
        Format::Gas if preprocess => "source.S",
        Format::Gas => "source.s",
        Format::Nasm => "source.asm",
        Format::Bin | Format::Hex | Format::Elf => return Err(not_assembly(format, name)),
    };
    let include_dirs = include_dirs(options)?;
    let dir = temp_dir(name)?;
    std::fs::write(dir.path().join(file_name), source).map_err(|err| {
        InputError::Invalid(format!(
            "`{name}`: cannot write the source to a temporary file: {err}"
        ))
    })?;
    // Include directories as the tools spell them (NASM wants the trailing slash).
    let mut include_args: Vec<OsString> = Vec::new();
    for include in &include_dirs {
        include_args.push("-I".into());
        let mut dir = include.clone().into_os_string();
        if format == Format::Nasm {
            dir.push("/");
        }
        include_args.push(dir);
    }
    let includes = include_args.iter().map(OsString::as_os_str);
    // Relative names in the private directory, so messages read `source.s:3: ...`.
    let object = "out.o";
    let object_limit = object_limit(options.max_code);
    let mut assembler_input = file_name;
    let mut aliases = vec![(file_name, name)];
    if preprocess {
        // Line markers in the preprocessed text keep `as` naming the user's file and lines.
        let preprocessed = "preprocessed.s";
        // Messages without the quoted source line and caret: they go on one line.
        let args: Vec<&OsStr> = [
            "-E",
            "-fno-diagnostics-show-caret",
            "-fdiagnostics-color=never",
            "-x",
            "assembler-with-cpp",
        ]
        .into_iter()
        .map(OsStr::new)
        .chain(includes.clone())
        .chain(["-o", preprocessed, file_name].map(OsStr::new))
        .collect();
        let run = ToolRun {
            tool: CC,
            args: &args,
            dir: dir.path(),
            output: preprocessed,
            max_output: preprocessed_limit(options.max_code),
            aliases: &aliases,
        };
        run_tool(&run, name, options)?;
        assembler_input = preprocessed;
        aliases.push((preprocessed, name));
    }
    let (tool, head): (Tool, &[&str]) = match (format, options.syntax) {
        (Format::Nasm, _) => (NASM, &["-f", "elf64"]),
        (_, Syntax::Att) => (AS, &["--64"]),
        (_, Syntax::Intel) => (AS, &["--64", "-msyntax=intel", "-mnaked-reg"]),
    };
    let args: Vec<&OsStr> = head
        .iter()
        .map(OsStr::new)
        .chain(includes)
        .chain(["-o", object, assembler_input].map(OsStr::new))
        .collect();
    let run = ToolRun {
        tool,
        args: &args,
        dir: dir.path(),
        output: object,
        max_output: object_limit,
        aliases: &aliases,
    };
    run_tool(&run, name, options).map_err(|err| match err {
        InputError::Invalid(message)
            if tool.program == AS.program
                && options.syntax == Syntax::Att
                && looks_like_intel(&String::from_utf8_lossy(source)) =>
        {
            InputError::Invalid(format!(
                "{message}; hint: this looks like Intel syntax: try --syntax intel"
            ))
        }
        other => other,
    })?;
    elf_file_text(open_file(&dir.path().join(object))?, name, options.max_code)
}

/// Register names an Intel-syntax operand spells without a `%`.
const REGISTER_NAMES: [&str; 70] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "eax", "ebx", "ecx", "edx", "esi",
    "edi", "ebp", "esp", "ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "al", "bl", "cl", "dl",
    "ah", "bh", "ch", "dh", "sil", "dil", "bpl", "spl", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d", "r8w", "r9w",
    "r10w", "r11w", "r12w", "r13w", "r14w", "r15w", "r8b", "r9b", "r10b", "r11b", "r12b", "r13b",
    "r14b", "r15b", "rip", "ptr",
];

/// Whether a GNU as source that failed as AT&T reads like Intel syntax: more of its
/// instructions name a register without `%` (or say `ptr`) than name one with it, and it does
/// not switch to Intel syntax itself. A guess for a hint, never a decision.
fn looks_like_intel(source: &str) -> bool {
    if source.contains(".intel_syntax") {
        return false;
    }
    let (mut intel, mut att) = (0, 0);
    for statement in source.lines().flat_map(|line| line.split(';')) {
        let statement = statement.split('#').next().unwrap_or_default();
        // After any labels: `loop: dec ecx`.
        let statement = statement.rsplit(':').next().unwrap_or_default().trim();
        if statement.is_empty() || statement.starts_with('.') {
            continue;
        }
        let Some((_, operands)) = statement.split_once(char::is_whitespace) else {
            continue;
        };
        if operands.contains('%') || operands.contains('$') {
            att += 1;
        } else if operands
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| REGISTER_NAMES.contains(&word.to_ascii_lowercase().as_str()))
        {
            intel += 1;
        }
    }
    intel > att
}

fn not_assembly(format: Format, name: &str) -> InputError {
    InputError::Invalid(format!(
        "`{name}`: format {format} is not assembly source (use gas or nasm)"
    ))
}

// ---------------------------------------------------------------------------------------------
// ELF

/// The `.text` of the ELF file open as `file`, reading only what is needed.
fn elf_file_text(file: File, name: &str, max_code: usize) -> Result<Vec<u8>, InputError> {
    let cache = ReadCache::new(file);
    elf_text(&cache, name, max_code)
}

/// The `.text` of the ELF file in `data` (see [`text_of_elf`]), if at most `max_code` bytes; its
/// contents are read only after that check.
fn elf_text<'data, R: ReadRef<'data>>(
    data: R,
    name: &str,
    max_code: usize,
) -> Result<Vec<u8>, InputError> {
    let invalid = |message: String| InputError::Invalid(format!("`{name}`: {message}"));
    let len = data.len().unwrap_or(0);
    let ident = data.read_bytes_at(0, len.min(16)).unwrap_or(&[]);
    if !ident.starts_with(ELF_MAGIC) {
        return Err(invalid("not an ELF file (no ELF magic number)".into()));
    }
    // e_ident[EI_CLASS]: 1 is ELF32, 2 is ELF64.
    match ident.get(4) {
        Some(2) => {}
        Some(1) => {
            return Err(invalid(
                "a 32-bit ELF file; bytejail runs x86-64 code (assemble with `as --64` or \
                 `nasm -f elf64`)"
                    .into(),
            ))
        }
        _ => return Err(invalid("not a valid ELF file (unknown ELF class)".into())),
    }
    let file = ElfFile64::<Endianness, R>::parse(data)
        .map_err(|err| invalid(format!("not a valid ELF file: {err}")))?;
    if file.architecture() != Architecture::X86_64 || !file.is_little_endian() {
        return Err(invalid(format!(
            "an ELF file for {:?}, not x86-64",
            file.architecture()
        )));
    }
    let text = file.section_by_name(".text");
    let size = text.as_ref().map_or(0, |text| text.size());
    let Some(text) = text.filter(|text| size > 0 && text.file_range().is_some()) else {
        let problem = if file.section_by_name(".text").is_some() {
            "the .text section is empty"
        } else {
            "has no .text section"
        };
        // Code in other sections is the usual cause; name them.
        let others: Vec<String> = file
            .sections()
            .filter(|section| section.kind() == SectionKind::Text && section.size() > 0)
            .filter_map(|section| section.name().ok().map(|name| format!("`{name}`")))
            .take(4)
            .collect();
        return Err(invalid(if others.is_empty() {
            problem.to_string()
        } else {
            format!(
                "{problem} (there is code in {}; bytejail runs only .text)",
                others.join(", ")
            )
        }));
    };
    if file.kind() == ObjectKind::Relocatable {
        let mut relocations = text.relocations();
        if let Some((offset, first)) = relocations.next() {
            let count = 1 + relocations.count();
            let plural = if count == 1 { "" } else { "s" };
            return Err(invalid(format!(
                ".text has {count} unresolved relocation{plural} (first: against `{}` at offset \
                 {offset:#x}); {RELOCATION_HINT}",
                relocation_target(&file, first.target())
            )));
        }
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > max_code {
        return Err(code_too_large(name, Some(size), max_code));
    }
    let bytes = text
        .data()
        .map_err(|err| invalid(format!("cannot read the .text section: {err}")))?;
    Ok(bytes.to_vec())
}

/// What a relocation refers to, as objdump would name it.
fn relocation_target<'data, R: ReadRef<'data>>(
    file: &ElfFile64<'data, Endianness, R>,
    target: RelocationTarget,
) -> String {
    let section_name = |index| {
        file.section_by_index(index)
            .ok()
            .and_then(|section| section.name().ok().map(str::to_string))
    };
    match target {
        RelocationTarget::Symbol(index) => {
            let Ok(symbol) = file.symbol_by_index(index) else {
                return format!("symbol #{}", index.0);
            };
            match symbol.name() {
                Ok(name) if !name.is_empty() => name.to_string(),
                // Section symbols have no name of their own: the assembler refers to a
                // local label in another section through its section.
                _ => match (symbol.kind(), symbol.section()) {
                    (SymbolKind::Section, SymbolSection::Section(section)) => {
                        section_name(section).unwrap_or_else(|| format!("symbol #{}", index.0))
                    }
                    _ => format!("symbol #{}", index.0),
                },
            }
        }
        RelocationTarget::Section(index) => {
            section_name(index).unwrap_or_else(|| format!("section #{}", index.0))
        }
        RelocationTarget::Absolute => "*ABS*".to_string(),
        _ => "an unknown target".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Result<Vec<u8>, String> {
        parse_hex(text, "t.hex").map_err(|err| err.to_string())
    }

    #[test]
    fn format_names_and_extensions() {
        for format in [
            Format::Bin,
            Format::Hex,
            Format::Gas,
            Format::Nasm,
            Format::Elf,
        ] {
            assert_eq!(Format::from_name(format.name()), Some(format));
            assert_eq!(format.to_string(), format.name());
        }
        assert_eq!(Format::from_name("NASM"), Some(Format::Nasm));
        assert_eq!(Format::from_name("asm"), None);
        assert_eq!(Format::from_name(""), None);
        for (path, format) in [
            ("a.bin", Some(Format::Bin)),
            ("a.hex", Some(Format::Hex)),
            ("a.s", Some(Format::Gas)),
            ("a.S", Some(Format::Gas)),
            ("a.asm", Some(Format::Nasm)),
            ("a.nasm", Some(Format::Nasm)),
            ("a.o", Some(Format::Elf)),
            ("a.elf", Some(Format::Elf)),
            ("a.so", Some(Format::Elf)),
            ("dir.d/A.BIN", Some(Format::Bin)),
            ("a.xyz", None),
            ("a", None),
            (".bin", None),
            ("-", None),
            ("libc.so.6", None),
        ] {
            assert_eq!(Format::from_path(Path::new(path)), format, "{path}");
        }
    }

    /// Every byte at every place of a run (whole 64-digit blocks and a rest): checked and
    /// decoded in one pass as a check then a decode give it.
    #[test]
    fn digits_decoded_in_one_pass_are_checked_as_each_byte_is() {
        let valid: Vec<u8> = (0..136usize).map(|i| ((i * 37 + 11) % 251) as u8).collect();
        for upper in [false, true] {
            let mut digits = faster_hex::hex_string(&valid).into_bytes();
            if upper {
                digits.make_ascii_uppercase();
            }
            let mut out = vec![0; valid.len()];
            assert!(decode_digits(&digits, &mut out, upper));
            assert_eq!(out, valid);
            assert!(!decode_digits(&digits[..130], &mut out[..65], !upper));
            for at in (0..digits.len()).filter(|at| at % 61 < 3 || *at > 250) {
                for byte in 0..=255u8 {
                    let mut digits = digits.clone();
                    digits[at] = byte;
                    let expected = all_digits(&digits, upper);
                    let ok = decode_digits(&digits, &mut out, upper);
                    assert_eq!(ok, expected, "{byte:#x} at {at}, upper {upper}");
                    if ok {
                        let mut decoded = vec![0; out.len()];
                        faster_hex::hex_decode_unchecked(&digits, &mut decoded);
                        assert_eq!(out, decoded, "{byte:#x} at {at}");
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            assert_eq!(avx2::available(), avx2);
            assert_eq!(avx2::cpuid_avx2(), avx2);
            if cfg!(all(target_env = "gnu", not(target_feature = "crt-static"))) {
                assert_eq!(avx2::glibc_avx2(), Some(avx2));
            }
        }
    }

    /// A run taken in pieces of every size decodes as one whole, and gives its digits back as
    /// they came.
    #[test]
    fn a_run_taken_in_pieces_is_the_run() {
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for upper in [false, true] {
            let mut digits = faster_hex::hex_string(&bytes).into_bytes();
            if upper {
                digits.make_ascii_uppercase();
            }
            for piece in [1, 3, 64, 4097, 16 << 10, 100_000] {
                let mut run = HexRun::default();
                for part in digits.chunks(piece) {
                    assert_eq!(run.push(part), part.len(), "{piece}");
                }
                assert!(run.is_even());
                let mut back = Vec::new();
                run.write_digits(&mut back);
                assert_eq!(back, digits, "{piece}");
                assert_eq!(run.into_bytes(), bytes, "{piece}");
            }
            // Stops at the slice holding the end; digits of the other case end it too.
            let mut run = HexRun::default();
            let mut text = digits[..40_001].to_vec();
            text.extend_from_slice(b"\"}");
            let taken = run.push(&text);
            assert_eq!(taken, 2 * HexRun::SLICE);
            assert_eq!(run.push(&text[taken..40_001]), 40_001 - taken);
            assert!(!run.is_even());
            let mut back = Vec::new();
            run.write_digits(&mut back);
            assert_eq!(back, &digits[..40_001]);
            let other = if upper { b"ab" } else { b"AB" };
            assert_eq!(run.push(other), 0);
        }
    }

    #[test]
    fn hex_spellings() {
        let expected = vec![0xb0, 0x2a, 0xc3];
        for text in [
            "b02ac3",
            "B02AC3",
            "b0 2a c3",
            "  b0\t2a\r\nc3\n",
            "0xb0,0x2a,0xc3",
            "0xb0, 0x2a, 0xc3",
            "0Xb0 0X2A 0xc3",
            "0xb02ac3",
            "\\xb0\\x2a\\xc3",
            "\\xb02ac3",
            "b0\\x2a\\xC3",
            "b0,2a,,c3,",
            "b0\u{a0}2a\u{2003}c3",
            "# mov al, 42\nb0 2a # the immediate\n; ret\nc3 // done",
            "b0 2a c3 ; trailing comment with zz and 0x",
        ] {
            assert_eq!(hex(text), Ok(expected.clone()), "{text:?}");
        }
        assert_eq!(hex(""), Ok(vec![]));
        assert_eq!(hex("# nothing\n\n"), Ok(vec![]));
        assert_eq!(hex("00 0x00 ff"), Ok(vec![0, 0, 0xff]));
        assert_eq!(hex("0x0, 0xf,0XA \\x7\\x0"), Ok(vec![0, 0xf, 0xa, 7, 0]));
        assert_eq!(hex("0x0\\x1"), Ok(vec![0, 1]));
    }

    #[test]
    fn hex_errors_say_where() {
        assert_eq!(
            hex("b0 2a\nc3 zz").unwrap_err(),
            "`t.hex`: bad hex digit `z` at line 2, column 4"
        );
        assert_eq!(
            hex("b02g").unwrap_err(),
            "`t.hex`: bad hex digit `g` at line 1, column 4"
        );
        assert_eq!(
            hex("0xb0 0x123").unwrap_err(),
            "`t.hex`: odd number of hex digits in `123` at line 1, column 8"
        );
        assert_eq!(
            hex("b0 2").unwrap_err(),
            "`t.hex`: odd number of hex digits in `2` at line 1, column 4"
        );
        assert_eq!(
            hex("\n\n  0xb02").unwrap_err(),
            "`t.hex`: odd number of hex digits in `b02` at line 3, column 5"
        );
        assert_eq!(
            hex("b0 0x c3").unwrap_err(),
            "`t.hex`: `0x` is not followed by hex digits at line 1, column 4"
        );
        assert_eq!(
            hex("b0\\x").unwrap_err(),
            "`t.hex`: `\\x` is not followed by hex digits at line 1, column 3"
        );
        // `0x` is a prefix only at the start of a run.
        assert_eq!(
            hex("b00xc3").unwrap_err(),
            "`t.hex`: bad hex digit `x` at line 1, column 4"
        );
        assert_eq!(
            hex("b0 2ag").unwrap_err(),
            "`t.hex`: bad hex digit `g` at line 1, column 6"
        );
        assert_eq!(
            hex("b0 / c3").unwrap_err(),
            "`t.hex`: bad hex digit `/` at line 1, column 4"
        );
        // Columns count characters, not bytes; non-printing characters are escaped.
        assert_eq!(
            hex("éé b0 é").unwrap_err(),
            "`t.hex`: bad hex digit `é` at line 1, column 1"
        );
        assert_eq!(
            hex("b0 \u{0}").unwrap_err(),
            "`t.hex`: bad hex digit `\\0` at line 1, column 4"
        );
        let long = "a".repeat(41);
        assert_eq!(
            hex(&long).unwrap_err(),
            "`t.hex`: odd number of hex digits in `aaaaaaaaaaaaaaaa...` at line 1, column 1"
        );
    }

    #[test]
    fn hex_as_c_strings() {
        // As the C compiler reads them (bytes checked by hand against the escapes of C11
        // 6.4.4.4): concatenated literals, hex and octal escapes, plain characters.
        assert_eq!(hex(r#""\x6a\x3b" "\x58""#), Ok(vec![0x6a, 0x3b, 0x58]));
        assert_eq!(hex(r#""\x6a\x3b""\x58""#), Ok(vec![0x6a, 0x3b, 0x58]));
        assert_eq!(
            hex("\"\\x31\\xc0\"\n  \"\\x50\"; // push rax\n"),
            Ok(vec![0x31, 0xc0, 0x50])
        );
        assert_eq!(
            hex(r#""\x68//sh\x68/bin""#),
            Ok(b"\x68//sh\x68/bin".to_vec())
        );
        assert_eq!(hex(r#""\0\1\12\377\x7""#), Ok(vec![0, 1, 0o12, 0o377, 7]));
        assert_eq!(
            hex(r#""\n\t\r\a\b\f\v\\\"\'\?""#),
            Ok(vec![10, 9, 13, 7, 8, 12, 11, b'\\', b'"', b'\'', b'?'])
        );
        assert_eq!(hex(r##""#;x" b0"##), Ok(vec![b'#', b';', b'x', 0xb0]));
        assert_eq!(hex(r#"b0 "\x2a" c3"#), Ok(vec![0xb0, 0x2a, 0xc3]));
        assert_eq!(hex(r#""""#), Ok(vec![]));
        assert_eq!(hex("\"é\""), Ok("é".as_bytes().to_vec()));
    }

    #[test]
    fn c_string_errors_say_where() {
        assert_eq!(
            hex(r#"b0 "\x2a"#).unwrap_err(),
            "`t.hex`: string without its closing `\"` at line 1, column 4"
        );
        assert_eq!(
            hex(r#""\x6a3b""#).unwrap_err(),
            "`t.hex`: `\\x6a3b` in a string is one number in C (write `\\x` before each byte) \
             at line 1, column 2"
        );
        assert_eq!(
            hex(r#""ab\q""#).unwrap_err(),
            "`t.hex`: unknown escape `\\q` in a string at line 1, column 4"
        );
        assert_eq!(
            hex(r#""\xg""#).unwrap_err(),
            "`t.hex`: `\\x` is not followed by hex digits at line 1, column 2"
        );
        assert_eq!(
            hex(r#""\400""#).unwrap_err(),
            "`t.hex`: octal escape `\\400` is more than a byte at line 1, column 2"
        );
        assert!(hex("\"abc\ndef\"").is_err());
    }

    #[test]
    fn intel_looking_sources() {
        for intel in [
            "mov eax, 42\nret\n",
            "start:\n  mov qword ptr [rdi], 1 # store\n  ret",
            "xor edi, edi; mov eax, 60; syscall",
            ".text\n.globl f\nf: lea rsi, [rip + msg]\n",
        ] {
            assert!(looks_like_intel(intel), "{intel:?}");
        }
        for not_intel in [
            "mov $42, %eax\nret\n",
            "movq $1, (%rdi)\nret",
            ".intel_syntax noprefix\nmov eax, 42\nbogus\n",
            "ret\nsyscall\n",
            "nop\n.byte 0x90\n",
            "mov %eax, %ebx; add ecx, 1; mov $1, %eax",
        ] {
            assert!(!looks_like_intel(not_intel), "{not_intel:?}");
        }
    }

    #[test]
    fn hex_that_is_not_text() {
        let err = load_bytes(b"b0 2a\nc3 \xff\xfe", Format::Hex, "x.hex", 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`x.hex`: bad hex digit (byte 0xff, not text) at line 2, column 4; \
             for raw bytes use .bin or --format bin"
        );
    }

    #[test]
    fn missing_tool_names_its_package() {
        let tool = Tool {
            program: "bytejail-test-no-such-assembler",
            package: "binutils",
        };
        let dir = temp_dir("x.s").unwrap();
        let err = run_tool(
            &sh_run(tool, dir.path(), &[], &[]),
            "x.s",
            &LoadOptions::new(MAX),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`bytejail-test-no-such-assembler` not found: install binutils \
             (apt-get install binutils)"
        );
        assert_eq!(
            AS.not_found().to_string(),
            "`as` not found: install binutils (apt-get install binutils)"
        );
        assert_eq!(
            NASM.not_found().to_string(),
            "`nasm` not found: install nasm (apt-get install nasm)"
        );
        assert_eq!(
            CC.not_found().to_string(),
            "`cc` not found: install gcc (apt-get install gcc)"
        );
    }

    #[test]
    fn failing_tool_reports_its_messages() {
        let tool = Tool {
            program: "sh",
            package: "dash",
        };
        let script = "echo 'x.s: Assembler messages:' >&2; \
                      echo 'TMP/x.s:3: Error: no such instruction' >&2; exit 1";
        let dir = temp_dir("x.s").unwrap();
        let options = LoadOptions::new(MAX);
        let args = [OsStr::new("-c"), OsStr::new(script)];
        let aliases = [("TMP/x.s", "x.s")];
        let err =
            run_tool(&sh_run(tool, dir.path(), &args, &aliases), "x.s", &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`x.s`: sh failed: x.s:3: Error: no such instruction"
        );
        let args = [OsStr::new("-c"), OsStr::new("exit 3")];
        let err = run_tool(&sh_run(tool, dir.path(), &args, &[]), "x.s", &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`x.s`: sh failed: no message, exit status 3"
        );
        let args = [OsStr::new("-c"), OsStr::new("true")];
        assert!(run_tool(&sh_run(tool, dir.path(), &args, &[]), "x.s", &options).is_ok());
    }

    const MAX: usize = 1 << 20;

    fn sh_run<'a>(
        tool: Tool,
        dir: &'a Path,
        args: &'a [&'a OsStr],
        aliases: &'a [(&'a str, &'a str)],
    ) -> ToolRun<'a> {
        ToolRun {
            tool,
            args,
            dir,
            output: "out.o",
            max_output: 1 << 20,
            aliases,
        }
    }

    #[test]
    fn tool_messages_are_summarized() {
        let text = b"a.s: Assembler messages:\n\na.s:1: Error: one\na.s:2: Error: two\n\
                     a.s:3: Error: three\na.s:4: Error: four\na.s:5: Error: five\n";
        assert_eq!(
            summarize_messages(text, &[]).as_deref(),
            Some("a.s:1: Error: one; a.s:2: Error: two; a.s:3: Error: three (and 2 more)")
        );
        assert_eq!(summarize_messages(b"  \n\n", &[]), None);
        let long = "x".repeat(500);
        let summary = summarize_messages(long.as_bytes(), &[]).unwrap_or_default();
        assert_eq!(
            summary,
            format!("{}...", "x".repeat(TOOL_MESSAGE_LINE_CHARS))
        );
    }

    #[test]
    fn bounded_reads_stop_after_the_limit() {
        assert_eq!(
            read_bounded(&b"abc"[..], 3).ok(),
            Some(Some(b"abc".to_vec()))
        );
        assert_eq!(read_bounded(&b"abcd"[..], 3).ok(), Some(None));
        assert_eq!(read_bounded(&b""[..], 0).ok(), Some(Some(vec![])));
        assert_eq!(read_bounded(&b"a"[..], 0).ok(), Some(None));
        // An endless reader is read only up to the limit.
        assert_eq!(read_bounded(io::repeat(0), 1000).ok(), Some(None));
        assert_eq!(
            read_bounded(&b"abc"[..], usize::MAX).ok(),
            Some(Some(b"abc".to_vec()))
        );
        assert_eq!(over_size(None, 10), None);
        assert_eq!(over_size(Some(5000), 10), Some(5000));
        assert_eq!(over_size(Some(3), 10), None);
        assert_eq!(over_size(None, usize::MAX), None);
    }

    #[test]
    fn bin_bytes() {
        assert_eq!(
            load_bytes(&[0xc3], Format::Bin, "x", 1).ok(),
            Some(vec![0xc3])
        );
        assert_eq!(
            load_bytes(&[], Format::Bin, "x", 1)
                .unwrap_err()
                .to_string(),
            "`x`: the code is empty"
        );
        assert_eq!(
            load_bytes(&[0x90, 0xc3], Format::Bin, "x", 1)
                .unwrap_err()
                .to_string(),
            "`x`: code is 2 bytes; the limit is 1 bytes (--max-code)"
        );
        assert_eq!(
            load_bytes(b"90 c3", Format::Hex, "x", 1)
                .unwrap_err()
                .to_string(),
            "`x`: code is 2 bytes; the limit is 1 bytes (--max-code)"
        );
        assert_eq!(
            load_bytes(b"# nothing", Format::Hex, "x", 1)
                .unwrap_err()
                .to_string(),
            "`x`: the code is empty"
        );
    }

    #[test]
    fn elf_checks_on_junk() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "`j`: not an ELF file (no ELF magic number)"),
            (b"\x7fEL", "`j`: not an ELF file (no ELF magic number)"),
            (b"MZ\x90\x00", "`j`: not an ELF file (no ELF magic number)"),
            (
                b"\x7fELF\x01\x01\x01",
                "`j`: a 32-bit ELF file; bytejail runs x86-64 code (assemble with `as --64` or \
                 `nasm -f elf64`)",
            ),
            (
                b"\x7fELF\x07",
                "`j`: not a valid ELF file (unknown ELF class)",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(text_of_elf(bytes, "j").unwrap_err().to_string(), message);
        }
        let err = text_of_elf(b"\x7fELF\x02\x01\x01\x00", "j").unwrap_err();
        assert!(
            err.to_string().starts_with("`j`: not a valid ELF file: "),
            "{err}"
        );
    }

    #[test]
    fn assemble_refuses_other_formats() {
        let err = assemble("ret", Format::Bin).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`source.s`: format bin is not assembly source (use gas or nasm)"
        );
    }

    #[test]
    fn a_large_run_of_digits_decodes_whole() {
        // Past `POPULATE_FROM`: the buffer is faulted in ahead, every byte still written.
        let bytes: Vec<u8> = (0..(1usize << 20) + 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode_hex_digits(text.as_bytes()), bytes);
        assert_eq!(decode_hex_run(text.as_bytes()), Some(bytes.clone()));
        assert_eq!(parse_hex(&text, "t").unwrap(), bytes);
        // A bad digit in any slice, or an odd length, is no run.
        for at in [0, 1, 16 << 10, (16 << 10) + 1, text.len() - 1] {
            let mut bad = text.clone().into_bytes();
            bad[at] = b'g';
            assert_eq!(decode_hex_run(&bad), None, "{at}");
        }
        assert_eq!(decode_hex_run(&text.as_bytes()[1..]), None);
        let mut bad = text.into_bytes();
        bad[1 << 20] = b'g';
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(
            parse_hex(&bad, "t").unwrap_err().to_string(),
            "`t`: bad hex digit `g` at line 1, column 1048577"
        );
    }

    proptest::proptest! {
        #[test]
        fn plain_hex_reads_as_the_general_parser_does(text in "[0-9a-fA-FxX ,\t\n\r#;/\\\"g]{0,40}") {
            if let Some(fast) = parse_plain_hex(text.as_bytes()) {
                let mut general = Vec::new();
                for (index, line) in text.split('\n').enumerate() {
                    parse_hex_line(line, index + 1, "t", &mut general).unwrap();
                }
                proptest::prop_assert_eq!(fast, general);
            }
        }

        #[test]
        fn checked_digits_decode_as_the_general_parser_does(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700),
            upper in proptest::bool::ANY,
        ) {
            // Long enough for the SIMD paths (32 digits a step) and their scalar tails, and
            // both sides of SHORT_DIGITS.
            let text: String = bytes
                .iter()
                .map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") })
                .collect();
            proptest::prop_assert!(faster_hex::hex_check(text.as_bytes()));
            proptest::prop_assert_eq!(decode_hex_digits(text.as_bytes()), bytes.clone());
            proptest::prop_assert_eq!(decode_hex_run(text.as_bytes()), Some(bytes.clone()));
            proptest::prop_assert_eq!(parse_hex(&text, "t").ok(), Some(bytes));
        }

        /// The check of short text (a byte at a time) and of long text (faster-hex's) say
        /// what faster-hex says, around the length where one takes over from the other.
        #[test]
        fn the_short_check_is_faster_hexs(
            len in (SHORT_DIGITS - 40)..(SHORT_DIGITS + 40),
            flaw in proptest::option::of((proptest::num::usize::ANY, proptest::num::u8::ANY)),
        ) {
            let mut text: Vec<u8> = (0..len).map(|i| b"0123456789abcdefABCDEF"[i % 22]).collect();
            if let Some((at, byte)) = flaw {
                text[at % len] = byte;
            }
            proptest::prop_assert_eq!(all_hex_digits(&text), faster_hex::hex_check(&text));
            for len in [0, 1, 2, 31, 32, 33] {
                let text = &text[..len];
                proptest::prop_assert_eq!(all_hex_digits(text), faster_hex::hex_check(text));
            }
        }

        /// The one-pass check and decode (AVX2 where the CPU has it, every block count and
        /// every rest length under a block) against a check and a decode of this test's own,
        /// with one byte anywhere replaced by any byte; and `HexRun::push` of the same run
        /// whole, which takes it exactly when it is all digits of one case.
        #[test]
        fn one_pass_decode_is_a_check_then_a_decode(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            upper in proptest::bool::ANY,
            flaw in proptest::option::of((proptest::num::usize::ANY, proptest::num::u8::ANY)),
        ) {
            let mut digits = if upper {
                faster_hex::hex_string_upper(&bytes)
            } else {
                faster_hex::hex_string(&bytes)
            }
            .into_bytes();
            if let Some((at, byte)) = flaw.filter(|_| !digits.is_empty()) {
                let at = at % digits.len();
                digits[at] = byte;
            }
            let nibble = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' if !upper => Some(c - b'a' + 10),
                b'A'..=b'F' if upper => Some(c - b'A' + 10),
                _ => None,
            };
            let expected: Option<Vec<u8>> = digits
                .chunks(2)
                .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
                .collect();
            let mut out = vec![0; bytes.len()];
            let ok = decode_digits(&digits, &mut out, upper);
            proptest::prop_assert_eq!(ok, expected.is_some());
            if let Some(expected) = expected {
                proptest::prop_assert_eq!(&out, &expected);
                let mut run = HexRun::default();
                let letters = digits.iter().any(u8::is_ascii_alphabetic);
                // A run's case is its first letter's: a run of one case is taken whole.
                proptest::prop_assert_eq!(run.push(&digits), digits.len());
                proptest::prop_assert_eq!(run.upper, letters.then_some(upper));
                proptest::prop_assert_eq!(run.into_bytes(), expected);
            }
        }

        #[test]
        fn hex_never_panics(text in "\\PC{0,60}") {
            let _ = parse_hex(&text, "t");
        }

        #[test]
        fn hex_round_trips(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            style in 0usize..4,
        ) {
            let text: String = bytes
                .iter()
                .map(|b| match style {
                    0 => format!("{b:02x} "),
                    1 => format!("0x{b:02X},"),
                    2 => format!("\\x{b:02x}"),
                    _ => format!("{b:02x}"),
                })
                .collect();
            proptest::prop_assert_eq!(parse_hex(&text, "t").ok(), Some(bytes));
        }
    }
}
