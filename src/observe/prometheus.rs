//! A minimal parser of the Prometheus text exposition format (and the OpenMetrics text that
//! exporters also serve): enough to read gauges from dcgm-exporter, nvidia_gpu_exporter,
//! node_exporter, vLLM and llama-server.
//!
//! Pure, and total: any input, however broken, yields the samples that could be read and skips
//! the rest; it never panics (a proptest feeds it arbitrary bytes). Not supported, because no
//! exporter we read needs it: exemplars and timestamps are ignored, `# TYPE`/`# HELP` are
//! skipped, histograms are just samples named `_bucket`/`_sum`/`_count`.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses every readable sample of `text`; unreadable lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// Samples named `name`.
pub fn named<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| s.name == name)
}

/// Sum of the finite values of samples named `name`, `None` when there is none.
pub fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut total = None;
    for s in named(samples, name).filter(|s| s.value.is_finite()) {
        *total.get_or_insert(0.0) += s.value;
    }
    total
}

/// Largest finite value of samples named `name`.
pub fn max(samples: &[Sample], name: &str) -> Option<f64> {
    named(samples, name).map(|s| s.value).filter(|v| v.is_finite()).reduce(f64::max)
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let value_text = rest.split_whitespace().next()?;
    let value = parse_value(value_text)?;
    Some(Sample { name: name.to_owned(), labels, value })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `k="v",k2="v2"}` (the opening brace already consumed); returns the labels and the
/// text after the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if !valid_name(key) {
            return None;
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((key.to_owned(), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

fn parse_value(t: &str) -> Option<f64> {
    match t {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => t.parse::<f64>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names, labels with escapes, exponents, comments and timestamps are read as the format
    /// defines them.
    #[test]
    fn parses_the_text_format() {
        let text = "# HELP x help\n# TYPE x gauge\n\
                    x{a=\"1\",b=\"q\\\"uote\\\\ \\n\"} 1.5e3 1700000000\n\
                    y 42\n\
                    vllm:num_requests_running{model_name=\"m\",} 3\n\
                    z{} -Inf\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x");
        assert_eq!(s[0].value, 1500.0);
        assert_eq!(s[0].label("b"), Some("q\"uote\\ \n"));
        assert_eq!(s[1].value, 42.0);
        assert_eq!(s[2].label("model_name"), Some("m"));
        assert_eq!(s[3].value, f64::NEG_INFINITY);
        assert_eq!(sum(&s, "y"), Some(42.0));
        assert_eq!(max(&s, "nope"), None);
    }

    /// Broken lines are skipped one by one; the good lines around them still count.
    #[test]
    fn skips_broken_lines() {
        let text = "good 1\n{bad} 2\nx{a=\"unterminated} 3\n9name 4\nx{a=1} 5\nnovalue\nok 6";
        let s = parse(text);
        let names: Vec<_> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good", "ok"]);
    }

    proptest::proptest! {
        /// Arbitrary text never makes the parser panic.
        #[test]
        fn never_panics_on_garbage(text in "\\PC*") {
            let _ = parse(&text);
        }

        /// Arbitrary bytes, decoded lossily as an exporter body would be, never panic either,
        /// including text built from the format's own punctuation.
        #[test]
        fn never_panics_on_format_like_garbage(text in "[a-z_:{}=\",\\\\ \\n0-9.eE+-]{0,200}") {
            let _ = parse(&text);
        }
    }
}
