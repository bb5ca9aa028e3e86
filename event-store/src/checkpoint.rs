//! Named positions of readers (the relay, projections, reactions), stored beside the events.

use sqlx::PgExecutor;

/// The stored position of `name`, 0 when it has none yet.
pub async fn load<'e>(executor: impl PgExecutor<'e>, name: &str) -> Result<i64, sqlx::Error> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(executor)
            .await?;
    Ok(position.unwrap_or(0))
}

/// Stores `position` for `name`. It never moves a checkpoint backwards.
pub async fn save<'e>(
    executor: impl PgExecutor<'e>,
    name: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now() \
         WHERE checkpoints.position < excluded.position",
    )
    .bind(name)
    .bind(position)
    .execute(executor)
    .await?;
    Ok(())
}

/// Locks `name`'s checkpoint row for the rest of the caller's transaction and returns it, so
/// an apply-and-advance runs once even when two workers race for the same event. One
/// statement once the row exists; the first time, the row is created (by this worker or the
/// one it raced) and then locked.
pub async fn lock(conn: &mut sqlx::PgConnection, name: &str) -> Result<i64, sqlx::Error> {
    const LOCK: &str = "SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE";
    let existing: Option<i64> = sqlx::query_scalar(LOCK)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(position) = existing {
        return Ok(position);
    }
    sqlx::query("INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(LOCK)
        .bind(name)
        .fetch_one(&mut *conn)
        .await
}

/// Overwrites `name`'s checkpoint, also backwards (used to rewind a reader deliberately).
pub async fn reset<'e>(
    executor: impl PgExecutor<'e>,
    name: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .execute(executor)
    .await?;
    Ok(())
}

/// How far a reader of the store (the relay, a projection) is behind it.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Lag {
    /// The reader's checkpoint (0 when it has none yet).
    pub position: i64,
    /// Events stored beyond the checkpoint, counted up to the `cap` given to [`lag`].
    pub events: i64,
    /// Age of the oldest event beyond the checkpoint (by its `recorded_at`); 0 when none.
    pub seconds: f64,
}

/// `name`'s checkpoint against the events table. Counting stops at `cap` events, so a reader
/// far behind costs a bounded index scan; the age needs only the first event past it.
pub async fn lag<'e>(
    executor: impl PgExecutor<'e>,
    name: &str,
    cap: i64,
) -> Result<Lag, sqlx::Error> {
    sqlx::query_as(
        "WITH c AS (SELECT coalesce((SELECT position FROM checkpoints WHERE name = $1), 0) \
                           AS position) \
         SELECT c.position, \
                (SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.position > c.position \
                                       ORDER BY e.position LIMIT $2) AS t) AS events, \
                coalesce((SELECT greatest(extract(epoch FROM now() - e.recorded_at), 0)::float8 \
                          FROM events e WHERE e.position > c.position \
                          ORDER BY e.position LIMIT 1), 0) AS seconds \
         FROM c",
    )
    .bind(name)
    .bind(cap)
    .fetch_one(executor)
    .await
}
