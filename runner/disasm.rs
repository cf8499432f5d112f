//! Disassembly of guest code in Intel syntax (iced-x86), for fault reports and `bytejail disasm`.
//!
//! Code is decoded in 64-bit mode with the instruction pointer equal to the offset in the code, so
//! branch targets read as code offsets (`jmp short 5`, `call 15h`). Text uses iced's Intel
//! formatter with its default options (`mov qword ptr [rax],1`, `mov al,2Ah`) but one: branch
//! targets are printed without leading zeros, since they are small offsets, not addresses. The
//! `bytejail disasm` listing writes numbers as people type them (`mov al,0x2a`) and names the
//! syscalls it can (`syscall ; rax=60 exit`); [`instruction_at`], which fault reports quote,
//! keeps iced's spelling.

use std::fmt::Write as _;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter, Instruction, InstructionInfoFactory,
    IntelFormatter, Mnemonic, OpAccess, OpKind, Register,
};

use crate::syscalls::Abi;

/// The bit that marks an x32 syscall number (`__X32_SYSCALL_BIT` in the kernel's headers).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// How an undecodable byte is shown in a [`listing`] (the spelling objdump and iced use).
const BAD: &str = "(bad)";

/// Width of the bytes column in a [`listing`]: nine bytes, which holds nearly every instruction.
/// Longer encodings (up to 15 bytes) are shown in full and push their text to the right.
const BYTES_COLUMN: usize = 9 * 3 - 1;

/// Decodes and formats the one instruction at `offset` in `code`.
///
/// Returns None when `offset` is at or past the end of `code`, or the bytes there are not a valid
/// instruction (including one cut short by the end of `code`).
pub fn instruction_at(code: &[u8], offset: usize) -> Option<String> {
    let tail = code.get(offset..)?;
    let ip = u64::try_from(offset).ok()?;
    let mut decoder = Decoder::try_with_ip(64, tail, ip, DecoderOptions::NONE).ok()?;
    if !decoder.can_decode() {
        return None;
    }
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    let mut text = String::new();
    formatter().format(&instruction, &mut text);
    Some(text)
}

/// Formats all of `code` as a listing, one line per instruction, each ending in a newline:
///
/// ```text
/// 0x0000:  48 c7 00 01 00 00 00        mov qword ptr [rax],1
/// 0x0007:  6a 3b                       push 0x3b
/// 0x0009:  58                          pop rax
/// 0x000a:  0f 05                       syscall ; rax=59 execve
/// 0x000c:  06                          (bad)
/// 0x000d:  eb f1                       jmp short 0
/// ```
///
/// Offsets are hexadecimal, at least four digits and as many as the largest offset needs, so the
/// columns line up; numbers in instructions are `0x` hex (0 to 9 in decimal). A byte that does
/// not start a valid instruction is shown alone as `(bad)` and decoding resumes at the next
/// byte, so one stray byte does not hide the rest of the code. A `syscall` (or `int 0x80`)
/// whose number an earlier instruction of the same straight-line block sets (`mov rax/eax,
/// imm`, `xor eax, eax`, `push imm; pop rax`, with nothing writing rax in between) is annotated
/// with the number and the syscall's name. Empty code gives an empty string.
pub fn listing(code: &[u8]) -> String {
    let offset_digits = hex_digits(code.len().saturating_sub(1)).max(4);
    let decoded = decode_all(code);
    // Offsets a branch can reach start a new block: rax may hold anything there.
    let targets: std::collections::HashSet<u64> = decoded
        .iter()
        .filter_map(|(_, instruction)| instruction.as_ref())
        .filter(|instruction| instruction.flow_control() != FlowControl::Next)
        .filter(|instruction| {
            (0..instruction.op_count()).any(|op| {
                matches!(
                    instruction.op_kind(op),
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                )
            })
        })
        .map(Instruction::near_branch_target)
        .collect();
    let mut out = String::new();
    let mut formatter = formatter();
    formatter.options_mut().set_hex_prefix("0x");
    formatter.options_mut().set_hex_suffix("");
    formatter.options_mut().set_uppercase_hex(false);
    let mut text = String::new();
    let mut number = SyscallNumber::default();
    let mut info = InstructionInfoFactory::new();
    for (offset, instruction) in &decoded {
        let offset = *offset;
        text.clear();
        if targets.contains(&(offset as u64)) {
            number = SyscallNumber::default();
        }
        let len = match instruction {
            Some(instruction) => {
                formatter.format(instruction, &mut text);
                if let Some(note) = number.annotate(instruction) {
                    text.push_str(" ; ");
                    text.push_str(&note);
                }
                number.update(instruction, &mut info);
                instruction.len()
            }
            None => {
                text.push_str(BAD);
                number = SyscallNumber::default();
                1
            }
        };
        let end = offset.saturating_add(len).min(code.len());
        let bytes = code[offset..end]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "0x{offset:0offset_digits$x}:  {bytes:<BYTES_COLUMN$}  {text}"
        );
    }
    out
}

