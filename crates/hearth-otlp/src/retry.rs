//! Which failures are worth another attempt, and when.
//!
//! The OTLP spec names the retryable outcomes; everything else means the
//! collector understood the request and refused it, and sending it again
//! would be refused again. A server that says when to come back (gRPC
//! `RetryInfo`, HTTP `Retry-After`) is believed over our own backoff.

use std::time::{Duration, SystemTime};

use prost::Message;

/// The result of one attempt that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptError {
    /// Try again, after `retry_after` if the server said so.
    Retryable {
        cause: String,
        retry_after: Option<Duration>,
        /// The connection may be bad: build a new client (and resolve the
        /// name again) before the next attempt.
        reconnect: bool,
    },
    /// Drop the request.
    Permanent { cause: String },
}

/// What the collector said about an accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Accepted {
    pub rejected_profiles: i64,
    pub error_message: String,
}

impl Accepted {
    pub fn is_partial(&self) -> bool {
        self.rejected_profiles > 0 || !self.error_message.is_empty()
    }
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin` and in
/// OTLP/HTTP error bodies.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The server's requested delay, if `details` (an encoded
/// `google.rpc.Status`) carries a `RetryInfo`. `Some(None)` means a
/// `RetryInfo` without a delay: retry on our own schedule.
pub(crate) fn retry_info(details: &[u8]) -> Option<Option<Duration>> {
    let status = RpcStatus::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_TYPE)?;
    let info = RetryInfo::decode(any.value.as_slice()).ok()?;
    Some(info.retry_delay.and_then(|d| {
        let secs = u64::try_from(d.seconds).ok()?;
        let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
        Some(Duration::new(secs, nanos))
    }))
}

/// gRPC status codes the spec calls retryable.
pub(crate) fn classify_grpc(code: tonic::Code, message: &str, details: &[u8]) -> AttemptError {
    use tonic::Code;
    let hint = retry_info(details);
    let cause = format!("gRPC {code:?}: {}", truncate(message, 200));
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => AttemptError::Retryable {
            cause,
            retry_after: hint.flatten(),
            // The server may not even have been reached.
            reconnect: true,
        },
        // Throttling: retry only when the server says it is temporary.
        Code::ResourceExhausted => match hint {
            Some(delay) => AttemptError::Retryable {
                cause,
                retry_after: delay,
                reconnect: false,
            },
            None => AttemptError::Permanent { cause },
        },
        _ => AttemptError::Permanent { cause },
    }
}

/// HTTP statuses the spec calls retryable.
pub(crate) fn classify_http(status: u16, retry_after: Option<&str>, body: &[u8]) -> AttemptError {
    let detail = RpcStatus::decode(body)
        .ok()
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| truncate(&String::from_utf8_lossy(body), 200));
    let cause = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", truncate(&detail, 200))
    };
    match status {
        429 | 502 | 503 | 504 => AttemptError::Retryable {
            cause,
            retry_after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
            reconnect: status != 429,
        },
        _ => AttemptError::Permanent { cause },
    }
}

/// `Retry-After`: delta seconds or an HTTP date. A date in the past means
/// now.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An error and its sources on one line ("transport error: tcp connect
/// error: Connection refused (os error 111)"), without repeats.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn status_with_retry_info(delay: Option<(i64, i32)>) -> Vec<u8> {
        let info = RetryInfo {
            retry_delay: delay.map(|(seconds, nanos)| ProtoDuration { seconds, nanos }),
        };
        RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![
                ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![1, 2, 3],
                },
                ProtoAny {
                    type_url: RETRY_INFO_TYPE.into(),
                    value: info.encode_to_vec(),
                },
            ],
        }
        .encode_to_vec()
    }

    #[test]
    fn retryable_grpc_codes() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(
                matches!(
                    classify_grpc(code, "", &[]),
                    AttemptError::Retryable {
                        retry_after: None,
                        ..
                    }
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(classify_grpc(code, "", &[]), AttemptError::Permanent { .. }),
                "{code:?}"
            );
        }
    }

    #[test]
    fn resource_exhausted_with_retry_info_is_retried_after_its_delay() {
        let details = status_with_retry_info(Some((2, 500_000_000)));
        assert_eq!(
            retry_info(&details),
            Some(Some(Duration::from_millis(2500)))
        );
        match classify_grpc(Code::ResourceExhausted, "slow down", &details) {
            AttemptError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(2500)))
            }
            other => panic!("{other:?}"),
        }
        // RetryInfo without a delay still makes it retryable.
        let details = status_with_retry_info(None);
        assert!(matches!(
            classify_grpc(Code::ResourceExhausted, "", &details),
            AttemptError::Retryable {
                retry_after: None,
                ..
            }
        ));
        // A negative delay is ignored, not trusted.
        let details = status_with_retry_info(Some((-1, 0)));
        assert_eq!(retry_info(&details), Some(None));
        // Garbage details: no RetryInfo.
        assert_eq!(retry_info(&[0xff, 0xff]), None);
    }

    #[test]
    fn http_statuses() {
        for s in [429, 502, 503, 504] {
            assert!(matches!(
                classify_http(s, None, b""),
                AttemptError::Retryable { .. }
            ));
        }
        for s in [400, 401, 403, 404, 405, 413, 415, 500, 501] {
            assert!(matches!(
                classify_http(s, Some("1"), b""),
                AttemptError::Permanent { .. }
            ));
        }
        let body = RpcStatus {
            code: 3,
            message: "bad dictionary".into(),
            details: vec![],
        }
        .encode_to_vec();
        match classify_http(400, None, &body) {
            AttemptError::Permanent { cause } => assert_eq!(cause, "HTTP 400: bad dictionary"),
            other => panic!("{other:?}"),
        }
        match classify_http(429, Some("7"), b"") {
            AttemptError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        // 2015-10-21 07:28:00 UTC is `now`; 07:29:30 is 90 s later.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
