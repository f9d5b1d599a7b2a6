//! The engine on the in-memory store: commit, compensation, retries, deadlines, TCC,
//! operator requests, queries and recovery.

mod support;

use std::time::Duration;

use maas_saga::store::BranchStatus;
use maas_saga::{
    Engine, EngineError, MemoryStore, Operation, RetryPolicy, Saga, SagaId, Status, Step, Tcc,
};
use support::{Act, Scripted};

fn quick() -> RetryPolicy {
    RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn step(name: &str) -> Step {
    Step::new(name, "p")
        .retry(quick())
        .timeout(Duration::from_millis(200))
}

async fn engine(store: &MemoryStore, p: &Scripted) -> Engine {
    Engine::builder(store.clone())
        .participant("p", p.participant())
        .owner("test-engine")
        .start()
        .await
        .unwrap()
}

fn saga(steps: &[&str]) -> Saga {
    steps
        .iter()
        .fold(Saga::builder("s"), |b, s| b.step(step(s)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn commits_running_actions_in_order() {
    let p = Scripted::new();
    let e = engine(&MemoryStore::new(), &p).await;
    let out = e.run(saga(&["a", "b", "c"])).await.unwrap();
    assert_eq!(out.status, Status::Committed);
    assert_eq!(
        p.applied(),
        vec![
            ("a".into(), Operation::Action),
            ("b".into(), Operation::Action),
            ("c".into(), Operation::Action)
        ]
    );
    assert!(
        out.branches
            .iter()
            .all(|b| b.state == BranchStatus::Done && b.attempts == 1)
    );
}

#[tokio::test]
async fn a_rejection_compensates_everything_in_reverse() {
    let p = Scripted::new();
    p.plan("c", Operation::Action, &[Act::Reject]);
    let e = engine(&MemoryStore::new(), &p).await;
    let out = e.run(saga(&["a", "b", "c"])).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    let undo: Vec<_> = p
        .log()
        .into_iter()
        .filter(|(_, o, _)| *o == Operation::Compensate)
        .map(|(b, _, _)| b)
        .collect();
    // c's compensation too: its rejection proves one attempt failed, not that none applied.
    assert_eq!(undo, ["c", "b", "a"]);
    let states: Vec<&str> = out.branches.iter().map(|b| b.state.as_str()).collect();
    assert_eq!(states, ["compensated", "compensated", "compensated"]);
}

#[tokio::test]
async fn unknown_outcomes_are_retried() {
    let p = Scripted::new();
    p.plan("a", Operation::Action, &[Act::Err, Act::LoseAnswer]);
    let e = engine(&MemoryStore::new(), &p).await;
    let out = e.run(saga(&["a"])).await.unwrap();
    assert_eq!(out.status, Status::Committed);
    assert_eq!(out.branches[0].attempts, 3);
}

#[tokio::test]
async fn exhausted_unknown_outcomes_compensate_the_step_itself() {
    let p = Scripted::new();
    p.plan(
        "b",
        Operation::Action,
        &[Act::LoseAnswer, Act::Err, Act::Hang],
    );
    let e = engine(&MemoryStore::new(), &p).await;
    let out = e.run(saga(&["a", "b"])).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    // b may have applied (it did, once): it is compensated, then a.
    let undo: Vec<_> = p
        .applied()
        .into_iter()
        .filter(|(_, o)| *o == Operation::Compensate)
        .collect();
    assert_eq!(
        undo,
        vec![
            ("b".into(), Operation::Compensate),
            ("a".into(), Operation::Compensate)
        ]
    );
    assert_eq!(out.branches[1].state, BranchStatus::Compensated);
    assert_eq!(out.branches[1].attempts, 3 + 1);
}

#[tokio::test]
async fn the_deadline_stops_retries_and_rolls_back() {
    let p = Scripted::new();
    p.plan("b", Operation::Action, &[Act::Err; 1000]);
    let e = engine(&MemoryStore::new(), &p).await;
    let s = Saga::builder("s")
        .step(step("a"))
        .step(step("b").retry(
            RetryPolicy::new(1_000).backoff(Duration::from_millis(20), Duration::from_millis(20)),
        ))
        .deadline(Duration::from_millis(150))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let out = e.run(s).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(p.calls("b", Operation::Action) < 20);
}

#[tokio::test]
async fn compensations_are_retried_until_they_succeed() {
    let p = Scripted::new();
    p.plan("b", Operation::Action, &[Act::Reject]);
    p.plan(
        "a",
        Operation::Compensate,
        &[
            Act::Err,
            Act::Err,
            Act::Err,
            Act::Err,
            Act::Reject,
            Act::Hang,
        ],
    );
    let e = engine(&MemoryStore::new(), &p).await;
    let out = e.run(saga(&["a", "b"])).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    assert_eq!(
        p.calls("a", Operation::Compensate),
        7,
        "3 attempts allowed to actions, not to undo"
    );
}

#[tokio::test]
async fn tcc_confirms_when_every_try_succeeds() {
    let p = Scripted::new();
    let e = engine(&MemoryStore::new(), &p).await;
    let t = Tcc::builder("t")
        .branch(step("x"))
        .branch(step("y"))
        .build()
        .unwrap();
    let out = e.run(t).await.unwrap();
    assert_eq!(out.status, Status::Committed);
    assert_eq!(
        p.calls("x", Operation::Confirm) + p.calls("y", Operation::Confirm),
        2
    );
    assert!(
        out.branches
            .iter()
            .all(|b| b.state == BranchStatus::Confirmed)
    );
}

#[tokio::test]
async fn tcc_cancels_when_a_try_fails() {
    let p = Scripted::new();
    p.plan("y", Operation::Try, &[Act::Reject]);
    let e = engine(&MemoryStore::new(), &p).await;
    let t = Tcc::builder("t")
        .branch(step("x"))
        .branch(step("y"))
        .build()
        .unwrap();
    let out = e.run(t).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    assert_eq!(p.calls("x", Operation::Cancel), 1);
    assert_eq!(
        p.calls("y", Operation::Cancel),
        1,
        "the rejected try is cancelled too"
    );
    assert_eq!(p.calls("x", Operation::Confirm), 0);
}

#[tokio::test]
async fn an_unconfirmed_try_is_cancelled_when_its_ttl_passes() {
    let p = Scripted::new();
    p.plan("y", Operation::Try, &[Act::Err; 1000]);
    let e = engine(&MemoryStore::new(), &p).await;
    let t = Tcc::builder("t")
        .branch(step("x"))
        .branch(step("y").retry(
            RetryPolicy::new(1_000).backoff(Duration::from_millis(10), Duration::from_millis(10)),
        ))
        .ttl(Duration::from_millis(120))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let out = e.run(t).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(p.calls("x", Operation::Cancel), 1);
    assert_eq!(
        p.calls("y", Operation::Cancel),
        1,
        "y may have reserved: it is cancelled too"
    );
}

#[tokio::test]
async fn abort_rolls_back_a_running_saga_and_queries_show_it() {
    let p = Scripted::new();
    p.plan("b", Operation::Action, &[Act::Err; 10_000]);
    let e = engine(&MemoryStore::new(), &p).await;
    let s = Saga::builder("s")
        .step(step("a"))
        .step(step("b").retry(
            RetryPolicy::new(10_000).backoff(Duration::from_millis(5), Duration::from_millis(5)),
        ))
        .build()
        .unwrap();
    let id = e.submit(s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let view = e.saga(&id).await.unwrap().unwrap();
    assert_eq!(view.status, Status::Running);
    assert!(view.live_here);
    assert_eq!(view.branches[0].state, BranchStatus::Done);
    assert_eq!(view.branches[1].state, BranchStatus::Running);
    assert_eq!(e.list(Status::Running, 10).await.unwrap().len(), 1);
    assert!(e.abort(&id).await.unwrap());
    let out = e.wait(&id).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    let stored = e.saga(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.live_here),
        (Status::Compensated, false)
    );
    assert_eq!(e.list(Status::Compensated, 10).await.unwrap()[0].id, id);
    assert!(
        !e.abort(&id).await.unwrap(),
        "a finished saga cannot be aborted"
    );
}

#[tokio::test]
async fn retry_now_skips_the_backoff() {
    let p = Scripted::new();
    p.plan("a", Operation::Action, &[Act::Err]);
    let e = engine(&MemoryStore::new(), &p).await;
    let s =
        Saga::builder("s")
            .step(step("a").retry(
                RetryPolicy::new(5).backoff(Duration::from_secs(60), Duration::from_secs(60)),
            ))
            .build()
            .unwrap();
    let id = e.submit(s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(e.retry_now(&id).await.unwrap());
    let out = tokio::time::timeout(Duration::from_secs(5), e.wait(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, Status::Committed);
}

#[tokio::test]
async fn unknown_participants_and_repeated_ids() {
    let p = Scripted::new();
    let e = engine(&MemoryStore::new(), &p).await;
    let err = e
        .run(
            Saga::builder("s")
                .step(Step::new("a", "nobody"))
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::UnknownParticipant { .. }),
        "{err}"
    );
    let id = SagaId::from("order-1");
    assert!(e.submit_with_id(id.clone(), saga(&["a"])).await.unwrap());
    assert!(!e.submit_with_id(id.clone(), saga(&["a"])).await.unwrap());
    assert_eq!(e.wait(&id).await.unwrap().status, Status::Committed);
    assert_eq!(p.calls("a", Operation::Action), 1);
}

#[tokio::test]
async fn a_restarted_engine_recovers_at_once_another_after_the_lease() {
    let store = MemoryStore::new();
    let p = Scripted::new();
    p.plan("b", Operation::Action, &[Act::Hang]);
    let first = engine(&store, &p).await;
    let id = first.submit(saga(&["a", "b"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // Crash: the engine and its drivers vanish without writing anything more.
    first.shutdown(Duration::ZERO).await;
    drop(first);

    // Same owner name, new incarnation: recovers immediately, re-driving from the intent.
    let second = engine(&store, &p).await;
    let out = second.wait(&id).await.unwrap();
    assert_eq!(out.status, Status::Committed);
    assert_eq!(
        p.calls("a", Operation::Action),
        2,
        "re-driven: the barrier makes it a no-op"
    );

    // Another owner must wait for the lease.
    let p2 = Scripted::new();
    p2.plan("b", Operation::Action, &[Act::Hang]);
    let third = Engine::builder(store.clone())
        .participant("p", p2.participant())
        .owner("third")
        .lease(Duration::from_millis(200))
        .recovery_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let id = third.submit(saga(&["a", "b"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    third.shutdown(Duration::ZERO).await;
    drop(third);
    let fourth = Engine::builder(store.clone())
        .participant("p", p2.participant())
        .owner("fourth")
        .recovery_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    assert!(
        fourth.wait(&id).await.is_err(),
        "not recovered before the lease expired"
    );
    let start = std::time::Instant::now();
    loop {
        if fourth
            .saga(&id)
            .await
            .unwrap()
            .is_some_and(|v| v.status == Status::Committed)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not recovered after the lease expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_saga_recovered_after_its_deadline_undoes_what_an_earlier_run_applied() {
    let store = MemoryStore::new();
    let p = Scripted::new();
    p.plan("c", Operation::Action, &[Act::Hang]);
    let first = engine(&store, &p).await;
    let s = Saga::builder("s")
        .step(step("a"))
        .step(step("b"))
        .step(step("c").timeout(Duration::from_secs(60)))
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let id = first.submit(s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.shutdown(Duration::ZERO).await; // crash while c hangs; a and b applied
    drop(first);
    tokio::time::sleep(Duration::from_millis(400)).await; // down past the deadline

    let second = engine(&store, &p).await;
    let out = second.wait(&id).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    for step in ["a", "b", "c"] {
        assert!(
            p.calls(step, Operation::Compensate) >= 1,
            "{step} was not compensated: {:?}",
            p.log()
        );
    }
}

#[tokio::test]
async fn a_tcc_recovered_after_its_ttl_cancels_what_an_earlier_run_tried() {
    let store = MemoryStore::new();
    let p = Scripted::new();
    p.plan("y", Operation::Try, &[Act::Hang]);
    let first = engine(&store, &p).await;
    let t = Tcc::builder("t")
        .branch(step("x"))
        .branch(step("y").timeout(Duration::from_secs(60)))
        .ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let id = first.submit(t).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.shutdown(Duration::ZERO).await; // crash: x reserved, y still trying
    drop(first);
    tokio::time::sleep(Duration::from_millis(400)).await; // down past the TTL

    let second = engine(&store, &p).await;
    let out = second.wait(&id).await.unwrap();
    assert_eq!(out.status, Status::Compensated);
    assert_eq!(p.calls("x", Operation::Cancel), 1, "{:?}", p.log());
    assert_eq!(p.calls("y", Operation::Cancel), 1, "{:?}", p.log());
    assert_eq!(p.calls("x", Operation::Confirm), 0);
}
