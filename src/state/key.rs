//! Typed store keys. The identifying part (action id, principal) is hashed, so keys carry no
//! user data and have a bounded length, and it is wrapped in a Redis hash tag (`{…}`), so every
//! record of one action or one principal lives in one Cluster slot and a multi-key script
//! over them stays legal.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// What a record is about; the middle segment of the rendered key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    /// Uses of one reported action (`max_uses`).
    Use,
    /// Records about one principal (budgets, sticky risk, history).
    Principal,
    /// Short-lived negative entries (e.g. a rejected token).
    Negative,
    /// Shared recommendation cache, by the token's SHA-256.
    Recommendation,
    /// Records about one client address (budgets of unauthenticated callers).
    Client,
}

impl Space {
    fn as_str(self) -> &'static str {
        match self {
            Space::Use => "use",
            Space::Principal => "p",
            Space::Negative => "neg",
            Space::Recommendation => "rec",
            Space::Client => "c",
        }
    }
}

/// A store key: a space, a hash tag and an optional field within the tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    space: Space,
    tag: String,
    field: Option<String>,
}

impl Key {
    /// The use record of one reported action (`context.action_id`).
    pub fn action_use(action_id: &str) -> Key {
        Key {
            space: Space::Use,
            tag: hashed(action_id.as_bytes()),
            field: None,
        }
    }

    /// A record about `principal` named `field` (e.g. `budget:transfer`); all of one
    /// principal's fields share a Cluster slot.
    pub fn principal(principal: &str, field: &str) -> Key {
        Key {
            space: Space::Principal,
            tag: hashed(principal.as_bytes()),
            field: Some(field.to_owned()),
        }
    }

    /// A record about the client address `address` (as text, e.g. `192.0.2.1` or an IPv6
    /// `/64` prefix) named `field`; hashed like a principal.
    pub fn client_address(address: &str, field: &str) -> Key {
        Key {
            space: Space::Client,
            tag: hashed(address.as_bytes()),
            field: Some(field.to_owned()),
        }
    }

    /// A short-lived negative entry about `subject` (hashed like the others).
    pub fn negative(subject: &str) -> Key {
        Key {
            space: Space::Negative,
            tag: hashed(subject.as_bytes()),
            field: None,
        }
    }

    /// The shared recommendation of the token whose SHA-256 is `token_sha256`.
    pub fn recommendation(token_sha256: &[u8; 32]) -> Key {
        Key {
            space: Space::Recommendation,
            tag: hex(token_sha256),
            field: None,
        }
    }

    /// The same subject's record named `field` (no second hash of the subject).
    pub fn with_field(&self, field: &str) -> Key {
        Key {
            space: self.space,
            tag: self.tag.clone(),
            field: Some(field.to_owned()),
        }
    }

    /// The key as written to the store: `<prefix>:<space>:{<tag>}[:<field>]`.
    pub fn render(&self, prefix: &str) -> String {
        let mut out = format!("{prefix}:{}:{{{}}}", self.space.as_str(), self.tag);
        if let Some(f) = &self.field {
            out.push(':');
            out.push_str(f);
        }
        out
    }
}

/// The first 128 bits of SHA-256, in hex: collision-free enough for keys, half the length.
fn hashed(id: &[u8]) -> String {
    let digest = Sha256::digest(id);
    hex(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged_and_carry_no_raw_ids() {
        let k = Key::action_use("act-123").render("rg");
        assert!(k.starts_with("rg:use:{") && k.ends_with('}'), "{k}");
        assert!(!k.contains("act-123"), "{k}");
        assert_eq!(k.len(), "rg:use:{}".len() + 32);
        let a = Key::principal("alice@example.com", "budget:transfer").render("rg");
        let b = Key::principal("alice@example.com", "risk").render("rg");
        let tag = |s: &str| s.split(['{', '}']).nth(1).map(str::to_owned);
        assert_eq!(tag(&a), tag(&b), "one principal, one slot");
        assert!(!a.contains("alice"), "{a}");
        assert!(a.ends_with(":budget:transfer"), "{a}");
    }

    #[test]
    fn spaces_do_not_collide() {
        let id = "same";
        let keys = [
            Key::action_use(id).render("x"),
            Key::negative(id).render("x"),
            Key::principal(id, "f").render("x"),
            Key::client_address(id, "f").render("x"),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        assert_ne!(keys[2], keys[3]);
        assert_eq!(
            Key::recommendation(&[0xab; 32]).render("x"),
            format!("x:rec:{{{}}}", "ab".repeat(32))
        );
    }
}
