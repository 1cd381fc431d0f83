//! A matrix of stored features written chunk of rows after chunk, as a forward pass makes them.
//!
//! A converged snapshot keeps gigabytes of features. Made as a zero tensor and filled by
//! `slice_set`, every byte was written three times on one core (candle's zero fill, which is
//! also where the fresh pages fault in, the conversion to bfloat16 into a temporary, and the
//! copy), while the other core waited: a profile of mnist-convnet's 50,000-image snapshot had
//! the main thread alone in the zero fill for about 5 s. Here each chunk is converted and
//! written once, straight into memory that nothing touched before, split over the cores (the
//! page faults too: on two cores they clear half as long).

use candle_core::{DType, Device, Tensor};
use half::bf16;
use rayon::prelude::*;

/// The rows written so far, in the type they are kept in.
enum Kept {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    /// Elsewhere than the CPU (or another type): a zero tensor the chunks are copied into.
    Tensor(Tensor),
}

/// A `rows x cols` matrix of `dtype` on `device`, written by [`RowSink::push`] in whole rows,
/// first to last, and then taken by [`RowSink::finish`].
pub(crate) struct RowSink {
    rows: usize,
    cols: usize,
    filled: usize,
    kept: Kept,
}

impl RowSink {
    /// An empty sink. On the CPU in f32 or bfloat16 its memory is reserved, not touched (each
    /// page is first written by a push); f32 memory is asked to be huge pages (see
    /// [`super::advise_huge_pages`]).
    pub(crate) fn new(
        (rows, cols): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let Some(n) = rows.checked_mul(cols) else {
            candle_core::bail!("{rows} x {cols} features do not fit in memory");
        };
        let kept = match (device.is_cpu(), dtype) {
            (true, DType::F32) => {
                let mut v = Vec::with_capacity(n);
                super::advise_huge_slice(v.spare_capacity_mut());
                Kept::F32(v)
            }
            (true, DType::BF16) => Kept::Bf16(Vec::with_capacity(n)),
            _ => Kept::Tensor(Tensor::zeros((rows, cols), dtype, device)?),
        };
        Ok(Self {
            rows,
            cols,
            filled: 0,
            kept,
        })
    }

    /// Writes `part` (`[len, cols]`, any type) as the next `len` rows, converted as candle's
    /// `to_dtype` converts it.
    pub(crate) fn push(&mut self, part: &Tensor) -> candle_core::Result<()> {
        let (len, cols) = part.dims2()?;
        if cols != self.cols || self.filled + len > self.rows {
            candle_core::bail!(
                "{len} rows of {cols} features after {} of {} rows of {}",
                self.filled,
                self.rows,
                self.cols
            );
        }
        match &mut self.kept {
            Kept::F32(v) => extend(v, part, DType::F32, |a| a)?,
            Kept::Bf16(v) => extend(v, part, DType::BF16, bf16::from_f32)?,
            Kept::Tensor(t) => {
                t.slice_set(&part.to_dtype(t.dtype())?.contiguous()?, 0, self.filled)?
            }
        }
        self.filled += len;
        Ok(())
    }

    /// The matrix, once every row has been written.
    pub(crate) fn finish(self) -> candle_core::Result<Tensor> {
        if self.filled != self.rows && self.cols > 0 {
            candle_core::bail!("{} of {} rows of features written", self.filled, self.rows);
        }
        let shape = (self.rows, self.cols);
        match self.kept {
            Kept::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu),
            Kept::Bf16(v) => Tensor::from_vec(v, shape, &Device::Cpu),
            Kept::Tensor(t) => Ok(t),
        }
    }
}

/// Appends `part`'s values to `v`, each converted by `convert` (the conversion to `dtype` that
/// candle's `to_dtype` makes), split over the cores.
fn extend<T: Send>(
    v: &mut Vec<T>,
    part: &Tensor,
    dtype: DType,
    convert: impl Fn(f32) -> T + Sync + Send,
) -> candle_core::Result<()> {
    // f32 values that convert as `part` would: f32 itself, or a value already rounded to
    // `dtype` (exact in f32, and converted back unchanged).
    let part = match part.dtype() {
        DType::F32 => part.contiguous()?,
        _ => part.to_dtype(dtype)?.to_dtype(DType::F32)?,
    };
    super::with_f32(&part, |x| v.par_extend(x.par_iter().map(|&a| convert(a))))
        .ok_or_else(|| candle_core::Error::Msg("features not in CPU memory".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks written through a sink give the tensor that candle's conversion and `cat` give,
    /// bit for bit, for either kept type and for inputs of another type.
    #[test]
    fn a_sink_holds_what_candle_converts() {
        let dev = Device::Cpu;
        // Values that round differently to bfloat16: halfway cases, a NaN, infinities,
        // signed zeros, subnormals.
        let special = [
            1.0f32 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -1.0 - 2f32.powi(-8),
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            -3e-39,
            f32::MAX,
        ];
        let mut vals: Vec<f32> = (0..7 * 5)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3)
            .collect();
        vals[..special.len()].copy_from_slice(&special);
        let all = Tensor::from_vec(vals, (7, 5), &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            for source in [DType::F32, DType::F64, DType::BF16] {
                let src = all.to_dtype(source).unwrap();
                let mut sink = RowSink::new((7, 5), dtype, &dev).unwrap();
                for (start, len) in [(0, 3), (3, 1), (4, 0), (4, 3)] {
                    sink.push(&src.narrow(0, start, len).unwrap()).unwrap();
                }
                let got = sink.finish().unwrap();
                let want = src.to_dtype(dtype).unwrap();
                assert_eq!((got.dims(), got.dtype()), (want.dims(), dtype));
                assert_eq!(
                    crate::host::f32_bits(&got),
                    crate::host::f32_bits(&want),
                    "{dtype:?} from {source:?}"
                );
            }
        }
    }

    #[test]
    fn a_sink_refuses_rows_of_another_width_or_too_many_or_too_few() {
        let dev = Device::Cpu;
        let mut sink = RowSink::new((3, 2), DType::BF16, &dev).unwrap();
        assert!(sink
            .push(&Tensor::zeros((1, 3), DType::F32, &dev).unwrap())
            .is_err());
        sink.push(&Tensor::ones((2, 2), DType::F32, &dev).unwrap())
            .unwrap();
        assert!(sink
            .push(&Tensor::ones((2, 2), DType::F32, &dev).unwrap())
            .is_err());
        assert!(sink.finish().is_err(), "one row was never written");
        // A probe that keeps no features (zero columns) has nothing to write.
        let empty = RowSink::new((4, 0), DType::F32, &dev).unwrap();
        assert_eq!(empty.finish().unwrap().dims(), &[4, 0]);
    }
}
