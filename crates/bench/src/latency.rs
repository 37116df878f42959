//! Latency histograms (microsecond resolution, hdrhistogram) that merge across tasks and processes.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency recorded exactly; slower samples are clamped to it.
const MAX_MICROS: u64 = 120_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

/// A histogram as `(value in µs, count)` pairs, the form generator processes report it in.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LatencyPairs(pub Vec<(u64, u64)>);

/// Percentiles of a histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram keeping three significant digits.
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("1 µs to MAX_MICROS at 3 significant digits is a valid constant range"),
        )
    }

    /// Records one sample.
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        self.0.saturating_record(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms share the same bounds, so adding cannot fail; a failure would only
        // lose samples, never invent them.
        let _ = self.0.add(&other.0);
    }

    /// The histogram as pairs, for sending between processes.
    pub fn to_pairs(&self) -> LatencyPairs {
        LatencyPairs(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Rebuilds a histogram from pairs made by [`Latency::to_pairs`].
    pub fn from_pairs(pairs: &LatencyPairs) -> Self {
        let mut latency = Self::new();
        for &(micros, count) in &pairs.0 {
            let _ = latency.0.record_n(micros.clamp(1, MAX_MICROS), count);
        }
        latency
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Median, 99th percentile and maximum.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_samples() {
        let mut latency = Latency::new();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let summary = latency.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn pairs_round_trip_and_merge() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record(Duration::from_micros(250));
        b.record(Duration::from_millis(7));
        b.record(Duration::from_millis(7));
        let mut merged = Latency::from_pairs(&a.to_pairs());
        merged.merge(&Latency::from_pairs(&b.to_pairs()));
        assert_eq!(merged.count(), 3);
        assert!((merged.summary().max_ms - 7.0).abs() < 0.01);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zero() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }
}
