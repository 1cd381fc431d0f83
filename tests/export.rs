//! `probescope export --csv` against a table written by hand, and the run-log reader under
//! random input (proptest; `PROPTEST_CASES=1000000` for the long run).

use probescope::probe::{ActivationStats, ProbeReading};
use probescope::runlog::{
    self, End, EndStatus, ModelMetrics, Record, RunLogWriter, Snapshot, SnapshotKind, TapReading,
};
use proptest::prelude::*;

fn reading(train: f64, test: Option<f64>) -> ProbeReading {
    ProbeReading {
        train_error: train,
        train_loss: 2.0 * train,
        test_error: test,
        test_loss: test.map(|t| 2.0 * t),
        iterations: 7,
        converged: true,
        ..Default::default()
    }
}

/// A bifurcation header with two hand-made snapshots of its first two probes.
fn small_log(path: &std::path::Path) {
    let mut h = probescope::tui::sample::header("bifurcation", &[]).unwrap();
    h.probes.truncate(2);
    let snaps = [
        Snapshot {
            step: 0,
            label: "init".into(),
            kind: SnapshotKind::Converged,
            dataset: None,
            epoch: None,
            probes: vec![
                TapReading {
                    probe: "input".into(),
                    tap: "input".into(),
                    reading: ProbeReading {
                        control_error: Some(0.75),
                        ..reading(0.25, Some(0.5))
                    },
                    activation: Some(ActivationStats {
                        mean_norm: 4.0,
                        dead_fraction: 0.0,
                    }),
                },
                TapReading {
                    probe: "upper_in".into(),
                    tap: "upper_in".into(),
                    reading: reading(0.125, None),
                    activation: None,
                },
            ],
            model: Some(ModelMetrics {
                loss: 0.75,
                train_error: Some(0.5),
                test_error: None,
            }),
            elapsed_s: 1.5,
            alerts: Vec::new(),
        },
        Snapshot {
            step: 50,
            label: "step 50".into(),
            kind: SnapshotKind::Online,
            dataset: None,
            epoch: None,
            probes: vec![TapReading {
                probe: "input".into(),
                tap: "input".into(),
                reading: reading(0.0625, None),
                activation: None,
            }],
            model: None,
            elapsed_s: 3.0,
            alerts: Vec::new(),
        },
    ];
    let mut w = RunLogWriter::create(path, false).unwrap();
    w.write(&Record::Run(h)).unwrap();
    for s in snaps {
        w.write(&Record::Snapshot(s)).unwrap();
    }
    w.write(&Record::End(End {
        status: EndStatus::Finished,
        message: None,
        elapsed_s: 3.5,
        step: None,
        peak_rss: None,
    }))
    .unwrap();
}

const GOLDEN: &str = "\
snapshot,step,label,kind,dataset,elapsed_s,probe,tap,features,train_error,train_loss,val_error,val_loss,test_error,test_loss,iterations,converged,mean_norm,dead_fraction,model_loss,model_train_error,model_test_error,control_error,selectivity
0,0,init,converged,,1.5,input,input,32,0.25,0.5,,,0.5,1.0,7,true,4.0,0.0,0.75,0.5,,0.75,0.5
0,0,init,converged,,1.5,upper_in,upper_in,16,0.125,0.25,,,,,7,true,,,0.75,0.5,,,
1,50,step 50,online,,3.0,input,input,32,0.0625,0.125,,,,,7,true,,,,,,,
";

#[test]
fn a_log_cut_inside_its_last_line_reads_back_with_a_warning() {
    let good = damaged_base();
    // Cut in the middle of the end line.
    let cut = good.len() - 10;
    let log = runlog::parse("cut.jsonl", &good[..cut]).unwrap();
    assert_eq!(log.snapshots().count(), 2);
    assert!(log.end().is_none());
    assert!(log.warnings[0].contains("cut short"), "{:?}", log.warnings);
}

