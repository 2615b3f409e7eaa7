//! Building a scrape: metric families filled from figures read at scrape
//! time, written in Prometheus's text format by the `prometheus` crate.
//! The node's figures already live in atomics and `stats` lines, so a scrape
//! reads them once instead of keeping a second copy up to date on every
//! request.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// The families of one scrape, in the order first named.
#[derive(Default)]
pub struct Families {
    families: Vec<MetricFamily>,
}

impl Families {
    /// The family `name`, made on first use.
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let at = match self.families.iter().position(|f| f.name() == name) {
            Some(at) => at,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(kind);
                self.families.push(f);
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        fill: impl FnOnce(&mut Metric),
    ) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        self.family(name, help, kind).mut_metric().push(m);
    }

    /// A counter sample (the name ends in `_total` by convention).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, MetricType::COUNTER, labels, |m| {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        });
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, MetricType::GAUGE, labels, |m| {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    /// A sample of `kind` with `labels` for each `(figure, name, help)` row
    /// whose figure `value` has (a node without the figure leaves it out).
    pub fn rows(
        &mut self,
        kind: MetricType,
        rows: &[(&str, &str, &str)],
        labels: &[(&str, &str)],
        value: impl Fn(&str) -> Option<f64>,
    ) {
        for (figure, name, help) in rows {
            match (value(figure), kind) {
                (Some(v), MetricType::COUNTER) => self.counter(name, help, labels, v),
                (Some(v), _) => self.gauge(name, help, labels, v),
                (None, _) => {}
            }
        }
    }

    /// A histogram sample: `buckets` as (upper bound, cumulative count),
    /// without `+Inf` (the text format adds it from `count`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        self.push(name, help, MetricType::HISTOGRAM, labels, |m| {
            let mut h = Histogram::default();
            h.set_sample_count(count);
            h.set_sample_sum(sum);
            h.set_bucket(
                buckets
                    .iter()
                    .map(|&(le, n)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        });
    }

    /// The scrape in the text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.families, &mut out)
            .expect("families built here are well formed");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format() {
        let mut f = Families::default();
        f.gauge("memcached_up", "Up.", &[], 1.0);
        f.counter(
            "memcached_commands_total",
            "Commands.",
            &[("command", "get"), ("status", "hit")],
            3.0,
        );
        f.counter(
            "memcached_commands_total",
            "Commands.",
            &[("command", "get"), ("status", "miss")],
            1.0,
        );
        f.histogram(
            "zonecache_x_seconds",
            "X.",
            &[("class", "get")],
            &[(0.001, 2), (0.01, 3)],
            4,
            0.5,
        );
        let text = f.render();
        assert!(
            text.contains("# TYPE memcached_up gauge\nmemcached_up 1\n"),
            "{text}"
        );
        assert!(
            text.contains("memcached_commands_total{command=\"get\",status=\"miss\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE memcached_commands_total").count(), 1);
        assert!(
            text.contains("zonecache_x_seconds_bucket{class=\"get\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
    }
}
