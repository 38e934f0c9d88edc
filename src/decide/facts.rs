//! Stage between principal and risk: the request facts the `context` config names — typed
//! header and query values, and the calling workload's SPIFFE identity — read once so the
//! risk-skip probe and the Cedar stage see the same context.
//!
//! Fail closed: a configured header or parameter that is present but does not parse as its
//! type, is longer than its `max_len`, or (query) comes twice or is badly percent-encoded
//! denies the request (`malformed_request`); an absent one is left out of the record, which
//! a policy tests with `has`. The workload is only ever absent or well-formed: an empty,
//! malformed or foreign-trust-domain principal leaves `context.source` out.

use crate::config::{ContextConfig, ContextField, FieldType};
use crate::decision::DenyReason;
use crate::policy::{FactValue, RequestFacts, Workload};
use crate::request::AccessRequest;

/// The `context` config with header names lower-cased once.
#[derive(Debug, Clone, Default)]
pub struct FactRules {
    headers: Vec<ContextField>,
    query: Vec<ContextField>,
    trust_domains: Vec<String>,
}

impl FactRules {
    /// From the validated `context` config.
    pub fn new(config: &ContextConfig) -> FactRules {
        let mut headers = config.headers.clone();
        for h in &mut headers {
            h.name.make_ascii_lowercase();
        }
        FactRules {
            headers,
            query: config.query.clone(),
            trust_domains: config.workload.trust_domains.clone(),
        }
    }
}

const BAD_VALUE: DenyReason = DenyReason::Malformed("bad context value");

/// The facts of `req` under `rules`.
pub fn gather(rules: &FactRules, req: &AccessRequest) -> Result<RequestFacts, DenyReason> {
    let headers = if rules.headers.is_empty() {
        None
    } else {
        let mut values = Vec::new();
        for field in &rules.headers {
            if req
                .headers
                .keys()
                .any(|k| *k != field.name && folds_to(k, &field.name))
            {
                return Err(AMBIGUOUS_HEADER);
            }
            if let Some(raw) = req.header(&field.name) {
                // Envoy joins a repeated header with commas; the upstream may read either copy.
                if raw.contains(',') {
                    return Err(AMBIGUOUS_HEADER);
                }
                values.push((field.attr.clone(), typed(field, raw)?));
            }
        }
        Some(values)
    };
    let query = if rules.query.is_empty() {
        None
    } else {
        Some(query_values(
            &rules.query,
            req.query.as_deref().unwrap_or(""),
        )?)
    };
    let source = req
        .tls_peer
        .as_deref()
        .and_then(|p| workload(p, &rules.trust_domains));
    Ok(RequestFacts {
        headers,
        query,
        source,
        transaction: None,
        history: None,
    })
}

const AMBIGUOUS_HEADER: DenyReason = DenyReason::Malformed("ambiguous context header");
const AMBIGUOUS_QUERY: DenyReason = DenyReason::Malformed("ambiguous query parameter");

/// Whether header name `key` is `name` for an upstream that folds `_` into `-` (CGI, WSGI,
/// nginx): Envoy passes underscore names under Istio.
fn folds_to(key: &str, name: &str) -> bool {
    key.len() == name.len()
        && key
            .bytes()
            .zip(name.bytes())
            .all(|(k, n)| k == n || (matches!(k, b'-' | b'_') && matches!(n, b'-' | b'_')))
}

/// The configured parameters of a raw query string: names and values percent-decoded,
/// each configured name at most once. Spellings that upstreams read differently deny
/// (a `forbid when` must not be walked around): a configured name or value with a `+`
/// (form decoding makes it a space, riskgate does not), a name equal to a configured one
/// but for case or `+`/spaces (some frameworks match names loosely), and a `;` in a pair
/// with a configured name on either side of it (some servers split pairs on `;`).
fn query_values(
    fields: &[ContextField],
    query: &str,
) -> Result<Vec<(String, FactValue)>, DenyReason> {
    let mut values: Vec<(String, FactValue)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if pair.contains(';') && pair.split(';').any(|seg| names_loosely(fields, seg)) {
            return Err(AMBIGUOUS_QUERY);
        }
        let name = decode(raw_name)?;
        let Some(field) = fields.iter().find(|f| f.name == name) else {
            if names_loosely(fields, raw_name) {
                return Err(AMBIGUOUS_QUERY);
            }
            continue;
        };
        if raw_name.contains('+') || raw_value.contains('+') {
            return Err(AMBIGUOUS_QUERY);
        }
        if values.iter().any(|(attr, _)| *attr == field.attr) {
            return Err(DenyReason::Malformed("repeated query parameter"));
        }
        values.push((field.attr.clone(), typed(field, &decode(raw_value)?)?));
    }
    Ok(values)
}

