//! The harness's own arithmetic: percentiles of latency samples, rates and ratios.

use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    micros: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.sorted = false;
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `p`-th percentile (0 < p ≤ 100) by the nearest-rank method: the smallest sample
    /// such that at least p % of the samples are at or below it. `None` without samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        self.sort();
        nearest_rank(&self.micros, p).map(Duration::from_micros)
    }

    /// The largest sample.
    pub fn max(&mut self) -> Option<Duration> {
        self.sort();
        self.micros.last().copied().map(Duration::from_micros)
    }

    /// p50, p99 and max, when there are samples.
    pub fn summary(&mut self) -> Option<LatencySummary> {
        Some(LatencySummary {
            p50: self.percentile(50.0)?,
            p99: self.percentile(99.0)?,
            max: self.max()?,
        })
    }
}

/// The nearest-rank percentile of sorted values: the value at rank ⌈p/100 · n⌉ (1-based).
pub fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len();
    // A small tolerance keeps e.g. 0.99 · 100 from landing on rank 100 by rounding.
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil().max(1.0) as usize;
    Some(sorted[rank.min(n) - 1])
}

/// What a table shows of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// Operations per second; 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

/// `measured / baseline`, when the baseline is positive.
pub fn ratio(measured: f64, baseline: f64) -> Option<f64> {
    if baseline > 0.0 && baseline.is_finite() && measured.is_finite() {
        Some(measured / baseline)
    } else {
        None
    }
}

/// A ratio as `0.34 ×`, with a third decimal below 0.1 (`0.004 ×`) so that small ones are
/// not shown as zero.
pub fn times(ratio: f64) -> String {
    if ratio < 0.1 {
        format!("{ratio:.3} ×")
    } else {
        format!("{ratio:.2} ×")
    }
}

/// Milliseconds with two decimals, e.g. `3.27 ms`.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A rate with a thousands separator, e.g. `12 345/s`.
pub fn per_second(rate: f64) -> String {
    format!("{}/s", thousands(rate.round() as u64))
}

/// An integer with thin spaces between thousands, e.g. `1 000 000`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// Kibibytes as mebibytes with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 50.0), Some(50));
        assert_eq!(nearest_rank(&values, 99.0), Some(99));
        assert_eq!(nearest_rank(&values, 100.0), Some(100));
        assert_eq!(nearest_rank(&values, 0.5), Some(1));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
        assert_eq!(nearest_rank(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 51.0), Some(3));
        assert_eq!(nearest_rank(&[], 50.0), None);
        assert_eq!(nearest_rank(&[1, 2], 0.0), None);
        assert_eq!(nearest_rank(&[1, 2], 101.0), None);
    }

    #[test]
    fn p99_of_a_thousand_samples_is_the_990th() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&values, 99.0), Some(990));
        assert_eq!(nearest_rank(&values, 99.9), Some(999));
    }

    #[test]
    fn samples_sort_before_answering() {
        let mut samples = Samples::default();
        for micros in [900, 100, 500, 300, 700] {
            samples.record(Duration::from_micros(micros));
        }
        let summary = samples.summary().unwrap();
        assert_eq!(summary.p50, Duration::from_micros(500));
        assert_eq!(summary.p99, Duration::from_micros(900));
        assert_eq!(summary.max, Duration::from_micros(900));
        samples.record(Duration::from_micros(50));
        assert_eq!(samples.percentile(1.0), Some(Duration::from_micros(50)));
        let mut more = Samples::default();
        more.record(Duration::from_millis(2));
        samples.merge(more);
        assert_eq!(samples.max(), Some(Duration::from_millis(2)));
        assert_eq!(samples.len(), 7);
        assert!(Samples::default().summary().is_none());
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(700.0, 1000.0), Some(0.7));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1 000");
        assert_eq!(thousands(1234567), "1 234 567");
        assert_eq!(per_second(2345.6), "2 346/s");
        assert_eq!(ms(Duration::from_micros(3270)), "3.27 ms");
        assert_eq!(mib(150 * 1024), "150.0 MiB");
        assert_eq!(times(0.3449), "0.34 ×");
        assert_eq!(times(0.0041), "0.004 ×");
        assert_eq!(times(1.0), "1.00 ×");
    }
}
