//! The runtime's memory profiling in one binary: whether the linker left it
//! on (`runtime.disableMemoryProfiling`, set when nothing can read the
//! profile), and where its rate (`runtime.MemProfileRate`) lives, which
//! allocation samples are scaled by.
//!
//! From `.symtab` where there is one. Stripped binaries keep neither name,
//! but functions `.gopclntab` names use both, RIP-relative: from Go 1.20
//! on, `runtime.schedinit`
//!
//! ```text
//! CMPB runtime.disableMemoryProfiling(SB), $0
//! JEQ  …
//! MOVQ $0, runtime.MemProfileRate(SB)
//! ```
//!
//! and before, the package's initializer `runtime.init`
//! (`MemProfileRate = defaultMemProfileRate(512 * 1024)`)
//!
//! ```text
//! MOVZX runtime.disableMemoryProfiling(SB), AX
//! TESTQ AX, AX
//! MOVL $0x80000, AX
//! …
//! MOVQ AX, runtime.MemProfileRate(SB)
//! ```

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};

/// Link-time addresses of the two globals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemProfileGlobals {
    /// `runtime.disableMemoryProfiling` (a bool).
    pub disabled_at: u64,
    /// `runtime.MemProfileRate` (an int).
    pub rate_at: u64,
}

/// How many instructions from `schedinit`'s entry are searched (the pattern
/// sits about 130 in).
const SEARCHED: usize = 2000;

/// The globals from `runtime.schedinit`'s machine code, at link-time
/// address `vaddr`.
pub fn from_schedinit(code: &[u8], vaddr: u64) -> Option<MemProfileGlobals> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut window: [Instruction; 3] = Default::default();
    for n in 0..SEARCHED {
        if !decoder.can_decode() {
            break;
        }
        window.rotate_left(1);
        decoder.decode_out(&mut window[2]);
        if n < 2 {
            continue;
        }
        let [cmp, jump, store] = &window;
        let compares_flag = cmp.code() == Code::Cmp_rm8_imm8 && rip_relative(cmp) && cmp.immediate8() == 0;
        let skips = matches!(jump.code(), Code::Je_rel8_64 | Code::Je_rel32_64);
        let clears_rate = store.code() == Code::Mov_rm64_imm32 && rip_relative(store) && store.immediate32to64() == 0;
        if compares_flag && skips && clears_rate {
            return Some(MemProfileGlobals {
                disabled_at: cmp.ip_rel_memory_address(),
                rate_at: store.ip_rel_memory_address(),
            });
        }
    }
    None
}

/// The globals from `runtime.init`'s machine code (Go 1.19).
pub fn from_runtime_init(code: &[u8], vaddr: u64) -> Option<MemProfileGlobals> {
    const WITHIN: usize = 6;
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    // The flag's load, and how many instructions ago.
    let mut flag: Option<(u64, usize)> = None;
    let mut default_rate = false;
    for _ in 0..SEARCHED {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        let i = &instruction;
        if i.code() == Code::Movzx_r32_rm8 && i.op1_kind() == OpKind::Memory && i.memory_base() == Register::RIP {
            flag = Some((i.ip_rel_memory_address(), 0));
            default_rate = false;
            continue;
        }
        let Some((disabled_at, since)) = flag.as_mut() else { continue };
        *since += 1;
        if *since > WITHIN {
            flag = None;
            continue;
        }
        default_rate |= i.code() == Code::Mov_r32_imm32 && i.immediate32() == 512 * 1024;
        if default_rate && i.code() == Code::Mov_rm64_r64 && rip_relative(i) {
            return Some(MemProfileGlobals { disabled_at: *disabled_at, rate_at: i.ip_rel_memory_address() });
        }
    }
    None
}

fn rip_relative(i: &Instruction) -> bool {
    i.op0_kind() == OpKind::Memory && i.memory_base() == Register::RIP
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go 1.26's `schedinit` around the pattern (`go tool objdump`).
    #[test]
    fn finds_the_flag_and_the_rate() {
        let code = [
            0x48, 0x89, 0x05, 0xdd, 0x2c, 0x1a, 0x00, // 0x44dd54 MOVQ AX, runtime.gcrash+24(SB)
            0x80, 0x3d, 0x14, 0x26, 0x1c, 0x00, 0x00, // 0x44dd5b CMPB runtime.disableMemoryProfiling(SB), $0
            0x74, 0x0b, // 0x44dd62 JE 0x44dd6f
            0x48, 0xc7, 0x05, 0x19, 0x69, 0x19, 0x00, 0x00, 0x00, 0x00,
            0x00, // MOVQ $0, runtime.MemProfileRate(SB)
            0x8b, 0x15, 0x8f, 0x2d, 0x1c, 0x00, // 0x44dd6f MOVL runtime.debug+100(SB), DX
        ];
        // The addresses `go tool nm` gives for these two symbols.
        assert_eq!(
            from_schedinit(&code, 0x44dd54),
            Some(MemProfileGlobals { disabled_at: 0x610376, rate_at: 0x5e4688 })
        );
    }

    /// Go 1.19's `runtime.init` (`go tool objdump`).
    #[test]
    fn finds_them_in_the_initializer_of_go_1_19() {
        let code = [
            0x0f, 0xb6, 0x05, 0x54, 0x33, 0x0e, 0x00, // 0x4595a5 MOVZX 0xe3354(IP), AX
            0x48, 0x85, 0xc0, // TESTQ AX, AX
            0xb8, 0x00, 0x00, 0x08, 0x00, // MOVL $0x80000, AX
            0xb9, 0x00, 0x00, 0x00, 0x00, // MOVL $0x0, CX
            0x48, 0x0f, 0x45, 0xc1, // CMOVNE CX, AX
            0x48, 0x89, 0x05, 0xec, 0x9d, 0x11, 0x00, // 0x4595bd MOVQ AX, runtime.MemProfileRate(SB)
        ];
        assert_eq!(
            from_runtime_init(&code, 0x4595a5),
            Some(MemProfileGlobals { disabled_at: 0x53c900, rate_at: 0x5733b0 })
        );
        assert_eq!(from_runtime_init(&code[7..], 0x4595ac), None, "no flag load");
    }

    #[test]
    fn other_code_finds_nothing() {
        assert_eq!(from_schedinit(&[0x90; 64], 0x1000), None);
        assert_eq!(from_schedinit(&[], 0x1000), None);
        // A compare and store of other sizes (CMPL, MOVL) do not match.
        let code = [
            0x83, 0x3d, 0x14, 0x26, 0x1c, 0x00, 0x00, // CMPL [rip+…], 0
            0x74, 0x0a, // JE
            0xc7, 0x05, 0x19, 0x69, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, // MOVL $0, [rip+…]
        ];
        assert_eq!(from_schedinit(&code, 0x1000), None);
    }
}
