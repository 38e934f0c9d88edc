//! Canonical-path checks. riskgate authorizes the path the upstream will serve, so a path
//! that could be read two ways (`..`, `.`, `//`, an encoded `/`, `\` or `.`, bad percent
//! encoding) is refused rather than rewritten: rewriting here could authorize one path
//! while the upstream serves another.

/// Why a path is not canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonCanonical {
    /// Empty or not starting with `/`.
    #[error("path must start with `/`")]
    NotAbsolute,
    /// `//` (an empty segment).
    #[error("empty path segment")]
    EmptySegment,
    /// `.` or `..` segment, literal or encoded.
    #[error("dot segment")]
    DotSegment,
    /// `%2F`, `%5C` or `%2E` (encoded separators or dots).
    #[error("encoded separator or dot")]
    EncodedSeparator,
    /// A percent-encoded unreserved character (`%77` for `w`): normalisers decode it, so
    /// `/a/%77ithdraw` and `/a/withdraw` are one path written two ways.
    #[error("encoded unreserved character")]
    EncodedUnreserved,
    /// `;` path parameters, raw or encoded (`%3B`), which some servers strip (`/withdraw;x`
    /// served as `/withdraw`).
    #[error("path parameter")]
    PathParameter,
    /// `%` not followed by two hex digits, or an encoded byte that is not UTF-8 / is a control.
    #[error("bad percent-encoding")]
    BadEncoding,
    /// Raw control characters, spaces, backslashes or `#`.
    #[error("character not allowed in a path")]
    BadCharacter,
}

/// Checks that `path` (without query) is canonical. A trailing `/` is allowed
/// (`/accounts/` is a different resource than `/accounts` and routes decide).
pub fn check_path(path: &str) -> Result<(), NonCanonical> {
    let rest = path.strip_prefix('/').ok_or(NonCanonical::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if i == last {
                continue; // trailing slash
            }
            return Err(NonCanonical::EmptySegment);
        }
        check_segment(segment)?;
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), NonCanonical> {
    if segment == "." || segment == ".." {
        return Err(NonCanonical::DotSegment);
    }
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(NonCanonical::BadEncoding);
            };
            match hi << 4 | lo {
                b'/' | b'\\' | b'.' => return Err(NonCanonical::EncodedSeparator),
                // Decoded by some upstreams before they strip path parameters.
                b';' => return Err(NonCanonical::PathParameter),
                0x00..=0x1f | 0x7f => return Err(NonCanonical::BadEncoding),
                c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~' => {
                    return Err(NonCanonical::EncodedUnreserved)
                }
                _ => {}
            }
            i += 3;
            continue;
        }
        if b <= 0x20 || b == 0x7f || b == b'\\' || b == b'#' || b >= 0x80 {
            return Err(NonCanonical::BadCharacter);
        }
        if b == b';' {
            return Err(NonCanonical::PathParameter);
        }
        i += 1;
    }
    // The decoded segment must be valid UTF-8, so ids are unambiguous strings.
    decode_segment(segment).map(|_| ())
}

/// Percent-decodes one canonical segment (as checked by [`check_path`]) into a string.
pub fn decode_segment(segment: &str) -> Result<String, NonCanonical> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| NonCanonical::BadEncoding)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass() {
        for p in [
            "/",
            "/accounts/a1/balance",
            "/accounts/a1/",
            "/users/u%20one/profile",
            "/accounts/%22x%22",
            "/a-b_c~d/e.f",
            "/caf%C3%A9",
        ] {
            assert_eq!(check_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn every_non_canonical_form_is_refused() {
        let cases = [
            ("", NonCanonical::NotAbsolute),
            ("accounts", NonCanonical::NotAbsolute),
            ("/accounts//a1", NonCanonical::EmptySegment),
            ("//accounts", NonCanonical::EmptySegment),
            ("/accounts/../admin", NonCanonical::DotSegment),
            ("/accounts/./a1", NonCanonical::DotSegment),
            ("/accounts/..", NonCanonical::DotSegment),
            ("/accounts/a1%2Fbalance", NonCanonical::EncodedSeparator),
            ("/accounts/a1%2fbalance", NonCanonical::EncodedSeparator),
            ("/accounts/%2e%2e/admin", NonCanonical::EncodedSeparator),
            ("/accounts/%2E/a1", NonCanonical::EncodedSeparator),
            ("/accounts/a1%5Cx", NonCanonical::EncodedSeparator),
            ("/accounts/a1%", NonCanonical::BadEncoding),
            ("/accounts/a1%4", NonCanonical::BadEncoding),
            ("/accounts/a1%zz", NonCanonical::BadEncoding),
            ("/accounts/a1%00", NonCanonical::BadEncoding),
            ("/accounts/%C3%28", NonCanonical::BadEncoding),
            ("/accounts/a 1", NonCanonical::BadCharacter),
            ("/accounts\\a1", NonCanonical::BadCharacter),
            ("/accounts/a1#frag", NonCanonical::BadCharacter),
            ("/accounts/a1/%77ithdraw", NonCanonical::EncodedUnreserved),
            ("/accounts/%61%31/withdraw", NonCanonical::EncodedUnreserved),
            ("/accounts/a1%2D/x", NonCanonical::EncodedUnreserved),
            ("/accounts/a1/withdraw;x", NonCanonical::PathParameter),
            ("/accounts/a1;v=1/withdraw", NonCanonical::PathParameter),
            // Found by the path_route fuzzer: an encoded `;` decodes into a path parameter.
            ("/accounts/a1%3Bx/withdraw", NonCanonical::PathParameter),
            ("/accounts/a1/withdraw%3b", NonCanonical::PathParameter),
        ];
        for (path, want) in cases {
            assert_eq!(check_path(path), Err(want), "{path:?}");
        }
    }

    #[test]
    fn decode_keeps_quotes_as_data() {
        assert_eq!(decode_segment("%22a%22").as_deref(), Ok("\"a\""));
    }
}
