//! Durations as the CLI prints them: `46.5 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`, the
//! two largest units (tenths of a second below a minute), instead of a count of
//! milliseconds that a reader has to divide.

/// `ms` (negative counts as 0) in the two largest units that matter.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        return if tenths % 10 == 0 {
            format!("{} s", tenths / 10)
        } else {
            format!("{}.{} s", tenths / 10, tenths % 10)
        };
    }
    let s = ms / 1000;
    let pair = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big} {big_unit}")
        } else {
            format!("{big} {big_unit} {small} {small_unit}")
        }
    };
    match s {
        0..=3599 => pair(s / 60, "min", s % 60, "s"),
        3600..=86_399 => pair(s / 3600, "h", s % 3600 / 60, "min"),
        _ => pair(s / 86_400, "d", s % 86_400 / 3600, "h"),
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn two_units_at_most() {
        assert_eq!(duration(-5), "0 s");
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(42), "0 s");
        assert_eq!(duration(120), "0.1 s");
        assert_eq!(duration(46_457), "46.5 s");
        assert_eq!(duration(59_990), "60 s");
        assert_eq!(duration(60_000), "1 min");
        assert_eq!(duration(192_400), "3 min 12 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000 + 5), "3 d 4 h");
    }
}
