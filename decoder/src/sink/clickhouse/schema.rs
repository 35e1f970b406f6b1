//! The tables the ClickHouse sink writes, as close to the OpenTelemetry Collector's
//! ClickHouse exporter's (`otel_traces`, `otel_logs`, `otel_metrics_*`) as ClickHouse 18.16
//! (Debian's `clickhouse-server`) allows, and the SQL that creates and fills them.
//!
//! What 18.16 lacks, and what stands in for it (the same DDL works on every later server):
//! - `Map(K, V)`: attributes are `Nested(Keys String, Values String)`, that is two parallel
//!   arrays, `X.Keys` and `X.Values` (`X.Values[indexOf(X.Keys, 'k')]` for `X['k']`); inside
//!   another `Nested` (events, links, exemplars) they are `AttributesKeys` and
//!   `AttributesValues`, arrays of arrays.
//! - `DateTime64(9)`: every such column `T` is two, `T DateTime` (seconds, UTC) and
//!   `TNano UInt64` (nanoseconds since the epoch, exact).
//! - `LowCardinality(String)`, `Bool`, `CODEC(...)`, skip indexes and `TTL`: `String`,
//!   `UInt8`, the default compression, none and none.
//! - A `Map` in the sorting key: the metric tables sort by service, name and time only.

/// One column: a plain one, or a `Nested` group of arrays.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Column {
    /// `name type`.
    Plain(&'static str, &'static str),
    /// `name Nested(sub type, ...)`: one `Array(type)` column `name.sub` per member.
    Nested(&'static str, &'static [(&'static str, &'static str)]),
}

use Column::{Nested, Plain};

/// One table: its name after the prefix, its columns in the order rows are encoded, how it
/// is partitioned and sorted.
#[derive(Debug)]
pub(crate) struct Table {
    /// Appended to the table prefix: `traces` makes `otel_traces`.
    pub(crate) suffix: &'static str,
    pub(crate) columns: &'static [Column],
    pub(crate) partition_by: &'static str,
    pub(crate) order_by: &'static str,
}

const ATTRIBUTES: &[(&str, &str)] = &[("Keys", "String"), ("Values", "String")];

/// The columns every metric table starts with.
macro_rules! metric_columns {
    ($($rest:expr),* $(,)?) => {
        &[
            Nested("ResourceAttributes", ATTRIBUTES),
            Plain("ResourceSchemaUrl", "String"),
            Plain("ScopeName", "String"),
            Plain("ScopeVersion", "String"),
            Nested("ScopeAttributes", ATTRIBUTES),
            Plain("ScopeDroppedAttrCount", "UInt32"),
            Plain("ScopeSchemaUrl", "String"),
            Plain("ServiceName", "String"),
            Plain("MetricName", "String"),
            Plain("MetricDescription", "String"),
            Plain("MetricUnit", "String"),
            Nested("Attributes", ATTRIBUTES),
            Plain("StartTimeUnix", "DateTime"),
            Plain("StartTimeUnixNano", "UInt64"),
            Plain("TimeUnix", "DateTime"),
            Plain("TimeUnixNano", "UInt64"),
            $($rest),*
        ]
    };
}

const EXEMPLARS: Column = Nested(
    "Exemplars",
    &[
        ("FilteredAttributesKeys", "Array(String)"),
        ("FilteredAttributesValues", "Array(String)"),
        ("TimeUnix", "DateTime"),
        ("TimeUnixNano", "UInt64"),
        ("Value", "Float64"),
        ("SpanId", "String"),
        ("TraceId", "String"),
    ],
);

const METRICS_PARTITION: &str = "toDate(TimeUnix)";
const METRICS_ORDER: &str = "(ServiceName, MetricName, TimeUnix)";

