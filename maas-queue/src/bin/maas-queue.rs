//! `maas-queue`: operator commands for maas-queue topics.
//!
//! ```text
//! maas-queue redrive --brokers 127.0.0.1:9092 --from model-build-tasks.dlq [--to model-build-tasks]
//!                    [--key K] [--since 2026-11-25T10:00:00Z | --since 1764064800000]
//! ```

use std::process::ExitCode;

use maas_queue::{Cluster, Redrive, parse_since};

const USAGE: &str = "usage: maas-queue redrive --from <topic>.dlq [--to <topic>] [--key K] [--since T] [--brokers host:port,...]

  --from     the dead-letter topic to read
  --to       where to publish (default: each record's dlq-original-topic header)
  --key      only records with this key
  --since    only records that last failed at or after T (RFC 3339 or Unix milliseconds)
  --brokers  bootstrap brokers (default: $MAAS_KAFKA_BROKERS, else 127.0.0.1:9092)";

fn parse(args: &[String]) -> Result<Redrive, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("redrive") => {}
        Some("-h" | "--help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown command `{other}`")),
    }
    let mut brokers =
        std::env::var("MAAS_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let (mut from, mut to, mut key, mut since) = (None, None, None, None);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--brokers" => brokers = value,
            "--from" => from = Some(value),
            "--to" => to = Some(value),
            "--key" => key = Some(value),
            "--since" => since = Some(parse_since(&value).map_err(|e| e.to_string())?),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    let from = from.ok_or("--from is required")?;
    let mut redrive = Redrive::new(Cluster::kafka(brokers.split(',').map(str::trim)), from);
    if let Some(t) = to {
        redrive = redrive.to(t);
    }
    if let Some(k) = key {
        redrive = redrive.key(k);
    }
    if let Some(t) = since {
        redrive = redrive.since(t);
    }
    Ok(redrive)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let redrive = match parse(&args) {
        Ok(r) => r,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("maas-queue: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match redrive.run().await {
        Ok(r) => {
            println!(
                "scanned {} redriven {} skipped {}",
                r.scanned, r.redriven, r.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("maas-queue: redrive failed: {e}");
            ExitCode::FAILURE
        }
    }
}
