//! Measures the whole system; see BENCHMARKS.md. Build everything first:
//!
//!     cargo build --release --workspace --bins && cargo run --release -p loadgen

use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::{ceiling, db_ceiling, run};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Ceiling(args)) => ceiling::serve(args),
        Some(Command::DbCeiling(args)) => db_ceiling::serve(args),
        None => {
            let report = tokio::runtime::Runtime::new()?.block_on(run::run(cli.run))?;
            let errors = report.invalidating_errors();
            if errors > 0 {
                anyhow::bail!("{errors} errors in throughput measurements: they are not valid");
            }
            Ok(())
        }
    }
}
