//! The request id an audit line carries: the `x-request-id` header the proxy generated (or
//! kept) for the request — the one its access log and the upstream see — so a line can be
//! joined with them. Envoy's `CheckRequest.attributes.request.http.id` is its internal
//! stream id, known to nothing else; it is only the fallback when the header is absent.

use std::collections::HashMap;

/// Longest request id kept (Envoy's own UUIDs are 36 bytes); a longer header is not
/// trusted as an id and falls back to the stream id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// `x-request-id` when present and well formed (1 to [`MAX_REQUEST_ID_LEN`] printable
/// ASCII characters, no spaces or quotes), else Envoy's stream id, else none.
pub fn request_id(headers: &HashMap<String, String>, stream_id: &str) -> Option<String> {
    headers
        .get("x-request-id")
        .map(|v| v.trim())
        .filter(|v| well_formed(v))
        .map(str::to_owned)
        .or_else(|| Some(stream_id.to_owned()).filter(|id| !id.is_empty()))
}

fn well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HashMap<String, String> {
        [("x-request-id".to_string(), value.to_string())].into()
    }

    #[test]
    fn the_header_wins_over_the_stream_id() {
        let id = request_id(&headers("5f0c6e7a-1b2c-4d3e-9f00-0123456789ab"), "1234567");
        assert_eq!(id.as_deref(), Some("5f0c6e7a-1b2c-4d3e-9f00-0123456789ab"));
    }

    #[test]
    fn the_stream_id_is_the_fallback() {
        assert_eq!(
            request_id(&HashMap::new(), "1234567").as_deref(),
            Some("1234567")
        );
        assert_eq!(request_id(&HashMap::new(), ""), None);
    }

    #[test]
    fn malformed_or_oversized_headers_are_not_ids() {
        for bad in [
            "",
            "a b",
            "x\"y",
            "tab\there",
            "line\nbreak",
            "cr\rx",
            "back\\slash",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "caf\u{e9}",
            "sep\u{2028}x",
            &"a".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            assert_eq!(
                request_id(&headers(bad), "s-1").as_deref(),
                Some("s-1"),
                "{bad:?}"
            );
        }
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(
            request_id(&headers(&longest), "s-1").as_deref(),
            Some(longest.as_str())
        );
    }
}
