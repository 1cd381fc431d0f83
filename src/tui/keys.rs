//! The key table: which keys trigger which action, with the help text of each. Dispatch and the
//! `?` overlay both read it, so the help cannot go out of date. A user's
//! `~/.config/probescope/keys.toml` rebinds any action:
//!
//! ```toml
//! [keys]
//! next_tap = ["Right", "l", "n"]
//! quit = ["q", "C-c"]
//! ```

use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Deserialize;

use super::state::Action;

/// The actions, their names in `keys.toml`, default keys and help text. The timeline's keys
/// ([`REPLAY`]) only act in a replay, where they win over the others (Home and End move the
/// timeline there, not the tap).
pub const DEFAULTS: &[(Action, &str, &[&str], &str)] = &[
    (Action::Left, "previous_tap", &["Left", "h"], "previous tap"),
    (Action::Right, "next_tap", &["Right", "l"], "next tap"),
    (
        Action::Up,
        "up",
        &["Up", "k"],
        "branch above (diagram), 10 taps back (elsewhere)",
    ),
    (
        Action::Down,
        "down",
        &["Down", "j"],
        "branch below (diagram), 10 taps on (elsewhere)",
    ),
    (Action::First, "first_tap", &["Home", "g"], "first tap"),
    (Action::Last, "last_tap", &["End", "G"], "last tap"),
    (
        Action::Inspector,
        "inspector",
        &["Enter", "i"],
        "show / hide the inspector",
    ),
    (
        Action::NextPane,
        "next_pane",
        &["Tab"],
        "focus the next pane",
    ),
    (
        Action::PrevPane,
        "previous_pane",
        &["S-Tab"],
        "focus the previous pane",
    ),
    (
        Action::Pause,
        "pause",
        &["Space", "p"],
        "pause / resume training",
    ),
    (
        Action::Snapshot,
        "snapshot",
        &["s"],
        "converged snapshot now",
    ),
    (
        Action::BarsMode,
        "bars",
        &["b"],
        "bars: train and test / train / test",
    ),
    (Action::Theme, "theme", &["t"], "next theme"),
    (
        Action::Export,
        "export",
        &["e"],
        "save the figure as SVG (the focused pane's)",
    ),
    (
        Action::Help,
        "help",
        &["?"],
        "this help (any key closes it)",
    ),
    (
        Action::Quit,
        "quit",
        &["q", "Esc", "C-c"],
        "quit (asks while training runs)",
    ),
    (
        Action::StepBack,
        "step_back",
        &["["],
        "timeline: one snapshot back",
    ),
    (
        Action::StepForward,
        "step_forward",
        &["]"],
        "timeline: one snapshot on",
    ),
    (
        Action::JumpBack,
        "jump_back",
        &["{"],
        "timeline: ten snapshots back",
    ),
    (
        Action::JumpForward,
        "jump_forward",
        &["}"],
        "timeline: ten snapshots on",
    ),
    (
        Action::TimelineStart,
        "timeline_start",
        &["Home"],
        "timeline: the first snapshot",
    ),
    (
        Action::TimelineEnd,
        "timeline_end",
        &["End"],
        "timeline: the last snapshot",
    ),
    (
        Action::Faster,
        "faster",
        &["+", "="],
        "timeline: play faster",
    ),
    (Action::Slower, "slower", &["-"], "timeline: play slower"),
];

/// The actions that only act in a replay.
pub const REPLAY: &[Action] = &[
    Action::StepBack,
    Action::StepForward,
    Action::JumpBack,
    Action::JumpForward,
    Action::TimelineStart,
    Action::TimelineEnd,
    Action::Faster,
    Action::Slower,
];

/// One key, as written in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The key.
    pub code: KeyCode,
    /// With Control held.
    pub ctrl: bool,
}

const NAMED: &[(&str, KeyCode)] = &[
    ("Left", KeyCode::Left),
    ("Right", KeyCode::Right),
    ("Up", KeyCode::Up),
    ("Down", KeyCode::Down),
    ("Home", KeyCode::Home),
    ("End", KeyCode::End),
    ("PageUp", KeyCode::PageUp),
    ("PageDown", KeyCode::PageDown),
    ("Enter", KeyCode::Enter),
    ("Tab", KeyCode::Tab),
    ("S-Tab", KeyCode::BackTab),
    ("Esc", KeyCode::Esc),
    ("Backspace", KeyCode::Backspace),
    ("Delete", KeyCode::Delete),
    ("Insert", KeyCode::Insert),
    ("Space", KeyCode::Char(' ')),
];

