//! The cached form of a recommendation (issue #14): one shared byte string per entry
//! instead of a struct with eight heap parts. Ids that are lower-case hex or UUIDs are kept
//! as their bytes, the repeating codes (action type, challenge type, reasons, threats) as
//! their index in the assessor's [`Interner`], numbers as they are. A cache hit decodes it
//! back into a [`Recommendation`] equal to the one encoded.
//!
//! ```text
//! flags (kind: 2 bits, has challenge, has user, score in hundredths, has transaction) · issued_at · performed_at
//! − issued_at (both zigzag LEB128) · score (u16 hundredths when exact, else f64)
//! id: text · action_id: text · action_type: code · [challenge: code] · [user_id: text]
//! reasons: count, codes · threats: count, codes
//! [transaction: amount_minor (zigzag) · currency: text · payee count · (pointer, value): texts]
//! text = 0 len bytes (UTF-8) | 1 len bytes (lower-case hex, halved) | 2 16 bytes (UUID)
//! code = index·2 | (len·2 + 1) bytes        (counts, lengths and codes are LEB128)
//! ```

use super::intern::Interner;
use super::recommendation::{Recommendation, RecommendationType, TransactionData};
use std::sync::Arc;

/// One recommendation as the recommendation cache holds it; cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactRecommendation(Arc<[u8]>);

const HAS_CHALLENGE: u8 = 1 << 2;
const HAS_USER: u8 = 1 << 3;
const SCORE_HUNDREDTHS: u8 = 1 << 4;
const HAS_TRANSACTION: u8 = 1 << 5;

const TEXT_RAW: u8 = 0;
const TEXT_HEX: u8 = 1;
const TEXT_UUID: u8 = 2;

/// Where the dashes of a canonical UUID are.
const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];

impl CompactRecommendation {
    /// Encodes `rec`, adding its codes to `interner` while it has room.
    pub fn encode(rec: &Recommendation, interner: &Interner) -> CompactRecommendation {
        let mut out = Vec::with_capacity(64 + rec.id.len() / 2 + rec.action_id.len() / 2);
        let mut flags = kind_bits(rec.kind);
        if rec.challenge_type.is_some() {
            flags |= HAS_CHALLENGE;
        }
        if rec.user_id.is_some() {
            flags |= HAS_USER;
        }
        let hundredths = hundredths(rec.risk_score);
        if hundredths.is_some() {
            flags |= SCORE_HUNDREDTHS;
        }
        if rec.transaction.is_some() {
            flags |= HAS_TRANSACTION;
        }
        out.push(flags);
        put_varint(&mut out, zigzag(rec.issued_at_ms));
        put_varint(
            &mut out,
            zigzag(rec.action_performed_at_ms.wrapping_sub(rec.issued_at_ms)),
        );
        match hundredths {
            Some(h) => out.extend_from_slice(&h.to_le_bytes()),
            None => out.extend_from_slice(&rec.risk_score.to_bits().to_le_bytes()),
        }
        put_text(&mut out, &rec.id);
        put_text(&mut out, &rec.action_id);
        put_code(&mut out, &rec.action_type, interner);
        if let Some(c) = &rec.challenge_type {
            put_code(&mut out, c, interner);
        }
        if let Some(u) = &rec.user_id {
            put_text(&mut out, u);
        }
        for list in [&rec.reasons[..], &rec.threats[..]] {
            put_varint(&mut out, list.len() as u64);
            for code in list {
                put_code(&mut out, code, interner);
            }
        }
        if let Some(t) = &rec.transaction {
            put_varint(&mut out, zigzag(t.amount_minor));
            put_text(&mut out, &t.currency);
            put_varint(&mut out, t.payee.len() as u64);
            for (pointer, value) in &t.payee {
                put_text(&mut out, pointer);
                put_text(&mut out, value);
            }
        }
        CompactRecommendation(out.into())
    }

    /// The recommendation encoded, its codes shared through `interner` (the one that
    /// encoded it); `None` if the bytes are not a valid encoding.
    pub fn decode(&self, interner: &Interner) -> Option<Recommendation> {
        interner.with_codes(|codes| Reader { rest: &self.0 }.recommendation(codes))
    }

    /// Bytes of the encoding (the entry's heap cost is this plus the `Arc`'s 16).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the encoding is empty (never, for an encoded recommendation).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn kind_bits(kind: RecommendationType) -> u8 {
    match kind {
        RecommendationType::Trust => 0,
        RecommendationType::Allow => 1,
        RecommendationType::Challenge => 2,
        RecommendationType::Deny => 3,
    }
}

fn kind_of(bits: u8) -> RecommendationType {
    match bits & 3 {
        0 => RecommendationType::Trust,
        1 => RecommendationType::Allow,
        2 => RecommendationType::Challenge,
        _ => RecommendationType::Deny,
    }
}

/// `score` as a whole number of hundredths, if that gives back exactly `score` (most API
/// scores have one or two decimals).
fn hundredths(score: f64) -> Option<u16> {
    let h = (score * 100.0).round();
    if !(0.0..=10_000.0).contains(&h) {
        return None;
    }
    let h = h as u16;
    (f64::from(h) / 100.0)
        .to_bits()
        .eq(&score.to_bits())
        .then_some(h)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn nibble(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b - b'0'
    } else {
        b - b'a' + 10
    }
}

