//! The consumer's side of repairs ([`crate::repair`]): noting holes and asking the producer to
//! send their streams again, checking the producer's watermark against what this service
//! accounts for, and asking which of two events claiming one stream version is real.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;

use crate::repair::gaps::{hole_key, Gaps, WATERMARK_KEY};
use crate::repair::responder::WHICH_TIMEOUT;
use crate::repair::{self, Reply, Request, Watermark};

/// How long an event may wait for its stream's predecessor before the producer is asked for
/// it: long enough for ordinary reordering (a redelivery, a replica's batch) to resolve itself.
const HOLE_GRACE: Duration = Duration::from_secs(1);

/// What the consumer knows of gaps in what it received, and how it asks for them.
pub(super) struct Repairs {
    js: async_nats::jetstream::Context,
    pool: sqlx::PgPool,
    /// The producer's subjects (`<prefix>.>`); repairs are asked for under it.
    subject_prefix: String,
    /// Gaps noticed and not yet repaired (shared with readiness).
    pub gaps: Gaps,
    /// The producer's watermark position up to which everything is accounted for.
    verified: Mutex<i64>,
}

impl Repairs {
    pub fn new(
        js: async_nats::jetstream::Context,
        pool: sqlx::PgPool,
        subject_prefix: &str,
    ) -> Self {
        Repairs {
            js,
            pool,
            subject_prefix: subject_prefix.to_owned(),
            gaps: Gaps::default(),
            verified: Mutex::new(0),
        }
    }

    /// `stream` has an event waiting whose predecessor, `missing_from`, is not recorded.
    pub(super) fn hole(&self, stream: &str, missing_from: i64) {
        let ask = Request::Stream {
            stream_id: stream.to_owned(),
            from_version: missing_from,
        };
        if self
            .gaps
            .open(hole_key(stream), ask, Instant::now(), HOLE_GRACE)
        {
            tracing::debug!(stream, missing_from, "hole noticed");
            repair::metrics::gap_found("hole");
        }
    }

    /// A hole of `stream` whose waiting event was dead-lettered: nothing waits any more.
    pub(super) fn hole_abandoned(&self, stream: &str) {
        self.gaps.close(&hole_key(stream), Instant::now());
    }

    /// Streams whose recorded version advanced: their holes, if any, may be repaired.
    pub(super) fn recorded(&self, advanced: &HashMap<String, i64>) {
        if self.gaps.is_empty() {
            return;
        }
        let now = Instant::now();
        for (stream, version) in advanced {
            self.gaps.recorded(stream, *version, now);
        }
    }

    /// Sends the requests for gaps due now. Fire and forget: the answer is the events
    /// arriving, and a gap still open is asked for again later.
    pub(super) async fn ask_for_gaps(&self) {
        let subject = repair::repair_subject(&self.subject_prefix);
        for request in self.gaps.due(Instant::now()) {
            let kind = match &request {
                Request::Stream { .. } => "stream",
                Request::Range { .. } => "range",
                Request::Which { .. } => "which",
            };
            tracing::info!(?request, "asking the producer to send events again");
            repair::metrics::requested(kind);
            let Ok(body) = serde_json::to_vec(&request) else {
                continue;
            };
            if let Err(e) = self.js.client().publish(subject.clone(), body.into()).await {
                tracing::warn!(error = %e, "cannot ask for a repair; asking again later");
            }
        }
    }

    /// Compares the producer's watermark with what this service accounts for up to its
    /// position: inbox rows and the producer's events it dead-lettered. Short while nothing
    /// is in flight to this consumer means lost: the range is asked for again.
    pub(super) async fn check_watermark(&self, watermark: Watermark, consumer: &PullConsumer) {
        let verified = *self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if watermark.position <= verified {
            return;
        }
        let accounted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM inbox WHERE source_position <= $1) \
                  + (SELECT count(DISTINCT d.event_id) FROM dead_letters d \
                     WHERE d.source_position <= $1 AND d.kind <> 'out_of_order' \
                       AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.event_id = d.event_id))",
        )
        .bind(watermark.position)
        .fetch_one(&self.pool)
        .await;
        let accounted = match accounted {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "watermark not checked");
                return;
            }
        };
        let now = Instant::now();
        if accounted >= watermark.events {
            *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = watermark.position;
            if let Some(open) = self.gaps.close(WATERMARK_KEY, now) {
                tracing::info!(open_ms = open.as_millis(), "watermark gap repaired");
            }
            return;
        }
        // Messages still pending or unacknowledged may be the missing ones.
        match consumer.get_info().await {
            Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
            _ => return,
        }
        let missing = watermark.events - accounted;
        let ask = Request::Range {
            after: verified,
            through: watermark.position,
        };
        if self
            .gaps
            .open(WATERMARK_KEY.to_owned(), ask, now, Duration::ZERO)
        {
            tracing::warn!(
                missing,
                through = watermark.position,
                "the producer published events this service never received"
            );
            repair::metrics::gap_found("watermark");
        }
        self.ask_for_gaps().await;
    }

    /// Asks the producer which event its store holds at `version` of `stream`, and says what
    /// that makes of the recorded event and of the message carrying `arrived`.
    pub(super) async fn which(
        &self,
        stream: &str,
        version: i64,
        recorded: Option<uuid::Uuid>,
        arrived: uuid::Uuid,
    ) -> String {
        let request = Request::Which {
            stream_id: stream.to_owned(),
            version,
        };
        repair::metrics::requested("which");
        let subject = repair::repair_subject(&self.subject_prefix);
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let client = self.js.client();
        let asked = client.request(subject, body.into());
        let reply = match tokio::time::timeout(WHICH_TIMEOUT, asked).await {
            Ok(Ok(message)) => serde_json::from_slice::<Reply>(&message.payload).ok(),
            _ => None,
        };
        match reply {
            Some(Reply::Holds {
                event_id: Some(real),
            }) if real == arrived => format!(
                "the producer's store holds event {real} there: this message is the real \
                 one, and the recorded event{} is forged",
                recorded.map_or_else(String::new, |id| format!(" {id}"))
            ),
            Some(Reply::Holds {
                event_id: Some(real),
            }) if Some(real) == recorded => format!(
                "the producer's store holds event {real} there: the recorded event is the \
                 real one, and this message is forged"
            ),
            Some(Reply::Holds {
                event_id: Some(real),
            }) => {
                format!("the producer's store holds a third event there, {real}: both are forged")
            }
            Some(Reply::Holds { event_id: None }) => {
                "the producer's store holds no event there: both are forged".to_owned()
            }
            _ => "the producer did not answer which one its store holds".to_owned(),
        }
    }
}
