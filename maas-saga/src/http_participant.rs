//! Steps performed by HTTP services: the step's payload as a JSON `POST`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::Service;

use crate::barrier::headers;
use crate::participant::{BoxError, BranchCall, Reply};

/// A participant reached over HTTP.
///
/// Each operation is a `POST` of the step's payload (JSON) to the participant's URL, with
/// headers `saga-id`, `saga-branch`, `saga-operation` (`action`, `compensate`, `try`,
/// `confirm`, `cancel`), `saga-attempt`, `traceparent` and, for tries, `saga-ttl-ms`. The
/// answer is read as:
///
/// * `2xx` — success;
/// * `409 Conflict` — business failure (the body is the reason): the saga compensates;
/// * anything else, a connection error or a timeout — unknown: retried with backoff.
///
/// ```
/// use maas_saga::{Engine, HttpParticipant, MemoryStore, participant};
/// # async fn f() -> Result<(), maas_saga::EngineError> {
/// let engine = Engine::builder(MemoryStore::new())
///     .participant("billing", participant(HttpParticipant::new("http://billing:8080/saga")))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HttpParticipant {
    url: String,
    client: reqwest::Client,
}

impl HttpParticipant {
    /// A participant at `url`, with a default client.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_client(url, reqwest::Client::new())
    }

    /// A participant at `url` using `client` (timeouts, TLS, proxies are the client's).
    pub fn with_client(url: impl Into<String>, client: reqwest::Client) -> Self {
        HttpParticipant {
            url: url.into(),
            client,
        }
    }
}

impl Service<BranchCall> for HttpParticipant {
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: BranchCall) -> Self::Future {
        let mut request = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(headers::SAGA_ID, call.saga_id.as_str())
            .header(headers::BRANCH, &call.branch)
            .header(headers::OPERATION, call.op.as_str())
            .header(headers::ATTEMPT, call.attempt.to_string());
        if let Some(tp) = &call.traceparent {
            request = request.header("traceparent", tp);
        }
        if let Some(ttl) = call.ttl {
            request = request.header(headers::TTL_MS, ttl.as_millis().to_string());
        }
        let body = serde_json::to_vec(&call.payload);
        Box::pin(async move {
            let response = request.body(body?).send().await?;
            let status = response.status();
            if status.is_success() {
                Ok(Reply::Done)
            } else if status == http::StatusCode::CONFLICT {
                let reason = response.text().await.unwrap_or_default();
                Ok(Reply::Rejected(if reason.is_empty() {
                    "409 Conflict".to_owned()
                } else {
                    reason
                }))
            } else {
                Err(format!("participant answered {status}").into())
            }
        })
    }
}
