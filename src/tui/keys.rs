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
        "bars: train and test / train / test / selectivity (if on)",
    ),
    (
        Action::Find,
        "find",
        &["/"],
        "find taps by name (Enter keeps the filter, Esc clears it)",
    ),
    (
        Action::Live,
        "live",
        &["L"],
        "back to the newest snapshot (after [ ] { } looked back)",
    ),
    (
        Action::Transfer,
        "transfer",
        &["x"],
        "layer x time / transfer matrix / drift (transfer=on)",
    ),
    (Action::Theme, "theme", &["t"], "next theme"),
    (
        Action::Export,
        "export",
        &["e"],
        "save the focused pane's figure (SVG and PNG)",
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
    (
        Action::Diff,
        "difference",
        &["d"],
        "compare: errors / difference from the base run",
    ),
    (
        Action::Base,
        "base_run",
        &["a"],
        "compare: the next run becomes the base",
    ),
    (
        Action::Readings,
        "readings",
        &["c"],
        "compare: converged snapshots only / every snapshot",
    ),
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

/// The timeline's actions that also act in a live run, looking back while it goes on.
const LOOK_BACK: &[Action] = &[
    Action::StepBack,
    Action::StepForward,
    Action::JumpBack,
    Action::JumpForward,
];

/// The actions that only act in `probescope compare`.
pub const COMPARE: &[Action] = &[Action::Diff, Action::Base, Action::Readings];

/// The actions that do nothing in `probescope compare` (it steers no run).
const NOT_IN_COMPARE: &[Action] = &[
    Action::Snapshot,
    Action::Find,
    Action::Transfer,
    Action::Live,
];

/// Which view the table serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// A live run or an attached one.
    Live,
    /// `probescope replay`: the timeline's keys act.
    Replay,
    /// `probescope compare`: the timeline's and the comparison's keys act.
    Compare,
}

/// The group an action's keys must be unique in: the live keys, the timeline's, the
/// comparison's (which must also differ from every other, since all act together in compare).
fn layer(a: Action) -> u8 {
    if COMPARE.contains(&a) {
        2
    } else if REPLAY.contains(&a) {
        1
    } else {
        0
    }
}

/// An action's help where `mode` gives it another meaning than a live run does.
fn help_in(mode: KeyMode, action: Action) -> Option<&'static str> {
    match (mode, action) {
        // Outside a live run, Space plays the timeline.
        (KeyMode::Replay | KeyMode::Compare, Action::Pause) => Some("timeline: play / stop"),
        (KeyMode::Live, Action::StepBack) => Some("look back one snapshot (training goes on)"),
        (KeyMode::Live, Action::StepForward) => {
            Some("look one snapshot on (past the newest: live)")
        }
        (KeyMode::Live, Action::JumpBack) => Some("look back ten snapshots"),
        (KeyMode::Live, Action::JumpForward) => Some("look ten snapshots on"),
        (KeyMode::Replay, Action::Live) => Some("timeline: the last snapshot"),
        // A comparison has no diagram and compares one split at a time.
        (KeyMode::Compare, Action::Up) => Some("10 taps back"),
        (KeyMode::Compare, Action::Down) => Some("10 taps on"),
        (KeyMode::Compare, Action::BarsMode) => Some("test / train error"),
        (KeyMode::Compare, Action::Export) => Some("save the comparison's figure (SVG and PNG)"),
        _ => None,
    }
}

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
    /// Parses "h", "G", "?", "Space", "Left", "S-Tab", "F5", "C-c", and the arrows as the help
    /// shows them ("←" is Left), so a key copied from the help reads back as itself.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ctrl, rest) = match s.strip_prefix("C-") {
            Some(r) if !r.is_empty() => (true, r),
            _ => (false, s),
        };
        let arrow = match rest {
            "←" => Some(KeyCode::Left),
            "→" => Some(KeyCode::Right),
            "↑" => Some(KeyCode::Up),
            "↓" => Some(KeyCode::Down),
            _ => None,
        };
        let code = if let Some(c) = arrow {
            c
        } else if let Some((_, c)) = NAMED.iter().find(|(n, _)| *n == rest) {
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
    /// Which view it serves.
    pub mode: KeyMode,
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
            mode: KeyMode::Live,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: toml::Table,
}

