//! A minimal x86-64 encoder for the instructions the syscall storm emits: `mov r64, imm64`,
//! `lea r64, [rsp + disp32]` and `[rip + disp32]`, stores and loads at `[rsp + disp32]`, and a
//! few fixed byte sequences. Every form has a fixed length, so positions are known while
//! emitting; rip-relative targets are patched once the code is complete.

/// A general register, numbered as in the instruction encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(u8);

impl Reg {
    pub const RAX: Reg = Reg(0);
    pub const RCX: Reg = Reg(1);
    pub const RDX: Reg = Reg(2);
    pub const RBX: Reg = Reg(3);
    pub const RSP: Reg = Reg(4);
    pub const RBP: Reg = Reg(5);
    pub const RSI: Reg = Reg(6);
    pub const RDI: Reg = Reg(7);
    pub const R8: Reg = Reg(8);
    pub const R9: Reg = Reg(9);
    pub const R10: Reg = Reg(10);
    pub const R12: Reg = Reg(12);
    pub const R13: Reg = Reg(13);
    pub const R14: Reg = Reg(14);
    pub const R15: Reg = Reg(15);

    fn low(self) -> u8 {
        self.0 & 7
    }

    fn high(self) -> bool {
        self.0 >= 8
    }
}

/// REX.W, plus REX.R or REX.B for r8..r15 in the ModRM reg or rm field.
fn rex_w(reg: Reg, in_rm: bool) -> u8 {
    0x48 | match (reg.high(), in_rm) {
        (false, _) => 0,
        (true, false) => 0x04, // REX.R
        (true, true) => 0x01,  // REX.B
    }
}

/// Machine code under construction, with rip-relative displacements to patch at the end.
#[derive(Debug, Default)]
pub struct Asm {
    code: Vec<u8>,
    /// (position of a disp32, end of its instruction, target code offset before wrapping).
    fixups: Vec<(usize, usize, u64)>,
}

impl Asm {
    pub fn new() -> Self {
        Asm::default()
    }

    /// The offset the next instruction starts at.
    pub fn here(&self) -> usize {
        self.code.len()
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }

    /// `mov reg, imm64` (10 bytes).
    pub fn mov_imm64(&mut self, reg: Reg, value: u64) {
        self.bytes(&[rex_w(reg, true), 0xb8 + reg.low()]);
        self.bytes(&value.to_le_bytes());
    }

    /// `lea reg, [rsp + disp]` (8 bytes).
    pub fn lea_rsp(&mut self, reg: Reg, disp: i32) {
        self.bytes(&[rex_w(reg, false), 0x8d, 0x84 | reg.low() << 3, 0x24]);
        self.bytes(&disp.to_le_bytes());
    }

    /// `lea reg, [rip + disp]` aimed at `target` (7 bytes). The target is an offset into the
    /// finished code, taken modulo its length by [`Asm::finish`], so that any fuzzed offset
    /// lands inside the code.
    pub fn lea_code(&mut self, reg: Reg, target: u64) {
        self.bytes(&[rex_w(reg, false), 0x8d, 0x05 | reg.low() << 3]);
        let at = self.here();
        self.bytes(&[0; 4]);
        self.fixups.push((at, self.here(), target));
    }

    /// `lea reg, [rip + disp]` aimed at the offset [`Asm::here`] will have after `ahead` more
    /// bytes have been emitted past this instruction.
    pub fn lea_ahead(&mut self, reg: Reg, ahead: usize) {
        self.bytes(&[rex_w(reg, false), 0x8d, 0x05 | reg.low() << 3]);
        let disp = i32::try_from(ahead).expect("a short jump ahead");
        self.bytes(&disp.to_le_bytes());
    }

    /// `mov [rsp + disp], rax` (8 bytes).
    pub fn store_rax(&mut self, disp: i32) {
        self.bytes(&[0x48, 0x89, 0x84, 0x24]);
        self.bytes(&disp.to_le_bytes());
    }

    /// `mov rax, [rsp + disp]` (8 bytes).
    pub fn load_rax(&mut self, disp: i32) {
        self.bytes(&[0x48, 0x8b, 0x84, 0x24]);
        self.bytes(&disp.to_le_bytes());
    }

    /// `add rax, imm32` (6 bytes).
    pub fn add_rax(&mut self, imm: i32) {
        self.bytes(&[0x48, 0x05]);
        self.bytes(&imm.to_le_bytes());
    }

    /// `mov dst, src` (3 bytes).
    pub fn mov_reg(&mut self, dst: Reg, src: Reg) {
        let rex = 0x48 | u8::from(src.high()) << 2 | u8::from(dst.high());
        self.bytes(&[rex, 0x89, 0xc0 | src.low() << 3 | dst.low()]);
    }

    /// `mov reg, [rsp]` (4 bytes).
    pub fn load_rsp0(&mut self, reg: Reg) {
        self.bytes(&[rex_w(reg, false), 0x8b, 0x04 | reg.low() << 3, 0x24]);
    }

    /// `add reg, imm32` (7 bytes).
    pub fn add_imm(&mut self, reg: Reg, imm: i32) {
        self.bytes(&[rex_w(reg, true), 0x81, 0xc0 | reg.low()]);
        self.bytes(&imm.to_le_bytes());
    }

