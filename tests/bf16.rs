//! Activations stored in bfloat16 (`probe_dtype=bf16`) against f32 on the CPU: the converged
//! probes' test errors within 0.2 points on every tap.
//!
//! Without a validation split, so that each fit runs to the unique optimum of its strictly
//! convex objective (with early stopping a rounding difference can pick another iteration);
//! the optimum then moves only as far as bfloat16's rounding of the features (8 bits of
//! mantissa, a relative 0.4% a feature) moves it.

use candle_core::{DType, Device};
use probescope::data;
use probescope::probe::{self, FitConfig, Split};

#[test]
fn bf16_activations_keep_the_errors_within_a_fifth_of_a_point() {
    // 200 features: the whitened solver; 1,100: the diagonal one (over `whiten_max`).
    for dim in [200, 1100] {
        let all =
            data::argmax_task(5, "bf16", 9000, dim, 10, &Device::Cpu, &Default::default()).unwrap();
        // Two taps: the features, and a shifted and scaled copy whose mean is far from zero
        // (where bfloat16's absolute rounding is largest against the features' spread).
        let cut = |a: usize, n: usize, dtype: DType| {
            let x = all.x.narrow(0, a, n).unwrap();
            let shifted = x.affine(3.0, 20.0).unwrap();
            Split {
                x: vec![x.to_dtype(dtype).unwrap(), shifted.to_dtype(dtype).unwrap()],
                y: all.y.narrow(0, a, n).unwrap(),
            }
        };
        let fit = |dtype: DType| {
            probe::fit_converged(
                &cut(0, 4000, dtype),
                None,
                Some(&cut(4000, 5000, dtype)),
                10,
                None,
                &FitConfig::default(),
            )
            .unwrap()
        };
        let (full, half) = (fit(DType::F32), fit(DType::BF16));
        for (k, (a, b)) in full.iter().zip(&half).enumerate() {
            let (a, b) = (a.reading.test_error.unwrap(), b.reading.test_error.unwrap());
            assert!(
                (a - b).abs() <= 0.002,
                "{dim} features, tap {k}: f32 {a} vs bf16 {b}"
            );
            // The task is learnt (chance is 0.9), so the comparison means something.
            assert!(a < 0.6, "{dim} features, tap {k}: f32 test error {a}");
        }
    }
}

/// bfloat16 products (`bf16_products`: on machines with AVX-512's bfloat16 dot product, a
/// wide bfloat16 tap's fit starts with them and finishes with exact passes) against exact
/// passes throughout: the test errors within 0.3 points, with early stopping on a validation
/// split and without (where the exact finish runs to the same optimum).
#[test]
fn bf16_products_keep_the_errors_within_three_tenths_of_a_point() {
    let dim = 1100;
    let all = data::argmax_task(
        6,
        "bf16-products",
        14000,
        dim,
        10,
        &Device::Cpu,
        &Default::default(),
    )
    .unwrap();
    let cut = |a: usize, n: usize| Split {
        x: vec![all
            .x
            .narrow(0, a, n)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()],
        y: all.y.narrow(0, a, n).unwrap(),
    };
    let (train, val, test) = (cut(0, 6000), cut(6000, 3000), cut(9000, 5000));
    for with_val in [false, true] {
        let fit = |products: bool| {
            let cfg = FitConfig {
                bf16_products: products,
                ..FitConfig::default()
            };
            let v = with_val.then_some(&val);
            probe::fit_converged(&train, v, Some(&test), 10, None, &cfg).unwrap()
        };
        let (exact, coarse) = (fit(false), fit(true));
        let (a, b) = (
            exact[0].reading.test_error.unwrap(),
            coarse[0].reading.test_error.unwrap(),
        );
        assert!(
            (a - b).abs() <= 0.003,
            "validation {with_val}: exact {a} vs bf16 products {b}"
        );
        assert!(a < 0.6, "validation {with_val}: exact test error {a}");
        assert!(coarse[0].reading.converged, "validation {with_val}");
    }
}