#[test]
fn csv_export_matches_the_hand_written_table() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("small.jsonl");
    small_log(&log);
    let out = dir.path().join("small.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args([
            "export",
            log.to_str().unwrap(),
            "--csv",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), GOLDEN);
    // Bad input: not a run log, named.
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, b"\x00\x01binary").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args([
            "export",
            junk.to_str().unwrap(),
            "--csv",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("junk.jsonl") && err.contains("not a probescope run log"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// Any bytes at all: an error or a log, never a panic.
    #[test]
    fn the_reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = runlog::parse("fuzz", &bytes);
    }

    /// A real log cut anywhere, or with one byte changed anywhere: an error or a log, never a
    /// panic.
    #[test]
    fn the_reader_never_panics_on_damaged_logs(cut in 0.0f64..=1.0, at in 0.0f64..1.0, byte in any::<u8>()) {
        let good = damaged_base();
        let cut = (cut * good.len() as f64) as usize;
        let _ = runlog::parse("fuzz", &good[..cut]);
        let mut flipped = good.clone();
        let at = ((at * good.len() as f64) as usize).min(good.len() - 1);
        flipped[at] = byte;
        let _ = runlog::parse("fuzz", &flipped);
    }
}

fn damaged_base() -> Vec<u8> {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("base.jsonl");
        small_log(&p);
        std::fs::read(&p).unwrap()
    })
    .clone()
}

fn sample_log(path: &std::path::Path, snapshots: usize) -> probescope::runlog::RunHeader {
    let h = probescope::tui::sample::header("bifurcation", &[]).unwrap();
    let mut w = RunLogWriter::create(path, false).unwrap();
    w.write(&Record::Run(h.clone())).unwrap();
    for k in 0..snapshots {
        w.write(&Record::Snapshot(probescope::tui::sample::snapshot(
            &h,
            k,
            k % 2 == 0,
        )))
        .unwrap();
    }
    h
}

