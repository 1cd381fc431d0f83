//! MNIST and Fashion-MNIST: the IDX file format (gzip or raw), where the files live, and turning
//! them into [`Dataset`]s.
//!
//! An IDX file is a big-endian header, `0x00 0x00 TYPE NDIMS` then one u32 per dimension, then the
//! data. Both datasets use unsigned bytes (`TYPE = 0x08`): images `[n, 28, 28]` and labels `[n]`.
//! Everything in the header is checked against the data that follows, so a truncated, corrupt or
//! mismatched file is an error that names the file and says what is wrong.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::data::Dataset;

/// The four files of each dataset, without `.gz`, in the order train images, train labels, test
/// images, test labels.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Samples of the training files kept for validation (the last ones), as in the paper.
pub const VALIDATION: usize = 10_000;

/// A dataset in the MNIST layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Handwritten digits (LeCun, Cortes, Burges).
    Mnist,
    /// Zalando's clothing pictures, a drop-in replacement.
    FashionMnist,
}

impl Which {
    /// Every known dataset.
    pub const ALL: [Which; 2] = [Which::Mnist, Which::FashionMnist];

    /// Name on the command line and of its folder in the data directory.
    pub fn name(self) -> &'static str {
        match self {
            Which::Mnist => "mnist",
            Which::FashionMnist => "fashion-mnist",
        }
    }

    /// The dataset called `name`.
    pub fn parse(name: &str) -> Option<Which> {
        Which::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The published MD5 of each `.gz` file, in the order of [`FILES`].
    pub fn md5s(self) -> [&'static str; 4] {
        match self {
            Which::Mnist => [
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ],
            Which::FashionMnist => [
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ],
        }
    }

    /// Public mirrors holding the four `.gz` files, tried in order.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            Which::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ],
            Which::FashionMnist => &[
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ],
        }
    }

    /// Names of the classes, for tables.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            Which::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Which::FashionMnist => [
                "T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                "Bag", "Boot",
            ],
        }
    }
}

/// The per-user data directory: `$XDG_DATA_HOME/probescope`, else `~/.local/share/probescope`.
pub fn default_data_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty());
    match xdg {
        Some(d) => PathBuf::from(d).join("probescope"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/share/probescope"),
    }
}

/// Something wrong with a data file. The message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct IdxError {
    /// The file.
    pub file: String,
    /// What is wrong with it, and what to do.
    pub problem: String,
}

fn bad(file: &str, problem: impl Into<String>) -> IdxError {
    IdxError {
        file: file.to_string(),
        problem: problem.into(),
    }
}

/// An IDX array of unsigned bytes: its dimensions and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxBytes {
    /// The dimensions from the header.
    pub dims: Vec<usize>,
    /// The data, row-major.
    pub data: Vec<u8>,
}

