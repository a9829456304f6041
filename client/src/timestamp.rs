//! Timestamps of the cluster's timestamp oracle ([`crate::Client::timestamps`]), decoded, and
//! UTC dates for people.
//!
//! A timestamp is `physical_ms << 18 | logical`: milliseconds since the Unix epoch (the
//! system leader's clock, never going back) and an 18-bit counter.

/// Bits of a timestamp's logical counter.
pub const LOGICAL_BITS: u32 = 18;

/// The physical part of `timestamp`: milliseconds since the Unix epoch.
pub fn physical_ms(timestamp: u64) -> u64 {
    timestamp >> LOGICAL_BITS
}

/// The logical part of `timestamp` (the counter within its millisecond).
pub fn logical(timestamp: u64) -> u64 {
    timestamp & ((1 << LOGICAL_BITS) - 1)
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, proleptic Gregorian).
pub fn format_utc_millis(unix_ms: u64) -> String {
    let (year, month, day) = civil_date(unix_ms / 86_400_000);
    let in_day = unix_ms % 86_400_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// The UTC date `YYYY-MM-DD` of `unix_s`.
pub fn format_utc_date(unix_s: u64) -> String {
    let (year, month, day) = civil_date(unix_s / 86_400);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (i64, i64, i64) {
    let days = days as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dates around leap days and year ends.
    #[test]
    fn utc_dates_and_times() {
        assert_eq!(format_utc_date(0), "1970-01-01");
        assert_eq!(format_utc_date(951_782_400), "2000-02-29");
        assert_eq!(format_utc_date(1_798_761_599), "2026-12-31");
        assert_eq!(format_utc_date(1_796_342_400), "2026-12-04");
        assert_eq!(format_utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_millis(1_796_428_876_745), "2026-12-05T00:01:16.745Z");
        assert_eq!(format_utc_millis(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn timestamps_split_into_milliseconds_and_counter() {
        let timestamp = (1_796_428_876_745u64 << LOGICAL_BITS) | 7;
        assert_eq!(physical_ms(timestamp), 1_796_428_876_745);
        assert_eq!(logical(timestamp), 7);
    }
}
