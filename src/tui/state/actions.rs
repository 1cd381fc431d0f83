//! Keys and actions: a key resolves through the key table to an action, and an action changes
//! the state or asks the runner for an effect (pause, a snapshot now, quit).

use super::*;

/// What the runner must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Pause (true) or resume (false) the worker.
    Pause(bool),
    /// Ask the worker for a converged snapshot now.
    SnapshotNow,
    /// Leave the UI (stopping the worker if it still runs).
    Quit,
}

/// An action a key can trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Previous tap.
    Left,
    /// Next tap.
    Right,
    /// Up: the branch above in the diagram, ten taps back elsewhere.
    Up,
    /// Down: the branch below in the diagram, ten taps on elsewhere.
    Down,
    /// First tap.
    First,
    /// Last tap.
    Last,
    /// Show or hide the inspector.
    Inspector,
    /// Focus the next pane.
    NextPane,
    /// Focus the previous pane.
    PrevPane,
    /// Pause or resume training.
    Pause,
    /// Converged snapshot now.
    Snapshot,
    /// Next theme.
    Theme,
    /// Write the focused figure as SVG.
    Export,
    /// Train / test / both bars.
    BarsMode,
    /// Help overlay.
    Help,
    /// Quit (asks first while the run is active).
    Quit,
    /// Replay: one snapshot back.
    StepBack,
    /// Replay: one snapshot on.
    StepForward,
    /// Replay: ten snapshots back.
    JumpBack,
    /// Replay: ten snapshots on.
    JumpForward,
    /// Replay: the first snapshot.
    TimelineStart,
    /// Replay: the last snapshot.
    TimelineEnd,
    /// Replay: play faster.
    Faster,
    /// Replay: play slower.
    Slower,
    /// Compare: errors or differences from the base run.
    Diff,
    /// Compare: the next run becomes the base.
    Base,
    /// Compare: converged snapshots only, or every snapshot.
    Readings,
    /// Open the `/` prompt: show only the taps whose name contains what is typed.
    Find,
    /// Back to the newest snapshot after looking back.
    Live,
    /// The transfer matrix in place of the layer x time picture.
    Transfer,
}

