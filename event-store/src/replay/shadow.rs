//! The shadow tables a rebuild writes, in schema `rebuild`, and the swap that makes them live.
//!
//! `CREATE TABLE rebuild.t (LIKE live.t INCLUDING ALL)` copies columns, defaults, CHECK and
//! NOT NULL constraints and indexes (so the projection's `ON CONFLICT` clauses work), but not
//! foreign keys, triggers or grants: projection tables must not rely on those.

use sqlx::{PgConnection, PgPool, Row};

/// Where shadow tables are built. Pages set `search_path = rebuild, <live>` so a projection's
/// SQL with unqualified table names writes its shadow tables unchanged.
pub(crate) const SCHEMA: &str = "rebuild";

/// Quotes an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The schema the live tables are in: the one unqualified names (and the migrations) use.
pub(crate) async fn live_schema(pool: &PgPool) -> Result<String, sqlx::Error> {
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await?;
    schema.ok_or_else(|| sqlx::Error::Protocol("no schema is on the search_path".to_owned()))
}

/// Makes the caller's transaction resolve unqualified table names to the shadow tables first.
pub(crate) async fn write_to_shadow(
    tx: &mut PgConnection,
    live_schema: &str,
) -> Result<(), sqlx::Error> {
    let path = format!("{}, {}", ident(SCHEMA), ident(live_schema));
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(path)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Makes the caller's transaction resolve unqualified table names to the live tables again.
pub(crate) async fn write_to_live(
    tx: &mut PgConnection,
    live_schema: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(ident(live_schema))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Creates empty shadow tables shaped like the live ones, dropping leftovers of a rebuild
/// that died. Only the holder of the projection's rebuild lock calls this.
///
/// The shadow keeps only its unique indexes while it is filled (a projection's `ON CONFLICT`
/// needs them); maintaining the others row by row costs more than building them once at the
/// end ([`create_deferred_indexes`]).
pub(crate) async fn prepare(
    pool: &PgPool,
    live_schema: &str,
    tables: &[String],
) -> Result<(), sqlx::Error> {
    create_schema(pool).await?;
    let mut tx = pool.begin().await?;
    for table in tables {
        let shadow = format!("{}.{}", ident(SCHEMA), ident(table));
        let live = format!("{}.{}", ident(live_schema), ident(table));
        sqlx::query(&format!("DROP TABLE IF EXISTS {shadow}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
        let deferred: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = format('%I.%I', $1::text, $2::text)::regclass \
               AND NOT i.indisunique",
        )
        .bind(SCHEMA)
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for index in deferred {
            sqlx::query(&format!("DROP INDEX {}.{}", ident(SCHEMA), ident(&index)))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}

/// Builds the live tables' non-unique indexes on the shadow tables, under the live names (the
/// schemas differ, so they do not clash; after the swap they are the live names). CONCURRENTLY,
/// because a plain CREATE INDEX holds a transaction id while it sorts, which would hold back
/// the store's readers server-wide (docs/adr/0001-no-skip-positions.md); the concurrent build
/// writes only index pages in its long phases and takes an id only for its short catalogue
/// updates.
pub(crate) async fn create_deferred_indexes(
    pool: &PgPool,
    live_schema: &str,
    tables: &[String],
) -> Result<(), sqlx::Error> {
    for table in tables {
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname, substring(pg_get_indexdef(i.indexrelid) from ' USING .*$') \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = format('%I.%I', $1::text, $2::text)::regclass \
               AND NOT i.indisunique \
             ORDER BY c.relname",
        )
        .bind(live_schema)
        .bind(table)
        .fetch_all(pool)
        .await?;
        for (name, definition) in indexes {
            sqlx::query(&format!(
                "CREATE INDEX CONCURRENTLY {} ON {}.{}{definition}",
                ident(&name),
                ident(SCHEMA),
                ident(table)
            ))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

async fn create_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(SCHEMA)))
        .execute(pool)
        .await;
    match created {
        Ok(_) => Ok(()),
        // Two rebuilds (of different projections) racing to create it: it exists now.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("23505" | "42P06")) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Drops the shadow tables (after a failed or cancelled rebuild).
pub(crate) async fn discard(pool: &PgPool, tables: &[String]) -> Result<(), sqlx::Error> {
    for table in tables {
        sqlx::query(&format!(
            "DROP TABLE IF EXISTS {}.{}",
            ident(SCHEMA),
            ident(table)
        ))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Refreshes the planner's statistics of the shadow tables, so the first queries after the
/// swap are planned as well as they were on the old tables. Short: ANALYZE samples.
pub(crate) async fn analyze(pool: &PgPool, tables: &[String]) -> Result<(), sqlx::Error> {
    for table in tables {
        sqlx::query(&format!("ANALYZE {}.{}", ident(SCHEMA), ident(table)))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Inside the caller's (swap) transaction: drops the live tables, moves the shadow tables into
/// their place and gives their indexes (and so the constraints they back) the live names.
/// Renames and drops are catalogue changes, so the swap costs the same for any table size.
pub(crate) async fn swap(
    tx: &mut PgConnection,
    live_schema: &str,
    tables: &[String],
) -> Result<(), sqlx::Error> {
    for table in tables {
        let names = index_names(tx, live_schema, table).await?;
        let live = format!("{}.{}", ident(live_schema), ident(table));
        sqlx::query(&format!("DROP TABLE {live}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "ALTER TABLE {}.{} SET SCHEMA {}",
            ident(SCHEMA),
            ident(table),
            ident(live_schema)
        ))
        .execute(&mut *tx)
        .await?;
        // Indexes built by `create_deferred_indexes` already have their live names. Two
        // passes for the others, so that no rename collides with a name the next one frees.
        let names: Vec<_> = names.into_iter().filter(|(s, l)| s != l).collect();
        for (i, (shadow, _)) in names.iter().enumerate() {
            rename_index(tx, live_schema, shadow, &format!("rebuild_swap_{i}")).await?;
        }
        for (i, (_, live)) in names.iter().enumerate() {
            rename_index(tx, live_schema, &format!("rebuild_swap_{i}"), live).await?;
        }
    }
    Ok(())
}

async fn rename_index(
    tx: &mut PgConnection,
    schema: &str,
    from: &str,
    to: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "ALTER INDEX {}.{} RENAME TO {}",
        ident(schema),
        ident(from),
        ident(to)
    ))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Pairs each shadow index with the live index of the same definition: (shadow, live) names.
/// `LIKE .. INCLUDING INDEXES` names copied indexes after their columns, not as the
/// migration did, and later migrations refer to the migration's names.
async fn index_names(
    tx: &mut PgConnection,
    live_schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = "SELECT c.relname AS name, i.indisunique, i.indisprimary, \
                      substring(pg_get_indexdef(i.indexrelid) from ' USING .*$') AS definition \
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
               WHERE i.indrelid = format('%I.%I', $1::text, $2::text)::regclass \
               ORDER BY c.relname";
    let key = |row: &sqlx::postgres::PgRow| -> Result<(String, (bool, bool, String)), sqlx::Error> {
        Ok((
            row.try_get("name")?,
            (
                row.try_get("indisunique")?,
                row.try_get("indisprimary")?,
                row.try_get::<Option<String>, _>("definition")?
                    .unwrap_or_default(),
            ),
        ))
    };
    let live: Vec<_> = sqlx::query(sql)
        .bind(live_schema)
        .bind(table)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(key)
        .collect::<Result<_, _>>()?;
    let mut shadow: Vec<_> = sqlx::query(sql)
        .bind(SCHEMA)
        .bind(table)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(key)
        .collect::<Result<_, _>>()?;
    let mut pairs = Vec::new();
    for (live_name, live_key) in live {
        if let Some(i) = shadow.iter().position(|(_, k)| *k == live_key) {
            let (shadow_name, _) = shadow.swap_remove(i);
            pairs.push((shadow_name, live_name));
        }
    }
    Ok(pairs)
}

/// Rows now in the live tables.
pub(crate) async fn count_rows(
    pool: &PgPool,
    live_schema: &str,
    tables: &[String],
) -> Result<u64, sqlx::Error> {
    let mut rows = 0;
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.{}",
            ident(live_schema),
            ident(table)
        ))
        .fetch_one(pool)
        .await?;
        rows += u64::try_from(n).unwrap_or(0);
    }
    Ok(rows)
}
