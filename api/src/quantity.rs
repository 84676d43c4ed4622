//! Kubernetes resource quantities (`1`, `250m`, `128Mi`, `1e3`), parsed only as far as
//! validation needs: is it well formed, is it negative, how do two compare.

/// The numeric value of a quantity, or `None` when it is not a valid quantity.
pub fn parse(quantity: &str) -> Option<f64> {
    let s = quantity.trim();
    if s.is_empty() || s != quantity {
        return None;
    }
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1048576f64),
        ("Gi", 1073741824f64),
        ("Ti", 1099511627776f64),
        ("Pi", 1125899906842624f64),
        ("Ei", 1152921504606846976f64),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, scale) = if let Some(stripped) = s.strip_suffix('E') {
        (stripped, 1e18)
    } else if let Some((number, scale)) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale)))
    {
        (number, scale)
    } else if let Some((mantissa, exponent)) = s.split_once(['e', 'E']) {
        let exponent: i32 = exponent.parse().ok()?;
        (mantissa, 10f64.powi(exponent))
    } else {
        (s, 1.0)
    };
    let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
    let well_formed = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && digits != ".";
    if !well_formed {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(parse("1"), Some(1.0));
        assert_eq!(parse("250m"), Some(0.25));
        assert_eq!(parse("128Mi"), Some(134217728.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("-1"), Some(-1.0));
        assert_eq!(parse(".5"), Some(0.5));
        for bad in ["", "abc", "1.2.3", "12Q", " 1", "m", "1Mib"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
