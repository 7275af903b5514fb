//! observer's kernel programs. One module per hook area; every program is a
//! thin wrapper over a `try_*` function that returns `Result`.
#![no_std]
#![no_main]

mod alloc;
mod goruntime;
mod kernel;
mod maps;
mod memcg;
mod net;
mod process;
mod profile;
mod tcp;
mod tp_btf;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this never runs.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
