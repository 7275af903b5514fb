//! Processes and their binaries: which processes run Go, which runtime
//! symbols their binaries have, and where the runtime's structs keep things.

pub mod buildinfo;
pub mod discovery;
pub mod dwarf;
pub mod environ;
pub mod gobinary;
pub mod gosymbols;
pub mod layout;
pub mod lifecycle;
pub mod memprofile;
pub mod pclntab;
pub mod prologue;
pub mod selector;
pub mod x86;
