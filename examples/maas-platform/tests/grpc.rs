//! tonic, for real: a gRPC server behind `GrpcMetricsLayer`, called through a tonic client
//! behind the breaker's gRPC layer. A failing upstream (`UNAVAILABLE`) trips the breaker,
//! after which calls are refused locally with `UNAVAILABLE`; a `NOT_FOUND` answer does not
//! count against the upstream; the server's metrics count every status — those sent in the
//! response headers (errors) and those sent in the trailers (successes).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use maas_breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
use maas_telemetry::GrpcMetricsLayer;
use prometheus::{Encoder, Registry, TextEncoder};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceBuilder};

#[derive(Clone, PartialEq, prost::Message)]
struct SayRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SayReply {
    #[prost(string, tag = "1")]
    text: String,
}

/// `test.Echo/Say`: greets, answers `NOT_FOUND` for the name "nobody", and `UNAVAILABLE`
/// while `failing` is set.
#[derive(Clone)]
struct Echo {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

/// The unary method itself.
#[derive(Clone)]
struct Say(Echo);

impl Service<tonic::Request<SayRequest>> for Say {
    type Response = tonic::Response<SayReply>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<SayRequest>) -> Self::Future {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let failing = self.0.failing.load(Ordering::Acquire);
        let name = request.into_inner().name;
        Box::pin(async move {
            if failing {
                Err(Status::unavailable("model backend down"))
            } else if name == "nobody" {
                Err(Status::not_found("no such user"))
            } else {
                Ok(tonic::Response::new(SayReply {
                    text: format!("hello {name}"),
                }))
            }
        })
    }
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let say = Say(self.clone());
        Box::pin(async move {
            if request.uri().path() != "/test.Echo/Say" {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let codec = tonic_prost::ProstCodec::<SayReply, SayRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(say, request).await)
        })
    }
}

fn scrape(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn handled(text: &str, code: &str) -> u64 {
    let prefix = format!(
        "grpc_server_handled_total{{code=\"{code}\",method=\"Say\",service=\"test.Echo\"}}"
    );
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_failing_grpc_upstream_trips_the_breaker_and_the_metrics_count_grpc_statuses() {
    // The server, with the gRPC metrics layer.
    let registry = Registry::new();
    let echo = Echo {
        failing: Arc::new(AtomicBool::new(false)),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(GrpcMetricsLayer::new(&registry).unwrap())
            .add_service(echo.clone())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    // The client: a tonic channel behind the breaker's gRPC layer.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the test server");
    let breaker = CircuitBreaker::builder()
        .name("echo")
        .consecutive_failures(3)
        .open_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let guarded = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).into_grpc())
        .service(channel);
    let mut client = tonic::client::Grpc::new(guarded);
    let mut say = async |name: &str| -> Result<String, Status> {
        client
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let reply = client
            .unary(
                tonic::Request::new(SayRequest { name: name.into() }),
                PathAndQuery::from_static("/test.Echo/Say"),
                tonic_prost::ProstCodec::<SayRequest, SayReply>::default(),
            )
            .await?;
        Ok(reply.into_inner().text)
    };

    assert_eq!(say("ada").await.unwrap(), "hello ada");
    assert_eq!(say("bob").await.unwrap(), "hello bob");
    // An answer of a working server, not a failure of it.
    assert_eq!(say("nobody").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().failures, 0, "{:?}", breaker.snapshot());

    echo.failing.store(true, Ordering::Release);
    for _ in 0..3 {
        let e = say("carl").await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.message(), "model backend down");
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    // Refused locally: the server is not called, the client sees UNAVAILABLE.
    let before = echo.calls.load(Ordering::Relaxed);
    let refused = say("dora").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.message(), "circuit breaker echo is open");
    assert_eq!(echo.calls.load(Ordering::Relaxed), before);

    // The server counted each status where it travelled: OK in the trailers, the errors in
    // the headers.
    let text = scrape(&registry);
    assert_eq!(handled(&text, "OK"), 2, "{text}");
    assert_eq!(handled(&text, "NOT_FOUND"), 1, "{text}");
    assert_eq!(handled(&text, "UNAVAILABLE"), 3, "{text}");
    assert!(text.contains("grpc_server_in_flight 0"), "{text}");
    server.abort();
}
