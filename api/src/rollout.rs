//! Rollout arithmetic shared by the webhook (which validates it) and the controller
//! (which obeys it).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A parsed `maxUnavailable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// At most this many nodes.
    Count(u32),
    /// At most this percentage of the nodes, rounded up.
    Percent(u32),
}

/// Why a `maxUnavailable` value is not accepted.
pub const MAX_UNAVAILABLE_RULE: &str =
    "must be an integer >= 1 or a percentage between 1% and 100% (e.g. 3 or \"10%\")";

impl MaxUnavailable {
    /// Parses an `int >= 1` or an `"N%"` with `1 <= N <= 100`.
    pub fn parse(value: &IntOrString) -> Result<Self, &'static str> {
        match value {
            IntOrString::Int(n) if *n >= 1 => Ok(Self::Count(*n as u32)),
            IntOrString::Int(_) => Err(MAX_UNAVAILABLE_RULE),
            IntOrString::String(s) => {
                let digits = s.strip_suffix('%').ok_or(MAX_UNAVAILABLE_RULE)?;
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(MAX_UNAVAILABLE_RULE);
                }
                match digits.parse::<u32>() {
                    Ok(n) if (1..=100).contains(&n) => Ok(Self::Percent(n)),
                    _ => Err(MAX_UNAVAILABLE_RULE),
                }
            }
        }
    }

    /// How many of `total` nodes may be unavailable at once: a percentage is
    /// rounded up, and the answer is never below 1, so a rollout always progresses.
    pub fn resolve(self, total: u32) -> u32 {
        let n = match self {
            Self::Count(n) => n,
            Self::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        };
        n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn resolves_against_node_counts() {
        let table = [
            (pct("10%"), 0, 1),
            (pct("10%"), 1, 1),
            (pct("10%"), 10, 1),
            (pct("10%"), 11, 2),
            (pct("10%"), 1000, 100),
            (pct("50%"), 3, 2),
            (pct("100%"), 7, 7),
            (pct("1%"), 101, 2),
            (IntOrString::Int(3), 2, 3),
            (IntOrString::Int(1), 0, 1),
            (IntOrString::Int(5), 100, 5),
        ];
        for (value, total, want) in table {
            let parsed = MaxUnavailable::parse(&value).expect("valid");
            assert_eq!(parsed.resolve(total), want, "{value:?} of {total}");
        }
    }

    #[test]
    fn rejects_what_would_stall_or_crash_a_rollout() {
        for bad in [
            IntOrString::Int(0),
            IntOrString::Int(-1),
            pct("0%"),
            pct("101%"),
            pct("-10%"),
            pct("abc"),
            pct("3"),
            pct("%"),
            pct("1.5%"),
            pct(""),
        ] {
            assert!(MaxUnavailable::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
