//! The `weir` command: serve the router, build and test filters, send and tail events.

mod cli;

use clap::Parser;

/// mimalloc: batches allocate and free many event-sized blocks and per-batch vectors of
/// a few hundred KiB; glibc's allocator hands the latter back to the kernel and takes
/// page faults on every batch (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before any thread starts: every thread shares the setting.
    weir::process::disable_transparent_huge_pages();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", weir::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
