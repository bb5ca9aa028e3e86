//! The `replay` command of a service: rebuilds projections from a terminal. On a terminal a
//! progress bar shows rate and estimate; otherwise (a pipe, a log file, CI) plain progress
//! lines are printed every few seconds. A summary line follows each projection.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use event_store::replay::{rebuild, Options, Phase, Progress, Report, Target};
use event_store::EventStore;

use crate::config::ReplayArgs;

/// How often a plain progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// `<service> replay`: lists the projections, or rebuilds those `args` names against the
/// database at `database_url` (migrated first; NATS is not needed), beside a running service
/// or not.
pub async fn command(
    database_url: &str,
    migrations: sqlx::migrate::Migrator,
    targets: &[Target],
    args: &ReplayArgs,
) -> anyhow::Result<()> {
    if args.list {
        list(targets);
        return Ok(());
    }
    let pool = crate::database::connect(database_url, 4).await?;
    crate::database::migrate(&pool, migrations).await?;
    let store = EventStore::new(pool.clone());
    let options = Options {
        page_size: args.page_size,
    };
    let result = run(&store, targets, &args.projections, &options).await;
    pool.close().await;
    result
}

/// Prints each projection: its name, source and tables.
pub fn list(targets: &[Target]) {
    for target in targets {
        println!(
            "{}\t{} -> {}",
            target.name(),
            target.source_kind(),
            target.tables().join(", ")
        );
    }
}

/// Rebuilds the projections named in `names` (all of them when empty), one after the other.
/// Ctrl-C cancels: the shadow tables are dropped and the live tables stay as they were.
pub async fn run(
    store: &EventStore,
    targets: &[Target],
    names: &[String],
    options: &Options,
) -> anyhow::Result<()> {
    let chosen = choose(targets, names)?;
    let shutdown = CancellationToken::new();
    let ctrl_c = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shutdown.cancel();
            }
        }
    });
    let mut reports = Vec::new();
    let mut failure = None;
    for target in chosen {
        let display = TerminalProgress::new(target.name());
        let progress = |p: &Progress| display.update(p);
        match rebuild(store, target, options, &progress, &shutdown).await {
            Ok(report) => {
                display.finish(&report);
                reports.push(report);
            }
            Err(e) => {
                display.abandon();
                failure = Some(e);
                break;
            }
        }
    }
    ctrl_c.abort();
    if reports.len() > 1 {
        let events: u64 = reports.iter().map(|r| r.events_read).sum();
        let rows: u64 = reports.iter().map(|r| r.rows_written).sum();
        let seconds: f64 = reports.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        println!(
            "total: {} projections, {events} events read, {rows} rows written, {seconds:.1} s",
            reports.len()
        );
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn choose<'t>(targets: &'t [Target], names: &[String]) -> anyhow::Result<Vec<&'t Target>> {
    if names.is_empty() {
        return Ok(targets.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            targets.iter().find(|t| t.name() == name).ok_or_else(|| {
                let known: Vec<&str> = targets.iter().map(Target::name).collect();
                anyhow!(
                    "no projection is named {name:?}; there are: {}",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// Progress of one rebuild on stdout.
pub struct TerminalProgress {
    name: String,
    bar: ProgressBar,
    plain: bool,
    started: Instant,
    last_line: Mutex<Option<Instant>>,
}

impl TerminalProgress {
    /// A bar when stdout is a terminal, plain lines otherwise.
    pub fn new(name: &str) -> Self {
        let plain = !std::io::stdout().is_terminal();
        let bar = if plain {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
        } else {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{prefix} {msg} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} events, \
                 {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.to_owned());
            bar
        };
        TerminalProgress {
            name: name.to_owned(),
            bar,
            plain,
            started: Instant::now(),
            last_line: Mutex::new(None),
        }
    }

    pub fn update(&self, progress: &Progress) {
        self.bar.set_length(progress.events_total);
        self.bar.set_position(progress.events_read);
        if progress.phase == Phase::Swapping {
            self.bar.set_message("swapping");
        }
        if self.plain && self.line_due() {
            println!("{}", self.line(progress));
        }
    }

    pub fn finish(&self, report: &Report) {
        self.bar.finish_and_clear();
        println!(
            "{}: rebuilt; {} events read, {} rows written, {:.1} s ({:.0} events/s)",
            self.name,
            report.events_read,
            report.rows_written,
            report.elapsed.as_secs_f64(),
            report.events_per_second()
        );
    }

    pub fn abandon(&self) {
        self.bar.abandon();
    }

    fn line_due(&self) -> bool {
        let Ok(mut last) = self.last_line.lock() else {
            return false;
        };
        let due = last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    fn line(&self, p: &Progress) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = p.events_read as f64 / seconds;
        let percent = 100.0 * p.events_read as f64 / (p.events_total.max(1)) as f64;
        let left = p.events_total.saturating_sub(p.events_read) as f64;
        let eta = if rate > 0.0 {
            format!("about {:.0} s left", left / rate)
        } else {
            "estimating".to_owned()
        };
        format!(
            "{}: {}/{} events ({percent:.0}%), {rate:.0} events/s, {eta}",
            self.name, p.events_read, p.events_total
        )
    }
}
