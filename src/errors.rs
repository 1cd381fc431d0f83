//! Errors as a person reads them.

/// An error's text for a person: `{e:#}` without the stack traces candle appends to its errors
/// when `RUST_BACKTRACE` is set (dozens of `N: <unknown>` lines in a release build).
pub fn error_text(e: &dyn std::fmt::Display) -> String {
    let text = format!("{e:#}");
    let frame = |line: &str| {
        let t = line.trim_start();
        line.starts_with(' ')
            && (t.starts_with("at ")
                || t.split_once(": ")
                    .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
    };
    let kept: Vec<&str> = text.lines().filter(|l| !frame(l)).collect();
    kept.join("\n").replace("\n)", ")").trim_end().to_string()
}
