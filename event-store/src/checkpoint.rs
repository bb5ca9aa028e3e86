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
/// an apply-and-advance runs once even when two workers race for the same event.
pub async fn lock(conn: &mut sqlx::PgConnection, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE")
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