impl KeySpec {
    /// Parses "h", "G", "?", "Space", "Left", "S-Tab", "F5", "C-c".
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ctrl, rest) = match s.strip_prefix("C-") {
            Some(r) if !r.is_empty() => (true, r),
            _ => (false, s),
        };
        let code = if let Some((_, c)) = NAMED.iter().find(|(n, _)| *n == rest) {
            *c
        } else if let Some(n) = rest
            .strip_prefix('F')
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| (1..=12).contains(n))
        {
            KeyCode::F(n)
        } else {
            let mut chars = rest.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if !c.is_control() => KeyCode::Char(c),
                _ => {
                    return Err(format!(
                        "unknown key `{s}`: use one character (\"h\", \"G\", \"?\"), a name ({}, F1..F12), \
                         or C- before either for Control",
                        NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ))
                }
            }
        };
        Ok(Self { code, ctrl })
    }

    /// As the help shows it.
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Left => "←".to_string(),
            KeyCode::Right => "→".to_string(),
            KeyCode::Up => "↑".to_string(),
            KeyCode::Down => "↓".to_string(),
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::F(n) => format!("F{n}"),
            other => NAMED
                .iter()
                .find(|(_, c)| *c == other)
                .map_or_else(|| format!("{other:?}"), |(n, _)| n.to_string()),
        };
        if self.ctrl {
            format!("C-{base}")
        } else {
            base
        }
    }

    /// Whether `key` is this key (Shift is part of the character itself).
    pub fn matches(&self, key: &KeyEvent) -> bool {
        key.code == self.code && key.modifiers.contains(KeyModifiers::CONTROL) == self.ctrl
    }
}

/// One action's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The action.
    pub action: Action,
    /// Its name in `keys.toml`.
    pub name: &'static str,
    /// Its keys.
    pub keys: Vec<KeySpec>,
    /// Help text.
    pub help: &'static str,
}

/// A key table that cannot be used: the message names the file, the line and the key.
#[derive(Debug, thiserror::Error)]
#[error("key table {source_name}: {message}")]
pub struct KeymapError {
    /// The file.
    pub source_name: String,
    /// What is wrong.
    pub message: String,
}

/// Every action's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Keymap {
    /// In help order.
    pub bindings: Vec<Binding>,
    /// Whether the timeline's keys act (a replay).
    pub replay: bool,
}

