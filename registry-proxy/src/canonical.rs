//! Path and query canonicalization: the one place a request target is decoded.
//!
//! The proxy authorizes what the registry will act on, so both must read the request target
//! the same way. Each path segment and each query pair is percent-decoded exactly once here;
//! everything downstream (endpoint map, policy, audit) sees decoded values, and the upstream
//! receives a canonical re-encoding of the same values. Anything two parsers could read
//! differently is refused instead of guessed at:
//!
//! - `..` and `.` segments (also `%2e%2e`), empty segments (`//`, `/a//`, `//` as a whole path);
//! - an encoded `/` (`%2F`) inside a segment: Karapace routes on the decoded path, so
//!   `POST /subjects/a%2Fversions` (a lookup on subject `a/versions`) would register on `a`.
//!   Subject names containing `/` cannot be used through the proxy;
//! - `\`, `;` (Jersey's matrix parameters), NUL and control characters, raw or encoded;
//! - a `%` left after decoding (double encoding: `%252F` would become `/` to a server that
//!   decodes twice) and malformed escapes (`%zz`);
//! - a security-relevant query parameter given twice, or in a case variant (`Permanent`),
//!   since servers disagree on which copy wins.
//!
//! An `access_token` query parameter (RFC 6750 §2.3, in any letter case or encoding) is
//! dropped here: only the `Authorization` header carries credentials, and a token in a URL
//! must not reach the audit log or the registry. [`redacted_target`] does the same for a
//! target that could not be canonicalized, before it is recorded.
//!
//! One trailing `/` (`/subjects/s/versions/`) is not an empty segment: Confluent (Jersey) and
//! Karapace route it as the path without it, and clients send it, so it is authorized and
//! forwarded as that path.
//!
//! `+` in a path is a literal plus and is sent as `%2B`, because
//! Karapace reads a raw `+` as a space; in a query, `+` means space (form encoding) and is sent
//! as `%20`. `:.:name` (the default context, named explicitly) is sent as `name`, which every
//! registry reads the same way.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::error::Error;

/// Characters sent unencoded: RFC 3986 unreserved, plus `:` so context-qualified subjects stay
/// readable in upstream logs.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

/// Query parameters that change what an operation touches; each may appear once.
const SECURITY_PARAMS: &[&str] = &[
    "permanent",
    "subject",
    "subjectprefix",
    "deleted",
    "deletedonly",
    "force",
    "defaulttoglobal",
    "lookupdeletedschema",
    "normalize",
    "groupid",
    "artifactid",
    "cascadelifecycle",
    "context",
];

/// A decoded request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// Decoded path segments; `/` is no segments.
    pub segments: Vec<String>,
    /// Decoded query pairs, in request order.
    pub query: Vec<(String, String)>,
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadRequest(why.into())
}

/// Checks escapes are well-formed, then decodes once.
fn decode(raw: &str, what: &str) -> Result<String, Error> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(bad(format!("malformed percent-escape in {what}")));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| bad(format!("{what} is not UTF-8 after decoding")))?;
    if decoded.contains('%') {
        return Err(bad(format!(
            "{what} still contains '%' after decoding (double encoding)"
        )));
    }
    if decoded
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ';')
    {
        return Err(bad(format!(
            "{what} contains a control character, '\\' or ';'"
        )));
    }
    Ok(decoded.into_owned())
}

