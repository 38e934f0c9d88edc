//! The decision audit log: one JSON line per decision, written by a background task so a
//! slow sink never blocks a Check. The queue is bounded; when it is full, lines are dropped
//! and counted. Tokens, cookies and Authorization headers are never part of a line: the
//! line is built from the decision, which holds none of them.

pub mod input;
mod json;

use crate::decision::Decision;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// One audit line.
#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    /// RFC 3339 UTC time, ms precision.
    pub time: &'a str,
    /// Decision id (as in the deny body).
    pub decision_id: &'a str,
    /// The request's `x-request-id` (joins the proxy's access log and the upstream's logs).
    pub request_id: Option<&'a str>,
    /// W3C trace id (32 hex) from the request's `traceparent` (or B3), else the check span's.
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
    pub reasons: Option<&'a [std::sync::Arc<str>]>,
    /// `context.action_id`.
    pub action_id: Option<&'a str>,
    /// Fail mode applied, with the outage cause.
    pub fail_mode: Option<(&'static str, &'static str)>,
    /// Determining policy ids.
    pub policies: &'a [String],
    /// Recommendation served from cache.
    pub cache_hit: Option<bool>,
    /// `skipped` when the risk API was not asked because Cedar denies whatever it says.
    pub risk: Option<&'static str>,
    /// Shadow policy set's answer, when one is configured: `{allowed, policies}`.
    pub shadow: Option<ShadowLine<'a>>,
    /// Latency split, microseconds.
    pub latency_us: Latency,
    /// What Cedar was asked and answered (principal, configured claims, action, resource,
    /// context), when the Check reached Cedar: what `riskgate replay` re-decides.
    pub input: Option<&'a input::CedarInput>,
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
    /// The line for a decision made at `time` (RFC 3339, see [`Clock`]).
    pub fn from_decision(d: &'a Decision, time: &'a str) -> AuditLine<'a> {
        AuditLine {
            time,
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
            reasons: d.risk.as_ref().map(|r| &r.reasons[..]),
            action_id: d.risk.as_ref().map(|r| &*r.action_id),
            fail_mode: d.fail_mode,
            policies: &d.policies,
            cache_hit: d.risk.as_ref().map(|r| r.cache_hit),
            risk: d.risk_skipped.then_some("skipped"),
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
            input: d.input.as_deref(),
        }
    }
}

/// Formats audit timestamps, reusing the date-and-seconds part while the second lasts
/// (lines come in bursts: the writer formats a whole batch at once).
#[derive(Debug, Default)]
pub struct Clock {
    second: Option<i64>,
    text: String,
}

impl Clock {
    /// RFC 3339 UTC with milliseconds for epoch `ms`.
    pub fn rfc3339(&mut self, ms: i64) -> &str {
        let second = ms.div_euclid(1000);
        if self.second != Some(second) {
            self.text = rfc3339(ms);
            self.second = Some(second);
        } else {
            // Same second: only the three millisecond digits change ("…:SS.mmmZ").
            let millis = ms.rem_euclid(1000);
            let at = self.text.len().saturating_sub(4);
            self.text.truncate(at);
            for digit in [millis / 100, millis / 10 % 10, millis % 10] {
                self.text.push(char::from(b'0' + digit as u8));
            }
            self.text.push('Z');
        }
        &self.text
    }
}

/// RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
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

/// A decision waiting for its audit line, with the time it was made.
#[derive(Debug)]
struct Queued {
    at_ms: i64,
    decision: Decision,
}

/// Where audit lines go.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<Queued>>,
    dropped: Arc<AtomicU64>,
    closing: Option<Arc<tokio::sync::Notify>>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl AuditSink {
    /// A sink that discards everything (audit off).
    pub fn disabled() -> AuditSink {
        AuditSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            closing: None,
            task: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// A sink writing to `writer` from a background task, with `capacity` queued lines,
    /// flushed every 20 ms.
    pub fn spawn<W>(writer: W, capacity: usize) -> AuditSink
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        AuditSink::spawn_with(writer, capacity, Duration::from_millis(20))
    }

    /// Like [`AuditSink::spawn`], flushing every `flush_every`. The writer drains the queue
    /// on a timer instead of waiting on it: a Check's `record` is then a plain enqueue that
    /// wakes no task (waking the writer per line cost more than the rest of the Check).
    pub fn spawn_with<W>(mut writer: W, capacity: usize, flush_every: Duration) -> AuditSink
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Queued>(capacity.max(1));
        let closing = Arc::new(tokio::sync::Notify::new());
        let stop = closing.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(flush_every.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut batch = Vec::with_capacity(64 * 1024);
            let mut clock = Clock::default();
            loop {
                let last_round = tokio::select! {
                    _ = ticker.tick() => false,
                    () = stop.notified() => true,
                };
                let mut disconnected = false;
                loop {
                    match rx.try_recv() {
                        Ok(queued) => {
                            let time = clock.rfc3339(queued.at_ms);
                            let line = AuditLine::from_decision(&queued.decision, time);
                            json::write_line(&mut batch, &line);
                            batch.push(b'\n');
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                }
                if !batch.is_empty() {
                    if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                        return;
                    }
                    batch.clear();
                }
                if last_round || disconnected {
                    return;
                }
            }
        });
        AuditSink {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            closing: Some(closing),
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// Writes what is queued and stops the writer (call once, at shutdown).
    pub async fn shutdown(&self) {
        if let Some(closing) = &self.closing {
            closing.notify_one();
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Queues a decision for its audit line; never waits. The decision is moved, and the
    /// line is serialised by the writer task, off the Check path.
    pub fn record(&self, decision: Decision) {
        let Some(tx) = &self.tx else { return };
        let queued = Queued {
            at_ms: crate::clock::now_ms(),
            decision,
        };
        if tx.try_send(queued).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
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
    fn clock_reuses_the_second_and_changes_the_millis() {
        let mut c = Clock::default();
        let ms = 1_763_900_000_123; // 2025-11-23T12:13:20.123Z
        assert_eq!(c.rfc3339(ms), rfc3339(ms));
        assert_eq!(c.rfc3339(ms + 5), rfc3339(ms + 5));
        assert_eq!(c.rfc3339(ms + 2_000), rfc3339(ms + 2_000));
        assert!(c.rfc3339(ms).ends_with(".123Z"));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }

    #[test]
    fn line_names_the_decision() -> Result<(), serde_json::Error> {
        let d = Decision::new(Some("req-9".into()));
        let v: serde_json::Value =
            serde_json::to_value(AuditLine::from_decision(&d, "1970-01-01T00:00:00.000Z"))?;
        assert_eq!(v["decision_id"], d.id.as_str());
        assert_eq!(v["request_id"], "req-9");
        assert_eq!(v["decision"], "no_route");
        assert_eq!(v["status"], 403);
        Ok(())
    }

    #[tokio::test]
    async fn lines_are_written_and_flushed_at_shutdown() {
        let (mut reader, writer) = tokio::io::duplex(1 << 20);
        let sink = AuditSink::spawn_with(writer, 100, Duration::from_secs(3600));
        let d = Decision::new(Some("req-1".into()));
        sink.record(d.clone());
        sink.record(d.clone());
        sink.shutdown().await;
        let mut out = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut out).await;
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains(&d.id));
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts() {
        let (reader, writer) = tokio::io::duplex(16); // tiny pipe nobody reads: the writer stalls
        let sink = AuditSink::spawn(writer, 1);
        let d = Decision::new(None);
        for _ in 0..50 {
            sink.record(d.clone());
        }
        assert!(sink.dropped() > 0);
        drop(reader);
    }
}