/// Parses an IDX file of unsigned bytes with `ndims` dimensions; `bytes` may be gzip-compressed.
pub fn parse_idx(file: &str, bytes: &[u8], ndims: usize) -> Result<IdxBytes, IdxError> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| {
                bad(
                    file,
                    format!("the gzip data is damaged ({e}); fetch the file again"),
                )
            })?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 {
        return Err(bad(
            file,
            format!(
                "only {} bytes, too short for an IDX header; the file is truncated",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            file,
            format!(
                "not an IDX file: it starts with {:02x} {:02x}, where IDX files start with 00 00",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            file,
            format!(
                "IDX element type 0x{:02x}; MNIST files hold unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    if bytes[3] as usize != ndims {
        return Err(bad(
            file,
            format!(
                "{} dimensions, expected {ndims} ({}); is this the right file?",
                bytes[3],
                if ndims == 3 {
                    "an images file"
                } else {
                    "a labels file"
                }
            ),
        ));
    }
    let head = 4 + 4 * ndims;
    if bytes.len() < head {
        return Err(bad(file, "the header is cut short; the file is truncated"));
    }
    let dims: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(file, format!("dimensions {dims:?} are impossibly large")))?;
    let have = bytes.len() - head;
    if have < want {
        return Err(bad(
            file,
            format!(
                "the header promises {want} bytes of data for {dims:?} but only {have} follow; \
                 the file is truncated, fetch it again"
            ),
        ));
    }
    if have > want {
        return Err(bad(
            file,
            format!(
                "{} bytes follow the {want} bytes of data that the header describes ({dims:?}); \
                 the file is damaged",
                have - want
            ),
        ));
    }
    Ok(IdxBytes {
        dims,
        data: bytes[head..].to_vec(),
    })
}

/// Images and labels of one split, as read from the files.
#[derive(Debug, Clone)]
pub struct Split {
    /// Pixels, `n * rows * cols`, 0 to 255.
    pub pixels: Vec<u8>,
    /// Labels, 0 to 9.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Samples `range` as a dataset: `x` is `[n, 1, rows, cols]` (`flat` false) or
    /// `[n, rows * cols]`, pixels scaled to `(p - 127.5) / 255`, in [-0.5, 0.5].
    pub fn dataset(
        &self,
        range: std::ops::Range<usize>,
        flat: bool,
        device: &Device,
    ) -> candle_core::Result<Dataset> {
        let px = self.rows * self.cols;
        let n = range.len();
        let x: Vec<f32> = self.pixels[range.start * px..range.end * px]
            .iter()
            .map(|&p| (p as f32 - 127.5) / 255.0)
            .collect();
        let y: Vec<u32> = self.labels[range].iter().map(|&l| l as u32).collect();
        let x = if flat {
            Tensor::from_vec(x, (n, px), device)?
        } else {
            Tensor::from_vec(x, (n, 1, self.rows, self.cols), device)?
        };
        Ok(Dataset {
            x,
            y: Tensor::from_vec(y, n, device)?,
            classes: 10,
        })
    }
}

/// A whole dataset: the 60,000 training and 10,000 test samples.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Which dataset.
    pub which: Which,
    /// The training files.
    pub train: Split,
    /// The test files.
    pub test: Split,
}

/// Where file `name` (without `.gz`) of `which` is in `data_dir`: the `.gz` if present, else the
/// raw file, else `None`.
pub fn locate(data_dir: &Path, which: Which, name: &str) -> Option<PathBuf> {
    find_in(&data_dir.join(which.name()), name)
}

/// `dir/NAME.gz` or `dir/NAME`, whichever is there.
fn find_in(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// What a user without the files is told.
pub fn missing_message(data_dir: &Path, which: Which, missing: &[&str]) -> String {
    format!(
        "{} is missing from {}; run `probescope data fetch {}{}` to download it, or pass \
         --data-dir DIR where DIR/{}/ holds the four IDX files ({}, gzip or not)",
        missing.join(", "),
        data_dir.join(which.name()).display(),
        which.name(),
        if data_dir == default_data_dir() {
            String::new()
        } else {
            format!(" --dir {}", data_dir.display())
        },
        which.name(),
        FILES.join(", ")
    )
}

/// Checks that the four files of `which` are in `data_dir` (cheaply: their presence only).
pub fn check_present(data_dir: &Path, which: Which) -> Result<(), String> {
    let missing: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| locate(data_dir, which, f).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_message(data_dir, which, &missing))
    }
}

/// Reads and parses the IDX file at `p`, of `nd` dimensions.
fn read_idx(p: &Path, nd: usize) -> anyhow::Result<IdxBytes> {
    let bytes =
        std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: cannot read it: {e}", p.display()))?;
    Ok(parse_idx(&p.display().to_string(), &bytes, nd)?)
}

fn read_split(images: &Path, labels: &Path) -> anyhow::Result<Split> {
    let im = read_idx(images, 3)?;
    let lb = read_idx(labels, 1)?;
    let (n, rows, cols) = (im.dims[0], im.dims[1], im.dims[2]);
    if lb.dims[0] != n {
        return Err(bad(
            &labels.display().to_string(),
            format!(
                "{} labels for the {n} images of {}; the two files do not belong together",
                lb.dims[0],
                images.display()
            ),
        )
        .into());
    }
    if let Some((i, l)) = lb.data.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(bad(
            &labels.display().to_string(),
            format!("label {l} at sample {i}; the classes are 0 to 9"),
        )
        .into());
    }
    Ok(Split {
        pixels: im.data,
        labels: lb.data,
        rows,
        cols,
    })
}

/// Reads the four files of `which` from `data_dir/<name>/`.
pub fn load(data_dir: &Path, which: Which) -> anyhow::Result<Loaded> {
    check_present(data_dir, which).map_err(anyhow::Error::msg)?;
    load_dir(&data_dir.join(which.name()), which)
}

