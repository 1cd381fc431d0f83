//! The UI rendered into an off-screen buffer: snapshots of each preset's first snapshot and of the
//! help at 80x24 and 200x60, every terminal size from 1x1 to 300x100, colours, failure and quit.

use probescope::runlog::{Record, RunHeader};
use probescope::tui::sample;
use probescope::tui::state::{Action, App};
use probescope::tui::theme::{ColorDepth, Theme};
use probescope::tui::view::{self, MIN_SIZE};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;

fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
    view::draw(app, &mut buf);
    buf
}

fn text(buf: &Buffer) -> String {
    let a = buf.area;
    (0..a.height)
        .map(|y| {
            (0..a.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn deep_skip_header() -> RunHeader {
    sample::deep_skip_header().unwrap()
}

const PRESETS: [&str; 3] = ["untrained-mlp", "bifurcation", "feature-subset"];

#[test]
fn first_snapshot_of_each_preset() {
    for preset in PRESETS {
        let h = sample::header(preset, &[]).unwrap();
        let app = sample::app(&h, 1);
        for (w, ht) in [(80, 24), (200, 60)] {
            insta::assert_snapshot!(format!("{preset}_{w}x{ht}"), text(&render(&app, w, ht)));
        }
    }
}

#[test]
fn help_overlay() {
    let h = sample::header("bifurcation", &[]).unwrap();
    let mut app = sample::app(&h, 3);
    app.act(Action::Help);
    for (w, ht) in [(80, 24), (200, 60)] {
        let t = text(&render(&app, w, ht));
        // Every key of the table is listed with its whole help: read each half of the screen
        // (two columns where one does not fit) as one line of words.
        let half = |right: bool| {
            t.lines()
                .map(|l| {
                    let c: Vec<char> = l.chars().collect();
                    let mid = c.len() / 2;
                    let part: String = if right {
                        c[mid..].iter().collect()
                    } else {
                        c[..mid].iter().collect()
                    };
                    part
                })
                .collect::<Vec<_>>()
                .join(" ")
                .replace('│', " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let whole = t.split_whitespace().collect::<Vec<_>>().join(" ");
        let (left, right) = (half(false), half(true));
        for b in &app.keymap.active() {
            let keys = app.keymap.label(b.action);
            let entry = format!("{keys} {}", b.help);
            assert!(
                [&whole, &left, &right].iter().any(|s| s.contains(&entry)),
                "{entry} missing:\n{t}"
            );
        }
        insta::assert_snapshot!(format!("help_{w}x{ht}"), t);
    }
}

#[test]
fn deep_chain_with_skip_connection() {
    let h = deep_skip_header();
    assert_eq!(h.probes.len(), 129);
    let mut app = sample::app(&h, 6);
    app.selected = 64;
    let t = text(&render(&app, 200, 60));
    // The diagram draws every layer in one row plus the skip edge's lane, with no overlap: the
    // skip leaves the input with a corner and re-enters before the concatenation.
    assert!(t.contains('╰') && t.contains('╯'), "{t}");
    assert!(t.contains("▲h064"), "selected tap labelled:\n{t}");
    insta::assert_snapshot!("deep_skip_200x60", t);
    // At 80 columns the bars and the diagram scroll and keep the selection in view.
    let t = text(&render(&app, 80, 24));
    assert!(t.contains("▲h064"), "{t}");
    assert!(t.contains('◀') && t.contains('▶'), "{t}");
}

#[test]
fn every_size_from_1x1_to_300x100() {
    let small = sample::app(&sample::header("bifurcation", &[]).unwrap(), 4);
    let mut deep = sample::app(&deep_skip_header(), 4);
    deep.selected = 100;
    let mut drawn = 0;
    for w in 1..=300u16 {
        for h in 1..=100u16 {
            // The full grid on the small model; the 129-tap one on every third size.
            let b = render(&small, w, h);
            if w < MIN_SIZE.0 || h < MIN_SIZE.1 {
                if w >= 40 && h >= 4 {
                    assert!(text(&b).contains("too small"), "{w}x{h}");
                }
            } else if (w + h) % 3 == 0 {
                render(&deep, w, h);
            }
            drawn += 1;
        }
    }
    assert_eq!(drawn, 30_000);
}

#[test]
fn diagram_cells_take_the_error_scale_colour() {
    let h = sample::header("bifurcation", &[]).unwrap();
    let app = sample::app(&h, 1);
    let buf = render(&app, 200, 60);
    let t = text(&buf);
    let concat = h.probes.iter().position(|p| p.name == "concat").unwrap();
    let level = app.level(concat);
    let expect = app.theme().palette(ColorDepth::TrueColor).at(level);
    // The frame's lookup table is within one step of the exact interpolation.
    match (expect, app.theme().scale(level)) {
        (Color::Rgb(r, g, b), Color::Rgb(r2, g2, b2)) => {
            assert!(r.abs_diff(r2) <= 2 && g.abs_diff(g2) <= 2 && b.abs_diff(b2) <= 2)
        }
        other => panic!("{other:?}"),
    }
    // Find the diagram's "concat" cell (left of the inspector, whose findings may name it too)
    // and read its background.
    let (row, x) = t
        .lines()
        .enumerate()
        .find_map(|(row, l)| {
            let col: Vec<char> = l.chars().collect();
            (0..col.len().min(150))
                .find(|&i| col[i..].iter().collect::<String>().starts_with(" concat "))
                .map(|i| (row, i + 1))
        })
        .expect("concat in the diagram");
    assert_eq!(buf[(x as u16, row as u16)].bg, expect);
    assert_ne!(expect, Color::Reset);
}

#[test]
fn monochrome_draws_no_colour() {
    let h = sample::header("bifurcation", &[]).unwrap();
    let mut app = sample::app(&h, 5);
    app.themes = vec![Theme::builtin("mono").unwrap()];
    app.theme = 0;
    let buf = render(&app, 120, 40);
    for cell in buf.content() {
        assert_eq!(cell.fg, Color::Reset, "{:?}", cell);
        assert_eq!(cell.bg, Color::Reset, "{:?}", cell);
    }
    // The heatmap still shows the error, in shades.
    let t = text(&buf);
    assert!(t.contains('░') || t.contains('▒') || t.contains('▓'), "{t}");
}

#[test]
fn failure_and_quit_question_show() {
    let h = sample::header("untrained-mlp", &[]).unwrap();
    let mut app = sample::app(&h, 2);
    app.act(Action::Quit);
    let t = text(&render(&app, 120, 40));
    assert!(t.contains("Stop it and quit?"), "{t}");
    app.fail("out of memory on dataset 3".into());
    let t = text(&render(&app, 120, 40));
    assert!(
        t.contains("the run failed") && t.contains("out of memory on dataset 3"),
        "{t}"
    );
    assert!(t.contains("FAILED"), "{t}");
    // What was recorded before the failure is still on screen.
    assert!(t.contains("probe error"), "{t}");
}

#[test]
fn records_replayed_from_a_log_give_the_same_picture() {
    // The UI is a pure function of the records: folding them one by one or from a run log read
    // back gives the same frame.
    let h = sample::header("bifurcation", &[]).unwrap();
    let recs: Vec<Record> = std::iter::once(Record::Run(h.clone()))
        .chain((0..4).map(|k| Record::Snapshot(sample::snapshot(&h, k, k % 2 == 0))))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut w = probescope::runlog::RunLogWriter::create(&path, false).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    drop(w);
    let log = probescope::runlog::read(&path).unwrap();
    let mut a = App::new(vec![Theme::default_theme()]);
    let mut b = App::new(vec![Theme::default_theme()]);
    for r in &recs {
        a.apply(r);
    }
    b.apply(&Record::Run(log.header.clone()));
    for r in &log.records {
        b.apply(r);
    }
    assert_eq!(text(&render(&a, 120, 40)), text(&render(&b, 120, 40)));
}