    /// `and reg, imm32` (7 bytes; the immediate is sign-extended).
    pub fn and_imm(&mut self, reg: Reg, imm: i32) {
        self.bytes(&[rex_w(reg, true), 0x81, 0xe0 | reg.low()]);
        self.bytes(&imm.to_le_bytes());
    }

    /// `sub rsp, imm32` (7 bytes).
    pub fn sub_rsp(&mut self, imm: i32) {
        self.bytes(&[0x48, 0x81, 0xec]);
        self.bytes(&imm.to_le_bytes());
    }

    /// Resolves the rip-relative targets and returns the code.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.code.len() as u64;
        for (at, end, target) in std::mem::take(&mut self.fixups) {
            let target = (target % len) as i64;
            let disp = i32::try_from(target - end as i64).expect("code is far below 2 GiB");
            self.code[at..at + 4].copy_from_slice(&disp.to_le_bytes());
        }
        self.code
    }
}

/// Fixed instruction bytes.
pub mod op {
    pub const SYSCALL: &[u8] = &[0x0f, 0x05];
    pub const INT80: &[u8] = &[0xcd, 0x80];
    pub const SYSENTER: &[u8] = &[0x0f, 0x34];
    pub const RET: &[u8] = &[0xc3];
    /// `jmp $`
    pub const SPIN: &[u8] = &[0xeb, 0xfe];
    /// `call rax`
    pub const CALL_RAX: &[u8] = &[0xff, 0xd0];
    pub const UD2: &[u8] = &[0x0f, 0x0b];
    pub const INT3: &[u8] = &[0xcc];
    pub const HLT: &[u8] = &[0xf4];
    /// `xor eax, eax`
    pub const ZERO_EAX: &[u8] = &[0x31, 0xc0];
    /// `mov byte ptr [rax], al`
    pub const STORE_AT_RAX: &[u8] = &[0x88, 0x00];
    /// `xor ecx, ecx`
    pub const ZERO_ECX: &[u8] = &[0x31, 0xc9];
    /// `div ecx`
    pub const DIV_ECX: &[u8] = &[0xf7, 0xf1];
    /// `call $`: recursion until the stack's guard page.
    pub const CALL_SELF: &[u8] = &[0xe8, 0xfb, 0xff, 0xff, 0xff];
    /// `pushfq; or dword ptr [rsp], 0x40000 (AC); popfq`
    pub const SET_AC: &[u8] = &[0x9c, 0x81, 0x0c, 0x24, 0x00, 0x00, 0x04, 0x00, 0x9d];
    /// `mov eax, dword ptr [rsp + 1]`: misaligned, so #AC (SIGBUS) once AC is set.
    pub const LOAD_MISALIGNED: &[u8] = &[0x8b, 0x44, 0x24, 0x01];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_disassembler() {
        let mut asm = Asm::new();
        asm.mov_imm64(Reg::RAX, 0x1122_3344_5566_7788);
        asm.mov_imm64(Reg::R10, u64::MAX);
        asm.lea_rsp(Reg::RDI, -16);
        asm.lea_rsp(Reg::R9, 0x100);
        asm.lea_code(Reg::RSI, 0);
        asm.lea_code(Reg::R8, 1_000_000); // wraps modulo the code length
        asm.lea_ahead(Reg::RAX, 2);
        asm.store_rax(0x128);
        asm.load_rax(0x200);
        asm.sub_rsp(0x200);
        asm.add_rax(-8);
        asm.mov_reg(Reg::R13, Reg::RDI);
        asm.mov_reg(Reg::RSI, Reg::R12);
        asm.load_rsp0(Reg::R12);
        asm.add_imm(Reg::R15, -0x2000);
        asm.and_imm(Reg::RBX, -4096);
        asm.bytes(op::SYSCALL);
        let code = asm.finish();
        let text = bytejail::disasm::listing(&code);
        for want in [
            "mov rax,0x1122334455667788",
            "mov r10,0xffffffffffffffff",
            "lea rdi,[rsp-0x10]",
            "lea r9,[rsp+0x100]",
            "lea rsi,[",
            "lea r8,[",
            "lea rax,[",
            "mov [rsp+0x128],rax",
            "mov rax,[rsp+0x200]",
            "sub rsp,0x200",
            "add rax,0xfffffffffffffff8",
            "mov r13,rdi",
            "mov rsi,r12",
            "mov r12,[rsp]",
            "add r15,0xffffffffffffe000",
            "and rbx,0xfffffffffffff000",
            "syscall",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        assert_eq!(text.lines().count(), 17, "{text}");
    }

    #[test]
    fn rip_relative_targets_resolve_modulo_the_code_length() {
        let mut asm = Asm::new();
        asm.lea_code(Reg::RAX, 3); // 7 bytes: rip after it is 7, target 3: disp -4
        asm.bytes(op::RET);
        let code = asm.finish();
        assert_eq!(i32::from_le_bytes(code[3..7].try_into().unwrap()), -4);
        let mut asm = Asm::new();
        asm.lea_code(Reg::RAX, 8 + 2); // 10 mod 8 = 2: disp -5
        asm.bytes(op::RET);
        let code = asm.finish();
        assert_eq!(i32::from_le_bytes(code[3..7].try_into().unwrap()), -5);
    }
}