/// Whether a guest can run past the end of `code`: the last instruction a linear sweep finds
/// may go on to the next one (anything but an unconditional jump, a return or `ud2`), or the
/// code ends in bytes that are no whole instruction. Empty code does too.
pub fn can_fall_off_end(code: &[u8]) -> bool {
    match decode_all(code).last() {
        Some((_, Some(last))) => !matches!(
            last.flow_control(),
            FlowControl::UnconditionalBranch
                | FlowControl::IndirectBranch
                | FlowControl::Return
                | FlowControl::Exception
        ),
        Some((_, None)) | None => true,
    }
}

/// Every instruction of `code` in order, by offset: None for a byte that does not start a
/// valid instruction (decoding resumes at the next byte).
fn decode_all(code: &[u8]) -> Vec<(usize, Option<Instruction>)> {
    let mut decoded = Vec::new();
    let mut decoder = Decoder::new(64, code, DecoderOptions::NONE);
    let mut offset = 0;
    while offset < code.len() {
        // `offset` < code.len(), so both calls succeed; if not, stop rather than loop forever.
        if decoder.set_position(offset).is_err() {
            break;
        }
        decoder.set_ip(offset as u64);
        let instruction = decoder.decode();
        if instruction.is_invalid() || instruction.len() == 0 {
            decoded.push((offset, None));
            offset += 1;
        } else {
            decoded.push((offset, Some(instruction)));
            offset = offset.saturating_add(instruction.len());
        }
    }
    decoded
}

/// What a straight run of instructions has put in rax, as far as a listing can tell: the
/// value of a `mov rax/eax, imm`, `xor eax, eax` or `push imm; pop rax`, until anything else
/// writes rax (as iced's instruction info says, implicit writes included) or the block ends.
#[derive(Clone, Copy, Debug, Default)]
struct SyscallNumber {
    rax: Option<u64>,
    /// The value the previous instruction pushed, if it was `push imm`.
    pushed: Option<u64>,
}

impl SyscallNumber {
    /// The note for a syscall instruction whose number is known, e.g. `rax=59 execve`.
    fn annotate(&self, instruction: &Instruction) -> Option<String> {
        let rax = self.rax?;
        let (abi, register, nr) = match instruction.mnemonic() {
            Mnemonic::Syscall => {
                let nr = u32::try_from(rax).ok()?;
                let abi = if nr & X32_SYSCALL_BIT != 0 {
                    Abi::X32
                } else {
                    Abi::X86_64
                };
                (abi, "rax", nr)
            }
            // The i386 entry reads eax.
            Mnemonic::Int if instruction.immediate8() == 0x80 => (Abi::I386, "eax", rax as u32),
            _ => return None,
        };
        let shown = if nr >= 0x1000 {
            format!("{nr:#x}")
        } else {
            nr.to_string()
        };
        Some(match (crate::syscalls::name(abi, nr), abi) {
            (Some(name), Abi::X86_64) => format!("{register}={shown} {name}"),
            (Some(name), abi) => format!("{register}={shown} {name} ({})", abi.name()),
            (None, Abi::X86_64) => format!("{register}={shown} (no such syscall)"),
            (None, abi) => format!("{register}={shown} (no such {} syscall)", abi.name()),
        })
    }