impl Keymap {
    /// The bindings that act now, in help order: in a replay or a comparison the timeline's
    /// (and the comparison's) first, then the others, less the keys those took.
    pub fn active(&self) -> Vec<Binding> {
        let first: &[&[Action]] = match self.mode {
            KeyMode::Live => &[LOOK_BACK],
            KeyMode::Replay => &[REPLAY],
            KeyMode::Compare => &[REPLAY, COMPARE],
        };
        let (lead, rest): (Vec<&Binding>, Vec<&Binding>) = self
            .bindings
            .iter()
            .filter(|b| layer(b.action) == 0 || first.iter().any(|g| g.contains(&b.action)))
            .filter(|b| !(self.mode == KeyMode::Compare && NOT_IN_COMPARE.contains(&b.action)))
            .partition(|b| layer(b.action) != 0);
        // Who keeps a key both want: in a live run the live actions (looking back takes only
        // keys none of them has), elsewhere the timeline's and the comparison's.
        let (winners, others) = if self.mode == KeyMode::Live {
            (rest, lead)
        } else {
            (lead, rest)
        };
        let taken: Vec<KeySpec> = winners.iter().flat_map(|b| b.keys.clone()).collect();
        let help = |b: &Binding| help_in(self.mode, b.action).unwrap_or(b.help);
        let mut out: Vec<Binding> = winners
            .into_iter()
            .map(|b| Binding {
                help: help(b),
                ..b.clone()
            })
            .collect();
        out.extend(others.into_iter().map(|b| {
            Binding {
                keys: b
                    .keys
                    .iter()
                    .filter(|k| !taken.contains(k))
                    .copied()
                    .collect(),
                help: help(b),
                ..b.clone()
            }
        }));
        out
    }

    /// The same table for `mode`.
    pub fn for_mode(live: &Self, mode: KeyMode) -> Self {
        Self {
            mode,
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
        // One key, one action, among the live keys and among the timeline's; the comparison's
        // keys differ from all.
        for (i, a) in map.bindings.iter().enumerate() {
            for b in &map.bindings[i + 1..] {
                let (la, lb) = (layer(a.action), layer(b.action));
                if la != lb && la != 2 && lb != 2 {
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
        // The timeline's keys act in a replay, where Home and End are theirs; in a live run
        // [ ] { } look back.
        assert_eq!(
            m.action(&ev(KeyCode::Char(']'), n)),
            Some(Action::StepForward)
        );
        assert_eq!(m.action(&ev(KeyCode::Char('+'), n)), None);
        assert_eq!(m.action(&ev(KeyCode::Home, n)), Some(Action::First));
        let r = Keymap::for_mode(&m, KeyMode::Replay);
        assert_eq!(
            r.action(&ev(KeyCode::Char(']'), n)),
            Some(Action::StepForward)
        );
        assert_eq!(r.action(&ev(KeyCode::Home, n)), Some(Action::TimelineStart));
        assert_eq!(r.action(&ev(KeyCode::Char('g'), n)), Some(Action::First));
        assert_eq!(r.label(Action::First), "g");
        // The comparison's keys act only there; `s` (snapshot) does nothing there.
        assert_eq!(r.action(&ev(KeyCode::Char('d'), n)), None);
        let c = Keymap::for_mode(&m, KeyMode::Compare);
        assert_eq!(c.action(&ev(KeyCode::Char('d'), n)), Some(Action::Diff));
        assert_eq!(c.action(&ev(KeyCode::Char('s'), n)), None);
        assert_eq!(c.action(&ev(KeyCode::End, n)), Some(Action::TimelineEnd));
        assert!(c.active().iter().all(|b| b.action != Action::Snapshot));
        let play = c.active().into_iter().find(|b| b.action == Action::Pause);
        assert_eq!(play.map(|b| b.help), Some("timeline: play / stop"));
        // A comparison key may not take a key of any other action.
        let e = Keymap::parse("[keys]\ndifference = [\"]\"]\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("difference") && e.contains("step_forward"),
            "{e}"
        );
    }

    /// Every default key's help label reads back as that key: a table copied from the help
    /// (arrows as arrows) is the defaults again.
    #[test]
    fn help_labels_read_back() {
        for b in Keymap::default().bindings {
            for k in &b.keys {
                assert_eq!(KeySpec::parse(&k.label()), Ok(*k), "{}", k.label());
            }
        }
        assert_eq!(
            KeySpec::parse("C-←").map(|k| (k.code, k.ctrl)),
            Ok((KeyCode::Left, true))
        );
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
