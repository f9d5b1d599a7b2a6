//! Proves the PostgreSQL the saga store's tests use is real: a transaction commits rows that
//! a second connection reads back, and a rolled-back transaction leaves nothing behind.

use std::time::Duration;

use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

/// Connection string of the test database (override: `MAAS_TEST_POSTGRES`).
fn postgres_url() -> String {
    std::env::var("MAAS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned())
}

/// Connects, or fails the test saying how to start PostgreSQL.
async fn connect() -> Client {
    let url = postgres_url();
    let how = "start it with `scripts/dev-services` (PostgreSQL on 127.0.0.1:5432, trust auth, \
               database test), or point MAAS_TEST_POSTGRES at a running server";
    let (client, connection) =
        match timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => panic!("PostgreSQL is not reachable with `{url}`: {e}; {how}"),
            Err(_) => panic!("PostgreSQL did not answer within 5 s at `{url}`; {how}"),
        };
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn postgres_commits_and_rolls_back_for_real() {
    let mut writer = connect().await;
    let reader = connect().await;
    let table = format!("maas_smoke_{}", std::process::id());
    writer
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id BIGINT PRIMARY KEY, model TEXT NOT NULL, quota BIGINT NOT NULL)"
        ))
        .await
        .expect("create table");

    let tx = writer.transaction().await.expect("begin");
    for id in 1..=3_i64 {
        tx.execute(
            &format!("INSERT INTO {table} (id, model, quota) VALUES ($1, $2, $3)"),
            &[&id, &format!("model-{id}"), &(id * 100)],
        )
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");

    let tx = writer.transaction().await.expect("begin");
    tx.execute(&format!("UPDATE {table} SET quota = quota - 1000"), &[])
        .await
        .expect("update");
    tx.rollback().await.expect("rollback");

    let rows = reader
        .query(
            &format!("SELECT id, model, quota FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .expect("select from a second connection");
    let got: Vec<(i64, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "model-1".to_owned(), 100),
            (2, "model-2".to_owned(), 200),
            (3, "model-3".to_owned(), 300),
        ]
    );
    writer
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop table");
}
