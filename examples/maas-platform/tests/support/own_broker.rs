//! A Kafka-API broker of the test's own: tansu (installed by `scripts/dev-services up`) on a
//! free port, storing in SQLite so that what it acknowledged survives a SIGKILL and restart —
//! never the shared broker on 9092. Killed, and its files removed, when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnBroker {
    pub addr: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnBroker {
    pub fn start(name: &str) -> OwnBroker {
        let port = super::process::free_port();
        let dir = std::env::temp_dir().join(format!(
            "maas-broker-{name}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = OwnBroker {
            addr: format!("127.0.0.1:{port}"),
            port,
            dir,
            child: None,
        };
        b.resume();
        b
    }

    /// Starts tansu (again) on the same port and storage; waits until it listens.
    pub fn resume(&mut self) {
        let tansu = std::env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"))
            .join("bin/tansu");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&tansu)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it with `scripts/dev-services up`",
                    tansu.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !super::process::listening(self.port) {
            assert!(
                Instant::now() < deadline,
                "tansu on {} did not start; see {}",
                self.addr,
                self.dir.join("tansu.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("the broker's log: {}", self.dir.join("tansu.log").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
