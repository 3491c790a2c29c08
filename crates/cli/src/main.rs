//! The `dagrun` binary: parse flags, set up logging, run the command, map the result to a
//! documented exit code (0 ok, 1 a task failed, 2 usage or config error, 130 interrupted).

mod alloc;
mod auto;
mod build;
mod cli;
mod commands;
#[cfg(feature = "aws")]
mod emr;
mod exit;
mod generate;
mod records;
mod render;
mod report;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, EmrCommand};
use crate::exit::{Code, Exit};

/// `dagrun man`: the man page (its SUBCOMMANDS section lists every subcommand; `dagrun
/// SUBCOMMAND --help` has their flags).
fn man_page() -> Result<u8, Exit> {
    let command = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| Exit::failed(format!("error: rendering the man page: {e}")))?;
    commands::print_stdout(&String::from_utf8_lossy(&page));
    Ok(Code::Ok.into())
}

fn main() -> ExitCode {
    alloc::init();
    dagrun_core::redact::register_aws_environment();
    dagrun_core::redact::register_aws_files();
    let cli = Cli::parse_from(cli::hoist_global_flags(std::env::args_os()));
    let threads = match &cli.command {
        Some(Command::Run(args)) => args.threads,
        None => cli.run.threads,
        _ => None,
    };
    if let Some(n) = threads {
        // SAFETY: no other thread exists yet, and Polars reads this once, when its pool starts.
        unsafe { std::env::set_var("POLARS_MAX_THREADS", n.to_string()) };
    }
    let terminal = ui::Terminal::new(&cli.log);
    terminal.init_logging(&cli.log);

    let result = match &cli.command {
        Some(Command::Validate(args)) => block_on(commands::validate(args)),
        Some(Command::Graph(args)) => commands::graph(args).map(|()| 0),
        Some(Command::Generate(args)) => generate::run(args).map(|()| 0),
        Some(Command::Report(args)) => block_on(commands::report(args)),
        Some(Command::History(args)) => block_on(commands::history(args)),
        Some(Command::Lake(args)) => block_on(commands::lake(args)),
        Some(Command::Emr(command)) => emr_command(command),
        Some(Command::Completions(args)) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut command, "dagrun", &mut std::io::stdout());
            Ok(Code::Ok.into())
        }
        Some(Command::Man) => man_page(),
        Some(Command::Run(args)) => block_on(commands::run(args, &terminal)),
        None => block_on(commands::run(&cli.run, &terminal)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Exit { code, message }) => {
            eprintln!("{}", dagrun_core::redact::redact(&message));
            ExitCode::from(code)
        }
    }
}

#[cfg(feature = "aws")]
fn emr_command(command: &EmrCommand) -> Result<u8, Exit> {
    match command {
        EmrCommand::Gc(args) => block_on(emr::gc(args)),
        EmrCommand::Specs(args) => emr::specs(args),
    }
}

#[cfg(not(feature = "aws"))]
fn emr_command(_: &EmrCommand) -> Result<u8, Exit> {
    Err(Exit::config(format!("error: {}", build::missing("`dagrun emr`", "aws"))))
}

fn block_on<T>(future: impl Future<Output = Result<T, Exit>>) -> Result<T, Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dagrun")
        .build()
        .map_err(|e| Exit::failed(format!("error: cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(future);
    // A cancelled local task may still sit in a blocking read (a stalled network file system, a
    // FIFO); do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
