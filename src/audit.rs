//! The decision audit log: one JSON line per decision, written by a background task so a
//! slow sink never blocks a Check. The queue is bounded; when it is full, lines are dropped
//! and counted. Tokens, cookies and Authorization headers are never part of a line: the
//! line is built from the decision, which holds none of them.

use crate::decision::Decision;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// One audit line.
#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    /// RFC 3339 UTC time, ms precision.
    pub time: String,
    /// Decision id (as in the deny body).
    pub decision_id: &'a str,
    /// Envoy's request id.
    pub request_id: Option<&'a str>,
    /// Trace id (W3C, 32 hex).
    pub trace_id: Option<&'a str>,
    /// Principal label.
    pub principal: Option<&'a str>,
    /// Cedar action.
    pub action: Option<&'a str>,
    /// Resource label.
    pub resource: Option<&'a str>,
    /// Route label.
    pub route: Option<&'a str>,
    /// `allow` or the deny reason.
    pub decision: &'static str,
    /// HTTP status the verdict gives when enforced.
    pub status: u16,
    /// False in dry-run (the client got 200).
    pub enforced: bool,
    /// Risk score.
    pub score: Option<f64>,
    /// Band.
    pub band: &'static str,
    /// Recommendation type.
    pub recommendation: Option<&'static str>,
    /// Reason codes from the risk API.
    pub reasons: Option<&'a [String]>,
    /// `context.action_id`.
    pub action_id: Option<&'a str>,
    /// Fail mode applied, with the outage cause.
    pub fail_mode: Option<(&'static str, &'static str)>,
    /// Determining policy ids.
    pub policies: &'a [String],
    /// Recommendation served from cache.
    pub cache_hit: Option<bool>,
    /// Shadow policy set's answer, when one is configured: `{allowed, policies}`.
    pub shadow: Option<ShadowLine<'a>>,
    /// Latency split, microseconds.
    pub latency_us: Latency,
}

/// What the shadow policy set would have answered.
#[derive(Debug, Serialize)]
pub struct ShadowLine<'a> {
    /// The shadow set allowed.
    pub allowed: bool,
    /// It disagrees with the live set.
    pub disagrees: bool,
    /// Its determining policies.
    pub policies: &'a [String],
}

/// Latency split.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Risk lookup.
    pub risk: u64,
    /// Cedar.
    pub cedar: u64,
    /// Whole decision.
    pub total: u64,
}

impl<'a> AuditLine<'a> {
    /// The line for a decision.
    pub fn from_decision(d: &'a Decision) -> AuditLine<'a> {
        AuditLine {
            time: rfc3339_now(),
            decision_id: &d.id,
            request_id: d.request_id.as_deref(),
            trace_id: d.trace_id.as_deref(),
            principal: d.principal.as_deref(),
            action: d.action.as_deref(),
            resource: d.resource.as_deref(),
            route: d.route.as_deref(),
            decision: d.verdict.label(),
            status: d.verdict.http_status(),
            enforced: d.enforced,
            score: d.risk.as_ref().map(|r| r.score),
            band: d.band.as_str(),
            recommendation: d.risk.as_ref().map(|r| r.recommendation),
            reasons: d.risk.as_ref().map(|r| r.reasons.as_slice()),
            action_id: d.risk.as_ref().map(|r| r.action_id.as_str()),
            fail_mode: d.fail_mode,
            policies: &d.policies,
            cache_hit: d.risk.as_ref().map(|r| r.cache_hit),
            shadow: d.shadow.as_ref().map(|s| ShadowLine {
                allowed: s.shadow_allowed,
                disagrees: s.disagrees(),
                policies: &s.policies,
            }),
            latency_us: Latency {
                risk: d.timings.risk.as_micros() as u64,
                cedar: d.timings.cedar.as_micros() as u64,
                total: d.timings.total.as_micros() as u64,
            },
        }
    }
}

fn rfc3339_now() -> String {
    let ms = crate::risk::assessor::now_ms();
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where audit lines go.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<String>>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink {
    /// A sink that discards everything (audit off).
    pub fn disabled() -> AuditSink {
        AuditSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A sink writing to `writer` from a background task, with `capacity` queued lines.
    pub fn spawn<W>(mut writer: W, capacity: usize) -> AuditSink
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<String>(capacity.max(1));
        tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if writer.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                if rx.is_empty() && writer.flush().await.is_err() {
                    break;
                }
            }
        });
        AuditSink {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues the line for a decision; never waits.
    pub fn record(&self, d: &Decision) {
        let Some(tx) = &self.tx else { return };
        match serde_json::to_string(&AuditLine::from_decision(d)) {
            Ok(line) => {
                if tx.try_send(line).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "audit line not serialisable"),
        }
    }

    /// The live drop counter (for metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Lines dropped because the sink was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }

    #[test]
    fn line_names_the_decision() -> Result<(), serde_json::Error> {
        let d = Decision::new(Some("req-9".into()));
        let v: serde_json::Value = serde_json::to_value(AuditLine::from_decision(&d))?;
        assert_eq!(v["decision_id"], d.id.as_str());
        assert_eq!(v["request_id"], "req-9");
        assert_eq!(v["decision"], "no_route");
        assert_eq!(v["status"], 403);
        Ok(())
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts() {
        let (reader, writer) = tokio::io::duplex(16); // tiny pipe nobody reads: the writer stalls
        let sink = AuditSink::spawn(writer, 1);
        let d = Decision::new(None);
        for _ in 0..50 {
            sink.record(&d);
        }
        assert!(sink.dropped() > 0);
        drop(reader);
    }
}