fn export_svg(log: &std::path::Path, out: &std::path::Path, figure: &str) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args([
            "export",
            log.to_str().unwrap(),
            "--svg",
            out.to_str().unwrap(),
        ])
        .args(["--figure", figure])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn svg_figures_parse_back_with_their_series_and_cells() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    let h = sample_log(&log, 5);
    let n = h.probes.len();

    let curve = dir.path().join("curve.svg");
    export_svg(&log, &curve, "curve");
    let text = std::fs::read_to_string(&curve).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("valid SVG");
    let theme = probescope::tui::theme::Theme::default_theme();
    let hex = |c: ratatui::style::Color| match c {
        ratatui::style::Color::Rgb(r, g, b) => format!("#{r:02X}{g:02X}{b:02X}"),
        _ => unreachable!(),
    };
    // One polyline per series (train, test), each through every probe, plus their legend marks.
    let lines = |colour: &str| {
        doc.descendants()
            .filter(|e| e.has_tag_name("polyline"))
            .filter(|e| {
                e.attribute("stroke")
                    .is_some_and(|s| s.eq_ignore_ascii_case(colour))
            })
            .map(|e| {
                e.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .collect::<Vec<_>>()
    };
    for c in [theme.train, theme.test] {
        let l = lines(&hex(c));
        assert!(
            l.contains(&n),
            "series {} has points {l:?}, want {n}",
            hex(c)
        );
    }
    let texts: Vec<&str> = doc.descendants().filter_map(|e| e.text()).collect();
    for want in ["train", "test", "chance 0.50"] {
        assert!(
            texts.iter().any(|t| t.trim() == want),
            "legend {want} missing: {texts:?}"
        );
    }

    let heat = dir.path().join("heat.svg");
    export_svg(&log, &heat, "heatmap");
    let text = std::fs::read_to_string(&heat).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("valid SVG");
    // One filled cell per snapshot and probe (the background and frame are rects too).
    let rects = doc.descendants().filter(|e| e.has_tag_name("rect")).count();
    assert!(
        rects >= 5 * n && rects <= 5 * n + 4,
        "{rects} rects for {} cells",
        5 * n
    );
}

fn plot(run: &probescope::runlog::RunLog, figure: &str) -> probescope::export::Plot {
    use clap::ValueEnum;
    let f = probescope::export::Figure::from_str(figure, false).unwrap();
    probescope::export::plot(run, f, &[]).unwrap()
}

/// The pixels of a PNG file: width, height and RGB triples.
fn read_png(path: &std::path::Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

#[test]
fn png_figures_decode_with_their_series_text_and_cells() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    let h = sample_log(&log, 5);
    let n = h.probes.len();
    let theme = probescope::tui::theme::Theme::default_theme();
    let rgb = |c: ratatui::style::Color| match c {
        ratatui::style::Color::Rgb(r, g, b) => [r, g, b],
        _ => unreachable!(),
    };
    let run = probescope::runlog::read(&log).unwrap();

    let curve = dir.path().join("curve.png");
    let series = probescope::export::png_file(&plot(&run, "curve"), &curve).unwrap();
    assert_eq!(series, 2);
    let (w, ht, px) = read_png(&curve);
    assert_eq!((w, ht), (1000, 520));
    let count = |c: [u8; 3]| px.iter().filter(|p| **p == c).count();
    // Each series is a 2-pixel line across the plot: hundreds of pixels of its colour.
    for c in [theme.train, theme.test] {
        assert!(count(rgb(c)) > 300, "{:?}: {} pixels", c, count(rgb(c)));
    }
    assert!(count([200, 40, 60]) > 100, "the chance line");
    // The caption is drawn with the embedded font: dark pixels in the top 30 rows.
    let dark = px[..30 * 1000]
        .iter()
        .filter(|p| p.iter().all(|&v| v < 100))
        .count();
    assert!(dark > 200, "{dark} dark pixels in the caption");

    let heat = dir.path().join("heat.png");
    let cells = probescope::export::png_file(&plot(&run, "heatmap"), &heat).unwrap();
    assert_eq!(cells, 5 * n);
    let (_, _, px) = read_png(&heat);
    // Every cell's colour from the theme's scale shows up.
    let snaps: Vec<_> = run.snapshots().collect();
    let mut missing = 0;
    for s in &snaps {
        for p in &s.probes {
            let e = p.reading.test_error.unwrap_or(p.reading.train_error);
            let c = rgb(theme.scale(e / 0.5));
            if !px.contains(&c) {
                missing += 1;
            }
        }
    }
    assert_eq!(missing, 0);
    // No temporary file is left next to them.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
}

/// The filled rectangles of an SVG: (fill, x, y, width, height).
fn svg_rects(path: &std::path::Path) -> Vec<(String, f64, f64, f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("valid SVG");
    let num = |e: &roxmltree::Node, a: &str| e.attribute(a).unwrap().parse::<f64>().unwrap();
    doc.descendants()
        .filter(|e| e.has_tag_name("rect"))
        .filter_map(|e| {
            let fill = e.attribute("fill")?.to_ascii_uppercase();
            Some((
                fill,
                num(&e, "x"),
                num(&e, "y"),
                num(&e, "width"),
                num(&e, "height"),
            ))
        })
        .collect()
}

/// The bars among `rects` of colour `fill`, left to right: the ones standing on the x axis (the
/// bottom most of them share), which leaves out the legend's mark.
fn bars_of<'a>(
    rects: &'a [(String, f64, f64, f64, f64)],
    fill: &str,
) -> Vec<&'a (String, f64, f64, f64, f64)> {
    let mine: Vec<_> = rects.iter().filter(|r| r.0 == fill).collect();
    let base = mine.iter().map(|r| r.2 + r.4).fold(0.0, f64::max);
    let mut bars: Vec<_> = mine
        .into_iter()
        .filter(|r| (r.2 + r.4 - base).abs() <= 1.0)
        .collect();
    bars.sort_by(|a, b| a.1.total_cmp(&b.1));
    bars
}

/// Bars of heights `h` drawn for values `v` on one linear axis: h = scale * v for one scale,
/// within the pixel rounding.
fn assert_proportional(h: &[f64], v: &[f64], what: &str) {
    assert_eq!(
        h.len(),
        v.len(),
        "{what}: {} bars for {} values",
        h.len(),
        v.len()
    );
    let (hm, vm) = h.iter().zip(v).fold(
        (0.0, 0.0),
        |(a, b), (x, y)| if *y > b { (*x, *y) } else { (a, b) },
    );
    let scale = hm / vm;
    for (i, (x, y)) in h.iter().zip(v).enumerate() {
        assert!(
            (x - scale * y).abs() <= 1.5,
            "{what}: bar {i} is {x} px for {y}, want {:.1}",
            scale * y
        );
    }
}

