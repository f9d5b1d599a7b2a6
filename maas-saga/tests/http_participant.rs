//! HTTP participants over real sockets: the headers they send, how answers map to
//! outcomes, and garbage answers that must be unknown outcomes, never panics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use maas_saga::barrier::BranchKey;
use maas_saga::store::BranchStatus;
use maas_saga::{
    BranchCall, Engine, HttpParticipant, MemoryStore, Operation, Reply, RetryPolicy, Saga, SagaId,
    Status, Step, participant,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/saga")
}

fn call(op: Operation) -> BranchCall {
    BranchCall {
        saga_id: SagaId::from("s-1"),
        branch: "quota".into(),
        op,
        payload: serde_json::json!({ "tenant": "acme", "cost": 5 }),
        attempt: 2,
        traceparent: Some("00-0123456789abcdef0123456789abcdef-0123456789abcdef-01".into()),
        ttl: Some(Duration::from_millis(1500)),
        xa_gid: None,
    }
}

#[tokio::test]
async fn sends_headers_and_maps_status_codes() {
    let seen: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let log = seen.clone();
    let status = Arc::new(Mutex::new(StatusCode::OK));
    let answer = status.clone();
    let url = serve(Router::new().route(
        "/saga",
        post(move |headers: HeaderMap, body: String| {
            let (log, answer) = (log.clone(), answer.clone());
            async move {
                log.lock().unwrap().push((headers, body));
                let code = *answer.lock().unwrap();
                (code, "quota exhausted")
            }
        }),
    ))
    .await;
    let p = HttpParticipant::new(url);

    assert_eq!(
        p.clone().oneshot(call(Operation::Try)).await.unwrap(),
        Reply::Done
    );
    let (headers, body) = seen.lock().unwrap()[0].clone();
    let key = BranchKey::from_headers(&headers).unwrap();
    assert_eq!(
        (key.saga_id.as_str(), key.branch.as_str(), key.op),
        ("s-1", "quota", Operation::Try)
    );
    assert_eq!(headers["saga-attempt"], "2");
    assert_eq!(headers["saga-ttl-ms"], "1500");
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-0123456789abcdef")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["cost"],
        5
    );

    *status.lock().unwrap() = StatusCode::CONFLICT;
    assert_eq!(
        p.clone().oneshot(call(Operation::Action)).await.unwrap(),
        Reply::Rejected("quota exhausted".into())
    );
    for code in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::NOT_FOUND,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        *status.lock().unwrap() = code;
        assert!(
            p.clone().oneshot(call(Operation::Action)).await.is_err(),
            "{code} must be unknown"
        );
    }
}

/// A "server" that answers every connection with bytes that are not HTTP.
async fn garbage_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"\x00\xffNOT HTTP AT ALL\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}/saga")
}

#[tokio::test]
async fn garbage_and_silence_are_unknown_outcomes_and_undo_keeps_trying() {
    let garbage = HttpParticipant::new(garbage_server().await);
    assert!(
        garbage
            .clone()
            .oneshot(call(Operation::Action))
            .await
            .is_err()
    );
    // Nothing listens here at all.
    let nobody = HttpParticipant::new("http://127.0.0.1:9/saga");
    assert!(
        nobody
            .clone()
            .oneshot(call(Operation::Action))
            .await
            .is_err()
    );

    let ok = participant(tower::service_fn(|_| async {
        Ok::<_, std::io::Error>(Reply::Done)
    }));
    let engine = Engine::builder(MemoryStore::new())
        .participant("ok", ok)
        .participant("garbage", participant(garbage))
        .start()
        .await
        .unwrap();
    let quick = RetryPolicy::new(2).backoff(Duration::from_millis(1), Duration::from_millis(2));
    let saga = Saga::builder("s")
        .step(Step::new("a", "ok").retry(quick))
        .step(
            Step::new("b", "garbage")
                .retry(quick)
                .timeout(Duration::from_secs(2)),
        )
        .build()
        .unwrap();
    // b's outcome stays unknown: the saga rolls back; b's compensation (also answered with
    // garbage) is retried for as long as it takes, and a waits for it.
    let id = engine.submit(saga).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = engine.saga(&id).await.unwrap().unwrap();
    assert_eq!(view.status, Status::Compensating);
    assert_eq!(view.branches[0].state, BranchStatus::Done);
    assert_eq!(view.branches[1].state, BranchStatus::Compensating);
    assert!(view.branches[1].attempts > 3, "{:?}", view.branches);
    engine.shutdown(Duration::ZERO).await;
}
