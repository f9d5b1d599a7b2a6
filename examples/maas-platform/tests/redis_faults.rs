//! The platform and a Redis of the test's own (never the shared one) that is killed and
//! started again while requests run: under the default outage policy (each replica keeps
//! its share of the limit) requests go on being answered, readiness reports Redis failing
//! while it is away, and the global limit is back once Redis is — with no platform restart.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use support::load::Load;

/// A redis-server on a free port; killed when dropped.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = OwnRedis { port, child: None };
        r.resume();
        r
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (`scripts/dev-services up` does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !support::process::listening(self.port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load() {
    let mut redis = OwnRedis::start();
    let platform = Platform::start(
        Config {
            redis_url: Some(format!("redis://127.0.0.1:{}/", redis.port)),
            rate_per_minute: 60_000,
            ..support::config("redis-restart")
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts with the test's Redis");
    let base = format!("http://{}", platform.addr());
    let http = reqwest::Client::new();
    let key = support::create_key(
        &http,
        &format!("http://{}", platform.admin_addr()),
        "redis-tenant",
    )
    .await;

    // (status, seconds) of each request.
    let load = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        Load::start(2, Duration::from_millis(10), move |_, _| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move {
                let started = Instant::now();
                let code = match http
                    .get(format!("{base}/v1/models"))
                    .bearer_auth(&key)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                (code, started.elapsed().as_secs_f64())
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(support::readiness(&http, &base).await.0, 200);
    redis.stop();
    let not_ready_after =
        support::await_readiness(&http, &base, 503, Some("redis"), Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.resume();
    let ready_after =
        support::await_readiness(&http, &base, 200, None, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers: Vec<(u16, f64)> = load.stop().await;
    let failed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the Redis restart: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(10)]
    );
    let slowest = answers.iter().map(|a| a.1).fold(0.0, f64::max);
    // The limit is global again: the tenant's window is counted in Redis.
    let keys = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"KEYS maas:platform:keys*\r\n").unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // A RESP array of the keys: `*<count>`.
    assert!(
        keys.starts_with('*') && !keys.starts_with("*0"),
        "nothing counted in Redis after it came back: {keys:?}"
    );
    println!(
        "redis restart: {} requests, 0 failed, slowest {slowest:.3} s; not ready {not_ready_after:.1} s \
         after the kill, ready {ready_after:.1} s after the start",
        answers.len()
    );
    platform.shutdown().await;
}