#[test]
fn bars_and_panels_draw_each_chosen_snapshot_at_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    // Five snapshots, the even ones converged; the online ones have no test error.
    let h = probescope::tui::sample::header("bifurcation", &[]).unwrap();
    let mut w = RunLogWriter::create(&log, false).unwrap();
    w.write(&Record::Run(h.clone())).unwrap();
    for k in 0..5 {
        let mut s = probescope::tui::sample::snapshot(&h, k, k % 2 == 0);
        if k % 2 == 1 {
            for p in &mut s.probes {
                p.reading.test_error = None;
            }
        }
        w.write(&Record::Snapshot(s)).unwrap();
    }
    drop(w);
    let n = h.probes.len();
    let run = probescope::runlog::read(&log).unwrap();
    let snaps: Vec<_> = run.snapshots().collect();
    let test = |k: usize| -> Vec<f64> {
        snaps[k]
            .probes
            .iter()
            .map(|p| p.reading.test_error.unwrap())
            .collect()
    };
    let hex = |(r, g, b): (u8, u8, u8)| format!("#{r:02X}{g:02X}{b:02X}");

    // Bars: by default the first and the last converged snapshot (0 and 4), one colour each, in
    // tap order, as tall as their test errors; plus one legend mark per series.
    let bars = dir.path().join("bars.svg");
    export_svg(&log, &bars, "bars");
    let rects = svg_rects(&bars);
    for (series, k) in [(0, 0), (1, 4)] {
        let fill = hex(probescope::export::PALETTE[series]);
        let all = rects.iter().filter(|r| r.0 == fill).count();
        assert_eq!(all, n + 1, "series {series}: bars and a legend mark");
        let bars = bars_of(&rects, &fill);
        let heights: Vec<f64> = bars.iter().map(|r| r.4).collect();
        assert_proportional(&heights, &test(k), &format!("snapshot {k}"));
    }

    // --steps picks them, in the order given.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["export", log.to_str().unwrap(), "--figure", "bars"])
        .args(["--steps", "300,100", "--svg", bars.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rects = svg_rects(&bars);
    let first: Vec<f64> = bars_of(&rects, &hex(probescope::export::PALETTE[0]))
        .iter()
        .map(|r| r.4)
        .collect();
    // Step 300 is snapshot 3, an online one: its train error (it has no test split).
    let train3: Vec<f64> = snaps[3]
        .probes
        .iter()
        .map(|p| p.reading.train_error)
        .collect();
    assert_proportional(&first, &train3, "step 300");

    // Panels: one per converged snapshot (0, 2, 4), each bar as tall as its error on the shared
    // axis, so the panels' bars of the same tap shrink as the errors do.
    let panels = dir.path().join("panels.svg");
    export_svg(&log, &panels, "panels");
    let rects = svg_rects(&panels);
    let w = 1000.0;
    for (p, k) in [(0usize, 0usize), (1, 2), (2, 4)] {
        let mut mine: Vec<_> = rects
            .iter()
            .filter(|r| r.0 != "#FFFFFF" && r.3 < 50.0)
            .filter(|r| ((r.1 / (w / 3.0)) as usize).min(2) == p)
            .collect();
        mine.sort_by(|a, b| a.1.total_cmp(&b.1));
        let heights: Vec<f64> = mine.iter().map(|r| r.4).collect();
        assert_proportional(&heights, &test(k), &format!("panel {p}"));
    }
}

#[test]
fn export_names_a_step_the_log_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    sample_log(&log, 3);
    let out = dir.path().join("x.svg");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["export", log.to_str().unwrap(), "--figure", "panels"])
        .args(["--steps", "0,150", "--svg", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("run.jsonl") && e.contains("step 150") && e.contains("0, 100, 200"),
        "{e}"
    );
    assert!(!out.exists());
}
