//! Three (then four) OS processes, each its own `RedisLimiter`, share one key on the real
//! Redis: a fixed window of 20,000 per second (leases hold at most 200 in all), driven at
//! 2.25–3 × the limit for four windows. Per window, the units the processes admitted
//! together are within 200 of the limit on both sides. One process, holding a lease, is
//! SIGKILLed in the third window: the others carry on within the bound, and its lease — the
//! share it took — ends within the lease's lifetime (500 ms): from then on the scripts no
//! longer count it, and the next call on the key deletes its record.
//!
//! The test re-runs its own binary as the child processes (`harness = false`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maas_ratelimit::Quota;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter};

mod support;
use support::{redis_url, unreachable};

const LIMIT: u64 = 20_000;
const MAX_OVERSHOOT: u64 = LIMIT / 100;
const PERIOD_MS: u64 = 1_000;
const WINDOWS: u64 = 4;
/// Checks per millisecond per process: 15,000 per second each.
const PER_MS: u64 = 15;
const LIFETIME: Duration = Duration::from_millis(500);
const KEY: &str = "tenant";

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list`: one test here.
        println!("three_processes_share_one_limit_through_a_sigkill: test");
        return;
    }
    parent();
    println!("test three_processes_share_one_limit_through_a_sigkill ... ok");
}

async fn connect(prefix: &str) -> RedisLimiter {
    let url = redis_url();
    RedisLimiter::builder(
        url.as_str(),
        RedisAlgorithm::FixedWindow(Quota::new(LIMIT, Duration::from_millis(PERIOD_MS))),
        OutagePolicy::FailClosed,
    )
    .prefix(prefix)
    .deadline(Duration::from_secs(1))
    .lease_lifetime(LIFETIME)
    .connect()
    .await
    .unwrap_or_else(|e| unreachable(&url, e))
}

/// A child: `prefix start_ms stop_ms hold`. Drives the key from `start_ms` to `stop_ms`
/// (unix), printing `w <window> <admitted>` as each window of the server's clock ends, then
/// `done`; with `hold`, it then idles holding its lease until it is killed.
fn child(args: &[String]) {
    let [prefix, start, stop, hold] = args else {
        panic!("child arguments: prefix start_ms stop_ms hold; got {args:?}")
    };
    let (start, stop): (u64, u64) = (start.parse().unwrap(), stop.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let limiter = connect(prefix).await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "id {}", limiter.replica_id()).unwrap();
        out.flush().unwrap();
        tokio::time::sleep(Duration::from_micros(
            (start * 1000).saturating_sub(unix_us()),
        ))
        .await;
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let period_us = PERIOD_MS * 1000;
        while unix_us() < stop * 1000 {
            tick.tick().await;
            for _ in 0..PER_MS {
                let d = limiter.check(KEY, 1).await;
                if d.is_allowed() {
                    // The window this decision counted in, by the server's clock: it ends
                    // `reset_after` from now.
                    let ends = unix_us() + d.reset_after().as_micros() as u64;
                    let window = (ends + period_us / 2) / period_us - 1;
                    *counts.entry(window).or_default() += 1;
                }
            }
        }
        for (w, n) in &counts {
            writeln!(out, "w {w} {n}").unwrap();
        }
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
        if hold == "hold" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

struct Proc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn(prefix: &str, start: u64, stop: u64, hold: bool) -> Proc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--child", prefix, &start.to_string(), &stop.to_string()])
        .arg(if hold { "hold" } else { "drive" })
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test binary runs as a child");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Proc { child, lines }
}

impl Proc {
    /// Lines until `done` (or the id line only, with `until_id`).
    fn read(&self, until: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("a child stopped answering");
            let stop = line.starts_with(until);
            out.push(line);
            if stop {
                return out;
            }
        }
    }
}

/// The lease records of the key: replica id → the lease's end (µs, the server's clock).
fn records(prefix: &str) -> BTreeMap<String, u64> {
    let mut conn = redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_connection()
        .expect("Redis");
    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("{prefix}:{{{KEY}}}:leases"))
        .query(&mut conn)
        .unwrap();
    fields
        .into_iter()
        .map(|(id, v)| (id, v.split(':').nth(1).unwrap().parse().unwrap()))
        .collect()
}

/// The server's time, µs.
fn server_us() -> u64 {
    let mut conn = redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_connection()
        .expect("Redis");
    let (s, us): (u64, u64) = redis::cmd("TIME").query(&mut conn).unwrap();
    s * 1_000_000 + us
}

fn parent() {
    let prefix = format!("maas:test:replicas:{}:{}", std::process::id(), unix_us());
    // Start on a whole window two seconds ahead, so every process is connected by then.
    let start = (unix_us() / 1000 / PERIOD_MS + 2) * PERIOD_MS;
    let stop = start + WINDOWS * PERIOD_MS;
    let first_window = start / PERIOD_MS;
    // The victim drives the first two windows and 150 ms of the third, then holds its lease.
    let victim_stop = start + 2 * PERIOD_MS + 150;
    let mut drivers: Vec<Proc> = (0..3).map(|_| spawn(&prefix, start, stop, false)).collect();
    let mut victim = spawn(&prefix, start, victim_stop, true);
    let victim_id = victim.read("id")[0]["id ".len()..].to_owned();
    let mut totals: BTreeMap<u64, u64> = BTreeMap::new();
    let mut add = |lines: &[String]| {
        for l in lines.iter().filter(|l| l.starts_with("w ")) {
            let mut it = l[2..].split(' ').map(|v| v.parse::<u64>().unwrap());
            let (w, n) = (it.next().unwrap(), it.next().unwrap());
            *totals.entry(w).or_default() += n;
        }
    };
    add(&victim.read("done"));
    let held = records(&prefix);
    let Some(&ends) = held.get(&victim_id) else {
        panic!("the victim holds no lease when it is killed: records {held:?}")
    };
    victim.child.kill().expect("SIGKILL");
    let killed_at = server_us();
    victim.child.wait().unwrap();
    // Its share returns within the lease's lifetime: past its end the scripts no longer
    // count the record (and the next call on the key deletes it).
    assert!(
        ends <= killed_at + LIFETIME.as_micros() as u64,
        "the killed replica's lease ends {} µs after the kill",
        ends - killed_at
    );
    let gone_by = ends + PERIOD_MS * 1000 + 200_000;
    while records(&prefix).contains_key(&victim_id) {
        assert!(
            server_us() < gone_by,
            "the killed replica's lease record stayed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "the killed replica's lease ended {} ms after the kill",
        ends.saturating_sub(killed_at) / 1000
    );
    for d in &mut drivers {
        add(&d.read("done"));
        assert!(d.child.wait().unwrap().success());
    }
    let windows: Vec<(u64, u64)> = (first_window..first_window + WINDOWS)
        .map(|w| (w, totals.get(&w).copied().unwrap_or(0)))
        .collect();
    eprintln!("admitted per window: {windows:?} (limit {LIMIT}, max overshoot {MAX_OVERSHOOT})");
    for (w, n) in windows {
        assert!(
            n <= LIMIT + MAX_OVERSHOOT && n + MAX_OVERSHOOT >= LIMIT,
            "window {w}: the processes admitted {n} against {LIMIT} ± {MAX_OVERSHOOT}"
        );
    }
}