impl CanonicalRequest {
    /// Decodes `path` (which must start with `/`) and the optional raw query.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, Error> {
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| bad("path must start with '/'"))?;
        // One trailing '/' is the path without it; what remains must not end in another.
        let rest = match rest.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() && !trimmed.ends_with('/') => trimmed,
            _ => rest,
        };
        if path
            .bytes()
            .any(|b| b == b'\\' || b == b';' || !(0x21..0x7f).contains(&b))
        {
            return Err(bad(
                "path contains '\\', ';', whitespace or a non-ASCII byte",
            ));
        }
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for raw in rest.split('/') {
                if raw.is_empty() {
                    return Err(bad("empty path segment ('//')"));
                }
                let seg = decode(raw, "path segment")?;
                if seg == "." || seg == ".." {
                    return Err(bad("'.' or '..' path segment"));
                }
                // A server that decodes before routing (Karapace) would see the pieces as
                // segments of another route than the one authorized.
                if seg.contains('/') {
                    return Err(bad("encoded '/' inside a path segment"));
                }
                // `:.:name` is `name` in the default context: send the form every registry
                // reads the same way (Karapace and Apicurio know no contexts).
                let seg = match seg.strip_prefix(":.:") {
                    Some(rest) if rest.starts_with(':') => {
                        return Err(bad("subject name starting with ':' after ':.:'"));
                    }
                    Some(rest) if !rest.is_empty() => rest.to_owned(),
                    _ => seg,
                };
                segments.push(seg);
            }
        }
        let mut pairs = Vec::new();
        if let Some(q) = query {
            if q.bytes()
                .any(|b| b == b'\\' || b == b';' || !(0x21..0x7f).contains(&b))
            {
                return Err(bad(
                    "query contains '\\', ';', whitespace or a non-ASCII byte",
                ));
            }
            for piece in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
                if is_access_token(k) {
                    continue;
                }
                let key = decode(&k.replace('+', " "), "query parameter name")?;
                let value = decode(&v.replace('+', " "), "query parameter value")?;
                pairs.push((key, value));
            }
        }
        let mut seen: Vec<String> = Vec::new();
        for (key, _) in &pairs {
            let lower = key.to_ascii_lowercase();
            if SECURITY_PARAMS.contains(&lower.as_str()) {
                if seen.contains(&lower) {
                    return Err(bad(format!("query parameter {key:?} given more than once")));
                }
                if !is_known_spelling(key) {
                    return Err(bad(format!(
                        "query parameter {key:?} in an unexpected letter case"
                    )));
                }
                seen.push(lower);
            }
        }
        Ok(Self {
            segments,
            query: pairs,
        })
    }

    /// The value of query parameter `name`, if present (names are case-sensitive, as in
    /// Jersey; case variants of security-relevant names were refused by `parse`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query flag as Jersey reads it: `true` in any case.
    pub fn flag(&self, name: &str) -> bool {
        self.param(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The canonical path, re-encoded.
    pub fn path(&self) -> String {
        if self.segments.is_empty() {
            return "/".into();
        }
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            out.extend(utf8_percent_encode(seg, SEGMENT));
        }
        out
    }

    /// The canonical query, re-encoded, without the leading `?`; empty when there is none.
    pub fn query_string(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.query.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.extend(utf8_percent_encode(k, SEGMENT));
            out.push('=');
            out.extend(utf8_percent_encode(v, SEGMENT));
        }
        out
    }

    /// Path and query as sent upstream.
    pub fn path_and_query(&self) -> String {
        let q = self.query_string();
        if q.is_empty() {
            self.path()
        } else {
            format!("{}?{q}", self.path())
        }
    }
}

/// One decoded path segment, encoded as the proxy sends segments upstream.
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Whether a raw query parameter name is `access_token`, however it is cased or encoded.
/// Decoded leniently: a malformed escape in the name must not keep a token from being found.
fn is_access_token(raw_name: &str) -> bool {
    percent_decode_str(&raw_name.replace('+', " "))
        .decode_utf8_lossy()
        .eq_ignore_ascii_case("access_token")
}

/// `target` (path and optional query, as received) with the value of every `access_token`
/// parameter replaced, for recording a target that could not be canonicalized.
pub fn redacted_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let pieces: Vec<&str> = query
        .split('&')
        .map(|piece| {
            let name = piece.split_once('=').map_or(piece, |(k, _)| k);
            if is_access_token(name) {
                "access_token=REDACTED"
            } else {
                piece
            }
        })
        .collect();
    format!("{path}?{}", pieces.join("&"))
}

