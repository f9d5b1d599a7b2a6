//! The binary's command line: `--help` and `--version` print and exit; anything else is
//! refused (exit 2) instead of starting a server.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maas-platform"))
        .args(args)
        // Were it to start a server, it must not collide with anything: free ports.
        .env("MAAS_ADDR", "127.0.0.1:0")
        .env("MAAS_ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version_print_and_exit_and_other_arguments_are_refused() {
    for flag in ["--help", "-h"] {
        let (code, out, _) = run(&[flag]);
        assert_eq!(code, 0, "{flag}");
        assert!(out.contains("Usage: maas-platform"), "{out}");
        assert!(out.contains("MAAS_ADMIN_TOKEN"), "{out}");
    }
    for flag in ["--version", "-V"] {
        let (code, out, _) = run(&[flag]);
        assert_eq!(code, 0);
        assert_eq!(
            out.trim(),
            format!("maas-platform {}", env!("CARGO_PKG_VERSION"))
        );
    }
    for args in [&["serve"][..], &["--port", "9000"], &["--help", "extra"]] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("unexpected argument"), "{err}");
        assert!(out.is_empty(), "it did not start: {out}");
    }
}
