//! A gRPC [`Status`] as a frame answer carries it: code, message, details and metadata, so a
//! frame fails exactly as its unary call would (leader hints, "rejected" and
//! "outcome unknown" marks, lock details — everything the caller reads from a status).
//!
//! Metadata travels as its HTTP/2 header form (binary values stay base64, as on the wire);
//! a header that does not parse back is dropped, never trusted or unwrapped.

use ringkv_proto::v1::{FrameHeader, FrameStatus};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// `status` as a frame carries it.
pub fn to_frame(status: &Status) -> FrameStatus {
    let metadata = status
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .map(|(name, value)| FrameHeader {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    FrameStatus {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: status.details().to_vec(),
        metadata,
    }
}

/// The status a frame carries (an unknown code reads as `UNKNOWN`).
pub fn from_frame(frame: FrameStatus) -> Status {
    let mut headers = tonic::codegen::http::HeaderMap::new();
    for header in frame.metadata {
        let name = tonic::codegen::http::HeaderName::from_bytes(header.name.as_bytes());
        let value = tonic::codegen::http::HeaderValue::from_bytes(&header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Status::with_details_and_metadata(
        Code::from_i32(frame.code),
        frame.message,
        frame.details.into(),
        MetadataMap::from_headers(headers),
    )
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    /// Code, message, details, ASCII and binary metadata survive the round trip.
    #[test]
    fn a_status_survives_the_frame() {
        let mut status = Status::with_details(Code::Unavailable, "not the leader", vec![1, 2, 3].into());
        status
            .metadata_mut()
            .insert("x-ringkv-leader-id", MetadataValue::from_static("3"));
        status
            .metadata_mut()
            .insert_bin("x-lock-bin", MetadataValue::from_bytes(&[0, 255, 7]));
        let back = from_frame(to_frame(&status));
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), "not the leader");
        assert_eq!(back.details(), &[1, 2, 3]);
        assert_eq!(
            back.metadata().get("x-ringkv-leader-id").map(|v| v.to_str().ok()),
            Some(Some("3"))
        );
        let binary = back.metadata().get_bin("x-lock-bin").map(|v| v.to_bytes().ok());
        assert_eq!(binary, Some(Some(vec![0, 255, 7].into())));
    }

    /// Headers that do not parse are dropped; an unknown code is UNKNOWN.
    #[test]
    fn a_bad_frame_status_is_read_without_trusting_it() {
        let frame = FrameStatus {
            code: 999,
            message: "odd".into(),
            details: vec![],
            metadata: vec![
                FrameHeader {
                    name: "bad name\n".into(),
                    value: b"x".to_vec(),
                },
                FrameHeader {
                    name: "ok".into(),
                    value: b"bad\nvalue".to_vec(),
                },
            ],
        };
        let status = from_frame(frame);
        assert_eq!(status.code(), Code::Unknown);
        assert!(status.metadata().is_empty());
    }
}
