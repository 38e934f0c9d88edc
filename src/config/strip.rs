//! Every spelling of a protected header name that some server reads as the same header.
//!
//! CGI/WSGI servers, nginx and others fold `_` and `-` together (`x_user_id` arrives as
//! `HTTP_X_USER_ID`, like `x-user-id`), and Istio's proxies pass underscore names by default. So
//! a header riskgate strips is stripped in every mix of `-` and `_`.

/// Most separators expanded into every combination (2^n spellings); longer names get the
/// all-dash and all-underscore spellings only.
const MAX_MIXED: usize = 6;

/// `name` (lower-case, optionally ending in `*`) in every `-`/`_` spelling, itself included.
pub fn spellings(name: &str) -> Vec<String> {
    let seps: Vec<usize> = name
        .char_indices()
        .filter(|(_, c)| *c == '-' || *c == '_')
        .map(|(i, _)| i)
        .collect();
    let with = |pick: &dyn Fn(usize) -> char| -> String {
        name.char_indices()
            .map(|(i, c)| match seps.iter().position(|&s| s == i) {
                Some(k) => pick(k),
                None => c,
            })
            .collect()
    };
    let mut out = vec![name.to_owned()];
    if seps.len() <= MAX_MIXED {
        for mask in 0..(1u32 << seps.len()) {
            out.push(with(&|k| if mask & (1 << k) == 0 { '-' } else { '_' }));
        }
    } else {
        out.push(with(&|_| '-'));
        out.push(with(&|_| '_'));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::spellings;

    #[test]
    fn every_mix_of_dashes_and_underscores() {
        assert_eq!(
            spellings("x-user-id"),
            ["x-user-id", "x-user_id", "x_user-id", "x_user_id"]
        );
        assert_eq!(
            spellings("x-risk-*"),
            ["x-risk-*", "x-risk_*", "x_risk-*", "x_risk_*"]
        );
        assert_eq!(spellings("authorization"), ["authorization"]);
        let long = spellings("a-b-c-d-e-f-g-h");
        assert_eq!(long, ["a-b-c-d-e-f-g-h", "a_b_c_d_e_f_g_h"]);
    }
}
