//! TLS to the collector, against a real rustls receiver on 127.0.0.1 whose certificates the
//! test makes: OTLP/HTTPS and OTLP/gRPC over TLS with a custom CA, mutual TLS, a server the
//! CA did not sign (a clear message, retried like any failure), PEM files that fail at
//! start naming themselves, and headers read from a file that never show in `ps`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::otlp;
use tests::receiver::{Protocol, Receiver, Respond};
use tests::tls::Pki;
use ue_decoder::{
    Batch, OtlpConfig, Protocol as Transport, Request, RetryConfig, Signal, SinkConfig, SinkSet,
    SinkSnapshot, TlsConfig,
};

const PATIENCE: Duration = Duration::from_secs(10);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ue-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sink(protocol: Transport, endpoint: String, tls: TlsConfig) -> SinkConfig {
    SinkConfig::Otlp(OtlpConfig {
        endpoint,
        timeout: Duration::from_secs(2),
        retry: RetryConfig {
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(30),
            randomization: 0.0,
            ..RetryConfig::default()
        },
        tls,
        ..OtlpConfig::new(protocol)
    })
}

fn with_ca(pki: &Pki) -> TlsConfig {
    TlsConfig::from_files(Some(&pki.ca), None, None).unwrap()
}

fn with_client_cert(pki: &Pki) -> TlsConfig {
    TlsConfig::from_files(Some(&pki.ca), Some(&pki.client_cert), Some(&pki.client_key)).unwrap()
}

fn traces(tag: &str) -> Arc<Batch> {
    Arc::new(Batch::new(Request::Traces(otlp::traces_request(tag, 2))))
}

