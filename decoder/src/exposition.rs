//! What the two `/metrics` endpoints share: the Prometheus text exposition format (version
//! 0.0.4: escaping, numbers, family headers) and the small HTTP/1 server they run on. The
//! admin endpoint (`--admin-addr`) serves the decoder's own counters through it, the
//! Prometheus sink (`--prometheus-addr`) the applications' metrics.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The media type of the text format, version 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// A 200 response carrying `body` in the text format.
pub(crate) fn metrics(body: String) -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}

/// Serves `listener` over HTTP/1, answering every request with `respond`, until the task
/// is dropped or aborted. `what` names the endpoint in the logs.
pub(crate) async fn serve<F>(listener: TcpListener, what: &'static str, respond: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::debug!("{what}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let respond = Arc::clone(&respond);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = respond(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("{what}: connection from {peer}: {e}");
            }
        });
    }
}

/// A label value as the text format quotes it: backslash, double quote and newline escaped.
pub(crate) fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// `# HELP` (when there is help text: backslash and newline escaped) and `# TYPE` lines.
pub(crate) fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    if !help.is_empty() {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{k="v",...}`, nothing when there are no labels.
pub(crate) fn write_labels<'a>(
    out: &mut String,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
    }
    if !first {
        out.push('}');
    }
}

/// A number as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it, which is what the
/// Prometheus client libraries expose: the shortest text that reads back as `v`, in
/// exponent form below 1e-4 and from 1e21, and `+Inf`, `-Inf`, `NaN`. The same bound is
/// the same `le` label value whoever exposes it.
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let abs = v.abs();
    if abs == 0.0 || (1e-4..1e21).contains(&abs) {
        return format!("{v}");
    }
    // Rust writes `1.5e-7`; Go writes `1.5e-07`: a sign and at least two exponent digits.
    let e = format!("{v:e}");
    match e.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_go_writes_them() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.005, "0.005"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.0, "123456789"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (2.5e300, "2.5e+300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(format_float(v), want, "{v:?}");
        }
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let mut out = String::new();
        write_header(&mut out, "x", "gauge", "a \\ b\nc \"d\"");
        write_labels(&mut out, [("a", "q\"b\\s\nn"), ("b", "")]);
        assert_eq!(
            out,
            "# HELP x a \\\\ b\\nc \"d\"\n# TYPE x gauge\n{a=\"q\\\"b\\\\s\\nn\",b=\"\"}"
        );
        let mut none = String::new();
        write_header(&mut none, "y", "counter", "");
        write_labels(&mut none, []);
        assert_eq!(none, "# TYPE y counter\n");
    }
}