/// Whether the name of `pair` (`name[=value]`) is a configured name for a lenient reader:
/// `+` as a space, percent-decoded, spaces trimmed, case ignored.
fn names_loosely(fields: &[ContextField], pair: &str) -> bool {
    let raw = pair
        .split_once('=')
        .map_or(pair, |(n, _)| n)
        .replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&raw).decode_utf8_lossy();
    let name = decoded.trim();
    fields
        .iter()
        .any(|f| f.name.trim().eq_ignore_ascii_case(name))
}

/// Percent-decodes; bad escapes or non-UTF-8 deny (a configured name could hide behind them).
fn decode(raw: &str) -> Result<String, DenyReason> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(BAD_VALUE);
            }
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| BAD_VALUE)
}

/// `raw` as the field's type, within its length.
fn typed(field: &ContextField, raw: &str) -> Result<FactValue, DenyReason> {
    if raw.len() > field.max_len {
        return Err(BAD_VALUE);
    }
    match field.kind {
        FieldType::String => Ok(FactValue::String(raw.to_owned())),
        FieldType::Long => {
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BAD_VALUE);
            }
            raw.parse().map(FactValue::Long).map_err(|_| BAD_VALUE)
        }
        FieldType::Bool => match raw {
            "true" => Ok(FactValue::Bool(true)),
            "false" => Ok(FactValue::Bool(false)),
            _ => Err(BAD_VALUE),
        },
    }
}

