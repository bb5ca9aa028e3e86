//! Reading a service's `/metrics` (Prometheus text format) into the few numbers the page
//! shows. Metric names are event-store's (`metrics::names`); a line that does not parse is
//! skipped, never an error.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remainder) = parse_labels(after)?;
        labels = parsed;
        rest = remainder;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Labels up to the closing `}`; returns them and the text after it.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let rest = rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &rest[end + 1..];
    }
}

/// A reader's lag, as the service measures it from its database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lag {
    pub name: String,
    pub events: f64,
    pub seconds: f64,
}

/// What the page shows of one service's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceMetrics {
    pub head_position: Option<f64>,
    pub relay_lag: Option<Lag>,
    pub projections: Vec<Lag>,
    /// `es_dead_letters_total`, summed over consumers and kinds.
    pub dead_letters: f64,
    /// The same, by kind (`poison`, `version_conflict`, …).
    pub dead_letters_by_kind: BTreeMap<String, f64>,
    /// `es_events_appended_total`, summed over categories.
    pub events_appended: f64,
}

impl ServiceMetrics {
    pub fn from_samples(samples: &[Sample]) -> ServiceMetrics {
        let one = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        let mut metrics = ServiceMetrics {
            head_position: one("es_head_position"),
            relay_lag: one("es_relay_lag_events").map(|events| Lag {
                name: "relay".to_owned(),
                events,
                seconds: one("es_relay_lag_seconds").unwrap_or(0.0),
            }),
            ..ServiceMetrics::default()
        };
        for s in samples {
            match s.name.as_str() {
                "es_dead_letters_total" => {
                    metrics.dead_letters += s.value;
                    let kind = s.labels.get("kind").cloned().unwrap_or_default();
                    *metrics.dead_letters_by_kind.entry(kind).or_default() += s.value;
                }
                "es_events_appended_total" => metrics.events_appended += s.value,
                "es_projection_lag_events" => {
                    let name = s.labels.get("projection").cloned().unwrap_or_default();
                    let seconds = samples
                        .iter()
                        .find(|t| {
                            t.name == "es_projection_lag_seconds"
                                && t.labels.get("projection") == Some(&name)
                        })
                        .map_or(0.0, |t| t.value);
                    metrics.projections.push(Lag {
                        name,
                        events: s.value,
                        seconds,
                    });
                }
                _ => {}
            }
        }
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP es_dead_letters_total Messages a consumer could not decode
# TYPE es_dead_letters_total counter
es_dead_letters_total{service="order-service",consumer="order-service",kind="poison"} 2
es_dead_letters_total{service="order-service",consumer="order-service",kind="out_of_order"} 1
es_events_appended_total{service="order-service",category="order"} 5
es_head_position{service="order-service"} 1048581
es_relay_lag_events{service="order-service"} 3
es_relay_lag_seconds{service="order-service"} 0.25
es_projection_lag_events{service="order-service",projection="catalog"} 4
es_projection_lag_seconds{service="order-service",projection="catalog"} 1.5
http_request_duration_seconds_bucket{le="+Inf",route="/a, \"b\"\\"} 7 1700000000000
garbage line without value
"#;

    #[test]
    fn samples_keep_labels_including_escaped_quotes_and_commas() {
        let samples = parse(TEXT);
        let bucket = samples
            .iter()
            .find(|s| s.name == "http_request_duration_seconds_bucket")
            .expect("bucket");
        assert_eq!(bucket.labels["le"], "+Inf");
        assert_eq!(bucket.labels["route"], r#"/a, "b"\"#);
        assert_eq!(bucket.value, 7.0);
        assert!(samples.iter().all(|s| s.name != "garbage"));
    }

    #[test]
    fn the_service_numbers_are_picked_and_dead_letters_summed() {
        let m = ServiceMetrics::from_samples(&parse(TEXT));
        assert_eq!(m.head_position, Some(1_048_581.0));
        let relay = m.relay_lag.expect("relay lag");
        assert_eq!((relay.events, relay.seconds), (3.0, 0.25));
        assert_eq!(m.projections.len(), 1);
        assert_eq!(m.projections[0].name, "catalog");
        assert_eq!(
            (m.projections[0].events, m.projections[0].seconds),
            (4.0, 1.5)
        );
        assert_eq!(m.dead_letters, 3.0);
        assert_eq!(m.dead_letters_by_kind["poison"], 2.0);
        assert_eq!(m.events_appended, 5.0);
    }

    #[test]
    fn broken_text_gives_nothing_rather_than_an_error() {
        for text in ["", "{", "a{b=\"c", "a{b=c} 1", "a 1 2 3 x", "é{\"} 1"] {
            let m = ServiceMetrics::from_samples(&parse(text));
            assert_eq!(m.head_position, None, "{text}");
        }
        assert_eq!(parse("a 1 2 3 x").len(), 1);
    }
}
