use candle_core::{Device, Tensor, D};
fn t<F: FnMut() -> Tensor>(name: &str, reps: usize, mut f: F) -> f64 { let _ = f(); let s = std::time::Instant::now(); for _ in 0..reps { let _ = f(); } let ms = s.elapsed().as_secs_f64()*1000.0/reps as f64; println!("{name}: {ms:.3} ms"); ms }
fn main() {
    let dev = Device::Cpu;
    for b in [1usize, 4, 17] {
    let n = 10000; let p = 129; let k = 2;
    let z = Tensor::randn(0f32, 1., (b, n, p), &dev).unwrap();
    let th = Tensor::randn(0f32, 1., (b, p, k), &dev).unwrap();
    let pp = Tensor::randn(0f32, 1., (b, n, k), &dev).unwrap();
    println!("b={b}");
    let reps = 170 / b;
    t("  z@theta", reps, || z.matmul(&th).unwrap());
    t("  p^T@z", reps, || pp.transpose(1,2).unwrap().matmul(&z).unwrap());
    t("  sum_all", reps, || z.sum_all().unwrap());
    t("  gram z^T z", reps.min(20), || z.transpose(1,2).unwrap().matmul(&z).unwrap());
    t("  lse", reps, || pp.log_sum_exp(D::Minus1).unwrap());
    }
    let x = Tensor::randn(0f32, 1., (20000, 128), &dev).unwrap();
    t("leaky", 20, || candle_nn::ops::leaky_relu(&x, 0.5).unwrap());
    t("max(x, .5x)", 20, || x.maximum(&(&x * 0.5).unwrap()).unwrap());
}
