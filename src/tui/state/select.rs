//! The selection and the filter: which taps are shown, which one is selected, and the find
//! prompt's typing.

use super::*;

impl App {
    pub(super) fn select_by(&mut self, delta: i64) {
        let vis = self.visible();
        let n = vis.len() as i64;
        if n == 0 {
            return;
        }
        // Among the taps the filter shows: from where the selection is (or the first shown
        // tap after it). Single steps wrap around; jumps stop at the ends.
        let at = vis.iter().position(|&i| i >= self.selected).unwrap_or(0) as i64;
        let at = if vis.get(at as usize) == Some(&self.selected) || delta < 0 {
            at
        } else {
            at - 1
        };
        let next = at + delta;
        let k = if delta.abs() == 1 {
            next.rem_euclid(n)
        } else {
            next.clamp(0, n - 1)
        };
        self.selected = vis[k as usize];
    }

    /// The taps the bars and the layer x time picture show: those whose name contains the `/`
    /// filter (any case), or all when there is none or nothing matches.
    pub fn visible(&self) -> Vec<usize> {
        match self.matches() {
            Some(hits) if !hits.is_empty() => hits,
            _ => (0..self.taps.len()).collect(),
        }
    }

    /// Whether the `/` filter matches no tap (so every tap shows).
    pub fn filter_misses(&self) -> bool {
        self.matches().is_some_and(|hits| hits.is_empty())
    }

    /// The taps whose name contains the `/` filter (any case); None without a filter.
    pub(super) fn matches(&self) -> Option<Vec<usize>> {
        let f = self
            .filter
            .as_deref()
            .filter(|f| !f.is_empty())?
            .to_lowercase();
        Some(
            (0..self.taps.len())
                .filter(|&i| self.taps[i].name.to_lowercase().contains(&f))
                .collect(),
        )
    }

    /// A key while the `/` prompt is open.
    pub(super) fn search_key(&mut self, key: KeyEvent) {
        let f = self.filter.get_or_insert_with(String::new);
        match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => f.push(c),
            KeyCode::Backspace => {
                f.pop();
            }
            KeyCode::Enter => self.searching = false,
            _ => {
                // Esc, Ctrl-C and the rest: close the prompt and clear the filter.
                self.searching = false;
                self.filter = None;
            }
        }
        // Keep the selection on a shown tap.
        let vis = self.visible();
        if !vis.contains(&self.selected) {
            if let Some(&first) = vis.first() {
                self.selected = first;
            }
        }
    }
}