/// Spans.
pub(crate) const TRACES: Table = Table {
    suffix: "traces",
    columns: &[
        Plain("Timestamp", "DateTime"),
        Plain("TimestampNano", "UInt64"),
        Plain("TraceId", "String"),
        Plain("SpanId", "String"),
        Plain("ParentSpanId", "String"),
        Plain("TraceState", "String"),
        Plain("SpanName", "String"),
        Plain("SpanKind", "String"),
        Plain("ServiceName", "String"),
        Nested("ResourceAttributes", ATTRIBUTES),
        Plain("ScopeName", "String"),
        Plain("ScopeVersion", "String"),
        Nested("SpanAttributes", ATTRIBUTES),
        Plain("Duration", "UInt64"),
        Plain("StatusCode", "String"),
        Plain("StatusMessage", "String"),
        Nested(
            "Events",
            &[
                ("Timestamp", "DateTime"),
                ("TimestampNano", "UInt64"),
                ("Name", "String"),
                ("AttributesKeys", "Array(String)"),
                ("AttributesValues", "Array(String)"),
            ],
        ),
        Nested(
            "Links",
            &[
                ("TraceId", "String"),
                ("SpanId", "String"),
                ("TraceState", "String"),
                ("AttributesKeys", "Array(String)"),
                ("AttributesValues", "Array(String)"),
            ],
        ),
    ],
    partition_by: "toDate(Timestamp)",
    order_by: "(ServiceName, SpanName, Timestamp)",
};

/// Log records.
pub(crate) const LOGS: Table = Table {
    suffix: "logs",
    columns: &[
        Plain("Timestamp", "DateTime"),
        Plain("TimestampNano", "UInt64"),
        Plain("TraceId", "String"),
        Plain("SpanId", "String"),
        Plain("TraceFlags", "UInt8"),
        Plain("SeverityText", "String"),
        Plain("SeverityNumber", "UInt8"),
        Plain("ServiceName", "String"),
        Plain("Body", "String"),
        Plain("ResourceSchemaUrl", "String"),
        Nested("ResourceAttributes", ATTRIBUTES),
        Plain("ScopeSchemaUrl", "String"),
        Plain("ScopeName", "String"),
        Plain("ScopeVersion", "String"),
        Nested("ScopeAttributes", ATTRIBUTES),
        Nested("LogAttributes", ATTRIBUTES),
    ],
    partition_by: "toDate(Timestamp)",
    order_by: "(ServiceName, Timestamp)",
};

/// Gauge points.
pub(crate) const GAUGE: Table = Table {
    suffix: "metrics_gauge",
    columns: metric_columns![
        Plain("Value", "Float64"),
        Plain("Flags", "UInt32"),
        EXEMPLARS,
    ],
    partition_by: METRICS_PARTITION,
    order_by: METRICS_ORDER,
};

/// Sum points.
pub(crate) const SUM: Table = Table {
    suffix: "metrics_sum",
    columns: metric_columns![
        Plain("Value", "Float64"),
        Plain("Flags", "UInt32"),
        EXEMPLARS,
        Plain("AggregationTemporality", "Int32"),
        Plain("IsMonotonic", "UInt8"),
    ],
    partition_by: METRICS_PARTITION,
    order_by: METRICS_ORDER,
};

/// Histogram points.
pub(crate) const HISTOGRAM: Table = Table {
    suffix: "metrics_histogram",
    columns: metric_columns![
        Plain("Count", "UInt64"),
        Plain("Sum", "Float64"),
        Plain("BucketCounts", "Array(UInt64)"),
        Plain("ExplicitBounds", "Array(Float64)"),
        EXEMPLARS,
        Plain("Flags", "UInt32"),
        Plain("Min", "Float64"),
        Plain("Max", "Float64"),
        Plain("AggregationTemporality", "Int32"),
    ],
    partition_by: METRICS_PARTITION,
    order_by: METRICS_ORDER,
};

/// Exponential histogram points.
pub(crate) const EXPONENTIAL_HISTOGRAM: Table = Table {
    suffix: "metrics_exponential_histogram",
    columns: metric_columns![
        Plain("Count", "UInt64"),
        Plain("Sum", "Float64"),
        Plain("Scale", "Int32"),
        Plain("ZeroCount", "UInt64"),
        Plain("PositiveOffset", "Int32"),
        Plain("PositiveBucketCounts", "Array(UInt64)"),
        Plain("NegativeOffset", "Int32"),
        Plain("NegativeBucketCounts", "Array(UInt64)"),
        EXEMPLARS,
        Plain("Flags", "UInt32"),
        Plain("Min", "Float64"),
        Plain("Max", "Float64"),
        Plain("AggregationTemporality", "Int32"),
    ],
    partition_by: METRICS_PARTITION,
    order_by: METRICS_ORDER,
};

/// Summary points.
pub(crate) const SUMMARY: Table = Table {
    suffix: "metrics_summary",
    columns: metric_columns![
        Plain("Count", "UInt64"),
        Plain("Sum", "Float64"),
        Nested(
            "ValueAtQuantiles",
            &[("Quantile", "Float64"), ("Value", "Float64")]
        ),
        Plain("Flags", "UInt32"),
    ],
    partition_by: METRICS_PARTITION,
    order_by: METRICS_ORDER,
};

