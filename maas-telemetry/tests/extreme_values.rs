//! Extreme settings: the builders answer every value with `Ok` or a typed error, and what
//! they accept starts and shuts down without panicking. Run in debug and in release
//! (`scripts/test` does both).

use std::time::{Duration, Instant};

use maas_telemetry::prometheus::Registry;
use maas_telemetry::{HttpMetricsLayer, OtlpProtocol, Telemetry};

const DURATIONS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_secs(3600),
    Duration::from_nanos(u64::MAX),
    Duration::MAX,
];

#[test]
fn extreme_timeouts_and_ratios_build_and_shut_down_promptly() {
    // A closed port: nothing is listening, and nothing is exported (no spans are made).
    let endpoint = "http://127.0.0.1:1";
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        for export in DURATIONS {
            for shutdown in DURATIONS {
                for ratio in [0.0, 1.0, f64::MIN_POSITIVE, -0.0] {
                    let built = Telemetry::builder()
                        .service_name("extreme")
                        .otlp_endpoint(endpoint)
                        .otlp_protocol(protocol)
                        .export_timeout(export)
                        .shutdown_timeout(shutdown)
                        .sample_ratio(ratio)
                        .build_subscriber();
                    let (telemetry, _subscriber) = built.expect("valid settings build");
                    let started = Instant::now();
                    drop(telemetry);
                    assert!(started.elapsed() < Duration::from_secs(5), "shutdown hung");
                }
            }
        }
    }
}

#[test]
fn invalid_ratios_are_typed_errors() {
    for ratio in [f64::NAN, f64::INFINITY, -1.0, 1.000_001, f64::MAX] {
        assert!(
            Telemetry::builder()
                .sample_ratio(ratio)
                .build_subscriber()
                .is_err(),
            "{ratio}"
        );
    }
}

#[test]
fn extreme_histogram_buckets_are_accepted_or_refused_never_a_panic() {
    let cases: [Vec<f64>; 6] = [
        vec![],
        vec![f64::NAN],
        vec![f64::INFINITY],
        vec![f64::MIN_POSITIVE, f64::MAX],
        vec![-f64::MAX, 0.0, f64::MAX],
        vec![1.0, 1.0],
    ];
    for (i, buckets) in cases.into_iter().enumerate() {
        let ok = matches!(i, 3 | 4);
        let built = HttpMetricsLayer::builder()
            .buckets(buckets)
            .build(&Registry::new());
        assert_eq!(built.is_ok(), ok, "case {i}");
    }
}
