//! Human-readable sizes for the cache limit.

use crate::SizeError;

/// Parses "10G", "500M", "1.5G", "64K", "1T", "123456", case-insensitively, with an optional
/// "B" or "iB" after the unit. Units are binary (1K = 1024) because that is what `du -h` and
/// ccache's `max_size` mean, so a limit compares directly with what users see on disk.
/// Fractions round down to a whole byte.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let invalid = || SizeError::Invalid(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let (number, shift) = split_unit(&lower).ok_or_else(invalid)?;
    let (whole, frac) = split_number(number.trim_end()).ok_or_else(invalid)?;
    scale(whole, frac, shift).ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

/// Splits off the unit, returning the number part and the unit's power of two.
fn split_unit(s: &str) -> Option<(&str, u32)> {
    let s = s
        .strip_suffix("ib")
        .or_else(|| s.strip_suffix('b'))
        .unwrap_or(s);
    let shift = match s.chars().last()? {
        'k' => 10,
        'm' => 20,
        'g' => 30,
        't' => 40,
        c if c.is_ascii_digit() || c == '.' => return Some((s, 0)),
        _ => return None,
    };
    Some((&s[..s.len() - 1], shift))
}

/// Splits "1.25" into ("1", "25"), rejecting anything but digits around one optional dot.
fn split_number(s: &str) -> Option<(&str, &str)> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(whole) && digits(frac) && !(whole.is_empty() && frac.is_empty());
    ok.then_some((whole, frac))
}

/// Exact fixed-point arithmetic, so "1.1G" is not off by a float rounding.
fn scale(whole: &str, frac: &str, shift: u32) -> Option<u64> {
    let unit = 1u128 << shift;
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // More than 38 fractional digits cannot change the result but would overflow u128.
    let frac = &frac[..frac.len().min(18)];
    let frac_value = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()?
    };
    let frac_bytes = frac_value * unit / 10u128.pow(frac.len() as u32);
    let total = whole.checked_mul(unit)?.checked_add(frac_bytes)?;
    u64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;

    #[test]
    fn good_sizes() {
        let cases = [
            ("10G", 10 * K * K * K),
            ("500M", 500 * K * K),
            ("2g", 2 * K * K * K),
            ("1.5G", 3 * K * K * K / 2),
            ("123456", 123456),
            ("64K", 64 * K),
            ("64k", 64 * K),
            ("1T", K * K * K * K),
            ("10GB", 10 * K * K * K),
            ("10GiB", 10 * K * K * K),
            ("10gib", 10 * K * K * K),
            ("500 MB", 500 * K * K),
            (" 7 ", 7),
            ("123B", 123),
            ("0", 0),
            (".5K", 512),
            ("1.", 1),
            ("0.1K", 102),
            ("1.000000000000000000000001G", K * K * K),
            (
                "16777215.99999T",
                16777215 * K * K * K * K + 99999 * K * K * K * K / 100_000,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_sizes() {
        for input in [
            "", "lots", "G", "10X", "-5M", "1.2.3G", "10 G B", "1e9", "10KK", ".", "B", "1,5G",
            "iB", "0x10",
        ] {
            assert_eq!(
                parse_size(input),
                Err(SizeError::Invalid(input.to_string())),
                "{input}"
            );
        }
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999999999999999999999"),
            Err(SizeError::TooLarge(_)) | Err(SizeError::Invalid(_))
        ));
    }

    #[test]
    fn message_names_the_value() {
        let msg = parse_size("lots").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid size \"lots\": expected a number with an optional K, M, G or T suffix, like 500M or 10G"
        );
    }
}