/// Every table, in the order of [`TableId`]'s discriminants.
pub(crate) const TABLES: [&Table; 7] = [
    &TRACES,
    &LOGS,
    &GAUGE,
    &SUM,
    &HISTOGRAM,
    &EXPONENTIAL_HISTOGRAM,
    &SUMMARY,
];

/// A table by its index in [`TABLES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum TableId {
    Traces = 0,
    Logs,
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl TableId {
    /// Every table, in order.
    pub(crate) const ALL: [TableId; 7] = [
        Self::Traces,
        Self::Logs,
        Self::Gauge,
        Self::Sum,
        Self::Histogram,
        Self::ExponentialHistogram,
        Self::Summary,
    ];

    /// The id whose discriminant is `n`.
    pub(crate) fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }
}

/// `name` quoted as a ClickHouse identifier: in backquotes, backslashes and backquotes
/// escaped.
pub(crate) fn quote(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if matches!(c, '`' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// `` `database`.`prefix_suffix` ``.
pub(crate) fn qualified(database: &str, prefix: &str, table: &Table) -> String {
    format!("{}.{}", quote(database), quote(&table_name(prefix, table)))
}

/// The table's name: `prefix_suffix`, or the suffix alone with no prefix.
pub(crate) fn table_name(prefix: &str, table: &Table) -> String {
    if prefix.is_empty() {
        table.suffix.to_owned()
    } else {
        format!("{prefix}_{}", table.suffix)
    }
}

/// `CREATE DATABASE IF NOT EXISTS`.
pub(crate) fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {}", quote(database))
}

/// `CREATE TABLE IF NOT EXISTS` for `table`: a MergeTree partitioned by day.
pub(crate) fn create_table(database: &str, prefix: &str, table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| match c {
            Plain(name, ty) => format!("    {} {ty}", quote(name)),
            Nested(name, members) => {
                let members: Vec<String> = members
                    .iter()
                    .map(|(m, ty)| format!("{} {ty}", quote(m)))
                    .collect();
                format!("    {} Nested({})", quote(name), members.join(", "))
            }
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n) ENGINE = MergeTree()\nPARTITION BY {}\nORDER BY {}\nSETTINGS index_granularity = 8192",
        qualified(database, prefix, table),
        columns.join(",\n"),
        table.partition_by,
        table.order_by,
    )
}

/// `INSERT INTO ... (columns) FORMAT RowBinary`, the columns named as rows are encoded.
pub(crate) fn insert(database: &str, prefix: &str, table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .flat_map(|c| match c {
            Plain(name, _) => vec![quote(name)],
            Nested(name, members) => members
                .iter()
                .map(|(m, _)| quote(&format!("{name}.{m}")))
                .collect(),
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) FORMAT RowBinary",
        qualified(database, prefix, table),
        columns.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("otel_traces"), "`otel_traces`");
        assert_eq!(quote("a`b\\c"), "`a\\`b\\\\c`");
        assert_eq!(
            qualified("db", "otel", &TRACES),
            "`db`.`otel_traces`".to_owned()
        );
        assert_eq!(table_name("", &SUM), "metrics_sum");
    }

    #[test]
    fn the_ddl_names_nested_columns_once_and_inserts_name_their_arrays() {
        let ddl = create_table("default", "otel", &LOGS);
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS `default`.`otel_logs` (\n"));
        assert!(ddl.contains("`LogAttributes` Nested(`Keys` String, `Values` String)"));
        assert!(
            ddl.ends_with("ORDER BY (ServiceName, Timestamp)\nSETTINGS index_granularity = 8192")
        );
        let insert = insert("default", "otel", &SUMMARY);
        assert!(insert.contains("`ValueAtQuantiles.Quantile`, `ValueAtQuantiles.Value`, `Flags`"));
        assert!(insert.ends_with(") FORMAT RowBinary"));
    }

    #[test]
    fn ids_and_tables_agree() {
        for (i, id) in TableId::ALL.iter().enumerate() {
            assert_eq!(*id as usize, i);
            assert_eq!(TableId::from_u8(i as u8), Some(*id));
        }
        assert_eq!(TableId::from_u8(7), None);
        assert_eq!(TABLES[TableId::Summary as usize].suffix, "metrics_summary");
    }
}
