//! Every Postgres advisory lock the store takes: one function per class of lock giving its
//! key, the statements that take them, and [`holder`], who holds one.
//!
//! The keys are part of the protocol between replicas, and between releases during a rolling
//! upgrade: a release that computed a class's keys differently would not see the locks of the
//! release before it, so the two would lead the same role, rebuild the same projection or
//! record the same stream at once. Change no key; add a class with keys of its own instead.
//!
//! Two key spaces, which never meet: one-key (bigint) session locks, held on a connection of
//! their own for as long as it lives ([`leader`], [`rebuild`]); and two-key (int, int)
//! transaction locks of the inbox, released with the transaction ([`INBOX`],
//! [`inbox_stream`]).

use sqlx::{PgConnection, PgExecutor};

/// Leadership of `role` (the relay's checkpoint name, or `projection:<name>` for a
/// projector): a session lock on the leader's own connection, so that one replica at a time
/// runs the role ([`crate::leader`]). Its value is the 64-bit FNV-1a hash of `role`.
/// Changing it breaks rolling upgrades: old and new releases would lead at once.
pub fn leader(role: &str) -> i64 {
    fnv1a_64(role)
}

/// One rebuild of `projection` at a time, across processes ([`crate::replay`]): a session
/// lock on the rebuild's own connection, apart from the projector's [`leader`] key (the
/// 64-bit FNV-1a hash of `rebuild:<projection>`). Changing it breaks rolling upgrades: old
/// and new releases would rebuild the same projection at once.
pub fn rebuild(projection: &str) -> i64 {
    fnv1a_64(&format!("rebuild:{projection}"))
}

/// First key of the inbox's per-stream transaction locks.
const INBOX_STREAM_CLASS: i32 = 0x696e_626f; // "inbo"
/// First key of the inbox lock.
const INBOX_CLASS: i32 = 0x696e_6278; // "inbx"

/// The inbox lock (two-key space). Every transaction that records foreign events takes it
/// shared before it draws an inbox `seq` and keeps it to its end; a rebuild of a projection
/// of foreign events takes it exclusive ([`lock_inbox_exclusive`]). Holding it exclusive
/// therefore means no recording transaction is in flight (see
/// docs/adr/0002-online-rebuild.md). Changing it breaks rolling upgrades: an old release's
/// consumers would record while a new release's rebuild swaps.
pub const INBOX: (i32, i32) = (INBOX_CLASS, 0);

/// The inbox's lock of one foreign stream (two-key space, apart from [`INBOX`]): consumers
/// (replicas) recording the same stream serialise on it, so the version checks and inserts
/// of one cannot interleave with another's. The second key is the 32-bit FNV-1a hash of the
/// stream id. Changing it breaks rolling upgrades: an old and a new release would record the
/// same stream at once (still without a doubled effect: the inbox's unique constraints make
/// the loser retry, and find a duplicate).
pub fn inbox_stream(stream: &str) -> (i32, i32) {
    (INBOX_STREAM_CLASS, fnv1a_32(stream))
}

/// The statement that takes a recording transaction's locks, in one round trip and as a
/// simple query (only integers, no parameters): [`INBOX`] shared, then each stream's
/// [`inbox_stream`] lock. Stream locks are taken in ascending order, the same in every
/// transaction, so two batches sharing streams wait for each other instead of deadlocking
/// (equal keys, hash collisions included, are taken once).
pub(crate) fn inbox_recording_sql(streams: &[&str]) -> String {
    let mut keys: Vec<(i32, i32)> = streams.iter().map(|s| inbox_stream(s)).collect();
    keys.sort_unstable();
    keys.dedup();
    let (class, key) = INBOX;
    let mut sql = format!("SELECT pg_advisory_xact_lock_shared({class}, {key});");
    if !keys.is_empty() {
        let locks: Vec<String> = keys
            .iter()
            .map(|(class, key)| format!("pg_advisory_xact_lock({class}, {key})"))
            .collect();
        sql.push_str(&format!(" SELECT {};", locks.join(", ")));
    }
    sql
}

/// Takes [`INBOX`] exclusive until the caller's transaction ends: waits until no transaction
/// is recording a foreign event, and keeps new ones out. Keep that transaction short:
/// consumers wait meanwhile.
pub(crate) async fn lock_inbox_exclusive(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(INBOX.0)
        .bind(INBOX.1)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the one-key session lock `key` on `conn` if no session holds it.
pub(crate) async fn try_lock(conn: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}

/// Releases the one-key session lock `key` held by `conn`; a failure only means the lock
/// lasts until the connection closes.
pub(crate) async fn unlock(conn: &mut PgConnection, key: i64) {
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(conn)
        .await;
}

/// The `application_name` of the session holding the one-key session lock `key` (such as
/// [`leader`] or [`rebuild`]) in this database, if one holds it (empty when that session set
/// no name, or when this role may not see it).
pub async fn holder<'e>(
    executor: impl PgExecutor<'e>,
    key: i64,
) -> Result<Option<String>, sqlx::Error> {
    // A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
    sqlx::query_scalar(
        "SELECT coalesce(a.application_name, '') FROM pg_locks l \
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
    )
    .bind(key)
    .fetch_optional(executor)
    .await
}

/// 64-bit FNV-1a: stable in every process and release, unlike `std`'s hashers.
fn fnv1a_64(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// 32-bit FNV-1a, for the second key of a two-key lock.
fn fnv1a_32(text: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        // Changing the hash would let an old and a new release lead at once during a rollout.
        assert_eq!(
            leader(""),
            i64::from_ne_bytes(0xcbf2_9ce4_8422_2325u64.to_ne_bytes())
        );
        assert_ne!(leader("relay"), leader("projection:orders"));
    }

    #[test]
    fn every_class_keeps_the_keys_of_earlier_releases() {
        assert_eq!(leader("relay"), -1_758_231_297_841_917_726);
        assert_eq!(leader("projection:orders"), -5_318_376_242_544_891_249);
        assert_eq!(rebuild("orders"), -3_702_429_814_414_007_809);
        assert_eq!(inbox_stream(""), (0x696e_626f, -2_128_831_035));
        assert_eq!(inbox_stream("order-1"), (0x696e_626f, 729_795_949));
        assert_eq!(INBOX, (0x696e_6278, 0));
    }
}
