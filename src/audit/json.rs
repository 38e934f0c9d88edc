//! The audit line as JSON, written field by field (issue #15): byte for byte what serde's
//! derive of [`AuditLine`] writes (`tests` compare the two on generated lines), at a
//! fraction of the cost — the derived serialiser was the largest single cost of a Check
//! outside the decision (≈ 13,000 instructions of a ≈ 200,000-instruction Check). Strings
//! without a character JSON must escape are copied as they are; any other string, and the
//! rare values (scores, claims), go through serde_json itself, so escaping and number
//! formatting are serde_json's.

use super::input::CedarInput;
use super::{AuditLine, Latency, ShadowLine};

/// Appends `line` as one JSON object (no newline).
pub fn write_line(out: &mut Vec<u8>, line: &AuditLine<'_>) {
    let mut o = Object::open(out);
    o.str("time", line.time);
    o.str("decision_id", line.decision_id);
    o.opt_str("request_id", line.request_id);
    o.opt_str("trace_id", line.trace_id);
    o.opt_str("principal", line.principal);
    o.opt_str("action", line.action);
    o.opt_str("resource", line.resource);
    o.opt_str("route", line.route);
    o.str("decision", line.decision);
    o.number("status", u64::from(line.status));
    o.bool("enforced", line.enforced);
    o.key("score");
    match line.score {
        Some(score) => serde_value(o.out, &score),
        None => o.out.extend_from_slice(b"null"),
    }
    o.str("band", line.band);
    o.opt_str("recommendation", line.recommendation);
    o.key("reasons");
    match line.reasons {
        Some(reasons) => strings(o.out, reasons),
        None => o.out.extend_from_slice(b"null"),
    }
    o.opt_str("action_id", line.action_id);
    o.key("fail_mode");
    match line.fail_mode {
        Some((mode, cause)) => {
            o.out.push(b'[');
            string(o.out, mode);
            o.out.push(b',');
            string(o.out, cause);
            o.out.push(b']');
        }
        None => o.out.extend_from_slice(b"null"),
    }
    o.key("policies");
    strings(o.out, line.policies);
    o.key("cache_hit");
    match line.cache_hit {
        Some(hit) => o
            .out
            .extend_from_slice(if hit { b"true" } else { b"false" }),
        None => o.out.extend_from_slice(b"null"),
    }
    o.opt_str("risk", line.risk);
    o.key("shadow");
    match &line.shadow {
        Some(shadow) => shadow_line(o.out, shadow),
        None => o.out.extend_from_slice(b"null"),
    }
    o.key("latency_us");
    latency(o.out, &line.latency_us);
    o.key("input");
    match line.input {
        Some(input) => cedar_input(o.out, input),
        None => o.out.extend_from_slice(b"null"),
    }
    o.close();
}

fn shadow_line(out: &mut Vec<u8>, shadow: &ShadowLine<'_>) {
    let mut o = Object::open(out);
    o.bool("allowed", shadow.allowed);
    o.bool("disagrees", shadow.disagrees);
    o.key("policies");
    strings(o.out, shadow.policies);
    o.close();
}

fn latency(out: &mut Vec<u8>, l: &Latency) {
    let mut o = Object::open(out);
    o.number("risk", l.risk);
    o.number("cedar", l.cedar);
    o.number("total", l.total);
    o.close();
}

fn cedar_input(out: &mut Vec<u8>, input: &CedarInput) {
    let mut o = Object::open(out);
    o.key("principal");
    {
        let p = &input.principal;
        let mut po = Object::open(o.out);
        po.str("type", &p.kind);
        po.str("id", &p.id);
        if !p.claims.is_empty() {
            po.key("claims");
            serde_value(po.out, &p.claims);
        }
        po.close();
    }
    o.str("action", &input.action);
    o.str("resource_type", &input.resource_type);
    o.str("resource_id", &input.resource_id);
    o.key("risk");
    {
        let r = &input.risk;
        let mut ro = Object::open(o.out);
        ro.bool("present", r.present);
        ro.bool("outage", r.outage);
        ro.key("score");
        let mut digits = itoa::Buffer::new();
        ro.out.extend_from_slice(digits.format(r.score).as_bytes());
        ro.str("band", &r.band);
        ro.str("recommendation", &r.recommendation);
        ro.key("reasons");
        strings(ro.out, &r.reasons);
        ro.close();
    }
    o.key("request");
    {
        let r = &input.request;
        let mut ro = Object::open(o.out);
        ro.str("method", &r.method);
        ro.str("path", &r.path);
        ro.str("host", &r.host);
        ro.key("ip");
        match r.ip {
            Some(ip) => serde_value(ro.out, &ip),
            None => ro.out.extend_from_slice(b"null"),
        }
        ro.close();
    }
    o.str("cedar", input.cedar.as_str());
    if input.truncated {
        o.bool("truncated", true);
    }
    o.close();
}

/// A JSON object being written: keys are static names that need no escaping.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        let mut digits = itoa::Buffer::new();
        self.out.extend_from_slice(digits.format(value).as_bytes());
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string: copied when nothing in it needs escaping, else serde_json's escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_value(out, s);
    }
}

fn strings<S: AsRef<str>>(out: &mut Vec<u8>, items: &[S]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, item.as_ref());
    }
    out.push(b']');
}

/// Any serialisable value, by serde_json (writing to a `Vec` cannot fail; a value serde
/// cannot write, which these types never are, would leave `null`).
fn serde_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mark = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(mark);
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests;
