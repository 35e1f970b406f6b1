//! Where an archived object goes: its key, from the signal, the hour it is written (UTC),
//! the service and the trace or batch. Pure: the time comes in as an argument.
//!
//! ```text
//! PREFIX/traces/YYYY/MM/DD/HH/SERVICE/TRACE_ID.json.gz       the first object of a trace
//! PREFIX/traces/YYYY/MM/DD/HH/SERVICE/TRACE_ID.N.json.gz     its late spans, N = 1, 2, ...
//! PREFIX/logs/YYYY/MM/DD/HH/SERVICE/BATCH_ID.json.gz
//! PREFIX/metrics/YYYY/MM/DD/HH/SERVICE/BATCH_ID.json.gz
//! ```

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use ue_proto::common::v1::{KeyValue, any_value};
use ue_proto::resource::v1::Resource;

use crate::decode::Signal;

/// The service of a resource without `service.name`, as the OpenTelemetry SDKs name it.
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";

/// The trace id segment of a span whose trace id is not 16 bytes.
pub(crate) const INVALID_TRACE_ID: &str = "invalid";

/// The longest service segment, escaped: longer names are cut and get a hash of the
/// whole name, so two long names that share a beginning stay apart.
const MAX_SERVICE_SEGMENT: usize = 128;

/// `service` as one key segment: every byte other than ASCII letters, digits, `-` and `_`
/// as `%XX` (so `.`, `/`, `%`, spaces and anything non-ASCII too), which no object store
/// treats specially and which decodes back to the name. An empty name is
/// [`UNKNOWN_SERVICE`], like a missing one.
pub(crate) fn service_segment(service: &str) -> String {
    if service.is_empty() {
        return UNKNOWN_SERVICE.into();
    }
    let mut out = String::with_capacity(service.len());
    for b in service.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_SERVICE_SEGMENT {
        let mut cut = MAX_SERVICE_SEGMENT - 17;
        // Never in the middle of an escape.
        while out.as_bytes()[cut - 1] == b'%' || out.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        out.truncate(cut);
        let _ = write!(out, "~{:016x}", fnv1a(service.as_bytes()));
    }
    out
}

/// A resource's `service.name` (a string attribute), or `""` if it has none.
pub(crate) fn service_name(resource: Option<&Resource>) -> &str {
    let attributes: &[KeyValue] = resource.map_or(&[], |r| &r.attributes);
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A trace id as its key segment: lower-case hex, or [`INVALID_TRACE_ID`].
pub(crate) fn trace_segment(trace_id: &[u8]) -> String {
    if trace_id.len() != 16 {
        return INVALID_TRACE_ID.into();
    }
    trace_id.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The `YYYY/MM/DD/HH` of `at`, UTC.
pub(crate) fn hour_path(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}/{m:02}/{d:02}/{:02}", (secs % 86_400) / 3_600)
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The key of an object: `prefix/signal/YYYY/MM/DD/HH/service/name[.sequence].json.gz`,
/// with `service` escaped ([`service_segment`]) and `name` a trace segment or a batch id.
pub(crate) fn object_key(
    prefix: &str,
    signal: Signal,
    at: SystemTime,
    service: &str,
    name: &str,
    sequence: u32,
) -> String {
    let mut key = String::new();
    if !prefix.is_empty() {
        key.push_str(prefix);
        key.push('/');
    }
    let _ = write!(
        key,
        "{}/{}/{}/{name}",
        signal.as_str(),
        hour_path(at),
        service_segment(service)
    );
    if sequence > 0 {
        let _ = write!(key, ".{sequence}");
    }
    key.push_str(".json.gz");
    key
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn services_are_escaped_into_one_safe_segment() {
        assert_eq!(service_segment("checkout"), "checkout");
        assert_eq!(service_segment("my-svc_2"), "my-svc_2");
        assert_eq!(service_segment("a/b"), "a%2Fb");
        assert_eq!(service_segment(".."), "%2E%2E");
        assert_eq!(service_segment("x y%"), "x%20y%25");
        assert_eq!(service_segment("café"), "caf%C3%A9");
        assert_eq!(service_segment(""), UNKNOWN_SERVICE);
        let long = "é".repeat(200);
        let a = service_segment(&long);
        let b = service_segment(&format!("{long}x"));
        assert!(a.len() <= MAX_SERVICE_SEGMENT, "{}", a.len());
        assert_ne!(a, b, "long names stay apart");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"%~-_".contains(&c))
        );
    }

    #[test]
    fn trace_ids_are_hex() {
        assert_eq!(trace_segment(&[0xab; 16]), "ab".repeat(16));
        assert_eq!(trace_segment(&[1; 8]), INVALID_TRACE_ID);
        assert_eq!(trace_segment(&[]), INVALID_TRACE_ID);
    }

    #[test]
    fn hours_are_utc_calendar_dates() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(hour_path(at(0)), "1970/01/01/00");
        // 2026-12-01T14:30:00Z
        assert_eq!(hour_path(at(1_796_135_400)), "2026/12/01/14");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(hour_path(at(1_709_251_199)), "2024/02/29/23");
        assert_eq!(hour_path(at(1_709_251_200)), "2024/03/01/00");
    }

    #[test]
    fn keys_follow_the_layout() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_135_400);
        let trace = "ab".repeat(16);
        assert_eq!(
            object_key("archive/x", Signal::Traces, at, "shop/cart", &trace, 0),
            format!("archive/x/traces/2026/12/01/14/shop%2Fcart/{trace}.json.gz")
        );
        assert_eq!(
            object_key("", Signal::Traces, at, "shop", &trace, 2),
            format!("traces/2026/12/01/14/shop/{trace}.2.json.gz")
        );
        assert_eq!(
            object_key("p", Signal::Logs, at, "", "17-ab-3", 0),
            "p/logs/2026/12/01/14/unknown_service/17-ab-3.json.gz"
        );
    }
}