impl Default for Keymap {
    fn default() -> Self {
        Self {
            bindings: DEFAULTS
                .iter()
                .map(|(action, name, keys, help)| Binding {
                    action: *action,
                    name,
                    keys: keys
                        .iter()
                        .map(|k| KeySpec::parse(k).expect("default keys parse (tested)"))
                        .collect(),
                    help,
                })
                .collect(),
            replay: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: toml::Table,
}

impl Keymap {
    /// The bindings that act now, in help order: in a replay the timeline's first, then the
    /// others (less the keys the timeline took).
    pub fn active(&self) -> Vec<Binding> {
        let (timeline, rest): (Vec<&Binding>, Vec<&Binding>) = self
            .bindings
            .iter()
            .partition(|b| REPLAY.contains(&b.action));
        if !self.replay {
            return rest.into_iter().cloned().collect();
        }
        let taken: Vec<KeySpec> = timeline.iter().flat_map(|b| b.keys.clone()).collect();
        let mut out: Vec<Binding> = timeline.into_iter().cloned().collect();
        out.extend(rest.into_iter().map(|b| {
            Binding {
                keys: b
                    .keys
                    .iter()
                    .filter(|k| !taken.contains(k))
                    .copied()
                    .collect(),
                ..b.clone()
            }
        }));
        out
    }

    /// The same table for a replay.
    pub fn replay_of(live: &Self) -> Self {
        Self {
            replay: true,
            ..live.clone()
        }
    }

    /// The action bound to `key`.
    pub fn action(&self, key: &KeyEvent) -> Option<Action> {
        self.active()
            .iter()
            .find(|b| b.keys.iter().any(|k| k.matches(key)))
            .map(|b| b.action)
    }

    /// The defaults with the actions in `text` (a `[keys]` table) rebound.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KeymapError> {
        let err = |message: String| KeymapError {
            source_name: source_name.to_string(),
            message,
        };
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(needle))
                .map_or(String::new(), |i| format!("line {}, ", i + 1))
        };
        let file: KeysFile = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let mut map = Self::default();
        for (name, value) in &file.keys {
            let at = line_of(name);
            let Some(b) = map.bindings.iter_mut().find(|b| b.name == name) else {
                return Err(err(format!(
                    "{at}key `{name}`: no such action; the actions are {}",
                    DEFAULTS.iter().map(|d| d.1).collect::<Vec<_>>().join(", ")
                )));
            };
            let list = value.as_array().ok_or_else(|| {
                err(format!(
                    "{at}key `{name}`: expected a list of keys, like [\"l\", \"Right\"]"
                ))
            })?;
            let mut keys = Vec::new();
            for v in list {
                let s = v
                    .as_str()
                    .ok_or_else(|| err(format!("{at}key `{name}`: keys are strings, got {v}")))?;
                keys.push(KeySpec::parse(s).map_err(|e| err(format!("{at}key `{name}`: {e}")))?);
            }
            b.keys = keys;
        }
        // One key, one action, among the live keys and among the timeline's.
        for (i, a) in map.bindings.iter().enumerate() {
            for b in &map.bindings[i + 1..] {
                if REPLAY.contains(&a.action) != REPLAY.contains(&b.action) {
                    continue;
                }
                if let Some(k) = a.keys.iter().find(|k| b.keys.contains(k)) {
                    return Err(err(format!(
                        "`{}` is bound to both `{}` and `{}`",
                        k.label(),
                        a.name,
                        b.name
                    )));
                }
            }
        }
        Ok(map)
    }

    /// `config_dir/keys.toml` where it exists, else the defaults.
    pub fn load(config_dir: Option<&Path>) -> Result<Self, KeymapError> {
        let Some(path) = config_dir.map(|d| d.join("keys.toml")) else {
            return Ok(Self::default());
        };
        if !path.is_file() {
            return Ok(Self::default());
        }
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| KeymapError {
            source_name: name.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &name)
    }

    /// The keys of `action`, as the help shows them.
    pub fn label(&self, action: Action) -> String {
        self.active()
            .iter()
            .find(|b| b.action == action)
            .map(|b| {
                b.keys
                    .iter()
                    .map(KeySpec::label)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn defaults_dispatch_and_have_no_conflicts() {
        let m = Keymap::parse("[keys]\n", "defaults").unwrap();
        assert_eq!(m, Keymap::default());
        let n = KeyModifiers::NONE;
        assert_eq!(m.action(&ev(KeyCode::Char('l'), n)), Some(Action::Right));
        assert_eq!(
            m.action(&ev(KeyCode::Char('G'), KeyModifiers::SHIFT)),
            Some(Action::Last)
        );
        assert_eq!(
            m.action(&ev(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(m.action(&ev(KeyCode::Char('c'), n)), None);
        assert_eq!(
            m.action(&ev(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Some(Action::PrevPane)
        );
        assert_eq!(m.label(Action::Quit), "q Esc C-c");
        assert_eq!(m.label(Action::Pause), "Space p");
        // The timeline's keys only act in a replay, where Home and End are theirs.
        assert_eq!(m.action(&ev(KeyCode::Char(']'), n)), None);
        assert_eq!(m.action(&ev(KeyCode::Home, n)), Some(Action::First));
        let r = Keymap::replay_of(&m);
        assert_eq!(
            r.action(&ev(KeyCode::Char(']'), n)),
            Some(Action::StepForward)
        );
        assert_eq!(r.action(&ev(KeyCode::Home, n)), Some(Action::TimelineStart));
        assert_eq!(r.action(&ev(KeyCode::Char('g'), n)), Some(Action::First));
        assert_eq!(r.label(Action::First), "g");
    }

    #[test]
    fn a_user_table_rebinds() {
        let m = Keymap::parse("[keys]\nnext_tap = [\"n\", \"F5\"]\n", "k.toml").unwrap();
        let n = KeyModifiers::NONE;
        assert_eq!(m.action(&ev(KeyCode::Char('n'), n)), Some(Action::Right));
        assert_eq!(m.action(&ev(KeyCode::F(5), n)), Some(Action::Right));
        assert_eq!(m.action(&ev(KeyCode::Char('l'), n)), None);
        assert_eq!(m.action(&ev(KeyCode::Char('h'), n)), Some(Action::Left));
    }

    #[test]
    fn bad_tables_say_where_and_what() {
        let e = Keymap::parse("[keys]\n\nnxt = [\"n\"]\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("k.toml") && e.contains("line 3") && e.contains("nxt"),
            "{e}"
        );
        let e = Keymap::parse("[keys]\nquit = [\"Escape\"]\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("Escape") && e.contains("quit"),
            "{e}"
        );
        let e = Keymap::parse("[keys]\nquit = [\"l\"]\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("next_tap") && e.contains("quit"), "{e}");
        let e = Keymap::parse("[keys]\nquit = \"q\"\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("list"), "{e}");
        assert!(Keymap::parse("[kyes]\n", "k.toml").is_err());
    }
}
