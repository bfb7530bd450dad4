//! Error reporting shared by every layer: errors are `thiserror` enums whose `#[source]` holds
//! the cause (not repeated in the message), and `chain` prints one as `a: b: c` for a log line,
//! an event or the command line. At the bottom of the module graph, so anything may use it.

/// `a: b: c` from an error and its sources (each printed once).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}
