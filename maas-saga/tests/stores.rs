//! The store contract, checked on all three stores — the in-memory one, SQLite on a real
//! file and PostgreSQL on the test database — plus what only PostgreSQL promises: claims
//! through a partial index, and concurrent claimers that never take the same transaction.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use maas_saga::store::{AdminRequest, Lease, NewSaga, PgStore, SqliteStore};
use maas_saga::{MemoryStore, Saga, SagaId, SagaStore, Status, Step, Transaction};
use support::pg::{Schema, connect};

fn lease(owner: &str, incarnation: &str, ms: u64) -> Lease {
    Lease {
        owner: owner.into(),
        incarnation: incarnation.into(),
        duration: Duration::from_millis(ms),
    }
}

fn new_saga(id: &str) -> NewSaga {
    let t: Transaction = Saga::builder("s")
        .step(Step::new("a", "p").payload(serde_json::json!({"n": 1})))
        .step(Step::new("b", "p"))
        .build()
        .unwrap()
        .into();
    NewSaga {
        id: SagaId::from(id),
        transaction: t,
        deadline_after: Some(Duration::from_secs(60)),
    }
}

async fn contract(store: Arc<dyn SagaStore>) {
    let a = lease("a", "a1", 300);
    let a_next = lease("a", "a2", 300);
    let b = lease("b", "b1", 300);

    // Intent: created once; the definition round-trips.
    assert!(store.create(new_saga("s1"), &a).await.unwrap());
    assert!(
        !store.create(new_saga("s1"), &b).await.unwrap(),
        "same id twice"
    );
    let r = store.get(&"s1".into()).await.unwrap().unwrap();
    assert_eq!(r.status, Status::Running);
    assert_eq!(r.owner.as_deref(), Some("a"));
    assert_eq!(r.transaction, new_saga("s1").transaction);
    assert!(r.deadline.unwrap() > r.created_at);

    // Decisions are fenced by the lease, and idempotent.
    assert!(
        !store
            .record_decision(&"s1".into(), &b, Status::Compensating, vec![])
            .await
            .unwrap()
    );
    assert!(
        store
            .record_decision(&"s1".into(), &a, Status::Compensating, vec![])
            .await
            .unwrap()
    );
    assert!(
        store
            .record_decision(&"s1".into(), &a, Status::Compensating, vec![])
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_decision(&"s1".into(), &a, Status::Committing, vec![])
            .await
            .unwrap()
    );

    // Renewal, and operator requests: retry is read once, abort stays.
    assert!(
        store
            .request(&"s1".into(), AdminRequest::Retry)
            .await
            .unwrap()
    );
    let renewed = store
        .renew(&a, &["s1".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].request, Some(AdminRequest::Retry));
    assert_eq!(
        store.renew(&a, &["s1".into()]).await.unwrap()[0].request,
        None
    );
    assert!(
        store
            .request(&"s1".into(), AdminRequest::Abort)
            .await
            .unwrap()
    );
    assert!(
        store
            .request(&"s1".into(), AdminRequest::Retry)
            .await
            .unwrap()
    );
    assert_eq!(
        store.renew(&a, &["s1".into()]).await.unwrap()[0].request,
        Some(AdminRequest::Abort)
    );
    assert!(
        store.renew(&b, &["s1".into()]).await.unwrap().is_empty(),
        "b holds nothing"
    );

    // Another owner cannot claim before the lease expires; the same owner's next
    // incarnation can, at once.
    assert!(store.claim(&b, 10).await.unwrap().is_empty());
    let claimed = store.claim(&a_next, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].status, Status::Compensating);
    assert_eq!(claimed[0].request, Some(AdminRequest::Abort));
    // The earlier incarnation is fenced out.
    assert!(
        !store
            .finish(&"s1".into(), &a, Status::Compensated, vec![])
            .await
            .unwrap()
    );

    // After expiry, anyone can claim.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let claimed = store.claim(&b, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["s1"]
    );
    assert!(
        store.claim(&a_next, 10).await.unwrap().is_empty(),
        "b holds it now"
    );

    // Finishing releases it for good.
    let progress = vec![maas_saga::store::BranchProgress {
        name: "a".into(),
        state: maas_saga::store::BranchStatus::Compensated,
        attempts: 2,
    }];
    assert!(
        store
            .finish(&"s1".into(), &b, Status::Compensated, progress.clone())
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(&"s1".into(), &b, Status::Committed, vec![])
            .await
            .unwrap(),
        "finished once"
    );
    let r = store.get(&"s1".into()).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.owner, r.progress),
        (Status::Compensated, None, progress)
    );
    assert!(
        !store
            .request(&"s1".into(), AdminRequest::Abort)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.claim(&b, 10).await.unwrap().is_empty(),
        "finished ones are never claimed"
    );

    // Listing by status, newest first.
    assert!(store.create(new_saga("s2"), &a_next).await.unwrap());
    assert!(store.create(new_saga("s3"), &a_next).await.unwrap());
    let running: Vec<String> = store
        .list(Status::Running, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(running.len(), 2);
    assert!(
        store
            .finish(&"s2".into(), &a_next, Status::Committed, vec![])
            .await
            .unwrap()
    );
    assert_eq!(
        store.list(Status::Committed, 10).await.unwrap()[0]
            .id
            .as_str(),
        "s2"
    );

    // Garbage collection removes only finished transactions older than the retention.
    assert_eq!(store.gc(Duration::from_secs(3600)).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.gc(Duration::from_millis(10)).await.unwrap(), 2);
    assert!(store.get(&"s1".into()).await.unwrap().is_none());
    assert!(
        store.get(&"s3".into()).await.unwrap().is_some(),
        "unfinished ones stay"
    );
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = std::env::temp_dir().join(format!("maas-saga-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sagas.db");
    let _ = std::fs::remove_file(&path);
    contract(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
    // Reopening migrates nothing twice and keeps the data.
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.get(&"s3".into()).await.unwrap().is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let schema = Schema::create("store").await;
    contract(Arc::new(PgStore::connect(&schema.url).await.unwrap())).await;
    // Connecting again finds the schema migrated.
    PgStore::connect(&schema.url).await.unwrap();
    schema.drop_it().await;
}

#[tokio::test]
async fn postgres_claims_use_the_partial_index_and_never_overlap() {
    let schema = Schema::create("claims").await;
    let one = Arc::new(PgStore::connect(&schema.url).await.unwrap());
    let two = Arc::new(PgStore::connect(&schema.url).await.unwrap());
    let dead = lease("dead", "d1", 1);
    for i in 0..300 {
        assert!(one.create(new_saga(&format!("c{i}")), &dead).await.unwrap());
    }
    // Finished rows must not be scanned to find unfinished ones.
    let client = connect(&schema.url).await;
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT id FROM maas_saga WHERE status IN ('running', 'compensating', 'committing')
               AND (lease_until < now() OR (owner = 'x' AND incarnation <> 'y')) ORDER BY lease_until LIMIT 10",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("maas_saga_unfinished")),
        "plan: {plan:#?}"
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    let (x, y) = (lease("x", "x1", 60_000), lease("y", "y1", 60_000));
    let mut tasks = Vec::new();
    for (store, lease) in [(one.clone(), x), (two.clone(), y)] {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&lease, 7).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
        }));
    }
    let a: Vec<SagaId> = tasks.remove(0).await.unwrap();
    let b: Vec<SagaId> = tasks.remove(0).await.unwrap();
    let sa: HashSet<_> = a.iter().collect();
    let sb: HashSet<_> = b.iter().collect();
    assert!(
        sa.is_disjoint(&sb),
        "both claimers took {:?}",
        sa.intersection(&sb).collect::<Vec<_>>()
    );
    assert_eq!(
        sa.len() + sb.len(),
        300,
        "claimed {} + {}",
        sa.len(),
        sb.len()
    );
    assert_eq!(
        a.len() + b.len(),
        300,
        "a transaction was claimed twice by one claimer"
    );
    schema.drop_it().await;
}
