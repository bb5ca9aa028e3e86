//! Idempotency keys: what a client's `Idempotency-Key` was first used for, and the response
//! kept for it (the table `idempotency_keys`; docs/adr/0005-idempotency-keys.md).
//!
//! A request [`claim`]s its key in a short statement of its own (in flight, under a lease, so
//! a crashed attempt blocks its key only until the lease lapses); the command then stores its
//! response with its append, in the append's statement (`store::CommandSql`) or with [`keep`]
//! in its transaction (`aggregate::Commands::execute` with the claim), so a key is never kept without its events nor events written under a key
//! without its response. A failed request [`release`]s its key. Ids derived from the claim
//! ([`Claimed::derive`]) make a retry that races the first attempt name the same events, which
//! the store's idempotent append then refuses to write twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// The namespace of every uuid derived from a key.
const NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_9c2e_53f4_4a0b_9e6d_2f0c_7a51_d3e8);

/// Tries of a claim that keeps meeting a row pruned under it.
const CLAIM_TRIES: usize = 3;

/// A response kept for a key, to be replayed as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub status: u16,
    pub location: Option<String>,
    /// The body's bytes (JSON), as first sent.
    pub body: Vec<u8>,
    /// It comes from an earlier request with the key, not from this one's work.
    pub replayed: bool,
}

impl Kept {
    /// A fresh JSON response.
    pub fn json(status: u16, location: Option<String>, body: &impl Serialize) -> Self {
        Kept {
            status,
            location,
            // A type that serializes to a response body does not fail to.
            body: serde_json::to_vec(body).unwrap_or_default(),
            replayed: false,
        }
    }
}

/// A key this request holds in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub key: String,
    /// Method, path and body of the request, hashed.
    pub fingerprint: String,
    /// The time of the key's first claim: a key reused after its expiry is a new generation
    /// and derives new ids.
    pub generation: DateTime<Utc>,
    /// This attempt: only it may release the claim.
    pub holder: Uuid,
}

impl Claimed {
    /// The uuid `name` stands for under this key (an event's index, a new aggregate's id):
    /// the same for every attempt of the request, another for any other request.
    pub fn derive(&self, name: &str) -> Uuid {
        let seed = format!(
            "{}\n{}\n{}\n{name}",
            self.key,
            self.fingerprint,
            self.generation.timestamp_micros()
        );
        Uuid::new_v5(&NAMESPACE, seed.as_bytes())
    }
}

/// What a key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// New (or expired, or left by a crashed attempt): this request runs.
    Claimed(Claimed),
    /// The same request ran before: its response.
    Replay(Kept),
    /// The same request is running now.
    InFlight,
    /// The key was used for another request.
    Mismatch,
}

const CLAIM_SQL: &str = r#"
INSERT INTO idempotency_keys (key, fingerprint, holder, locked_until, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5))
ON CONFLICT (key) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    holder = excluded.holder,
    locked_until = excluded.locked_until,
    generation = CASE WHEN idempotency_keys.expires_at <= now() THEN now()
                      ELSE idempotency_keys.generation END,
    created_at = CASE WHEN idempotency_keys.expires_at <= now() THEN now()
                      ELSE idempotency_keys.created_at END,
    expires_at = CASE WHEN idempotency_keys.expires_at <= now() THEN excluded.expires_at
                      ELSE idempotency_keys.expires_at END,
    status = NULL, location = NULL, body = NULL
WHERE idempotency_keys.expires_at <= now()
   OR (idempotency_keys.status IS NULL AND idempotency_keys.locked_until <= now()
       AND idempotency_keys.fingerprint = excluded.fingerprint)
RETURNING generation
"#;

