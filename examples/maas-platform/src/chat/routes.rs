//! `GET /v1/models` and `POST /v1/chat/completions`, in OpenAI's shapes.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::backend::Completion;
use super::gateway::{Answer, Ask};
use super::limit::Charge;
use super::message_tokens;
use crate::api::AppState;
use crate::auth::Caller;

/// `max_tokens` when a request gives none.
pub const DEFAULT_MAX_TOKENS: u64 = 256;
/// The most `max_tokens` may ask for.
pub const MAX_TOKENS: u64 = 32_768;

/// The routes, under `/v1`.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/models", get(list))
        .route("/chat/completions", post(complete))
        .with_state(state)
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    message: String,
}

impl OpenAiError {
    fn invalid(param: Option<&'static str>, message: String) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param,
            message,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "message": self.message, "type": self.kind,
                                      "param": self.param, "code": self.code } });
        (self.status, Json(body)).into_response()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> OpenAiError {
    tracing::error!(error = %e, "{what}");
    OpenAiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        code: None,
        param: None,
        message: format!("{what}: {e}"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`: the caller's ready models, then the platform's fallback model.
async fn list(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, OpenAiError> {
    let models = s
        .store
        .ready_models(&caller.tenant)
        .await
        .map_err(|e| unavailable("listing the models", e))?;
    let mut data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({ "id": m.id, "object": "model", "created": 0, "owned_by": m.tenant,
                         "name": m.name })
        })
        .collect();
    data.push(
        json!({ "id": s.chat.fallback_model(), "object": "model", "created": 0,
                      "owned_by": "maas" }),
    );
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

/// `POST /v1/chat/completions`.
async fn complete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    json: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let request = json.map(|Json(r)| r).map_err(|e| OpenAiError {
        status: e.status(),
        ..OpenAiError::invalid(None, e.body_text())
    })?;
    if request.messages.is_empty() {
        return Err(OpenAiError::invalid(
            Some("messages"),
            "`messages` must hold at least one message".into(),
        ));
    }
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_TOKENS).contains(&max_tokens) {
        return Err(OpenAiError::invalid(
            Some("max_tokens"),
            format!("`max_tokens` must be 1 to {MAX_TOKENS}"),
        ));
    }
    // The backend's name for the model: a tenant's model is served under its upload name.
    let backend_model = if request.model == s.chat.fallback_model() {
        request.model.clone()
    } else {
        let model = s
            .store
            .model(&request.model)
            .await
            .map_err(|e| unavailable("reading the model", e))?
            .filter(|m| m.tenant == caller.tenant)
            .ok_or_else(|| OpenAiError {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                code: Some("model_not_found"),
                param: Some("model"),
                message: format!(
                    "the model `{}` does not exist or you do not have access to it",
                    request.model
                ),
            })?;
        if model.status != "ready" {
            return Err(OpenAiError {
                status: StatusCode::CONFLICT,
                code: Some("model_not_ready"),
                ..OpenAiError::invalid(
                    Some("model"),
                    format!("the model `{}` is {}, not ready", model.id, model.status),
                )
            });
        }
        model.name
    };
    let messages: Vec<(String, String)> = request
        .messages
        .into_iter()
        .map(|m| {
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => parts.into_iter().map(|p| p.text).collect(),
            };
            (m.role, content)
        })
        .collect();
    let prompt_tokens: u64 = messages.iter().map(|(_, c)| message_tokens(c)).sum();
    // Admitted by the estimate; the charge settles with the real usage when it is dropped.
    let mut charge = match s
        .tokens
        .admit(&caller.key, prompt_tokens + max_tokens)
        .await
    {
        Ok(charge) => charge,
        Err(refused) => return Ok(refused.into_response()),
    };
    let ask = Ask {
        id: request.model,
        completion: Completion {
            model: backend_model,
            messages,
            max_tokens,
        },
    };
    let answer = match s.chat.ask(ask).await {
        Ok(answer) => answer,
        Err(e) => {
            // Nothing was answered: nothing is charged.
            charge.use_tokens(0);
            return Err(unavailable("no model could answer", e));
        }
    };
    let id = format!("chatcmpl-{:016x}", fastrand::u64(..));
    let include_usage = request.stream_options.unwrap_or_default().include_usage;
    let degraded = answer.degraded.clone();
    let mut headers = axum::http::HeaderMap::new();
    charge.headers(&mut headers);
    let mut response = if request.stream {
        // A stream in progress ends when the listeners stop (after the drain), so the
        // shutdown never waits on it.
        let events = stream(
            answer,
            id,
            (prompt_tokens, max_tokens),
            include_usage,
            charge,
        )
        .take_until(s.stopped.clone().wait());
        Sse::new(events).into_response()
    } else {
        whole(answer, id, prompt_tokens, max_tokens, charge).await?
    };
    response.headers_mut().extend(headers);
    if let Some(reason) = degraded
        && let Ok(v) = HeaderValue::from_str(&reason)
    {
        response.headers_mut().insert("x-maas-degraded", v);
    }
    Ok(response)
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion })
}

fn finish_reason(tokens: u64, max_tokens: u64) -> &'static str {
    if tokens >= max_tokens {
        "length"
    } else {
        "stop"
    }
}

/// The answer as one `chat.completion`.
async fn whole(
    answer: Answer,
    id: String,
    prompt_tokens: u64,
    max_tokens: u64,
    mut charge: Charge,
) -> Result<Response, OpenAiError> {
    let mut content = answer.first.unwrap_or_default();
    let mut tokens = u64::from(!content.is_empty());
    charge.use_tokens(prompt_tokens + tokens);
    let mut rest = answer.rest;
    while let Some(token) = rest.next().await {
        let token = token.map_err(|e| unavailable("the model failed while answering", e))?;
        content.push_str(&token);
        tokens += 1;
        charge.use_tokens(prompt_tokens + tokens);
    }
    let mut body = json!({
        "id": id, "object": "chat.completion", "created": now(), "model": answer.model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content },
                      "finish_reason": finish_reason(tokens, max_tokens) }],
        "usage": usage(prompt_tokens, tokens),
    });
    if let Some(reason) = answer.degraded {
        body["degraded"] = true.into();
        body["degraded_reason"] = reason.into();
    }
    Ok(Json(body).into_response())
}

/// The answer's server-sent `chat.completion.chunk` events, then `[DONE]`.
fn stream(
    answer: Answer,
    id: String,
    (prompt_tokens, max_tokens): (u64, u64),
    include_usage: bool,
    charge: Charge,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let created = now();
    let model = answer.model.clone();
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({ "id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{ "index": 0, "delta": delta,
                "finish_reason": finish }] })
    };
    let mut head = chunk(json!({ "role": "assistant", "content": "" }), None);
    if let Some(reason) = &answer.degraded {
        head["degraded"] = true.into();
        head["degraded_reason"] = reason.clone().into();
    }
    let first = answer.first.map(Ok);
    let tokens = futures::stream::iter(first).chain(answer.rest).boxed();
    async_stream(
        head,
        tokens,
        chunk,
        (prompt_tokens, max_tokens),
        include_usage,
        charge,
    )
}

/// The events of a stream: the head, one chunk a token, the finish, usage if asked, `[DONE]`
/// — or, when the backend fails part-way, an error event and the end (no fallback now).
fn async_stream(
    head: Value,
    tokens: super::Tokens,
    chunk: impl Fn(Value, Option<&str>) -> Value + Send + 'static,
    (prompt_tokens, max_tokens): (u64, u64),
    include_usage: bool,
    mut charge: Charge,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send {
    // The prompt is used from the start; each token sent adds one. The charge travels with
    // the stream and settles when it ends or the client hangs up.
    charge.use_tokens(prompt_tokens);
    enum Step {
        Head,
        Tokens,
        Done,
    }
    let state = (Step::Head, tokens, 0u64, (chunk, charge));
    futures::stream::unfold(Some(state), move |state| {
        let head = head.clone();
        async move {
            let (step, mut tokens, count, (chunk, mut charge)) = state?;
            let data = |v: &Value| Event::default().data(v.to_string());
            match step {
                Step::Head => Some((
                    vec![data(&head)],
                    Some((Step::Tokens, tokens, count, (chunk, charge))),
                )),
                Step::Tokens => match tokens.next().await {
                    Some(Ok(t)) => {
                        let e = data(&chunk(json!({ "content": t }), None));
                        charge.use_tokens(prompt_tokens + count + 1);
                        Some((
                            vec![e],
                            Some((Step::Tokens, tokens, count + 1, (chunk, charge))),
                        ))
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the model failed part-way through a stream");
                        let err = json!({ "error": { "message": e.to_string(),
                                          "type": "server_error", "param": null, "code": null } });
                        Some((vec![data(&err)], None))
                    }
                    None => {
                        let mut out = vec![data(&chunk(
                            json!({}),
                            Some(finish_reason(count, max_tokens)),
                        ))];
                        if include_usage {
                            let mut u = chunk(json!({}), None);
                            u["choices"] = json!([]);
                            u["usage"] = usage(prompt_tokens, count);
                            out.push(data(&u));
                        }
                        out.push(Event::default().data("[DONE]"));
                        Some((out, Some((Step::Done, tokens, count, (chunk, charge)))))
                    }
                },
                Step::Done => None,
            }
        }
    })
    .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)))
}