impl App {
    /// Handles a key; returns what the runner must do.
    pub fn key(&mut self, key: KeyEvent) -> Option<Effect> {
        if self.searching {
            self.search_key(key);
            return None;
        }
        let action = self.keymap.action(&key);
        if self.help {
            self.help = false;
            return None;
        }
        // Esc clears a filter before it means quit.
        if key.code == KeyCode::Esc && self.filter.is_some() && !self.confirm_quit {
            self.filter = None;
            return None;
        }
        if self.confirm_quit {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('q') | KeyCode::Enter => {
                    self.quit = true;
                    Some(Effect::Quit)
                }
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.quit = true;
                    Some(Effect::Quit)
                }
                _ => {
                    self.confirm_quit = false;
                    None
                }
            };
        }
        self.flash = None;
        self.act(action?)
    }

    /// Does `action`.
    pub fn act(&mut self, action: Action) -> Option<Effect> {
        let n = self.taps.len();
        match action {
            Action::Left => self.select_by(-1),
            Action::Right => self.select_by(1),
            Action::Up | Action::Down => {
                let down = action == Action::Down;
                let lane_move = (self.focus == Pane::Diagram)
                    .then(|| {
                        self.layout
                            .as_ref()
                            .and_then(|l| l.neighbour_lane(self.selected, down))
                    })
                    .flatten();
                match lane_move {
                    Some(i) => self.selected = i,
                    None => self.select_by(if down { 10 } else { -10 }),
                }
            }
            Action::First => self.selected = self.visible().first().copied().unwrap_or(0),
            Action::Last => {
                self.selected = self
                    .visible()
                    .last()
                    .copied()
                    .unwrap_or(n.saturating_sub(1))
            }
            Action::Find => {
                self.searching = true;
                self.filter = Some(String::new());
            }
            Action::Transfer => {
                self.bottom = match self.bottom {
                    BottomView::LayerTime => BottomView::Transfer,
                    BottomView::Transfer => BottomView::Drift,
                    BottomView::Drift => BottomView::LayerTime,
                };
                if self.bottom != BottomView::LayerTime && self.transfer_matrix().is_none() {
                    self.flash = Some(
                        "no transfer matrix in this run: --set transfer=on records one".into(),
                    );
                }
            }
            Action::Live => {
                if self.timeline.is_some() {
                    let end = self.timeline.as_ref().map_or(0, |t| t.snapshots);
                    self.seek(end);
                } else {
                    self.travel = None;
                    self.flash = Some("live".into());
                }
            }
            Action::Inspector => self.inspector = !self.inspector,
            Action::NextPane | Action::PrevPane => {
                let mut panes = vec![Pane::Bars, Pane::Diagram, Pane::Heatmap, Pane::Chart];
                if self.inspector {
                    panes.push(Pane::Inspector);
                }
                let at = panes.iter().position(|p| *p == self.focus).unwrap_or(0);
                let len = panes.len();
                let next = if action == Action::NextPane {
                    (at + 1) % len
                } else {
                    (at + len - 1) % len
                };
                self.focus = panes[next];
            }
            Action::Pause if self.timeline.is_some() => {
                let t = self.timeline.as_mut().expect("checked");
                if !t.playing && t.cursor >= t.snapshots {
                    // At the end: play from the start.
                    self.seek(1);
                }
                let t = self.timeline.as_mut().expect("checked");
                t.playing = !t.playing;
                t.carry = 0.0;
            }
            Action::StepBack
            | Action::StepForward
            | Action::JumpBack
            | Action::JumpForward
            | Action::TimelineStart
            | Action::TimelineEnd => {
                let Some(t) = &self.timeline else {
                    // A live run: look back through the kept snapshots while it goes on.
                    match action {
                        Action::StepBack => self.travel_by(-1),
                        Action::StepForward => self.travel_by(1),
                        Action::JumpBack => self.travel_by(-10),
                        Action::JumpForward => self.travel_by(10),
                        _ => {}
                    }
                    self.flash = self.travel.is_none().then(|| "live".to_string());
                    return None;
                };
                let c = t.cursor as i64;
                let to = match action {
                    Action::StepBack => c - 1,
                    Action::StepForward => c + 1,
                    Action::JumpBack => c - 10,
                    Action::JumpForward => c + 10,
                    Action::TimelineStart => 1,
                    _ => t.snapshots as i64,
                };
                if let Some(t) = &mut self.timeline {
                    t.playing = false;
                }
                self.seek(to.max(0) as usize);
            }
            Action::Faster | Action::Slower => {
                if let Some(t) = &mut self.timeline {
                    t.speed = if action == Action::Faster {
                        (t.speed + 1).min(SPEEDS.len() - 1)
                    } else {
                        t.speed.saturating_sub(1)
                    };
                    self.flash = Some(format!("playback: {} snapshots/s", SPEEDS[t.speed]));
                }
            }
            Action::Pause => {
                if !self.can_steer {
                    self.flash = Some("watching a log: this view cannot steer the run".into());
                    return None;
                }
                match self.state {
                    RunState::Running => {
                        self.state = RunState::Paused;
                        self.flash = Some("paused: the worker stops at its next checkpoint".into());
                        return Some(Effect::Pause(true));
                    }
                    RunState::Paused => {
                        self.state = RunState::Running;
                        return Some(Effect::Pause(false));
                    }
                    _ => self.flash = Some("the run is not running".into()),
                }
            }
            Action::Snapshot => {
                if !self.can_steer {
                    self.flash = Some("watching a log: this view cannot steer the run".into());
                } else if !self.trains() {
                    self.flash =
                        Some("this preset trains no model: every snapshot is converged".into());
                } else if self.state.active() {
                    self.flash = Some("converged snapshot requested".into());
                    return Some(Effect::SnapshotNow);
                } else {
                    self.flash = Some("the run is over: no more snapshots".into());
                }
            }
            Action::Export => {
                self.flash = Some(match self.export_figure() {
                    Ok(p) => format!("wrote {} and .png", p.display()),
                    Err(e) => format!("export failed: {e:#}"),
                });
            }
            Action::Theme => {
                self.theme = (self.theme + 1) % self.themes.len();
                self.flash = Some(format!("theme: {}", self.theme().name));
            }
            Action::BarsMode => {
                self.bars = match self.bars {
                    BarsMode::Both => BarsMode::Train,
                    BarsMode::Train => BarsMode::Test,
                    BarsMode::Test if self.has_selectivity() => BarsMode::Selectivity,
                    BarsMode::Test | BarsMode::Selectivity => BarsMode::Both,
                }
            }
            Action::Help => self.help = true,
            // Not in this view's key table.
            Action::Diff | Action::Base | Action::Readings => {}
            Action::Quit => {
                if self.state.active() && self.can_steer {
                    self.confirm_quit = true;
                } else {
                    self.quit = true;
                    return Some(Effect::Quit);
                }
            }
        }
        None
    }
}
