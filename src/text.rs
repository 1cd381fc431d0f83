//! Text as a person reads it: errors without stack traces, words wrapped to a width.

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

/// Splits `text` into lines of at most `width` characters at spaces (a word longer than the
/// width gets a line of its own); no lines for an empty text.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap("aa bbb cc dddd e", 6);
        assert_eq!(w, vec!["aa bbb", "cc", "dddd e"]);
        assert!(wrap("", 5).is_empty());
        // A word wider than the width has a line of its own.
        assert_eq!(wrap("a abcdefgh b", 4), vec!["a", "abcdefgh", "b"]);
    }
}
