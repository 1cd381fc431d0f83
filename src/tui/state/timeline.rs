//! The timeline: a replay's records shown up to a cursor, played at a speed, and the live
//! view looking back at an earlier snapshot while new ones arrive.

use super::*;

/// Playback speeds of a replay, in snapshots per second.
pub const SPEEDS: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0];

/// A replay's timeline: every record of a run log and how many of its snapshots are shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The header and every record, in order.
    pub records: Vec<Record>,
    /// Number of snapshots in the log.
    pub snapshots: usize,
    /// Snapshots shown (1 ..= snapshots; 0 when the log has none).
    pub cursor: usize,
    /// Whether it plays.
    pub playing: bool,
    /// Index into [`SPEEDS`].
    pub speed: usize,
    /// Fraction of a snapshot accumulated while playing.
    pub carry: f64,
}

impl App {
    /// A replay of `records` (the header first), read-only, shown at its last snapshot.
    pub fn replay(&mut self, records: Vec<Record>) {
        let snapshots = records
            .iter()
            .filter(|r| matches!(r, Record::Snapshot(_)))
            .count();
        self.can_steer = false;
        self.keymap = Keymap::for_mode(&self.keymap, crate::tui::keys::KeyMode::Replay);
        self.timeline = Some(Timeline {
            records,
            snapshots,
            cursor: 0,
            playing: false,
            speed: 3,
            carry: 0.0,
        });
        self.seek(snapshots);
    }

    /// Shows the replay at `cursor` snapshots (clamped to 1 ..= the number of snapshots): the
    /// state is rebuilt from the log's start, so it is exactly what the live view showed then.
    pub fn seek(&mut self, cursor: usize) {
        let Some(t) = self.timeline.take() else {
            return;
        };
        let cursor = cursor.clamp(t.snapshots.min(1), t.snapshots);
        self.reset_data();
        let mut seen = 0;
        for r in &t.records {
            if let Record::Snapshot(_) = r {
                if seen == cursor {
                    break;
                }
                seen += 1;
            }
            // The end line belongs to the last snapshot only.
            if matches!(r, Record::End(_)) && cursor < t.snapshots {
                continue;
            }
            self.apply(r);
        }
        if cursor < t.snapshots && self.state.active() {
            self.state = RunState::Paused;
        } else if self.state.active() {
            self.state = RunState::Failed(
                "the log ends without an end line: the run was killed, or it is still going \
                 (probescope attach follows a running one)"
                    .into(),
            );
        }
        self.timeline = Some(Timeline { cursor, ..t });
    }

    /// Advances a playing replay by `dt` seconds; whether anything changed.
    pub fn on_tick(&mut self, dt: f64) -> bool {
        let Some(t) = &mut self.timeline else {
            return false;
        };
        if !t.playing {
            return false;
        }
        t.carry += dt * SPEEDS[t.speed];
        let steps = t.carry.floor() as usize;
        if steps == 0 {
            return false;
        }
        t.carry -= steps as f64;
        let next = (t.cursor + steps).min(t.snapshots);
        if next >= t.snapshots {
            t.playing = false;
        }
        self.seek(next);
        true
    }

    /// The snapshot the bars, the diagram and the inspector show: the one looked back at, or
    /// the newest.
    pub fn shown(&self) -> Option<&Snapshot> {
        self.travel
            .and_then(|t| self.kept_snapshot(t))
            .or(self.latest.as_ref())
    }

    /// Looks back `delta` kept snapshots from where the view is (negative: back); past the
    /// newest, the view is live again.
    pub fn travel_by(&mut self, delta: i64) {
        let order: Vec<usize> = self.kept_sorted().iter().map(|(i, _)| *i).collect();
        if order.is_empty() {
            return;
        }
        let at = match self.travel {
            Some(t) => order
                .iter()
                .position(|&s| s >= t)
                .unwrap_or(order.len() - 1) as i64,
            None => order.len() as i64 - 1,
        };
        let to = at + delta;
        self.travel = if to >= order.len() as i64 - 1 && delta > 0 {
            None
        } else {
            Some(order[to.clamp(0, order.len() as i64 - 1) as usize])
        };
    }
}
