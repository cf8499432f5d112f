//! A classic BPF interpreter for seccomp programs: what the kernel would return for one
//! `struct seccomp_data`. It runs bytejail's programs and any other seccomp program (libseccomp's
//! included): loads, the scratch memory, the ALU, every jump. For tests, for `explain`, and for
//! comparing two programs decision by decision.

use super::bpf::*;

/// `struct seccomp_data`: what a seccomp program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeccompData {
    /// The syscall number.
    pub nr: u32,
    /// `AUDIT_ARCH_*` of the calling ABI.
    pub arch: u32,
    /// The address after the syscall instruction.
    pub instruction_pointer: u64,
    /// The six arguments, as registers hold them.
    pub args: [u64; 6],
}

impl SeccompData {
    /// A call at instruction pointer 0.
    pub fn new(arch: u32, nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch,
            instruction_pointer: 0,
            args,
        }
    }

    /// The 32-bit word at byte `offset`, as `BPF_LD | BPF_W | BPF_ABS` reads it (little endian).
    pub fn word(&self, offset: u32) -> Option<u32> {
        let split = |v: u64, high: bool| -> u32 {
            let half = if high { v >> 32 } else { v & 0xffff_ffff };
            u32::try_from(half).unwrap_or(u32::MAX)
        };
        if offset % 4 != 0 {
            return None;
        }
        match offset {
            0 => Some(self.nr),
            4 => Some(self.arch),
            8 | 12 => Some(split(self.instruction_pointer, offset == 12)),
            16..=60 => {
                let i = usize::try_from((offset - 16) / 8).ok()?;
                Some(split(self.args[i], (offset - 16) % 8 == 4))
            }
            _ => None,
        }
    }
}

/// The size of `struct seccomp_data`, what `BPF_LEN` loads.
const DATA_LEN: u32 = 64;

/// Runs `program` on `data` as the kernel would: the return value, or `None` if the program is
/// one the kernel would refuse or that misbehaves (an unknown opcode, a jump out of range, a load
/// outside `seccomp_data`, a division by zero, falling off the end).
pub fn run(program: &[Insn], data: &SeccompData) -> Option<u32> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    // Jumps only go forward, so the loop ends within the program's length.
    loop {
        let insn = *program.get(pc)?;
        pc += 1;
        let k = insn.k;
        let slot = |k: u32| usize::try_from(k).ok().filter(|&i| i < 16);
        match insn.code & 0x07 {
            BPF_LD | BPF_LDX => {
                let value = match insn.code & 0xe0 {
                    BPF_ABS if insn.code & 0x18 == BPF_W => data.word(k)?,
                    BPF_IMM => k,
                    BPF_MEM => mem[slot(k)?],
                    BPF_LEN => DATA_LEN,
                    _ => return None,
                };
                if insn.code & 0x07 == BPF_LD {
                    a = value;
                } else {
                    x = value;
                }
            }
            BPF_ST => mem[slot(k)?] = a,
            BPF_STX => mem[slot(k)?] = x,
            BPF_ALU => {
                let operand = if insn.code & BPF_X != 0 { x } else { k };
                a = match insn.code & 0xf0 {
                    0x00 => a.wrapping_add(operand),
                    0x10 => a.wrapping_sub(operand),
                    0x20 => a.wrapping_mul(operand),
                    0x30 => a.checked_div(operand)?,
                    0x40 => a | operand,
                    0x50 => a & operand,
                    0x60 => a.checked_shl(operand).unwrap_or(0),
                    0x70 => a.checked_shr(operand).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(operand)?,
                    0xa0 => a ^ operand,
                    _ => return None,
                };
            }
            BPF_JMP => {
                let operand = if insn.code & BPF_X != 0 { x } else { k };
                let taken = match insn.code & 0xf0 {
                    0x00 => {
                        pc = pc.checked_add(usize::try_from(k).ok()?)?;
                        continue;
                    }
                    0x10 => a == operand,
                    0x20 => a > operand,
                    0x30 => a >= operand,
                    0x40 => a & operand != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            BPF_RET => {
                return match insn.code & 0x18 {
                    BPF_K => Some(k),
                    BPF_A => Some(a),
                    _ => None,
                }
            }
            BPF_MISC => match insn.code & 0xf8 {
                0x00 => x = a, // TAX
                0x80 => a = x, // TXA
                _ => return None,
            },
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seccomp_data` words as the kernel lays them out: little-endian halves of each argument.
    #[test]
    fn words_are_the_little_endian_halves() {
        let d = SeccompData {
            nr: 1,
            arch: 2,
            instruction_pointer: 0x3_0000_0004,
            args: [0x5_0000_0006, 0, 0, 0, 0, 0xffff_fffe_0000_0007],
        };
        assert_eq!(d.word(0), Some(1));
        assert_eq!(d.word(4), Some(2));
        assert_eq!((d.word(8), d.word(12)), (Some(4), Some(3)));
        assert_eq!((d.word(16), d.word(20)), (Some(6), Some(5)));
        assert_eq!((d.word(56), d.word(60)), (Some(7), Some(0xffff_fffe)));
        assert_eq!(d.word(64), None);
        assert_eq!(d.word(2), None);
    }
}
