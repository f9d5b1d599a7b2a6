//! Panics as log events: one `ERROR` event per panic, with the message, where it happened,
//! the thread, and a backtrace — in the JSON log like every other event, so inside a
//! request's span it carries the request's `trace_id`.
//!
//! [`TelemetryBuilder::build`](crate::TelemetryBuilder::build) installs the hook unless
//! told not to ([`log_panics(false)`](crate::TelemetryBuilder::log_panics)); dropping the
//! [`Telemetry`](crate::Telemetry) puts the previous hook back.

use std::backtrace::Backtrace;
use std::panic::PanicHookInfo;

/// The panic hook that was installed before ours.
pub(crate) type PreviousHook = Box<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static>;

/// Replaces the process's panic hook with one that logs; returns the one it replaced.
pub(crate) fn install() -> PreviousHook {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(log_panic));
    previous
}

/// Puts `previous` back, unless this thread is panicking (where that is not allowed).
pub(crate) fn restore(previous: PreviousHook) {
    if !std::thread::panicking() {
        std::panic::set_hook(previous);
    }
}

fn log_panic(info: &PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let backtrace = Backtrace::force_capture().to_string();
    tracing::error!(
        target: "panic",
        panic = message,
        location = %location,
        thread = thread.name().unwrap_or("unnamed"),
        backtrace = %backtrace,
        "panicked"
    );
}
