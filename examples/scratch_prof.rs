use probescope::presets::untrained_mlp;
use probescope::probe::{FitConfig, ProbeSpec, Split};
use probescope::{data, graph::Model, probe};
use candle_core::{Device, DType};
fn main() {
    let dev = Device::Cpu;
    let g = untrained_mlp::graph(32, 128, 0.5);
    let specs: Vec<ProbeSpec> = g.taps().unwrap().iter().map(|t| ProbeSpec::full(&t.name, t.features)).collect();
    let t = std::time::Instant::now();
    let ds = data::sign_task(1, "d", 20000, 128, &dev).unwrap();
    println!("data {:.3}", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let vm = g.init_varmap(1, &dev).unwrap();
    println!("init {:.3}", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let m = Model::new(&g, candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    let outs = m.forward(&ds.x).unwrap();
    println!("forward {:.3}", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let mut tr = vec![]; let mut te = vec![];
    for s in &specs { let i = g.index_of(&s.tap).unwrap(); let x = s.select(&outs[i]).unwrap(); tr.push(x.narrow(0,0,10000).unwrap()); te.push(x.narrow(0,10000,10000).unwrap()); probe::activation_stats(&tr[tr.len()-1]).unwrap(); }
    println!("select+stats {:.3}", t.elapsed().as_secs_f64());
    let trs = Split { x: tr, y: ds.y.narrow(0,0,10000).unwrap() };
    let tes = Split { x: te, y: ds.y.narrow(0,10000,10000).unwrap() };
    let t = std::time::Instant::now();
    let f = probe::fit_converged(&trs, None, Some(&tes), 2, None, &FitConfig::default()).unwrap();
    println!("fit {:.3}", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let w: Vec<_> = f.iter().map(|x| x.probe.clone()).collect();
    let _ = probe::fit_converged(&trs, None, Some(&tes), 2, Some(&w), &FitConfig::default()).unwrap();
    println!("fit warm {:.3}", t.elapsed().as_secs_f64());
}