/// Claims `key` for the request `fingerprint` names, for `lease` (after which another attempt
/// of the same request may take it over); a claimed key is kept for `retention`.
pub async fn claim(
    pool: &PgPool,
    key: &str,
    fingerprint: &str,
    lease: Duration,
    retention: Duration,
) -> Result<Claim, sqlx::Error> {
    let holder = Uuid::new_v4();
    for _ in 0..CLAIM_TRIES {
        let claimed: Option<DateTime<Utc>> = sqlx::query_scalar(CLAIM_SQL)
            .bind(key)
            .bind(fingerprint)
            .bind(holder)
            .bind(lease.as_secs_f64())
            .bind(retention.as_secs_f64())
            .fetch_optional(pool)
            .await?;
        if let Some(generation) = claimed {
            return Ok(Claim::Claimed(Claimed {
                key: key.to_owned(),
                fingerprint: fingerprint.to_owned(),
                generation,
                holder,
            }));
        }
        let row = sqlx::query(
            "SELECT fingerprint, status, location, body FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(pool)
        .await?;
        // Gone meanwhile (pruned): claim again.
        let Some(row) = row else { continue };
        let stored: String = row.try_get("fingerprint")?;
        if stored != fingerprint {
            return Ok(Claim::Mismatch);
        }
        return Ok(match kept_from(&row)? {
            Some(kept) => Claim::Replay(kept),
            None => Claim::InFlight,
        });
    }
    Ok(Claim::InFlight)
}

fn kept_from(row: &sqlx::postgres::PgRow) -> Result<Option<Kept>, sqlx::Error> {
    let status: Option<i16> = row.try_get("status")?;
    let Some(status) = status else {
        return Ok(None);
    };
    Ok(Some(Kept {
        status: u16::try_from(status).unwrap_or(500),
        location: row.try_get("location")?,
        body: row
            .try_get::<Option<Vec<u8>>, _>("body")?
            .unwrap_or_default(),
        replayed: true,
    }))
}

/// Stores `kept` as the response of the claimed key, on `conn` (the append's transaction).
/// False when it was kept already (by the attempt whose events these are).
pub async fn keep(
    conn: &mut PgConnection,
    claimed: &Claimed,
    kept: &Kept,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET status = $3, location = $4, body = $5, locked_until = now() \
         WHERE key = $1 AND generation = $2 AND status IS NULL",
    )
    .bind(&claimed.key)
    .bind(claimed.generation)
    .bind(i16::try_from(kept.status).unwrap_or(500))
    .bind(&kept.location)
    .bind(&kept.body)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// The response kept for the generation of `claimed`, if any.
pub async fn kept(pool: &PgPool, claimed: &Claimed) -> Result<Option<Kept>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT status, location, body FROM idempotency_keys WHERE key = $1 AND generation = $2",
    )
    .bind(&claimed.key)
    .bind(claimed.generation)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => kept_from(&row),
        None => Ok(None),
    }
}

/// Gives the key up after a request that changed nothing (an error), so a retry runs anew.
pub async fn release(pool: &PgPool, claimed: &Claimed) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND holder = $2 AND status IS NULL")
        .bind(&claimed.key)
        .bind(claimed.holder)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the keys past their retention, except one whose request is still running under
/// its lease (a retention shorter than a request); how many.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM idempotency_keys WHERE expires_at <= now() \
         AND (status IS NOT NULL OR locked_until <= now())",
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(key: &str, fingerprint: &str, micros: i64) -> Claimed {
        Claimed {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            generation: DateTime::from_timestamp_micros(micros).unwrap_or_default(),
            holder: Uuid::nil(),
        }
    }

    #[test]
    fn derived_ids_depend_on_key_request_generation_and_name_only() {
        let a = claimed("k", "f", 1);
        let again = Claimed {
            holder: Uuid::new_v4(),
            ..a.clone()
        };
        assert_eq!(a.derive("event-0"), again.derive("event-0"));
        assert_ne!(a.derive("event-0"), a.derive("event-1"));
        assert_ne!(a.derive("event-0"), claimed("k2", "f", 1).derive("event-0"));
        assert_ne!(a.derive("event-0"), claimed("k", "g", 1).derive("event-0"));
        assert_ne!(a.derive("event-0"), claimed("k", "f", 2).derive("event-0"));
    }
}
