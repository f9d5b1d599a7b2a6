//! A throwaway PostgreSQL schema per test, so tests never see each other's tables.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

/// Connection string of the test database (override: `MAAS_TEST_POSTGRES`).
pub fn base_url() -> String {
    std::env::var("MAAS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned())
}

/// Connects, or fails the test saying how to start PostgreSQL.
pub async fn connect(url: &str) -> Client {
    let how = "start it with `scripts/dev-services` (PostgreSQL on 127.0.0.1:5432, trust auth, \
               database test), or point MAAS_TEST_POSTGRES at a running server";
    let (client, connection) =
        match timeout(Duration::from_secs(5), tokio_postgres::connect(url, NoTls)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => panic!("PostgreSQL is not reachable with `{url}`: {e}; {how}"),
            Err(_) => panic!("PostgreSQL did not answer within 5 s at `{url}`; {how}"),
        };
    tokio::spawn(connection);
    client
}

/// A fresh schema; its connection string puts it first on the search path.
pub struct Schema {
    pub name: String,
    pub url: String,
}

impl Schema {
    pub async fn create(tag: &str) -> Schema {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("maas_{tag}_{}_{nanos}", std::process::id());
        connect(&base_url())
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create test schema");
        Schema {
            url: format!("{} options='-csearch_path={name}'", base_url()),
            name,
        }
    }

    pub async fn drop_it(self) {
        connect(&base_url())
            .await
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .expect("drop test schema");
    }
}