fn put_hex_bytes(out: &mut Vec<u8>, hex: &[u8]) {
    out.extend(
        hex.chunks_exact(2)
            .map(|p| nibble(p[0]) << 4 | nibble(p[1])),
    );
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| {
            if UUID_DASHES.contains(&i) {
                b == b'-'
            } else {
                is_lower_hex(b)
            }
        })
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if is_uuid(b) {
        out.push(TEXT_UUID);
        let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
        put_hex_bytes(out, &hex);
    } else if !b.is_empty() && b.len().is_multiple_of(2) && b.iter().copied().all(is_lower_hex) {
        out.push(TEXT_HEX);
        put_varint(out, (b.len() / 2) as u64);
        put_hex_bytes(out, b);
    } else {
        out.push(TEXT_RAW);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

fn put_code(out: &mut Vec<u8>, code: &str, interner: &Interner) {
    match interner.index_of(code) {
        Some(i) => put_varint(out, u64::from(i) << 1),
        None => {
            put_varint(out, ((code.len() as u64) << 1) | 1);
            out.extend_from_slice(code.as_bytes());
        }
    }
}

/// The bytes not decoded yet.
struct Reader<'a> {
    rest: &'a [u8],
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

impl<'a> Reader<'a> {
    fn recommendation(&mut self, codes: &[Arc<str>]) -> Option<Recommendation> {
        let flags = self.byte()?;
        let issued_at_ms = unzigzag(self.varint()?);
        let action_performed_at_ms = issued_at_ms.wrapping_add(unzigzag(self.varint()?));
        let risk_score = match flags & SCORE_HUNDREDTHS {
            0 => f64::from_bits(u64::from_le_bytes(self.array()?)),
            _ => f64::from(u16::from_le_bytes(self.array()?)) / 100.0,
        };
        let id = self.text()?.into_boxed_str();
        let action_id: Arc<str> = self.text()?.into();
        let action_type = self.code(codes)?;
        let challenge_type = match flags & HAS_CHALLENGE {
            0 => None,
            _ => Some(self.code(codes)?.to_string()),
        };
        let user_id = match flags & HAS_USER {
            0 => None,
            _ => Some(self.text()?),
        };
        let reasons: Arc<[Arc<str>]> = self.codes(codes)?.into();
        let threats = self.codes(codes)?.into_boxed_slice();
        let transaction = match flags & HAS_TRANSACTION {
            0 => None,
            _ => Some(self.transaction()?),
        };
        if !self.rest.is_empty() {
            return None;
        }
        Some(Recommendation {
            id,
            issued_at_ms,
            kind: kind_of(flags),
            challenge_type,
            risk_score,
            action_id,
            action_type,
            action_performed_at_ms,
            user_id,
            reasons,
            threats,
            transaction,
        })
    }

    fn transaction(&mut self) -> Option<TransactionData> {
        let amount_minor = unzigzag(self.varint()?);
        let currency = self.text()?.into_boxed_str();
        let n = self.len()?;
        // every leaf takes at least four bytes: a bogus count cannot reserve much
        let mut payee = Vec::with_capacity(n.min(self.rest.len()));
        for _ in 0..n {
            payee.push((self.text()?.into_boxed_str(), self.text()?.into_boxed_str()));
        }
        Some(TransactionData {
            amount_minor,
            currency,
            payee: payee.into(),
        })
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    fn text(&mut self) -> Option<String> {
        match self.byte()? {
            TEXT_RAW => {
                let n = self.len()?;
                String::from_utf8(self.take(n)?.to_vec()).ok()
            }
            TEXT_HEX => {
                let n = self.len()?;
                Some(hex(self.take(n)?, &[]))
            }
            TEXT_UUID => Some(hex(self.take(16)?, &UUID_DASHES)),
            _ => None,
        }
    }

    fn code(&mut self, codes: &[Arc<str>]) -> Option<Arc<str>> {
        let v = self.varint()?;
        if v & 1 == 0 {
            return codes.get(usize::try_from(v >> 1).ok()?).cloned();
        }
        let n = usize::try_from(v >> 1).ok()?;
        std::str::from_utf8(self.take(n)?).ok().map(Arc::from)
    }

    fn codes(&mut self, codes: &[Arc<str>]) -> Option<Vec<Arc<str>>> {
        let n = self.len()?;
        // every code takes at least one byte: a bogus count cannot reserve much
        let mut out = Vec::with_capacity(n.min(self.rest.len()));
        for _ in 0..n {
            out.push(self.code(codes)?);
        }
        Some(out)
    }
}

/// `bytes` as lower-case hex, with a `-` before each output position in `dashes`.
fn hex(bytes: &[u8], dashes: &[usize]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + dashes.len());
    for &b in bytes {
        for digit in [b >> 4, b & 0xf] {
            if dashes.contains(&s.len()) {
                s.push('-');
            }
            s.push(char::from(HEX_DIGITS[usize::from(digit)]));
        }
    }
    s
}

#[cfg(test)]
mod tests;
