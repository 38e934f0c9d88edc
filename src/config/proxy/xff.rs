//! Whether the proxy picks the client address the way riskgate is told to
//! (`client_address.xff_trusted_hops`): each HTTP connection manager with an ext_authz filter
//! must have `use_remote_address: true` and `xff_num_trusted_hops` equal to riskgate's N
//! (when N > 0), and must not have `xff_num_trusted_hops` set when riskgate uses the TCP peer.
//! Otherwise riskgate and the proxy (its access log, its own rate limits) disagree on who
//! the client is, and riskgate may count an address the client wrote itself.

use super::{get, ProxyConfigError};
use crate::source::SourceLocation;
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

/// One problem per ext_authz HCM in a standalone Envoy config whose client-address settings
/// do not match `hops`.
pub fn envoy_problems(path: &Path, docs: &[Value], text: &str, hops: u32) -> Vec<ProxyConfigError> {
    let mut hcms = Vec::new();
    for doc in docs {
        find_authz_hcms(doc, &mut hcms);
    }
    let lines = super::anchor_lines(text, super::EXT_AUTHZ_TYPE);
    let mut problems = Vec::new();
    for (i, hcm) in hcms.into_iter().enumerate() {
        let remote = get(hcm, "use_remote_address")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let proxy_hops = get(hcm, "xff_num_trusted_hops")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let skip_append = get(hcm, "skip_xff_append")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let fits = if hops == 0 {
            proxy_hops == 0
        } else {
            remote && !skip_append && proxy_hops == u64::from(hops)
        };
        if !fits {
            problems.push(ProxyConfigError::ClientAddress {
                at: SourceLocation::line(path, lines.get(i).map(|(l, _)| *l)),
                riskgate_hops: hops,
                use_remote_address: remote,
                proxy_hops,
                skip_append,
            });
        }
    }
    problems
}

/// Every mapping with an `http_filters` list holding the ext_authz filter.
fn find_authz_hcms<'a>(value: &'a Value, out: &mut Vec<&'a Mapping>) {
    match value {
        Value::Mapping(map) => {
            let has_authz = get(map, "http_filters")
                .and_then(Value::as_sequence)
                .is_some_and(|filters| filters.iter().any(is_ext_authz));
            if has_authz {
                out.push(map);
            }
            map.values().for_each(|v| find_authz_hcms(v, out));
        }
        Value::Sequence(items) => items.iter().for_each(|v| find_authz_hcms(v, out)),
        Value::Tagged(t) => find_authz_hcms(&t.value, out),
        _ => {}
    }
}

fn is_ext_authz(filter: &Value) -> bool {
    filter
        .as_mapping()
        .and_then(|f| get(f, "typed_config"))
        .and_then(Value::as_mapping)
        .and_then(|t| get(t, "@type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(super::EXT_AUTHZ_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(hcm_extra: &str, hops: u32) -> Vec<String> {
        let text = format!(
            r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
{hcm_extra}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
          - name: envoy.filters.http.router
"#
        );
        let docs: Vec<Value> = match serde_yaml_ng::from_str(&text) {
            Ok(v) => vec![v],
            Err(e) => panic!("{e}"),
        };
        envoy_problems(Path::new("envoy.yaml"), &docs, &text, hops)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn matching_settings_pass() {
        assert!(problems("          use_remote_address: true", 0).is_empty());
        assert!(problems("", 0).is_empty());
        let both = "          use_remote_address: true\n          xff_num_trusted_hops: 2";
        assert!(problems(both, 2).is_empty());
    }

    #[test]
    fn a_mismatch_names_both_sides() {
        let got = problems("          use_remote_address: true", 1);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("client_address.xff_trusted_hops is 1"),
            "{got:?}"
        );
        assert!(got[0].contains("xff_num_trusted_hops is 0"), "{got:?}");
        let got = problems("          xff_num_trusted_hops: 1", 1);
        assert!(got[0].contains("use_remote_address is false"), "{got:?}");
        let got = problems(
            "          use_remote_address: true\n          xff_num_trusted_hops: 1",
            0,
        );
        assert!(
            got[0].contains("client_address.xff_trusted_hops is 0"),
            "{got:?}"
        );
        let skip = "          use_remote_address: true\n          xff_num_trusted_hops: 1\n          skip_xff_append: true";
        assert_eq!(problems(skip, 1).len(), 1);
    }
}
