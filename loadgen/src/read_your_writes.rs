//! Read-your-writes on product-service: `GET /products/{id}` the moment its `POST /products`
//! answered 201, without `?min_version=`. The POST's body carries the version it wrote; a read
//! model brought up to date after the commit (by a projector) may not have it yet, and then the
//! client that just wrote sees a 404 or an older version. Counted, not timed: the tries run one
//! after another, so they are no load.

use uuid::Uuid;

use super::bench::Bench;
use super::stats::{millis, Latencies};

/// How many products are created and read back.
pub const TRIES: u64 = 200;

/// What the GET answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200, at (or past) the version the POST returned.
    Current,
    /// 200, at an older version.
    Older,
    /// 404.
    Missing,
}

/// The answer to a read of what was written at version `written`, served at `served`
/// (`None`: 404).
pub fn classify(written: i64, served: Option<i64>) -> Answer {
    match served {
        Some(v) if v >= written => Answer::Current,
        Some(_) => Answer::Older,
        None => Answer::Missing,
    }
}

/// The tally of the tries.
pub struct ReadYourWrites {
    pub tries: u64,
    pub current: u64,
    pub older: u64,
    pub missing: u64,
    /// A POST or GET that failed outright (neither 201/200 nor 404).
    pub errors: u64,
    pub first_error: Option<String>,
    /// The GETs' latencies.
    pub get: Latencies,
}

impl ReadYourWrites {
    fn new() -> anyhow::Result<ReadYourWrites> {
        Ok(ReadYourWrites {
            tries: 0,
            current: 0,
            older: 0,
            missing: 0,
            errors: 0,
            first_error: None,
            get: Latencies::new()?,
        })
    }

    fn count(&mut self, answer: Answer) {
        match answer {
            Answer::Current => self.current += 1,
            Answer::Older => self.older += 1,
            Answer::Missing => self.missing += 1,
        }
    }

    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{e:#}"));
    }

    pub fn line(&self) -> String {
        let g = self.get.summary();
        let mut line = format!(
            "GET /products/{{id}} right after its 201: {} of {} answered the product (at the \
             version the POST returned); {} answered 404, {} an older version, {} failed \
             (GET p50 {}, max {})",
            self.current,
            self.tries,
            self.missing,
            self.older,
            self.errors,
            millis(g.p50),
            millis(g.max)
        );
        if let Some(e) = &self.first_error {
            line += &format!("\n    e.g. {e}");
        }
        line
    }
}

/// Creates [`TRIES`] products one after another, each read back the moment its 201 arrives.
pub async fn measure(bench: &Bench) -> anyhow::Result<ReadYourWrites> {
    let api = &bench.api;
    let mut tally = ReadYourWrites::new()?;
    for i in 0..TRIES {
        tally.tries += 1;
        let (id, written): (Uuid, i64) = match api
            .create_product_versioned(&format!("ryw {i}"), 1_000, 10)
            .await
        {
            Ok(created) => created,
            Err(e) => {
                tally.error(e);
                continue;
            }
        };
        let asked = tokio::time::Instant::now();
        match api.product_version(id).await {
            Ok(served) => {
                tally.get.record(asked.elapsed());
                tally.count(classify(written, served));
            }
            Err(e) => tally.error(e),
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_read_is_current_at_or_past_the_version_written() {
        assert_eq!(classify(1, Some(1)), Answer::Current);
        assert_eq!(classify(1, Some(2)), Answer::Current);
        assert_eq!(classify(3, Some(2)), Answer::Older);
        assert_eq!(classify(1, None), Answer::Missing);
    }

    #[test]
    fn the_line_says_how_many_of_the_tries_answered_the_product() {
        let mut t = ReadYourWrites::new().unwrap();
        t.tries = 200;
        for answer in [Answer::Current, Answer::Current, Answer::Missing] {
            t.count(answer);
        }
        t.error(anyhow::anyhow!("boom"));
        let line = t.line();
        assert!(
            line.starts_with(
                "GET /products/{id} right after its 201: 2 of 200 answered the product"
            ),
            "{line}"
        );
        assert!(
            line.contains("1 answered 404, 0 an older version, 1 failed"),
            "{line}"
        );
        assert!(line.contains("e.g. boom"), "{line}");
    }
}