    /// Follows rax through `instruction`.
    fn update(&mut self, instruction: &Instruction, info: &mut InstructionInfoFactory) {
        let pushed = self.pushed.take();
        if instruction.flow_control() != FlowControl::Next {
            // A branch, call, return or syscall: what follows is another block, or rax holds
            // a result.
            self.rax = None;
            return;
        }
        let op0 = (instruction.op_count() > 0 && instruction.op0_kind() == OpKind::Register)
            .then(|| instruction.op0_register());
        match instruction.mnemonic() {
            Mnemonic::Mov if matches!(op0, Some(Register::RAX | Register::EAX)) => {
                self.rax = immediate(instruction, 1);
                // `mov eax, imm32` zero-extends into rax.
                if op0 == Some(Register::EAX) {
                    self.rax = self.rax.map(|value| value & 0xffff_ffff);
                }
                return;
            }
            Mnemonic::Xor | Mnemonic::Sub
                if matches!(op0, Some(Register::RAX | Register::EAX))
                    && instruction.op1_kind() == OpKind::Register
                    && instruction.op1_register() == instruction.op0_register() =>
            {
                self.rax = Some(0);
                return;
            }
            Mnemonic::Push => {
                self.pushed = immediate(instruction, 0);
            }
            Mnemonic::Pop if op0 == Some(Register::RAX) => {
                self.rax = pushed;
                return;
            }
            _ => {}
        }
        let writes_rax = info.info(instruction).used_registers().iter().any(|used| {
            used.register().full_register() == Register::RAX
                && !matches!(used.access(), OpAccess::Read | OpAccess::CondRead)
        });
        if writes_rax {
            self.rax = None;
        }
    }
}

/// Operand `op` of `instruction` as a 64-bit value (sign-extended as the CPU extends it), when it
/// is an immediate.
fn immediate(instruction: &Instruction, op: u32) -> Option<u64> {
    match instruction.op_kind(op) {
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(instruction.immediate(op)),
        _ => None,
    }
}

/// The Intel-syntax formatter used for all output.
fn formatter() -> IntelFormatter {
    let mut formatter = IntelFormatter::new();
    // Without this, `call 15h` reads `call 0000000000000015h`.
    formatter.options_mut().set_branch_leading_zeros(false);
    formatter
}

