//! `probegate-bench`: a thin entry point; everything lives in the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let options = bench::options::Options::parse();
    match bench::run::main(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probegate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
