//! `cargo run -p maas-platform`: the platform on embedded defaults (in-memory broker, SQLite
//! in a fresh temporary directory), the API on 127.0.0.1:8080 and the admin API on
//! 127.0.0.1:8081. `MAAS_*` variables change the settings (see `Config`); the standard
//! `OTEL_*` variables send traces to a collector or Jaeger. Ctrl-C or SIGTERM stops it
//! gracefully.

use maas_platform::{Config, Platform};
use maas_telemetry::{LogFormat, Telemetry};

const HELP: &str = "\
maas-platform: a Model-as-a-Service platform (API keys, model uploads checked by their
headers, quota sagas, Kafka builds, OpenAI-compatible chat behind a circuit breaker,
Prometheus metrics and traces).

Usage: maas-platform [--help | --version]

It takes no arguments: every setting is an environment variable, and the defaults need
nothing else running (an in-memory broker, SQLite in a fresh temporary directory).

  MAAS_ADDR            public API, /health, /metrics     (127.0.0.1:8080)
  MAAS_ADMIN_ADDR      admin API                         (127.0.0.1:8081)
  MAAS_ADMIN_TOKEN     the admin API's bearer token      (embedded: made and printed)
  MAAS_DATA_DIR        SQLite files, kept across runs    (a fresh temporary directory)
  MAAS_ARTIFACT_DIR    uploaded model files, by SHA-256  (<data dir>/artifacts)
  MAAS_MAX_MODEL_BYTES largest model file an upload may send (16 GiB)
  MAAS_UPSTREAM_URL    OpenAI-compatible server for chat, e.g. http://vllm:8000/v1
                       (unset: the built-in simulated backend)
  MAAS_DATABASE_URL    PostgreSQL shared by replicas, e.g. host=db user=maas dbname=maas
  MAAS_KAFKA_BROKERS   Kafka bootstrap brokers, host:port[,host:port]
  MAAS_REDIS_URL       Redis for limits shared by replicas, redis://host:port
  MAAS_RATE_PER_MINUTE requests per minute per API key  (600)
  MAAS_TOKENS_PER_MINUTE chat tokens per minute per API key (100000)
  MAAS_TENANT_QUOTA    credits a new tenant starts with (100)
  MAAS_BUILD_COST      credits one build costs          (10)
  OTEL_EXPORTER_OTLP_ENDPOINT  where traces go (OTLP)

examples/maas-platform/README.md lists every variable.
";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") if args.len() == 1 => {
            print!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        Some("-V" | "--version") if args.len() == 1 => {
            println!("maas-platform {}", env!("CARGO_PKG_VERSION"));
            return std::process::ExitCode::SUCCESS;
        }
        Some(_) => {
            eprintln!(
                "maas-platform: unexpected argument {:?}; it takes none (settings are MAAS_* \
                 variables). Try --help.",
                args.join(" ")
            );
            return std::process::ExitCode::from(2);
        }
    }
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
    // Shown once, on the terminal only: these are credentials, and never logged.
    println!(
        "maas-platform: API on http://{}, admin API on http://{}",
        platform.addr(),
        platform.admin_addr()
    );
    if let Some(token) = platform.made_admin_token() {
        println!("admin token for this run (MAAS_ADMIN_TOKEN sets your own): {token}");
    }
    if let Some(key) = platform.demo_key() {
        println!("API key of the demo tenant: {key}");
        println!(
            "try: curl http://{}/v1/chat/completions -H 'authorization: Bearer {key}' \
             -H 'content-type: application/json' \
             -d '{{\"model\":\"maas-fallback\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'",
            platform.addr()
        );
    }
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
