//! The `stdout` and `file` sinks: one OTLP/JSON line per batch ([`otlp_json_line`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Outcome, SinkError};
use crate::batch::Batch;
use crate::decode::otlp_json_line;

/// A sink writing JSON lines to stdout or to a file opened for appending.
pub(crate) struct LineSink {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSink").finish_non_exhaustive()
    }
}

impl LineSink {
    /// Writes to the process's stdout.
    pub(crate) fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    /// Appends to `path`, creating it and its missing parent directories.
    pub(crate) fn file(path: &Path) -> Result<Self, SinkError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::OpenFile {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::new(Box::new(file)))
    }

    fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Arc::new(Mutex::new(out)),
        }
    }

    /// The line for `batch`, newline included.
    pub(crate) fn encode(batch: &Batch) -> Result<Vec<u8>, String> {
        let request = batch.request().map_err(|e| e.to_string())?;
        let mut line = otlp_json_line(request).into_bytes();
        line.push(b'\n');
        Ok(line)
    }

    /// Writes one line. The write blocks (a full pipe, a slow disk), so it runs on tokio's
    /// blocking pool, never on a runtime thread other sinks need.
    pub(crate) async fn send(&self, line: Vec<u8>) -> Outcome {
        let out = Arc::clone(&self.out);
        let written = tokio::task::spawn_blocking(move || {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            // One write_all of a whole line, so concurrent readers of the file never see
            // half of one from us.
            out.write_all(&line).and_then(|()| out.flush())
        })
        .await;
        match written {
            Ok(Ok(())) => Outcome::Sent {
                rejected: 0,
                message: String::new(),
            },
            Ok(Err(e)) => Outcome::Permanent(format!("write: {e}")),
            Err(e) => Outcome::Permanent(format!("write task: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;

    use super::*;
    use crate::decode::Request;

    #[tokio::test]
    async fn appends_one_line_per_batch() {
        let dir = std::env::temp_dir().join(format!("ue-decoder-lines-{}", std::process::id()));
        let path = dir.join("nested/out.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let batch = Batch::new(Request::Metrics(ExportMetricsServiceRequest::default()));
        for _ in 0..2 {
            // Reopening appends rather than truncates.
            let sink = LineSink::file(&path).unwrap();
            let outcome = sink.send(LineSink::encode(&batch).unwrap()).await;
            assert!(matches!(outcome, Outcome::Sent { rejected: 0, .. }));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let line = r#"{"signal":"metrics","request":{"resourceMetrics":[]}}"#;
        assert_eq!(text, format!("{line}\n{line}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_parent_that_is_a_file_is_a_clear_error() {
        let file = std::env::temp_dir().join(format!("ue-decoder-notdir-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let err = LineSink::file(&file.join("sub/out.jsonl")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("directory") && text.contains(&*file.to_string_lossy()),
            "{text}"
        );
        std::fs::remove_file(&file).unwrap();
    }
}
