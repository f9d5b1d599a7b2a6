//! OpenAI-compatible inference: `GET /v1/models` and `POST /v1/chat/completions` (whole
//! answers, or `stream: true` as server-sent events in OpenAI's chunk format, ending with
//! `data: [DONE]`), errors in OpenAI's shape (`{"error": {"message", "type", "param",
//! "code"}}`).
//!
//! A model is asked through a [`Backend`]: the built-in [`Simulated`] one (deterministic,
//! one token per word after a configurable delay) or an OpenAI-compatible [`Upstream`]
//! (`MAAS_UPSTREAM_URL`: vLLM, llama.cpp's server, …). The primary backend sits behind the
//! `chat` circuit breaker; when the breaker is open, or the backend fails before its first
//! token, the fallback model answers instead, and the answer says so: `model` is the model
//! that answered, `degraded` the reason. Once a token has gone out there is no fallback: a
//! failure ends the stream with an error event.
//!
//! Token counts (for `usage` and the tokens-per-minute limit, [`TokenLimit`]) follow one
//! documented rule, [`count_tokens`]. A completion is admitted by its estimate — prompt
//! tokens + `max_tokens` — and reconciled with what it used when it ends.

mod backend;
mod gateway;
mod limit;
mod routes;
mod upstream;

pub use backend::{Backend, BackendError, Completion, Simulated, Tokens};
pub use gateway::{Answer, Gateway};
pub(crate) use limit::openai_limits;
pub use limit::{Charge, Refused, TokenLimit};
pub(crate) use routes::routes;
pub use upstream::Upstream;

/// The platform's token count of `text`: one token per 4 bytes of UTF-8, rounded up (the
/// usual rule of thumb for English with OpenAI's tokenizers). A message counts its content
/// plus 4 tokens for its role and framing.
pub fn count_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Tokens a chat message counts for (see [`count_tokens`]).
pub fn message_tokens(content: &str) -> u64 {
    count_tokens(content) + 4
}
