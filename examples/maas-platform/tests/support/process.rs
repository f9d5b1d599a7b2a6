//! The platform binary as a process of the test's: its settings in the environment, both
//! listeners on free ports, its log in a file; started, SIGTERMed or SIGKILLed at will.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether something listens on `port` of loopback. A connection whose local address is its
/// peer's does not count: with nothing listening on a port of the ephemeral range, Linux may
/// pick that very port as the source and connect the socket to itself.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| {
        match (s.local_addr(), s.peer_addr()) {
            (Ok(local), Ok(peer)) => local != peer,
            _ => false,
        }
    })
}

/// One platform process (the same settings at every start).
pub struct PlatformProcess {
    /// Its settings.
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// `http://127.0.0.1:<port>`: the API.
    pub base: String,
    /// `http://127.0.0.1:<port>`: the admin API.
    pub admin: String,
    pub addr: std::net::SocketAddr,
    child: Option<Child>,
}

impl PlatformProcess {
    /// Settings `env` (besides the listeners and the admin token); its log is
    /// `<temp>/maas-platform-<name>.log`.
    pub fn new(name: &str, env: Vec<(&str, String)>) -> PlatformProcess {
        let (port, admin_port) = (free_port(), free_port());
        let mut all = vec![
            ("MAAS_ADDR".to_owned(), format!("127.0.0.1:{port}")),
            (
                "MAAS_ADMIN_ADDR".to_owned(),
                format!("127.0.0.1:{admin_port}"),
            ),
            ("MAAS_ADMIN_TOKEN".to_owned(), super::ADMIN_TOKEN.to_owned()),
        ];
        all.extend(env.into_iter().map(|(k, v)| (k.to_owned(), v)));
        PlatformProcess {
            env: all,
            log: std::env::temp_dir().join(format!("maas-platform-{name}.log")),
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            addr: ([127, 0, 0, 1], port).into(),
            child: None,
        }
    }

    /// Starts the binary and waits until `/health/live` answers.
    pub async fn start(&mut self, http: &reqwest::Client) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_maas-platform"));
        // Only the settings given: none inherited from the test's environment.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAAS_")) {
            cmd.env_remove(k);
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the platform binary starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = http
                .get(format!("{}/health/live", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the platform exited ({status}); see {}", self.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "the platform did not answer /health/live in 60 s; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reaped");
        }
    }

    /// SIGTERM, then the exit status and how long the stop took.
    pub async fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no exit 60 s after SIGTERM; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PlatformProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
