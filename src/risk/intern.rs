//! Interning of the short, repeating strings of cached recommendations (action types,
//! challenge types, reason and threat codes): every cached entry refers to a code by its
//! index in one shared table instead of holding its own copy (issue #14).
//!
//! The table is bounded, so an API answering ever-new codes cannot grow it without end:
//! past [`MAX_CODES`] distinct codes, or for a code longer than [`MAX_CODE_LEN`], the string
//! is kept as it came (an entry of its own, as before interning). Codes are never removed,
//! so an index, once given, names the same code for the interner's whole life.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Most distinct codes kept (the documented vocabularies hold well under a hundred); fits
/// the `u16` index of [`Interner::index_of`].
pub const MAX_CODES: usize = 4_096;

/// Longest code interned, in bytes.
pub const MAX_CODE_LEN: usize = 64;

/// A bounded, append-only table of shared strings, owned by the [`Assessor`](super::Assessor).
#[derive(Debug, Default)]
pub struct Interner {
    table: RwLock<Table>,
}

#[derive(Debug, Default)]
struct Table {
    index: HashMap<Arc<str>, u16>,
    codes: Vec<Arc<str>>,
}

impl Interner {
    /// The shared copy of `code` (made shared now if there is room), else `code` itself.
    pub fn intern(&self, code: &Arc<str>) -> Arc<str> {
        match self.index_of(code) {
            Some(i) => self.code_at(i).unwrap_or_else(|| code.clone()),
            None => code.clone(),
        }
    }

    /// Every code of `codes` interned.
    pub fn intern_all(&self, codes: &[Arc<str>]) -> Vec<Arc<str>> {
        codes.iter().map(|c| self.intern(c)).collect()
    }

    /// The index of `code` in the table, adding it if there is room; `None` for a code too
    /// long or a full table (the caller keeps the string itself).
    pub fn index_of(&self, code: &str) -> Option<u16> {
        if code.len() > MAX_CODE_LEN {
            return None;
        }
        if let Some(&i) = self.read().index.get(code) {
            return Some(i);
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = table.index.get(code) {
            return Some(i);
        }
        if table.codes.len() >= MAX_CODES {
            return None;
        }
        let i = u16::try_from(table.codes.len()).ok()?;
        let shared: Arc<str> = Arc::from(code);
        table.codes.push(shared.clone());
        table.index.insert(shared, i);
        Some(i)
    }

    /// The code at `index`, if the table has one there.
    pub fn code_at(&self, index: u16) -> Option<Arc<str>> {
        self.read().codes.get(usize::from(index)).cloned()
    }

    /// Looks codes up by index under one read lock (the decoding of a cached entry).
    pub(crate) fn with_codes<R>(&self, f: impl FnOnce(&[Arc<str>]) -> R) -> R {
        f(&self.read().codes)
    }

    /// Distinct codes held.
    pub fn len(&self) -> usize {
        self.read().codes.len()
    }

    /// Whether no code is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
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
    fn indices_name_their_code() {
        let interner = Interner::default();
        let a = interner.index_of("A");
        let b = interner.index_of("B");
        assert_ne!(a, b);
        assert_eq!(interner.index_of("A"), a);
        assert_eq!(a.and_then(|i| interner.code_at(i)).as_deref(), Some("A"));
        assert_eq!(b.and_then(|i| interner.code_at(i)).as_deref(), Some("B"));
        assert_eq!(interner.code_at(2), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let interner = Interner::default();
        for i in 0..MAX_CODES + 10 {
            let code: Arc<str> = Arc::from(format!("CODE_{i}"));
            assert_eq!(*interner.intern(&code), *code);
        }
        assert_eq!(interner.len(), MAX_CODES);
        assert_eq!(interner.index_of("CODE_NEW"), None);
        let long: Arc<str> = Arc::from("X".repeat(MAX_CODE_LEN + 1));
        let kept = interner.intern(&long);
        assert!(Arc::ptr_eq(&kept, &long));
        assert_eq!(interner.len(), MAX_CODES);
    }
}
