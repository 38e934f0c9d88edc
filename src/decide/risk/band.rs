//! Score → band, computed once in Rust from the configured thresholds, so every policy
//! tests the same band and no policy needs float arithmetic (Cedar has no floats).

use crate::config::BandThresholds;
use std::fmt;

/// Risk band of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Band {
    /// `[0, medium_from)`: full access.
    Low,
    /// `[medium_from, high_from)`: read-only.
    Medium,
    /// `[high_from, 100]`: denied.
    High,
    /// No risk was assessed (route `off`, or `optional` without a token). Policies treat it
    /// like `medium` at best.
    Unassessed,
}

impl Band {
    /// From a score in 0–100.
    pub fn from_score(score: f64, t: &BandThresholds) -> Band {
        if score >= t.high_from {
            Band::High
        } else if score >= t.medium_from {
            Band::Medium
        } else {
            Band::Low
        }
    }

    /// The name policies compare against (`context.risk.band`).
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
            Band::Unassessed => "unassessed",
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The score as a Cedar `Long`, rounded up so that 66.4 never passes a `<= 66` rule.
pub fn score_for_policy(score: f64) -> i64 {
    // Scores are validated to 0..=100 when parsed, so the cast cannot overflow.
    score.ceil().clamp(0.0, 100.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_edges_follow_the_thresholds() {
        let t = BandThresholds::default();
        let cases = [
            (0.0, Band::Low),
            (39.99, Band::Low),
            (40.0, Band::Medium),
            (79.99, Band::Medium),
            (80.0, Band::High),
            (100.0, Band::High),
        ];
        for (score, band) in cases {
            assert_eq!(Band::from_score(score, &t), band, "{score}");
        }
    }

    #[test]
    fn custom_thresholds_move_the_edges() {
        let t = BandThresholds {
            medium_from: 20.0,
            high_from: 50.0,
        };
        assert_eq!(Band::from_score(19.5, &t), Band::Low);
        assert_eq!(Band::from_score(20.0, &t), Band::Medium);
        assert_eq!(Band::from_score(50.0, &t), Band::High);
    }

    #[test]
    fn policy_score_rounds_up() {
        assert_eq!(score_for_policy(66.4), 67);
        assert_eq!(score_for_policy(66.0), 66);
        assert_eq!(score_for_policy(0.0), 0);
        assert_eq!(score_for_policy(99.01), 100);
    }

    #[test]
    fn unassessed_has_its_own_name() {
        assert_eq!(Band::Unassessed.to_string(), "unassessed");
    }
}
