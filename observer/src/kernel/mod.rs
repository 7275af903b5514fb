//! The running kernel: what it allows, where things are, and loading our programs.

pub mod btf;
pub mod clock;
pub mod closer;
pub mod features;
pub mod kallsyms;
pub mod loader;
pub mod misses;
pub mod offsets;
pub mod privileges;
pub mod tp_btf;
pub mod tracefs;
