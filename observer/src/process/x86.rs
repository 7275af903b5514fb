//! amd64 machine code, decoded (iced-x86): where a function returns. A
//! uprobe on each return instruction stands in for a uretprobe, which Go
//! cannot have (it moves goroutine stacks, and a uretprobe rewrites the
//! return address on the stack).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// Offsets, from the start of `code`, of its return instructions. `code` is
/// one whole function, decoded from its entry; undecodable bytes (padding)
/// are skipped as the decoder resynchronises.
pub fn return_offsets(code: &[u8]) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if !instruction.is_invalid() && instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    returns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_returns_not_c3_bytes() {
        let code = [
            0x49, 0x3b, 0x66, 0x10, // cmp rsp,[r14+0x10]
            0x76, 0x0d, // jbe +13
            0xb8, 0xc3, 0x00, 0x00, 0x00, // mov eax,0xc3 (a 0xc3 byte, no return)
            0x48, 0x85, 0xc0, // test rax,rax
            0x74, 0x01, // je +1
            0xc3, // ret (at 16)
            0x5d, // pop rbp
            0xc3, // ret (at 18)
            0xe8, 0, 0, 0, 0, // call morestack
            0xeb, 0xe1, // jmp entry
            0xcc, 0xcc, // int3 padding
        ];
        assert_eq!(return_offsets(&code), vec![16, 18]);
    }

    #[test]
    fn no_code_no_returns() {
        assert!(return_offsets(&[]).is_empty());
        assert!(return_offsets(&[0x90, 0x90]).is_empty());
    }
}
