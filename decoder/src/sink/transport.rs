//! One attempt at sending a batch, whatever the sink: [`Transport`] and its [`Outcome`].

use std::time::Duration;

use bytes::Bytes;

use super::{SinkConfig, SinkError, grpc, http, lines};
use crate::batch::Batch;

/// The result of one attempt at sending a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Accepted; `rejected` items refused in a partial success, with its message.
    Sent { rejected: u64, message: String },
    /// Failed in a way worth retrying, after `after` if the server said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Failed for good.
    Permanent(String),
}

/// `err: cause: cause`, the whole chain on one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest often repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A sink's transport.
#[derive(Debug)]
pub(crate) enum Transport {
    Http(http::HttpSink),
    Grpc(grpc::GrpcSink),
    Lines(lines::LineSink),
}

impl Transport {
    pub(crate) fn new(config: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match config {
            SinkConfig::OtlpHttp(c) => Self::Http(http::HttpSink::new(c)?),
            SinkConfig::OtlpGrpc(c) => Self::Grpc(grpc::GrpcSink::new(c)?),
            SinkConfig::Stdout => Self::Lines(lines::LineSink::stdout()),
            SinkConfig::File(path) => Self::Lines(lines::LineSink::file(path)?),
        })
    }

    /// What is sent for `batch`, made once for all its attempts.
    pub(crate) fn encode(&self, batch: &Batch) -> Result<Bytes, String> {
        match self {
            Self::Http(h) => h.encode(batch),
            // tonic encodes the message itself.
            Self::Grpc(_) => Ok(Bytes::new()),
            Self::Lines(_) => Ok(lines::LineSink::encode(batch).into()),
        }
    }

    pub(crate) async fn send(&self, batch: &Batch, payload: &Bytes) -> Outcome {
        match self {
            Self::Http(h) => h.send(batch.signal(), payload.clone()).await,
            Self::Grpc(g) => g.send(batch).await,
            Self::Lines(l) => l.send(payload.to_vec()).await,
        }
    }
}
