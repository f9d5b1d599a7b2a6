//! What answers a completion: the [`Backend`] trait and the built-in [`Simulated`] backend.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// One completion, as a backend gets it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The model the backend should run (its own name for it).
    pub model: String,
    /// The conversation: `(role, content)`.
    pub messages: Vec<(String, String)>,
    /// At most this many tokens in the answer.
    pub max_tokens: u64,
}

/// The answer's tokens, as they come; the stream ends when the answer does.
pub type Tokens = BoxStream<'static, Result<String, BackendError>>;

/// Why a backend did not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// An operator marked the backend down (`PUT /admin/backend {"healthy": false}`).
    #[error("model backend marked down")]
    MarkedDown,
    /// It did not answer in time.
    #[error("model backend timed out: {0}")]
    Timeout(String),
    /// It answered with an error, or not in OpenAI's format.
    #[error("model backend failed: {0}")]
    Failed(String),
}

/// A model server.
pub trait Backend: Send + Sync + 'static {
    /// Starts `completion`; the tokens follow on the stream.
    fn start(&self, completion: Completion) -> BoxFuture<'static, Result<Tokens, BackendError>>;
}

/// A deterministic backend with no model behind it: it answers with the words of the last
/// message, in reverse order, after `Simulated answer from <model>:`, streamed in tokens of
/// at most 4 bytes (whole characters; [`super::count_tokens`]'s rule) each after `delay` —
/// so latency and token limits show, and tests know every answer.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// The pause before each token.
    pub delay: Duration,
}

impl Simulated {
    /// The tokens `completion` is answered with, before `max_tokens` cuts them.
    pub fn tokens(completion: &Completion) -> Vec<String> {
        let text: String = Simulated::words(completion).concat();
        let mut tokens = Vec::new();
        let mut token = String::new();
        for c in text.chars() {
            if token.len() + c.len_utf8() > 4 {
                tokens.push(std::mem::take(&mut token));
            }
            token.push(c);
        }
        if !token.is_empty() {
            tokens.push(token);
        }
        tokens
    }

    fn words(completion: &Completion) -> Vec<String> {
        let last = completion
            .messages
            .last()
            .map(|(_, c)| c.as_str())
            .unwrap_or("");
        let mut words = vec![
            "Simulated".to_owned(),
            " answer".to_owned(),
            " from".to_owned(),
            format!(" {}:", completion.model),
        ];
        words.extend(last.split_whitespace().rev().map(|w| format!(" {w}")));
        words
    }
}

impl Backend for Simulated {
    fn start(&self, completion: Completion) -> BoxFuture<'static, Result<Tokens, BackendError>> {
        let delay = self.delay;
        Box::pin(async move {
            let mut tokens = Simulated::tokens(&completion);
            tokens.truncate(completion.max_tokens as usize);
            let tokens = futures::stream::iter(tokens).then(move |w| async move {
                tokio::time::sleep(delay).await;
                Ok(w)
            });
            Ok(tokens.boxed())
        })
    }
}
