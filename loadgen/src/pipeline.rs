//! How fast each service's consumer worked during a measurement, read from its inbox (the
//! event store's table of received events, one row per message, stamped with the start of the
//! transaction that recorded it). While a backlog waits, consecutive messages are handled back
//! to back, so the gap between two rows is what one message costs the consumer.

use std::time::Duration;

use sqlx::PgPool;

use super::stats::{millis, per_second, Latencies};

/// What one consumer recorded since a mark.
pub struct ConsumerPace {
    pub service: &'static str,
    /// Transactions committed in the service's database meanwhile (Postgres' own count,
    /// flushed about once a second, so approximate), the load generator's probe included.
    pub commits: i64,
    pub messages: u64,
    /// From the first to the last message's transaction start.
    pub span: Duration,
    /// Between consecutive messages.
    pub gaps: Latencies,
}

/// Where a service's database stood: its inbox's last sequence number and its commit count.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    seq: i64,
    commits: i64,
}

impl Mark {
    /// The database's commit count at the mark.
    pub fn commits(&self) -> i64 {
        self.commits
    }
}

const COMMITS: &str = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";

/// How long a backend that went idle may keep its counts to itself. A backend flushes its
/// statistics at most once a second while busy; one that goes idle less than a second after
/// its last flush sets a timer and flushes 10 s later (`PGSTAT_IDLE_INTERVAL` in Postgres
/// 15's pgstat.c; seen here: 200 commits on one connection that then idled appeared in
/// `pg_stat_database` 10 s later). So counts read a second after a measurement miss up to a
/// second of every pooled connection's work; counts read this long after miss nothing.
pub const STATS_FLUSHED_AFTER: Duration = Duration::from_millis(10_500);

/// The database's transactions committed so far (Postgres' flushed count).
pub async fn commits(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(COMMITS).fetch_one(pool).await?)
}

pub async fn mark(pool: &PgPool) -> anyhow::Result<Mark> {
    Ok(Mark {
        seq: sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM inbox")
            .fetch_one(pool)
            .await?,
        commits: sqlx::query_scalar(COMMITS).fetch_one(pool).await?,
    })
}

/// Waits until neither service's database takes in anything new for a second (no event
/// appended, no message recorded): the work a measurement left behind (a backlog of messages
/// the other service still consumes) is done and will not load the next one. Gives up after
/// `timeout`; returns how long it waited.
pub async fn settle(pools: [&PgPool; 2], timeout: Duration) -> anyhow::Result<Duration> {
    const PROGRESS: &str = "SELECT (SELECT coalesce(max(seq), 0) FROM inbox) \
         + (SELECT coalesce(max(position), 0) FROM events)";
    let started = std::time::Instant::now();
    let mut last = Vec::new();
    loop {
        let mut now = Vec::new();
        for pool in pools {
            now.push(
                sqlx::query_scalar::<_, i64>(PROGRESS)
                    .fetch_one(pool)
                    .await?,
            );
        }
        if now == last || started.elapsed() > timeout {
            return Ok(started.elapsed());
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The messages recorded after `mark`, in the order recorded, and the commits since.
pub async fn since(
    pool: &PgPool,
    service: &'static str,
    mark: Mark,
) -> anyhow::Result<ConsumerPace> {
    // Let Postgres flush its statistics (each backend does so at most once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let commits: i64 = sqlx::query_scalar(COMMITS).fetch_one(pool).await?;
    let times: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM received_at)::float8 FROM inbox WHERE seq > $1 ORDER BY seq",
    )
    .bind(mark.seq)
    .fetch_all(pool)
    .await?;
    let mut pace = pace(service, &times)?;
    pace.commits = commits - mark.commits;
    Ok(pace)
}

/// The pace of messages stamped at `times` (seconds, in recording order).
pub fn pace(service: &'static str, times: &[f64]) -> anyhow::Result<ConsumerPace> {
    let mut gaps = Latencies::new()?;
    for pair in times.windows(2) {
        gaps.record(Duration::from_secs_f64((pair[1] - pair[0]).max(0.0)));
    }
    let span = match (times.first(), times.last()) {
        (Some(first), Some(last)) => Duration::from_secs_f64((last - first).max(0.0)),
        _ => Duration::ZERO,
    };
    Ok(ConsumerPace {
        service,
        commits: 0,
        messages: times.len() as u64,
        span,
        gaps,
    })
}

impl ConsumerPace {
    pub fn line(&self) -> String {
        let g = self.gaps.summary();
        format!(
            "{}: {} commits; consumer: {} messages in {:.1} s = {:.0}/s, gap p50 {} p99 {}",
            self.service,
            self.commits,
            self.messages,
            self.span.as_secs_f64(),
            per_second(self.messages, self.span),
            millis(g.p50),
            millis(g.p99)
        )
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn back_to_back_messages_give_their_rate_and_gaps() {
        let times: Vec<f64> = (0..=200).map(|i| 1_000.0 + i as f64 * 0.005).collect();
        let p = pace("order-service", &times).unwrap();
        assert_eq!(p.messages, 201);
        assert!((p.span.as_secs_f64() - 1.0).abs() < 1e-6);
        let gap = p.gaps.summary().p50.as_secs_f64();
        assert!((gap - 0.005).abs() < 0.0001, "{gap}");
        assert!(p.line().contains("= 201/s"), "{}", p.line());
    }

    #[test]
    fn no_messages_is_a_pace_of_nothing() {
        let p = pace("x", &[]).unwrap();
        assert_eq!((p.messages, p.span), (0, Duration::ZERO));
    }
}
