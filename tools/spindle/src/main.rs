//! `spindle`: the command-line runner (`cargo spindle ...`); see the `spindle_tools` crate docs.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use spindle_tools::cli::{Cli, CliCommand, RunArguments};
use spindle_tools::{
    build_kernel, exit_code, hgrm, output, run, ExitStatusKind, RunError, RunReport,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        CliCommand::Run(arguments) => run_command(&arguments),
        CliCommand::Build => build_command(),
        CliCommand::List => {
            print!("{}", spindle_tools::listing::extension_listing());
            exit_code::OK
        }
    };
    ExitCode::from(code)
}

fn build_command() -> u8 {
    match build_kernel() {
        Ok(image) => {
            println!("{}", image.display());
            exit_code::OK
        }
        Err(error) => fail(&error),
    }
}

fn run_command(arguments: &RunArguments) -> u8 {
    let options = match arguments.to_run_options() {
        Ok(options) => options,
        Err(error) => return fail(&error),
    };
    let report = match run(&options) {
        Ok(report) => report,
        Err(error) => return fail(&error),
    };
    let mut stdout = io::stdout().lock();
    // A closed stdout (`| head`) must not change the exit code.
    let _ = output::write_summary(&report, &mut stdout);
    let _ = stdout.flush();
    drop(stdout);

    let mut code = report.status.exit_code();
    if let Err(error) = write_outputs(arguments, &report) {
        eprintln!("spindle: {error}");
        if code == exit_code::OK {
            code = error.exit_code();
        }
    }
    if report.status == ExitStatusKind::Ok {
        println!("{}", output::verdict_line(&report));
    } else {
        print_qemu_stderr(&report);
        eprintln!("{}", output::verdict_line(&report));
    }
    code
}

/// QEMU's stderr, when the run failed and QEMU said something.
fn print_qemu_stderr(report: &RunReport) {
    let stderr = report.qemu_stderr.trim_end();
    if stderr.is_empty() {
        return;
    }
    eprintln!("spindle: QEMU's stderr:");
    for line in stderr.lines() {
        eprintln!("  {line}");
    }
}

fn write_outputs(arguments: &RunArguments, report: &RunReport) -> Result<(), RunError> {
    if let Some(path) = &arguments.json {
        write_json(path, &report.document)?;
    }
    if let Some(directory) = &arguments.hgrm {
        hgrm::write_directory(directory, &report.histograms).map_err(|source| RunError::Io {
            context: format!("writing .hgrm files to {}", directory.display()),
            source,
        })?;
    }
    Ok(())
}

fn write_json(path: &Path, document: &serde_json::Value) -> Result<(), RunError> {
    let mut text = serde_json::to_string_pretty(document).expect("a JSON value serializes");
    text.push('\n');
    fs::write(path, text).map_err(|source| RunError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

fn fail(error: &RunError) -> u8 {
    eprintln!("spindle: {error}");
    error.exit_code()
}
