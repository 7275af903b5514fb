//! Go's stack-check prologue on amd64. A Go function whose stack must grow
//! calls `runtime.morestack`, which copies the stack and starts the function
//! again from its entry, so a uprobe at the entry can fire twice for one
//! call. Probing just after the check fires once per call.
//!
//! The prologue (Go 1.17+, `g` in R14, `g.stackguard0` at offset 16):
//! small frames `cmp rsp, [r14+16]`; larger ones `lea r12, [rsp-N]` then
//! `cmp r12, [r14+16]`; then `jbe` to the morestack call.

/// `cmp rsp, [r14+0x10]`.
const CMP_RSP: [u8; 4] = [0x49, 0x3b, 0x66, 0x10];
/// `cmp r12, [r14+0x10]`.
const CMP_R12: [u8; 4] = [0x4d, 0x3b, 0x66, 0x10];

/// Bytes from the function's entry to the first instruction after its
/// stack check, or `None` when the code does not start with one we know.
pub fn stack_check_len(code: &[u8]) -> Option<usize> {
    let cmp_at = if code.starts_with(&CMP_RSP) {
        0
    } else {
        // lea r12, [rsp+disp8] / [rsp+disp32]
        let lea = match code.get(..4)? {
            [0x4c, 0x8d, 0x64, 0x24] => 5,
            [0x4c, 0x8d, 0xa4, 0x24] => 8,
            _ => return None,
        };
        if !code.get(lea..)?.starts_with(&CMP_R12) {
            return None;
        }
        lea
    };
    let jbe = cmp_at + 4;
    match code.get(jbe..)? {
        [0x76, _, ..] => Some(jbe + 2),
        [0x0f, 0x86, _, _, _, _, ..] => Some(jbe + 6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_frames() {
        // cmp rsp,[r14+0x10]; jbe rel8; push rbp
        assert_eq!(stack_check_len(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x30, 0x55]), Some(6));
        // cmp rsp,[r14+0x10]; jbe rel32
        assert_eq!(stack_check_len(&[0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 1, 2, 0, 0, 0x55]), Some(10));
        // lea r12,[rsp-0x48]; cmp r12,[r14+0x10]; jbe rel8
        let code = [0x4c, 0x8d, 0x64, 0x24, 0xb8, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10, 0x55];
        assert_eq!(stack_check_len(&code), Some(11));
        // lea r12,[rsp-0x1000]; cmp r12,[r14+0x10]; jbe rel32
        let code = [0x4c, 0x8d, 0xa4, 0x24, 0, 0xf0, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0, 0, 0, 0];
        assert_eq!(stack_check_len(&code), Some(18));
    }

    #[test]
    fn unknown_code_is_none() {
        assert_eq!(stack_check_len(&[0x55, 0x48, 0x89, 0xe5]), None);
        assert_eq!(stack_check_len(&[0x49, 0x3b, 0x66, 0x10]), None);
        assert_eq!(stack_check_len(&[]), None);
    }
}
