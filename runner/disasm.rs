//! Disassembly of guest code in Intel syntax (iced-x86), for fault reports and `bytejail disasm`.
//!
//! Code is decoded in 64-bit mode with the instruction pointer equal to the offset in the code, so
//! branch targets read as code offsets (`jmp short 5`, `call 15h`). Text uses iced's Intel
//! formatter with its default options (`mov qword ptr [rax],1`, `mov al,2Ah`) but one: branch
//! targets are printed without leading zeros, since they are small offsets, not addresses.

use std::fmt::Write as _;

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

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
/// 0x0007:  06                          (bad)
/// 0x0008:  eb f6                       jmp short 0
/// ```
///
/// Offsets are hexadecimal, at least four digits and as many as the largest offset needs, so the
/// columns line up. A byte that does not start a valid instruction is shown alone as `(bad)` and
/// decoding resumes at the next byte, so one stray byte does not hide the rest of the code.
/// Empty code gives an empty string.
pub fn listing(code: &[u8]) -> String {
    let offset_digits = hex_digits(code.len().saturating_sub(1)).max(4);
    let mut out = String::new();
    let mut formatter = formatter();
    let mut instruction = Instruction::default();
    let mut text = String::new();
    let mut decoder = Decoder::new(64, code, DecoderOptions::NONE);
    let mut offset = 0;
    while offset < code.len() {
        // `offset` < code.len(), so both calls succeed; if not, stop rather than loop forever.
        if decoder.set_position(offset).is_err() {
            break;
        }
        decoder.set_ip(offset as u64);
        decoder.decode_out(&mut instruction);
        text.clear();
        let len = if instruction.is_invalid() || instruction.len() == 0 {
            text.push_str(BAD);
            1
        } else {
            formatter.format(&instruction, &mut text);
            instruction.len()
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
        offset = end;
    }
    out
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
             0x0007:  b0 2a                       mov al,2Ah\n\
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
            "0x0000:  48 b8 01 02 03 04 05 06 07 08  mov rax,807060504030201h\n\
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
