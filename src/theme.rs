//! Colour themes: `themes/*.toml`, embedded in the binary; a file of the same name in the user's
//! config directory overrides a built-in one. Colours are mapped down to what the terminal can
//! show (truecolor, 256 or 16 colours, none).

use std::path::{Path, PathBuf};

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The built-in themes, in the order `t` cycles through them; the first is the default.
pub const BUILTIN: &[(&str, &str)] = &[
    ("dark", include_str!("../themes/dark.toml")),
    ("light", include_str!("../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../themes/high-contrast.toml"),
    ),
    ("viridis", include_str!("../themes/viridis.toml")),
    ("mono", include_str!("../themes/mono.toml")),
];

/// What the terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorDepth {
    /// 24-bit colour.
    TrueColor,
    /// The xterm 256-colour palette.
    Ansi256,
    /// The 16 basic colours.
    Ansi16,
    /// No colour (`NO_COLOR`).
    None,
}

impl ColorDepth {
    /// From the environment: `NO_COLOR` (any non-empty value), `COLORTERM`, `TERM`.
    pub fn detect() -> Self {
        Self::from_env(|k| std::env::var(k).ok())
    }

    /// From an environment lookup (tests pass their own).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        if get("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            return Self::None;
        }
        let colorterm = get("COLORTERM").unwrap_or_default().to_ascii_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" {
            return Self::TrueColor;
        }
        if get("TERM").unwrap_or_default().contains("256color") {
            Self::Ansi256
        } else {
            Self::Ansi16
        }
    }
}

/// A colour as written in a theme file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ThemeColor(Color);

impl<'de> Deserialize<'de> for ThemeColor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_color(&s)
            .map(ThemeColor)
            .map_err(serde::de::Error::custom)
    }
}

