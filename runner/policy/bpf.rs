//! Classic BPF as seccomp runs it: the instruction, the opcodes bytejail emits, and an assembler
//! whose jumps go to labels.
//!
//! Conditional jumps reach at most 255 instructions ahead. The assembler never truncates an
//! offset: a conditional jump whose target is farther goes through a `ja` placed right after it
//! (`ja` takes a 32-bit offset), and [`Assembler::finish`] repeats the layout until every offset
//! fits. Every offset and length is a checked conversion; a failure is a [`CompileError`].

use super::CompileError;

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    /// The opcode: class, size, mode and source bits.
    pub code: u16,
    /// Instructions to skip when a jump's condition holds.
    pub jt: u8,
    /// Instructions to skip when it does not.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

impl Insn {
    /// The instruction's 8 bytes as the kernel reads them.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.code.to_le_bytes());
        b[2] = self.jt;
        b[3] = self.jf;
        b[4..8].copy_from_slice(&self.k.to_le_bytes());
        b
    }

    /// A jump-free instruction.
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
}

// Classic BPF opcodes (`linux/filter.h`, `linux/bpf_common.h`).
/// Class: load into the accumulator.
pub const BPF_LD: u16 = 0x00;
/// Class: load into the index register.
pub const BPF_LDX: u16 = 0x01;
/// Class: store the accumulator in scratch memory.
pub const BPF_ST: u16 = 0x02;
/// Class: store the index register in scratch memory.
pub const BPF_STX: u16 = 0x03;
/// Class: arithmetic on the accumulator.
pub const BPF_ALU: u16 = 0x04;
/// Class: jump.
pub const BPF_JMP: u16 = 0x05;
/// Class: return a value.
pub const BPF_RET: u16 = 0x06;
/// Class: move between the accumulator and the index register.
pub const BPF_MISC: u16 = 0x07;
/// Size: a 32-bit word.
pub const BPF_W: u16 = 0x00;
/// Mode: at an absolute offset in `seccomp_data`.
pub const BPF_ABS: u16 = 0x20;
/// Mode: the constant `k`.
pub const BPF_IMM: u16 = 0x00;
/// Mode: scratch memory slot `k`.
pub const BPF_MEM: u16 = 0x60;
/// Mode: the length of the data.
pub const BPF_LEN: u16 = 0x80;
/// Source: the constant `k`.
pub const BPF_K: u16 = 0x00;
/// Source: the index register.
pub const BPF_X: u16 = 0x08;
/// Return source: the accumulator.
pub const BPF_A: u16 = 0x10;

/// `A = seccomp_data[k]` (a 32-bit word).
pub const BPF_LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
/// `A &= k`.
pub const BPF_ALU_AND_K: u16 = BPF_ALU | 0x50 | BPF_K;
/// `pc += k`.
pub const BPF_JA: u16 = BPF_JMP;
/// `pc += (A == k) ? jt : jf`.
pub const BPF_JEQ_K: u16 = BPF_JMP | 0x10 | BPF_K;
/// `pc += (A > k) ? jt : jf`.
pub const BPF_JGT_K: u16 = BPF_JMP | 0x20 | BPF_K;
/// `pc += (A >= k) ? jt : jf`.
pub const BPF_JGE_K: u16 = BPF_JMP | 0x30 | BPF_K;
/// `pc += (A & k) ? jt : jf`.
pub const BPF_JSET_K: u16 = BPF_JMP | 0x40 | BPF_K;
/// `return k`.
pub const BPF_RET_K: u16 = BPF_RET | BPF_K;

/// A place in the program, bound once with [`Assembler::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Where a conditional jump goes when its condition is true (`jt`) or false (`jf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The next instruction emitted.
    Next,
    /// A label, bound before or after the jump.
    To(Label),
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Stmt(Insn),
    Cond {
        code: u16,
        k: u32,
        jt: Dest,
        jf: Dest,
    },
    Ja(Label),
}

/// Builds a program front to back; labels may be bound after the jumps that use them (BPF only
/// jumps forward).
#[derive(Debug, Default)]
pub struct Assembler {
    items: Vec<Item>,
    labels: Vec<Option<usize>>,
}

