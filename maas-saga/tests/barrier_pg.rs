//! The barrier on PostgreSQL: every row of its table, and an action racing its
//! compensation from two connections, which must always end consistently.

mod support;

use std::time::Duration;

use maas_saga::Operation;
use maas_saga::barrier::{Barrier, BranchKey, postgres};
use support::pg::{Schema, connect};

fn key(saga: &str, op: Operation) -> BranchKey {
    BranchKey {
        saga_id: saga.into(),
        branch: "quota".into(),
        op,
    }
}

async fn once(client: &mut tokio_postgres::Client, saga: &str, op: Operation) -> Barrier {
    let tx = client.transaction().await.unwrap();
    let b = postgres::enter(&tx, &key(saga, op)).await.unwrap();
    tx.commit().await.unwrap();
    b
}

#[tokio::test]
async fn every_row_of_the_table() {
    let schema = Schema::create("barrier").await;
    let mut c = connect(&schema.url).await;
    postgres::migrate(&c).await.unwrap();
    postgres::migrate(&c).await.unwrap();
    assert_eq!(
        once(&mut c, "s1", Operation::Action).await,
        Barrier::Proceed
    );
    assert_eq!(
        once(&mut c, "s1", Operation::Action).await,
        Barrier::Duplicate
    );
    assert_eq!(
        once(&mut c, "s1", Operation::Compensate).await,
        Barrier::Proceed
    );
    assert_eq!(
        once(&mut c, "s1", Operation::Compensate).await,
        Barrier::Duplicate
    );
    assert_eq!(
        once(&mut c, "s2", Operation::Cancel).await,
        Barrier::NullCompensation
    );
    assert_eq!(once(&mut c, "s2", Operation::Try).await, Barrier::Refused);
    assert_eq!(
        Barrier::Refused.reply(),
        maas_saga::Reply::Rejected("refused: already compensated or cancelled".into())
    );
    assert_eq!(
        once(&mut c, "s3", Operation::Confirm).await,
        Barrier::Proceed
    );
    assert_eq!(
        once(&mut c, "s3", Operation::Confirm).await,
        Barrier::Duplicate
    );

    // A rolled-back attempt leaves no trace.
    let tx = c.transaction().await.unwrap();
    assert_eq!(
        postgres::enter(&tx, &key("s4", Operation::Action))
            .await
            .unwrap(),
        Barrier::Proceed
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        once(&mut c, "s4", Operation::Action).await,
        Barrier::Proceed
    );

    tokio::time::sleep(Duration::from_millis(20)).await;
    // An endless retention keeps every row (before: it wrapped and deleted them all).
    assert_eq!(postgres::cleanup(&c, Duration::MAX).await.unwrap(), 0);
    // s1: action + compensate, s2: blocked try + cancel, s3: confirm, s4: action.
    assert_eq!(
        postgres::cleanup(&c, Duration::from_millis(5))
            .await
            .unwrap(),
        6
    );
    schema.drop_it().await;
}

#[tokio::test]
async fn an_action_racing_its_compensation_ends_consistently() {
    let schema = Schema::create("barrier_race").await;
    let setup = connect(&schema.url).await;
    postgres::migrate(&setup).await.unwrap();
    let mut a = connect(&schema.url).await;
    let mut b = connect(&schema.url).await;
    let mut outcomes = std::collections::HashMap::new();
    for i in 0..200 {
        let saga = format!("race-{i}");
        let (s1, s2) = (saga.clone(), saga.clone());
        let action = async {
            let tx = a.transaction().await.unwrap();
            let r = postgres::enter(&tx, &key(&s1, Operation::Action))
                .await
                .unwrap();
            tokio::task::yield_now().await;
            tx.commit().await.unwrap();
            r
        };
        let compensate = async {
            let tx = b.transaction().await.unwrap();
            let r = postgres::enter(&tx, &key(&s2, Operation::Compensate))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            r
        };
        let pair = tokio::join!(action, compensate);
        // Either the action applied and is then undone, or it never applies.
        assert!(
            matches!(
                pair,
                (Barrier::Proceed, Barrier::Proceed)
                    | (Barrier::Refused, Barrier::NullCompensation)
            ),
            "inconsistent: {pair:?}"
        );
        *outcomes.entry(format!("{pair:?}")).or_insert(0) += 1;
    }
    assert_eq!(outcomes.values().sum::<i32>(), 200);
    schema.drop_it().await;
}

#[tokio::test]
async fn a_scheduled_cleanup_deletes_old_rows_and_stops_when_dropped() {
    let schema = Schema::create("barrier_gc").await;
    let mut c = connect(&schema.url).await;
    let counter = connect(&schema.url).await;
    postgres::migrate(&c).await.unwrap();
    for saga in ["g1", "g2", "g3"] {
        assert_eq!(
            once(&mut c, saga, Operation::Action).await,
            Barrier::Proceed
        );
    }
    let rows = || async {
        counter
            .query_one("SELECT count(*) FROM maas_saga_barrier", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let config: tokio_postgres::Config = schema.url.parse().unwrap();
    let manager = maas_saga::deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = maas_saga::deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .unwrap();
    let cleanup =
        postgres::spawn_cleanup(pool, Duration::from_millis(50), Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rows().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduled cleanup never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cleanup.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Stopped: a new row outlives several periods and its retention.
    assert_eq!(
        once(&mut c, "g4", Operation::Action).await,
        Barrier::Proceed
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rows().await, 1);
    schema.drop_it().await;
}
