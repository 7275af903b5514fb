//! `cargo xtask bench <name>`: benchmarks that print figures and assert nothing.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// TCP resets: agent overhead and events/s at a given reset rate.
    Resets(ResetsArgs),
}

/// Options of `cargo xtask bench resets`.
#[derive(Debug, Args)]
pub struct ResetsArgs {}

pub fn run(bench: Bench) -> Result<ExitCode> {
    match bench {
        Bench::Resets(args) => resets(&args),
    }
}

fn resets(_args: &ResetsArgs) -> Result<ExitCode> {
    eprintln!("bench resets: not implemented yet");
    Ok(ExitCode::from(2))
}
