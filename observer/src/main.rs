//! observer: an eBPF runtime observer for nodes that run Go services.
//! This file is the command line only; `agent` runs, `check` probes.

mod agent;
mod cgroup;
mod check;
mod config;
mod correlate;
mod event;
mod export;
mod kernel;
mod kube;
mod netns;
mod process;
mod profile;
mod sources;
mod view;
mod workload;

use std::process::ExitCode;

use clap::Parser;
use config::{Cli, Command, RunConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(view::console::Writer::default)
        // Plain text: the lines may be held back and shown in the live view.
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!("observer={}", cli.log_level)))
        .init();
    match cli.command {
        Command::Version => {
            println!("observer {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check(args) if args.capabilities => {
            print!("{}", kernel::privileges::list());
            ExitCode::SUCCESS
        }
        Command::Check(args) => match RunConfig::resolve(args.run) {
            Ok(config) => check::run(&config, args.json),
            Err(err) => {
                eprintln!("observer: error: {err}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            let config = match RunConfig::resolve(args) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("observer: error: {err}");
                    return ExitCode::from(2);
                }
            };
            let live_view = match config.live_view() {
                Ok(live_view) => live_view,
                Err(err) => {
                    eprintln!("observer: error: {err}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("observer: error: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(agent::run(config, live_view));
            // A blocking task still running (a write to a hung disk) must
            // not hold the exit past the stop's deadline.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("observer: error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Symbolize { binary, addrs } => match process::gosymbols::GoSymbols::read(&binary) {
            Ok(symbols) => {
                print!("{}", symbols.describe(&addrs));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("observer: error: {err}");
                ExitCode::from(2)
            }
        },
        Command::Episodes(args) => match view::history::run(&args) {
            Ok(printed) => {
                if let Some(note) = printed.note {
                    eprintln!("{note}");
                }
                print!("{}", printed.stdout);
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("observer: error: {err}");
                ExitCode::from(2)
            }
        },
    }
}
