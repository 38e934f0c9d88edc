//! Interning of the short, repeating strings of cached recommendations (action types,
//! reason and threat codes): every cached entry shares one `Arc<str>` per distinct code
//! instead of holding its own copy (issue #14).
//!
//! The table is bounded, so an API answering ever-new codes cannot grow it without end:
//! past [`MAX_CODES`] distinct codes, or for a code longer than [`MAX_CODE_LEN`], the string
//! is kept as it came (an entry of its own, as before interning).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Most distinct codes kept (the documented vocabularies hold well under a hundred).
pub const MAX_CODES: usize = 4_096;

/// Longest code interned, in bytes.
pub const MAX_CODE_LEN: usize = 64;

/// A bounded set of shared strings, owned by the [`Assessor`](super::Assessor).
#[derive(Debug, Default)]
pub struct Interner {
    codes: Mutex<HashSet<Arc<str>>>,
}

impl Interner {
    /// The shared copy of `code` (made shared now if there is room), else `code` itself.
    pub fn intern(&self, code: &Arc<str>) -> Arc<str> {
        if code.len() > MAX_CODE_LEN {
            return code.clone();
        }
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = codes.get(&**code) {
            return shared.clone();
        }
        if codes.len() < MAX_CODES {
            codes.insert(code.clone());
        }
        code.clone()
    }

    /// Every code of `codes` interned.
    pub fn intern_all(&self, codes: &[Arc<str>]) -> Vec<Arc<str>> {
        codes.iter().map(|c| self.intern(c)).collect()
    }

    /// Distinct codes held.
    pub fn len(&self) -> usize {
        self.codes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no code is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_codes_share_one_allocation() {
        let interner = Interner::default();
        let a = interner.intern(&Arc::from("BEHAVIOR_BOT"));
        let b = interner.intern(&Arc::from("BEHAVIOR_BOT"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "BEHAVIOR_BOT");
        assert_eq!(interner.len(), 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let interner = Interner::default();
        for i in 0..MAX_CODES + 10 {
            let code: Arc<str> = Arc::from(format!("CODE_{i}"));
            assert_eq!(*interner.intern(&code), *code);
        }
        assert_eq!(interner.len(), MAX_CODES);
        let long: Arc<str> = Arc::from("X".repeat(MAX_CODE_LEN + 1));
        let kept = interner.intern(&long);
        assert!(Arc::ptr_eq(&kept, &long));
        assert_eq!(interner.len(), MAX_CODES);
    }
}