impl Assembler {
    /// A new label, bound later with [`Assembler::bind`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction emitted. A label is bound once.
    pub fn bind(&mut self, label: Label) {
        debug_assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.items.len());
    }

    /// Whether `label` is bound yet.
    pub fn is_bound(&self, label: Label) -> bool {
        self.labels[label.0].is_some()
    }

    /// Emits a statement (load, store, return, ...) with constant `k`.
    pub fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(Insn::stmt(code, k)));
    }

    /// `A = seccomp_data[offset]`.
    pub fn load(&mut self, offset: u32) {
        self.stmt(BPF_LD_W_ABS, offset);
    }

    /// `return value`.
    pub fn ret(&mut self, value: u32) {
        self.stmt(BPF_RET_K, value);
    }

    /// `if (A code k) goto jt else goto jf`.
    pub fn jump(&mut self, code: u16, k: u32, jt: Dest, jf: Dest) {
        self.items.push(Item::Cond { code, k, jt, jf });
    }

    /// `goto label`.
    pub fn ja(&mut self, label: Label) {
        self.items.push(Item::Ja(label));
    }

    /// Lays the program out: the instructions, with every label resolved.
    pub fn finish(self) -> Result<Vec<Insn>, CompileError> {
        let n = self.items.len();
        // Per conditional jump: whether jt / jf go through a `ja` placed after it. Only ever
        // switched on, so the loop ends (at most two passes per jump).
        let mut far = vec![(false, false); n];
        loop {
            // addr[i]: where item i starts; addr[n]: the program's length.
            let mut addr = Vec::with_capacity(n + 1);
            let mut pc = 0usize;
            for (item, &(ft, ff)) in self.items.iter().zip(&far) {
                addr.push(pc);
                pc += match item {
                    Item::Cond { .. } => 1 + usize::from(ft) + usize::from(ff),
                    _ => 1,
                };
            }
            addr.push(pc);
            let target = |dest: Dest, i: usize| -> Result<usize, CompileError> {
                match dest {
                    Dest::Next => Ok(addr[i + 1]),
                    Dest::To(label) => self.labels[label.0]
                        .map(|at| addr[at])
                        .ok_or(CompileError::Internal("a jump to an unbound label")),
                }
            };
            let mut changed = false;
            for (i, item) in self.items.iter().enumerate() {
                if let Item::Cond { jt, jf, .. } = *item {
                    let from = addr[i] + 1;
                    let (far_t, far_f) = &mut far[i];
                    for (dest, is_far) in [(jt, far_t), (jf, far_f)] {
                        let to = target(dest, i)?;
                        if to < from {
                            return Err(CompileError::Internal("a backward jump"));
                        }
                        if !*is_far && to - from > usize::from(u8::MAX) {
                            *is_far = true;
                            changed = true;
                        }
                    }
                }
            }
            if changed {
                continue;
            }
            let mut out = Vec::with_capacity(pc);
            for (i, item) in self.items.iter().enumerate() {
                match *item {
                    Item::Stmt(insn) => out.push(insn),
                    Item::Ja(label) => {
                        let to = target(Dest::To(label), i)?;
                        out.push(Insn::stmt(BPF_JA, offset32(addr[i] + 1, to)?));
                    }
                    Item::Cond { code, k, jt, jf } => {
                        let (ft, ff) = far[i];
                        let from = addr[i] + 1;
                        // The trampolines sit right after the jump: jt's first, then jf's.
                        let jt_off = if ft {
                            0
                        } else {
                            offset8(from, target(jt, i)?)?
                        };
                        let jf_off = if ff {
                            u8::from(ft)
                        } else {
                            offset8(from, target(jf, i)?)?
                        };
                        out.push(Insn {
                            code,
                            jt: jt_off,
                            jf: jf_off,
                            k,
                        });
                        for (is_far, dest) in [(ft, jt), (ff, jf)] {
                            if is_far {
                                let at = out.len();
                                out.push(Insn::stmt(BPF_JA, offset32(at + 1, target(dest, i)?)?));
                            }
                        }
                    }
                }
            }
            debug_assert_eq!(out.len(), pc);
            return Ok(out);
        }
    }
}

fn offset8(from: usize, to: usize) -> Result<u8, CompileError> {
    to.checked_sub(from)
        .and_then(|d| u8::try_from(d).ok())
        .ok_or(CompileError::Internal("a conditional jump out of range"))
}

fn offset32(from: usize, to: usize) -> Result<u32, CompileError> {
    let d = to
        .checked_sub(from)
        .ok_or(CompileError::Internal("a backward jump"))?;
    u32::try_from(d).map_err(|_| CompileError::TooLong {
        insns: d,
        max: super::MAX_INSNS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conditional jump to a label 300 instructions on goes through a `ja` right after it; a
    /// near one does not. The interpreter follows both to the right return.
    #[test]
    fn far_conditional_jumps_go_through_a_trampoline() {
        for distance in [0usize, 1, 254, 255, 256, 300, 1000] {
            let mut asm = Assembler::default();
            let (yes, no) = (asm.label(), asm.label());
            asm.load(0);
            asm.jump(BPF_JEQ_K, 7, Dest::To(yes), Dest::To(no));
            asm.bind(no);
            for _ in 0..distance {
                asm.load(0);
            }
            asm.ret(1);
            asm.bind(yes);
            asm.ret(2);
            let program = asm.finish().unwrap();
            let trampolines = usize::from(distance + 1 > 255);
            assert_eq!(program.len(), 4 + distance + trampolines, "{distance}");
            for (nr, want) in [(7, 2), (8, 1)] {
                let got = super::super::interp::run(
                    &program,
                    &super::super::interp::SeccompData::new(0, nr, [0; 6]),
                );
                assert_eq!(got, Some(want), "distance {distance} nr {nr}");
            }
        }
    }
}