/// `spiffe://<td>/ns/<ns>/sa/<sa>` of a configured trust domain, or nothing.
pub fn workload(principal: &str, trust_domains: &[String]) -> Option<Workload> {
    let rest = principal.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    if !trust_domains.iter().any(|t| t == td) {
        return None;
    }
    let mut parts = path.split('/');
    let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let segment = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    if !segment(ns) || !segment(sa) {
        return None;
    }
    Some(Workload {
        principal: principal.to_owned(),
        trust_domain: td.to_owned(),
        namespace: ns.to_owned(),
        service_account: sa.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules(yaml: &str) -> FactRules {
        let config = Config::from_yaml(&format!(
            "policies: {{ dir: p, schema: p/s.cedarschema }}\ncontext: {yaml}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        config.validate().unwrap_or_else(|e| panic!("{e}"));
        FactRules::new(&config.context)
    }

    fn req(headers: &[(&str, &str)], query: Option<&str>) -> AccessRequest {
        let mut r = AccessRequest::new("GET", "/");
        r.headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        r.query = query.map(String::from);
        r
    }

    #[test]
    fn headers_are_typed_bounded_and_absent_when_missing() {
        let r = rules(
            "{ headers: [{ name: X-Tenant, as: tenant, max_len: 5 }, \
             { name: x-n, as: n, type: long }, { name: x-b, as: b, type: bool }] }",
        );
        let facts = gather(&r, &req(&[("x-tenant", "acme"), ("x-n", "-42")], None));
        assert_eq!(
            facts.map(|f| f.headers),
            Ok(Some(vec![
                ("tenant".to_owned(), FactValue::String("acme".into())),
                ("n".to_owned(), FactValue::Long(-42)),
            ]))
        );
        for bad in [
            ("x-tenant", "toolong"),
            ("x-n", "4x"),
            ("x-n", "+4"),
            ("x-n", "99999999999999999999"),
            ("x-b", "TRUE"),
            ("x-b", ""),
        ] {
            assert_eq!(gather(&r, &req(&[bad], None)), Err(BAD_VALUE), "{bad:?}");
        }
        assert_eq!(
            gather(&rules("{}"), &req(&[], None)).map(|f| f.headers),
            Ok(None)
        );
    }

    #[test]
    fn query_is_decoded_and_a_repeat_denies() {
        let r = rules(
            "{ query: [{ name: 'sort by', as: sort }, { name: page, as: page, type: long }] }",
        );
        let facts = gather(&r, &req(&[], Some("x=1&sort%20by=a%2Fb&page=3")));
        assert_eq!(
            facts.map(|f| f.query),
            Ok(Some(vec![
                ("sort".to_owned(), FactValue::String("a/b".into())),
                ("page".to_owned(), FactValue::Long(3)),
            ]))
        );
        assert!(gather(&r, &req(&[], Some("page=1&page=2"))).is_err());
        assert!(gather(&r, &req(&[], Some("p%61ge=1&page=2"))).is_err());
        assert!(gather(&r, &req(&[], Some("page=%zz"))).is_err());
        assert!(gather(&r, &req(&[], Some("page=%ff"))).is_err());
        assert_eq!(
            gather(&r, &req(&[], None)).map(|f| f.query),
            Ok(Some(vec![]))
        );
    }

    #[test]
    fn header_spellings_an_upstream_reads_differently_deny() {
        let r = rules("{ headers: [{ name: X-Tenant, as: tenant }] }");
        for headers in [
            &[("x-tenant", "blocked,blocked")][..],
            &[("x-tenant", "acme, blocked")],
            &[("x_tenant", "blocked")],
            &[("x-tenant", "acme"), ("x_tenant", "blocked")],
        ] {
            assert_eq!(
                gather(&r, &req(headers, None)),
                Err(AMBIGUOUS_HEADER),
                "{headers:?}"
            );
        }
        assert!(gather(&r, &req(&[("x-tenant-id", "a,b"), ("x_other", "b")], None)).is_ok());
    }

    #[test]
    fn query_spellings_an_upstream_reads_differently_deny() {
        let r = rules("{ query: [{ name: region, as: region }] }");
        for query in [
            "region=no+go",
            "region+=x",
            "Region=blocked",
            "REGION=blocked",
            "r%45gion=blocked",
            "region%20=blocked",
            "region=ok;region=blocked",
            "x=1;region=blocked",
            "region=blocked;x=1",
        ] {
            assert_eq!(
                gather(&r, &req(&[], Some(query))),
                Err(AMBIGUOUS_QUERY),
                "{query}"
            );
        }
        for fine in ["x=a+b", "x=1;y=2", "regions=a", "region=no%20go&x=1"] {
            assert!(gather(&r, &req(&[], Some(fine))).is_ok(), "{fine}");
        }
    }

    #[test]
    fn workload_only_from_a_configured_trust_domain() {
        let tds = ["cluster.local".to_owned()];
        let w = workload("spiffe://cluster.local/ns/bank/sa/payments", &tds);
        assert_eq!(
            w.as_ref()
                .map(|w| (&*w.trust_domain, &*w.namespace, &*w.service_account)),
            Some(("cluster.local", "bank", "payments"))
        );
        for other in [
            "",
            "spiffe://evil.local/ns/bank/sa/payments",
            "spiffe://cluster.local/ns/bank/sa/",
            "spiffe://cluster.local/ns/bank/sa/payments/x",
            "spiffe://cluster.local/sa/payments/ns/bank",
            "spiffe://cluster.local.evil/ns/bank/sa/payments",
            "spiffe://evil.cluster.local/ns/bank/sa/payments",
            "spiffe://CLUSTER.LOCAL/ns/bank/sa/payments",
            "SPIFFE://cluster.local/ns/bank/sa/payments",
            "spiffe://cluster.local:443/ns/bank/sa/payments",
            "spiffe://x@cluster.local/ns/bank/sa/payments",
            "spiffe://cluster.local//ns/bank/sa/payments",
            "spiffe://cluster.local/ns/bank/sa/payments/",
            "spiffe://cluster.local/ns/b%61nk/sa/payments",
            "spiffe://cluster.local/ns/bank/sa/payments?x",
            "spiffe://cluster.local/ns/bank/sa/pay ments",
            "spiffe://cluster.local/ns/bank/sa/payments\n",
            " spiffe://cluster.local/ns/bank/sa/payments",
            "CN=payments",
        ] {
            assert_eq!(workload(other, &tds), None, "{other}");
        }
        assert_eq!(
            workload("spiffe://cluster.local/ns/bank/sa/payments", &[]),
            None
        );
    }
}