fn parse_color(s: &str) -> Result<Color, String> {
    let named = [
        ("reset", Color::Reset),
        ("black", Color::Black),
        ("red", Color::Red),
        ("green", Color::Green),
        ("yellow", Color::Yellow),
        ("blue", Color::Blue),
        ("magenta", Color::Magenta),
        ("cyan", Color::Cyan),
        ("gray", Color::Gray),
        ("dark_gray", Color::DarkGray),
        ("light_red", Color::LightRed),
        ("light_green", Color::LightGreen),
        ("light_yellow", Color::LightYellow),
        ("light_blue", Color::LightBlue),
        ("light_magenta", Color::LightMagenta),
        ("light_cyan", Color::LightCyan),
        ("white", Color::White),
    ];
    if let Some((_, c)) = named.iter().find(|(n, _)| *n == s) {
        return Ok(*c);
    }
    if let Some(hex) = s.strip_prefix('#') {
        if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let v = u32::from_str_radix(hex, 16).expect("checked hex");
            return Ok(Color::Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8));
        }
    } else if let Ok(i) = s.parse::<u8>() {
        return Ok(Color::Indexed(i));
    }
    Err(format!(
        "invalid colour `{s}`: expected \"#rrggbb\", a 256-colour index, \"reset\" or a colour name \
         (black, red, green, yellow, blue, magenta, cyan, gray, dark_gray, light_*, white)"
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    monochrome: bool,
    colors: ColorsFile,
    scale: ScaleFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColorsFile {
    text: ThemeColor,
    muted: ThemeColor,
    border: ThemeColor,
    focus: ThemeColor,
    selection: ThemeColor,
    train: ThemeColor,
    test: ThemeColor,
    chance: ThemeColor,
    good: ThemeColor,
    warn: ThemeColor,
    bad: ThemeColor,
    overlay_bg: ThemeColor,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleFile {
    stops: Vec<ThemeColor>,
}

/// A theme that cannot be used: the message names the file, the line and the key.
#[derive(Debug, thiserror::Error)]
#[error("theme {source_name}: {message}")]
pub struct ThemeError {
    /// The file (or `built-in NAME`).
    pub source_name: String,
    /// What is wrong, with the line and key where known.
    pub message: String,
}

/// A loaded theme.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// Its name.
    pub name: String,
    /// One line about it.
    pub description: String,
    /// Draw without colour: shades for the error scale, reverse video for the selection.
    pub monochrome: bool,
    /// Body text.
    pub text: Color,
    /// Secondary text, axes.
    pub muted: Color,
    /// Pane borders.
    pub border: Color,
    /// The focused pane's border.
    pub focus: Color,
    /// The selected tap.
    pub selection: Color,
    /// Train-error series.
    pub train: Color,
    /// Test-error series.
    pub test: Color,
    /// The chance line.
    pub chance: Color,
    /// Status: fine.
    pub good: Color,
    /// Status: attention.
    pub warn: Color,
    /// Status: failure.
    pub bad: Color,
    /// Background of overlays.
    pub overlay_bg: Color,
    /// The error scale's stops, from 0 to chance.
    pub stops: Vec<Color>,
}

/// The shade characters that stand for the error scale without colour, light (good) to dark.
const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

impl Theme {
    /// Parses a theme file's text; `source_name` is used in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ThemeError> {
        let f: ThemeFile = toml::from_str(text).map_err(|e| ThemeError {
            source_name: source_name.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        if f.scale.stops.is_empty() {
            return Err(ThemeError {
                source_name: source_name.to_string(),
                message: "[scale] stops: give at least one colour".into(),
            });
        }
        let c = f.colors;
        Ok(Self {
            name: f.name,
            description: f.description,
            monochrome: f.monochrome,
            text: c.text.0,
            muted: c.muted.0,
            border: c.border.0,
            focus: c.focus.0,
            selection: c.selection.0,
            train: c.train.0,
            test: c.test.0,
            chance: c.chance.0,
            good: c.good.0,
            warn: c.warn.0,
            bad: c.bad.0,
            overlay_bg: c.overlay_bg.0,
            stops: f.scale.stops.into_iter().map(|s| s.0).collect(),
        })
    }

    /// A built-in theme by name.
    pub fn builtin(name: &str) -> Option<Self> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(n, text)| {
            Self::parse(text, &format!("built-in {n}")).expect("built-in themes parse (tested)")
        })
    }

    /// The default theme.
    pub fn default_theme() -> Self {
        Self::builtin(BUILTIN[0].0).expect("the default theme exists")
    }

    /// `--theme NAME|PATH`: a path (contains `/` or ends in `.toml`) is read; a name is looked up
    /// in `config_dir/themes/NAME.toml` first, then among the built-ins.
    pub fn load(spec: &str, config_dir: Option<&Path>) -> Result<Self, ThemeError> {
        let read = |path: &Path| -> Result<Self, ThemeError> {
            let text = std::fs::read_to_string(path).map_err(|e| ThemeError {
                source_name: path.display().to_string(),
                message: format!("cannot read it: {e}"),
            })?;
            Self::parse(&text, &path.display().to_string())
        };
        if spec.contains('/') || spec.ends_with(".toml") {
            return read(Path::new(spec));
        }
        if let Some(dir) = config_dir {
            let user = dir.join("themes").join(format!("{spec}.toml"));
            if user.is_file() {
                return read(&user);
            }
        }
        Self::builtin(spec).ok_or_else(|| ThemeError {
            source_name: spec.to_string(),
            message: format!(
                "no such theme; the built-in themes are {}, or give a path to a .toml file",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The error-scale colour of `t` in [0, 1] (0 perfect, 1 chance or worse), interpolated
    /// between the stops.
    pub fn scale(&self, t: f64) -> Color {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let n = self.stops.len();
        if n == 1 {
            return self.stops[0];
        }
        let pos = t * (n - 1) as f64;
        let i = (pos.floor() as usize).min(n - 2);
        let f = pos - i as f64;
        match (self.stops[i], self.stops[i + 1]) {
            (Color::Rgb(r0, g0, b0), Color::Rgb(r1, g1, b1)) => {
                let mix =
                    |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
                Color::Rgb(mix(r0, r1), mix(g0, g1), mix(b0, b1))
            }
            (a, b) => {
                if f < 0.5 {
                    a
                } else {
                    b
                }
            }
        }
    }

    /// A cell standing for error level `t` in [0, 1]: a full block in the scale's colour, or in
    /// monochrome a shade character.
    pub fn scale_cell(&self, t: f64) -> (char, Style) {
        if self.monochrome {
            let t = if t.is_finite() {
                t.clamp(0.0, 1.0)
            } else {
                1.0
            };
            let i = ((t * (SHADES.len() - 1) as f64).round() as usize).min(SHADES.len() - 1);
            (SHADES[i], Style::default())
        } else {
            ('█', Style::default().fg(self.scale(t)))
        }
    }

    /// The style of a selected item.
    pub fn selected(&self) -> Style {
        if self.monochrome {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::default()
                .fg(self.selection)
                .add_modifier(Modifier::BOLD)
        }
    }

    /// The theme with every colour mapped to what `depth` can show; `None` gives monochrome.
    pub fn for_depth(&self, depth: ColorDepth) -> Self {
        let mut t = self.clone();
        let map = |c: Color| downgrade(c, depth);
        if depth == ColorDepth::None {
            t.monochrome = true;
        }
        for c in [
            &mut t.text,
            &mut t.muted,
            &mut t.border,
            &mut t.focus,
            &mut t.selection,
            &mut t.train,
            &mut t.test,
            &mut t.chance,
            &mut t.good,
            &mut t.warn,
            &mut t.bad,
            &mut t.overlay_bg,
        ] {
            *c = map(*c);
        }
        // The scale is interpolated in RGB first, then mapped per cell; keep the RGB stops.
        t
    }

    /// The scale as a lookup table of [`PALETTE_LEVELS`] colours mapped for `depth`, so a
    /// frame interpolates and maps each level once rather than once per cell.
    pub fn palette(&self, depth: ColorDepth) -> Palette {
        Palette(
            (0..PALETTE_LEVELS)
                .map(|k| downgrade(self.scale(k as f64 / (PALETTE_LEVELS - 1) as f64), depth))
                .collect(),
        )
    }
}

/// Levels of a [`Palette`]: finer than any terminal colour step.
pub const PALETTE_LEVELS: usize = 256;

/// The error scale, precomputed for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Palette(Vec<Color>);

impl Palette {
    /// The colour of `t` in [0, 1] (clamped; NaN and infinities are the worst colour).
    pub fn at(&self, t: f64) -> Color {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.0[(t * (self.0.len() - 1) as f64 + 0.5) as usize]
    }
}

/// The user's config directory for probescope: `$XDG_CONFIG_HOME/probescope`, else
/// `~/.config/probescope`.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("probescope"))
}

/// `c` as the nearest colour `depth` can show.
pub fn downgrade(c: Color, depth: ColorDepth) -> Color {
    match (depth, c) {
        (ColorDepth::None, _) => Color::Reset,
        (ColorDepth::TrueColor, c) => c,
        (ColorDepth::Ansi256, Color::Rgb(r, g, b)) => Color::Indexed(rgb_to_256(r, g, b)),
        (ColorDepth::Ansi16, Color::Rgb(r, g, b)) => rgb_to_16(r, g, b),
        (ColorDepth::Ansi16, Color::Indexed(i)) if i >= 16 => {
            let (r, g, b) = xterm_rgb(i);
            rgb_to_16(r, g, b)
        }
        (_, c) => c,
    }
}

/// The RGB value of xterm palette entry `i` (16 and above).
fn xterm_rgb(i: u8) -> (u8, u8, u8) {
    if i >= 232 {
        let v = 8 + 10 * (i - 232);
        return (v, v, v);
    }
    let i = i.saturating_sub(16);
    let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
    (level(i / 36), level((i / 6) % 6), level(i % 6))
}

/// Nearest entry of the xterm 256-colour palette (the 6x6x6 cube or the grey ramp).
pub fn rgb_to_256(r: u8, g: u8, b: u8) -> u8 {
    let dist = |(a, b2, c): (u8, u8, u8)| {
        let d = |x: u8, y: u8| (i32::from(x) - i32::from(y)).pow(2);
        d(a, r) + d(b2, g) + d(c, b)
    };
    (16..=255u8)
        .min_by_key(|&i| dist(xterm_rgb(i)))
        .expect("non-empty palette")
}

/// Nearest of the 16 basic colours (their usual xterm values).
pub fn rgb_to_16(r: u8, g: u8, b: u8) -> Color {
    const BASIC: [(Color, (u8, u8, u8)); 16] = [
        (Color::Black, (0, 0, 0)),
        (Color::Red, (205, 0, 0)),
        (Color::Green, (0, 205, 0)),
        (Color::Yellow, (205, 205, 0)),
        (Color::Blue, (0, 0, 238)),
        (Color::Magenta, (205, 0, 205)),
        (Color::Cyan, (0, 205, 205)),
        (Color::Gray, (229, 229, 229)),
        (Color::DarkGray, (127, 127, 127)),
        (Color::LightRed, (255, 0, 0)),
        (Color::LightGreen, (0, 255, 0)),
        (Color::LightYellow, (255, 255, 0)),
        (Color::LightBlue, (92, 92, 255)),
        (Color::LightMagenta, (255, 0, 255)),
        (Color::LightCyan, (0, 255, 255)),
        (Color::White, (255, 255, 255)),
    ];
    let d = |x: u8, y: u8| (i32::from(x) - i32::from(y)).pow(2);
    BASIC
        .iter()
        .min_by_key(|(_, (a, b2, c))| d(*a, r) + d(*b2, g) + d(*c, b))
        .map(|(c, _)| *c)
        .expect("non-empty")
}

/// A toml error as "line L, key K: message".
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return msg;
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
    let key = snippet
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) if snippet.contains('=') => format!("line {line}, key `{k}`: {msg}"),
        _ => format!("line {line} (`{snippet}`): {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_is_named_for_its_file() {
        for (name, text) in BUILTIN {
            let t = Theme::parse(text, name).unwrap();
            assert_eq!(&t.name, name);
        }
        assert!(Theme::builtin("mono").unwrap().monochrome);
    }

    #[test]
    fn scale_interpolates_between_stops() {
        let mut t = Theme::default_theme();
        t.stops = vec![Color::Rgb(0, 0, 0), Color::Rgb(200, 100, 50)];
        assert_eq!(t.scale(0.0), Color::Rgb(0, 0, 0));
        assert_eq!(t.scale(1.0), Color::Rgb(200, 100, 50));
        assert_eq!(t.scale(0.5), Color::Rgb(100, 50, 25));
        assert_eq!(t.scale(7.0), Color::Rgb(200, 100, 50));
        assert_eq!(t.scale(f64::NAN), Color::Rgb(200, 100, 50));
    }

    #[test]
    fn palette_matches_the_scale_at_its_levels() {
        let t = Theme::default_theme();
        let p = t.palette(ColorDepth::TrueColor);
        assert_eq!(p.at(0.0), t.scale(0.0));
        assert_eq!(p.at(1.0), t.scale(1.0));
        assert_eq!(p.at(f64::NAN), t.scale(1.0));
        assert_eq!(p.at(-3.0), t.scale(0.0));
        let k = 77.0 / (PALETTE_LEVELS - 1) as f64;
        assert_eq!(p.at(k), t.scale(k));
        let p16 = t.palette(ColorDepth::Ansi16);
        assert_eq!(p16.at(0.5), downgrade(t.scale(0.5), ColorDepth::Ansi16));
    }

    #[test]
    fn bad_files_name_the_line_and_key() {
        let base = BUILTIN[0].1;
        let bad_colour = base.replace("train = \"#5fafff\"", "train = \"#5fafzz\"");
        let e = Theme::parse(&bad_colour, "my.toml")
            .unwrap_err()
            .to_string();
        let line = bad_colour
            .lines()
            .position(|l| l.starts_with("train"))
            .unwrap()
            + 1;
        assert!(e.contains("my.toml"), "{e}");
        assert!(e.contains(&format!("line {line}")), "{e}");
        assert!(e.contains("`train`") && e.contains("#5fafzz"), "{e}");

        let unknown = base.replace("muted =", "mutd =");
        let e = Theme::parse(&unknown, "my.toml").unwrap_err().to_string();
        assert!(e.contains("mutd"), "{e}");

        let missing = base.replace("bad = \"#ff5f5f\"\n", "");
        let e = Theme::parse(&missing, "my.toml").unwrap_err().to_string();
        assert!(e.contains("bad"), "{e}");
    }

    #[test]
    fn depth_from_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            ColorDepth::from_env(env(&[("NO_COLOR", "1"), ("COLORTERM", "truecolor")])),
            ColorDepth::None
        );
        assert_eq!(
            ColorDepth::from_env(env(&[("NO_COLOR", ""), ("COLORTERM", "truecolor")])),
            ColorDepth::TrueColor
        );
        assert_eq!(
            ColorDepth::from_env(env(&[("TERM", "tmux-256color")])),
            ColorDepth::Ansi256
        );
        assert_eq!(
            ColorDepth::from_env(env(&[("TERM", "xterm")])),
            ColorDepth::Ansi16
        );
    }

    #[test]
    fn palette_mapping_hits_exact_entries() {
        // Cube corners and grey ramp entries map to themselves.
        assert_eq!(rgb_to_256(255, 0, 0), 196);
        assert_eq!(rgb_to_256(0, 0, 0), 16);
        assert_eq!(rgb_to_256(95, 135, 175), 67);
        assert_eq!(rgb_to_256(128, 128, 128), 244);
        assert_eq!(rgb_to_16(250, 10, 10), Color::LightRed);
        assert_eq!(
            downgrade(Color::Indexed(196), ColorDepth::Ansi16),
            Color::LightRed
        );
        assert_eq!(downgrade(Color::Red, ColorDepth::None), Color::Reset);
    }

    #[test]
    fn user_theme_overrides_builtin_and_paths_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("themes")).unwrap();
        let mine = BUILTIN[0]
            .1
            .replace("description = \"Default", "description = \"Mine");
        std::fs::write(dir.path().join("themes/dark.toml"), &mine).unwrap();
        let t = Theme::load("dark", Some(dir.path())).unwrap();
        assert!(t.description.starts_with("Mine"));
        let t = Theme::load("light", Some(dir.path())).unwrap();
        assert_eq!(t.name, "light");
        let p = dir.path().join("themes/dark.toml");
        assert!(Theme::load(p.to_str().unwrap(), None).is_ok());
        let e = Theme::load("nope", None).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("viridis"), "{e}");
        let e = Theme::load("/no/such/file.toml", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such/file.toml") && e.contains("cannot read"),
            "{e}"
        );
    }
}