/// File `FILES[i]` of the IDX directory `dir`, or an error that says what such a folder holds.
fn in_dir(dir: &Path, i: usize) -> anyhow::Result<PathBuf> {
    let name = FILES[i];
    find_in(dir, name).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no {name} (or {name}.gz); an IDX directory holds the four files {}",
            dir.display(),
            FILES.join(", ")
        )
    })
}

/// The number of training samples in the IDX directory `dir`, from its label file alone (a
/// few kilobytes, where the images are tens of megabytes).
pub fn training_samples_in(dir: &Path) -> anyhow::Result<usize> {
    Ok(read_idx(&in_dir(dir, 1)?, 1)?.dims[0])
}

/// Reads the four files, under their usual names ([`FILES`], gzip or not), from `dir` itself: an
/// IDX directory in the MNIST layout (`which` only names it).
pub fn load_dir(dir: &Path, which: Which) -> anyhow::Result<Loaded> {
    let path = |i: usize| in_dir(dir, i);
    let train = read_split(&path(0)?, &path(1)?)?;
    let test = read_split(&path(2)?, &path(3)?)?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        anyhow::bail!(
            "{}: images are {}x{} but the training images are {}x{}; the files are from different datasets",
            path(2)?.display(),
            test.rows,
            test.cols,
            train.rows,
            train.cols
        );
    }
    if train.len() <= VALIDATION {
        anyhow::bail!(
            "{}: {} training samples, too few to keep {VALIDATION} for validation",
            path(0)?.display(),
            train.len()
        );
    }
    Ok(Loaded { which, train, test })
}

/// The splits used for training: train (all but the last [`VALIDATION`] training samples),
/// validation (those) and test.
pub struct Splits {
    /// Model-training samples.
    pub train: Dataset,
    /// Validation samples (probe early stopping).
    pub val: Dataset,
    /// Test samples.
    pub test: Dataset,
}

impl Loaded {
    /// The three splits on `device`, `[n, 1, h, w]` images or (`flat`) `[n, h * w]` vectors.
    pub fn splits(&self, flat: bool, device: &Device) -> candle_core::Result<Splits> {
        let n = self.train.len();
        Ok(Splits {
            train: self.train.dataset(0..n - VALIDATION, flat, device)?,
            val: self.train.dataset(n - VALIDATION..n, flat, device)?,
            test: self.test.dataset(0..self.test.len(), flat, device)?,
        })
    }
}

/// Encodes an IDX file of unsigned bytes (for tests and for writing small datasets).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_made_file_reads_back() {
        let data: Vec<u8> = (0..2 * 3 * 2).map(|i| i as u8).collect();
        let f = encode_idx(&[2, 3, 2], &data);
        assert_eq!(&f[..8], &[0, 0, 8, 3, 0, 0, 0, 2]);
        let got = parse_idx("x", &f, 3).unwrap();
        assert_eq!(got.dims, vec![2, 3, 2]);
        assert_eq!(got.data, data);
        // And gzip-compressed.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &f).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(parse_idx("x", &gz, 3).unwrap(), got);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let good = encode_idx(&[2, 2, 2], &[1; 8]);
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (vec![0, 0], 3, "too short for an IDX header"),
            (b"PK\x03\x04rest".to_vec(), 3, "not an IDX file"),
            (
                {
                    let mut g = good.clone();
                    g[2] = 0x0d;
                    g
                },
                3,
                "element type 0x0d",
            ),
            (good.clone(), 1, "3 dimensions, expected 1"),
            (good[..good.len() - 1].to_vec(), 3, "only 7 follow"),
            (
                [good.clone(), vec![0]].concat(),
                3,
                "1 bytes follow the 8 bytes",
            ),
            (good[..9].to_vec(), 3, "header is cut short"),
            (vec![0x1f, 0x8b, 8, 0, 1, 2], 3, "gzip data is damaged"),
        ];
        for (bytes, nd, want) in cases {
            let e = parse_idx("f.idx", &bytes, nd).unwrap_err().to_string();
            assert!(e.starts_with("f.idx: "), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn pixels_scale_to_a_centred_range() {
        let s = Split {
            pixels: vec![0, 255, 128, 0],
            labels: vec![3],
            rows: 2,
            cols: 2,
        };
        let d = s.dataset(0..1, true, &Device::Cpu).unwrap();
        let x: Vec<f32> = d.x.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x, vec![-0.5, 0.5, 0.5 / 255.0, -0.5]);
        let d = s.dataset(0..1, false, &Device::Cpu).unwrap();
        assert_eq!(d.x.dims(), &[1, 1, 2, 2]);
    }
}
