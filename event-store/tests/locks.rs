//! Who holds a session advisory lock, as the admin status and the tests ask it: a rebuild
//! lock taken by another session (the `replay` CLI) shows as a running rebuild.

use event_store::testing::TestDb;
use event_store::{locks, replay};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_rebuild_lock_held_by_another_session_shows_as_a_running_rebuild_of_that_projection() {
    let db = TestDb::new().await;
    let options = db.pool.connect_options().as_ref().clone();
    let mut other = PgConnection::connect_with(&options.application_name("replay cli"))
        .await
        .unwrap();
    assert!(!replay::rebuild_running(&db.pool, "orders").await.unwrap());

    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(locks::rebuild("orders"))
        .execute(&mut other)
        .await
        .unwrap();

    assert!(replay::rebuild_running(&db.pool, "orders").await.unwrap());
    assert!(!replay::rebuild_running(&db.pool, "catalog").await.unwrap());
    assert_eq!(
        locks::holder(&db.pool, locks::rebuild("orders"))
            .await
            .unwrap()
            .as_deref(),
        Some("replay cli")
    );
    assert_eq!(
        locks::holder(&db.pool, locks::leader("orders"))
            .await
            .unwrap(),
        None
    );
    other.close().await.unwrap();
}
