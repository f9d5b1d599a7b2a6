//! `PgStore` after the server closed every one of its connections (what a PostgreSQL restart
//! or failover does to a client): the pool replaces them, and the same store works again.

mod support;

use std::time::Duration;

use maas_saga::store::{Lease, NewSaga, PgStore};
use maas_saga::{Saga, SagaId, SagaStore, Status, Step, Transaction};
use support::pg::{Schema, connect};

fn new_saga(id: &str) -> NewSaga {
    let t: Transaction = Saga::builder("s")
        .step(Step::new("a", "p"))
        .build()
        .unwrap()
        .into();
    NewSaga {
        id: SagaId::from(id),
        transaction: t,
        deadline_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_its_connections_are_killed() {
    let schema = Schema::create("reconnect").await;
    let app = format!("maas_reconnect_{}", std::process::id());
    let store = PgStore::connect(&format!("{} application_name={app}", schema.url))
        .await
        .unwrap();
    let lease = Lease {
        owner: "e".into(),
        incarnation: "e1".into(),
        duration: Duration::from_secs(30),
    };
    assert!(store.create(new_saga("before"), &lease).await.unwrap());
    assert!(store.get(&"before".into()).await.unwrap().is_some());

    let admin = connect(&support::pg::base_url()).await;
    let backends = |sql: &'static str| {
        let admin = &admin;
        let app = app.clone();
        async move {
            admin
                .query_one(sql, &[&app])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1";
    assert!(backends(count).await > 0, "the store holds no connection");
    let killed = backends(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = $1",
    )
    .await;
    assert!(killed > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while backends(count).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "backends survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A call may meet a dead connection once; within a few seconds every kind of call works
    // on new ones, and keeps working.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut failures = 0;
    loop {
        match store.create(new_saga("after"), &lease).await {
            Ok(created) => {
                assert!(created);
                break;
            }
            Err(e) => {
                failures += 1;
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for i in 0..20 {
        let id = SagaId::from(format!("later-{i}"));
        let mut saga = new_saga("x");
        saga.id = id.clone();
        assert!(store.create(saga, &lease).await.unwrap());
        assert!(
            store
                .finish(&id, &lease, Status::Committed, vec![])
                .await
                .unwrap()
        );
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().status,
            Status::Committed
        );
    }
    assert!(store.claim(&lease, 10).await.is_ok());
    assert!(backends(count).await > 0, "no new connection was opened");
    println!("calls failed while reconnecting: {failures}");
    drop(store);
    schema.drop_it().await;
}
