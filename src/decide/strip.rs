//! The strip rule compiled once (issue #15): exact names sorted and deduplicated, prefixes
//! apart, so a Check only copies the exact list and tests its header names against the
//! prefixes, instead of re-reading the patterns every time.

/// `strip_headers` patterns, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripRules {
    /// Exact names (lower-case), sorted, deduplicated.
    exact: Vec<String>,
    /// `prefix*` patterns without the `*` (lower-case).
    prefixes: Vec<String>,
}

impl StripRules {
    /// Compiles lower-case patterns (a trailing `*` marks a prefix).
    pub fn new(patterns: &[String]) -> StripRules {
        let mut exact: Vec<String> = patterns
            .iter()
            .filter(|p| !p.ends_with('*'))
            .cloned()
            .collect();
        exact.sort();
        exact.dedup();
        let prefixes = patterns
            .iter()
            .filter_map(|p| p.strip_suffix('*'))
            .map(str::to_owned)
            .collect();
        StripRules { exact, prefixes }
    }

    /// Headers to remove: every exact name (a header Envoy did not show riskgate is still
    /// removed), and each `present` name (any case) matching a prefix, lower-cased; sorted,
    /// deduplicated.
    pub fn for_headers<'a>(&self, present: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut matched = present.into_iter().filter(|name| {
            self.prefixes.iter().any(|prefix| {
                name.get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            })
        });
        // The usual case: no header matches a prefix, and the exact list is the answer.
        let Some(first) = matched.next() else {
            return self.exact.clone();
        };
        let mut names = self.exact.clone();
        names.extend(
            std::iter::once(first)
                .chain(matched)
                .map(str::to_ascii_lowercase),
        );
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule as it was computed per Check before it was compiled: the reference.
    fn reference<'a>(
        patterns: &[String],
        present: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut names: Vec<String> = patterns
            .iter()
            .filter(|p| !p.ends_with('*'))
            .cloned()
            .collect();
        let prefixes: Vec<&str> = patterns
            .iter()
            .filter_map(|p| p.strip_suffix('*'))
            .collect();
        names.extend(
            present
                .into_iter()
                .filter(|name| {
                    prefixes.iter().any(|prefix| {
                        name.get(..prefix.len())
                            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
                    })
                })
                .map(str::to_ascii_lowercase),
        );
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn exact_names_always_prefixes_only_when_present() {
        let rules = StripRules::new(&[
            "x-user-id".into(),
            "x-risk-*".into(),
            "x-user-id".into(),
            "a-first".into(),
        ]);
        assert_eq!(rules.for_headers([]), ["a-first", "x-user-id"]);
        assert_eq!(
            rules.for_headers(["X-Risk-Band", "x-risk-band", "host", "x-ris"]),
            ["a-first", "x-risk-band", "x-user-id"]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn same_answer_as_the_per_check_rule(
            patterns in prop::collection::vec("(x-[a-c]{0,3}\\*?|[a-c]{1,2}\\*?|\\*)", 0..6),
            present in prop::collection::vec("[xXaBc-]{0,5}", 0..8),
        ) {
            let rules = StripRules::new(&patterns);
            let got = rules.for_headers(present.iter().map(String::as_str));
            prop_assert_eq!(got, reference(&patterns, present.iter().map(String::as_str)));
        }
    }
}