async fn wait_for(
    set: &SinkSet,
    index: usize,
    done: impl Fn(&SinkSnapshot) -> bool,
) -> SinkSnapshot {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let snap = set.snapshot().swap_remove(index);
        if done(&snap) {
            return snap;
        }
        assert!(Instant::now() < deadline, "timed out; sink is at {snap:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_grpc_over_tls_deliver_with_a_custom_ca() {
    let pki = Pki::new(&scratch("custom-ca"), "custom");
    let receiver = Receiver::builder()
        .tls(pki.server_config(false))
        .start()
        .await
        .unwrap();
    assert!(receiver.http_endpoint().starts_with("https://"));
    let set = SinkSet::start(
        vec![
            sink(
                Transport::HttpProtobuf,
                receiver.http_endpoint(),
                with_ca(&pki),
            ),
            sink(Transport::Grpc, receiver.grpc_endpoint(), with_ca(&pki)),
        ],
        1 << 20,
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    set.submit(traces("tls"));
    for i in 0..2 {
        let s = wait_for(&set, i, |s| s.batches_sent == 1).await;
        assert_eq!(
            (s.items_sent, s.retries, s.last_error.as_deref()),
            (2, 0, None)
        );
    }
    let received = receiver.received();
    let mut protocols: Vec<_> = received.iter().map(|r| r.protocol.as_str()).collect();
    protocols.sort();
    assert_eq!(protocols, ["grpc", "http"]);
    assert_eq!(receiver.accepted_items(Signal::Traces), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_works_with_the_client_certificate_and_is_refused_without() {
    let pki = Pki::new(&scratch("mtls"), "mtls");
    let receiver = Receiver::builder()
        .tls(pki.server_config(true))
        .start()
        .await
        .unwrap();
    let set = SinkSet::start(
        vec![
            sink(
                Transport::HttpProtobuf,
                receiver.http_endpoint(),
                with_client_cert(&pki),
            ),
            sink(
                Transport::Grpc,
                receiver.grpc_endpoint(),
                with_client_cert(&pki),
            ),
            sink(
                Transport::HttpProtobuf,
                receiver.http_endpoint(),
                with_ca(&pki),
            ),
            sink(Transport::Grpc, receiver.grpc_endpoint(), with_ca(&pki)),
        ],
        1 << 20,
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    set.submit(traces("mtls"));
    for i in 0..2 {
        let s = wait_for(&set, i, |s| s.batches_sent == 1).await;
        assert_eq!(s.last_error, None);
    }
    // Without a certificate: refused, and retried like any network failure.
    for i in 2..4 {
        let s = wait_for(&set, i, |s| s.retries >= 2).await;
        assert_eq!(s.batches_sent, 0);
        let error = s.last_error.unwrap();
        eprintln!("{}: {error}", s.name);
        assert!(
            error.contains("it may require a client certificate (--client-cert and --client-key)"),
            "the failure says a client certificate is wanted: {error}"
        );
    }
    assert_eq!(
        receiver.received().len(),
        2,
        "only the sinks with a certificate got in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_the_ca_did_not_sign_fails_saying_so_and_is_retried() {
    let ours = Pki::new(&scratch("wrong-ca-ours"), "ours");
    let theirs = Pki::new(&scratch("wrong-ca-theirs"), "theirs");
    let receiver = Receiver::builder()
        .tls(theirs.server_config(false))
        .start()
        .await
        .unwrap();
    let set = SinkSet::start(
        vec![
            sink(
                Transport::HttpProtobuf,
                receiver.http_endpoint(),
                with_ca(&ours),
            ),
            sink(Transport::Grpc, receiver.grpc_endpoint(), with_ca(&ours)),
        ],
        1 << 20,
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    set.submit(traces("wrong-ca"));
    let ca = ours.ca.display().to_string();
    for i in 0..2 {
        let s = wait_for(&set, i, |s| s.retries >= 2).await;
        assert_eq!(s.batches_sent, 0);
        let error = s.last_error.unwrap();
        eprintln!("{}: {error}", s.name);
        assert!(
            error.contains("certificate was not trusted") && error.contains(&ca),
            "says the certificate was not trusted and names the CA file: {error}"
        );
    }
    assert!(receiver.received().is_empty());
}

#[test]
fn pem_files_that_are_missing_or_invalid_fail_at_start_naming_the_file() {
    let dir = scratch("bad-pem");
    let missing = dir.join("missing-ca.pem");
    let err = TlsConfig::from_files(Some(&missing), None, None).unwrap_err();
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is no certificate\n").unwrap();
    let rt = tests::runtime();
    for protocol in [Transport::HttpProtobuf, Transport::Grpc] {
        let tls = TlsConfig::from_files(Some(&garbage), None, None).unwrap();
        let err = SinkSet::start(
            vec![sink(protocol, "https://127.0.0.1:4318".into(), tls)],
            1 << 20,
            rt.handle(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("garbage.pem"), "{err}");
    }

    // The binary: it refuses to start, naming the file, before touching the kernel.
    let pki = Pki::new(&dir, "bad-pem");
    for (flag, path, also) in [
        ("--ca-file", missing.as_path(), None),
        (
            "--client-key",
            garbage.as_path(),
            Some(("--client-cert", pki.client_cert.as_path())),
        ),
    ] {
        let mut cmd = Command::new(tests::built("ue-decoder"));
        cmd.args(["run", "--endpoint", "https://127.0.0.1:4318", flag])
            .arg(path);
        if let Some((flag, path)) = also {
            cmd.arg(flag).arg(path);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&path.display().to_string()),
            "{flag}: names {}: {stderr}",
            path.display()
        );
    }
}

/// `/proc/<pid>/cmdline`, the argv every user sees in `ps`.
fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ")
}

/// Forwards the examples capture with `ue-decoder decode` to `endpoint`, with `env` set;
/// returns the argv it ran with, read while it waited for the receiver, and its stderr.
fn decode_to(
    receiver: &Receiver,
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    args: &[&Path],
    env: &[(&str, &Path)],
) -> (String, String) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/examples.perf.data");
    let before = receiver.received().len();
    let mut cmd = Command::new(tests::built("ue-decoder"));
    cmd.arg("decode")
        .arg(&fixture)
        .args(["--endpoint", endpoint])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let child = cmd.spawn().unwrap();
    // The receiver holds its answers back, so the process is still there to look at.
    let arrived = rt.block_on(receiver.wait_for_requests(before + 1, PATIENCE));
    let argv = cmdline(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(arrived && out.status.success(), "{stderr}");
    (argv, stderr)
}

#[test]
fn headers_from_a_file_arrive_and_stay_out_of_argv_with_the_otel_tls_variables() {
    let dir = scratch("headers");
    let pki = Pki::new(&dir, "headers");
    let headers = dir.join("headers");
    std::fs::write(
        &headers,
        "# the collector's API key\nAuthorization: Bearer s3cret-token\n\nx-tenant:  team-a \n",
    )
    .unwrap();
    let rt = tests::runtime();
    let receiver = rt
        .block_on(Receiver::builder().tls(pki.server_config(true)).start())
        .unwrap();
    for signal in Signal::ALL {
        receiver.set_default(signal, Respond::Ok.after(Duration::from_millis(300)));
    }
    let headers_arg = [Path::new("--headers-file"), headers.as_path()];
    // OTLP/HTTP with the flags; OTLP/gRPC with the OpenTelemetry variables instead.
    let (argv, _) = decode_to(
        &receiver,
        &rt,
        &receiver.http_endpoint(),
        &[
            &headers_arg[..],
            &[Path::new("--ca-file"), &pki.ca],
            &[Path::new("--client-cert"), &pki.client_cert],
            &[Path::new("--client-key"), &pki.client_key],
        ]
        .concat(),
        &[],
    );
    assert!(
        argv.contains("--headers-file") && !argv.contains("s3cret"),
        "{argv}"
    );
    let grpc_env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", Path::new("grpc")),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca.as_path()),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            pki.client_cert.as_path(),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.client_key.as_path()),
    ];
    let (argv, _) = decode_to(
        &receiver,
        &rt,
        &receiver.grpc_endpoint(),
        &headers_arg,
        &grpc_env,
    );
    assert!(!argv.contains("s3cret"), "{argv}");

    let received = receiver.received();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let of: Vec<_> = received.iter().filter(|r| r.protocol == protocol).collect();
        assert!(!of.is_empty(), "{protocol:?} requests arrived");
        for r in of {
            assert_eq!(r.header("authorization"), Some("Bearer s3cret-token"));
            assert_eq!(r.header("x-tenant"), Some("team-a"));
        }
    }
}

#[test]
fn a_headers_file_line_without_a_colon_is_reported_with_its_line() {
    let dir = scratch("bad-headers");
    let path = dir.join("headers");
    std::fs::write(&path, "x-ok: 1\nno colon here\n").unwrap();
    let err = ue_decoder::read_headers_file(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}:2", path.display())), "{err}");
    let missing = ue_decoder::read_headers_file(&dir.join("nope")).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}