/// The spellings registries actually use for the security-relevant parameters.
fn is_known_spelling(key: &str) -> bool {
    matches!(
        key,
        "permanent"
            | "subject"
            | "subjectPrefix"
            | "deleted"
            | "deletedOnly"
            | "force"
            | "defaultToGlobal"
            | "lookupDeletedSchema"
            | "normalize"
            | "groupId"
            | "artifactId"
            | "cascadeLifecycle"
            | "context"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_in_the_query_are_dropped() {
        for query in [
            "access_token=eyJ.x.y&normalize=true",
            "normalize=true&ACCESS_TOKEN=eyJ.x.y",
            "access%5Ftoken=eyJ.x.y&normalize=true",
            "access_token=%zz&normalize=true",
        ] {
            let c = CanonicalRequest::parse("/subjects/s", Some(query)).unwrap();
            assert_eq!(c.path_and_query(), "/subjects/s?normalize=true", "{query}");
        }
        assert_eq!(
            redacted_target("/a%zz?x=1&Access_Token=eyJ.x.y&access%5ftoken=z"),
            "/a%zz?x=1&access_token=REDACTED&access_token=REDACTED"
        );
        assert_eq!(redacted_target("/subjects"), "/subjects");
    }

    fn ok(path: &str, query: Option<&str>) -> CanonicalRequest {
        CanonicalRequest::parse(path, query).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn refused(path: &str, query: Option<&str>) {
        assert!(
            CanonicalRequest::parse(path, query).is_err(),
            "{path}?{query:?} accepted"
        );
    }

    #[test]
    fn decodes_once_and_reencodes_canonically() {
        let r = ok("/subjects/a%3Ab+c/versions", None);
        assert_eq!(r.segments, ["subjects", "a:b+c", "versions"]);
        assert_eq!(r.path(), "/subjects/a:b%2Bc/versions");
        let r = ok("/subjects/%3A.ctx%3Apay", None);
        assert_eq!(r.segments[1], ":.ctx:pay");
        assert_eq!(r.path(), "/subjects/:.ctx:pay");
        assert_eq!(ok("/subjects/:.:pay", None).path(), "/subjects/pay");
        refused("/subjects/:.::.x:pay", None);
        assert_eq!(ok("/", None).segments, Vec::<String>::new());
        assert_eq!(ok("/", None).path(), "/");
    }

    #[test]
    fn one_trailing_slash_is_the_path_without_it() {
        for (with, without) in [
            ("/subjects/", "/subjects"),
            ("/subjects/a/versions/", "/subjects/a/versions"),
            ("/config/a%3Ab/", "/config/a:b"),
            ("/mode/", "/mode"),
        ] {
            assert_eq!(ok(with, None), ok(without, None), "{with}");
        }
        assert_eq!(ok("/", None).path(), "/");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for p in [
            "/subjects/../config",
            "/subjects/%2e%2e/config",
            "/subjects/./x",
            "/subjects//x",
            "/subjects/x//",
            "//",
            "///",
            "/subjects/x/./",
            "/subjects/../",
            "/subjects/x;y",
            "/subjects/x%3By",
            "/subjects/x\\y",
            "/subjects/x%5Cy",
            "/subjects/x%00",
            "/subjects/x%252F",
            "/subjects/x%2F..%2Fconfig",
            "/subjects/x%2Fversions",
            "/subjects/x%2fversions",
            "/subjects/x%2F",
            "/subjects/%2Fx",
            "/subjects/x%zz",
            "/subjects/x%2",
            "/subjects/%C3%28",
            "subjects",
        ] {
            refused(p, None);
        }
    }

    #[test]
    fn query_plus_is_space_and_duplicates_are_refused() {
        let r = ok("/subjects", Some("subjectPrefix=a+b%2B&x=1&x=2"));
        assert_eq!(r.param("subjectPrefix"), Some("a b+"));
        assert_eq!(r.query_string(), "subjectPrefix=a%20b%2B&x=1&x=2");
        refused("/subjects/x", Some("permanent=false&permanent=true"));
        refused("/subjects/x", Some("permanent=false&PERMANENT=true"));
        refused("/subjects/x", Some("Permanent=true"));
        refused("/subjects", Some("deleted=true&deleted=false"));
        refused("/subjects", Some("subjectPrefix=%2500"));
        assert!(ok("/subjects/x", Some("permanent=TRUE")).flag("permanent"));
    }
}
