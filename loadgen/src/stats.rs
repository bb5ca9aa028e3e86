//! Latencies (an HdrHistogram of microseconds), error counts, and the figures printed from them.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Slowest latency kept exactly; anything slower is recorded as this (and still counted).
const MAX_MICROS: u64 = 120_000_000;
/// Three significant figures: a recorded value is off by at most 0.1 %.
const SIGNIFICANT_FIGURES: u8 = 3;
/// Error messages kept for the report; the rest are only counted.
const KEPT_ERRORS: usize = 3;

/// The outcome of many requests: a latency for each success, a count of failures.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
    errors: u64,
    first_errors: Vec<String>,
}

impl Latencies {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Latencies {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_FIGURES)?,
            errors: 0,
            first_errors: Vec::new(),
        })
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn error(&mut self, message: impl fmt::Display) {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(message.to_string());
        }
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, so adding cannot fail; a failure would mean a
        // bug here, and losing the figures is the honest outcome.
        if self.histogram.add(&other.histogram).is_err() {
            self.error("merging histograms failed");
        }
        self.errors += other.errors;
        for e in &other.first_errors {
            if self.first_errors.len() < KEPT_ERRORS {
                self.first_errors.push(e.clone());
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn errors(&self) -> u64 {
        self.errors
    }

    pub fn first_errors(&self) -> &[String] {
        &self.first_errors
    }

    /// The latency at `quantile` (0.0 to 1.0); zero when nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.histogram.value_at_quantile(quantile))
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            errors: self.errors,
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            max: Duration::from_micros(self.histogram.max()),
            mean: Duration::from_secs_f64(self.histogram.mean() / 1e6),
        }
    }
}

/// The figures of one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub errors: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} errors={} p50={} p99={} max={} mean={}",
            self.count,
            self.errors,
            millis(self.p50),
            millis(self.p99),
            millis(self.max),
            millis(self.mean)
        )
    }
}

/// Milliseconds with two decimals, e.g. `3.25 ms`.
pub fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Events per second over `elapsed`; zero for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// `value / baseline`, or `None` when the baseline is zero (nothing to compare against).
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| value / baseline)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_where_they_should_be() {
        let mut l = Latencies::new().unwrap();
        for i in 1..=1000 {
            l.record(ms(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        let close = |d: Duration, want: u64| (d.as_secs_f64() * 1e3 - want as f64).abs() < 1.0;
        assert!(close(s.p50, 500), "{s}");
        assert!(close(s.p99, 990), "{s}");
        assert!(close(s.max, 1000), "{s}");
        assert!(close(s.mean, 500), "{s}");
    }

    #[test]
    fn one_slow_outlier_in_a_hundred_moves_the_p99_but_not_the_p50() {
        let mut l = Latencies::new().unwrap();
        for _ in 0..98 {
            l.record(ms(2));
        }
        l.record(ms(500));
        l.record(ms(500));
        let s = l.summary();
        assert_eq!(s.p50, l.quantile(0.5));
        assert!(s.p50 < ms(3), "{s}");
        assert!(s.p99 >= ms(499), "{s}");
    }

    #[test]
    fn sub_millisecond_latencies_keep_microsecond_precision() {
        let mut l = Latencies::new().unwrap();
        l.record(Duration::from_micros(250));
        assert_eq!(l.summary().max, Duration::from_micros(250));
    }

    #[test]
    fn a_latency_beyond_the_histogram_is_clamped_not_lost() {
        let mut l = Latencies::new().unwrap();
        l.record(Duration::from_secs(3600));
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 2);
        assert!(l.summary().max >= Duration::from_secs(119));
    }

    #[test]
    fn merging_adds_samples_and_errors_and_keeps_a_few_messages() {
        let mut a = Latencies::new().unwrap();
        let mut b = Latencies::new().unwrap();
        a.record(ms(1));
        b.record(ms(9));
        for i in 0..5 {
            b.error(format!("boom {i}"));
        }
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.errors(), 5);
        assert_eq!(a.first_errors(), ["boom 0", "boom 1", "boom 2"]);
        assert!(a.summary().max >= ms(9));
    }

    #[test]
    fn an_empty_measurement_reports_zeros() {
        let s = Latencies::new().unwrap().summary();
        assert_eq!((s.count, s.errors, s.p99), (0, 0, Duration::ZERO));
    }

    #[test]
    fn rates_and_ratios_guard_against_zero() {
        assert_eq!(per_second(500, Duration::from_secs(2)), 250.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(50.0, 200.0), Some(0.25));
        assert_eq!(ratio(50.0, 0.0), None);
        assert_eq!(millis(Duration::from_micros(3250)), "3.25 ms");
    }
}