/// Number of hex digits needed to print `n`.
fn hex_digits(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits as usize).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // REX.W C7 /0 id: mov r/m64, imm32 with ModRM 00 000 000 = [rax].
        let store = [0x48, 0xc7, 0x00, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(
            instruction_at(&store, 0).as_deref(),
            Some("mov qword ptr [rax],1")
        );
        // B0 ib: mov al, imm8; C3: ret.
        let ret42 = [0xb0, 0x2a, 0xc3];
        assert_eq!(instruction_at(&ret42, 0).as_deref(), Some("mov al,2Ah"));
        assert_eq!(instruction_at(&ret42, 2).as_deref(), Some("ret"));
        for (bytes, text) in [
            (&[0x0f, 0x0b][..], "ud2"),
            (&[0xcc][..], "int3"),
            (&[0x0f, 0x05][..], "syscall"),
            (&[0xf4][..], "hlt"),
            (&[0x90][..], "nop"),
            // REX.W F7 /6: div r/m64, ModRM 11 110 001 = rcx.
            (&[0x48, 0xf7, 0xf1][..], "div rcx"),
            // REX.W 83 /5 ib: sub r/m64, imm8.
            (&[0x48, 0x83, 0xec, 0x08][..], "sub rsp,8"),
            // REX.W 89 /r with SIB [rsp] + disp8: the size is implied by the register.
            (&[0x48, 0x89, 0x44, 0x24, 0x08][..], "mov [rsp+8],rax"),
            // REX.W 31 /r: xor r/m64, r64 with ModRM 11 000 000.
            (&[0x48, 0x31, 0xc0][..], "xor rax,rax"),
            // REX.W B8+r io: the 64-bit immediate form.
            (
                &[0x48, 0xb8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08][..],
                "mov rax,807060504030201h",
            ),
        ] {
            assert_eq!(
                instruction_at(bytes, 0).as_deref(),
                Some(text),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn branch_targets_are_code_offsets() {
        // EB cb at offset 0: target = 2 + 3.
        assert_eq!(
            instruction_at(&[0xeb, 0x03], 0).as_deref(),
            Some("jmp short 5")
        );
        // The same jump at offset 4: target = 4 + 2 + 3.
        let code = [0x90, 0x90, 0x90, 0x90, 0xeb, 0x03];
        assert_eq!(instruction_at(&code, 4).as_deref(), Some("jmp short 9"));
        // E8 cd: call rel32 with displacement 0x10 at offset 0: target 0x15.
        assert_eq!(
            instruction_at(&[0xe8, 0x10, 0, 0, 0], 0).as_deref(),
            Some("call 15h")
        );
        // 74 FE: je to itself.
        assert_eq!(
            instruction_at(&[0x90, 0x74, 0xfe], 1).as_deref(),
            Some("je short 1")
        );
        // rip-relative: 48 8D 05 disp32 at offset 0 addresses 7 + 0x10.
        assert_eq!(
            instruction_at(&[0x48, 0x8d, 0x05, 0x10, 0, 0, 0], 0).as_deref(),
            Some("lea rax,[17h]")
        );
    }

    #[test]
    fn instruction_at_rejects_bad_positions_and_bytes() {
        let code = [0xb0, 0x2a, 0xc3];
        assert_eq!(instruction_at(&code, 3), None);
        assert_eq!(instruction_at(&code, usize::MAX), None);
        assert_eq!(instruction_at(&[], 0), None);
        // 06 (push es) does not exist in 64-bit mode.
        assert_eq!(instruction_at(&[0x06], 0), None);
        // Truncated: mov qword ptr [rax], imm32 without its immediate; a lone REX prefix.
        assert_eq!(instruction_at(&[0x48, 0xc7, 0x00, 0x01], 0), None);
        assert_eq!(instruction_at(&[0x48], 0), None);
        // Offset 1 is in the middle of `mov al,2Ah`: 2A C3 is `sub al,bl`.
        assert_eq!(instruction_at(&code, 1).as_deref(), Some("sub al,bl"));
    }

    #[test]
    fn listing_format() {
        let code = [
            0x48, 0xc7, 0x00, 0x01, 0x00, 0x00, 0x00, // mov qword ptr [rax],1
            0xb0, 0x2a, // mov al,2Ah
            0xc3, // ret
        ];
        assert_eq!(
            listing(&code),
            "0x0000:  48 c7 00 01 00 00 00        mov qword ptr [rax],1\n\
             0x0007:  b0 2a                       mov al,0x2a\n\
             0x0009:  c3                          ret\n"
        );
    }

    #[test]
    fn listing_shows_long_encodings_in_full() {
        let code = [
            0x48, 0xb8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xc3,
        ];
        assert_eq!(
            listing(&code),
            "0x0000:  48 b8 01 02 03 04 05 06 07 08  mov rax,0x807060504030201\n\
             0x000a:  c3                          ret\n"
        );
    }

    #[test]
    fn listing_continues_after_bad_bytes() {
        // 06 is invalid; then jmp back to 0; then a truncated instruction at the end.
        let code = [0x06, 0x90, 0xeb, 0xfc, 0x48, 0xc7];
        assert_eq!(
            listing(&code),
            "0x0000:  06                          (bad)\n\
             0x0001:  90                          nop\n\
             0x0002:  eb fc                       jmp short 0\n\
             0x0004:  48                          (bad)\n\
             0x0005:  c7                          (bad)\n"
        );
    }

    #[test]
    fn listing_offsets_widen_for_large_code() {
        assert_eq!(listing(&[]), "");
        let code = vec![0x90; 0x10001];
        let text = listing(&code);
        assert_eq!(text.lines().count(), 0x10001);
        assert!(text.starts_with("0x00000:  90  "), "{}", &text[..40]);
        assert!(text.ends_with("0x10000:  90                          nop\n"));
    }

    /// The text column of each line of a listing.
    fn texts(code: &[u8]) -> Vec<String> {
        listing(code)
            .lines()
            .map(|line| line.get(37..).unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn listing_numbers_are_0x_hex() {
        // EB 10: jmp to 2 + 0x10; 48 83 EC 28: sub rsp, 0x28; 6A FF: push -1.
        assert_eq!(
            texts(&[0xeb, 0x10, 0x48, 0x83, 0xec, 0x28, 0x6a, 0xff]),
            ["jmp short 0x12", "sub rsp,0x28", "push 0xffffffffffffffff"]
        );
    }

    #[test]
    fn syscalls_are_named_when_rax_is_known() {
        // The numbers are the kernel's (arch/x86/entry/syscalls/syscall_64.tbl: 59 execve,
        // 60 exit, 1 write, 0 read; syscall_32.tbl: 1 exit, 4 write).
        let syscall = [0x0f, 0x05];
        let mut code = vec![0x6a, 0x3b, 0x58]; // push 0x3b; pop rax
        code.extend(syscall);
        code.extend([0xb8, 0x3c, 0, 0, 0]); // mov eax, 60
        code.extend([0x31, 0xff]); // xor edi, edi: rax untouched
        code.extend(syscall);
        code.extend([0x48, 0xc7, 0xc0, 1, 0, 0, 0]); // mov rax, 1
        code.extend(syscall);
        code.extend(syscall); // rax is the first call's result now
        code.extend([0x31, 0xc0]); // xor eax, eax
        code.extend(syscall);
        code.extend([0xb8, 4, 0, 0, 0, 0xcd, 0x80]); // mov eax, 4; int 0x80
        code.extend([0xb8, 1, 0, 0, 0, 0x0f, 0xa2]); // mov eax, 1; cpuid (writes eax)
        code.extend(syscall);
        code.extend([0xb8, 1, 0, 0, 0x40]); // mov eax, 0x40000001: x32 write
        code.extend(syscall);
        let texts = texts(&code);
        let notes: Vec<&str> = texts
            .iter()
            .filter(|text| text.starts_with("syscall") || text.starts_with("int"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            notes,
            [
                "syscall ; rax=59 execve",
                "syscall ; rax=60 exit",
                "syscall ; rax=1 write",
                "syscall",
                "syscall ; rax=0 read",
                "int 0x80 ; eax=4 write (i386)",
                "syscall",
                "syscall ; rax=0x40000001 write (x32)",
            ]
        );
    }

    #[test]
    fn a_branch_target_starts_a_new_block() {
        // 0: mov eax, 60; 5: syscall <- the jne at 7 lands here, with any rax; 7: jne 5.
        let code = [0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05, 0x75, 0xfc];
        assert_eq!(texts(&code)[1], "syscall");
        // Without the branch, the same syscall is named.
        assert_eq!(texts(&code[..7])[1], "syscall ; rax=60 exit");
    }

    #[test]
    fn code_that_can_fall_off_its_end() {
        // mov al, 42 (B0 2A); nop (90); a cut-short mov (48 C7); syscall (0F 05); call (E8).
        for code in [
            &[0xb0, 0x2a][..],
            &[0xc3, 0x90][..],
            &[0xc3, 0x48, 0xc7][..],
            &[0x0f, 0x05][..],
            &[0xe8, 0, 0, 0, 0][..],
            &[][..],
        ] {
            assert!(can_fall_off_end(code), "{code:02x?}");
        }
        // ret (C3), jmp $ (EB FE), jmp rax (FF E0), ud2 (0F 0B).
        for code in [
            &[0xb0, 0x2a, 0xc3][..],
            &[0xeb, 0xfe][..],
            &[0xff, 0xe0][..],
            &[0x0f, 0x0b][..],
        ] {
            assert!(!can_fall_off_end(code), "{code:02x?}");
        }
    }

    #[test]
    fn hex_digit_counts() {
        assert_eq!(hex_digits(0), 1);
        assert_eq!(hex_digits(0xf), 1);
        assert_eq!(hex_digits(0x10), 2);
        assert_eq!(hex_digits(0xffff), 4);
        assert_eq!(hex_digits(0x10000), 5);
        assert_eq!(hex_digits(usize::MAX), 16);
    }

    proptest::proptest! {
        #[test]
        fn listing_covers_every_byte(code in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let text = listing(&code);
            // Every byte appears once in the bytes column, in order.
            let mut shown = Vec::new();
            for line in text.lines() {
                let bytes = line.split("  ").nth(1).unwrap_or_default();
                for pair in bytes.split(' ').filter(|pair| !pair.is_empty()) {
                    shown.push(u8::from_str_radix(pair, 16).unwrap_or_default());
                }
            }
            proptest::prop_assert_eq!(shown, code.clone());
            for offset in 0..=code.len() {
                let _ = instruction_at(&code, offset);
            }
        }
    }
}
