//! The `/metrics` wire formats and their negotiation.
//!
//! prometheus-client writes OpenMetrics 1.0 text: a counter's `# TYPE` line names the family
//! (`riskgate_decisions`) while its samples carry `_total`, and the text ends in `# EOF`.
//! That is only correct under the OpenMetrics content type, so a scraper that accepts
//! OpenMetrics (Prometheus does, by default) gets exactly that. Any other client gets the
//! Prometheus 0.0.4 text format, rendered from the same text: counter families renamed to
//! their `_total` sample name, `# UNIT` and `# EOF` dropped — so the bytes always agree
//! with the content type that labels them.

/// The OpenMetrics 1.0 content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format 0.0.4 content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    PrometheusText,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics when it lists
    /// `application/openmetrics-text` with a non-zero q, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let accepts_openmetrics = accept.into_iter().flat_map(|a| a.split(',')).any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        });
        if accepts_openmetrics {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    /// The `Content-Type` for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }

    /// `openmetrics` (prometheus-client's output) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Format::OpenMetrics => openmetrics,
            Format::PrometheusText => to_prometheus_text(&openmetrics),
        }
    }
}

/// OpenMetrics text → Prometheus 0.0.4 text: counter families named by their `_total`
/// samples in `# HELP` / `# TYPE`; `# UNIT` and `# EOF` dropped.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, kind)| *kind == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_gets_it() {
        // Prometheus 2.x/3.x default scrape Accept header
        let accept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(accept)), Format::OpenMetrics);
    }

    #[test]
    fn plain_clients_get_prometheus_text() {
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::PrometheusText
        );
    }

    #[test]
    fn counters_are_renamed_and_openmetrics_markers_dropped() {
        let om = "# HELP riskgate_x Things.\n# TYPE riskgate_x counter\nriskgate_x_total{a=\"b\"} 1\n# HELP riskgate_g A gauge.\n# TYPE riskgate_g gauge\n# UNIT riskgate_g seconds\nriskgate_g 2\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP riskgate_x_total Things.\n# TYPE riskgate_x_total counter\nriskgate_x_total{a=\"b\"} 1\n# HELP riskgate_g A gauge.\n# TYPE riskgate_g gauge\nriskgate_g 2\n"
        );
    }
}
