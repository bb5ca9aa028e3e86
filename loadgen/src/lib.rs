//! The load generator behind `cargo run --release -p loadgen` (see BENCHMARKS.md).
//!
//! - [`cli`]: flags. [`run`]: one run, phase by phase, then [`report`] and [`goals`].
//! - [`bench`]: the system under test, started with [`tests::TestSystem`], and its products.
//! - [`schedule`]: rate control, an open loop (fixed send instants, no coordinated omission)
//!   and a closed loop (N clients back to back). [`stats`]: HdrHistogram latencies.
//! - Scenarios: [`baseline`] (raw Postgres inserts), [`commands`], [`read_your_writes`],
//!   [`propagation`], [`capacity`] (the saga's highest rate that holds), [`reads`] (beside the
//!   [`db_ceiling`] and [`ceiling`] servers), all through [`api`]; [`watch`] sees propagated
//!   changes; [`pipeline`] reads how fast each consumer went; [`costs`], what each order cost
//!   the database; [`horizon`] watches other databases' long transactions, which hold every
//!   relay back.
//! - [`process`]: finding the service processes, starting the helper servers; [`memory`]:
//!   their resident sizes from `/proc`; [`cpu`]: where the CPU went, the machine's noise
//!   included.

pub mod api;
pub mod baseline;
pub mod bench;
pub mod capacity;
pub mod ceiling;
pub mod cli;
pub mod commands;
pub mod costs;
pub mod cpu;
pub mod db_ceiling;
pub mod goals;
pub mod horizon;
pub mod memory;
pub mod pipeline;
pub mod process;
pub mod propagation;
pub mod read_your_writes;
pub mod reads;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod watch;
