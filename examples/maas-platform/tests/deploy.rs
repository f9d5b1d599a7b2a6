//! The artefacts under `deploy/` hold up: the alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), the Prometheus configuration `promtool check
//! config`; every metric the Grafana dashboard and the alerts
//! query is one the running platform actually exports; the Helm chart lints, renders exactly
//! the committed Kubernetes manifests, and every rendering validates strictly against the
//! Kubernetes API schemas.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use maas_platform::{Config, Platform};
use serde_json::{Value, json};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Runs `program` in `deploy/<dir>`; its standard output. Fails, saying how to install the
/// tool, when it is missing.
fn run(program: &str, args: &[&str], dir: &str) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(deploy().join(dir))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install it with `scripts/dev-services up`")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn promtool(args: &[&str]) {
    run("promtool", args, "prometheus");
}

#[test]
fn helm_chart_renders_the_committed_manifests_and_they_validate() {
    run("helm", &["lint", "--strict", "maas-platform"], "helm");
    let rendered = run(
        "helm",
        &["template", "maas-platform", "maas-platform"],
        "helm",
    );
    let committed = std::fs::read_to_string(deploy().join("k8s/maas-platform.yaml")).unwrap();
    let committed: String = committed
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        committed.trim() == rendered.trim(),
        "deploy/k8s/maas-platform.yaml is out of date: regenerate it with \
         `helm template maas-platform examples/maas-platform/deploy/helm/maas-platform`"
    );
    for needle in [
        "kind: HorizontalPodAutoscaler",
        "maxUnavailable: 0",
        "name: MAAS_INSTANCE",
        "readOnlyRootFilesystem: true",
        "checksum/config:",
        "MAAS_REDIS_URL:",
        "kind: NetworkPolicy",
        "path: /health/ready",
        "kind: PersistentVolumeClaim",
    ] {
        assert!(
            rendered.contains(needle),
            "{needle} missing from the rendered chart"
        );
    }
    // A second rendering: fixed replicas, credentials from an existing Secret, no Ingress,
    // PostgreSQL's certificate authority from a Secret.
    let variant = run(
        "helm",
        &[
            "template",
            "maas-platform",
            "maas-platform",
            "--set",
            "autoscaling.enabled=false",
            "--set",
            "existingSecret=platform-credentials",
            "--set",
            "ingress.enabled=false",
            "--set",
            "database.caSecret=postgres-ca",
        ],
        "helm",
    );
    assert!(variant.contains("replicas: 3") && !variant.contains("kind: Secret"));
    assert!(
        variant.contains("value: /etc/maas/database-ca/ca.crt")
            && variant.contains("secretName: postgres-ca")
    );
    let dir = std::env::temp_dir().join(format!("maas-platform-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1.29 is the oldest Kubernetes the chart supports (the preStop `sleep` handler).
    for (name, manifests) in [("default.yaml", &rendered), ("variant.yaml", &variant)] {
        let path = dir.join(name);
        std::fs::write(&path, manifests).unwrap();
        for version in ["1.29.0", "1.33.0"] {
            let out = run(
                "python3",
                &[
                    "-m",
                    "kubernetes_validate",
                    "--strict",
                    "-k",
                    version,
                    path.to_str().unwrap(),
                ],
                "k8s",
            );
            assert!(!out.contains("ERROR"), "Kubernetes {version}: {out}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn alert_rules_are_valid_and_their_tests_pass() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
    // The compose stack's Prometheus configuration, its rule file included.
    promtool(&["check", "config", "prometheus.yml"]);
}

/// The metric names (`http_*`, `maas_*`) a PromQL expression reads.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("http_") || t.starts_with("maas_"))
        .map(str::to_owned)
        .collect()
}

fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("grafana/maas-platform.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut exprs = Vec::new();
    for p in panels {
        let targets = p["targets"]
            .as_array()
            .expect("every panel queries something");
        assert!(!targets.is_empty(), "{}", p["title"]);
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }
    exprs
}

fn alert_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    // The rules file is YAML; the expressions are the `expr:` values (one line, or a block).
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let mut expr = rest.trim().trim_start_matches('|').to_owned();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent.len() {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(expr);
    }
    assert!(exprs.len() >= 8, "{exprs:?}");
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_metrics_the_platform_exports() {
    let config = Config {
        build_time: Duration::from_millis(10),
        rate_per_minute: 8,
        ..support::config("deploy")
    };
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(config, prometheus::Registry::new())
        .await
        .unwrap();
    let base = format!("http://{}", platform.addr());
    let http = reqwest::Client::new();
    let key =
        support::create_key(&http, &format!("http://{}", platform.admin_addr()), "dash").await;
    // Traffic that makes every family appear: a build, a failing build (dead letter), an
    // inference (breaker), and enough requests to be rate limited.
    let mut ids = Vec::new();
    for (name, file) in [
        ("dash-model", support::model_file("dash")),
        ("broken-dash", support::broken_file("dash")),
    ] {
        let (_, r) = support::upload(&http, &base, Some(&key), name, file).await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    let mut status = String::new();
    for _ in 0..200 {
        let m = support::get_json(&http, &format!("{base}/v1/models/{}", ids[0]), &key).await;
        status = m["status"].as_str().unwrap().to_owned();
        if status == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "ready");
    let _ = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": ids[0], "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    let mut limited = false;
    for _ in 0..10 {
        let r = http
            .get(format!("{base}/v1/tenants/dash/quota"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        limited |= r.status() == 429;
    }
    assert!(limited);
    // Let the builders commit and publish lag.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scrape = support::get_text(&http, &format!("{base}/metrics")).await;
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);

    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // Families that only appear once something rare happened; the crates' own tests cover
    // them. Everything else must be on the page after ordinary traffic.
    let rare = ["maas_saga_stuck_undo_total"];
    let mut missing = Vec::new();
    for expr in dashboard_queries().iter().chain(alert_queries().iter()) {
        for name in metrics_in(expr) {
            if !exported.contains(name.as_str()) && !rare.contains(&name.as_str()) {
                missing.push((name, expr.clone()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:#?}\nexported: {exported:#?}"
    );
}

/// `docker-compose <args>` on the compose stack, with `token` as MAAS_ADMIN_TOKEN.
fn compose(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new("docker-compose");
    cmd.args(["-f", "compose.yaml"])
        .args(args)
        .current_dir(deploy().join("compose"))
        .env_remove("MAAS_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("MAAS_ADMIN_TOKEN", t);
    }
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run docker-compose ({e}); install it with `scripts/dev-services up`")
    })
}

#[test]
fn the_compose_stack_is_valid_and_mounts_files_that_exist() {
    let out = compose(&["config"], Some("compose-test-token-0123456789"));
    let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services = compose(&["config", "--services"], Some("t"));
    let services: BTreeSet<String> = String::from_utf8_lossy(&services.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = [
        "maas-1",
        "maas-2",
        "maas-3",
        "proxy",
        "postgres",
        "redis",
        "kafka",
        "kafka-topics",
        "prometheus",
        "alertmanager",
        "grafana",
        "jaeger",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(services, expected);
    // Every replica gets the shared settings and its own instance name.
    for n in 1..=3 {
        assert!(
            rendered.contains(&format!("MAAS_INSTANCE: maas-{n}")),
            "{rendered}"
        );
    }
    assert_eq!(
        rendered.matches("MAAS_KAFKA_BROKERS: kafka:9092").count(),
        3
    );
    // Bind mounts name files of the repository (the admin token is the user's to write).
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .display()
        .to_string();
    let mut mounts = 0;
    for line in rendered.lines() {
        let Some(bind) = line.trim().strip_prefix("- ") else {
            continue;
        };
        let source = bind.split(':').next().unwrap();
        if !source.starts_with(&repo) {
            continue;
        }
        mounts += 1;
        if source.ends_with("/admin-token") {
            continue;
        }
        assert!(
            std::path::Path::new(&source).exists(),
            "the compose stack mounts {source}, which does not exist"
        );
    }
    assert!(mounts >= 7, "{mounts} bind mounts of repository files");
    // Prometheus scrapes exactly the compose replicas.
    let prometheus = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml")).unwrap();
    assert!(prometheus.contains(r#"["maas-1:8080", "maas-2:8080", "maas-3:8080"]"#));
    // No default admin token: unset, the stack refuses to render.
    let unset = compose(&["config", "-q"], None);
    assert!(!unset.status.success());
    assert!(String::from_utf8_lossy(&unset.stderr).contains("set MAAS_ADMIN_TOKEN"));
    println!("docker-compose config: {} services valid", services.len());
}
