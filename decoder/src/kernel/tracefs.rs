//! Finding tracefs and reading a user_events tracepoint's id and format from it.
//!
//! The parsing is pure ([`parse_format`], [`find_mount`], [`Format::check_otlp_layout`]);
//! [`Tracefs`] wraps it with the file reads.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ue_wire::layout;

use crate::kernel::ReaderError;

/// The file the kernel lists mounts in.
const MOUNTS: &str = "/proc/mounts";

/// A tracefs mount: the directory holding `events/` and, with user_events, `user_events_data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Uses `root` as the tracefs mount point, or finds it in `/proc/mounts` when `None`.
    pub fn locate(root: Option<&Path>) -> Result<Self, ReaderError> {
        if let Some(root) = root {
            if !root.join("events").is_dir() {
                return Err(ReaderError::NotTracefs {
                    path: root.to_owned(),
                });
            }
            return Ok(Self {
                root: root.to_owned(),
            });
        }
        let mounts = fs::read_to_string(MOUNTS).map_err(|source| ReaderError::Io {
            what: "read the mount table",
            path: MOUNTS.into(),
            source,
        })?;
        find_mount(&mounts)
            .map(|root| Self { root })
            .ok_or(ReaderError::NoTracefs)
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<tracefs>/user_events_data`, present when the kernel has `CONFIG_USER_EVENTS`.
    pub fn user_events_data(&self) -> PathBuf {
        self.root.join("user_events_data")
    }

    /// Fails with [`ReaderError::NoUserEvents`] unless the kernel has user_events.
    pub fn require_user_events(&self) -> Result<(), ReaderError> {
        match fs::symlink_metadata(self.user_events_data()) {
            Ok(_) => Ok(()),
            // tracefs's root is mode 0700 by default: to anyone but root, with no
            // CAP_DAC_*, user_events_data looks absent. Say so, not "no user_events".
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(ReaderError::TracefsDenied {
                    tracefs: self.root.clone(),
                })
            }
            Err(_) => Err(ReaderError::NoUserEvents {
                tracefs: self.root.clone(),
            }),
        }
    }

    /// `<tracefs>/events/user_events/<name>`.
    pub fn event_dir(&self, name: &str) -> PathBuf {
        self.root.join("events/user_events").join(name)
    }

    /// Reads the tracepoint's id (`events/user_events/<name>/id`): the `config` of a perf
    /// event for it.
    pub(crate) fn event_id(&self, name: &str) -> Result<u64, ReaderError> {
        let path = self.event_dir(name).join("id");
        let text = self.read(name, &path, "read the tracepoint id")?;
        text.trim().parse().map_err(|_| ReaderError::Format {
            tracepoint: name.to_owned(),
            path,
            source: FormatError::BadNumber {
                line: text.trim().to_owned(),
            },
        })
    }

    /// Reads and parses the tracepoint's `format` file.
    pub fn event_format(&self, name: &str) -> Result<Format, ReaderError> {
        let path = self.event_dir(name).join("format");
        let text = self.read(name, &path, "read the tracepoint format")?;
        parse_format(&text).map_err(|source| ReaderError::Format {
            tracepoint: name.to_owned(),
            path,
            source,
        })
    }

    /// Checks that tracepoint `name` exists with the exporters' layout and returns its id.
    pub(crate) fn otlp_event_id(&self, name: &str) -> Result<u64, ReaderError> {
        let format = self.event_format(name)?;
        format
            .check_otlp_layout()
            .map_err(|m| ReaderError::LayoutMismatch {
                tracepoint: name.to_owned(),
                path: self.event_dir(name).join("format"),
                field: m.field,
                expected: m.expected,
                found: m.found,
            })?;
        self.event_id(name)
    }

    /// Checks that tracepoint `name` exists with the EventHeader header fields (its first
    /// field is `eventheader_flags`, right after the common fields) and returns its id.
    pub(crate) fn eventheader_event_id(&self, name: &str) -> Result<u64, ReaderError> {
        let format = self.event_format(name)?;
        match format.field("eventheader_flags") {
            Some(f) if f.offset == 8 && f.size == 1 => {}
            found => {
                return Err(ReaderError::LayoutMismatch {
                    tracepoint: name.to_owned(),
                    path: self.event_dir(name).join("format"),
                    field: "eventheader_flags",
                    expected: "u8 at offset 8".to_owned(),
                    found: found.map_or_else(
                        || "no such field".to_owned(),
                        |f| format!("{} bytes at offset {}", f.size, f.offset),
                    ),
                });
            }
        }
        self.event_id(name)
    }

    /// The EventHeader tracepoints of `provider` that exist now
    /// (`events/user_events/<provider>_L<level>K<keyword>...`), sorted.
    pub(crate) fn eventheader_tracepoints(&self, provider: &str) -> Vec<String> {
        let prefix = format!("{provider}_L");
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("events/user_events"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| {
                name.starts_with(&prefix)
                    && !name[prefix.len()..].contains("_L")
                    && crate::decode::is_eventheader_tracepoint(name)
            })
            .collect();
        names.sort();
        names
    }

    fn read(&self, name: &str, path: &Path, what: &'static str) -> Result<String, ReaderError> {
        fs::read_to_string(path).map_err(|source| {
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) {
                match self.require_user_events() {
                    Err(e) => e,
                    Ok(()) if source.kind() == io::ErrorKind::PermissionDenied => ReaderError::Io {
                        what,
                        path: path.to_owned(),
                        source,
                    },
                    Ok(()) => ReaderError::NotRegistered {
                        tracepoint: name.to_owned(),
                        path: self.event_dir(name),
                    },
                }
            } else {
                ReaderError::Io {
                    what,
                    path: path.to_owned(),
                    source,
                }
            }
        })
    }
}

/// Finds the tracefs mount point in the text of `/proc/mounts`: a `tracefs` mount, or else
/// `<debugfs>/tracing`.
pub(crate) fn find_mount(mounts: &str) -> Option<PathBuf> {
    let mut debugfs = None;
    for line in mounts.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(_device), Some(dir), Some(fs)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        match fs {
            "tracefs" => return Some(PathBuf::from(unescape_mount(dir))),
            "debugfs" if debugfs.is_none() => {
                debugfs = Some(PathBuf::from(unescape_mount(dir)).join("tracing"));
            }
            _ => {}
        }
    }
    debugfs
}

/// Undoes the octal escapes (`\040` for a space) of paths in `/proc/mounts`.
fn unescape_mount(dir: &str) -> String {
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed tracefs `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// The `name:` line.
    pub name: String,
    /// The `ID:` line, if present.
    pub id: Option<u64>,
    /// Every field, the common ones (`common_type`...) first, in file order.
    pub fields: Vec<FormatField>,
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    /// The declaration as printed, e.g. `char version[8]` or `__rel_loc u8[] buffer`.
    pub declaration: String,
    /// The field's name, e.g. `version`.
    pub name: String,
    /// Offset in the raw record, counting the 8-byte `trace_entry`.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

impl Format {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks the fields the decoder relies on against [`layout`]: `protocol` and `version`
    /// by offset and size, `buffer` by offset, size and its `__rel_loc` type. Printed array
    /// counts are ignored: kernel 6.12 prints `char version[1919247974]` for an 8-byte field.
    pub fn check_otlp_layout(&self) -> Result<(), LayoutMismatch> {
        let base = layout::TRACE_ENTRY_LEN;
        let expected = [
            (
                "protocol",
                base + layout::PROTOCOL_OFFSET,
                layout::VERSION_OFFSET - layout::PROTOCOL_OFFSET,
                "",
            ),
            (
                "version",
                base + layout::VERSION_OFFSET,
                layout::REL_LOC_OFFSET - layout::VERSION_OFFSET,
                "",
            ),
            (
                "buffer",
                base + layout::REL_LOC_OFFSET,
                layout::HEADER_LEN - layout::REL_LOC_OFFSET,
                "__rel_loc",
            ),
        ];
        for (name, offset, size, type_marker) in expected {
            let want = if type_marker.is_empty() {
                format!("offset {offset}, size {size}")
            } else {
                format!("{type_marker} at offset {offset}, size {size}")
            };
            let Some(field) = self.field(name) else {
                return Err(LayoutMismatch {
                    field: name,
                    expected: want,
                    found: "no such field".to_owned(),
                });
            };
            if field.offset != offset
                || field.size != size
                || !field.declaration.contains(type_marker)
            {
                return Err(LayoutMismatch {
                    field: name,
                    expected: want,
                    found: format!(
                        "`{}` at offset {}, size {}",
                        field.declaration, field.offset, field.size
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A field of a tracepoint's format that differs from what the exporters write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutMismatch {
    /// The field's name.
    pub field: &'static str,
    /// What the decoder needs.
    pub expected: String,
    /// What the format file says.
    pub found: String,
}

/// Parses the text of a tracefs `format` file.
///
/// ```text
/// name: otlp_metrics
/// ID: 1234
/// format:
///         field:unsigned short common_type;       offset:0;       size:2; signed:0;
///         ...
///         field:u32 protocol;     offset:8;       size:4; signed:0;
/// ```
pub(crate) fn parse_format(text: &str) -> Result<Format, FormatError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            id = Some(rest.trim().parse().map_err(|_| FormatError::BadNumber {
                line: line.to_owned(),
            })?);
        } else if line.starts_with("field:") {
            fields.push(parse_field(line)?);
        }
    }
    let name = name.ok_or(FormatError::MissingName)?;
    if fields.is_empty() {
        return Err(FormatError::NoFields);
    }
    Ok(Format { name, id, fields })
}

/// `field:<declaration>;\toffset:<n>;\tsize:<n>;\tsigned:<n>;`
fn parse_field(line: &str) -> Result<FormatField, FormatError> {
    let bad = |what: &'static str| FormatError::BadField {
        line: line.to_owned(),
        problem: what,
    };
    let mut parts = line.split(';').map(str::trim);
    let declaration = parts
        .next()
        .and_then(|p| p.strip_prefix("field:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| bad("empty declaration"))?;
    let (mut offset, mut size) = (None, None);
    for part in parts {
        let slot = if let Some(v) = part.strip_prefix("offset:") {
            Some((&mut offset, v))
        } else {
            part.strip_prefix("size:").map(|v| (&mut size, v))
        };
        if let Some((slot, value)) = slot {
            *slot = Some(value.trim().parse().map_err(|_| bad("not a number"))?);
        }
    }
    Ok(FormatField {
        name: field_name(declaration)
            .ok_or_else(|| bad("no field name"))?
            .to_owned(),
        declaration: declaration.to_owned(),
        offset: offset.ok_or_else(|| bad("no offset"))?,
        size: size.ok_or_else(|| bad("no size"))?,
    })
}

/// The name in a C-like declaration: `version` in `char version[8]`, `buffer` in
/// `__rel_loc u8[] buffer`.
fn field_name(declaration: &str) -> Option<&str> {
    let decl = match declaration.strip_suffix(']') {
        Some(d) => &d[..d.rfind('[')?],
        None => declaration,
    };
    decl.rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()
        .filter(|n| !n.is_empty())
}

/// Why a tracefs `format` (or `id`) file could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// No `name:` line.
    #[error("no `name:` line")]
    MissingName,
    /// No `field:` lines.
    #[error("no `field:` lines")]
    NoFields,
    /// A `field:` line that does not parse.
    #[error("{problem} in `{line}`")]
    BadField {
        /// The line.
        line: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An id that is not a number.
    #[error("not a number: `{line}`")]
    BadNumber {
        /// The line.
        line: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format file for the exporters' tracepoint in the kernel's field-line syntax, with
    /// the garbage array count kernel 6.12 prints for `version` (KERNEL.md). The `print fmt`
    /// line is illustrative: the parser ignores it.
    const OTLP_METRICS_6_12: &str = "name: otlp_metrics
ID: 1520
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:u32 protocol;\toffset:8;\tsize:4;\tsigned:0;
\tfield:char version[1919247974];\toffset:12;\tsize:8;\tsigned:0;
\tfield:__rel_loc u8[] buffer;\toffset:20;\tsize:4;\tsigned:0;

print fmt: \"protocol=%u version=%s\", REC->protocol, REC->version
";

    fn with_line(from: &str, to: &str) -> Format {
        assert!(OTLP_METRICS_6_12.contains(from));
        parse_format(&OTLP_METRICS_6_12.replace(from, to)).unwrap()
    }

    #[test]
    fn parses_the_6_12_format_and_trusts_offset_and_size() {
        let f = parse_format(OTLP_METRICS_6_12).unwrap();
        assert_eq!(f.name, "otlp_metrics");
        assert_eq!(f.id, Some(1520));
        let names: Vec<_> = f.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "protocol",
                "version",
                "buffer"
            ]
        );
        let version = f.field("version").unwrap();
        assert_eq!((version.offset, version.size), (12, 8));
        assert_eq!(version.declaration, "char version[1919247974]");
        assert_eq!(f.check_otlp_layout(), Ok(()));
    }

    #[test]
    fn a_sane_array_count_also_passes() {
        let f = with_line("version[1919247974]", "version[8]");
        assert_eq!(f.check_otlp_layout(), Ok(()));
    }

    #[test]
    fn layout_mismatches_name_the_field() {
        let f = with_line("offset:8;\tsize:4", "offset:8;\tsize:8");
        let m = f.check_otlp_layout().unwrap_err();
        assert_eq!(m.field, "protocol");
        assert_eq!(m.expected, "offset 8, size 4");
        assert_eq!(m.found, "`u32 protocol` at offset 8, size 8");

        let f = with_line("offset:12;\tsize:8", "offset:12;\tsize:16");
        assert_eq!(f.check_otlp_layout().unwrap_err().field, "version");

        let f = with_line("__rel_loc u8[] buffer", "__data_loc u8[] buffer");
        let m = f.check_otlp_layout().unwrap_err();
        assert_eq!(m.field, "buffer");
        assert!(m.expected.contains("__rel_loc"), "{m:?}");

        let f = with_line("u32 protocol", "u32 proto");
        let m = f.check_otlp_layout().unwrap_err();
        assert_eq!((m.field, m.found.as_str()), ("protocol", "no such field"));
    }

    #[test]
    fn malformed_format_files_are_errors() {
        assert_eq!(parse_format(""), Err(FormatError::MissingName));
        assert_eq!(parse_format("name: x\nID: 1\n"), Err(FormatError::NoFields));
        assert!(matches!(
            parse_format("name: x\nID: twelve\n"),
            Err(FormatError::BadNumber { .. })
        ));
        let no_size = OTLP_METRICS_6_12.replace("offset:8;\tsize:4;", "offset:8;");
        assert!(matches!(
            parse_format(&no_size),
            Err(FormatError::BadField {
                problem: "no size",
                ..
            })
        ));
        let bad_offset = OTLP_METRICS_6_12.replace("offset:8;", "offset:eight;");
        assert!(matches!(
            parse_format(&bad_offset),
            Err(FormatError::BadField {
                problem: "not a number",
                ..
            })
        ));
    }

    #[test]
    fn field_names_from_declarations() {
        assert_eq!(field_name("char version[1919247974]"), Some("version"));
        assert_eq!(field_name("__rel_loc u8[] buffer"), Some("buffer"));
        assert_eq!(field_name("const char * name"), Some("name"));
        assert_eq!(field_name("char *name"), Some("name"));
        assert_eq!(field_name("u32"), Some("u32"));
        assert_eq!(field_name("char x]"), None);
    }

    #[test]
    fn finds_tracefs_before_debugfs() {
        let mounts = "sysfs /sys sysfs rw 0 0
debugfs /sys/kernel/debug debugfs rw 0 0
tracefs /sys/kernel/tracing tracefs rw 0 0
";
        assert_eq!(find_mount(mounts), Some("/sys/kernel/tracing".into()));
        let only_debugfs = "debugfs /sys/kernel/debug debugfs rw 0 0\n";
        assert_eq!(
            find_mount(only_debugfs),
            Some("/sys/kernel/debug/tracing".into())
        );
        assert_eq!(find_mount("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            find_mount("nodev /mnt/my\\040trace tracefs rw 0 0\n"),
            Some("/mnt/my trace".into())
        );
    }

    #[test]
    fn override_must_look_like_tracefs() {
        let dir = std::env::temp_dir().join(format!("ue-decoder-tracefs-{}", std::process::id()));
        fs::create_dir_all(dir.join("events/user_events/otlp_metrics")).unwrap();
        assert!(matches!(
            Tracefs::locate(Some(&dir.join("missing"))),
            Err(ReaderError::NotTracefs { .. })
        ));
        let t = Tracefs::locate(Some(&dir)).unwrap();
        // No user_events_data: the kernel lacks user_events, whatever the event asked.
        let err = t.otlp_event_id("otlp_metrics").unwrap_err();
        assert!(matches!(err, ReaderError::NoUserEvents { .. }), "{err}");
        assert!(err.to_string().contains("CONFIG_USER_EVENTS"), "{err}");

        fs::write(dir.join("user_events_data"), "").unwrap();
        let err = t.otlp_event_id("otlp_traces").unwrap_err();
        assert!(matches!(err, ReaderError::NotRegistered { .. }), "{err}");

        let event = t.event_dir("otlp_metrics");
        fs::write(event.join("format"), OTLP_METRICS_6_12).unwrap();
        fs::write(event.join("id"), "1520\n").unwrap();
        assert_eq!(t.otlp_event_id("otlp_metrics").unwrap(), 1520);

        let wrong = OTLP_METRICS_6_12.replace("offset:20;", "offset:24;");
        fs::write(event.join("format"), wrong).unwrap();
        let err = t.otlp_event_id("otlp_metrics").unwrap_err();
        assert!(err.to_string().contains("`buffer`"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod eventheader_tests {
    use std::fs;

    use super::*;

    /// The format the kernel prints for an EventHeader tracepoint (6.12).
    const EVENTHEADER_6_12: &str = "name: p_L4K1\nID: 1530\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
        \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:u8 eventheader_flags;\toffset:8;\tsize:1;\tsigned:0;\n\
        \tfield:u8 version;\toffset:9;\tsize:1;\tsigned:0;\n\
        \tfield:u16 id;\toffset:10;\tsize:2;\tsigned:0;\n\
        \tfield:u16 tag;\toffset:12;\tsize:2;\tsigned:0;\n\
        \tfield:u8 opcode;\toffset:14;\tsize:1;\tsigned:0;\n\
        \tfield:u8 level;\toffset:15;\tsize:1;\tsigned:0;\n\n\
        print fmt: \"\"\n";

    #[test]
    fn eventheader_tracepoints_are_listed_and_checked() {
        let dir = std::env::temp_dir().join(format!("ue-decoder-eh-{}", std::process::id()));
        for name in [
            "p_L4K1",
            "p_L5Kff",
            "p_L1K1Gx",
            "p_other",
            "pq_L4K1",
            "otlp_logs",
        ] {
            fs::create_dir_all(dir.join("events/user_events").join(name)).unwrap();
        }
        fs::write(dir.join("user_events_data"), "").unwrap();
        let t = Tracefs::locate(Some(&dir)).unwrap();
        assert_eq!(
            t.eventheader_tracepoints("p"),
            ["p_L1K1Gx", "p_L4K1", "p_L5Kff"]
        );
        assert!(t.eventheader_tracepoints("none").is_empty());

        let event = t.event_dir("p_L4K1");
        fs::write(event.join("format"), EVENTHEADER_6_12).unwrap();
        fs::write(event.join("id"), "1530\n").unwrap();
        assert_eq!(t.eventheader_event_id("p_L4K1").unwrap(), 1530);
        let otlp = EVENTHEADER_6_12.replace("u8 eventheader_flags", "u8 flags");
        fs::write(event.join("format"), otlp).unwrap();
        let err = t.eventheader_event_id("p_L4K1").unwrap_err();
        assert!(err.to_string().contains("eventheader_flags"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
