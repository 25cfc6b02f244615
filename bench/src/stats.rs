//! Latency percentiles.

use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    pub fn record(&mut self, sample: Duration) {
        self.samples.push(sample);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// The `fraction` quantile (0.5 = median) in microseconds; 0 with no samples.
    pub fn quantile_us(&mut self, fraction: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.sort_unstable();
        let index = ((self.samples.len() - 1) as f64 * fraction).round() as usize;
        self.samples[index].as_secs_f64() * 1e6
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }
}
