//! Developer tasks for the observer workspace, run as `cargo xtask <task>`
//! (the alias lives in `.cargo/config.toml`).
//!
//! - `setup`: install the eBPF toolchain and the tools the tests use (idempotent);
//! - `build`: build the agent with its eBPF programs embedded;
//! - `run`:   setup, build, then run the agent (`observer run ARGS...`);
//! - `test`:  setup, build, and the whole test suite against the real kernel;
//! - `manifests`: rewrite deploy/manifests/observer.yaml from the chart;
//! - `image`: build the agent's image (podman) from the binary built here;
//! - `bench`: benchmarks that print figures (`__resetgen`, hidden, is theirs).

mod bench;
mod build;
mod cmd;
mod collector;
mod gofixture;
mod gotool;
mod host;
mod image;
mod manifests;
mod run;
mod setup;
mod suite_kernel;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "observer's developer tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need: apt packages, rust-src,
    /// bpf-linker 0.13.0, a mounted tracefs, the tests' OpenTelemetry
    /// Collector. Idempotent; needs root for apt.
    Setup,
    /// Build the agent (`target/release/observer`) with its eBPF programs embedded.
    Build,
    /// Setup, build, then run `observer run ARGS...` (through sudo when not root).
    Run {
        /// Arguments passed to `observer run`, after `--`
        /// (e.g. `cargo xtask run -- --duration 10s`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Setup, build, then the whole test suite (as root: the tests use the real kernel).
    Test,
    /// The end-to-end tests inside VMs booted with Debian's 5.10, 6.1 and 6.12 kernels.
    VmTest {
        /// Only this kernel (`5.10`, `6.1` or `6.12`).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Rewrite deploy/manifests/observer.yaml: `helm template` of the chart's defaults.
    Manifests,
    /// Build the agent, then its image (deploy/Dockerfile's final stage) with podman.
    Image(image::Args),
    /// Benchmarks: print figures, assert nothing.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
    /// The reset generator that `bench resets` runs inside its namespace.
    #[command(name = "__resetgen", hide = true)]
    ResetGen(bench::resetgen::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Task::Build => build::run().map(|()| ExitCode::SUCCESS),
        Task::Run { args } => run::run(&args),
        Task::Test => test::run().map(|()| ExitCode::SUCCESS),
        Task::VmTest { kernel } => vm::run(kernel.as_deref()).map(|()| ExitCode::SUCCESS),
        Task::Manifests => manifests::run().map(|()| ExitCode::SUCCESS),
        Task::Image(args) => image::run(&args).map(|()| ExitCode::SUCCESS),
        Task::Bench { bench } => bench::run(bench),
        Task::ResetGen(args) => bench::resetgen::main(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Task};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_passes_everything_after_the_separator() {
        let cli = Cli::parse_from(["xtask", "run", "--", "--duration", "10s"]);
        let Task::Run { args } = cli.task else {
            panic!("parsed as {:?}", cli.task);
        };
        assert_eq!(args, ["--duration", "10s"]);
    }

    #[test]
    fn run_without_arguments_passes_none() {
        let cli = Cli::parse_from(["xtask", "run"]);
        let Task::Run { args } = cli.task else {
            panic!("parsed as {:?}", cli.task);
        };
        assert!(args.is_empty());
    }
}
