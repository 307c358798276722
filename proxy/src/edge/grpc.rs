//! gRPC answers for Sluice's own refusals and failures: a gRPC client reads the outcome of a
//! call from `grpc-status`, not from the HTTP status (gRPC over HTTP/2, "Trailers-Only"
//! responses), so a `503` would reach it as a protocol error instead of `UNAVAILABLE`.

use http::{header, HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

/// Whether the request is a gRPC call (`content-type: application/grpc`, with or without a
/// `+proto`-style suffix; gRPC-Web too).
pub(super) fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status code Sluice answers for its own HTTP error `status`: gRPC's HTTP mapping
/// (PROTOCOL-HTTP2.md), made specific where Sluice knows more (a limit is `RESOURCE_EXHAUSTED`,
/// a timeout `DEADLINE_EXCEEDED`).
pub(super) fn code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,            // INTERNAL (a malformed request)
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED (no route)
        408 | 504 => 4,       // DEADLINE_EXCEEDED
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,      // UNAVAILABLE
        500 => 13,            // INTERNAL
        _ => 2,               // UNKNOWN
    }
}

/// The Trailers-Only response for HTTP error `status` whose text was `body`: 200, the gRPC
/// content type, `grpc-status`, `grpc-message` (percent-encoded) and the request id.
pub(super) fn answer(
    status: StatusCode,
    body: &[u8],
    request_id: Option<&HeaderValue>,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", code(status).to_string())?;
    resp.insert_header("grpc-message", message(body))?;
    if let Some(id) = request_id {
        resp.insert_static_header(&super::headers::X_REQUEST_ID, id.clone());
    }
    Ok(resp)
}

/// `body` trimmed and percent-encoded as `grpc-message` wants (bytes outside 0x20..=0x7e, and
/// `%`).
fn message(body: &[u8]) -> String {
    let text = body.trim_ascii();
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_grpc_codes_and_messages_are_percent_encoded() {
        assert_eq!(code(StatusCode::NOT_FOUND), 12);
        assert_eq!(code(StatusCode::TOO_MANY_REQUESTS), 8);
        assert_eq!(code(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(code(StatusCode::BAD_GATEWAY), 14);
        assert_eq!(code(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(code(StatusCode::FORBIDDEN), 7);
        assert_eq!(code(StatusCode::IM_A_TEAPOT), 2);
        assert_eq!(message(b"no route\n"), "no route");
        assert_eq!(message("100% caf\u{e9}".as_bytes()), "100%25 caf%C3%A9");
        let mut req = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        assert!(!is_grpc(&req));
        req.insert_header("content-type", "application/grpc+proto")
            .unwrap();
        assert!(is_grpc(&req));
        let resp = answer(StatusCode::SERVICE_UNAVAILABLE, b"no backend\n", None).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers["grpc-status"], "14");
        assert_eq!(resp.headers["grpc-message"], "no backend");
    }
}
