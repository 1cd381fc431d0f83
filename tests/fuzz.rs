//! Every parser a user feeds, fuzzed: model files, themes, key tables and IDX data files (the
//! run-log reader is fuzzed in `tests/export.rs`). Arbitrary bytes, and real files cut short,
//! with a byte changed or with a line dropped: each gives a value or an error that names the
//! input, never a panic.
//!
//! 2,000 cases a property by default; `PROPTEST_CASES=1000000 cargo test --release --test fuzz`
//! runs a million.

use std::path::Path;

use probescope::mnist::parse_idx;
use probescope::presets::modelfile::ModelFile;
use probescope::theme::Theme;
use probescope::tui::keys::Keymap;
use proptest::prelude::*;

/// The texts of the `.toml` files in the repository's folder `dir`, by name.
fn toml_files(dir: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// The real files the mutations start from: the example and built-in model files, the built-in
/// themes, a key table binding every action, and an IDX images and labels file (plain and
/// gzip).
fn model_files() -> &'static [String] {
    static FILES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let mut files = toml_files("examples/models");
        files.extend(toml_files("src/presets/files"));
        files
    })
}

fn theme_files() -> &'static [String] {
    static FILES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| toml_files("themes"))
}

fn key_file() -> &'static str {
    static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let mut text = String::from("[keys]\n");
        for b in Keymap::default().bindings {
            let keys: Vec<String> = b.keys.iter().map(|k| format!("{:?}", k.label())).collect();
            text.push_str(&format!("{} = [{}]\n", b.name, keys.join(", ")));
        }
        text
    })
}

/// An IDX file of unsigned bytes: `dims`, then the data.
fn idx(dims: &[u32], seed: u8) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    out.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// (bytes, dimensions) of the IDX files the mutations start from.
fn idx_files() -> &'static [(Vec<u8>, usize)] {
    static FILES: std::sync::OnceLock<Vec<(Vec<u8>, usize)>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let images = idx(&[3, 4, 5], 7);
        let labels = idx(&[12], 1);
        vec![
            (gzip(&images), 3),
            (images, 3),
            (gzip(&labels), 1),
            (labels, 1),
        ]
    })
}

/// `text` cut at `cut` (a fraction), with the byte at `at` replaced by `byte`, or with the line
/// at `line` dropped, by `how` (0, 1, 2).
fn mutate(text: &[u8], how: u8, cut: f64, at: f64, byte: u8, line: f64) -> Vec<u8> {
    match how % 3 {
        0 => text[..(cut * text.len() as f64) as usize].to_vec(),
        1 => {
            let mut t = text.to_vec();
            if !t.is_empty() {
                let i = ((at * t.len() as f64) as usize).min(t.len() - 1);
                t[i] = byte;
            }
            t
        }
        _ => {
            let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            let drop = ((line * lines.len() as f64) as usize).min(lines.len() - 1);
            let kept: Vec<&[u8]> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, l)| *l)
                .collect();
            kept.join(&b'\n')
        }
    }
}

fn check_model_file(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Err(e) = ModelFile::parse(Path::new("fuzz-model.toml"), &text) {
        assert!(e.to_string().contains("fuzz-model.toml"), "{e}");
    }
}

fn check_theme(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Err(e) = Theme::parse(&text, "fuzz-theme.toml") {
        assert!(e.to_string().contains("fuzz-theme.toml"), "{e}");
    }
}

fn check_keys(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Err(e) = Keymap::parse(&text, "fuzz-keys.toml") {
        assert!(e.to_string().contains("fuzz-keys.toml"), "{e}");
    }
}

fn check_idx(bytes: &[u8], ndims: usize) {
    match parse_idx("fuzz-ubyte.gz", bytes, ndims) {
        Ok(a) => assert_eq!(
            a.data.len(),
            a.dims.iter().product::<usize>(),
            "an IDX array's data must fill its dimensions"
        ),
        Err(e) => assert!(e.to_string().contains("fuzz-ubyte.gz"), "{e}"),
    }
}

/// The starting files are valid: the mutations start from inputs the parsers accept.
#[test]
fn the_real_files_parse() {
    for text in model_files() {
        ModelFile::parse(Path::new("example.toml"), text).unwrap();
    }
    for text in theme_files() {
        Theme::parse(text, "theme.toml").unwrap();
    }
    let keys = Keymap::parse(key_file(), "keys.toml").unwrap();
    assert_eq!(keys, Keymap::default());
    for (bytes, ndims) in idx_files() {
        parse_idx("data", bytes, *ndims).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn model_files_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        which in any::<usize>(),
        (how, cut, at, byte, line) in (any::<u8>(), 0.0f64..=1.0, 0.0f64..1.0, any::<u8>(), 0.0f64..1.0),
    ) {
        check_model_file(&bytes);
        let files = model_files();
        check_model_file(&mutate(files[which % files.len()].as_bytes(), how, cut, at, byte, line));
    }

    #[test]
    fn themes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        which in any::<usize>(),
        (how, cut, at, byte, line) in (any::<u8>(), 0.0f64..=1.0, 0.0f64..1.0, any::<u8>(), 0.0f64..1.0),
    ) {
        check_theme(&bytes);
        let files = theme_files();
        check_theme(&mutate(files[which % files.len()].as_bytes(), how, cut, at, byte, line));
    }

    #[test]
    fn key_tables_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        (how, cut, at, byte, line) in (any::<u8>(), 0.0f64..=1.0, 0.0f64..1.0, any::<u8>(), 0.0f64..1.0),
    ) {
        check_keys(&bytes);
        check_keys(&mutate(key_file().as_bytes(), how, cut, at, byte, line));
    }

    #[test]
    fn idx_files_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        which in any::<usize>(),
        (how, cut, at, byte) in (any::<u8>(), 0.0f64..=1.0, 0.0f64..1.0, any::<u8>()),
    ) {
        check_idx(&bytes, 3);
        check_idx(&bytes, 1);
        let (file, ndims) = &idx_files()[which % idx_files().len()];
        // Cut or a byte changed (an IDX file has no lines).
        check_idx(&mutate(file, how % 2, cut, at, byte, 0.0), *ndims);
    }
}
