//! `cargo run -p maas-platform`: the platform on embedded defaults (in-memory broker, SQLite
//! in a temporary directory), listening on 127.0.0.1:8080. `MAAS_*` variables change the
//! settings (see `Config`); the standard `OTEL_*` variables send traces to a collector or
//! Jaeger. Ctrl-C or SIGTERM stops it gracefully.

use maas_platform::{Config, Platform};
use maas_telemetry::{LogFormat, Telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: "saga engine: saga store: db error: connection refused".
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("maas-platform: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = Telemetry::builder()
        .service_name("maas-platform")
        .log_format(LogFormat::Json)
        .build()?;
    let config = Config::from_env()?;
    let platform = Platform::start(config, prometheus::Registry::new()).await?;
    println!(
        "maas-platform on http://{0} — try: curl -X POST http://{0}/v1/models -H 'content-type: application/json' -d '{{\"name\":\"llama-3-8b\"}}'",
        platform.addr()
    );
    stopped().await;
    platform.shutdown().await;
    drop(telemetry);
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what Kubernetes sends).
async fn stopped() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
