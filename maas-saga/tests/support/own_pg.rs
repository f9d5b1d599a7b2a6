//! A PostgreSQL cluster of the test's own (`initdb` and `pg_ctl` on a free port, in a
//! temporary directory), for tests that stop and restart the database — never the shared
//! server on 5432. Removed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `initdb` and `pg_ctl` are: on the PATH, or Debian's versioned directory.
fn bin(tool: &str) -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(p) = on_path {
        return p;
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("bin").join(tool))
            .find(|p| p.exists())
    });
    debian.unwrap_or_else(|| {
        panic!(
            "`{tool}` not found: install PostgreSQL's server binaries (`apt-get install \
             postgresql`, which `scripts/dev-services up` does)"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `program args` — as the `postgres` user when we are root (the server refuses root).
fn run(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

fn check(what: &str, out: std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cluster.
pub struct OwnPostgres {
    dir: PathBuf,
    pub port: u16,
    pg_ctl: PathBuf,
}

impl OwnPostgres {
    /// Makes and starts a cluster (trust authentication, user `postgres`) with `conf`
    /// appended to its `postgresql.conf`.
    pub fn start(name: &str, conf: &str) -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!(
            "maas-saga-pg-{name}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            check(
                "chown",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .output()
                    .unwrap(),
            );
        }
        let data = dir.join("data");
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ];
        check("initdb", run(&bin("initdb"), &args));
        let conf = format!("fsync = off\nlisten_addresses = '127.0.0.1'\n{conf}\n");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres {
            dir,
            port,
            pg_ctl: bin("pg_ctl"),
        };
        pg.resume();
        pg
    }

    /// `host=127.0.0.1 port=… user=postgres dbname=postgres`.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let options = format!("-p {} -k {}", self.port, self.dir.display());
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ];
        check("pg_ctl start", run(&self.pg_ctl, &args));
    }

    /// Stops the server (fast: sessions are cut, as in a restart or a failover).
    pub fn stop(&self) {
        let data = self.dir.join("data");
        let args = ["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"];
        check("pg_ctl stop", run(&self.pg_ctl, &args));
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = run(
            &self.pg_ctl,
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
